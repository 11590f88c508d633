package clock

import "time"

// Clock is the time a driver (the node manager, the locator) runs on, as
// one value it is given rather than globals it reads: Real in production,
// a Fake in tests, which moves only when the test says so. Every timing
// decision of a driver goes through it.
type Clock interface {
	// Now is CLOCK_BOOTTIME: the lease's clock (see Boottime).
	Now() time.Duration
	// Mono is a cheap clock for timing a process's own work (how long a
	// pass of a loop took): CLOCK_MONOTONIC through the vDSO, about 30 ns
	// where Now is a system call (1.4 µs on a virtual machine, and the
	// node manager timed each step of every pass with it). It stops while
	// the host is suspended and has its own origin: never compare it with
	// Now, never decide a lease on it.
	Mono() time.Duration
	// Wall is the wall clock, for what must mean something after a
	// reboot (incarnations from the clock, "maintenance since").
	Wall() time.Time
	// NewTicker fires every d; like time.Ticker it keeps at most one
	// firing for a slow receiver and drops the rest, so a receiver that
	// was not scheduled finds one late tick, not a backlog.
	NewTicker(d time.Duration) Ticks
	// NewTimer fires once, after d.
	NewTimer(d time.Duration) Ticks
	// AfterFunc runs fn once Now has advanced by d (AfterFunc).
	AfterFunc(d time.Duration, fn func()) Stopper
	// NewAlarm is an unarmed Alarm running fn (NewAlarm): one timer set
	// again and again on Now's clock.
	NewAlarm(fn func()) Alarm
}

// Ticks is a ticker or a one-shot timer.
type Ticks interface {
	C() <-chan time.Time
	// Stop disarms it for good. Always call it: Real's hold a timerfd
	// and a goroutine until then, fired or not.
	Stop()
	// Reset makes it fire d from now (a ticker: then every d), as if just
	// made; a firing not yet received is dropped (Go's timers since 1.23).
	Reset(d time.Duration)
}

// Stopper cancels an AfterFunc that has not run yet.
type Stopper interface{ Stop() }

// Real is the host's clocks: CLOCK_BOOTTIME for Now and AfterFunc. The
// tickers and timers count CLOCK_MONOTONIC, as Go's do, which stops while
// the host is suspended: they pace loops, and the drivers measure what happened
// meanwhile with Now (a late tick), so a suspended host resumes with a
// late tick rather than a missed deadline.
type Real struct{}

var _ Clock = Real{}

// Now is Boottime.
func (Real) Now() time.Duration { return Boottime() }

// Mono is the runtime's monotonic clock since the process started.
func (Real) Mono() time.Duration { return time.Since(processStart) }

// processStart is Mono's origin, set once when the program starts.
var processStart = time.Now()

// Wall is time.Now.
func (Real) Wall() time.Time { return time.Now() }

// NewTicker ticks every d on a CLOCK_MONOTONIC timerfd (fdTicks says
// why not a Go timer); a time.Ticker where the kernel gives no timerfd.
func (Real) NewTicker(d time.Duration) Ticks {
	if t := newFDTicks(d, d); t != nil {
		return t
	}
	return realTicker{time.NewTicker(d)}
}

// NewTimer fires once after d, on a CLOCK_MONOTONIC timerfd; a
// time.Timer where the kernel gives no timerfd.
func (Real) NewTimer(d time.Duration) Ticks {
	if t := newFDTicks(d, 0); t != nil {
		return t
	}
	return realTimer{time.NewTimer(d)}
}

// AfterFunc is the package's AfterFunc (a CLOCK_BOOTTIME timerfd).
func (Real) AfterFunc(d time.Duration, fn func()) Stopper { return AfterFunc(d, fn) }

// NewAlarm is the package's NewAlarm (a CLOCK_BOOTTIME timerfd).
func (Real) NewAlarm(fn func()) Alarm { return NewAlarm(fn) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Stop()                 { r.t.Stop() }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
