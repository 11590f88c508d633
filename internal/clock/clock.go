// Package clock reads CLOCK_BOOTTIME, the clock Vigil's leases run on: it is
// monotonic and, unlike CLOCK_MONOTONIC, keeps counting while the host is
// suspended, so a host that was paused cannot believe an old lease.
package clock

import (
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Boottime is the time since boot, including suspend.
func Boottime() time.Duration { return Read(unix.CLOCK_BOOTTIME) }

// Read is clock_gettime(id) as a raw system call. The control plane reads
// the clock several times per input; through unix.ClockGettime every read
// enters the runtime's syscall path, which wakes the runtime's sysmon
// thread whenever it sleeps, and sysmon then polls every 20 µs for a
// while: at a few hundred inputs a second that was a third of an idle
// node manager's CPU (docs/operations.md, "Resources"). clock_gettime never
// blocks, so the raw call, which neither releases the P nor wakes sysmon,
// is safe.
func Read(id int32) time.Duration {
	var ts unix.Timespec
	_, _, errno := unix.RawSyscall(unix.SYS_CLOCK_GETTIME, uintptr(id), uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		// CLOCK_BOOTTIME exists since Linux 2.6.39, CLOCK_MONOTONIC always;
		// failing here is a programming error, not an input.
		panic("clock: clock_gettime(" + strconv.Itoa(int(id)) + "): " + errno.Error())
	}
	return time.Duration(ts.Nano())
}
