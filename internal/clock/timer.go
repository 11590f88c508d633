package clock

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Timer calls a function once CLOCK_BOOTTIME has advanced by a duration: a
// deadline on the lease's clock. Go's timers count CLOCK_MONOTONIC, which
// stops while the host is suspended, so a lease deadline armed with them
// would fire late by however long the host slept.
type Timer struct {
	f    *os.File // the timerfd; nil when it fell back to a Go timer
	t    *time.Timer
	once sync.Once
}

// AfterFunc runs fn in its own goroutine when CLOCK_BOOTTIME has advanced by
// d (at once for d <= 0). Where the kernel has no CLOCK_BOOTTIME timerfd
// (before Linux 3.15) it falls back to a Go timer.
func AfterFunc(d time.Duration, fn func()) *Timer {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &Timer{t: time.AfterFunc(d, fn)}
	}
	// A zero it_value disarms a timerfd: the shortest real wait is 1 ns.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(d, 1).Nanoseconds())}
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		unix.Close(fd)
		return &Timer{t: time.AfterFunc(d, fn)}
	}
	t := &Timer{f: os.NewFile(uintptr(fd), "timerfd-boottime")}
	go func() {
		var b [8]byte
		// Read waits in the runtime's poller; Stop's Close ends it.
		_, err := t.f.Read(b[:])
		t.close()
		if err == nil {
			fn()
		}
	}()
	return t
}

// Stop prevents fn from running if it has not started yet.
func (t *Timer) Stop() {
	if t == nil {
		return
	}
	if t.t != nil {
		t.t.Stop()
		return
	}
	t.close()
}

func (t *Timer) close() { t.once.Do(func() { t.f.Close() }) }
