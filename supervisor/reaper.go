package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/internal/execshim"
	"github.com/vigil-project/vigil/internal/procsig"
)

// Exit is how a child ended, as wait4 reported it.
type Exit struct {
	Pid    int
	Code   int            // exit status, or -1 when killed by a signal
	Signal syscall.Signal // 0 unless killed by a signal
	At     time.Time      // when the reaper saw it
}

// Success reports a clean exit with status 0.
func (e Exit) Success() bool { return e.Signal == 0 && e.Code == 0 }

func (e Exit) String() string {
	if e.Signal != 0 {
		return "signal " + procsig.Name(e.Signal)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Reaper owns every wait() of the process. Go supervisors that let several
// goroutines wait (os/exec's Wait next to a wait4(-1) loop) lose exit codes to
// whichever wins the race, so nothing else in this process may call wait:
// children are started through Spawn and their exits delivered by pid.
// As PID 1 or a child subreaper it also reaps orphans nobody asked for.
type Reaper struct {
	log *slog.Logger

	mu      sync.Mutex
	waiters map[int]chan Exit
	orphans uint64
}

// NewReaper returns a reaper; call Run to start reaping.
func NewReaper(log *slog.Logger) *Reaper {
	return &Reaper{log: log, waiters: make(map[int]chan Exit)}
}

// Run reaps until ctx is done. It must be running before the first Spawn.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	// A periodic sweep covers a SIGCHLD coalesced while Notify was being set up.
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-sweep.C:
		}
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD (no children) or nothing exited yet
		}
		ex := Exit{Pid: pid, Code: ws.ExitStatus(), At: time.Now()}
		if ws.Signaled() {
			ex.Signal = ws.Signal()
			ex.Code = -1
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		if !ok {
			r.orphans++
		}
		r.mu.Unlock()
		if ok {
			ch <- ex // buffered, never blocks
		} else {
			r.log.Debug("reaped orphan", "event", "orphan_reaped", "pid", pid, "exit", ex.String())
		}
	}
}

// Orphans is how many processes the reaper reaped that it had not started.
func (r *Reaper) Orphans() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// Spawn forks and execs argv0 and returns a channel that receives its exit.
// The lock is held across fork so that the child's exit, however quick, finds
// its waiter registered.
func (r *Reaper) Spawn(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, nil, fmt.Errorf("supervisor: exec %s: %w", argv0, err)
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// RunCommand runs argv to completion in its own process group and returns
// its exit code; when ctx ends first the whole group is killed. Health
// checks of kind exec run through it (the supervisor's health.Runner), so
// that they, too, are reaped here. (Hooks run in the node manager, not
// here.)
func (r *Reaper) RunCommand(ctx context.Context, argv []string) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("supervisor: empty command")
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return -1, fmt.Errorf("supervisor: open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	path, err := execshim.LookPath(argv[0])
	if err != nil {
		return -1, err
	}
	fd := devnull.Fd()
	pid, done, err := r.Spawn(path, argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []uintptr{fd, fd, fd},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return -1, err
	}
	select {
	case ex := <-done:
		if ex.Signal != 0 {
			return -1, fmt.Errorf("%s: %s", argv[0], ex)
		}
		return ex.Code, nil
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		return -1, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	}
}

// runner adapts the reaper to health.Runner.
type runner struct{ r *Reaper }

func (r runner) Run(ctx context.Context, argv []string) (int, error) {
	return r.r.RunCommand(ctx, argv)
}
