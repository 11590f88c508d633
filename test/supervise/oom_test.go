package supervise

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/supervisor"
)

// An application that runs out of memory is OOM-killed inside its own
// apps/<name> group and restarted; the control plane is untouched.
func TestAppOOMKilledInItsGroupAndRestarted(t *testing.T) {
	d := newDaemon(t, `
  - name: hog
    command: [/bin/sh, -c, "x=a; while :; do x=$x$x; done"]
    memory_max: 32Mi
    backoff: {initial: 200ms, max: 1s, stable: 10s, fatal_after: 100}
`)
	d.start()
	d.waitFor("node manager reporting", 20*time.Second, func() bool { return d.status().NodeManager != nil })
	before := map[string]supervisor.ProcessStatus{}
	for _, p := range d.status().ControlPlane {
		before[p.Name] = p
	}
	var hog supervisor.ProcessStatus
	d.waitFor("hog OOM-killed and restarted", 30*time.Second, func() bool {
		hog = d.proc("hog")
		return hog.Restarts >= 1 && hog.LastExit != nil
	})
	if hog.LastExit.Signal != "SIGKILL" {
		t.Errorf("hog ended with %+v, want SIGKILL by the OOM killer", hog.LastExit)
	}
	var oom uint64
	for _, g := range d.status().Groups {
		if g.Group == "apps/hog" {
			oom = g.OOMKills
		}
	}
	if oom == 0 {
		t.Error("apps/hog counted no OOM kill")
	}
	for _, p := range d.status().ControlPlane {
		b := before[p.Name]
		if p.PID != b.PID || p.Restarts != b.Restarts || p.State != supervisor.StateRunning {
			t.Errorf("control-plane process %s changed: %+v -> %+v", p.Name, b, p)
		}
		if p.SchedRunMS <= 0 {
			t.Errorf("no run-queue statistics for %s: %+v", p.Name, p)
		}
	}
	if st := d.status(); st.Supervisor.PID != d.cmd.Process.Pid {
		t.Errorf("supervisor pid changed")
	}
	d.stop(15 * time.Second)
}

// control.realtime: the locator and node manager run SCHED_RR, mlocked, in
// groups with a realtime budget; or, where the host refuses, say exactly why.
func TestRealtimeControlPlane(t *testing.T) {
	d := newDaemon(t, "")
	d.realtime = true
	d.writeConfig("")
	d.start()
	var rep *ctlmsg.NodeManagerReport
	d.waitFor("node manager reporting", 20*time.Second, func() bool {
		rep = d.status().NodeManager
		return rep != nil
	})
	t.Logf("node manager: %+v", rep.Realtime)
	switch {
	case rep.Realtime.Sched == "SCHED_RR prio 10":
		// In force: the group has its budget, and the threads really are RR.
		pid := nmPid(t, d, "nodemanager")
		th, err := realtime.ThreadsOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range th {
			if x.Policy != "SCHED_RR" {
				t.Errorf("thread %d of the node manager is %s", x.TID, x.Policy)
			}
		}
		if !rep.Realtime.Mlocked {
			t.Error("realtime node manager not mlocked")
		}
		checkRTBudgetWatched(t, d)
	case len(rep.Realtime.Degraded) > 0:
		t.Logf("realtime refused by this host, with reasons: %v", rep.Realtime.Degraded)
	default:
		t.Fatalf("realtime neither in force nor explained: %+v", rep.Realtime)
	}
	// Applications are never realtime, whatever the control plane is.
	d.writeConfig(`
  - name: app
    command: [/bin/sleep, "1000"]
`)
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	p := d.waitState("app", supervisor.StateRunning, 10*time.Second)
	th, err := realtime.ThreadsOf(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range th {
		if x.Policy != "SCHED_OTHER" {
			t.Errorf("application thread %d is %s", x.TID, x.Policy)
		}
	}
	d.stop(15 * time.Second)
}

// checkRTBudgetWatched: on a v1 kernel with realtime group budgets, status
// shows the node manager group's budget (control.rt_budget, 300ms) and,
// once a second has been measured, the most of it the node manager used
// on one CPU: some, for it ticks every token interval.
func checkRTBudgetWatched(t *testing.T, d *daemon) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"); err != nil {
		t.Logf("no per-group realtime budget on this host (%v): the watch is not checked", err)
		return
	}
	var g supervisor.GroupStatus
	d.waitFor("the node manager's realtime budget and a second of its use in status", 20*time.Second, func() bool {
		for _, x := range d.status().Groups {
			if x.Group == "control/nodemanager" {
				g = x
			}
		}
		return g.RTBudgetUsec > 0 && g.RTPeakShare != nil
	})
	if g.RTBudgetUsec != 300000 || g.RTPeakUsedUsec <= 0 || *g.RTPeakShare <= 0 || *g.RTPeakShare > 2 {
		t.Errorf("control/nodemanager: budget %d µs, peak %v (%d µs used on one CPU); want 300000 and a use above 0", g.RTBudgetUsec, *g.RTPeakShare, g.RTPeakUsedUsec)
	}
	t.Logf("control/nodemanager used at most %.1f%% of its %d µs on one CPU in a second", *g.RTPeakShare*100, g.RTBudgetUsec)
}
