package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/execshim"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// signalLines counts the daemon's event=signal_ignored / signal_dump lines
// by "component signal" ("" component: the supervisor).
func signalLines(d *daemon) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(d.log.String(), "\n") {
		if !strings.Contains(line, `"event":"signal_`) {
			continue
		}
		var e struct{ Component, Signal string }
		if json.Unmarshal([]byte(line), &e) == nil {
			out[e.Component+" "+e.Signal]++
		}
	}
	return out
}

// `kill -HUP $(pidof vigil)` was the README's reload; it reached the
// locator and node manager too, which died of it, and the active dropped
// its role. Every signal an operator may send to "vigil" processes (issue
// 11), sent by PID to the supervisor and to each control-plane process of a
// running active node, must leave the role, the epoch and every process
// where they were.
func TestStraySignalsKeepRole(t *testing.T) {
	d := newDaemon(t, `
  - name: app
    command: [/bin/sleep, "3600"]
    critical: true
`)
	d.start()
	cl := &cluster{t: t, nodes: map[string]*daemon{"a": d}}
	d.waitFor("a active", 20*time.Second, func() bool {
		r, ok := cl.report("a")
		return ok && r.Role == "active" && r.LeaseValid
	})
	before := d.status()
	r0, _ := cl.report("a")
	roles := roleLines(d)
	app := d.proc("app")
	pids := map[string]int{"": before.Supervisor.PID}
	for _, p := range before.ControlPlane {
		pids[p.Name] = p.PID
	}
	if pids["locator"] == 0 || pids["nodemanager"] == 0 {
		t.Fatalf("control plane not running: %+v", before.ControlPlane)
	}

	// Logged ones first, each to every process; SIGPIPE is dropped
	// without a line (a broken log stream raises one per write).
	logged := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGQUIT}
	sent := time.Now()
	for _, sig := range append([]syscall.Signal{syscall.SIGPIPE}, logged...) {
		for name, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatalf("kill -%s %s (%d): %v", unix.SignalName(sig), name, pid, err)
			}
		}
	}
	// Either every process says it dropped every signal, or one is gone
	// (what the old code did): the checks below say which.
	lost := func() bool {
		if !d.running() {
			return true
		}
		for _, pid := range pids {
			if procState(pid) == "T" {
				return true // stopped by SIGTSTP/TTIN/TTOU
			}
		}
		resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
		if err != nil {
			return false
		}
		for _, p := range resp.Status.ControlPlane {
			if p.PID != pids[p.Name] || p.Restarts != 0 {
				return true
			}
		}
		return false
	}
	d.waitFor("every signal logged by every process", 20*time.Second, func() bool {
		if lost() {
			return true
		}
		got := signalLines(d)
		for name := range pids {
			for _, sig := range logged {
				if name == "" && sig == syscall.SIGHUP {
					continue // the supervisor's SIGHUP is a reload
				}
				if got[name+" "+unix.SignalName(sig)] == 0 {
					return false
				}
			}
		}
		return len(events(d, "reload")) == 1
	})
	// A node manager report sent after all of that, with a few token
	// rounds between.
	d.waitFor("a fresh node manager report", 10*time.Second, func() bool {
		if lost() {
			return true
		}
		for _, p := range d.status().ControlPlane {
			if p.Name == "nodemanager" && p.LastReport != nil && p.LastReport.After(sent.Add(time.Second)) {
				return true
			}
		}
		return false
	})

	if !d.running() {
		t.Fatalf("the supervisor died: %v", d.exitErr)
	}
	for name, pid := range pids {
		if procState(pid) == "T" {
			t.Fatalf("%q (%d; \"\" is the supervisor) was stopped by a signal", name, pid)
		}
	}
	after := d.status()
	for _, p := range after.ControlPlane {
		if p.PID != pids[p.Name] || p.Restarts != 0 || p.State != supervisor.StateRunning {
			t.Errorf("%s: pid %d -> %d, %d restarts, %s", p.Name, pids[p.Name], p.PID, p.Restarts, p.State)
		}
	}
	if after.Supervisor.PID != pids[""] || !d.running() {
		t.Errorf("the supervisor did not survive")
	}
	if p := d.proc("app"); p.PID != app.PID || p.Restarts != 0 {
		t.Errorf("app: pid %d -> %d, %d restarts", app.PID, p.PID, p.Restarts)
	}
	r1, _ := cl.report("a")
	if r1.Role != "active" || r1.Epoch != r0.Epoch || !r1.LeaseValid {
		t.Errorf("role/epoch moved: %s/%d -> %s/%d", r0.Role, r0.Epoch, r1.Role, r1.Epoch)
	}
	if n := roleLines(d) - roles; n != 0 {
		t.Errorf("%d role transitions", n)
	}
	d.stop(20 * time.Second)
}

// procState is the state letter of /proc/PID/stat.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// sigMask reads one of SigCgt/SigIgn of /proc/PID/status.
func sigMask(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func sigBit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// startShim runs `vigil _exec` as the supervisor does, waiting at its
// placement barrier (fd 3) until the returned pipe end is written. It
// returns once the shim waits there.
func startShim(t *testing.T, stop syscall.Signal, argv ...string) (*exec.Cmd, *os.File, <-chan error) {
	t.Helper()
	spec, _ := json.Marshal(execshim.Spec{Path: argv[0], Argv: argv, Barrier: true, StopSignal: int(stop)})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(vigilBin, execshim.ShimCommand)
	cmd.Env = append(os.Environ(), "VIGIL_EXEC_SPEC="+string(spec))
	cmd.ExtraFiles = []*os.File{r}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		w.Close()
		_ = cmd.Process.Kill()
		<-exited
	})
	// The Go runtime catches every signal from its start (SigCgt says
	// nothing); the shim's own handling is in place once it blocks in
	// read(3) at the barrier, which it reaches only after.
	deadline := time.Now().Add(10 * time.Second)
	for !inBarrierRead(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the shim never reached its barrier")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd, w, done
}

// inBarrierRead says whether a thread of pid is blocked in read(3, ...).
func inBarrierRead(pid int) bool {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	want := fmt.Sprintf("%d 0x3 ", unix.SYS_READ)
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
		if strings.HasPrefix(string(b), want) {
			return true
		}
	}
	return false
}

// The `vigil _exec` shim is a vigil process too until it execs the
// application: a stray signal must not cost the application its start, the
// application must start with default dispositions (caught, not ignored),
// and the process's own stop signal still ends the shim.
func TestShimStraySignals(t *testing.T) {
	cmd, w, done := startShim(t, syscall.SIGTERM, "/bin/sleep", "3600")
	pid := cmd.Process.Pid
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGTSTP} {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	// Release the barrier only once the shim has taken the signals: one
	// still pending at exec would reach the application with its default
	// disposition (a window of microseconds before exec that the shim
	// cannot close; this test is about signals while it waits).
	noneLeft := time.Now().Add(10 * time.Second)
	for pendingSignals(t, pid) {
		if time.Now().After(noneLeft) {
			t.Fatal("the shim never took the stray signals")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatalf("release the barrier: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the shim died before exec: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the shim never exec'd the application")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, field := range []string{"SigIgn", "SigCgt"} {
		if m := sigMask(t, pid, field); m&(sigBit(syscall.SIGHUP)|sigBit(syscall.SIGUSR1)|sigBit(syscall.SIGQUIT)) != 0 {
			t.Errorf("the application inherited %s %x", field, m)
		}
	}
	if s := procState(pid); s == "T" {
		t.Errorf("the application is stopped")
	}

	// A process whose stop signal is SIGHUP: the shim dies of it.
	cmd2, _, done2 := startShim(t, syscall.SIGHUP, "/bin/sleep", "3600")
	if err := syscall.Kill(cmd2.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done2:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
			t.Errorf("the shim ended with %v, want killed by SIGHUP", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the shim survived its process's stop signal")
	}
}

// pendingSignals says whether any signal is pending for pid, process-wide
// (ShdPnd) or on one of its threads (SigPnd).
func pendingSignals(t *testing.T, pid int) bool {
	t.Helper()
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	files := []string{fmt.Sprintf("/proc/%d/status", pid)}
	for _, task := range tasks {
		files = append(files, fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if (strings.HasPrefix(l, "SigPnd:") || strings.HasPrefix(l, "ShdPnd:")) && strings.Trim(strings.Fields(l)[1], "0") != "" {
				return true
			}
		}
	}
	return false
}
