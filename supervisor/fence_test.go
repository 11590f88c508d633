package supervisor

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/netfloat"
)

// loopSupervisor is a supervisor whose main loop runs (a goroutine running
// posted closures, as Run does) with no cgroups: blocking seams are the
// test's.
func loopSupervisor(t *testing.T) *Supervisor { return loopSupervisorOn(t, nil) }

// loopSupervisorOn is loopSupervisor on the given clock (nil: the real one).
func loopSupervisorOn(t *testing.T, clk clock.Clock) *Supervisor {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	s := New(&config.Config{}, Options{Logger: log, Clock: clk})
	s.cfg.Cluster.Timing.DriftMargin = 40 * time.Millisecond
	s.killGroup = func(*cgroup.Group) error { return nil }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case fn := <-s.events:
				fn()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return s
}

// inLoop runs fn in the loop and waits for it.
func inLoop(t *testing.T, s *Supervisor, fn func()) {
	t.Helper()
	if took := loopAnswers(t, s, fn); took < 0 {
		t.Fatal("the loop did not run a posted closure within 5 s")
	}
}

// loopAnswers posts fn (nil: a no-op, like a status request or the
// watchdog's probe) and says how long the loop took to run it; -1 if not
// within 5 s.
func loopAnswers(t *testing.T, s *Supervisor, fn func()) time.Duration {
	t.Helper()
	start := time.Now()
	ran := make(chan struct{})
	s.post(func() {
		if fn != nil {
			fn()
		}
		close(ran)
	})
	select {
	case <-ran:
		return time.Since(start)
	case <-time.After(5 * time.Second):
		return -1
	}
}

// alive says whether pid still runs: it exists and is not a zombie. A dead
// (or zombie) node manager cannot add an address back.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// orderFencer records whether the node manager was still alive when the
// fence removed the floating IPs.
type orderFencer struct {
	pid   int
	mu    sync.Mutex
	calls []bool // alive at each Reconcile
	done  chan struct{}
}

func (f *orderFencer) Reconcile(held []netfloat.VIP) ([]netfloat.VIP, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, alive(f.pid))
	if len(f.calls) == 1 {
		close(f.done)
	}
	return []netfloat.VIP{{Interface: "eth0"}}, nil
}

// stalledNodeManager starts a stand-in for a node manager stalled by
// SIGSTOP, and delivers its exit to the loop the way the reaper does
// (unless deliver is false: an exit the reaper never reports).
func stalledNodeManager(t *testing.T, s *Supervisor, deliver bool) *proc {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	nm := &proc{
		cfg:     config.Process{Name: ctlNodeManager, Restart: config.RestartNever},
		control: ctlNodeManager, state: StateRunning, pid: cmd.Process.Pid, gen: 1,
		log:      slog.New(slog.DiscardHandler),
		lastBeat: time.Now().Add(-300 * time.Millisecond),
		nms: []nmService{{
			report:   &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "active", Epoch: 7, LeaseValid: true, LeaseMS: 200}},
			lastBeat: time.Now().Add(-300 * time.Millisecond),
		}},
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
		if deliver {
			s.post(func() { s.onExit(nm, 1, Exit{Pid: cmd.Process.Pid, Signal: syscall.SIGKILL, At: time.Now()}) })
		}
	}()
	return nm
}

// fence fires nm's fence in the loop as its timer would.
func fence(t *testing.T, s *Supervisor, nm *proc) {
	t.Helper()
	inLoop(t, s, func() {
		// The service's deadline and the process's; the test fires it itself.
		deadline := s.clock.Now() + time.Hour
		nm.nms[0].fenceAt = deadline
		s.setFenceDeadline(nm, deadline)
		s.checkFence(nm, nm.gen, deadline, deadline)
	})
}

// The fence stops the node manager before it touches its addresses: they
// are removed only once it is dead. On the old code they were removed
// first, while the (stalled, then resuming) node manager still ran and could
// add them back under the lease it believed valid.
func TestFenceKillsNodeManagerBeforeRemovingAddresses(t *testing.T) {
	s := loopSupervisor(t)
	nm := stalledNodeManager(t, s, true)
	f := &orderFencer{pid: nm.pid, done: make(chan struct{})}
	s.floats = []fencer{f}
	s.ctrl = []*proc{nm}
	fence(t, s, nm)
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the fence never removed the floating IPs")
	}
	var faulted bool
	inLoop(t, s, func() { faulted = nm.nms[0].fault != nil })
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 1 {
		t.Fatalf("floating IPs removed %d times, want once", len(f.calls))
	}
	if f.calls[0] {
		t.Fatal("floating IPs removed while the fenced node manager was still alive")
	}
	if !faulted {
		t.Fatal("the fenced active left no fault for its successor")
	}
}

// A node manager whose death is not confirmed (stuck in the kernel: the
// reaper reports nothing) still loses its floating IPs, within
// fenceKillWait, and the loop keeps answering meanwhile.
func TestFenceWhenNodeManagerDoesNotDie(t *testing.T) {
	s := loopSupervisor(t)
	nm := stalledNodeManager(t, s, false)
	f := &orderFencer{pid: nm.pid, done: make(chan struct{})}
	s.floats = []fencer{f}
	s.ctrl = []*proc{nm}
	start := time.Now()
	fence(t, s, nm)
	if took := loopAnswers(t, s, nil); took < 0 || took > time.Second {
		t.Fatalf("the loop answered after %v during the fence", took)
	}
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("floating IPs not removed when the node manager's death was never confirmed")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("floating IPs removed only after %v", took)
	}
}

// An exit whose leftovers take long to kill (the cgroup kill polls up to
// 5 s) does not block the loop: the kill runs off it and the restart
// decision comes back as an event. On the old code the loop ran the kill.
func TestLoopAnswersWhileGroupKillIsSlow(t *testing.T) {
	s := loopSupervisor(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	s.killGroup = func(*cgroup.Group) error {
		close(entered)
		<-release
		return errors.New("pids [4242] still alive after SIGKILL")
	}
	p := &proc{cfg: config.Process{Name: "sip", Restart: config.RestartNever}, state: StateRunning, pid: 4242, gen: 1, log: slog.New(slog.DiscardHandler), startedAt: time.Now()}
	s.procs = []*proc{p}
	s.post(func() { s.onExit(p, 1, Exit{Pid: 4242, Code: 1, At: time.Now()}) })
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the leftovers were never killed")
	}
	for i := 0; i < 5; i++ {
		if took := loopAnswers(t, s, nil); took < 0 || took > time.Second {
			close(release)
			t.Fatalf("the loop answered after %v while a group kill was slow", took)
		}
	}
	var st State
	inLoop(t, s, func() { st = p.state })
	if st != StateBackoff {
		t.Fatalf("state %s while its leftovers are killed, want backoff", st)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for st != StateExited && time.Now().Before(deadline) {
		inLoop(t, s, func() { st = p.state })
	}
	if st != StateExited {
		t.Fatalf("state %s after the kill returned, want exited (restart: never)", st)
	}
}

// A user lookup that hangs (NSS: LDAP, sssd) does not block the loop: it
// runs off it and the start continues (or fails) as an event. On the old
// code the loop ran the lookup inside the spawn.
func TestLoopAnswersWhileUserLookupIsSlow(t *testing.T) {
	s := loopSupervisor(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	s.lookupCreds = func(p *config.Process) (*credentials, error) {
		close(entered)
		<-release
		return nil, errors.New("user \"sip\": nss timeout")
	}
	p := &proc{cfg: config.Process{Name: "sip", User: "sip", Restart: config.RestartNever}, state: StateStopped, log: slog.New(slog.DiscardHandler)}
	s.procs = []*proc{p}
	s.post(func() { s.start(p) })
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the user was never looked up")
	}
	for i := 0; i < 5; i++ {
		if took := loopAnswers(t, s, nil); took < 0 || took > time.Second {
			close(release)
			t.Fatalf("the loop answered after %v while a user lookup was slow", took)
		}
	}
	close(release)
	var st State
	var spawnErr string
	deadline := time.Now().Add(5 * time.Second)
	for st != StateExited && time.Now().Before(deadline) {
		inLoop(t, s, func() { st, spawnErr = p.state, p.spawnErr })
	}
	if st != StateExited || !strings.Contains(spawnErr, "nss timeout") {
		t.Fatalf("state %s, spawn error %q: want exited with the lookup's error", st, spawnErr)
	}
}
