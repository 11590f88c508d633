package supervisor

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
)

// A restart after backoff starts the process exactly when the backoff
// delay has passed on the supervisor's clock: not a millisecond before,
// and the status says when (next_start).
func TestRestartBackoffOnTheClock(t *testing.T) {
	clk := clock.NewFake(time.Hour)
	s := loopSupervisorOn(t, clk)
	s.rnd = nil // no jitter: the delay is the schedule's
	started := make(chan time.Duration, 4)
	// The start begins with the user's lookup (off the loop); failing it
	// ends the attempt there, which is all this test needs to see.
	s.lookupCreds = func(*config.Process) (*credentials, error) {
		started <- clk.Now()
		return nil, errors.New("no such user")
	}
	// Long enough that a real timer could not fire during the test.
	b := config.Backoff{Initial: 20 * time.Second, Max: time.Minute, Stable: time.Minute}
	p := &proc{cfg: config.Process{Name: "sip", User: "sip", Restart: config.RestartAlways, Backoff: b},
		state: StateBackoff, gen: 1, failures: 2, log: slog.New(slog.DiscardHandler)}
	s.procs = []*proc{p}
	want := restartDelay(b, 3, nil) // the third failure in a row: 40 s
	if want != 40*time.Second {
		t.Fatalf("schedule: %v", want)
	}
	t0 := clk.Now()
	var next time.Time
	inLoop(t, s, func() {
		s.restartAfter(p, Exit{Code: 1, At: time.Now()})
		next = p.nextStart
	})
	if got := next.Sub(clk.Wall()); got != want {
		t.Errorf("next start in %v, want %v", got, want)
	}
	clk.Advance(want - time.Millisecond)
	inLoop(t, s, nil)
	select {
	case at := <-started:
		t.Fatalf("restarted %v after the exit, before the %v backoff", at-t0, want)
	default:
	}
	clk.Advance(time.Millisecond)
	inLoop(t, s, nil)
	select {
	case at := <-started:
		if at-t0 != want {
			t.Fatalf("restarted %v after the exit, want %v", at-t0, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not restarted when the backoff ended")
	}
}
