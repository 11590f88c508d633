package nodemanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/transport/transporttest"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
)

// The driver harness: node managers built as Run builds them (newManager,
// join, start) and driven through the handlers Run's loop calls (onTick,
// onInbound, onNetEvent, onSupervisor, then afterInput), on one fake
// clock, over an in-memory network (transporttest) with the protocol's
// locators on it, and floating IPs on fake hosts that share one segment
// (a claim there is seen by the other hosts that still hold the address,
// as netfloat sees a gratuitous ARP from another MAC). No root, no
// sockets, no sleeps, no goroutines: every run is the same.

var testKey = bytes.Repeat([]byte{0x42}, protocol.KeySize)

// segment is the LAN the fake hosts share.
type segment struct{ hosts []*fakeHost }

// fakeHost is one host's floating IPs and links (vipHost).
type fakeHost struct {
	id     string
	seg    *segment
	clk    clock.Clock
	links  map[string]bool     // interface -> up; missing: no such link
	addrs  map[string]string   // VIP -> held | quiet | refused: what the kernel has
	ops    []string            // "claim VIP", "release VIP", "extend VIP", ...
	events chan netfloat.Event // the node manager's netEvents
	deaf   bool                // sees no other host's announcements
	floats int                 // floating IP managers made
	kl     bool                // kernel lease in force
	v6off  map[string]bool     // interfaces with IPv6 disabled
	// failAdd: VIPs whose add the kernel refuses, with the error;
	// failAnnounce: VIPs added whose first announcement fails.
	failAdd, failAnnounce map[string]error
}

func (h *fakeHost) newFloat([]string) (floatIPs, error) {
	h.floats++
	return &fakeFloat{h: h}, nil
}

func (h *fakeHost) linkUp(ifn string) (bool, error) {
	up, ok := h.links[ifn]
	if !ok {
		return false, fmt.Errorf("link %s: not found", ifn)
	}
	return up, nil
}

func (h *fakeHost) ipv6Disabled(ifn string) error {
	if h.v6off[ifn] {
		return fmt.Errorf("%w (fake %s)", netfloat.ErrIPv6Disabled, ifn)
	}
	return nil
}

func (h *fakeHost) kernelLease() (bool, error) { return h.kl, nil }
func (h *fakeHost) close()                     {}

func (h *fakeHost) has(v string) bool { _, ok := h.addrs[v]; return ok }

// announce tells the other hosts that still have v that this host's MAC
// now speaks for it.
func (h *fakeHost) announce(v netfloat.VIP) {
	for _, o := range h.seg.hosts {
		if o == h || o.deaf || !o.has(v.String()) || o.events == nil {
			continue
		}
		o.events <- netfloat.Event{Kind: netfloat.EventConflict, VIP: v, Interface: v.Interface, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(len(h.id))}}
	}
}

// fakeFloat is floatIPs on a fakeHost.
type fakeFloat struct {
	h        *fakeHost
	deadline time.Duration
	kls      netfloat.KernelLeaseStats
}

func (f *fakeFloat) Claim(_ context.Context, v netfloat.VIP) (netfloat.ClaimReport, error) {
	err := f.h.failAdd[v.String()]
	if v.Prefix.Addr().Is6() && f.h.v6off[v.Interface] {
		err = fmt.Errorf("netfloat: add %s: permission denied (fake IPv6 off on %s)", v.Prefix, v.Interface)
	}
	if err != nil {
		f.h.ops = append(f.h.ops, "claim failed "+v.String())
		return netfloat.ClaimReport{}, err
	}
	f.h.ops = append(f.h.ops, "claim "+v.String())
	f.h.addrs[v.String()] = "held"
	if err := f.h.failAnnounce[v.String()]; err != nil {
		return netfloat.ClaimReport{AddedAfter: time.Microsecond}, err
	}
	f.h.announce(v)
	return netfloat.ClaimReport{AddedAfter: time.Microsecond, AnnouncedAfter: 2 * time.Microsecond}, nil
}

func (f *fakeFloat) Release(v netfloat.VIP) error {
	f.h.ops = append(f.h.ops, "release "+v.String())
	delete(f.h.addrs, v.String())
	return nil
}

func (f *fakeFloat) held(v netfloat.VIP) error {
	if !f.h.has(v.String()) {
		return fmt.Errorf("%w: %s", netfloat.ErrNotHeld, v)
	}
	return nil
}

func (f *fakeFloat) Extend(v netfloat.VIP) error {
	f.h.ops = append(f.h.ops, "extend "+v.String())
	return f.held(v)
}

func (f *fakeFloat) Quiet(v netfloat.VIP) error {
	if err := f.held(v); err != nil {
		return err
	}
	f.h.ops = append(f.h.ops, "quiet "+v.String())
	f.h.addrs[v.String()] = "quiet"
	return nil
}

func (f *fakeFloat) Refuse(v netfloat.VIP) error {
	if err := f.held(v); err != nil {
		return err
	}
	if !f.h.kl {
		return netfloat.ErrKernelLeaseUnavailable
	}
	f.h.ops = append(f.h.ops, "refuse "+v.String())
	f.h.addrs[v.String()] = "refused"
	return nil
}

func (f *fakeFloat) ClaimAll(ctx context.Context, vips []netfloat.VIP) ([]netfloat.ClaimReport, error) {
	var reps []netfloat.ClaimReport
	var announceErr error
	for _, v := range vips {
		rep, err := f.Claim(ctx, v)
		if err != nil && rep.AddedAfter > 0 {
			announceErr = err // held: as netfloat, the batch's error only
		} else {
			rep.Err = err
		}
		reps = append(reps, rep)
	}
	return reps, announceErr
}

func (f *fakeFloat) ReleaseAll(vips []netfloat.VIP) error {
	for _, v := range vips {
		_ = f.Release(v)
	}
	return nil
}

func (f *fakeFloat) ExtendAll(vips []netfloat.VIP) ([]netfloat.VIP, error) {
	var notHeld []netfloat.VIP
	for _, v := range vips {
		if err := f.Extend(v); err != nil {
			notHeld = append(notHeld, v)
		}
	}
	return notHeld, nil
}

func (f *fakeFloat) QuietAll(vips []netfloat.VIP) ([]netfloat.VIP, error) {
	var done []netfloat.VIP
	for _, v := range vips {
		if f.Quiet(v) == nil {
			done = append(done, v)
		}
	}
	return done, nil
}

func (f *fakeFloat) RefuseAll(vips []netfloat.VIP) ([]netfloat.VIP, error) {
	if !f.h.kl {
		return nil, netfloat.ErrKernelLeaseUnavailable
	}
	var done []netfloat.VIP
	for _, v := range vips {
		if f.Refuse(v) == nil {
			done = append(done, v)
		}
	}
	return done, nil
}

func (f *fakeFloat) Announce(v netfloat.VIP) error {
	if f.h.clk.Now() >= f.deadline {
		return netfloat.ErrNoLease
	}
	f.h.ops = append(f.h.ops, "announce "+v.String())
	f.h.announce(v)
	return nil
}

func (f *fakeFloat) Reconcile(held []netfloat.VIP) ([]netfloat.VIP, error) {
	var removed []netfloat.VIP
	for k := range f.h.addrs {
		if !slices.ContainsFunc(held, func(v netfloat.VIP) bool { return v.String() == k }) {
			addr, ifn, _ := strings.Cut(k, "@")
			if v, err := parseVIP(addr, ifn); err == nil {
				removed = append(removed, v)
			}
			delete(f.h.addrs, k)
			f.h.ops = append(f.h.ops, "reconcile-remove "+k)
		}
	}
	return removed, nil
}

func (f *fakeFloat) SetLeaseDeadline(until time.Duration) { f.deadline = until }
func (f *fakeFloat) Guard([]netfloat.VIP) error           { return nil }
func (f *fakeFloat) Watch(ctx context.Context, _ chan<- netfloat.Event) error {
	<-ctx.Done()
	return nil
}
func (f *fakeFloat) Stats() netfloat.Stats                       { return netfloat.Stats{} }
func (f *fakeFloat) KernelLeaseStats() netfloat.KernelLeaseStats { return f.kls }
func (f *fakeFloat) Close() error                                { return nil }

var errDiskFull = errors.New("write node.state: no space left on device")

// fakeState is stateWriter: a disk that fails while full is set.
type fakeState struct {
	clk      clock.Clock
	full     bool
	slow     time.Duration // each Save takes this long (a disk under fsync load)
	attempts int
	errs     uint64
	saved    []protocol.NodeState
	savedAt  []time.Duration
}

func (s *fakeState) Save(v any) error {
	s.attempts++
	if s.slow > 0 {
		s.clk.(*clock.Fake).Advance(s.slow)
	}
	if s.full {
		s.errs++
		return errDiskFull
	}
	s.saved = append(s.saved, *v.(*protocol.NodeState))
	s.savedAt = append(s.savedAt, s.clk.Now())
	return nil
}

func (s *fakeState) Status() (bool, uint64, string) {
	if s.full {
		return true, s.errs, errDiskFull.Error()
	}
	return false, s.errs, ""
}

// syncBuf is a log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testNode struct {
	id     string
	m      *manager
	ep     *transporttest.Endpoint
	host   *fakeHost
	state  *fakeState
	logs   *syncBuf
	hooks  []hookJob // every hook queued, in order
	paused bool      // not scheduled: takes no input, its tick waits in the channel
	ticks  int       // protocol ticks the loop took
}

type testLocator struct {
	l  *protocol.Locator
	ep *transporttest.Endpoint
}

type sentMsg struct {
	at       time.Duration
	from, to transporttest.Addr
	msg      protocol.Message
}

type harness struct {
	t     *testing.T
	clk   *clock.Fake
	net   *transporttest.Network
	seg   *segment
	nodes []*testNode
	locs  []*testLocator
	sent  []sentMsg
	// gap is announce.handover_gap of the nodes started from now on;
	// diskFull, whether their state_dir starts full.
	gap      time.Duration
	diskFull bool
	vips     []config.VIP
	failback time.Duration // of the nodes started from now on; 0: off
}

var (
	ids       = []string{"a", "b"}
	witnesses = []string{"w"}
)

// newHarness is a cluster of nodes a and b and witness w: the locators of
// a, b and w run at once; the node managers start with startNode.
func newHarness(t *testing.T) *harness {
	t.Helper()
	clk := clock.NewFake(time.Hour)
	n, err := transporttest.New(clk, testKey, 200*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, clk: clk, net: n, seg: &segment{},
		vips: []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "192.0.2.101/24", Interface: "eth0"}}}
	n.SetRule(func(from, to transporttest.Addr, m protocol.Message) transporttest.Fate {
		h.sent = append(h.sent, sentMsg{at: clk.Now(), from: from, to: to, msg: m})
		return transporttest.Fate{}
	})
	for _, id := range append(slices.Clone(ids), witnesses...) {
		pc := h.config(id).Protocol()
		l, err := protocol.NewLocator(pc, protocol.LocatorState{}, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		h.locs = append(h.locs, &testLocator{l: l, ep: n.Endpoint(transporttest.Addr{Host: id, Locator: true})})
	}
	return h
}

func (h *harness) config(self string) *config.Config {
	c := &config.Config{}
	c.Cluster.Name, c.Cluster.Node = "edge", self
	for i, id := range ids {
		c.Cluster.Nodes = append(c.Cluster.Nodes, config.Peer{ID: id, Address: fmt.Sprintf("192.0.2.%d:5405", i+1)})
	}
	for i, id := range witnesses {
		c.Cluster.Witnesses = append(c.Cluster.Witnesses, config.Peer{ID: id, Address: fmt.Sprintf("192.0.2.%d:5405", i+10)})
	}
	c.Cluster.Timing = config.Timing{TokenInterval: protocol.DefaultTokenInterval, TokenTimeout: protocol.DefaultTokenTimeout,
		Lease: protocol.DefaultLease, DriftMargin: protocol.DefaultDriftMargin}
	c.Announce = config.Announce{Count: 3, Interval: 100 * time.Millisecond, HandoverGap: h.gap}
	c.Hooks = config.Hooks{OnActive: [][]string{{"/bin/on-active"}}, OnStandby: [][]string{{"/bin/on-standby"}},
		OnFault: [][]string{{"/bin/on-fault"}}, Timeout: time.Second}
	c.VIPs = slices.Clone(h.vips)
	if h.failback > 0 {
		c.Services = []config.Service{{Name: config.ImplicitService, VIPs: c.VIPs, Failback: h.failback, Implicit: true}}
	}
	c.Runtime.StateDir = h.t.TempDir()
	return c
}

// startNode starts id's node manager now, as Run does after its hold-off.
func (h *harness) startNode(id string) *testNode {
	h.t.Helper()
	logs := &syncBuf{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	host := &fakeHost{id: id, seg: h.seg, clk: h.clk, links: map[string]bool{"eth0": true, "eth1": true}, addrs: map[string]string{}, kl: true}
	h.seg.hosts = append(h.seg.hosts, host)
	m, err := newManager(h.config(id), log, h.clk, host)
	if err != nil {
		h.t.Fatal(err)
	}
	host.events = m.netEvents
	st := &fakeState{clk: h.clk, full: h.diskFull}
	m.state = st
	ep := h.net.Endpoint(transporttest.Addr{Host: id})
	if err := m.join(protocol.NodeState{}, ep); err != nil {
		h.t.Fatal(err)
	}
	m.start()
	tn := &testNode{id: id, m: m, ep: ep, host: host, state: st, logs: logs}
	h.nodes = append(h.nodes, tn)
	return tn
}

// step moves the clock by d and lets every process that is scheduled take
// what is due, in a fixed order: address events, the tick, datagrams.
func (h *harness) step(d time.Duration) {
	h.clk.Advance(d)
	h.net.Deliver()
	for _, l := range h.locs {
		for {
			in, ok := l.ep.Recv()
			if !ok {
				break
			}
			_ = l.l.Step(in.At, in.Msg)
		}
		l.l.Tick(h.clk.Now())
		for _, e := range l.l.Ready().Messages {
			_ = l.ep.Send(e)
		}
	}
	for _, n := range h.nodes {
		if !n.paused {
			h.serveOnce(n)
		}
	}
}

// serveOnce is one pass of Run's loop over n's ready inputs.
func (h *harness) serveOnce(n *testNode) {
	for {
		select {
		case ev := <-n.m.netEvents:
			n.m.onInput(stepNetEvent, func() {
				n.m.fo.local(h.clk.Now())
				n.m.onNetEvent(ev)
			})
			n.collectHooks()
			continue
		default:
		}
		break
	}
	select {
	case <-n.m.tick.C():
		n.ticks++
		n.m.onInput(stepTick, n.m.onTick)
	default:
	}
	n.collectHooks()
	for {
		in, ok := n.ep.Recv()
		if !ok {
			break
		}
		n.m.onInput(stepDatagram, func() { n.m.onInbound(in) })
		n.collectHooks()
	}
}

// supervisor hands n a supervisor message as Run's loop does.
func (h *harness) supervisor(n *testNode, msg *ctlmsg.Msg) {
	n.m.onInput(stepSupervisor, func() {
		n.m.fo.local(h.clk.Now())
		n.m.onSupervisor(msg)
	})
	n.collectHooks()
}

func (n *testNode) collectHooks() {
	for {
		select {
		case j := <-n.m.hooks.queue:
			n.hooks = append(n.hooks, j)
		default:
			return
		}
	}
}

// runUntil steps 1 ms at a time until cond holds, failing after limit.
func (h *harness) runUntil(limit time.Duration, what string, cond func() bool) {
	h.t.Helper()
	end := h.clk.Now() + limit
	for !cond() {
		if h.clk.Now() >= end {
			h.t.Fatalf("after %v: %s did not happen", limit, what)
		}
		h.step(time.Millisecond)
	}
}

// run steps 1 ms at a time for d, checking inv after every step.
func (h *harness) run(d time.Duration, inv func()) {
	end := h.clk.Now() + d
	for h.clk.Now() < end {
		h.step(time.Millisecond)
		if inv != nil {
			inv()
		}
	}
}

func (n *testNode) active() bool { return n.m.node.Role() == protocol.Active }

// startActive starts a alone until it holds the role and its addresses,
// then b, until b is a standby in the ring.
func (h *harness) startActive() (a, b *testNode) {
	h.t.Helper()
	a = h.startNode("a")
	h.runUntil(5*time.Second, "a active with its addresses", func() bool { return a.active() && a.m.held && len(a.host.addrs) == len(h.vips) })
	b = h.startNode("b")
	h.runUntil(5*time.Second, "b in the ring, seeing a active", func() bool {
		st := b.m.node.Status()
		return st.Active == "a" && slices.ContainsFunc(a.m.node.Status().Peers, func(p protocol.NodeHealth) bool { return p.ID == "b" && p.InRing })
	})
	return a, b
}

// sentBy is what id's node manager sent after t.
func (h *harness) sentBy(id string, after time.Duration) []sentMsg {
	var out []sentMsg
	for _, s := range h.sent {
		if s.from.Host == id && !s.from.Locator && s.at > after {
			out = append(out, s)
		}
	}
	return out
}

// logged counts id's log lines with "event":ev.
func (n *testNode) logged(ev string) int {
	return strings.Count(n.logs.String(), `"event":"`+ev+`"`)
}

// runSparse is run for minutes of fake time: it forgets the datagrams
// sent so far every second, so that h.sent does not grow with d.
func (h *harness) runSparse(d time.Duration, inv func()) {
	for end := h.clk.Now() + d; h.clk.Now() < end; {
		h.sent = nil
		h.run(min(time.Second, end-h.clk.Now()), inv)
	}
}
