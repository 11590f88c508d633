package schedwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
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

// SystemClock reads the kernel clocks and sleeps with clock_nanosleep on
// an absolute CLOCK_MONOTONIC deadline, so that the measured lateness is
// the kernel's wakeup latency for this thread, not Go timer batching.
type SystemClock struct{}

func clockNow(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		// Both clocks exist on every Linux Vigil supports (>= 2.6.39).
		return 0
	}
	return time.Duration(ts.Nano())
}

// Now implements Clock.
func (SystemClock) Now() (mono, boot time.Duration) {
	return clockNow(unix.CLOCK_MONOTONIC), clockNow(unix.CLOCK_BOOTTIME)
}

// SleepUntil implements Clock. Cancellation is noticed before the sleep
// only: the monitor's period is short, so a late exit costs one period.
func (SystemClock) SleepUntil(ctx context.Context, mono time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ts := unix.NsecToTimespec(int64(mono))
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if err == nil {
			return nil
		}
		// Go's runtime preempts with signals (SIGURG): an absolute deadline
		// is simply slept for again.
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("schedwatch: clock_nanosleep: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
