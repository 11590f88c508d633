package clock

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fdTicks is a Ticks on a CLOCK_MONOTONIC timerfd (the clock Go's timers
// count), waited for in the runtime's poller.
//
// Why not Go's timers: the runtime's sysmon thread, when every P is idle,
// sleeps until the next Go timer is due, then 10 ms more, then again until
// the next timer. A control-plane process whose loop ticks 100 times a
// second on Go timers therefore woke sysmon twice per tick: about 180 of
// an idle node manager's wake-ups a second, at tens of µs each on a
// virtual machine. A timerfd is not a Go timer: sysmon sleeps on, and the
// tick wakes only the thread waiting in epoll.
type fdTicks struct {
	f      *os.File
	fd     int
	period time.Duration // 0: a one-shot timer
	c      chan time.Time

	// mu orders the reader's read-and-send with Reset's setting and drain
	// (timerfd_settime discards expirations not read yet), so that no
	// firing of an earlier setting is received after Reset returns.
	mu      sync.Mutex
	stopped bool

	empty atomic.Uint64 // reads that found no expiry, for the tests
}

// newFDTicks returns a timerfd Ticks firing after d, then every period if
// period > 0; nil if the kernel gives no timerfd.
func newFDTicks(d, period time.Duration) *fdTicks {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil
	}
	t := &fdTicks{f: os.NewFile(uintptr(fd), "timerfd-monotonic"), fd: fd, period: period, c: make(chan time.Time, 1)}
	rc, err := t.f.SyscallConn()
	if err != nil {
		t.f.Close()
		return nil
	}
	if t.set(d) != nil {
		t.f.Close()
		return nil
	}
	go t.run(rc)
	return t
}

func (t *fdTicks) C() <-chan time.Time { return t.c }

// set arms the timerfd: after d, then every period (setTimerfd).
func (t *fdTicks) set(d time.Duration) error {
	if e := setTimerfd(t.fd, d, t.period); e != 0 {
		return e
	}
	return nil
}

// run delivers the expiries until Stop. One RawConn.Read for its whole
// life: after an expiry it waits for the next without reading again to
// be told EAGAIN, which is sound only inside one Read (rawBatch.each in
// internal/transport says why). Read returns when Stop closed the
// timerfd, or on a read error a timerfd cannot give.
func (t *fdTicks) run(rc syscall.RawConn) {
	_ = rc.Read(func(fd uintptr) bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.stopped {
			return true
		}
		done, errno := readExpiry(fd)
		switch {
		case !done:
			t.empty.Add(1)
			return false
		case errno != 0:
			return true
		}
		// Like time.Ticker: at most one firing kept for a slow receiver.
		select {
		case t.c <- time.Now():
		default:
		}
		return false
	})
}

// Reset makes it fire d from now (a ticker: then every period... of d, as
// time.Ticker.Reset), and drops a firing not yet received.
func (t *fdTicks) Reset(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if t.period > 0 {
		t.period = d
	}
	if err := t.set(d); err != nil {
		// Only EBADF or EINVAL, which a valid fd and duration cannot
		// give: never leave a deadline unwatched.
		go func() {
			time.Sleep(d)
			select {
			case t.c <- time.Now():
			default:
			}
		}()
	}
	select {
	case <-t.c:
	default:
	}
}

// Stop disarms it for good and releases the timerfd.
func (t *fdTicks) Stop() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.stopped = true
	t.mu.Unlock()
	// Not under mu: Close waits for the reader to leave rc.Read, and the
	// reader takes mu inside it.
	t.f.Close()
}
