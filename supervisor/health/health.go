// Package health runs the periodic health checks of supervised processes: a
// Checker performs one check of one kind (exec, tcp, http, sip_options) and a
// Monitor turns a stream of check results into a healthy/unhealthy verdict
// with rise/fall hysteresis and a start-up grace period.
package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigil-project/vigil/config"
)

// Sentinel errors that callers may test with errors.Is. The errors a Checker
// returns keep their messages short ("exit status 1", "HTTP 503",
// "SIP 503 Service Unavailable", "timed out after 300ms") because they end up
// in `vigil status` and in logs.
var (
	// ErrConfig means a config.Health cannot be turned into a Checker.
	ErrConfig = errors.New("health: invalid check")
	// ErrTimeout means a check got no answer within its timeout.
	ErrTimeout = errors.New("timed out")
	// ErrRefused means the target actively refused (TCP RST, ICMP port unreachable).
	ErrRefused = errors.New("connection refused")
	// ErrUnhealthy means the target answered, and the answer was a failure
	// (non-zero exit, HTTP 4xx/5xx, SIP 5xx/6xx/408).
	ErrUnhealthy = errors.New("unhealthy answer")
)

// Runner runs a command to completion and returns its exit code. The
// supervisor implements it with its own reaper, because it owns every wait();
// tests may use os/exec. Run must kill the command when ctx is done and must
// not return before the command has been reaped.
type Runner interface {
	Run(ctx context.Context, argv []string) (exitCode int, err error)
}

// Checker performs one health check. Check returns nil when the target is
// healthy; otherwise the error says why, briefly. Check bounds itself by the
// configured timeout even when ctx has no deadline.
type Checker interface {
	Check(ctx context.Context) error
}

// NewChecker builds the Checker that h describes. run is needed only for the
// exec kind. Errors wrap ErrConfig.
func NewChecker(h *config.Health, run Runner) (Checker, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil health config", ErrConfig)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = config.DefaultHealth().Timeout
	}
	switch h.Kind {
	case config.HealthExec:
		return newExecChecker(h.Exec, timeout, run)
	case config.HealthTCP:
		return newTCPChecker(h.TCP, timeout)
	case config.HealthHTTP:
		return newHTTPChecker(h.HTTP, timeout)
	case config.HealthSIPOptions:
		return newSIPChecker(h.SIP, timeout)
	default:
		return nil, fmt.Errorf("%w: unknown kind %q", ErrConfig, h.Kind)
	}
}

// checkError is an error whose message is exactly msg (brief, for status
// output) but which still matches a sentinel with errors.Is.
type checkError struct {
	msg  string
	kind error
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.kind }

func failf(kind error, format string, args ...any) error {
	return &checkError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// timedOut is the error every kind returns when its timeout expired.
func timedOut(d time.Duration) error {
	return failf(ErrTimeout, "timed out after %v", d)
}
