// Package clock reads CLOCK_BOOTTIME, the clock Vigil's leases run on: it is
// monotonic and, unlike CLOCK_MONOTONIC, keeps counting while the host is
// suspended, so a host that was paused cannot believe an old lease.
package clock

import (
	"time"

	"golang.org/x/sys/unix"
)

// Boottime is the time since boot, including suspend.
func Boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// CLOCK_BOOTTIME exists since Linux 2.6.39; failing here is a
		// programming error, not an input.
		panic("clock: CLOCK_BOOTTIME: " + err.Error())
	}
	return time.Duration(ts.Nano())
}
