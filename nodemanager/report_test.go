package nodemanager

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/transport/transporttest"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
)

// A supervisor that does not read (it runs without realtime priority and
// a loaded host starves it) never holds up the node manager's loop: the
// reports it has no room for are skipped at once, and once it reads
// again the next report is a full one, so it learns everything. Before,
// each report waited 20 ms for room: a loop holding a 60 ms lease then
// spent most of its time waiting and lost the lease.
func TestReportNeverWaitsForSupervisor(t *testing.T) {
	m := testManager(t, false)
	sup, child, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close(); child.Close() })
	m.sup = sup
	nw, err := transporttest.New(clock.Real{}, make([]byte, protocol.KeySize), 0)
	if err != nil {
		t.Fatal(err)
	}
	m.tr = nw.Endpoint(transporttest.Addr{Host: "a"})
	m.state = &statefile.Writer{Path: t.TempDir() + "/node.state", What: "node state", Log: m.log}
	fd := int(child.Fd())

	// readAll drains the supervisor's side without waiting and returns
	// the reports in it, oldest first.
	readAll := func() []*ctlmsg.NodeManagerReport {
		t.Helper()
		var out []*ctlmsg.NodeManagerReport
		buf := make([]byte, 256<<10)
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			msg, err := ctlmsg.Decode(buf[:n])
			if err != nil {
				t.Fatal(err)
			}
			r, err := msg.NodeManagerReport()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
	}

	now := time.Second
	step := m.pcfg.Lease / 4
	// Fill the queue: the supervisor never reads.
	for i := 0; m.reportsSkipped == 0; i++ {
		if i > 10000 {
			t.Fatal("no report was ever skipped: the supervisor's queue never filled")
		}
		now += step
		m.report(now)
	}
	// Many more reports while it stays starved: none waits. Each used to
	// wait 20 ms; 50 of them well under half that long is not waiting.
	const more = 50
	start := time.Now()
	for range more {
		now += step
		m.report(now)
	}
	if took := time.Since(start); took > more*20*time.Millisecond/2 {
		t.Fatalf("%d reports to a supervisor that does not read took %v: the loop waits for it", more, took)
	}
	if m.reportsSkipped < more {
		t.Fatalf("%d reports skipped, want at least %d", m.reportsSkipped, more)
	}
	queued := readAll()
	if len(queued) == 0 {
		t.Fatal("nothing reached the supervisor")
	}
	// It reads again: the next report goes out, full, not a beat, with
	// the loop's counters (vigil_loop_slow_total).
	m.slowPasses = 7
	now += step
	m.report(now)
	got := readAll()
	if len(got) != 1 {
		t.Fatalf("after the supervisor read, %d reports arrived, want 1", len(got))
	}
	if got[0].Beat || got[0].Self != "a" || got[0].SlowPasses != 7 {
		t.Fatalf("first report after skipping: beat=%t self=%q slow_passes=%d, want a full report of a with 7", got[0].Beat, got[0].Self, got[0].SlowPasses)
	}
	if m.reportsSkipped != 0 {
		t.Fatalf("skipped count %d after a report went out, want 0", m.reportsSkipped)
	}
}

// A pass of the loop that takes a good part of the lease is logged with
// the step to blame (loop_slow): here the state file's write, on a disk
// that a neighbour's fsyncs slow down, when the node claims. Quick passes
// log nothing. A write longer than the lease no longer keeps the claim
// from winning (before Node.Sent, no claim ever did on such a disk).
func TestSlowPassNamesItsStep(t *testing.T) {
	h := newHarness(t)
	a := h.startNode("a")
	// Longer than the claim round's timeout and than the lease itself:
	// the claim still wins, its round counting from the send (Node.Sent).
	a.state.slow = a.m.pcfg.Lease + 20*time.Millisecond
	h.runUntil(5*time.Second, "a active", a.active)
	logs := a.logs.String()
	if a.logged("loop_slow") == 0 || !strings.Contains(logs, `"step":"persist"`) {
		t.Fatalf("a %v state write did not show as a slow pass naming persist:\n%s", a.state.slow, logs)
	}
	if a.m.slowPasses == 0 {
		t.Fatal("slow passes not counted")
	}

	// Holding the role writes nothing: no slow pass.
	before := a.logged("loop_slow")
	h.run(500*time.Millisecond, nil)
	if !a.active() {
		t.Fatal("a lost the role")
	}
	if n := a.logged("loop_slow") - before; n != 0 {
		t.Fatalf("%d loop_slow lines from quick passes:\n%s", n, a.logs.String())
	}
}

// A pass that has not ended is reported while it lasts, once, with the
// step it is in (after the last one it finished): a node manager stuck
// in a pass is fenced before the pass could end and log loop_slow.
func TestStuckPassIsReportedWhileItLasts(t *testing.T) {
	m := testManager(t, false)
	m.pcfg.Lease = 60 * time.Millisecond
	clk := clock.NewFake(time.Second)
	m.clk = clk
	var logs syncBuf
	m.log = slog.New(slog.NewJSONHandler(&logs, nil))
	stuck := func() int { return strings.Count(logs.String(), `"event":"loop_stuck"`) }

	m.pass.begin(stepTick, clk.Now())
	m.pass.step(stepTick, clk.Now())
	m.pass.step(stepPersist, clk.Now())
	clk.Advance(m.pcfg.Lease / 8)
	m.watchPass()
	if stuck() != 0 {
		t.Fatalf("reported a pass an eighth of the lease old:\n%s", logs.String())
	}
	clk.Advance(m.pcfg.Lease / 4)
	m.watchPass()
	m.watchPass()
	if stuck() != 1 || !strings.Contains(logs.String(), `"after_step":"persist"`) || !strings.Contains(logs.String(), `"input":"tick"`) {
		t.Fatalf("want one loop_stuck line naming input tick and after_step persist:\n%s", logs.String())
	}
	m.checkPass()
	if !strings.Contains(logs.String(), `"event":"loop_slow"`) {
		t.Fatalf("the ended pass was not logged as slow:\n%s", logs.String())
	}
	clk.Advance(m.pcfg.Lease)
	m.watchPass()
	if stuck() != 1 {
		t.Fatalf("reported a pass after it ended:\n%s", logs.String())
	}
}

// Between full reports (one a second) the node manager sends beats, but a
// change of the kernel lease's state goes in a full report at once: the
// supervisor leaves a stalled node manager to the kernel lease only while
// the last report says it enforces.
func TestKernelLeaseChangeReportsAtOnce(t *testing.T) {
	m := testManager(t, false)
	sup, child, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close(); child.Close() })
	m.sup = sup
	nw, err := transporttest.New(clock.Real{}, make([]byte, protocol.KeySize), 0)
	if err != nil {
		t.Fatal(err)
	}
	m.tr = nw.Endpoint(transporttest.Addr{Host: "a"})
	m.state = &statefile.Writer{Path: t.TempDir() + "/node.state", What: "node state", Log: m.log}
	h := &fakeHost{id: "a", kl: true, addrs: map[string]string{}, links: map[string]bool{}}
	f := &fakeFloat{h: h}
	m.host, m.float = h, f
	fd := int(child.Fd())
	next := func() *ctlmsg.NodeManagerReport {
		t.Helper()
		buf := make([]byte, 256<<10)
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("no report: %v", err)
		}
		msg, err := ctlmsg.Decode(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		r, err := msg.NodeManagerReport()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	now := time.Second
	m.report(now)
	if r := next(); r.Beat || r.KernelLease == nil || r.KernelLease.State != ctlmsg.KernelLeaseEnforcing {
		t.Fatalf("first report: beat %v, kernel lease %+v", r.Beat, r.KernelLease)
	}
	now += 15 * time.Millisecond
	m.report(now)
	if r := next(); !r.Beat {
		t.Fatal("nothing changed, yet a full report 15 ms after the last")
	}
	f.kls = netfloat.KernelLeaseStats{Failing: true, LastError: "netlink: no buffer space"}
	now += 15 * time.Millisecond
	m.report(now)
	if r := next(); r.Beat || r.KernelLease == nil || r.KernelLease.State != ctlmsg.KernelLeaseFailing {
		t.Fatalf("after the kernel lease failed: beat %v, kernel lease %+v", r.Beat, r.KernelLease)
	}
	now += 15 * time.Millisecond
	m.report(now)
	if r := next(); !r.Beat {
		t.Fatal("a full report again with nothing changed")
	}
	now += ctlmsg.FullReportEvery
	m.report(now)
	if r := next(); r.Beat {
		t.Fatal("no full report after FullReportEvery")
	}
}
