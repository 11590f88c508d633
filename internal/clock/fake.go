package clock

import (
	"slices"
	"sync"
	"time"
)

// Fake is a Clock for tests that moves only by Advance: deterministic
// timing without sleeps. A ticker or timer whose time comes during an
// Advance fires (its channel, one slot, receives if empty, as Go's do);
// a ticker that is passed several periods at once fires once and resumes
// on its grid, as a real one does for a process that was not scheduled.
// AfterFunc functions run in Advance's goroutine, in time order, with Now
// at their firing time. Safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	now   time.Duration
	wall0 time.Time
	seq   uint64
	waits []*fakeWait
}

var _ Clock = (*Fake)(nil)

// NewFake starts a fake clock at now (CLOCK_BOOTTIME) and a fixed wall
// time.
func NewFake(now time.Duration) *Fake {
	return &Fake{now: now, wall0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

type fakeWait struct {
	f      *Fake
	at     time.Duration
	period time.Duration // a ticker's; 0: fires once
	seq    uint64        // creation order: ties fire in it
	c      chan time.Time
	fn     func()
}

// Now is the fake CLOCK_BOOTTIME.
func (f *Fake) Now() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Mono is Now: a fake clock has one time, so a test that advances it
// inside a pass sees a slow pass.
func (f *Fake) Mono() time.Duration { return f.Now() }

// Wall moves with Now.
func (f *Fake) Wall() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall0.Add(f.now)
}

// NewTicker fires every d from now.
func (f *Fake) NewTicker(d time.Duration) Ticks {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	return f.add(d, d, nil)
}

// NewTimer fires once, d from now.
func (f *Fake) NewTimer(d time.Duration) Ticks { return f.add(d, 0, nil) }

// AfterFunc runs fn in Advance once d has passed.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Stopper { return f.add(d, 0, fn) }

// NewAlarm is an unarmed alarm whose fn runs in Advance.
func (f *Fake) NewAlarm(fn func()) Alarm { return &fakeAlarm{f: f, fn: fn} }

type fakeAlarm struct {
	f       *Fake
	fn      func()
	mu      sync.Mutex
	w       *fakeWait
	stopped bool
}

func (a *fakeAlarm) Set(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	if a.w != nil {
		a.w.Stop()
	}
	a.w = a.f.add(d, 0, a.fn)
}

func (a *fakeAlarm) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	if a.w != nil {
		a.w.Stop()
	}
}

func (f *Fake) add(d, period time.Duration, fn func()) *fakeWait {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	w := &fakeWait{f: f, at: f.now + max(d, 0), period: period, seq: f.seq, fn: fn}
	if fn == nil {
		w.c = make(chan time.Time, 1)
	}
	f.waits = append(f.waits, w)
	return w
}

func (w *fakeWait) C() <-chan time.Time { return w.c }

// Stop: it never fires again. A firing already in its channel stays
// there, as with Go's tickers before 1.23; receivers must not depend on
// either.
func (w *fakeWait) Stop() {
	f := w.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = slices.DeleteFunc(f.waits, func(x *fakeWait) bool { return x == w })
}

// Reset makes w fire d from now (a ticker: then every d) and drops a
// firing not yet received, as Go's timers do since 1.23.
func (w *fakeWait) Reset(d time.Duration) {
	f := w.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.period > 0 {
		if d <= 0 {
			panic("clock: non-positive ticker period")
		}
		w.period = d
	}
	f.seq++
	w.at, w.seq = f.now+max(d, 0), f.seq
	if w.c != nil {
		select {
		case <-w.c:
		default:
		}
	}
	if !slices.Contains(f.waits, w) {
		f.waits = append(f.waits, w)
	}
}

// Advance moves the clock by d, firing everything due on the way in time
// order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	target := f.now + max(d, 0)
	f.mu.Unlock()
	f.AdvanceTo(target)
}

// AdvanceTo moves the clock to t (never back).
func (f *Fake) AdvanceTo(t time.Duration) {
	for {
		f.mu.Lock()
		w := f.nextLocked(t)
		if w == nil {
			f.now = max(f.now, t)
			f.mu.Unlock()
			return
		}
		f.now = max(f.now, w.at)
		fn := w.fn
		if w.c != nil {
			select {
			case w.c <- f.wall0.Add(f.now):
			default: // a firing is still unread: this one is dropped
			}
		}
		if w.period > 0 {
			// Skip the periods passed over, as a late ticker does.
			for w.at <= t {
				w.at += w.period
			}
		} else {
			f.waits = slices.DeleteFunc(f.waits, func(x *fakeWait) bool { return x == w })
		}
		f.mu.Unlock()
		if fn != nil {
			fn()
		}
	}
}

// nextLocked is the earliest wait due at or before t.
func (f *Fake) nextLocked(t time.Duration) *fakeWait {
	var next *fakeWait
	for _, w := range f.waits {
		if w.at > t {
			continue
		}
		if next == nil || w.at < next.at || (w.at == next.at && w.seq < next.seq) {
			next = w
		}
	}
	return next
}

// Pending is how many timers, tickers and functions wait to fire.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waits)
}
