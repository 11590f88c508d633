package supervise

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterNodeManagerCrashRelease: SIGKILL of the active's node
// manager alone (the host lives on): its supervisor removes what the host
// serves, releases the role as the node's next incarnation, and the
// standby is active long before the lease (600 ms here) could have run
// out; the two never hold a valid lease together, and the restarted node
// manager starts above the incarnation the release used.
func TestClusterNodeManagerCrashRelease(t *testing.T) {
	c := newCluster(t)
	first, second := c.activeAndStandby()
	// The active names the standby as its successor once the token has
	// shown it in the ring, healthy.
	var before nmReport
	c.nodes[first].waitFor("the active names the standby its successor", 20*time.Second, func() bool {
		r, ok := c.report(first)
		before = r
		return ok && r.Succession != nil && r.Succession.To == second
	})
	stopDual := c.watchDual()

	began := time.Now()
	if err := syscall.Kill(nmPid(t, c.nodes[first], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := c.waitActive(10*time.Second, first); got != second {
		t.Fatalf("after the crash: active %q, want %q", got, second)
	}
	took := time.Since(began)
	t.Logf("node manager SIGKILL: %s active after %v", second, took.Round(time.Millisecond))
	// Lease expiry would take at least lease + drift margin (650 ms) plus
	// the standby's retry; the release path one round trip and a claim.
	// The bound is generous for a noisy machine, and still below the lease.
	// Inside make test-v2's emulated guest the release's own fsync took
	// 146 ms and the takeover 673 ms once: there the emulator is measured,
	// so only the behaviour (the takeover, the crash_release line) counts.
	if took >= 500*time.Millisecond && os.Getenv("VIGIL_VM_GUEST") != "1" {
		t.Errorf("the standby took over after %v: the release did not shorten the wait (lease 600 ms)", took)
	}
	log := c.nodes[first].log.String()
	if !strings.Contains(log, `"event":"crash_release"`) {
		t.Errorf("no event=crash_release in the crashed host's log:\n%s", log)
	}
	c.nodes[first].waitFor("restarted node manager reports standby", 10*time.Second, func() bool {
		r, ok := c.report(first)
		return ok && r.Role == "standby" && r.Active == second
	})
	if r, _ := c.report(first); r.Incarnation < before.Incarnation+2 {
		t.Errorf("restarted node manager at incarnation %d, want above the release's %d", r.Incarnation, before.Incarnation+1)
	}
	// The role stays where it went.
	time.Sleep(time.Second)
	if a := c.active(); a != second {
		t.Errorf("a second after the takeover the active is %q, want %q", a, second)
	}
	if dual := stopDual(); dual != 0 {
		t.Errorf("%d samples saw both nodes active with a valid lease", dual)
	}
	for _, id := range []string{"a", "b", "w"} {
		checkGrants(t, id, c.nodes[id].log.String())
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}
