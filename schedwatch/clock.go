package schedwatch

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/clock"
)

// Clock is what the monitor measures with. Tests substitute a fake.
type Clock interface {
	// Now returns CLOCK_MONOTONIC and CLOCK_BOOTTIME. The difference of
	// their advances is time the host spent suspended (or the VM paused).
	Now() (mono, boot time.Duration)
	// SleepUntil blocks until CLOCK_MONOTONIC reaches mono (or has passed
	// it). It returns early only with ctx's error.
	SleepUntil(ctx context.Context, mono time.Duration) error
}

// SystemClock reads the kernel clocks and sleeps until an absolute
// CLOCK_MONOTONIC deadline on one timer for its life (clock.Real's: a
// timerfd waited for in the runtime's poller). Use it through a pointer;
// it is for one monitor's goroutine.
//
// It slept in clock_nanosleep before, on a locked thread: that system call
// held the goroutine's P for the whole period, the runtime's sysmon took
// the P back each period and so stayed in its 20 µs polling mode, and at
// SCHED_RR that cost a node manager 75-90 ms of CPU a second, half its
// group's realtime budget. Then on a Go timer, which woke sysmon at every
// deadline and 10 ms after (clock.fdTicks says why). A timer measures what
// the protocol loop's own timers see: the kernel waking a thread, plus
// Go's scheduling.
type SystemClock struct {
	t clock.Ticks
}

// clockNow reads a clock without entering the runtime's syscall path
// (clock.Read says why).
func clockNow(id int32) time.Duration { return clock.Read(id) }

// Now implements Clock.
func (*SystemClock) Now() (mono, boot time.Duration) {
	return clockNow(unix.CLOCK_MONOTONIC), clockNow(unix.CLOCK_BOOTTIME)
}

// SleepUntil implements Clock; it returns at once when ctx ends.
func (c *SystemClock) SleepUntil(ctx context.Context, mono time.Duration) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := mono - clockNow(unix.CLOCK_MONOTONIC)
		if d <= 0 {
			return nil
		}
		if c.t == nil {
			c.t = clock.Real{}.NewTimer(d)
		} else {
			c.t.Reset(d)
		}
		select {
		case <-c.t.C():
		case <-ctx.Done():
			c.t.Stop()
			c.t = nil
			return ctx.Err()
		}
	}
}
