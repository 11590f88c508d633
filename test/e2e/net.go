package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// The harness's fixed addresses (RFC 5737 TEST-NET-1).
const (
	VIP      = "192.0.2.100"
	VIPCIDR  = VIP + "/24"
	SIPPort  = 5060
	LinkName = netnstest.LinkName
)

// Nodes are the hosts that may hold the floating IP.
var nodeIDs = [2]string{"a", "b"}

// TB is what the harness needs of a test; testing.TB has it, and Runner
// gives it to programs (the benchmark, the demo).
type TB = netnstest.TB

// Net is the harness's network: hosts a, b (nodes), w (witness), c
// (client), x (the flood scenarios' attacker).
type Net struct {
	*netnstest.Net

	nftMu sync.Mutex
	nft   map[string]*nftables.Conn // per node, for Serves
}

// NewNet builds the namespaces. The nodes get net.ipv4.ip_nonlocal_bind=1
// so that the SIP server can bind the floating IP while the host does not
// hold it, as docs/operations.md tells operators to configure.
func NewNet(t TB) *Net {
	t.Helper()
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "w", Addr: "192.0.2.13/24"},
		netnstest.HostSpec{Name: "c", Addr: "192.0.2.50/24"},
		// x is no peer and no client: the flood scenarios' attacker, so
		// that the flood does not crowd out the client's own traffic.
		netnstest.HostSpec{Name: "x", Addr: "192.0.2.66/24"},
	)
	for _, id := range nodeIDs {
		if err := n.Hosts[id].Sysctl("net/ipv4/ip_nonlocal_bind", "1"); err != nil {
			t.Fatalf("e2e: %v", err)
		}
	}
	net := &Net{Net: n, nft: map[string]*nftables.Conn{}}
	t.Cleanup(func() {
		net.nftMu.Lock()
		defer net.nftMu.Unlock()
		for _, c := range net.nft {
			_ = c.CloseLasting()
		}
	})
	return net
}

// Other is the other node.
func Other(id string) string {
	if id == "a" {
		return "b"
	}
	return "a"
}

// Holds reports whether host id has the floating IP on its interface.
func (n *Net) Holds(id string) bool {
	return n.Hosts[id].HasAddr(netip.MustParseAddr(VIP))
}

// Serves reports whether host id would answer for the floating IP now:
// it has the address and, where Vigil's kernel lease is in force (table
// arp vigil in its namespace), a live element for it in lease_announce4,
// without which the host's kernel answers no ARP for it. A host whose
// Vigil was killed keeps the address until its lifetime ends but stops
// answering at its lease's end; what counts for the LAN is the answering.
// keepalived has no such table: for it Serves is Holds.
func (n *Net) Serves(id string) bool {
	if !n.Holds(id) {
		return false
	}
	live, ok := n.leaseElement(id)
	return !ok || live
}

// leaseElement says whether host id's kernel lease lets it answer ARP for
// the VIP: the VIP in lease_announce4 and the lease's one element in
// lease_alive still there (netfloat.NFTLease); ok is false when there is
// no Vigil table (or no nf_tables).
func (n *Net) leaseElement(id string) (live, ok bool) {
	n.nftMu.Lock()
	defer n.nftMu.Unlock()
	c := n.nft[id]
	if c == nil {
		var err error
		c, err = nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(n.Hosts[id].NS)))
		if err != nil {
			return false, false
		}
		n.nft[id] = c
	}
	arp := &nftables.Table{Name: "vigil", Family: nftables.TableFamilyARP}
	els, err := c.GetSetElements(&nftables.Set{Table: arp, Name: "lease_announce4", KeyType: nftables.TypeIPAddr})
	if err != nil {
		return false, false
	}
	vip := netip.MustParseAddr(VIP).As4()
	covered := false
	for _, e := range els {
		covered = covered || string(e.Key) == string(vip[:])
	}
	if !covered {
		return false, true
	}
	alive, err := c.GetSetElements(&nftables.Set{Table: arp, Name: "lease_alive", KeyType: nftables.TypeIPAddr})
	if err != nil {
		return false, true
	}
	// Expired elements are absent from the dump (6.18); an older kernel
	// may list one with nothing left.
	for _, e := range alive {
		if e.Expires > 0 {
			return true, true
		}
	}
	return false, true
}

// LeaseDrops sums the drop counters of host id's kernel lease rules (the
// ARP it did not send, the packets it refused: netfloat.NFTLease); ok is
// false without Vigil's tables.
func (n *Net) LeaseDrops(id string) (arp, inbound uint64, ok bool) {
	n.nftMu.Lock()
	defer n.nftMu.Unlock()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Hosts[id].NS)))
	if err != nil {
		return 0, 0, false
	}
	sum := func(fam nftables.TableFamily, chain string) (uint64, bool) {
		// A rule dump of a table that does not exist is empty, not an
		// error: ask for the table first.
		if _, err := c.ListTableOfFamily("vigil", fam); err != nil {
			return 0, false
		}
		t := &nftables.Table{Name: "vigil", Family: fam}
		rules, err := c.GetRules(t, &nftables.Chain{Table: t, Name: chain})
		if err != nil {
			return 0, false
		}
		var total uint64
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					total += ctr.Packets
				}
			}
		}
		return total, true
	}
	arp, ok1 := sum(nftables.TableFamilyARP, "lease_out")
	inbound, ok2 := sum(nftables.TableFamilyINet, "lease_in")
	return arp, inbound, ok1 && ok2
}

// Holder is the node that alone holds the floating IP, or "".
func (n *Net) Holder() string {
	a, b := n.Holds("a"), n.Holds("b")
	switch {
	case a && !b:
		return "a"
	case b && !a:
		return "b"
	}
	return ""
}

// DropVIP removes the floating IP from host id if present (cleanup after a
// system that leaves it behind, such as a SIGKILLed keepalived).
func (n *Net) DropVIP(id string) {
	h := n.Hosts[id]
	link, err := h.Handle.LinkByName(LinkName)
	if err != nil {
		return
	}
	p := netip.MustParsePrefix(VIPCIDR)
	_ = h.Handle.AddrDel(link, &netlink.Addr{IPNet: netnstest.PrefixIPNet(p)})
}

// Command runs name in host id's network namespace only (nsenter --net):
// unlike `ip netns exec` it keeps the caller's mount namespace, so the
// process sees the real cgroup hierarchies.
func (n *Net) Command(id, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + n.Hosts[id].NSName, name}, args...)...)
}

// HTTPClient returns a client whose connections are opened inside host id's
// namespace (to scrape a daemon's /metrics on that namespace's loopback).
func (n *Net) HTTPClient(id string) *http.Client {
	h := n.Hosts[id]
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := h.Run(func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

// OwnershipProbe samples both nodes every interval and records every
// change of who holds the floating IP: who serves it (Serves), which is
// who has the address where nothing else stops the host answering for it.
type OwnershipProbe struct {
	n        *Net
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}

	mu      sync.Mutex
	samples int
	dual    time.Duration
	dualNow bool
	changes []Change
	last    string // "a", "b", "ab" or ""
}

// Change is one change of ownership seen by the probe.
type Change struct {
	At     time.Time
	Holder string // "a", "b", "ab" (both) or "" (none)
}

// Probe starts an OwnershipProbe.
func (n *Net) Probe(interval time.Duration) *OwnershipProbe {
	p := &OwnershipProbe{n: n, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	p.last = p.sample()
	p.changes = []Change{{At: time.Now(), Holder: p.last}}
	go p.run()
	return p
}

func (p *OwnershipProbe) sample() string {
	s := ""
	for _, id := range nodeIDs {
		if p.n.Serves(id) {
			s += id
		}
	}
	return s
}

func (p *OwnershipProbe) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		s := p.sample()
		now := time.Now()
		p.mu.Lock()
		p.samples++
		// Both held it since the previous sample if both hold it now and
		// both did then: count the interval between the two samples.
		if s == "ab" && p.last == "ab" {
			p.dual += now.Sub(last)
		}
		p.dualNow = s == "ab"
		if s != p.last {
			p.changes = append(p.changes, Change{At: now, Holder: s})
			p.last = s
		}
		p.mu.Unlock()
		last = now
	}
}

// Stop ends the probe and returns what it saw.
func (p *OwnershipProbe) Stop() Ownership {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	o := Ownership{Samples: p.samples, Dual: p.dual, DualAtEnd: p.dualNow, Changes: append([]Change(nil), p.changes...)}
	// A move is a node taking the address from another: it did not hold
	// it last time anyone did. A node taking it back after nobody held it
	// (the active paused, its lease ran out, it claimed the role again)
	// is a retake: an outage, which Outage measures, but the role stayed
	// where it was. Final is the sole holder at the end or, when both hold
	// it (a killed keepalived leaves its address behind), the one that
	// took it last.
	prev, last := "", ""
	for i, c := range p.changes {
		for _, id := range nodeIDs {
			if strings.Contains(c.Holder, id) && !strings.Contains(prev, id) {
				if i > 0 {
					if prev == "" && strings.Contains(last, id) {
						o.Retakes++
					} else {
						o.Moves++
					}
				}
				o.Final = id
			}
		}
		prev = c.Holder
		if c.Holder != "" {
			last = c.Holder
		}
	}
	if prev == "a" || prev == "b" {
		o.Final = prev
	} else if prev == "" {
		o.Final = ""
	}
	return o
}

// Ownership is an OwnershipProbe's record.
type Ownership struct {
	Samples   int
	Dual      time.Duration // time both nodes served the address (Serves)
	DualAtEnd bool          // both still served it when the probe stopped
	Moves     int           // times a node took the address from another
	Retakes   int           // times the last holder took it back after nobody held it
	Final     string        // who holds it at the end (the newer one if both)
	Changes   []Change
}

// ErrNotApplicable is returned by a System for a scenario it has no
// counterpart for (keepalived has no witness).
var ErrNotApplicable = errors.New("not applicable to this system")

// tempDir makes a directory removed by t's cleanup, in memory (/dev/shm)
// where there is one: the harness's own files (configs, daemon logs, SIPp's
// traces) must never wait for a disk the noisy neighbour's fsync writer
// saturates, or the measuring tools stall and the stall is blamed on the
// system under test. The neighbour's own files go to diskTempDir.
func tempDir(t TB, pattern string) string {
	t.Helper()
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	return mkTemp(t, base, pattern)
}

// diskTempDir makes a directory on the disk ($TMPDIR or /tmp), removed by
// t's cleanup: where the noisy neighbour writes and fsyncs.
func diskTempDir(t TB, pattern string) string {
	t.Helper()
	return mkTemp(t, "", pattern)
}

func mkTemp(t TB, base, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp(base, pattern)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("VIGIL_E2E_KEEP") == "" {
			os.RemoveAll(d)
		}
	})
	return d
}

func errorf(format string, args ...any) error { return fmt.Errorf("e2e: "+format, args...) }
