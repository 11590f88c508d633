package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// execChecker runs a command through the supervisor's Runner; exit 0 is healthy.
type execChecker struct {
	argv    []string
	timeout time.Duration
	run     Runner
}

func newExecChecker(argv []string, timeout time.Duration, run Runner) (*execChecker, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("%w: exec: empty command", ErrConfig)
	}
	if run == nil {
		return nil, fmt.Errorf("%w: exec %s: no Runner", ErrConfig, argv[0])
	}
	return &execChecker{argv: slices.Clone(argv), timeout: timeout, run: run}, nil
}

func (c *execChecker) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	code, err := c.run.Run(cctx, c.argv)
	if err == nil && code == 0 {
		return nil
	}
	// The context is looked at before the exit code: a command killed because
	// it overran reports a signal/-1 exit that would only confuse the reader.
	if cerr := cctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return timedOut(c.timeout)
		}
		return fmt.Errorf("exec %s: %w", c.argv[0], cerr)
	}
	if err != nil {
		return fmt.Errorf("exec %s: %w", c.argv[0], err)
	}
	return failf(ErrUnhealthy, "exit status %d", code)
}
