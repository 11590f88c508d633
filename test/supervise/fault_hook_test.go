package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/supervisor"
)

// hooks.on_fault runs when the node enters a fault: it turns unhealthy (a
// critical application down, a VIP interface down) or it loses the active
// role without handing it over (its lease ran out). Each hook appends
// "EVENT|NODE|REASON" to a file.

func faultHooksYAML(out string) string {
	line := `'printf "%s|%s|%s\n" "$VIGIL_EVENT" "$VIGIL_NODE" "$VIGIL_REASON" >> ` + out + `'`
	return fmt.Sprintf(`hooks:
  timeout: 5s
  on_active: [[/bin/sh, -c, %[1]s]]
  on_standby: [[/bin/sh, -c, %[1]s]]
  on_fault: [[/bin/sh, -c, %[1]s]]
`, line)
}

// faultProc is a critical application behind a health check, so that it is
// "starting" (the node unhealthy) for a moment after every start.
const faultProc = `
  - name: sip
    command: [/bin/sleep, "3600"]
    critical: true
    stop_timeout: 2s
    health:
      exec: [/bin/true]
      interval: 200ms
      timeout: 150ms
      rise: 2
      fall: 2
`

func hookLines(path string) []string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func linesWith(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// A critical application that dies makes the node unhealthy: on_fault runs
// once, with the reason; not while the application was still starting at
// start-up, not again while it stays down, and again after it recovered and
// died once more.
func TestFaultHookOnCriticalAppDown(t *testing.T) {
	d := newDaemon(t, faultProc)
	out := filepath.Join(d.dir, "hooks.out")
	d.extra = faultHooksYAML(out)
	d.writeConfig(faultProc)
	d.start()
	d.waitFor("on_active ran", 20*time.Second, func() bool { return len(linesWith(hookLines(out), "active|")) == 1 })
	d.waitFor("sip healthy", 10*time.Second, func() bool { return d.proc("sip").Health == "healthy" })
	time.Sleep(500 * time.Millisecond) // any hook of the start-up is queued by now
	if f := linesWith(hookLines(out), "fault|"); len(f) != 0 {
		t.Fatalf("on_fault ran at start-up: %q", f)
	}

	for round := 1; round <= 2; round++ {
		pid := d.proc("sip").PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.waitFor("on_fault ran", 10*time.Second, func() bool { return len(linesWith(hookLines(out), "fault|")) == round })
		f := linesWith(hookLines(out), "fault|")[round-1]
		if !strings.HasPrefix(f, "fault|a|unhealthy: ") || !strings.Contains(f, "sip") {
			t.Errorf("round %d: fault hook saw %q", round, f)
		}
		d.waitFor("a new sip, healthy", 10*time.Second, func() bool {
			p := d.proc("sip")
			return p.State == supervisor.StateRunning && p.PID != pid && p.Health == "healthy"
		})
		time.Sleep(300 * time.Millisecond)
		if n := len(linesWith(hookLines(out), "fault|")); n != round {
			t.Fatalf("round %d: on_fault ran %d times in all", round, n)
		}
	}
	// The only node keeps the role while unhealthy (a degraded active beats
	// none): no standby, no second active.
	if l := hookLines(out); len(linesWith(l, "standby|")) != 0 || len(linesWith(l, "active|")) != 1 {
		t.Errorf("hooks ran %q", l)
	}
	log := d.log.String()
	if !strings.Contains(log, `"event":"hook","hook":"fault"`) {
		t.Error("no event=hook line for the fault hook")
	}
	d.stop(15 * time.Second)
}

// newFaultVIPCluster is newVIPCluster with the fault hooks on both nodes; it
// returns the hook output file of each node.
func newFaultVIPCluster(t *testing.T) (*vipCluster, map[string]string) {
	t.Helper()
	outs := map[string]string{}
	c := newVIPClusterWith(t, func(id string, d *daemon) (string, string) {
		if id == "w" {
			return "", ""
		}
		outs[id] = filepath.Join(d.dir, "hooks.out")
		return faultHooksYAML(outs[id]), ""
	})
	return c, outs
}

// An active whose lease runs out because the locators stopped answering
// (the incident: locators starved) lost the role without handing it over:
// on_standby, then on_fault with the reason. The standby, which never held
// the role and stayed healthy, runs no on_fault.
func TestFaultHookOnLostLease(t *testing.T) {
	c, outs := newFaultVIPCluster(t)
	act := c.waitVIPStandbyReady("")
	stby := map[string]string{"a": "b", "b": "a"}[act]
	c.nodes[act].waitFor("on_active ran", 10*time.Second, func() bool { return len(linesWith(hookLines(outs[act]), "active|")) >= 1 })

	// Only the active's own locator answers it now: one of three, no quorum.
	var stopped []int
	for _, id := range []string{stby, "w"} {
		pid := nmPid(t, c.nodes[id], "locator")
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped = append(stopped, pid)
	}
	resume := func() {
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		stopped = nil
	}
	defer resume()
	c.nodes[act].waitFor("on_fault on the old active", 10*time.Second, func() bool {
		return len(linesWith(hookLines(outs[act]), "fault|")) == 1
	})
	// Nobody can hold the role without a quorum of locators.
	if c.holds(act) || c.holds(stby) {
		t.Errorf("a host holds the VIP without a quorum (a=%v b=%v)", c.holds("a"), c.holds("b"))
	}
	resume()
	l := hookLines(outs[act])
	f := linesWith(l, "fault|")[0]
	if f != "fault|"+act+"|lost the active role: lease expired" {
		t.Errorf("fault hook saw %q", f)
	}
	// on_standby (the role change) was queued before on_fault.
	if len(l) < 3 || !strings.HasPrefix(l[len(l)-2], "standby|") || l[len(l)-1] != f {
		t.Errorf("hooks ran %q, want ... standby, fault", l)
	}
	// The cluster recovers by itself once the locators run again.
	c.nodes["w"].waitFor("a VIP holder again", 20*time.Second, func() bool { return c.holder() != "" })
	time.Sleep(300 * time.Millisecond)
	if f := linesWith(hookLines(outs[stby]), "fault|"); len(f) != 0 {
		t.Errorf("the healthy standby ran on_fault: %q", f)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// The active's VIP interface loses carrier: the node is unhealthy, on_fault
// runs with the interface as the reason, and the role moves to the other
// node (whose own hooks say active, not fault).
func TestFaultHookOnVIPInterfaceDown(t *testing.T) {
	c, outs := newFaultVIPCluster(t)
	act := c.waitVIPStandbyReady("")
	stby := map[string]string{"a": "b", "b": "a"}[act]
	before := len(linesWith(hookLines(outs[stby]), "active|"))

	if err := c.net.Hosts[act].SetPort(false); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.net.Hosts[act].SetPort(true) }()
	c.nodes[act].waitFor("on_fault on the active", 10*time.Second, func() bool {
		return len(linesWith(hookLines(outs[act]), "fault|")) == 1
	})
	if f := linesWith(hookLines(outs[act]), "fault|")[0]; f != "fault|"+act+"|unhealthy: interface "+netnstest.LinkName+" down" {
		t.Errorf("fault hook saw %q", f)
	}
	c.nodes[stby].waitFor("the other node took over", 10*time.Second, func() bool {
		return c.holds(stby) && len(linesWith(hookLines(outs[stby]), "active|")) > before
	})
	if err := c.net.Hosts[act].SetPort(true); err != nil {
		t.Fatal(err)
	}
	// Healthy again: it rejoins as standby; a second fault needs a new one.
	c.waitVIPStandbyReady(act)
	if f := linesWith(hookLines(outs[act]), "fault|"); len(f) != 1 {
		t.Errorf("on_fault ran %d times for one cable pull: %q", len(f), f)
	}
	if f := linesWith(hookLines(outs[stby]), "fault|"); len(f) != 0 {
		t.Errorf("the new active ran on_fault: %q", f)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// The active's node manager stalls (SIGSTOP, the incident) past its lease:
// the supervisor fences it (addresses removed, process killed) and the
// node manager it restarts runs on_fault for the role its predecessor lost,
// once. The standby, which took over, runs on_active and no on_fault.
func TestFaultHookOnFence(t *testing.T) {
	c, outs := newFaultVIPCluster(t)
	act := c.waitVIPStandbyReady("")
	stby := map[string]string{"a": "b", "b": "a"}[act]
	c.nodes[act].waitFor("on_active ran", 10*time.Second, func() bool { return len(linesWith(hookLines(outs[act]), "active|")) >= 1 })

	stalled := nmPid(t, c.nodes[act], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(stalled, syscall.SIGCONT) }()
	c.nodes[act].waitFor("on_fault after the fence", 15*time.Second, func() bool {
		return len(linesWith(hookLines(outs[act]), "fault|")) >= 1
	})
	if f := c.nodes[act].status().Supervisor.Fences; f < 1 {
		t.Errorf("stalled node manager not fenced (fences=%d)", f)
	}
	c.nodes[stby].waitFor("the standby took over", 10*time.Second, func() bool { return c.holds(stby) })
	time.Sleep(500 * time.Millisecond)
	f := linesWith(hookLines(outs[act]), "fault|")
	if len(f) != 1 || !strings.HasPrefix(f[0], "fault|"+act+"|fenced: node manager silent for ") {
		t.Errorf("on_fault on the fenced node: %q, want one fenced line", f)
	}
	if f := linesWith(hookLines(outs[stby]), "fault|"); len(f) != 0 {
		t.Errorf("the new active ran on_fault: %q", f)
	}
	if n := strings.Count(c.nodes[act].log.String(), `"event":"fenced_fault"`); n != 1 {
		t.Errorf("fenced_fault logged %d times, want 1", n)
	}

	// Back as a standby, its node manager stalls again: fenced again (a
	// fence must never be a one-off), and as it held nothing, no on_fault.
	c.waitVIPStandbyReady(act)
	_ = syscall.Kill(stalled, syscall.SIGCONT)
	stalled = nmPid(t, c.nodes[act], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.nodes[act].waitFor("a second fence", 15*time.Second, func() bool {
		return c.nodes[act].status().Supervisor.Fences >= 2
	})
	c.waitVIPStandbyReady(act)
	if f := linesWith(hookLines(outs[act]), "fault|"); len(f) != 1 {
		t.Errorf("on_fault after fencing a standby: %q, want only the first fence's line", f)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}
