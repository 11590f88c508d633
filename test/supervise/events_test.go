package supervise

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every role change, token regeneration, fence, hook run and process exit
// is logged exactly once, with its reason (issue 7): a planned switchover
// and then a stall of the new active (fenced), on a VIP cluster with
// hooks, each node's log checked against what independently happened (the
// hooks' own output file, the supervisor's counters, the epochs).
func TestEventsLoggedOnce(t *testing.T) {
	c, outs := newFaultVIPCluster(t)
	first := c.waitVIPStandbyReady("")
	second := map[string]string{"a": "b", "b": "a"}[first]

	d := c.nodes[first]
	if out, code := d.vigil("switchover", "--socket", d.socket); code != 0 {
		t.Fatalf("switchover: %d %s", code, out)
	}
	if got := c.waitVIPStandbyReady(first); got != second {
		t.Fatalf("after the switchover %s holds the VIP", got)
	}
	// The switchover's on_active must have run and been logged before the
	// stop: stopped in between, the hook writes its line and the node
	// manager, fenced, never logs it.
	c.nodes[second].waitFor("on_active ran and logged", 10*time.Second, func() bool {
		ran := hookLines(outs[second])
		return len(linesWith(ran, "active|")) >= 1 && len(events(c.nodes[second], "hook")) == len(ran)
	})
	stalled := nmPid(t, c.nodes[second], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(stalled, syscall.SIGCONT) }()
	c.nodes[second].waitFor("the stalled node manager fenced", 15*time.Second, func() bool {
		return c.nodes[second].status().Supervisor.Fences >= 1
	})
	c.waitVIPStandbyReady(second)
	// Let hooks finish and reports settle.
	time.Sleep(time.Second)
	status := map[string]int{}
	for _, id := range []string{"a", "b"} {
		st := c.nodes[id].status()
		status[id+".fences"] = int(st.Supervisor.Fences)
		for _, p := range st.ControlPlane {
			status[id+"."+p.Name+".restarts"] = p.Restarts
		}
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}

	for _, id := range []string{"a", "b"} {
		evs := func(event string) []logEvent { return events(c.nodes[id], event) }
		// Role changes: one line per (role, epoch, reason), each with a
		// reason when it is a step down. A claim abandoned (another node
		// answered alive) leaves its epoch unused, so the next claim, for
		// another reason, may take the same one.
		seen := map[string]int{}
		for _, e := range evs("role") {
			seen[fmt.Sprint(e.Role, e.Epoch, " ", e.Reason)]++
			if e.Role == "standby" && e.Reason == "" {
				t.Errorf("%s: role change without a reason: %s", id, e.raw)
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("%s: role change %s logged %d times", id, k, n)
			}
		}
		// Each takeover: exactly one event=failover, with from, reason and
		// took_ms, for exactly the epochs it became active in.
		actives := map[string]bool{}
		for _, e := range evs("role") {
			if e.Role == "active" {
				actives[fmt.Sprint(e.Epoch)] = true
			}
		}
		fo := map[string]int{}
		for _, e := range evs("failover") {
			fo[fmt.Sprint(e.Epoch)]++
			if e.From == "" || e.Reason == "" || !strings.Contains(e.raw, `"took_ms":`) || e.To != id {
				t.Errorf("%s: failover line without from/to/reason/took_ms: %s", id, e.raw)
			}
		}
		for ep := range actives {
			if fo[ep] != 1 {
				t.Errorf("%s: epoch %s: %d failover lines, want 1", id, ep, fo[ep])
			}
		}
		if len(fo) != len(actives) {
			t.Errorf("%s: failover lines for epochs %v, active in %v", id, fo, actives)
		}
		// Token regenerations: once per epoch.
		regen := map[string]int{}
		for _, e := range evs("token_regenerated") {
			regen[fmt.Sprint(e.Epoch)]++
		}
		for ep, n := range regen {
			if n != 1 {
				t.Errorf("%s: token regenerated in epoch %s logged %d times", id, ep, n)
			}
		}
		// Fences: as many lines as the supervisor counted.
		if n := len(evs("fence")); n != status[id+".fences"] {
			t.Errorf("%s: %d fence lines, supervisor counted %d", id, n, status[id+".fences"])
		}
		// Hook runs: one line per run, as many as the hooks wrote.
		if n, want := len(evs("hook")), len(hookLines(outs[id])); n != want {
			t.Errorf("%s: %d event=hook lines, the hooks ran %d times", id, n, want)
		}
		// Process exits: one line each, with the status, as many as the
		// restarts (every exit was followed by a restart) plus the stop.
		for _, name := range []string{"nodemanager", "locator"} {
			var exits []logEvent
			for _, e := range evs("exit") {
				if e.Process == name {
					exits = append(exits, e)
					if e.Status == "" {
						t.Errorf("%s: exit of %s without a status: %v", id, name, e)
					}
				}
			}
			if len(exits) != status[id+"."+name+".restarts"] {
				t.Errorf("%s: %d exit lines for %s, %d restarts", id, len(exits), name, status[id+"."+name+".restarts"])
			}
		}
	}
	for _, id := range []string{"a", "b"} {
		t.Logf("%s: %d role changes, %d failovers, %d token regenerations, %d fences, %d hook runs, %d exits",
			id, len(events(c.nodes[id], "role")), len(events(c.nodes[id], "failover")), len(events(c.nodes[id], "token_regenerated")),
			len(events(c.nodes[id], "fence")), len(events(c.nodes[id], "hook")), len(events(c.nodes[id], "exit")))
	}
	// The fenced node's restarted node manager ran on_fault once.
	if f := linesWith(hookLines(outs[second]), "fault|"); len(f) != 1 || !strings.Contains(f[0], "fenced") {
		t.Errorf("on_fault on the fenced node: %q", f)
	}
}
