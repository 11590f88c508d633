package nodemanager

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// hookRunner runs transition hooks one after the other, in transition
// order, each under a timeout, on its own goroutine: a slow or failing hook
// is logged and never holds up the protocol.
type hookRunner struct {
	queue    chan hookJob
	log      *slog.Logger
	failures atomic.Uint64
}

// hookJob carries its own timeout: a reload may change hooks.timeout while
// earlier transitions' hooks still wait, and each runs as configured when
// its transition happened.
type hookJob struct {
	event   string // active | standby | fault
	argv    []string
	env     []string
	timeout time.Duration
}

func newHookRunner(log *slog.Logger) *hookRunner {
	return &hookRunner{queue: make(chan hookJob, 64), log: log}
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
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, j.argv[0], j.argv[1:]...)
	cmd.Env = append(os.Environ(), j.env...)
	cmd.WaitDelay = time.Second
	began := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(began)
	if len(out) > 512 {
		out = out[:512]
	}
	if err != nil {
		h.failures.Add(1)
		why := err.Error()
		if ctx.Err() == context.DeadlineExceeded {
			why = fmt.Sprintf("timed out after %v", j.timeout)
		}
		h.log.Warn("hook failed", "event", "hook", "hook", j.event, "command", strings.Join(j.argv, " "), "took_ms", took.Milliseconds(), "err", why, "output", strings.TrimSpace(string(out)))
		return
	}
	h.log.Info("hook ran", "event", "hook", "hook", j.event, "command", strings.Join(j.argv, " "), "took_ms", took.Milliseconds())
}
