package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// A long-running process is placed in its own cgroup in every hierarchy,
// inside the cgroup the test runs in, and kill -9 brings a new one at once.
func TestPlacementAndRestartAfterKill9(t *testing.T) {
	d := newDaemon(t, `
  - name: sleeper
    command: [/bin/sleep, "1000"]
`)
	d.start()
	p := d.waitState("sleeper", supervisor.StateRunning, 10*time.Second)
	d.waitExec(p.PID, "sleep", 10*time.Second)
	own := cgroupOf(t, os.Getpid())
	got := cgroupOf(t, p.PID)
	checked := 0
	for _, ctrl := range []string{"memory", "cpu", "pids", "freezer", "cpuset", "unified"} {
		base, ok := own[ctrl]
		if !ok || (ctrl == "unified" && !isV2()) {
			continue
		}
		want := filepath.Join(base, d.subtree, "apps", "sleeper")
		if got[ctrl] != want {
			t.Errorf("%s: pid %d in %q, want %q", ctrl, p.PID, got[ctrl], want)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no controller checked")
	}
	if !strings.HasSuffix(p.Cgroup, "apps/sleeper") {
		t.Errorf("status cgroup %q", p.Cgroup)
	}
	// The supervisor sits in its own leaf of the control group.
	sup := cgroupOf(t, d.cmd.Process.Pid)
	if want := filepath.Join(own["memory"], d.subtree, "control", "supervisor"); sup["memory"] != want {
		t.Errorf("supervisor in %q, want %q", sup["memory"], want)
	}

	old := p.PID
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.waitFor("a new sleeper", 5*time.Second, func() bool {
		p = d.proc("sleeper")
		return p.State == supervisor.StateRunning && p.PID != old && p.PID != 0
	})
	d.waitExec(p.PID, "sleep", 10*time.Second)
	if p.Restarts != 1 || p.LastExit == nil || p.LastExit.Signal != "SIGKILL" {
		t.Errorf("after kill -9: restarts=%d last_exit=%+v", p.Restarts, p.LastExit)
	}
	if p.RestartUsec <= 0 {
		t.Errorf("restart latency not measured: %d", p.RestartUsec)
	}
	if now := cgroupOf(t, p.PID); now["memory"] != got["memory"] {
		t.Errorf("restarted process %d not in its cgroup: memory %q, want %q (status: %+v)", p.PID, now["memory"], got["memory"], p)
	}
	d.stop(15 * time.Second)
}

func isV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

var backoffRe = regexp.MustCompile(`"process":"failer","event":"backoff".*?"delay":"([^"]+)"`)

// A process that always fails is restarted at once, then with growing
// delays, then left FATAL; `vigil restart` gives it a fresh start.
func TestFailingProcessBacksOffThenFatal(t *testing.T) {
	d := newDaemon(t, `
  - name: failer
    command: [/bin/sh, -c, "exit 3"]
    backoff: {initial: 50ms, max: 400ms, stable: 5s, fatal_after: 6}
`)
	d.start()
	p := d.waitState("failer", supervisor.StateFatal, 20*time.Second)
	if p.Restarts != 6 {
		t.Errorf("restarts before FATAL = %d, want 6", p.Restarts)
	}
	if p.LastExit == nil || p.LastExit.Code != 3 {
		t.Errorf("last exit %+v, want code 3", p.LastExit)
	}
	var delays []time.Duration
	for _, m := range backoffRe.FindAllStringSubmatch(d.log.String(), -1) {
		dur, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		delays = append(delays, dur)
	}
	// Failure 1 restarts at once; failures 2..6 wait 50, 100, 200, 400, 400 ms (±20 %).
	if len(delays) != 5 {
		t.Fatalf("backoff delays %v, want 5", delays)
	}
	for i := 1; i < 4; i++ {
		if delays[i] <= delays[i-1] {
			t.Errorf("backoff did not grow: %v", delays)
		}
	}
	if delays[4] > 400*time.Millisecond {
		t.Errorf("backoff above cap: %v", delays)
	}
	if !strings.Contains(d.log.String(), `"event":"fatal"`) {
		t.Error("FATAL not logged")
	}
	time.Sleep(600 * time.Millisecond)
	if p2 := d.proc("failer"); p2.State != supervisor.StateFatal || p2.Restarts != p.Restarts {
		t.Errorf("FATAL process was retried: %+v", p2)
	}
	out, code := d.vigil("restart", "--socket", d.socket, "failer")
	if code != 0 {
		t.Fatalf("vigil restart: %d %s", code, out)
	}
	d.waitFor("restart after vigil restart", 10*time.Second, func() bool { return d.proc("failer").Restarts > p.Restarts })
	out, code = d.vigil("restart", "--socket", d.socket, "nosuch")
	if code != 1 || !strings.Contains(out, `no process named "nosuch"`) {
		t.Errorf("restart of unknown process: %d %q", code, out)
	}
	d.stop(15 * time.Second)
}

// A daemon that double-forks is still tracked through its cgroup, and
// stopping the supervisor kills the grandchild too.
func TestDoubleForkIsTrackedAndStopped(t *testing.T) {
	d := newDaemon(t, "")
	pidfile := filepath.Join(d.dir, "daemon.pid")
	d.writeConfig(fmt.Sprintf(`
  - name: forker
    command: [/bin/sh, -c, "(setsid /bin/sleep 1000 & echo $! > %s) ; exit 0"]
`, pidfile))
	d.start()
	gc := readPidFile(t, pidfile)
	d.waitFor("daemonized state", 10*time.Second, func() bool {
		p := d.proc("forker")
		return p.State == supervisor.StateRunning && p.Daemonized
	})
	if !alive(gc) {
		t.Fatalf("grandchild %d not running", gc)
	}
	if !strings.HasSuffix(cgroupOf(t, gc)["memory"], d.subtree+"/apps/forker") {
		t.Errorf("grandchild not in the app's cgroup: %v", cgroupOf(t, gc))
	}
	// Still running a while later: nobody restarted it behind our back.
	time.Sleep(600 * time.Millisecond)
	if p := d.proc("forker"); p.Restarts != 0 || !alive(gc) {
		t.Fatalf("daemon restarted or died: %+v", p)
	}
	d.stop(15 * time.Second)
	if alive(gc) {
		t.Errorf("grandchild %d survived the supervisor's stop", gc)
	}
	if left := treeDirs(d.subtree); len(left) != 0 {
		t.Errorf("cgroup tree left behind: %v", left)
	}
}

// SIGTERM stops everything in reverse order, SIGKILLs what ignores its stop
// signal after stop_timeout, and removes the tree.
func TestSIGTERMStopsAllAndRemovesTree(t *testing.T) {
	d := newDaemon(t, "")
	pidfile := filepath.Join(d.dir, "stubborn.pid")
	d.writeConfig(fmt.Sprintf(`
  - name: first
    command: [/bin/sleep, "1000"]
  - name: stubborn
    command: [/bin/sh, -c, "trap '' TERM; echo $$ > %s; while :; do sleep 0.1; done"]
    stop_timeout: 1s
`, pidfile))
	d.start()
	d.waitState("first", supervisor.StateRunning, 10*time.Second)
	stubborn := readPidFile(t, pidfile)
	first := d.proc("first").PID
	began := time.Now()
	d.stop(20 * time.Second)
	took := time.Since(began)
	if alive(stubborn) || alive(first) {
		t.Errorf("processes left: stubborn=%v first=%v", alive(stubborn), alive(first))
	}
	if took < 900*time.Millisecond {
		t.Errorf("stop took %v: the TERM-ignoring process was not given its stop_timeout", took)
	}
	log := d.log.String()
	if !strings.Contains(log, `"event":"stop_timeout"`) {
		t.Error("kill after stop_timeout not logged")
	}
	// Reverse start order: stubborn (started last) stops first.
	iStub := strings.Index(log, `"process":"stubborn","event":"stopped"`)
	iFirst := strings.Index(log, `"process":"first","event":"stopped"`)
	if iStub < 0 || iFirst < 0 || iStub > iFirst {
		t.Errorf("stop order wrong (stubborn at %d, first at %d)", iStub, iFirst)
	}
	if left := treeDirs(d.subtree); len(left) != 0 {
		t.Errorf("cgroup tree left behind: %v", left)
	}
	if _, err := os.Stat(d.socket); err == nil {
		t.Error("control socket left behind")
	}
}

// SIGHUP applies a new process list in place; an invalid file changes nothing.
func TestSIGHUPReload(t *testing.T) {
	d := newDaemon(t, `
  - name: keep
    command: [/bin/sleep, "1000"]
  - name: drop
    command: [/bin/sleep, "1001"]
  - name: change
    command: [/bin/sleep, "1002"]
`)
	d.start()
	keep := d.waitState("keep", supervisor.StateRunning, 10*time.Second).PID
	drop := d.waitState("drop", supervisor.StateRunning, 10*time.Second).PID
	change := d.waitState("change", supervisor.StateRunning, 10*time.Second).PID

	d.writeConfig(`
  - name: keep
    command: [/bin/sleep, "1000"]
  - name: change
    command: [/bin/sleep, "1003"]
  - name: added
    command: [/bin/sleep, "1004"]
`)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitFor("reload applied", 15*time.Second, func() bool {
		st := d.status()
		names := []string{}
		for _, p := range st.Processes {
			if p.State == supervisor.StateRunning {
				names = append(names, p.Name)
			}
		}
		return strings.Join(names, ",") == "keep,change,added" && d.proc("change").PID != change
	})
	if p := d.proc("keep"); p.PID != keep || p.Restarts != 0 {
		t.Errorf("unchanged process was restarted: pid %d -> %d", keep, p.PID)
	}
	// The removed process is stopped in the background; it must go.
	d.waitFor("removed process gone", 15*time.Second, func() bool { return !alive(drop) })
	if alive(change) {
		t.Errorf("old instance of changed process %d still running", change)
	}

	// A broken file is refused, with the error logged, and nothing changes.
	before := d.status()
	if err := os.WriteFile(d.cfgPath, []byte("cluster: [this is not a mapping\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitFor("reload refused", 10*time.Second, func() bool {
		return strings.Contains(d.log.String(), `"event":"reload_refused"`)
	})
	after := d.status()
	if after.Supervisor.Reloads != before.Supervisor.Reloads || len(after.Processes) != len(before.Processes) {
		t.Errorf("invalid reload changed state: reloads %d -> %d", before.Supervisor.Reloads, after.Supervisor.Reloads)
	}
	for i, p := range after.Processes {
		if p.PID != before.Processes[i].PID {
			t.Errorf("%s: pid changed on refused reload", p.Name)
		}
	}
	d.stop(15 * time.Second)
}

// status --json has the documented stable keys; against a stopped daemon
// status says so and exits 1.
func TestStatusCLI(t *testing.T) {
	d := newDaemon(t, `
  - name: web
    command: [/bin/sleep, "1000"]
    critical: true
    health:
      tcp: 127.0.0.1:1
      interval: 100ms
      timeout: 50ms
      fall: 1
`)
	d.start()
	d.waitFor("web unhealthy", 10*time.Second, func() bool { return d.proc("web").Health == "unhealthy" })
	// An unhealthy node of a one-node cluster: no active node, exit 4
	// (docs/operations.md); the JSON is on stdout, the reason on stderr.
	cmd := exec.Command(vigilBin, "status", "--json", "--socket", d.socket)
	outb, err := cmd.Output()
	out, code := string(outb), cmd.ProcessState.ExitCode()
	if code != 4 {
		t.Fatalf("status --json: exit %d (%v), want 4: %s", code, err, out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	procs, _ := m["processes"].([]any)
	if len(procs) != 1 {
		t.Fatalf("processes: %v", m["processes"])
	}
	p := procs[0].(map[string]any)
	for _, k := range []string{"name", "state", "pid", "restarts", "health", "cgroup", "critical"} {
		if _, ok := p[k]; !ok {
			t.Errorf("processes[0] lacks key %q", k)
		}
	}
	if p["health"] != "unhealthy" || m["healthy"] != false {
		t.Errorf("critical process failing its check: health=%v node healthy=%v", p["health"], m["healthy"])
	}
	out, code = d.vigil("status", "--socket", d.socket)
	if code != 4 || !strings.Contains(out, "web*") || !strings.Contains(out, "UNHEALTHY") {
		t.Errorf("human status: %d\n%s", code, out)
	}
	d.stop(15 * time.Second)
	out, code = d.vigil("status", "--socket", d.socket)
	if code != 1 || !strings.Contains(out, "not running") {
		t.Errorf("status of stopped daemon: %d %q", code, out)
	}
}

// `vigil supervise -c vigil.yaml`, a path relative to where it was
// started: the locator and node manager, which run in /, are given the
// absolute path, so they start once and the one-node cluster's node takes
// the active role. Given the relative path they failed to open it and
// restarted forever.
func TestRelativeConfigPath(t *testing.T) {
	d := newDaemon(t, "")
	d.relConfig = true
	d.start()
	defer d.stop(10 * time.Second)
	d.waitFor("the node manager active", 20*time.Second, func() bool {
		st := d.status()
		return st.NodeManager != nil && st.NodeManager.Role == "active"
	})
	st := d.status()
	for _, p := range st.ControlPlane {
		if p.Restarts != 0 {
			t.Errorf("%s restarted %d times\n%s", p.Name, p.Restarts, d.log.String())
		}
	}
	if len(st.ControlPlane) < 2 {
		t.Errorf("control plane %+v, want the locator and the node manager", st.ControlPlane)
	}
	if want := filepath.Join(d.dir, "vigil.yaml"); st.Supervisor.Config != want {
		t.Errorf("status config %q, want %q", st.Supervisor.Config, want)
	}
}
