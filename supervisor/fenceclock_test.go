package supervisor

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
)

// The fence runs on the supervisor's clock, the lease's (CLOCK_BOOTTIME in
// production): these tests move a fake one by hand and check that the
// node manager is fenced exactly when the lease its last report claims
// ends, not a moment sooner, and what moves that moment.

// fenceRig is a supervisor on a fake clock with a stalled stand-in node
// manager and a fencer that records the removal of the floating IPs.
type fenceRig struct {
	t   *testing.T
	clk *clock.Fake
	s   *Supervisor
	nm  *proc
	f   *orderFencer
}

func newFenceRig(t *testing.T, deliverExit bool) *fenceRig {
	t.Helper()
	clk := clock.NewFake(time.Hour)
	s := loopSupervisorOn(t, clk)
	nm := stalledNodeManager(t, s, deliverExit)
	f := &orderFencer{pid: nm.pid, done: make(chan struct{})}
	s.floats = []fencer{f}
	s.ctrl = []*proc{nm}
	return &fenceRig{t: t, clk: clk, s: s, nm: nm, f: f}
}

// report delivers a node manager report (of the service in rep.Slot) as
// the channel would, through the supervisor's own filing.
func (r *fenceRig) report(rep *ctlmsg.NodeManagerReport) {
	r.t.Helper()
	inLoop(r.t, r.s, func() {
		if err := r.s.nodeManagerReport(r.nm, rep); err != nil {
			r.t.Error(err)
		}
	})
}

// advance moves the clock and lets the loop run what the timers posted.
func (r *fenceRig) advance(d time.Duration) {
	r.t.Helper()
	r.clk.Advance(d)
	inLoop(r.t, r.s, nil) // after every closure the timers posted
}

func (r *fenceRig) fenced() bool {
	r.t.Helper()
	var f bool
	inLoop(r.t, r.s, func() { f = r.nm.fencing })
	return f
}

func (r *fenceRig) removed() bool {
	select {
	case <-r.f.done:
		return true
	default:
		return false
	}
}

func active(remainingMS int64) *ctlmsg.NodeManagerReport {
	return &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "active", Epoch: 7, LeaseValid: true, LeaseRemainingMS: remainingMS, LeaseMS: 200}}
}

// Fenced at the end of the reported lease on the lease's clock: not 1 ms
// before; and the floating IPs go once the node manager is dead.
func TestFenceAtLeaseEndOnTheClock(t *testing.T) {
	r := newFenceRig(t, true)
	r.report(active(180))
	r.advance(179 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced 1 ms before the reported lease ended")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced when the reported lease ended")
	}
	select {
	case <-r.f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("floating IPs not removed after the fence")
	}
}

// A newer report moves the deadline to the end of the lease it claims:
// the old deadline passes without a fence.
func TestFenceDeadlineMovedByReport(t *testing.T) {
	r := newFenceRig(t, true)
	r.report(active(180))
	r.advance(100 * time.Millisecond)
	r.report(active(180)) // renewed: now ends at 280 ms
	r.advance(179 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced at an old deadline after a newer report extended it")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the end of the renewed lease")
	}
}

// After a planned handover the node manager keeps the addresses until the
// end of the lease it held (the drain): the fence waits for that, and a
// report claiming almost nothing is still given half a lease (two report
// intervals).
func TestFenceWaitsForDrainAndHalfALease(t *testing.T) {
	r := newFenceRig(t, true)
	r.report(&ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby", Epoch: 7, DrainingTo: "b", DrainRemainingMS: 150, LeaseMS: 200}})
	r.advance(149 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced during the drain")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the end of the drain")
	}

	r2 := newFenceRig(t, true)
	r2.report(active(20))
	r2.advance(99 * time.Millisecond)
	if r2.fenced() {
		t.Fatal("fenced sooner than half a lease after a report")
	}
	r2.advance(time.Millisecond)
	if !r2.fenced() {
		t.Fatal("not fenced half a lease after a report with 20 ms left")
	}
}

// A fence check that fires late (the whole host, the supervisor with it,
// was not running) does not fence on its own stall: it looks again a
// quarter lease later, and fences then if no report came.
func TestLateFenceCheckLooksAgain(t *testing.T) {
	r := newFenceRig(t, true)
	r.report(active(180))
	r.advance(280 * time.Millisecond) // the fake timer fires at its deadline: on time
	if !r.fenced() {
		t.Fatal("an on-time check did not fence")
	}

	r = newFenceRig(t, true)
	r.report(active(180))
	var deadline time.Duration
	inLoop(t, r.s, func() { deadline = r.nm.fenceAt })
	inLoop(t, r.s, func() {
		r.s.checkFence(r.nm, r.nm.gen, deadline, deadline+60*time.Millisecond) // fired > lease/4 late
	})
	if r.fenced() {
		t.Fatal("fenced on a check that fired late")
	}
	var again time.Duration
	inLoop(t, r.s, func() { again = r.nm.fenceAt })
	if want := r.clk.Now() + 50*time.Millisecond; again != want {
		t.Fatalf("re-armed for %v, want now + lease/4 = %v", again, want)
	}
	r.advance(49 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced before the re-check")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the re-check without a newer report")
	}
}

// A fenced node manager whose death is never confirmed loses its floating
// IPs half a drift margin after the kill, on the same clock: before any
// locator may grant the role elsewhere.
func TestFenceKillWaitOnTheClock(t *testing.T) {
	r := newFenceRig(t, false)
	r.report(active(180))
	r.advance(180 * time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced")
	}
	wait := r.s.fenceKillWait() // drift margin 40 ms / 2
	r.advance(wait - time.Millisecond)
	if r.removed() {
		t.Fatal("floating IPs removed before the kill wait although death was not confirmed")
	}
	r.advance(time.Millisecond)
	select {
	case <-r.f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("floating IPs not removed at the end of the kill wait")
	}
}

// countingClock counts the functions and alarm settings armed on a fake
// clock, and the alarms made.
type countingClock struct {
	*clock.Fake
	armed, alarms atomic.Int64
}

func (c *countingClock) AfterFunc(d time.Duration, fn func()) clock.Stopper {
	c.armed.Add(1)
	return c.Fake.AfterFunc(d, fn)
}

func (c *countingClock) NewAlarm(fn func()) clock.Alarm {
	c.alarms.Add(1)
	return countingAlarm{c.Fake.NewAlarm(fn), &c.armed}
}

type countingAlarm struct {
	clock.Alarm
	armed *atomic.Int64
}

func (a countingAlarm) Set(d time.Duration) { a.armed.Add(1); a.Alarm.Set(d) }

// Reports four times a lease set the fence timer once per fence wait, not
// once per report, on one timer for the node manager's run (in production
// a timerfd and a goroutine each), and the fence still comes exactly when
// the last reported lease ends.
func TestFenceOneTimerForManyReports(t *testing.T) {
	clk := &countingClock{Fake: clock.NewFake(time.Hour)}
	s := loopSupervisorOn(t, clk)
	nm := stalledNodeManager(t, s, true)
	f := &orderFencer{pid: nm.pid, done: make(chan struct{})}
	s.floats = []fencer{f}
	s.ctrl = []*proc{nm}
	r := &fenceRig{t: t, clk: clk.Fake, s: s, nm: nm, f: f}
	before := clk.armed.Load()
	const reports = 40
	for range reports {
		r.report(active(180))
		r.advance(50 * time.Millisecond)
	}
	// A timer is re-armed when it fires before the moved deadline: about
	// one per 180 ms here, not one per 50 ms report.
	if n := clk.armed.Load() - before; n > reports/2 {
		t.Errorf("%d timers armed for %d reports", n, reports)
	}
	if n := clk.alarms.Load(); n != 1 {
		t.Errorf("%d fence alarms made for one node manager run, want 1", n)
	}
	r.advance(129 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced 1 ms before the last reported lease ended")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced when the last reported lease ended")
	}
}

// A report that the channel's reader has read but the loop has not yet
// handled (the reader and the fence timer both woke late on a starved
// host, the timer first) defers the fence like one still in the socket:
// fencing then killed a live node manager. Once handled, the report moves
// the deadline, and silence after it is fenced as always.
func TestFenceDefersForReportReadButNotHandled(t *testing.T) {
	r := newFenceRig(t, true)
	sup, child, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close(); child.Close() })
	cc, err := net.FileConn(child)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	inLoop(t, r.s, func() { r.nm.setConn(sup) })
	r.report(active(180))

	// The node manager reports; the reader takes it off the socket but
	// has not posted it to the loop yet.
	msg, err := ctlmsg.NodeManagerReportMsg(active(180))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Write(b); err != nil {
		t.Fatal(err)
	}
	got, err := sup.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var deadline time.Duration
	inLoop(t, r.s, func() { deadline = r.nm.fenceAt })
	r.clk.AdvanceTo(deadline)
	inLoop(t, r.s, func() { r.s.checkFence(r.nm, r.nm.gen, deadline, deadline) }) // on time
	if r.fenced() {
		t.Fatal("fenced while a report it had read waited in the loop")
	}
	// The loop handles it: a new deadline, and without another report
	// the fence comes at its end.
	inLoop(t, r.s, func() { r.s.onChannel(r.nm, got, nil) })
	inLoop(t, r.s, func() { deadline = r.nm.fenceAt })
	r.advance(deadline - r.clk.Now() - time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced before the deadline the handled report set")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced after the handled report's lease ran out in silence")
	}
}

// A firing of a fence timer setting that was replaced since (it was on its
// way when the timer was set again) neither fences nor loses the current
// setting: the fence comes at the current deadline.
func TestFenceStaleFiringKeepsTheDeadline(t *testing.T) {
	r := newFenceRig(t, true)
	r.report(active(180))
	r.advance(100 * time.Millisecond)
	inLoop(t, r.s, func() { r.s.fenceFired(r.nm, r.nm.gen, r.clk.Now()) }) // 80 ms early
	if r.fenced() {
		t.Fatal("a stale firing fenced")
	}
	r.advance(79 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced 1 ms before the reported lease ended")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced when the reported lease ended, after a stale firing")
	}
}

// kernelRig is a fence rig whose host has a floating IP and whose kernel
// lease check answers err, recording what it was asked.
func kernelRig(t *testing.T, err error) (*fenceRig, *[]time.Duration) {
	t.Helper()
	r := newFenceRig(t, true)
	var within []time.Duration
	inLoop(t, r.s, func() {
		r.s.cfg.VIPs = []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}}
		r.s.leaseEnforces = func(_ int, vips []netip.Addr, w time.Duration) error {
			if len(vips) != 1 || vips[0] != netip.MustParseAddr("192.0.2.100") {
				t.Errorf("kernel lease checked for %v", vips)
			}
			within = append(within, w)
			return err
		}
	})
	return r, &within
}

func enforcing(rep *ctlmsg.NodeManagerReport) *ctlmsg.NodeManagerReport {
	rep.KernelLease = &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseEnforcing}
	return rep
}

func (r *fenceRig) counts() (fences, held uint64) {
	r.t.Helper()
	inLoop(r.t, r.s, func() { fences, held = r.s.fences, r.s.fencesHeld })
	return fences, held
}

// With the kernel lease enforcing, a node manager silent past its lease
// is not killed at the lease's end (the kernel stopped serving without
// it), though its addresses go then: it is killed only if it is still
// silent fenceHoldMax later.
func TestFenceHeldWhileKernelLeaseEnforces(t *testing.T) {
	r, within := kernelRig(t, nil)
	r.report(enforcing(active(180)))
	r.advance(180 * time.Millisecond)
	if r.fenced() {
		t.Fatal("killed at the lease's end although the kernel lease enforces it")
	}
	if !r.removed() {
		t.Fatal("the floating IPs were not removed at the lease's end")
	}
	if f, h := r.counts(); f != 0 || h != 1 {
		t.Fatalf("fences=%d held=%d, want 0 and 1", f, h)
	}
	// Asked at the lease's end: no element may outlive a lease from
	// then (the node manager's, 200 ms).
	if len(*within) != 1 || (*within)[0] != 200*time.Millisecond {
		t.Fatalf("kernel lease checked with %v, want once with 200ms", *within)
	}
	hold := fenceHoldMax(200 * time.Millisecond)
	r.advance(hold - time.Millisecond)
	if r.fenced() {
		t.Fatal("killed before the hold ran out")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("a node manager silent for the whole hold was not killed")
	}
	// The kill's own removal follows its death, as without a hold.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.f.mu.Lock()
		calls := append([]bool(nil), r.f.calls...)
		r.f.mu.Unlock()
		if len(calls) >= 2 {
			if !calls[0] || calls[1] {
				t.Fatalf("removals with the node manager alive: %v, want [true false] (held, then after its death)", calls)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removals %v: none after the kill", calls)
		}
		// The clock stays: the kill wait's own removal (fence_kill_slow)
		// must not come first. The reaper's exit is what is awaited.
		time.Sleep(time.Millisecond)
		inLoop(t, r.s, nil)
	}
	if f, h := r.counts(); f != 1 || h != 1 {
		t.Fatalf("fences=%d held=%d, want 1 and 1", f, h)
	}
	if len(*within) != 1 {
		t.Fatalf("the kernel lease was checked again at the kill: %v", *within)
	}
}

// A report during the hold ends it: the node manager is alive, and the
// next silence past its lease starts a hold of its own.
func TestFenceHoldEndsWithAReport(t *testing.T) {
	r, _ := kernelRig(t, nil)
	r.report(enforcing(active(180)))
	r.advance(300 * time.Millisecond)
	r.report(enforcing(&ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby", Epoch: 7, LeaseMS: 200}}))
	r.advance(fenceHoldMax(200 * time.Millisecond))
	if r.fenced() {
		t.Fatal("killed by the hold of a silence that a report had ended")
	}
	if f, h := r.counts(); f != 0 || h != 2 {
		t.Fatalf("fences=%d held=%d, want 0 and 2 (a second silence, held again)", f, h)
	}
}

// Anything short of a kernel lease that stops serving by itself fences at
// the lease's end as without one: a report that does not say enforcing,
// or a kernel that does not (disarmed, an element that outlives the lease).
func TestFenceNotHeldWithoutKernelLease(t *testing.T) {
	for name, c := range map[string]struct {
		rep *ctlmsg.NodeManagerReport
		err error
	}{
		"no kernel lease reported": {active(180), nil},
		"failing": {func() *ctlmsg.NodeManagerReport {
			r := active(180)
			r.KernelLease = &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseFailing}
			return r
		}(), nil},
		"kernel says no": {enforcing(active(180)), errors.New("kernel lease: 192.0.2.100 not in set arp vigil lease_vips4 (disarmed)")},
	} {
		t.Run(name, func(t *testing.T) {
			r, _ := kernelRig(t, c.err)
			r.report(c.rep)
			r.advance(180 * time.Millisecond)
			if !r.fenced() {
				t.Fatal("not fenced at the lease's end")
			}
			if f, h := r.counts(); f != 1 || h != 0 {
				t.Fatalf("fences=%d held=%d, want 1 and 0", f, h)
			}
		})
	}
}

// One process runs every service's manager, and each reports on its own:
// a service that falls silent (its loop wedged) gets the process fenced at
// that service's deadline, though the other one reports on; its reports
// do not hide the silence.
func TestFenceWhenOneServiceFallsSilent(t *testing.T) {
	r := newFenceRig(t, true)
	inLoop(t, r.s, func() { r.nm.resetServices(2) })
	voice := func() *ctlmsg.NodeManagerReport { return active(180) }
	data := &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: 1, Role: "standby", Epoch: 3, LeaseMS: 200}}
	r.report(voice())
	r.report(data) // no lease: it must report again within one (200 ms)
	for range 3 {
		r.advance(50 * time.Millisecond)
		r.report(voice())
	}
	r.advance(49 * time.Millisecond) // 199 ms after data's report
	if r.fenced() {
		t.Fatal("fenced before the silent service's deadline")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the silent service's deadline: the other service's reports hid it")
	}
	// A report for a service the file does not have is refused, not filed.
	r = newFenceRig(t, true)
	inLoop(t, r.s, func() {
		r.nm.resetServices(2)
		if err := r.s.nodeManagerReport(r.nm, &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: 2}}); err == nil {
			t.Error("a report for a third service of two was filed")
		}
	})
}

// Both services reporting: each report pushes only its own deadline, and
// the process is fenced at the earliest, not at the latest report's.
func TestFenceDeadlineIsTheEarliestService(t *testing.T) {
	r := newFenceRig(t, true)
	inLoop(t, r.s, func() { r.nm.resetServices(2) })
	r.report(active(100)) // voice: fenced 100 ms from now unless it reports
	r.advance(50 * time.Millisecond)
	r.report(&ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: 1, Role: "active", Epoch: 4, LeaseValid: true, LeaseRemainingMS: 180, LeaseMS: 200}})
	r.advance(49 * time.Millisecond)
	if r.fenced() {
		t.Fatal("fenced before voice's lease ended")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the end of voice's lease: data's later report moved the process's deadline")
	}
}

// A service the node manager could not start holds nothing: its reports
// set no deadline, so a process whose only service is not started is never
// fenced however seldom it reports (every second), and one with a running
// service beside it is fenced at that service's deadline alone.
func TestNotStartedServiceSetsNoFence(t *testing.T) {
	notStarted := func(slot int) *ctlmsg.NodeManagerReport {
		return &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: slot, Role: ctlmsg.RoleNotStarted}, StartError: "statefile: checksum mismatch"}
	}
	r := newFenceRig(t, true)
	r.report(notStarted(0))
	for range 4 {
		r.advance(time.Second)
		if r.fenced() {
			t.Fatal("a node manager whose only service is not started was fenced")
		}
		r.report(notStarted(0))
	}
	r.advance(10 * time.Second)
	if r.fenced() {
		t.Fatal("fenced 10 s after a not-started report")
	}

	r = newFenceRig(t, true)
	inLoop(t, r.s, func() { r.nm.resetServices(2) })
	r.report(notStarted(1))
	r.report(active(180))
	r.advance(179 * time.Millisecond)
	r.report(notStarted(1)) // says nothing of voice's lease
	if r.fenced() {
		t.Fatal("fenced before voice's lease ended")
	}
	r.advance(time.Millisecond)
	if !r.fenced() {
		t.Fatal("not fenced at the end of voice's lease: the not-started service's report moved the deadline")
	}
}
