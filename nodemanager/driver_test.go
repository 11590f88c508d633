package nodemanager

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/transport/transporttest"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
)

// Unit tests of the node manager's driving logic (Run's loop) on the
// harness (harness_test.go): a fake clock, an in-memory network with the
// protocol's locators, fake floating IPs.

const (
	vip100 = "192.0.2.100/24@eth0"
	vip101 = "192.0.2.101/24@eth0"
	vip102 = "192.0.2.102/24@eth1"
)

func opsSince(h *fakeHost, i int, op string) []string {
	var out []string
	for _, o := range h.ops[i:] {
		if strings.HasPrefix(o, op+" ") {
			out = append(out, strings.TrimPrefix(o, op+" "))
		}
	}
	return out
}

// (a) A node manager that was not scheduled for longer than its lease
// resumes with a late tick and with inputs queued meanwhile. Whatever it
// takes first, it does not act on the lease that ran out while it was
// stopped: an address removed meanwhile is not put back, the others go at
// once (the lease read now, not when the input was queued), it renews
// nothing of the old epoch and does not speak as the active; the late tick
// is counted and told to the protocol. The standby took over meanwhile.
func TestDriverLateTickAfterLeaseExpired(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(100*time.Millisecond, nil)
	epoch := a.m.node.Status().Epoch

	// Stopped, a takes nothing in; deaf, it queues no conflict events
	// either, so the removal below is the first input it takes.
	a.paused, a.host.deaf = true, true
	lease := a.m.pcfg.Lease
	h.run(3*lease, nil)
	if !b.active() || len(b.host.addrs) != 2 {
		t.Fatalf("b did not take over while a was stopped: %v %v", b.m.node.Role(), b.host.addrs)
	}
	// Queued while a was stopped: someone removed one of its addresses.
	v, _ := parseVIP("192.0.2.100/24", "eth0")
	delete(a.host.addrs, vip100)
	a.m.netEvents <- netfloat.Event{Kind: netfloat.EventAddrRemoved, VIP: v, Interface: "eth0"}
	before, resumed := len(a.host.ops), h.clk.Now()
	a.paused, a.host.deaf = false, false
	h.serveOnce(a) // the first pass after it is scheduled again: no time passes

	if got := opsSince(a.host, before, "claim"); len(got) != 0 {
		t.Fatalf("re-added %v under a lease that had expired", got)
	}
	if got := opsSince(a.host, before, "extend"); len(got) != 0 {
		t.Fatalf("extended %v under a lease that had expired", got)
	}
	if len(a.host.addrs) != 0 || a.m.held {
		t.Fatalf("still holds %v after resuming past its lease", a.host.addrs)
	}
	if n := a.logged("lease_expired"); n != 1 {
		t.Fatalf("want the lease enforced by the driver on the first input (one lease_expired), got %d", n)
	}
	if a.m.lateTimers != 1 || a.m.maxLate < 3*lease-a.m.tickPeriod() {
		t.Fatalf("late ticks %d, max late %v; want 1 and >= %v", a.m.lateTimers, a.m.maxLate, 3*lease-a.m.tickPeriod())
	}
	if a.active() {
		t.Fatal("a is still active after resuming past its lease")
	}
	h.run(time.Second, func() {
		if len(a.host.addrs) != 0 {
			t.Fatalf("a took addresses back while b is active: %v", a.host.addrs)
		}
	})
	for _, s := range h.sentBy("a", resumed-1) {
		if s.msg.Type == protocol.MsgCheckIn && s.msg.CheckIn.Claim && s.msg.CheckIn.Epoch == epoch {
			t.Fatalf("renewed epoch %d after resuming past its lease: %+v", epoch, s.msg)
		}
		if s.msg.Type == protocol.MsgToken && s.msg.Token.Active == "a" {
			t.Fatalf("a token naming a active after resuming: %+v", s.msg.Token)
		}
	}
	if !b.active() || len(b.host.addrs) != 2 {
		t.Fatalf("b lost the role to a stale a: %v %v", b.m.node.Role(), b.host.addrs)
	}
}

// (a) A tick late by a few token intervals but within the lease is counted
// and told to the protocol; the lease is still valid, so the active keeps
// its role and addresses (no false failover from its own stall).
func TestDriverLateTickWithinLease(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(100*time.Millisecond, nil)
	stall := 3 * a.m.pcfg.TokenInterval
	a.paused = true
	before := len(a.host.ops)
	h.run(stall, nil)
	a.paused = false
	h.run(time.Second, func() {
		if len(a.host.addrs) != 2 {
			t.Fatalf("a dropped addresses after a stall within its lease: %v", a.host.addrs)
		}
	})
	if a.m.lateTimers != 1 || a.m.maxLate < stall-a.m.tickPeriod() || a.m.maxLate > stall {
		t.Fatalf("late ticks %d, max late %v; want 1 and about %v", a.m.lateTimers, a.m.maxLate, stall)
	}
	if !a.active() || b.active() || len(opsSince(a.host, before, "release")) != 0 {
		t.Fatalf("role moved after a stall within the lease: a %v b %v, ops %v", a.m.node.Role(), b.m.node.Role(), a.host.ops[before:])
	}
	if len(opsSince(a.host, before, "extend")) == 0 {
		t.Fatal("a stopped extending its addresses after the stall")
	}
}

// (b) A planned handover with handover_gap 0 is make-before-break: the old
// active keeps every address, quiet (no longer announcing), until it sees
// the successor announce it; at no moment is an address on neither host.
func TestDriverDrainMakeBeforeBreak(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(100*time.Millisecond, nil)
	h.supervisor(a, ctlmsg.Command(ctlmsg.CmdSwitchover, "b"))
	if a.active() || a.m.drain == nil || a.m.drain.to != "b" {
		t.Fatalf("after switchover: a %v, drain %+v", a.m.node.Role(), a.m.drain)
	}
	for _, v := range []string{vip100, vip101} {
		if a.host.addrs[v] != "quiet" {
			t.Fatalf("%s on a is %q right after the handover, want kept and quiet", v, a.host.addrs[v])
		}
	}
	var bClaimed time.Duration
	inv := func() {
		for _, v := range []string{vip100, vip101} {
			if !a.host.has(v) && !b.host.has(v) {
				t.Fatalf("%v: %s on neither host (break before make)", h.clk.Now(), v)
			}
			if a.host.addrs[v] == "held" {
				t.Fatalf("%v: the old active announces %s again", h.clk.Now(), v)
			}
		}
		if bClaimed == 0 && len(b.host.addrs) == 2 {
			bClaimed = h.clk.Now()
		}
	}
	for len(a.host.addrs) > 0 {
		if h.clk.Now() > time.Hour+10*time.Second {
			t.Fatal("the drain did not end")
		}
		h.step(time.Millisecond)
		inv()
	}
	if bClaimed == 0 || !b.active() {
		t.Fatal("b never held the addresses")
	}
	if n := a.logged("drain_timeout"); n != 0 {
		t.Fatalf("the drain ran to the lease end although b announced: %d drain_timeout", n)
	}
	if !strings.Contains(a.logs.String(), `"reason":"successor_announced"`) {
		t.Fatalf("the addresses did not go on b's announcement:\n%s", a.logs.String())
	}
	if gone := h.clk.Now(); gone-bClaimed < drainLinger {
		t.Fatalf("the old active dropped the addresses %v after b claimed them, want >= %v", gone-bClaimed, drainLinger)
	}
	if a.m.drain != nil || a.m.held {
		t.Fatalf("drain state left: %+v held %v", a.m.drain, a.m.held)
	}
	if !hooked(a, "standby") || !hooked(b, "active") {
		t.Fatalf("hooks: a %v, b %v", a.hooks, b.hooks)
	}
}

// (b) A drain whose successor is never seen (not announcing where this
// host can hear it, its tokens cut off) keeps the addresses until the lease
// the old active held ends, and at most one tick (token_interval/4) longer:
// the driver checks its deadlines on every input, the tick at the latest,
// well inside the drift margin the locators wait before granting again.
func TestDriverDrainEndsWithTheLease(t *testing.T) {
	h := newHarness(t)
	a, _ := h.startActive()
	h.run(100*time.Millisecond, nil)
	leaseUntil := a.m.node.LeaseUntil()
	h.supervisor(a, ctlmsg.Command(ctlmsg.CmdSwitchover, "b"))
	if a.m.drain == nil || a.m.drain.until != leaseUntil {
		t.Fatalf("drain %+v, want it bounded by the lease a held (%v)", a.m.drain, leaseUntil)
	}
	// The transfer is on its way; from now on a hears nothing of b.
	h.net.Partition([]string{"a"}, []string{"b"})
	a.host.deaf = true
	for h.clk.Now() < leaseUntil {
		if len(a.host.addrs) != 2 {
			t.Fatalf("%v: a dropped addresses before its lease ended (%v) without seeing the successor: %v", h.clk.Now(), leaseUntil, a.host.addrs)
		}
		h.step(time.Millisecond)
	}
	for h.clk.Now() < leaseUntil+a.m.tickPeriod() && len(a.host.addrs) > 0 {
		h.step(time.Millisecond)
	}
	if len(a.host.addrs) != 0 {
		t.Fatalf("%v: a keeps %v past the lease it held (%v)", h.clk.Now(), a.host.addrs, leaseUntil)
	}
	if n := a.logged("drain_timeout"); n != 2 {
		t.Fatalf("want a drain_timeout per address, got %d", n)
	}
}

// (c) A node manager whose state cannot be written sends nothing and
// claims nothing; the state stays dirty and the write is retried on every
// tick; once a write succeeds it speaks, and every claim it sends is of an
// epoch already on disk.
func TestDriverPersistFailure(t *testing.T) {
	h := newHarness(t)
	h.diskFull = true
	a := h.startNode("a")
	h.run(time.Second, nil)
	if s := h.sentBy("a", 0); len(s) != 0 {
		t.Fatalf("sent %d datagrams with no state on disk, first %+v", len(s), s[0].msg)
	}
	if a.active() || len(a.host.addrs) != 0 {
		t.Fatalf("a took the role without its state on disk: %v %v", a.m.node.Role(), a.host.addrs)
	}
	ticks := int(time.Second / a.m.tickPeriod())
	if a.state.attempts < ticks {
		t.Fatalf("%d write attempts in %d ticks: the write is not retried every tick", a.state.attempts, ticks)
	}
	if failing, errs, _ := a.m.state.Status(); !failing || errs == 0 {
		t.Fatal("the writer does not report failing")
	}

	a.state.full = false
	freed := h.clk.Now()
	h.runUntil(5*time.Second, "a active after the disk was freed", func() bool { return a.active() && len(a.host.addrs) == 2 })
	first := a.state.savedAt[0]
	if first > freed+a.m.tickPeriod()+time.Millisecond { // the harness steps 1 ms
		t.Fatalf("first write at %v, disk freed at %v: not retried on the next tick", first, freed)
	}
	for _, s := range h.sentBy("a", 0) {
		if s.at < first {
			t.Fatalf("sent %s at %v before the state was written at %v", s.msg.Type, s.at, first)
		}
		if s.msg.Type != protocol.MsgCheckIn || !s.msg.CheckIn.Claim {
			continue
		}
		onDisk := uint64(0)
		for i, st := range a.state.saved {
			if a.state.savedAt[i] <= s.at {
				onDisk = max(onDisk, st.MaxEpoch)
			}
		}
		if s.msg.CheckIn.Epoch > onDisk {
			t.Fatalf("claim of epoch %d sent at %v with %d on disk", s.msg.CheckIn.Epoch, s.at, onDisk)
		}
	}
}

// (d) A reload applied in place: on the active, only the added address is
// claimed and only the removed one released (the kept one untouched); on
// the standby nothing is claimed, and the new interface's link state is
// read at once; the new hooks run at the next transition.
func TestDriverReloadVIPsAndHooks(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(100*time.Millisecond, nil)
	b.host.links["eth1"] = false
	cfg := &ctlmsg.Config{
		VIPs: []ctlmsg.VIP{{Address: "192.0.2.101/24", Interface: "eth0"}, {Address: "192.0.2.102/24", Interface: "eth1"}},
		Hooks: ctlmsg.Hooks{OnActive: [][]string{{"/bin/new-active"}}, OnStandby: [][]string{{"/bin/new-standby"}},
			OnFault: [][]string{{"/bin/new-fault"}}, Timeout: 2 * time.Second},
	}
	beforeA, beforeB := len(a.host.ops), len(b.host.ops)
	h.supervisor(a, ctlmsg.ConfigMsg(cfg))
	h.supervisor(b, ctlmsg.ConfigMsg(cfg))

	if got := opsSince(a.host, beforeA, "claim"); !slices.Equal(got, []string{vip102}) {
		t.Fatalf("active claimed %v on reload, want only the added %s", got, vip102)
	}
	if got := opsSince(a.host, beforeA, "release"); !slices.Equal(got, []string{vip100}) {
		t.Fatalf("active released %v on reload, want only the removed %s", got, vip100)
	}
	if len(a.host.addrs) != 2 || a.host.addrs[vip101] != "held" || a.host.addrs[vip102] != "held" {
		t.Fatalf("active holds %v after the reload", a.host.addrs)
	}
	if got := opsSince(b.host, beforeB, "claim"); len(got) != 0 || len(b.host.addrs) != 0 {
		t.Fatalf("standby claimed %v on reload", got)
	}
	if b.host.floats != 2 {
		t.Fatalf("standby made %d floating IP managers, want a new one watching eth1", b.host.floats)
	}
	if b.m.healthy || !slices.Contains(b.m.reasons, "interface eth1 down") {
		t.Fatalf("standby's new interface is down but it is healthy: %v", b.m.reasons)
	}
	b.m.netEvents <- netfloat.Event{Kind: netfloat.EventLinkUp, Interface: "eth1"}
	h.run(300*time.Millisecond, nil)
	if !b.m.healthy {
		t.Fatalf("standby not healthy after eth1 came up: %v", b.m.reasons)
	}
	mid := len(a.host.ops)
	h.run(600*time.Millisecond, nil)
	if ext := opsSince(a.host, mid, "extend"); !slices.Contains(ext, vip102) || slices.Contains(ext, vip100) {
		t.Fatalf("after the reload the active extends %v", ext)
	}

	a.hooks, b.hooks = nil, nil
	h.supervisor(a, ctlmsg.Command(ctlmsg.CmdSwitchover, "b"))
	h.runUntil(5*time.Second, "b active with the reloaded addresses", func() bool {
		return b.active() && len(b.host.addrs) == 2 && len(a.host.addrs) == 0
	})
	if b.host.has(vip100) || !b.host.has(vip101) || !b.host.has(vip102) {
		t.Fatalf("b holds %v, want the reloaded set", b.host.addrs)
	}
	if j, ok := hook(a, "standby"); !ok || j.argv[0] != "/bin/new-standby" || j.timeout != 2*time.Second {
		t.Fatalf("a's on_standby after the reload: %+v", a.hooks)
	}
	if j, ok := hook(b, "active"); !ok || j.argv[0] != "/bin/new-active" {
		t.Fatalf("b's on_active after the reload: %+v", b.hooks)
	}
}

// (d) A reload that gives the active a floating IP on an interface that is
// down reads that link at once: the node is unhealthy (on_fault, as
// reloaded) and hands the role to the healthy standby, which claims the
// reloaded set.
func TestDriverReloadNewInterfaceDownOnActive(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(100*time.Millisecond, nil)
	a.host.links["eth1"] = false
	a.hooks = nil
	h.supervisor(a, ctlmsg.ConfigMsg(&ctlmsg.Config{
		VIPs:  []ctlmsg.VIP{{Address: "192.0.2.101/24", Interface: "eth0"}, {Address: "192.0.2.102/24", Interface: "eth1"}},
		Hooks: ctlmsg.Hooks{OnFault: [][]string{{"/bin/new-fault"}}, Timeout: time.Second},
	}))
	if a.m.healthy || !slices.Contains(a.m.reasons, "interface eth1 down") {
		t.Fatalf("the reloaded interface is down but the active is healthy: %v", a.m.reasons)
	}
	if j, ok := hook(a, "fault"); !ok || j.argv[0] != "/bin/new-fault" {
		t.Fatalf("on_fault after the reload: %+v", a.hooks)
	}
	h.supervisor(b, ctlmsg.ConfigMsg(&ctlmsg.Config{
		VIPs:  []ctlmsg.VIP{{Address: "192.0.2.101/24", Interface: "eth0"}, {Address: "192.0.2.102/24", Interface: "eth1"}},
		Hooks: ctlmsg.Hooks{Timeout: time.Second},
	}))
	h.runUntil(5*time.Second, "the healthy standby active with the reloaded set", func() bool {
		return b.active() && b.host.has(vip101) && b.host.has(vip102) && len(a.host.addrs) == 0
	})
	if b.host.has(vip100) {
		t.Fatalf("b claimed the removed %s", vip100)
	}
}

func hook(n *testNode, event string) (hookJob, bool) {
	for _, j := range n.hooks {
		if j.event == event {
			return j, true
		}
	}
	return hookJob{}, false
}

func hooked(n *testNode, event string) bool { _, ok := hook(n, event); return ok }

// A switchover asked on the standby whose request is held up in the
// network for a second (as when it is lost and a copy replayed later) is
// refused by the active, which says why in its journal; the same request
// delivered at once moves the role. The requester's CLI reports only that
// the role did not move (cmd/vigil/switchover.go), so the active's log
// line is the operator's only why.
func TestDriverLateSwitchoverRequestRefusedAndLogged(t *testing.T) {
	for _, late := range []bool{true, false} {
		h := newHarness(t)
		a, b := h.startActive()
		h.run(100*time.Millisecond, nil)
		if late {
			h.net.SetRule(func(from, to transporttest.Addr, m protocol.Message) transporttest.Fate {
				if m.Type == protocol.MsgSwitchover {
					return transporttest.Fate{Delay: time.Second}
				}
				return transporttest.Fate{}
			})
		}
		h.supervisor(b, ctlmsg.Command(ctlmsg.CmdSwitchover, ""))
		if late {
			h.run(1100*time.Millisecond, nil)
			if !a.active() || b.active() {
				t.Fatalf("a request held up for 1 s moved the role: a %v b %v", a.m.node.Role(), b.m.node.Role())
			}
			// The standby sends the request again with the next two
			// tokens (protocol: forwardAgain): each copy is held up
			// too, and each is refused as too old.
			if n := a.logged("switchover_refused"); n < 1 || n > 3 || strings.Count(a.logs.String(), "too old") != n {
				t.Fatalf("the active did not log why it refused the late request (1 to 3 copies, each too old):\n%s", a.logs.String())
			}
			continue
		}
		h.runUntil(time.Second, "b active after a prompt request", b.active)
		if a.logged("switchover_refused") != 0 {
			t.Fatalf("a prompt request logged as refused:\n%s", a.logs.String())
		}
	}
}

// The loop ticks when something is due (Node.NextDeadline and its own
// deadlines, the report among them), at the latest a token interval after
// its last tick, not on a fixed fine grid: an idle pair ticks at most half
// as often as it used to (four times per token interval), keeps its roles,
// and the token keeps going round.
func TestIdleLoopTicksOnlyWhenDue(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	ta, tb := a.ticks, b.ticks
	since := h.clk.Now()
	const d = 2 * time.Second
	h.run(d, nil)
	if !a.active() || b.m.node.Status().Active != "a" {
		t.Fatalf("roles moved while idle: a %v, b sees active %q", a.m.node.Role(), b.m.node.Status().Active)
	}
	passes := 0
	for _, s := range h.sentBy("a", since) {
		if s.msg.Type == protocol.MsgToken {
			passes++
		}
	}
	// a holds it a token interval, then b does: a passes it every two.
	if want := int(d / (2 * a.m.pcfg.TokenInterval)); passes < want*3/4 {
		t.Fatalf("a passed the token %d times in %v, want about %d: the token stalls", passes, d, want)
	}
	grid := int(d / a.m.pcfg.TokenInterval) // one tick per token interval
	for _, x := range []struct {
		id    string
		ticks int
	}{{"a", a.ticks - ta}, {"b", b.ticks - tb}} {
		// The report (every quarter lease) adds its own ticks where no
		// other pass came: at most half the old fixed tick's.
		if x.ticks > 2*grid || x.ticks < grid/4 {
			t.Errorf("%s ticked %d times in %v, want %d-%d (one per token interval and the reports; the old fixed tick took %d)", x.id, x.ticks, d, grid/4, 2*grid, 4*grid)
		}
	}
	t.Logf("in %v: a ticked %d times, b %d; a passed the token %d times", d, a.ticks-ta, b.ticks-tb, passes)
	if a.m.lateTimers != 0 || b.m.lateTimers != 0 {
		t.Errorf("late ticks a=%d b=%d while idle on a fake clock", a.m.lateTimers, b.m.lateTimers)
	}
}

// The answer to a switchover carries the role as the node manager saw it
// when it took the request, which `vigil switchover` waits to see change:
// the status report it read before can lag a role change by a report
// interval, and made it take a later move for the one it asked for.
func TestDriverSwitchoverAnswerCarriesTheRole(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	h.run(50*time.Millisecond, nil)
	conn, peer, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); peer.Close() })
	b.m.sup = conn
	epoch := a.m.node.Status().Epoch
	msg := ctlmsg.Command(ctlmsg.CmdSwitchover, "b")
	msg.ID = 7
	h.supervisor(b, msg)
	b.m.sup = nil
	reply := readReply(t, peer, 7)
	if reply.Error != "" || reply.Epoch != epoch || reply.Active != "a" {
		t.Fatalf("answer %+v, want epoch %d active a and no error", reply, epoch)
	}
	h.runUntil(5*time.Second, "b active", b.active)
	if got := b.m.node.Status().Epoch; got <= reply.Epoch {
		t.Fatalf("b active in epoch %d, not after the answer's %d", got, reply.Epoch)
	}
}

// readReply reads the channel until the reply to request id (reports may
// come first) and fails if none is there.
func readReply(t *testing.T, f *os.File, id uint64) *ctlmsg.Msg {
	t.Helper()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no reply to %d: %v", id, err)
		}
		m, err := ctlmsg.Decode(buf[:n])
		if err != nil {
			t.Fatalf("decode %q: %v", buf[:n], err)
		}
		if m.Type == ctlmsg.TypeReply && m.ID == id {
			return m
		}
	}
}

// A node manager that starts unhealthy (here: a floating IP on an
// interface this host lacks) says so and why, once: its health is logged
// on changes only, and it starts unhealthy.
func TestDriverStartsUnhealthyAndSaysWhy(t *testing.T) {
	h := newHarness(t)
	h.vips = []config.VIP{{Address: "192.0.2.100/24", Interface: "eth9"}}
	a := h.startNode("a")
	if a.m.healthy {
		t.Fatal("healthy with its VIP interface missing")
	}
	logs := a.logs.String()
	if n := strings.Count(logs, `"event":"node_health"`); n != 1 || !strings.Contains(logs, `"reasons":"[interface eth9 down]"`) {
		t.Errorf("%d node_health lines, want one naming interface eth9:\n%s", n, logs)
	}
	h.run(200*time.Millisecond, nil)
	if n := strings.Count(a.logs.String(), `"event":"node_health"`); n != 1 {
		t.Errorf("%d node_health lines after 200 ms, want still one", n)
	}
}

// An interface whose IPv6 is turned off (net.ipv6.conf.IF.disable_ipv6)
// cannot hold the service's IPv6 address: the node is unhealthy, read
// within a second (no netlink event tells of it), so the active hands the
// service to a node that can hold all of it; turned on again, the node is
// fit again and, without failback, takes nothing back.
func TestDriverIPv6DisabledOnVIPInterface(t *testing.T) {
	h := newHarness(t)
	h.vips = []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "2001:db8::100/64", Interface: "eth0"}}
	a, b := h.startActive()
	a.host.v6off = map[string]bool{"eth0": true}
	h.runUntil(5*time.Second, "b active with both addresses", func() bool {
		return b.active() && b.m.held && len(b.host.addrs) == 2 && !a.active()
	})
	if a.m.healthy || !slices.Contains(a.m.reasons, "interface eth0: IPv6 disabled (fake eth0)") {
		t.Errorf("a healthy=%v reasons %q, want unhealthy for eth0's IPv6", a.m.healthy, a.m.reasons)
	}
	logs := a.logs.String()
	if n := strings.Count(logs, `"event":"ipv6_disabled"`); n != 1 {
		t.Errorf("%d ipv6_disabled lines, want 1", n)
	}
	a.host.v6off = nil
	h.runUntil(3*time.Second, "a healthy again", func() bool { return a.m.healthy })
	if !strings.Contains(a.logs.String(), `"event":"ipv6_enabled"`) {
		t.Errorf("no ipv6_enabled line")
	}
	h.run(2*time.Second, func() {
		if !b.active() || a.active() {
			t.Fatalf("the service moved back to a without failback")
		}
	})
}

// errRefused is the kernel's refusal of 192.0.2.101 in the fake hosts.
var errRefused = errors.New("netfloat: add 192.0.2.101/24 to eth0: no buffer space available")

// A floating IP the kernel refuses with its interface up (here: lost, and
// every add fails again) makes the active unhealthy after a second of
// retries, so the standby, which can hold all of it, takes the service;
// the old active stays unhealthy for the service for vipUnfitHold, though
// it no longer holds it, and is fit again after, taking nothing back.
func TestDriverVIPAddFailsWithInterfaceUp(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	const vip = "192.0.2.101/24@eth0"
	a.host.failAdd = map[string]error{vip: errRefused}
	delete(a.host.addrs, vip) // gone; the next renewal finds it not held
	failedAt := h.clk.Now()
	h.runUntil(5*time.Second, "b active with both addresses", func() bool {
		return b.active() && b.m.held && len(b.host.addrs) == 2 && !a.active()
	})
	if took := h.clk.Now() - failedAt; took < vipUnfitAfter {
		t.Errorf("moved %v after the failure, before the %v of retries", took, vipUnfitAfter)
	}
	want := "floating IP " + vip + " could not be added: " + errRefused.Error()
	if a.m.healthy || !slices.Contains(a.m.reasons, want) {
		t.Errorf("a healthy=%v reasons %q, want unhealthy with %q", a.m.healthy, a.m.reasons, want)
	}
	if n := a.logged("vip_unfit"); n != 1 {
		t.Errorf("%d vip_unfit lines, want 1", n)
	}
	if !b.m.healthy {
		t.Errorf("b unhealthy: %q", b.m.reasons)
	}

	// Mended on a, which cannot know it without holding the service: it
	// stays unfit for the hold, then is fit and takes nothing back.
	a.host.failAdd = nil
	movedAt := h.clk.Now()
	h.runSparse(vipUnfitHold-2*time.Second, func() {
		if !b.active() || a.active() || a.m.healthy {
			t.Fatalf("within the hold: a active=%v healthy=%v, b active=%v", a.active(), a.m.healthy, b.active())
		}
	})
	h.runUntil(5*time.Second, "a fit again", func() bool { return a.m.healthy })
	if held := h.clk.Now() - movedAt; held < vipUnfitHold-vipUnfitAfter {
		t.Errorf("a fit %v after the move, want the %v hold", held, vipUnfitHold)
	}
	if a.logged("vip_fit") == 0 {
		t.Errorf("no vip_fit line")
	}
	h.run(2*time.Second, func() {
		if !b.active() || a.active() {
			t.Fatalf("the service moved back to a without failback")
		}
	})
}

// Both nodes refuse the address: the service moves once, to b, which then
// fails too and keeps it (a is held unfit, and a degraded active beats
// none), instead of bouncing between them as fast as handovers go.
func TestDriverVIPAddFailsOnBothNodes(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	const vip = "192.0.2.101/24@eth0"
	b.host.failAdd = map[string]error{vip: errRefused}
	a.host.failAdd = map[string]error{vip: errRefused}
	delete(a.host.addrs, vip)
	h.runUntil(5*time.Second, "b active", func() bool { return b.active() && !a.active() })
	h.runUntil(5*time.Second, "b unhealthy", func() bool { return !b.m.healthy })
	if got := b.host.addrs; len(got) != 1 {
		t.Errorf("b holds %v, want the one address it can add", got)
	}
	h.runSparse(time.Minute, func() {
		if !b.active() || a.active() {
			t.Fatalf("the service bounced back to a: a active=%v, b active=%v", a.active(), b.active())
		}
	})
	if n := b.logged("vip_unfit"); n != 1 {
		t.Errorf("b: %d vip_unfit lines, want 1", n)
	}
}

// A floating IP that a reload adds on the active, whose first announcement
// fails (the address is in the kernel; the burst goes on), is held, not
// failed: the node stays healthy and the service stays.
func TestDriverReloadAnnounceFailureIsNoFailedAdd(t *testing.T) {
	h := newHarness(t)
	a, b := h.startActive()
	a.host.failAnnounce = map[string]error{vip102: errors.New("netfloat: send gratuitous ARP on eth1: no buffer space available")}
	cfg := &ctlmsg.Config{
		VIPs:  []ctlmsg.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "192.0.2.101/24", Interface: "eth0"}, {Address: "192.0.2.102/24", Interface: "eth1"}},
		Hooks: ctlmsg.Hooks{Timeout: time.Second},
	}
	h.supervisor(a, ctlmsg.ConfigMsg(cfg))
	h.supervisor(b, ctlmsg.ConfigMsg(cfg))
	if a.host.addrs[vip102] != "held" || len(a.m.vipFail) != 0 {
		t.Fatalf("a holds %v, failed %v: want %s held", a.host.addrs, a.m.vipFail, vip102)
	}
	h.run(3*time.Second, func() {
		if !a.active() || !a.m.healthy {
			t.Fatalf("a active=%v healthy=%v (%q) for an announcement that failed", a.active(), a.m.healthy, a.m.reasons)
		}
	})
	if !strings.Contains(a.logs.String(), `"msg":"cannot announce floating IP"`) {
		t.Errorf("the failed announcement is not logged")
	}
}

// With failback, a node whose kernel refuses the address gets the service
// back when its hold ends, and is unfit again a second later: each such
// episode doubles its hold (5, 10, 20 minutes..., here 20, 40, 80 s), so
// the service, which has no address for about that second each time, does
// not come back to it every five minutes for good. An add that succeeds
// forgets the episodes.
func TestDriverVIPRefusedWithFailbackBacksOff(t *testing.T) {
	h := newHarness(t)
	h.failback = 2 * time.Second
	a, b := h.startActive()
	a.m.unfitBase = 20 * time.Second
	const vip = "192.0.2.101/24@eth0"
	a.host.failAdd = map[string]error{vip: errRefused}
	delete(a.host.addrs, vip)
	var returns []time.Duration // when the service came back to a
	wasActive := true
	start := h.clk.Now()
	h.runSparse(160*time.Second, func() {
		if act := a.active(); act && !wasActive {
			returns = append(returns, h.clk.Now()-start)
		}
		wasActive = a.active()
	})
	// Episodes end 20, 40 and 80 s after the last failure (about a
	// second after each return), then failback takes 2 s: back at about
	// 23, 66 and 149 s.
	want := []time.Duration{23 * time.Second, 66 * time.Second, 149 * time.Second}
	t.Logf("the service came back to a after %v", returns)
	if len(returns) != len(want) {
		t.Fatalf("the service came back to a at %v, want 3 times, after about %v", returns, want)
	}
	for i := range want {
		if d := returns[i] - want[i]; d < -3*time.Second || d > 3*time.Second {
			t.Errorf("return %d after %v, want about %v", i+1, returns[i], want[i])
		}
	}
	if n := a.logged("vip_unfit"); n != 4 {
		t.Errorf("%d vip_unfit lines, want 4 (the first failure and three returns)", n)
	}
	if !b.active() {
		t.Fatalf("b not active at the end")
	}

	// Mended: the next return holds the address, and the episodes are
	// forgotten.
	a.host.failAdd = nil
	h.runUntil(3*time.Minute, "a active with both addresses", func() bool {
		return a.active() && len(a.host.addrs) == 2
	})
	h.run(2*time.Second, nil)
	if !a.m.healthy || len(a.m.vipEpisodes) != 0 {
		t.Errorf("a healthy=%v episodes %v after its add succeeded", a.m.healthy, a.m.vipEpisodes)
	}
}

func TestUnfitHoldDoublesToAnHour(t *testing.T) {
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}
	for i, w := range want {
		if got := unfitHold(vipUnfitHold, i+1); got != w {
			t.Errorf("episode %d: hold %v, want %v", i+1, got, w)
		}
	}
}

// IPv6 turned off under the active's IPv6 address: the kernel drops the
// address and refuses it again. That is the interface's own reason
// (ipv6_disabled), read once a second, even when the second of failed
// adds ends in the very pass that reads it: no vip_unfit and no hold, so
// the node is fit as soon as IPv6 is back.
func TestDriverIPv6OffIsNoRefusedAddress(t *testing.T) {
	h := newHarness(t)
	h.vips = []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "2001:db8::100/64", Interface: "eth0"}}
	a, b := h.startActive()
	const v6 = "2001:db8::100/64@eth0"
	a.host.v6off = map[string]bool{"eth0": true}
	delete(a.host.addrs, v6)
	a.m.lastExt = 0 // the next renewal finds it gone
	h.runUntil(time.Second, "a's add of the IPv6 address failed", func() bool { _, ok := a.m.vipFail[v6]; return ok })
	// The once-a-second read of disable_ipv6 falls due in the same pass
	// as the second of failures.
	a.m.lastV6Check = a.m.vipFail[v6].since
	h.runUntil(5*time.Second, "b active with both addresses", func() bool {
		return b.active() && len(b.host.addrs) == 2 && !a.active()
	})
	if a.logged("vip_unfit") > 0 {
		t.Errorf("IPv6 off made a vip_unfit (a hold for a reason that ends with IPv6 on)")
	}
	a.host.v6off = nil
	h.runUntil(3*time.Second, "a fit again", func() bool { return a.m.healthy })
}
