// Package transporttest is an in-memory network for unit tests of the
// protocol drivers (nodemanager, locator), after hashicorp/memberlist's
// MockNetwork: one Endpoint per process (a host's node manager or
// locator), datagrams that travel through the real wire encoding and
// arrive when the test's clock says, and the faults of a real network set
// by the test: drop, delay, duplicate, partition. No sockets, no root, no
// goroutines of its own: a test decides when datagrams arrive (Deliver)
// and in which order its drivers take them (Endpoint.Recv), so a test is
// deterministic.
package transporttest

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
)

// Addr names a process: the node manager or the locator of a host.
type Addr struct {
	Host    string
	Locator bool
}

func (a Addr) String() string {
	if a.Locator {
		return a.Host + "/locator"
	}
	return a.Host + "/nodemanager"
}

// Fate is what the network does to one datagram.
type Fate struct {
	Drop  bool
	Delay time.Duration // on top of the network's latency
	Extra int           // duplicates delivered besides the datagram
}

// Rule decides the fate of each datagram sent; nil: delivered once.
type Rule func(from, to Addr, m protocol.Message) Fate

// inboxSize is an endpoint's receive queue; a datagram arriving at a full
// one is dropped and counted as overflow, as a full socket buffer would.
const inboxSize = 4096

// Network connects Endpoints.
type Network struct {
	clk     clock.Clock
	key     []byte
	dec     *protocol.Decoder
	mu      sync.Mutex
	latency time.Duration
	eps     map[Addr]*Endpoint
	flight  []packet
	seq     uint64
	rule    Rule
	cut     map[[2]string]bool // host pairs that cannot reach each other
}

type packet struct {
	at   time.Duration
	seq  uint64
	from Addr
	to   Addr
	b    []byte
}

// New is a network on clk whose datagrams are encoded with the cluster key
// (protocol.KeySize bytes) and take latency to arrive.
func New(clk clock.Clock, key []byte, latency time.Duration) (*Network, error) {
	dec, err := protocol.NewDecoder(key)
	if err != nil {
		return nil, fmt.Errorf("transporttest: %w", err)
	}
	return &Network{clk: clk, key: key, dec: dec, latency: latency, eps: map[Addr]*Endpoint{}, cut: map[[2]string]bool{}}, nil
}

// Endpoint attaches the process at a (a second call returns the same one,
// reopened if it was closed).
func (n *Network) Endpoint(a Addr) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.eps[a]; e != nil {
		e.closed = false
		return e
	}
	e := &Endpoint{net: n, addr: a, inbox: make(chan transport.Inbound, inboxSize),
		port: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(len(n.eps) + 1)}), 5405)}
	n.eps[a] = e
	return e
}

// SetRule sets the fate of the datagrams sent from now on (nil: none).
func (n *Network) SetRule(r Rule) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rule = r
}

// Partition cuts every host of a from every host of b, both ways, for
// datagrams sent from now on (those in flight still arrive).
func (n *Network) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}], n.cut[[2]string{y, x}] = true, true
		}
	}
}

// Heal ends every partition.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// InFlight is how many datagrams are on their way.
func (n *Network) InFlight() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.flight)
}

// Deliver puts every datagram whose arrival time has come into its
// destination's queue, in arrival order, stamped with that time. A
// datagram for a process that is not attached (or closed) is lost, as UDP
// to a closed port is. It returns how many arrived.
func (n *Network) Deliver() int {
	now := n.clk.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	slices.SortFunc(n.flight, func(a, b packet) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.seq, b.seq))
	})
	arrived := 0
	i := 0
	for ; i < len(n.flight) && n.flight[i].at <= now; i++ {
		p := n.flight[i]
		e := n.eps[p.to]
		if e == nil || e.closed {
			continue
		}
		m, err := n.dec.Decode(p.b)
		if err != nil {
			e.dropped("auth")
			continue
		}
		select {
		case e.inbox <- transport.Inbound{Msg: m, At: p.at}:
			e.received++
			arrived++
		default:
			e.dropped("overflow")
		}
	}
	n.flight = slices.Delete(n.flight, 0, i)
	return arrived
}

func (n *Network) send(from Addr, e protocol.Envelope) error {
	b, err := protocol.Encode(n.key, e.Msg)
	if err != nil {
		return fmt.Errorf("transporttest: encode %s to %s: %w", e.Msg.Type, e.To, err)
	}
	to := Addr{Host: e.To, Locator: e.Msg.Type.ForLocator()}
	now := n.clk.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	var f Fate
	if n.rule != nil {
		f = n.rule(from, to, e.Msg)
	}
	if f.Drop || n.cut[[2]string{from.Host, to.Host}] {
		return nil // lost on the way: the sender cannot tell
	}
	for range 1 + max(f.Extra, 0) {
		n.seq++
		n.flight = append(n.flight, packet{at: now + n.latency + f.Delay, seq: n.seq, from: from, to: to, b: b})
	}
	return nil
}

// Endpoint is one process's port on a Network; it implements
// transport.Endpoint.
type Endpoint struct {
	net   *Network
	addr  Addr
	port  netip.AddrPort
	inbox chan transport.Inbound

	// under net.mu
	closed                     bool
	sent, received, sendErrors uint64
	drops                      map[string]uint64
}

var _ transport.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) dropped(why string) {
	if e.drops == nil {
		e.drops = map[string]uint64{}
	}
	e.drops[why]++
}

// Send sends e.Msg to the node manager or locator of e.To, by type, with
// the real transport's check that the envelope and the message agree.
func (e *Endpoint) Send(env protocol.Envelope) error {
	if env.Msg.To != env.To {
		e.net.mu.Lock()
		e.sendErrors++
		e.net.mu.Unlock()
		return fmt.Errorf("transporttest: %s for %q addressed to %q", env.Msg.Type, env.To, env.Msg.To)
	}
	if err := e.net.send(e.addr, env); err != nil {
		e.net.mu.Lock()
		e.sendErrors++
		e.net.mu.Unlock()
		return err
	}
	e.net.mu.Lock()
	e.sent++
	e.net.mu.Unlock()
	return nil
}

// Recv takes the next arrived message, if any, without waiting.
func (e *Endpoint) Recv() (transport.Inbound, bool) {
	select {
	case in := <-e.inbox:
		return in, true
	default:
		return transport.Inbound{}, false
	}
}

// Run hands arrived messages to out until ctx ends (for a driver's own
// loop; a synchronous test uses Recv).
func (e *Endpoint) Run(ctx context.Context, out chan<- transport.Inbound) {
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-e.inbox:
			select {
			case out <- in:
			case <-ctx.Done():
				return
			}
		}
	}
}

// Stats are the endpoint's counters.
func (e *Endpoint) Stats() transport.Stats {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	var d map[string]uint64
	if len(e.drops) > 0 {
		d = make(map[string]uint64, len(e.drops))
		for k, v := range e.drops {
			d[k] = v
		}
	}
	return transport.Stats{Received: e.received, Sent: e.sent, SendErrors: e.sendErrors, Dropped: d, KernelFilter: "off: in-memory test network"}
}

// Addr is a made-up address, unique in the network.
func (e *Endpoint) Addr() netip.AddrPort { return e.port }

// Close detaches the endpoint: what arrives for it is lost.
func (e *Endpoint) Close() error {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	e.closed = true
	return nil
}
