package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitHolds waits until host alone holds the floating IP and returns how
// long that took.
func waitHolds(t *testing.T, n *Net, host string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for n.Holder() != host {
		if time.Since(start) > within {
			t.Fatalf("%s does not hold %s alone within %v (a holds: %v, b holds: %v)", host, VIP, within, n.Holds("a"), n.Holds("b"))
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// waitTakeover waits until host holds the floating IP (the other may
// still hold it too) and returns how long that took.
func waitTakeover(t *testing.T, n *Net, host string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for !n.Holds(host) {
		if time.Since(start) > within {
			t.Fatalf("%s does not take %s over within %v", host, VIP, within)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// waitLog waits until host's keepalived log has grown by a line containing s.
func waitLog(t *testing.T, k *Keepalived, host, s string, from int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(k.hosts[host].logPath)
		if len(b) > from && strings.Contains(string(b[from:]), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keepalived %s: no %q in its log within %v:\n%s", host, s, within, k.Log(host))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logSize(k *Keepalived, host string) int {
	b, _ := os.ReadFile(k.hosts[host].logPath)
	return len(b)
}

// assertGone fails if any process is left in a node's cgroup.
func assertGone(t *testing.T, k *Keepalived, host string) {
	t.Helper()
	ps, err := k.hosts[host].apps.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) > 0 {
		t.Errorf("processes left on %s: %v", host, ps)
	}
}

func TestKeepalived(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("e2e: the keepalived test needs root (network namespaces, cgroups)")
	}
	n := NewNet(t)
	k := NewKeepalived(t, n, 100*time.Millisecond)
	if got, want := k.Label(), "system=keepalived advert_ms=100"; got != want {
		t.Errorf("Label() = %q, want %q", got, want)
	}
	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\n--- a:\n%s\n--- b:\n%s", what, err, k.Log("a"), k.Log("b"))
		}
	}

	fail("start", k.Start())
	if h := n.Holder(); h != "a" {
		t.Fatalf("holder after start = %q, want a", h)
	}

	// kill: b takes over; a SIGKILLed keepalived leaves the address behind.
	fail("kill a", k.Kill("a"))
	took := waitTakeover(t, n, "b", 10*time.Second)
	stillA := n.Holds("a")
	t.Logf("kill: b holds %s %v after a was killed; a still holds it too: %v", VIP, took.Round(time.Millisecond), stillA)
	if !stillA {
		t.Errorf("kill: a no longer holds %s: Kill was not a crash (keepalived removed the address)", VIP)
	}
	assertGone(t, k, "a")

	fail("stop", k.Stop())
	if n.Holds("a") || n.Holds("b") {
		t.Fatalf("after Stop: a holds %v, b holds %v", n.Holds("a"), n.Holds("b"))
	}
	assertGone(t, k, "a")
	assertGone(t, k, "b")

	// Start after Stop starts afresh.
	fail("start again", k.Start())
	if h := n.Holder(); h != "a" {
		t.Fatalf("holder after second start = %q, want a", h)
	}

	// appfail: a's check (every second) fails, a goes to FAULT, b takes over.
	fromA := logSize(k, "a")
	fail("fail app on a", k.FailApp("a"))
	took = waitHolds(t, n, "b", 10*time.Second)
	t.Logf("appfail: b alone holds %s %v after a's SIP server failed", VIP, took.Round(time.Millisecond))
	waitLog(t, k, "a", "Entering FAULT STATE", fromA, 5*time.Second)

	// Healed, a comes back as backup and stays one (nopreempt).
	fromA = logSize(k, "a")
	fail("heal", k.Heal())
	waitLog(t, k, "a", "Entering BACKUP STATE", fromA, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if h := n.Holder(); h != "b" {
		t.Fatalf("after heal: holder %q, want b (nopreempt)", h)
	}

	// switchover: restarting keepalived on b hands the role to a.
	fromB := logSize(k, "b")
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- k.Switchover("b") }()
	took = waitHolds(t, n, "a", 10*time.Second)
	fail("switchover from b", <-done)
	t.Logf("switchover: a alone holds %s %v after the switchover began; Switchover returned after %v",
		VIP, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	waitLog(t, k, "b", "Entering BACKUP STATE", fromB, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if h := n.Holder(); h != "a" {
		t.Fatalf("after switchover: holder %q, want a", h)
	}

	// stall: b takes over while a's VRRP process is stopped; resumed, a
	// (higher priority) takes the role back.
	go func() { done <- k.Stall("a", 2*time.Second) }()
	took = waitTakeover(t, n, "b", 2*time.Second)
	t.Logf("stall: b holds %s %v after a's VRRP process was stopped (a still holds it: %v)", VIP, took.Round(time.Millisecond), n.Holds("a"))
	fail("stall a", <-done)
	waitHolds(t, n, "a", 5*time.Second)

	// noisy neighbour: runs in a's namespace in its own memory-limited
	// group, and is gone after its time.
	fail("noise on a", k.Noise("a", time.Second))
	k.mu.Lock()
	g := k.noises[len(k.noises)-1].g
	k.mu.Unlock()
	// stress-ng itself (not the wrapper that puts it in the group and the
	// namespace) in a's namespace.
	ownNS, _ := os.Readlink("/proc/self/ns/net")
	aNS := ""
	deadline := time.Now().Add(5 * time.Second)
	for aNS == "" {
		ps, err := g.Procs()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
			if strings.TrimSpace(string(comm)) == "stress-ng" {
				aNS, _ = os.Readlink("/proc/" + strconv.Itoa(p) + "/ns/net")
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stress-ng in the noise group (pids %v)", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if aNS == ownNS {
		t.Errorf("the noisy neighbour runs in the test's own network namespace")
	}
	limit := ""
	for _, f := range []string{"memory.limit_in_bytes", "memory.max"} { // v1, v2
		if b, err := os.ReadFile(filepath.Join(g.Dirs()["memory"], f)); err == nil {
			limit = strings.TrimSpace(string(b))
		}
	}
	if limit != strconv.Itoa(NoiseMemoryMax) {
		t.Errorf("noise memory limit %q, want %d", limit, NoiseMemoryMax)
	}
	k.mu.Lock()
	r := k.noises[len(k.noises)-1]
	k.mu.Unlock()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("noise still running 15 s after its 1 s")
	}
	if _, err := os.Stat(g.Dirs()["memory"]); !os.IsNotExist(err) {
		t.Errorf("noise group %s not removed: %v", g.Dirs()["memory"], err)
	}

	if err := k.KillWitness(); err != ErrNotApplicable {
		t.Errorf("KillWitness = %v, want ErrNotApplicable", err)
	}
	fail("final stop", k.Stop())
	if n.Holds("a") || n.Holds("b") {
		t.Errorf("after final Stop: a holds %v, b holds %v", n.Holds("a"), n.Holds("b"))
	}
}
