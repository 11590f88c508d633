// Package transport carries protocol datagrams between hosts over UDP: it
// authenticates and replay-filters what arrives, routes what leaves to the
// node manager or locator of the destination host, and counts every drop by
// reason. Bad datagrams are dropped and counted; they never stop anything.
//
// Ports: a peer's configured address (host:P) is its node manager; its
// locator listens on P+1. A witness runs only the locator, on P+1.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/protocol"
)

// Inbound is an accepted datagram and when it arrived (CLOCK_BOOTTIME).
type Inbound struct {
	Msg protocol.Message
	At  time.Duration
}

// Transport is one process's UDP socket.
type Transport struct {
	conn   *net.UDPConn
	key    []byte
	node   map[string]netip.AddrPort
	loc    map[string]netip.AddrPort
	filter *protocol.ReplayFilter
	log    *slog.Logger

	received, sent, sendErrors atomic.Uint64
	mu                         sync.Mutex
	dropped                    map[string]uint64
	lastWarn                   map[string]time.Time
}

// Open binds this host's node manager (locator false: cluster.listen) or
// locator (locator true: cluster.listen's port + 1) socket.
func Open(cfg *config.Config, pcfg protocol.Config, key []byte, locator bool, log *slog.Logger) (*Transport, error) {
	listen, err := netip.ParseAddrPort(cfg.Cluster.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: cluster.listen %q: %w", cfg.Cluster.Listen, err)
	}
	if locator {
		lp, ok := config.LocatorPort(listen.Port())
		if !ok {
			return nil, fmt.Errorf("transport: cluster.listen %s: no locator port after it", listen)
		}
		listen = netip.AddrPortFrom(listen.Addr(), lp)
	}
	t := &Transport{
		key: key, log: log,
		node:     map[string]netip.AddrPort{},
		loc:      map[string]netip.AddrPort{},
		filter:   protocol.NewReplayFilter(pcfg),
		dropped:  map[string]uint64{},
		lastWarn: map[string]time.Time{},
	}
	for _, p := range append(append([]config.Peer{}, cfg.Cluster.Nodes...), cfg.Cluster.Witnesses...) {
		ap, err := netip.ParseAddrPort(p.Address)
		if err != nil {
			return nil, fmt.Errorf("transport: peer %s address %q: %w", p.ID, p.Address, err)
		}
		lp, ok := config.LocatorPort(ap.Port())
		if !ok {
			return nil, fmt.Errorf("transport: peer %s address %s: no locator port after it", p.ID, ap)
		}
		t.node[p.ID] = ap
		t.loc[p.ID] = netip.AddrPortFrom(ap.Addr(), lp)
	}
	t.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", listen, err)
	}
	return t, nil
}

// Addr is the bound address.
func (t *Transport) Addr() netip.AddrPort { return t.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close closes the socket; Run returns. Only Close closes it: the owner
// decides when nothing more will be sent.
func (t *Transport) Close() error { return t.conn.Close() }

// Run reads datagrams until ctx ends or the socket is closed, delivering
// the accepted ones to out. The receive time is taken right after the read.
//
// Run never closes the socket: when ctx ends it only stops reading, and
// Send keeps working until Close. A node manager that is told to stop
// still has to hand its role over (release to the locators, transfer to
// the standby) after its main context ended; a socket closed under it made
// those sends fail and turned every orderly stop into a lease expiry.
func (t *Transport) Run(ctx context.Context, out chan<- Inbound) {
	// A read deadline in the past wakes the blocked read without closing
	// anything.
	stop := context.AfterFunc(ctx, func() { _ = t.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, _, err := t.conn.ReadFromUDPAddrPort(buf)
		at := clock.Boottime()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.drop("read_error", err)
			continue
		}
		m, err := protocol.Decode(t.key, buf[:n])
		if err == nil {
			err = t.filter.Accept(m)
		}
		if err != nil {
			t.drop(reason(err), err)
			continue
		}
		t.received.Add(1)
		select {
		case out <- Inbound{Msg: m, At: at}:
		case <-ctx.Done():
			return
		}
	}
}

// reason names a drop for metrics and logs.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{protocol.ErrAuth, "auth"}, {protocol.ErrReplay, "replay"}, {protocol.ErrShort, "short"},
		{protocol.ErrMagic, "magic"}, {protocol.ErrVersion, "version"}, {protocol.ErrTooLarge, "too_large"},
		{protocol.ErrType, "type"}, {protocol.ErrMalformed, "malformed"}, {protocol.ErrCluster, "cluster"},
		{protocol.ErrPeer, "peer"}, {protocol.ErrDestination, "destination"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

func (t *Transport) drop(why string, err error) {
	t.mu.Lock()
	t.dropped[why]++
	warn := time.Since(t.lastWarn[why]) > 10*time.Second
	if warn {
		t.lastWarn[why] = time.Now()
	}
	n := t.dropped[why]
	t.mu.Unlock()
	if warn {
		t.log.Warn("datagram dropped", "event", "datagram_dropped", "reason", why, "total", n, "err", err)
	}
}

// Send encodes e.Msg and sends it to the node manager or the locator of
// e.To, by message type.
func (t *Transport) Send(e protocol.Envelope) error {
	if e.Msg.To != e.To {
		// The MAC covers Msg.To and the receiver refuses a datagram for
		// another host: a mismatch would be sent only to be dropped.
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: %s for %q addressed to %q", e.Msg.Type, e.To, e.Msg.To)
	}
	dst, ok := t.node[e.To]
	if e.Msg.Type.ForLocator() {
		dst, ok = t.loc[e.To]
	}
	if !ok {
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: no address for %q", e.To)
	}
	b, err := protocol.Encode(t.key, e.Msg)
	if err != nil {
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: encode %s to %s: %w", e.Msg.Type, e.To, err)
	}
	if _, err := t.conn.WriteToUDPAddrPort(b, dst); err != nil {
		// A peer that is down answers with ICMP; that is its business.
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: send %s to %s (%s): %w", e.Msg.Type, e.To, dst, err)
	}
	t.sent.Add(1)
	return nil
}

// Stats are the transport's counters.
type Stats struct {
	Received   uint64            `json:"received"`
	Sent       uint64            `json:"sent"`
	SendErrors uint64            `json:"send_errors"`
	Dropped    map[string]uint64 `json:"dropped,omitempty"` // by reason: auth, replay, short, ...
}

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := make(map[string]uint64, len(t.dropped))
	keys := make([]string, 0, len(t.dropped))
	for k := range t.dropped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d[k] = t.dropped[k]
	}
	return Stats{Received: t.received.Load(), Sent: t.sent.Load(), SendErrors: t.sendErrors.Load(), Dropped: d}
}

// ProtocolConfig is the protocol core's view of a validated config.
func ProtocolConfig(cfg *config.Config) protocol.Config { return cfg.Protocol() }
