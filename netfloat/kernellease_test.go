package netfloat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/neightest"
	"github.com/vigil-project/vigil/internal/netnstest"
	"golang.org/x/sys/unix"
)

// arpProber sends real ARP requests from a host and says who answers.
// Each request comes from its own sender address, and only a reply to that
// address counts: a late reply to an earlier request is not taken for an
// answer to this one.
type arpProber struct {
	c *neightest.ARPClient
	n int
}

func newARPProber(t *testing.T, h *netnstest.Host) *arpProber {
	t.Helper()
	var c *neightest.ARPClient
	err := h.Run(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		c, err = neightest.DialARP(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("arp client in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return &arpProber{c: c}
}

// ask sends one "who has addr" and returns the MAC of the reply to it
// within wait, nil if none.
func (p *arpProber) ask(addr netip.Addr, wait time.Duration) (net.HardwareAddr, error) {
	p.n++
	from := netip.AddrFrom4([4]byte{192, 0, 2, byte(150 + p.n%100)})
	if err := p.c.Request(from, addr); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		if err := p.c.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		pkt, err := p.c.Read()
		if err != nil {
			if neightest.IsTimeout(err) {
				return nil, nil
			}
			return nil, err
		}
		if pkt.Op == neightest.ARPReply && pkt.SenderIP == addr && pkt.TargetIP == from {
			return pkt.SenderMAC, nil
		}
	}
}

// udpSink receives datagrams on host h at addr:port.
type udpSink struct {
	c *net.UDPConn
}

func newUDPSink(t *testing.T, h *netnstest.Host, port int) *udpSink {
	t.Helper()
	var c *net.UDPConn
	err := h.Run(func() error {
		var err error
		// Bound to every address: the VIP comes and goes.
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpSink{c: c}
}

// got says whether a datagram with payload want arrives within wait.
func (s *udpSink) got(want string, wait time.Duration) bool {
	buf := make([]byte, 256)
	deadline := time.Now().Add(wait)
	for {
		_ = s.c.SetReadDeadline(deadline)
		n, _, err := s.c.ReadFromUDP(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == want {
			return true
		}
	}
}

func udpSender(t *testing.T, h *netnstest.Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Run(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nsFd(h *netnstest.Host) int { return int(h.NS) }

func nft(t *testing.T, h *netnstest.Host, stdin string, args ...string) string {
	t.Helper()
	cmd := h.Command("nft", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needNFT(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft CLI not installed (apt install nftables): used to inspect the ruleset")
	}
}

// An operator's own table in the namespace: Vigil must leave it alone.
const operatorRules = `table ip operator {
	set allowed { type ipv4_addr; flags timeout; }
	chain in { type filter hook input priority 0; policy accept; ip saddr 203.0.113.9 drop; }
	chain out { type filter hook output priority 10; policy accept; }
}
table arp operatorarp {
	chain out { type filter hook output priority 5; policy accept; }
}
`

// TestKernelLeaseServesOnlyWhileLeased is the defect "Vigil dead or frozen
// on a live host: the old host keeps answering ARP for the VIP until the
// address lifetime ends" on a real kernel: host a holds the VIP with a
// 30 s address lifetime, and then nothing refreshes its lease, as if every
// Vigil process were frozen. Host b asks for the VIP with real ARP requests
// and sends it datagrams: a answers and receives while its lease lasts and
// stops within a few milliseconds of the lease's end, with the address
// still on its interface. Without the kernel lease (VIGIL_TEST_NO_KERNEL_LEASE
// style: KernelLease nil) a keeps answering for the whole lifetime, which
// is what the subtest "without" shows and the main test would fail on.
func TestKernelLeaseServesOnlyWhileLeased(t *testing.T) {
	needNFT(t)
	for _, withLease := range []bool{true, false} {
		name := "with"
		if !withLease {
			name = "without"
		}
		t.Run(name, func(t *testing.T) { testLeaseExpiry(t, withLease) })
	}
}

func testLeaseExpiry(t *testing.T, withLease bool) {
	a, b := twoHosts(t)
	nft(t, a, operatorRules, "-f", "-")
	operatorBefore := nft(t, a, "", "list", "ruleset")

	opts := Options{LeaseClock: clock.Boottime}
	var kl *NFTLease
	if withLease {
		var err error
		kl, err = NewNFTLease(nsFd(a), clock.Boottime)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kl.Close() })
		opts.KernelLease = kl
	}
	m := newManager(t, a, opts)
	v := VIP{Prefix: vip4, Interface: "eth0"}
	if err := m.Guard([]VIP{v}); err != nil {
		t.Fatal(err)
	}
	probe := newARPProber(t, b)
	sink := newUDPSink(t, a, 5060)
	send := udpSender(t, b)
	dst := &net.UDPAddr{IP: net.IP(vip4.Addr().AsSlice()), Port: 5060}

	lease := 600 * time.Millisecond
	deadline := clock.Boottime() + lease
	m.SetLeaseDeadline(deadline)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	// While leased it answers and receives.
	mac, err := probe.ask(vip4.Addr(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mac, a.MAC) {
		t.Fatalf("ARP for the VIP while leased: answered by %v, want a's %v", mac, a.MAC)
	}
	if _, err := send.WriteToUDP([]byte("leased"), dst); err != nil {
		t.Fatal(err)
	}
	if !sink.got("leased", time.Second) {
		t.Fatal("a datagram to the VIP while leased did not arrive")
	}

	// Nothing refreshes the lease from here on. Probe every 10 ms until
	// 400 ms after the deadline; the last answer must come before the
	// deadline plus a margin.
	var lastAnswer time.Duration = -1
	for clock.Boottime() < deadline+400*time.Millisecond {
		sent := clock.Boottime()
		mac, err := probe.ask(vip4.Addr(), 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if mac != nil {
			lastAnswer = sent - deadline
		}
	}
	if !a.HasAddr(vip4.Addr()) {
		t.Fatal("the address went: the lifetime (30 s), not the kernel lease, would be tested")
	}
	t.Logf("last ARP request answered at %v relative to the lease deadline", lastAnswer)
	margin := 10 * time.Millisecond // one jiffy at HZ=100 and the netlink call; see docs/protocol.md
	if !withLease {
		if lastAnswer < 300*time.Millisecond {
			t.Fatalf("without the kernel lease the host should answer until the address lifetime ends; last answer %v after the deadline", lastAnswer)
		}
		return
	}
	if lastAnswer > margin {
		t.Fatalf("an ARP request sent %v after the lease deadline was answered (margin %v)", lastAnswer, margin)
	}
	if lastAnswer < -100*time.Millisecond {
		t.Fatalf("the host stopped answering %v before its lease deadline", -lastAnswer)
	}
	// Inbound: dropped now, and counted.
	if _, err := send.WriteToUDP([]byte("expired"), dst); err != nil {
		t.Fatal(err)
	}
	if sink.got("expired", 300*time.Millisecond) {
		t.Fatal("a datagram to the VIP after the lease end was received")
	}
	listing := nft(t, a, "", "list", "table", "inet", "vigil")
	t.Logf("after expiry:\n%s", listing)
	if drops := ruleDrops(t, kl, kl.inetIn); drops == 0 {
		t.Fatalf("inbound drop counter is 0 after a dropped datagram:\n%s", listing)
	}
	if drops := ruleDrops(t, kl, kl.arpOut); drops == 0 {
		t.Fatalf("ARP drop counter is 0 after unanswered requests:\n%s", nft(t, a, "", "list", "table", "arp", "vigil"))
	}

	// A renewal (the refresher, in the background) brings it back.
	m.SetLeaseDeadline(clock.Boottime() + 5*time.Second)
	poll(t, 2*time.Second, "ARP answered again after a renewal", func() bool {
		mac, err := probe.ask(vip4.Addr(), 20*time.Millisecond)
		return err == nil && bytes.Equal(mac, a.MAC)
	})
	if _, err := send.WriteToUDP([]byte("renewed"), dst); err != nil {
		t.Fatal(err)
	}
	if !sink.got("renewed", time.Second) {
		t.Fatal("a datagram to the VIP after the renewal did not arrive")
	}

	// Quiet (the drain of a planned handover): no ARP answer at once,
	// packets still accepted.
	if err := m.Quiet(v); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if mac, err := probe.ask(vip4.Addr(), 20*time.Millisecond); err != nil || mac != nil {
			t.Fatalf("ARP answered while quiet: %v %v", mac, err)
		}
	}
	if _, err := send.WriteToUDP([]byte("quiet"), dst); err != nil {
		t.Fatal(err)
	}
	if !sink.got("quiet", time.Second) {
		t.Fatal("a datagram to the VIP while quiet (draining) did not arrive")
	}

	// Refuse (the drain of a break-before-make handover, announce.
	// handover_gap): the address stays, but nothing to it is taken.
	if err := m.Refuse(v); err != nil {
		t.Fatal(err)
	}
	if !a.HasAddr(vip4.Addr()) {
		t.Fatal("Refuse removed the address")
	}
	if mac, err := probe.ask(vip4.Addr(), 20*time.Millisecond); err != nil || mac != nil {
		t.Fatalf("ARP answered while refusing: %v %v", mac, err)
	}
	if _, err := send.WriteToUDP([]byte("refused"), dst); err != nil {
		t.Fatal(err)
	}
	if sink.got("refused", 300*time.Millisecond) {
		t.Fatal("a datagram to the VIP was taken while refusing")
	}

	// Release: no element left.
	if err := m.Release(v); err != nil {
		t.Fatal(err)
	}
	for _, s := range kl.leaseSets {
		if els := setElements(t, kl, s); len(els) != 0 {
			t.Fatalf("set %s still has %d elements after Release", s.Name, len(els))
		}
	}
	st := m.KernelLeaseStats()
	t.Logf("kernel lease: %d transactions, last %v, max %v", st.Applies, st.LastApply, st.MaxApply)
	if st.Failures != 0 || st.Failing {
		t.Fatalf("kernel lease failures: %+v", st)
	}

	// Orderly stop: Vigil's tables go, the operator's stay as they were.
	if err := DeleteTables(nsFd(a)); err != nil {
		t.Fatal(err)
	}
	if after := nft(t, a, "", "list", "ruleset"); !strings.Contains(after, "table ip operator") || strings.Contains(after, "vigil") {
		t.Fatalf("after DeleteTables:\n%s", after)
	}
	if after := nft(t, a, "", "list", "ruleset"); !sameOperator(operatorBefore, after) {
		t.Fatalf("the operator's tables changed:\nbefore:\n%s\nafter:\n%s", operatorBefore, after)
	}
	if err := DeleteTables(nsFd(a)); err != nil {
		t.Fatalf("DeleteTables twice: %v", err)
	}
}

// sameOperator: the operator's tables read the same in both listings
// (Vigil's removed from before).
func sameOperator(before, after string) bool {
	return operatorPart(before) == operatorPart(after)
}

func operatorPart(listing string) string {
	var out []string
	keep := false
	for _, line := range strings.Split(listing, "\n") {
		if strings.HasPrefix(line, "table ") {
			keep = !strings.HasSuffix(strings.TrimSpace(line), "vigil {")
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func ruleDrops(t *testing.T, l *NFTLease, ch *nftables.Chain) uint64 {
	t.Helper()
	c, err := l.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				n += ctr.Packets
			}
		}
	}
	return n
}

func setElements(t *testing.T, l *NFTLease, s *nftables.Set) []nftables.SetElement {
	t.Helper()
	c, err := l.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	return els
}

// TestKernelLeaseTablesShared: a second owner of the tables (another part
// of Vigil adding cluster_* objects to inet vigil) survives the node
// manager's set-up and refreshes; the node manager re-creating its own
// objects (a restart) empties only its own sets.
func TestKernelLeaseTablesShared(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	nft(t, a, `table inet vigil {
	set cluster_peers { type ipv4_addr; elements = { 192.0.2.12 } }
	chain cluster_in { type filter hook input priority -10; policy accept; }
}
`, "-f", "-")
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	addr := vip4.Addr()
	if err := kl.Apply(LeaseState{Guarded: []netip.Addr{addr}, Announce: []LeaseElement{{addr, clock.Boottime() + time.Minute}}}); err != nil {
		t.Fatal(err)
	}
	kl2, err := NewNFTLease(nsFd(a), clock.Boottime) // a restarted node manager
	if err != nil {
		t.Fatal(err)
	}
	defer kl2.Close()
	if els := setElements(t, kl2, kl2.arpAnnounce4); len(els) != 0 {
		t.Fatalf("a new owner found %d announce elements of the previous one", len(els))
	}
	out := nft(t, a, "", "list", "table", "inet", "vigil")
	if !strings.Contains(out, "cluster_peers") || !strings.Contains(out, "192.0.2.12") || !strings.Contains(out, "chain cluster_in") {
		t.Fatalf("the cluster_* objects did not survive:\n%s", out)
	}
}

// TestKernelLeaseTimeoutBound: the lease's end is the timeout of the one
// lease_alive element (arp and inet), which never exceeds the time left
// when it was programmed; an address the lease covers is in its announce
// and accept sets without a timeout of its own; a drain element keeps its
// own deadline; an element with under MinElementTimeout left is not
// programmed at all (a zero timeout, or on older kernels one under a
// jiffy, would never expire). A renewal (same addresses, a later end)
// re-adds the alive element alone; a changed set of addresses, or a
// second since the last, is a full transaction, which heals what someone
// removed.
func TestKernelLeaseTimeoutBound(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	var offset atomic.Int64 // the lease clock, moved on by the test
	clk := func() time.Duration { return clock.Boottime() + time.Duration(offset.Load()) }
	kl, err := NewNFTLease(nsFd(a), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	x, y := netip.MustParseAddr("192.0.2.101"), netip.MustParseAddr("2001:db8::101")
	z := netip.MustParseAddr("192.0.2.102")
	now := clk()
	st := LeaseState{
		Guarded:  []netip.Addr{x, y, z},
		Announce: []LeaseElement{{x, now + 250*time.Millisecond}},
		Accept: []LeaseElement{{x, now + 250*time.Millisecond},
			{y, now + MinElementTimeout - time.Millisecond}, {z, now + 300*time.Millisecond}},
	}
	if err := kl.Apply(st); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*nftables.Set{kl.arpAlive, kl.inetAlive} {
		els := setElements(t, kl, s)
		if len(els) != 1 || string(els[0].Key) != string(aliveKey) || els[0].Timeout > 250*time.Millisecond || els[0].Timeout < 200*time.Millisecond {
			t.Fatalf("%s = %+v, want the alive element with a timeout in (200ms, 250ms]", s.Name, els)
		}
	}
	for _, s := range []*nftables.Set{kl.arpAnnounce4, kl.accept4} {
		if els := setElements(t, kl, s); len(els) != 1 || els[0].Timeout != 0 || string(els[0].Key) != string(x.AsSlice()) {
			t.Fatalf("%s = %+v, want %s without a timeout", s.Name, els, x)
		}
	}
	if els := setElements(t, kl, kl.drain4); len(els) != 1 || els[0].Timeout > 300*time.Millisecond || els[0].Timeout < 250*time.Millisecond {
		t.Fatalf("drain4 = %+v, want %s with a timeout in (250ms, 300ms]", els, z)
	}
	if els := setElements(t, kl, kl.drain6); len(els) != 0 {
		t.Fatalf("drain6 has %+v, want nothing (under MinElementTimeout left)", els)
	}
	// Expired elements are absent to lookups, and a refresh of an expired
	// element (kernels before 6.10 refuse to delete one) still works.
	poll(t, 2*time.Second, "the alive element expired", func() bool {
		return len(setElements(t, kl, kl.arpAlive)) == 0
	})
	if els := setElements(t, kl, kl.arpAnnounce4); len(els) != 1 {
		t.Fatalf("announce4 after the lease ended = %+v, want %s still listed (the alive element gates it)", els, x)
	}
	renew := func(left time.Duration) {
		t.Helper()
		until := clk() + left
		st.Announce = []LeaseElement{{x, until}}
		st.Accept[0].Until = until
		if err := kl.Apply(st); err != nil {
			t.Fatalf("renewal: %v", err)
		}
	}
	renew(time.Minute)
	if els := setElements(t, kl, kl.arpAlive); len(els) != 1 {
		t.Fatalf("alive after the refresh = %+v", els)
	}
	// A renewal with the same addresses is not a full transaction.
	full := kl.lastFull
	renew(2 * time.Minute)
	if kl.lastFull != full {
		t.Error("a renewal reprogrammed every set")
	}
	if els := setElements(t, kl, kl.inetAlive); len(els) != 1 || els[0].Timeout < time.Minute {
		t.Fatalf("inet alive after a renewal = %+v, want two minutes", els)
	}
	if kl.refresh == nil {
		t.Error("a renewal did not go through the hand-built refresh (aliveRefresh)")
	}
	// Both tables, the exact timeout: the hand-built message is the
	// library's transaction.
	renew(90 * time.Second)
	for _, s := range []*nftables.Set{kl.arpAlive, kl.inetAlive} {
		if els := setElements(t, kl, s); len(els) != 1 || string(els[0].Key) != string(aliveKey) || els[0].Timeout > 90*time.Second || els[0].Timeout < 89*time.Second {
			t.Fatalf("%s after a refresh of 90 s = %+v", s.Name, els)
		}
	}
	// What someone removed comes back at the first renewal a second on.
	nft(t, a, "", "delete", "element", "arp", TableName, setAnnounce4, "{ "+x.String()+" }")
	offset.Add(int64(fullEvery))
	renew(time.Minute)
	if kl.lastFull == full {
		t.Error("no full transaction a second after the last")
	}
	if els := setElements(t, kl, kl.arpAnnounce4); len(els) != 1 {
		t.Fatalf("announce4 not healed: %+v", els)
	}
}

// fakeLease records every state applied, what the kernel held at that
// moment, and fails on demand.
type fakeLease struct {
	mu       sync.Mutex
	host     *netnstest.Host
	states   []LeaseState
	addrThen []bool          // the VIP was on the interface when the state came
	at       []time.Duration // clock.Boottime when it came
	fail     error
	disarms  int
}

func (f *fakeLease) Apply(st LeaseState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, st)
	f.addrThen = append(f.addrThen, f.host.HasAddr(vip4.Addr()))
	f.at = append(f.at, clock.Boottime())
	return f.fail
}

func (f *fakeLease) Disarm() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disarms++
	return nil
}

func (f *fakeLease) last() LeaseState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.states[len(f.states)-1]
}

func hasElem(es []LeaseElement, a netip.Addr) (time.Duration, bool) {
	for _, e := range es {
		if e.Addr == a {
			return e.Until, true
		}
	}
	return 0, false
}

// TestKernelLeaseWiring: Claim puts the VIP into both sets before the
// address exists; renewals refresh in the background; Quiet drops the
// announcement only and keeps accepting until the lease it held; Release
// removes both; a failure disarms, is counted, and the claim goes on.
func TestKernelLeaseWiring(t *testing.T) {
	a, _ := twoHosts(t)
	f := &fakeLease{host: a}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	addr := vip4.Addr()
	d1 := clock.Boottime() + time.Second
	m.SetLeaseDeadline(d1)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	first := slices.IndexFunc(f.states, func(s LeaseState) bool { _, ok := hasElem(s.Announce, addr); return ok })
	if first < 0 || f.addrThen[first] {
		f.mu.Unlock()
		t.Fatalf("the VIP was not in the kernel lease before its address was added (states %v, address present %v)", f.states, f.addrThen)
	}
	f.mu.Unlock()
	if u, ok := hasElem(f.last().Accept, addr); !ok || u != d1 {
		t.Fatalf("accept after Claim = %v %v, want until %v", u, ok, d1)
	}

	d2 := d1 + 500*time.Millisecond
	m.SetLeaseDeadline(d2)
	poll(t, 2*time.Second, "refresh to the renewed deadline", func() bool {
		u, ok := hasElem(f.last().Announce, addr)
		return ok && u == d2
	})

	// The role is handed over: the deadline drops to 0 (no refresh), then
	// Quiet.
	m.SetLeaseDeadline(0)
	if err := m.Quiet(v); err != nil {
		t.Fatal(err)
	}
	st := f.last()
	if _, ok := hasElem(st.Announce, addr); ok {
		t.Fatalf("still announced after Quiet: %+v", st)
	}
	if u, ok := hasElem(st.Accept, addr); !ok || u != d2 {
		t.Fatalf("accept after Quiet = %v %v, want until the lease held, %v", u, ok, d2)
	}
	if !slices.Contains(st.Guarded, addr) {
		t.Fatalf("not guarded while quiet: %+v", st)
	}
	if err := m.Release(v); err != nil {
		t.Fatal(err)
	}
	st = f.last()
	if len(st.Announce)+len(st.Accept) != 0 {
		t.Fatalf("elements after Release: %+v", st)
	}

	// Failure: logged once, disarmed, counted; the claim still holds the
	// address (today's behaviour).
	f.mu.Lock()
	f.fail = fmt.Errorf("injected: %w", errors.ErrUnsupported)
	f.mu.Unlock()
	m.SetLeaseDeadline(clock.Boottime() + time.Second)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatalf("Claim with a failing kernel lease: %v", err)
	}
	if !a.HasAddr(addr) {
		t.Fatal("the address was not added with a failing kernel lease")
	}
	ks := m.KernelLeaseStats()
	if !ks.Failing || ks.Failures == 0 || !strings.Contains(ks.LastError, "injected") {
		t.Fatalf("stats after a failure: %+v", ks)
	}
	f.mu.Lock()
	disarms := f.disarms
	f.fail = nil
	f.mu.Unlock()
	if disarms == 0 {
		t.Fatal("a failed apply did not disarm the kernel lease")
	}
	m.SetLeaseDeadline(clock.Boottime() + 2*time.Second)
	poll(t, 2*time.Second, "recovery", func() bool { return !m.KernelLeaseStats().Failing })
}

// TestKernelLeaseRefreshesAtHalf: renewals reach the kernel once half of
// what it was last given has run out, not each one; the kernel never ends
// before the lease while renewals go on; and the last renewal reaches it
// by the refresher's timer, with no renewal after it.
func TestKernelLeaseRefreshesAtHalf(t *testing.T) {
	a, _ := twoHosts(t)
	f := &fakeLease{host: a}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	addr := vip4.Addr()
	const lease, every, renewFor = time.Second, 20 * time.Millisecond, 3 * time.Second
	m.SetLeaseDeadline(clock.Boottime() + lease)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	before := len(f.states)
	f.mu.Unlock()
	renewals := 0
	var last time.Duration
	tick := time.NewTicker(every)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < renewFor; <-tick.C {
		now := clock.Boottime()
		if u, ok := hasElem(f.last().Announce, addr); !ok || u <= now {
			t.Fatalf("renewal %d: the kernel lease ends at %v, not after now (%v), while the lease was renewed every %v", renewals, u, now, every)
		}
		last = now + lease
		m.SetLeaseDeadline(last)
		renewals++
	}
	f.mu.Lock()
	applies := len(f.states) - before
	f.mu.Unlock()
	t.Logf("%d renewals of a %v lease over %v: %d transactions", renewals, lease, renewFor, applies)
	// About one per half lease (6); at least 3, and far fewer than the
	// renewals.
	if applies < 3 || applies > renewals/4 {
		t.Fatalf("%d transactions for %d renewals of a %v lease over %v, want 3 to %d", applies, renewals, lease, renewFor, renewals/4)
	}
	poll(t, 2*lease, "the last renewal to reach the kernel with none after it", func() bool {
		u, ok := hasElem(f.last().Announce, addr)
		return ok && u == last
	})
	f.mu.Lock()
	at := f.at[len(f.at)-1]
	f.mu.Unlock()
	if at > last-lease/2+lease/4 {
		t.Fatalf("the last renewal reached the kernel %v before its deadline, want about half the lease (%v)", last-at, lease/2)
	}
}

// TestKernelLeaseRenewedNeverLapses: with the real kernel lease, a lease
// renewed six times over its length (as at the default timing, but ten
// times slower so that a loaded machine cannot stall the refresher past
// half a lease) keeps its alive element in the kernel at every reading,
// with fewer transactions than renewals.
func TestKernelLeaseRenewedNeverLapses(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close() })
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: kl})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	if err := m.Guard([]VIP{v}); err != nil {
		t.Fatal(err)
	}
	const lease, every, renewFor = 600 * time.Millisecond, 100 * time.Millisecond, 3 * time.Second
	m.SetLeaseDeadline(clock.Boottime() + lease)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	before := m.KernelLeaseStats().Applies
	renewals, readings := 0, 0
	nextRenewal := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < renewFor; <-tick.C {
		if time.Now().After(nextRenewal) {
			m.SetLeaseDeadline(clock.Boottime() + lease)
			renewals++
			nextRenewal = nextRenewal.Add(every)
		}
		for _, s := range []*nftables.Set{kl.arpAlive, kl.inetAlive} {
			if els := setElements(t, kl, s); len(els) != 1 || els[0].Expires <= 0 {
				t.Fatalf("reading %d, after %d renewals every %v of a %v lease: set %s has %+v, want the alive element", readings, renewals, every, lease, s.Name, els)
			}
		}
		readings++
	}
	applies := m.KernelLeaseStats().Applies - before
	t.Logf("%d renewals, %d readings of the kernel, %d transactions", renewals, readings, applies)
	if applies == 0 || applies > uint64(renewals)/2 {
		t.Fatalf("%d transactions for %d renewals, want 1 to %d", applies, renewals, renewals/2)
	}
	if st := m.KernelLeaseStats(); st.Failures != 0 {
		t.Fatalf("kernel lease failures: %+v", st)
	}
}

// BenchmarkKernelLeaseRefresh measures one refresh transaction (the batch
// every renewal sends) with two VIPs, IPv4 and IPv6.
// BenchmarkKernelLeaseRefresh: a renewal's transaction, with 2 and with
// 256 addresses (one alive element either way), and a full one (the
// addresses changed) for comparison.
func BenchmarkKernelLeaseRefresh(b *testing.B) {
	n := netnstest.New(b, netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"})
	h := n.Hosts["a"]
	kl, err := NewNFTLease(int(h.NS), clock.Boottime)
	if err != nil {
		b.Fatal(err)
	}
	defer kl.Close()
	state := func(addrs []netip.Addr) LeaseState {
		u := clock.Boottime() + 200*time.Millisecond
		st := LeaseState{Guarded: addrs}
		for _, a := range addrs {
			st.Announce = append(st.Announce, LeaseElement{a, u})
			st.Accept = append(st.Accept, LeaseElement{a, u})
		}
		return st
	}
	var many []netip.Addr
	for _, v := range manyVIPs(256) {
		many = append(many, v.Prefix.Addr())
	}
	for _, c := range []struct {
		name  string
		addrs []netip.Addr
		full  bool
	}{{"renewal-2", []netip.Addr{vip4.Addr(), vip6.Addr()}, false}, {"renewal-256", many, false}, {"full-256", many, true}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if c.full {
					kl.last = nil // as after a change of the addresses
				}
				if err := kl.Apply(state(c.addrs)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestKernelLeaseApplyLag: a transaction that returns more than
// ApplyLagLimit after its clock reading (the thread was stopped in
// between) is sent again with a fresh reading, so the element the kernel
// keeps is the shorter one.
func TestKernelLeaseApplyLag(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	base := clock.Boottime()
	var mu sync.Mutex
	calls := 0
	// Every reading is 10 ms after the previous one: each transaction
	// looks late.
	fake := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return base + time.Duration(calls-1)*10*time.Millisecond
	}
	kl, err := NewNFTLease(nsFd(a), fake)
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	x := vip4.Addr()
	if err := kl.Apply(LeaseState{Guarded: []netip.Addr{x}, Announce: []LeaseElement{{x, base + 500*time.Millisecond}}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := calls
	mu.Unlock()
	if n != 6 { // three transactions, each with a reading and a check
		t.Fatalf("%d clock readings, want 6 (three sends)", n)
	}
	els := setElements(t, kl, kl.arpAnnounce4)
	if len(els) != 1 || els[0].Timeout > 460*time.Millisecond {
		t.Fatalf("announce4 = %+v, want the timeout of the last send (<= 460ms)", els)
	}
}

// TestKernelLeaseNDP: the IPv6 side on a real kernel. Host b solicits
// the VIP (a Neighbor Solicitation to its solicited-node group): a's
// kernel advertises it while leased and, with nothing refreshing the
// lease, not after it ended (the NA is dropped and counted), though the
// address is still there.
func TestKernelLeaseNDP(t *testing.T) {
	needNFT(t)
	a, b := twoHosts(t)
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close() })
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: kl})
	v := VIP{Prefix: vip6, Interface: "eth0"}
	deadline := clock.Boottime() + 1500*time.Millisecond
	m.SetLeaseDeadline(deadline)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	var c *neightest.NDPConn
	if err := b.Run(func() error {
		ifi, err := net.InterfaceByName(b.Link)
		if err != nil {
			return err
		}
		c, err = neightest.ListenNDP(ifi, b.Addr6.Addr())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// advertised sends one solicitation (to the VIP's solicited-node
	// group, with b's MAC) and says whether an advertisement for the VIP
	// comes back within wait.
	advertised := func(wait time.Duration) bool {
		t.Helper()
		if err := c.Solicit(vip6.Addr()); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		for {
			na, _, err := c.ReadNA()
			if neightest.IsTimeout(err) {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			// Solicited only: the claim's unsolicited announcements
			// (sent by netfloat, under the lease) may still be queued.
			if na.Solicited && na.Target == vip6.Addr() {
				return true
			}
		}
	}
	// The first solicitation may precede a's join of the solicited-node
	// group on the bridge: ask until answered.
	poll(t, time.Second, "a neighbour advertisement for the VIP while leased", func() bool {
		return advertised(50 * time.Millisecond)
	})
	// Let the lease run out with nothing refreshing it; the NA of a
	// late answer to the first probe is not mistaken for one after it.
	time.Sleep(deadline - clock.Boottime() + 50*time.Millisecond)
	for range 3 {
		if advertised(100 * time.Millisecond) {
			t.Fatalf("a neighbour advertisement for the VIP after its lease ended:\n%s", nft(t, a, "", "list", "ruleset"))
		}
	}
	if !a.HasAddr(vip6.Addr()) {
		t.Fatal("the address went: the lifetime (30 s), not the kernel lease, would be tested")
	}
	if drops := ruleDrops(t, kl, kl.inetOut); drops == 0 {
		t.Fatalf("NA drop counter is 0:\n%s", nft(t, a, "", "list", "table", "inet", "vigil"))
	}
}

// TestRevokeLeaseStopsServingAtOnce: the supervisor's revocation for a
// dead node manager empties the lease sets: the kernel stops answering
// for the address at once, long before its lease would have ended, while
// the address itself is still configured.
func TestRevokeLeaseStopsServingAtOnce(t *testing.T) {
	needNFT(t)
	a, b := twoHosts(t)
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close() })
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: kl})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	if err := m.Guard([]VIP{v}); err != nil {
		t.Fatal(err)
	}
	m.SetLeaseDeadline(clock.Boottime() + time.Minute)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	probe := newARPProber(t, b)
	if mac, err := probe.ask(vip4.Addr(), 200*time.Millisecond); err != nil || !bytes.Equal(mac, a.MAC) {
		t.Fatalf("ARP for the VIP while leased: %v %v, want a's %v", mac, err, a.MAC)
	}
	if err := RevokeLease(nsFd(a), 0); err != nil {
		t.Fatal(err)
	}
	if mac, err := probe.ask(vip4.Addr(), 300*time.Millisecond); err != nil || mac != nil {
		t.Fatalf("ARP for the VIP after the lease was revoked: answered by %v (%v)", mac, err)
	}
	if out := nft(t, a, "", "list", "set", "arp", TableName, setVIPs4); !strings.Contains(out, vip4.Addr().String()) {
		t.Fatalf("the guard set lost the VIP: %s", out)
	}
	// Revoking where nothing was ever programmed is no error.
	c, _ := twoHosts(t)
	if err := RevokeLease(nsFd(c), 0); err != nil {
		t.Fatalf("revoke without tables: %v", err)
	}
}

// stallingLease is a KernelLease whose Apply, once armed, waits in the
// "kernel" until released: as a transaction does behind nf_tables' commit
// mutex while another process's netlink socket close waits for a starved
// kworker (seen under the noisy neighbour: 88 ms and more).
type stallingLease struct {
	fakeLease
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (f *stallingLease) Apply(st LeaseState) error {
	if f.armed.Load() {
		select {
		case f.entered <- struct{}{}:
		default:
		}
		<-f.release
	}
	return f.fakeLease.Apply(st)
}

// A kernel-lease transaction stuck in the kernel never holds up a reader
// of the kernel lease's statistics: the node manager's loop reads them
// for its reports, and a loop waiting there stopped passing the token
// and renewing its lease (a false failover under the noisy neighbour).
func TestKernelLeaseStatsDuringStalledApply(t *testing.T) {
	a, _ := twoHosts(t)
	f := &stallingLease{fakeLease: fakeLease{host: a}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	m.SetLeaseDeadline(clock.Boottime() + time.Second)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	before := m.KernelLeaseStats().Applies
	f.armed.Store(true)
	released := false
	defer func() {
		if !released {
			close(f.release)
		}
	}()
	m.SetLeaseDeadline(clock.Boottime() + 2*time.Second) // the refresher applies it
	select {
	case <-f.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal never reached the kernel lease")
	}
	got := make(chan KernelLeaseStats, 1)
	go func() { got <- m.KernelLeaseStats() }()
	select {
	case s := <-got:
		if !s.Enabled || s.Applies != before {
			t.Fatalf("stats during the stalled apply: %+v, want enabled with %d applies", s, before)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KernelLeaseStats waited for a kernel-lease transaction stuck in the kernel")
	}
	close(f.release)
	released = true
	poll(t, 10*time.Second, "the stalled apply to finish and be counted", func() bool {
		return m.KernelLeaseStats().Applies > before
	})
}

// TestKernelLeaseEnforcesCheck: the supervisor's check before it leaves a
// silent node manager to the kernel lease says yes only while the rules
// are in place, every VIP is guarded and no element outlives the bound
// it is given; each way of failing is named.
func TestKernelLeaseEnforcesCheck(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	vips := []netip.Addr{vip4.Addr(), vip6.Addr()}
	lc := NewLeaseChecker(nsFd(a), 0)
	t.Cleanup(func() { lc.Close() })
	if err := lc.Enforces(vips, time.Second); err == nil {
		t.Fatal("enforcing with no tables at all")
	}
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close() })
	apply := func(left time.Duration) {
		t.Helper()
		until := clock.Boottime() + left
		els := []LeaseElement{{vips[0], until}, {vips[1], until}}
		if err := kl.Apply(LeaseState{Guarded: vips, Announce: els, Accept: els}); err != nil {
			t.Fatal(err)
		}
	}
	apply(time.Minute)
	if err := lc.Enforces(vips, 2*time.Minute); err != nil {
		t.Fatalf("a lease of a minute, bound two: %v", err)
	}
	if err := lc.Enforces(vips, time.Second); err == nil || !strings.Contains(err.Error(), "past") {
		t.Fatalf("a lease of a minute, bound a second: %v, want an element past the bound", err)
	}
	apply(0) // the lease ran out: guarded, no elements
	if err := lc.Enforces(vips, 0); err != nil {
		t.Fatalf("lease ended: %v", err)
	}
	if err := lc.Enforces(append(vips, netip.MustParseAddr("192.0.2.201")), 0); err == nil || !strings.Contains(err.Error(), "192.0.2.201 not in set") {
		t.Fatalf("an unguarded VIP: %v", err)
	}
	// An alive element without a timeout (someone's nft command) never
	// expires; addresses in the announce sets have none by design.
	nft(t, a, "", "add", "element", "arp", TableName, setAlive, "{ "+netip.AddrFrom4([4]byte(aliveKey)).String()+" }")
	if err := lc.Enforces(vips, time.Minute); err == nil || !strings.Contains(err.Error(), "never expires") {
		t.Fatalf("an element without a timeout: %v", err)
	}
	if err := kl.Disarm(); err != nil {
		t.Fatal(err)
	}
	if err := lc.Enforces(vips, time.Minute); err == nil || !strings.Contains(err.Error(), "disarmed") {
		t.Fatalf("disarmed: %v", err)
	}
	apply(0)
	nft(t, a, "", "flush", "chain", "inet", TableName, chainIn)
	if err := lc.Enforces(vips, time.Minute); err == nil || !strings.Contains(err.Error(), "chain lease_in has 0 rules") {
		t.Fatalf("rules flushed: %v", err)
	}
}

// The hand-built refresh reports what the kernel refused: a transaction
// on sets that do not exist fails (nothing of a batch is applied), and the
// lease's Apply then goes through the library and reports it too, rather
// than take a refresh that never happened for done.
func TestAliveRefreshReportsRefusal(t *testing.T) {
	needNFT(t)
	a, _ := twoHosts(t)
	kl, err := NewNFTLease(nsFd(a), clock.Boottime)
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	x := netip.MustParseAddr("192.0.2.101")
	state := func(left time.Duration) LeaseState {
		u := clock.Boottime() + left
		return LeaseState{Guarded: []netip.Addr{x}, Announce: []LeaseElement{{x, u}}, Accept: []LeaseElement{{x, u}}}
	}
	if err := kl.Apply(state(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := kl.Apply(state(time.Minute)); err != nil || kl.refresh == nil {
		t.Fatalf("a refresh: err %v, hand-built %v", err, kl.refresh != nil)
	}
	if n, why := kl.RefreshFallbacks(); n != 0 {
		t.Fatalf("%d fallbacks to the library after a good refresh (%s)", n, why)
	}

	missing := *kl.arpAlive
	missing.Name = "lease_alive_nosuchset"
	r, err := newAliveRefresh(nsFd(a), &missing, kl.inetAlive)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	err = r.send(time.Hour)
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("refresh of a missing set: %v, want ENOENT", err)
	}
	// Atomic: the inet set, in the same refused batch, kept its minute.
	if els := setElements(t, kl, kl.inetAlive); len(els) != 1 || els[0].Timeout > time.Minute {
		t.Fatalf("inet alive after the refused batch = %+v, want its minute", els)
	}

	// Someone deletes Vigil's arp table under the lease: the next refresh
	// fails, and Apply says so.
	nft(t, a, "", "delete", "table", "arp", TableName)
	err = kl.Apply(state(time.Minute))
	if err == nil {
		t.Fatal("Apply of a refresh into a deleted table succeeded")
	}
	if kl.refresh != nil {
		t.Error("the failed hand-built refresh kept its socket")
	}
	if n, why := kl.RefreshFallbacks(); n != 1 || !strings.Contains(why, "no such file") {
		t.Errorf("fallbacks after the refused refresh: %d (%q), want 1 with ENOENT", n, why)
	}
	t.Logf("refused as it should: %v", err)
}

// fallbackLease is a fakeLease whose refreshes fell back to the library
// fallbacks times (NFTLease.RefreshFallbacks).
type fallbackLease struct {
	*fakeLease
	fallbacks atomic.Uint64
}

func (f *fallbackLease) RefreshFallbacks() (uint64, string) {
	return f.fallbacks.Load(), "nftables refresh: sendto: operation not permitted"
}

// The Manager's stats carry the kernel lease's fallback count as of its
// latest transaction: what status and the metrics show.
func TestKernelLeaseStatsCountFallbacks(t *testing.T) {
	a, _ := twoHosts(t)
	f := &fallbackLease{fakeLease: &fakeLease{host: a}}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f})
	v := VIP{Prefix: vip4, Interface: "eth0"}
	m.SetLeaseDeadline(clock.Boottime() + time.Second)
	if _, err := m.Claim(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if n := m.KernelLeaseStats().RefreshFallbacks; n != 0 {
		t.Fatalf("fallbacks %d before any", n)
	}
	f.fallbacks.Store(3)
	m.SetLeaseDeadline(clock.Boottime() + 2*time.Second)
	poll(t, 5*time.Second, "the stats to count the lease's fallbacks", func() bool {
		return m.KernelLeaseStats().RefreshFallbacks == 3
	})
}
