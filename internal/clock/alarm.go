package clock

import (
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alarm is a timer on CLOCK_BOOTTIME that is set again and again: one
// timerfd and one goroutine for its whole life, where an AfterFunc per
// deadline costs a timerfd, a goroutine and five system calls each. The
// supervisor's fence moves its deadline tens of times a second at a
// short lease.
//
// Set arms it to run fn once, d from now, replacing any earlier setting.
// A firing of an earlier setting may still arrive after a Set (it was
// already on its way): fn must check whether its deadline has come.
// Stop disarms it for good and releases it; fn never starts after Stop
// returns, except a firing already on its way.
type Alarm interface {
	Set(d time.Duration)
	Stop()
}

// NewAlarm returns an unarmed Alarm that runs fn in its own goroutine.
// Where the kernel has no CLOCK_BOOTTIME timerfd (before Linux 3.15) it is
// a Go timer.
func NewAlarm(fn func()) Alarm {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		t := time.AfterFunc(time.Hour, fn)
		t.Stop()
		return goAlarm{t}
	}
	a := &fdAlarm{fd: fd, f: os.NewFile(uintptr(fd), "timerfd-boottime"), fn: fn}
	go a.run()
	return a
}

type fdAlarm struct {
	fd int // the file's descriptor, used while !stopped (mu)
	f  *os.File
	fn func()

	mu      sync.Mutex
	stopped bool
}

func (a *fdAlarm) run() {
	rc, err := a.f.SyscallConn()
	if err != nil {
		return // not pollable: cannot happen for a timerfd
	}
	for {
		// Wait in the runtime's poller (Stop's Close ends it); the fence
		// alarm fires tens of times a second at a short lease.
		var errno syscall.Errno
		err := rc.Read(func(fd uintptr) bool {
			var done bool
			done, errno = readExpiry(fd)
			return done
		})
		if err != nil || errno != 0 {
			return
		}
		a.mu.Lock()
		stopped := a.stopped
		a.mu.Unlock()
		if !stopped {
			a.fn()
		}
	}
}

func (a *fdAlarm) Set(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	if e := setTimerfd(a.fd, d, 0); e != 0 {
		// Only EBADF or EINVAL, which a valid fd and spec cannot give:
		// never leave a deadline unwatched.
		go func() {
			time.Sleep(d)
			a.mu.Lock()
			stopped := a.stopped
			a.mu.Unlock()
			if !stopped {
				a.fn()
			}
		}()
	}
}

func (a *fdAlarm) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	a.stopped = true
	a.f.Close()
}

type goAlarm struct{ t *time.Timer }

func (g goAlarm) Set(d time.Duration) { g.t.Reset(d) }
func (g goAlarm) Stop()               { g.t.Stop() }

// readExpiry reads a timerfd's expiry count once the poller says it is
// readable; done false: not expired (set again since), wait again. A raw
// call, which cannot block here: one made through the scheduler wakes the
// runtime's sysmon thread, which then polls for a while.
func readExpiry(fd uintptr) (done bool, errno syscall.Errno) {
	var b [8]byte
	for {
		_, _, errno = syscall.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false, 0
		}
		return true, errno
	}
}

// setTimerfd arms timerfd fd to expire after d, then every period if
// period > 0. A zero it_value disarms a timerfd: the shortest real wait
// is 1 ns. timerfd_settime never blocks: a raw call, which does not wake
// the runtime's sysmon (readExpiry).
func setTimerfd(fd int, d, period time.Duration) syscall.Errno {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(d, 1).Nanoseconds())}
	if period > 0 {
		spec.Interval = unix.NsecToTimespec(period.Nanoseconds())
	}
	_, _, e := syscall.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(fd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
	return e
}
