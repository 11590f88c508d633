package supervise

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// critProc is the critical process of these tests: a long sleep behind an
// exec health check, with gen in its environment so that a reload can
// change one field and nothing else.
func critProc(gen int) string {
	return fmt.Sprintf(`
  - name: sip
    command: [/bin/sleep, "3600"]
    critical: true
    stop_timeout: 2s
    env: {GEN: "%d"}
    health:
      exec: [/bin/true]
      interval: 200ms
      timeout: 150ms
      rise: 2
      fall: 2
`, gen)
}

// brokenProcs are new configurations of the critical process that reload
// cannot make work, with the outcome its planned restart's grace must end
// in: the new command exits at once, every time (and soon turns FATAL), or
// it runs but fails its health check.
var brokenProcs = []struct{ name, procs, outcome string }{
	{"exits", `
  - name: sip
    command: [/bin/false]
    critical: true
    stop_timeout: 2s
    backoff: {initial: 100ms, fatal_after: 2}
    health:
      exec: [/bin/true]
      interval: 200ms
      timeout: 150ms
`, "exited"},
	{"unhealthy", `
  - name: sip
    command: [/bin/sleep, "3600"]
    critical: true
    stop_timeout: 2s
    health:
      exec: [/bin/false]
      interval: 200ms
      timeout: 150ms
      fall: 2
`, "unhealthy"},
}

// criticalVIPCluster is newVIPCluster with the critical process on both
// nodes, settled: one host active and holding the VIP, the other a standby
// that follows it, the process healthy on both. It returns the cluster, the
// same nodes as a cluster for reports, the active and the standby.
func criticalVIPCluster(t *testing.T) (*vipCluster, *cluster, string, string) {
	t.Helper()
	c := newVIPClusterWith(t, func(id string, _ *daemon) (string, string) {
		if id == "w" {
			return "", ""
		}
		return "", critProc(1)
	})
	for _, id := range []string{"a", "b"} {
		c.nodes[id].waitFor(id+": sip healthy", 30*time.Second, func() bool { return c.nodes[id].proc("sip").Health == "healthy" })
	}
	cl, act, stby := c.settle()
	return c, cl, act, stby
}

// reloadProcs rewrites d's processes: section and sends its supervisor
// SIGHUP, as `systemctl reload vigil` would.
func reloadProcs(t *testing.T, d *daemon, procs string) {
	t.Helper()
	d.writeConfig(procs)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// unhealthyLines counts the log lines in which d's supervisor or node
// manager declared the node unhealthy.
func unhealthyLines(d *daemon) int {
	n := 0
	for _, e := range events(d, "node_health") {
		if strings.Contains(e.raw, `"healthy":false`) {
			n++
		}
	}
	return n
}

// roleWatch samples both nodes' reports every 10 ms and records every
// sample in which the active is no longer the active of epoch epoch, or
// the standby is no longer its standby.
type roleWatch struct {
	mu      sync.Mutex
	samples int
	bad     []string
	stop    chan struct{}
	done    chan struct{}
}

func watchRole(cl *cluster, act, stby string, epoch uint64) *roleWatch {
	w := &roleWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ra, oka := cl.report(act)
			rb, okb := cl.report(stby)
			w.mu.Lock()
			w.samples++
			switch {
			case !oka || !okb:
				// A status call that failed says nothing about the role.
			case ra.Role != "active" || ra.Epoch != epoch:
				w.bad = append(w.bad, fmt.Sprintf("%s: role %s epoch %d", act, ra.Role, ra.Epoch))
			case rb.Role != "standby" || rb.Active != act:
				w.bad = append(w.bad, fmt.Sprintf("%s: role %s active %q", stby, rb.Role, rb.Active))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *roleWatch) end(t *testing.T, when string) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.samples < 50 {
		t.Errorf("%s: the role watch took only %d samples", when, w.samples)
	}
	if len(w.bad) > 0 {
		t.Errorf("%s: the role moved in %d of %d samples, first: %s", when, len(w.bad), w.samples, w.bad[0])
	}
}

// A reload that changes a field of a critical process on the active
// restarts that process, and the active role does not move: the restart
// the reload caused does not count against the node's health while the
// process comes back (running and healthy again). The same holds for
// `vigil restart` of that process. Sampled throughout: the active stays
// active in the same epoch, the standby stays its standby, the VIP is never
// missing on the active nor on both hosts, and neither the supervisor nor
// the node manager of the active ever calls the node unhealthy.
func TestReloadCriticalProcessKeepsRole(t *testing.T) {
	c, cl, act, stby := criticalVIPCluster(t)
	d := c.nodes[act]
	r0, _ := cl.report(act)
	roles := map[string]int{act: roleLines(d), stby: roleLines(c.nodes[stby])}
	unhealthy := unhealthyLines(d)
	pid0 := d.proc("sip").PID
	pr := c.addrProbe(act, testVIP, testVIP)
	defer pr.end()
	rw := watchRole(cl, act, stby, r0.Epoch)

	// (a) reload with an added environment variable.
	reloadProcs(t, d, critProc(2))
	var pid1 int
	d.waitFor("sip restarted by the reload and healthy", 15*time.Second, func() bool {
		p := d.proc("sip")
		pid1 = p.PID
		return p.State == supervisor.StateRunning && p.PID != pid0 && p.Health == "healthy"
	})
	if alive(pid0) {
		t.Errorf("the old sip %d is still running after the reload", pid0)
	}
	time.Sleep(2 * time.Second) // let a late move show
	rw.end(t, "reload")
	pr.check(t, "reload")
	if n := unhealthyLines(d) - unhealthy; n != 0 {
		t.Errorf("the active logged the node unhealthy %d times during the reload", n)
	}

	// (b) `vigil restart sip` on the active: planned as well.
	rw = watchRole(cl, act, stby, r0.Epoch)
	if out, code := d.vigil("restart", "--socket", d.socket, "sip"); code != 0 {
		t.Fatalf("vigil restart sip: exit %d: %s", code, out)
	}
	d.waitFor("sip restarted by the operator and healthy", 15*time.Second, func() bool {
		p := d.proc("sip")
		return p.State == supervisor.StateRunning && p.PID != pid1 && p.PID != 0 && p.Health == "healthy"
	})
	time.Sleep(2 * time.Second)
	rw.end(t, "vigil restart")
	pr.check(t, "vigil restart")
	if n := unhealthyLines(d) - unhealthy; n != 0 {
		t.Errorf("the active logged the node unhealthy %d times during the restarts", n)
	}

	if a := cl.active(); a != act {
		t.Errorf("the active role moved from %s to %q", act, a)
	}
	if r1, _ := cl.report(act); r1.Epoch != r0.Epoch {
		t.Errorf("the epoch changed %d -> %d", r0.Epoch, r1.Epoch)
	}
	for id, n := range roles {
		if now := roleLines(c.nodes[id]); now != n {
			t.Errorf("%s: %d role transitions", id, now-n)
		}
	}
	if len(events(d, "restart_grace")) < 2 {
		t.Errorf("the active logged %d restart_grace events, want one per planned restart", len(events(d, "restart_grace")))
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// A reload that breaks the critical process on the active is not excused
// for long: the planned restart's grace ends with the first unplanned exit
// or the first unhealthy verdict of the new check, long before its
// deadline; the node turns unhealthy and the standby takes the active role
// and the VIP, never both hosts holding it.
func TestReloadBrokenCriticalProcessFailsOver(t *testing.T) {
	for _, tc := range brokenProcs {
		t.Run(tc.name, func(t *testing.T) {
			c, cl, act, stby := criticalVIPCluster(t)
			d := c.nodes[act]
			r0, _ := cl.report(act)
			pr := c.probe()

			began := time.Now()
			reloadProcs(t, d, tc.procs)
			c.nodes[stby].waitFor("the standby takes the VIP", 20*time.Second, func() bool { return c.holder() == stby })
			took := time.Since(began)
			cl.waitFor("the standby is active", func() bool { return cl.active() == stby })
			t.Logf("%s: %s active after %v", tc.name, stby, took.Round(time.Millisecond))
			if r1, _ := cl.report(stby); r1.Epoch <= r0.Epoch {
				t.Errorf("the new active's epoch %d is not above %d", r1.Epoch, r0.Epoch)
			}
			// The grace's deadline is stop_timeout 2s + 10s + rise 2 x
			// 200ms; a verdict within milliseconds (exit) or about half a
			// second (two failed checks) must end it long before.
			if took > 10*time.Second {
				t.Errorf("the failover took %v: the grace outlived the verdict", took)
			}
			ends := events(d, "restart_grace_end")
			if len(ends) != 1 || !strings.Contains(ends[0].raw, `"outcome":"`+tc.outcome+`"`) {
				t.Errorf("want one restart_grace_end with outcome %s, got %+v", tc.outcome, ends)
			}
			if dual := pr.end(); dual > 0 {
				t.Errorf("both hosts held the VIP for %v", dual)
			}
			for _, id := range []string{"a", "b", "w"} {
				c.nodes[id].stop(20 * time.Second)
			}
		})
	}
}
