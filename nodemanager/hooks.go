package nodemanager

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/execshim"
)

// hookOutputCap is how much of one hook run's output is logged; the rest is
// read and dropped, so that a chatty hook costs the node manager neither
// memory nor log volume.
const hookOutputCap = 64 << 10

// hookLineMax is the longest piece of output logged as one line; a longer
// line is logged in pieces.
const hookLineMax = 4 << 10

// hookDefaultPath is the PATH hooks get when the node manager has none.
const hookDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hookRunner runs transition hooks one after the other, in transition
// order, each under a timeout, on its own goroutine: a slow or failing hook
// is logged and never holds up the protocol.
//
// A hook runs outside the control plane's privileges: through the `vigil
// _exec` shim (SCHED_OTHER, nice 0, oom_score_adj 0), in the hooks cgroup
// the supervisor made (which the shim joins before exec), in its own
// process group that is killed whole at the timeout and once the hook
// exits, with a clean environment, its output streamed line by line into
// the log and capped. After each hook, whatever is still in the hooks
// group is killed: hooks run one at a time, so anything there is a
// leftover, also one that left the process group (setsid).
type hookRunner struct {
	queue    chan hookJob
	log      *slog.Logger
	clk      clock.Clock // the timeouts, and how long a hook took
	failures atomic.Uint64
	shim     string // the vigil binary whose `_exec` starts each hook
	path     string // PATH in the hooks' environment
	// cgroup are the hooks group's directories (execshim.HooksCgroupEnv);
	// nil: hooks run in the node manager's own group.
	cgroup []string
	// beforeGroupKill, when set (tests), is called with a hook's process
	// group just before the kill of what the hook left in it.
	beforeGroupKill func(pgid int)
}

// hookSweepTimeout bounds the kill of what a hook left in its group; a
// process that outlives SIGKILL this long is stuck in the kernel.
const hookSweepTimeout = 5 * time.Second

// errHookTimeout ends a hook that ran past hooks.timeout.
var errHookTimeout = errors.New("hook timed out")

// hookJob carries its own timeout: a reload may change hooks.timeout while
// earlier transitions' hooks still wait, and each runs as configured when
// its transition happened.
type hookJob struct {
	event   string // active | standby | fault
	argv    []string
	env     []string
	timeout time.Duration
}

func newHookRunner(log *slog.Logger, clk clock.Clock) *hookRunner {
	path := os.Getenv("PATH")
	if path == "" {
		path = hookDefaultPath
	}
	// The running binary itself, even if a package upgrade replaced the
	// file: its `_exec` is the one this node manager was built with.
	return &hookRunner{queue: make(chan hookJob, 64), log: log, clk: clk, shim: "/proc/self/exe", path: path}
}

// enqueue never blocks: if 64 transitions are waiting, hooks are already
// hopelessly behind and one more is dropped, loudly.
func (h *hookRunner) enqueue(event string, cmds [][]string, env []string, timeout time.Duration) {
	for _, argv := range cmds {
		select {
		case h.queue <- hookJob{event: event, argv: argv, env: env, timeout: timeout}:
		default:
			h.failures.Add(1)
			h.log.Error("hook queue full; hook dropped", "event", "hook_dropped", "hook", event, "command", strings.Join(argv, " "))
		}
	}
}

func (h *hookRunner) run(ctx context.Context) {
	// A node manager that was killed (a fence) while a hook ran left it
	// running in the group.
	h.sweep("previous node manager's hooks")
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-h.queue:
			if ctx.Err() != nil {
				// Stopping: the hook would be cut at once and logged as
				// failed.
				return
			}
			h.runOne(ctx, j)
		}
	}
}

func (h *hookRunner) runOne(ctx context.Context, j hookJob) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	limit := h.clk.AfterFunc(j.timeout, func() { cancel(errHookTimeout) })
	defer limit.Stop()
	began := h.clk.Now()
	err := h.exec(ctx, j)
	took := h.clk.Now() - began
	if err != nil {
		h.failures.Add(1)
		why := err.Error()
		if errors.Is(context.Cause(ctx), errHookTimeout) {
			why = fmt.Sprintf("timed out after %v", j.timeout)
		}
		h.log.Warn("hook failed", "event", "hook", "hook", j.event, "command", strings.Join(j.argv, " "), "took_ms", took.Milliseconds(), "err", why)
		return
	}
	h.log.Info("hook ran", "event", "hook", "hook", j.event, "command", strings.Join(j.argv, " "), "took_ms", took.Milliseconds())
}

// exec runs one hook to its end or ctx's, and kills its process group
// either way.
func (h *hookRunner) exec(ctx context.Context, j hookJob) error {
	spec, err := execshim.HookSpec(j.argv)
	if err != nil {
		return err
	}
	spec.Cgroup = h.cgroup
	specEnv, err := spec.EnvEntry()
	if err != nil {
		return err
	}
	env := make([]string, 0, len(j.env)+2)
	env = append(env, "PATH="+h.path)
	env = append(env, j.env...)
	env = append(env, specEnv)
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("hook output pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path: h.shim, Args: []string{"vigil", execshim.ShimCommand},
		Env: env, Dir: "/", Stdout: w, Stderr: w,
		// Its own group: every process the hook starts can be killed
		// with it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("start hook: %w", err)
	}
	pgid := cmd.Process.Pid
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		h.pump(r, j)
	}()
	// The hook's exit is waited for without reaping it: while it is a
	// zombie its pid, which is its group's id, cannot be handed to another
	// process, so the group kill below reaches only what the hook left.
	// Reaped first, an empty group's id could be a new process's by then
	// (pid_max is 32768 on many hosts), and that process's group killed.
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var info unix.Siginfo
		for {
			if err := unix.Waitid(unix.P_PID, pgid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
				return // exited, or not waitable (cmd.Wait says why)
			}
		}
	}()
	select {
	case <-exited:
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	if h.beforeGroupKill != nil {
		h.beforeGroupKill(pgid)
	}
	// What the hook left running in its group (`cmd &`) goes with it.
	if kerr := syscall.Kill(-pgid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
		h.log.Warn("cannot kill hook's process group", "event", "hook", "hook", j.event, "pgid", pgid, "err", kerr)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 127 {
		// The shim's own failures (the hooks cgroup refused it, the
		// command missing) are its one output line.
		err = fmt.Errorf("%w: not started, or the command was not found (see the hook's output)", err)
	}
	// A process that left the process group (setsid) is still in the
	// hooks cgroup.
	h.sweep(j.event)
	// A process that escaped both (only possible without a hooks group)
	// may still hold the pipe: stop reading after a moment rather than
	// wait for it.
	linger := h.clk.NewTimer(time.Second)
	defer linger.Stop()
	select {
	case <-logged:
	case <-linger.C():
		r.Close()
		<-logged
	}
	r.Close()
	return err
}

// sweep kills every process left in the hooks group and says which.
// hook names whose they were, for the log.
func (h *hookRunner) sweep(hook string) {
	if len(h.cgroup) == 0 {
		return
	}
	killed, err := cgroup.KillDirs(h.cgroup, hookSweepTimeout)
	if len(killed) > 0 {
		h.log.Warn("killed processes left in the hooks cgroup", "event", "hook_leftovers_killed", "hook", hook, "pids", killed)
	}
	if err != nil {
		h.log.Error("cannot empty the hooks cgroup", "event", "hook_leftovers_error", "hook", hook, "err", err)
	}
}

// pump logs the hook's output line by line as it comes, up to
// hookOutputCap bytes, then one "output truncated" line; the rest is read
// and dropped so that the hook never blocks on a full pipe.
func (h *hookRunner) pump(r io.Reader, j hookJob) {
	br := bufio.NewReaderSize(r, hookLineMax)
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if total+len(line) > hookOutputCap {
				h.log.Warn("hook output truncated", "event", "hook_output", "hook", j.event, "command", strings.Join(j.argv, " "), "cap_bytes", hookOutputCap)
				_, _ = io.Copy(io.Discard, br)
				return
			}
			total += len(line)
			h.log.Info("hook output", "event", "hook_output", "hook", j.event, "line", strings.TrimRight(string(line), "\n"))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
