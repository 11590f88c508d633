package clock

import (
	"testing"
	"time"
)

func fired(c <-chan time.Time) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestFakeTimerFiresWhenPassed(t *testing.T) {
	f := NewFake(time.Second)
	tm := f.NewTimer(100 * time.Millisecond)
	f.Advance(99 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("fired early")
	}
	f.Advance(time.Millisecond)
	if !fired(tm.C()) {
		t.Fatal("did not fire at its time")
	}
	f.Advance(time.Second)
	if fired(tm.C()) || f.Pending() != 0 {
		t.Fatal("a one-shot timer fired twice")
	}
	if f.Now() != 2100*time.Millisecond || !f.Wall().Equal(NewFake(0).Wall().Add(f.Now())) {
		t.Fatalf("now %v wall %v", f.Now(), f.Wall())
	}
}

// A ticker jumped over several periods fires once (a late tick), then
// resumes on its grid.
func TestFakeTickerLateTickFiresOnce(t *testing.T) {
	f := NewFake(0)
	tk := f.NewTicker(10 * time.Millisecond)
	f.Advance(55 * time.Millisecond)
	if !fired(tk.C()) || fired(tk.C()) {
		t.Fatal("want exactly one tick after a jump")
	}
	f.Advance(4 * time.Millisecond) // 59: next is at 60
	if fired(tk.C()) {
		t.Fatal("fired off its grid")
	}
	f.Advance(time.Millisecond)
	if !fired(tk.C()) {
		t.Fatal("no tick at 60")
	}
	tk.Stop()
	f.Advance(time.Second)
	if fired(tk.C()) {
		t.Fatal("a stopped ticker fired")
	}
}

func TestFakeAfterFuncOrderAndNow(t *testing.T) {
	f := NewFake(0)
	var got []time.Duration
	f.AfterFunc(30*time.Millisecond, func() { got = append(got, f.Now()) })
	f.AfterFunc(10*time.Millisecond, func() { got = append(got, f.Now()) })
	s := f.AfterFunc(20*time.Millisecond, func() { t.Error("a stopped function ran") })
	s.Stop()
	f.Advance(time.Second)
	if len(got) != 2 || got[0] != 10*time.Millisecond || got[1] != 30*time.Millisecond {
		t.Fatalf("ran at %v, want [10ms 30ms]", got)
	}
	if f.Now() != time.Second {
		t.Fatalf("now %v", f.Now())
	}
}

// Real reads CLOCK_BOOTTIME.
func TestRealNowIsBoottime(t *testing.T) {
	a := Boottime()
	n := Real{}.Now()
	b := Boottime()
	if n < a || n > b {
		t.Fatalf("Real.Now %v not between %v and %v", n, a, b)
	}
}

// Reset re-arms a timer, fired or not, from now, and drops a firing not
// yet received; the real timer behaves the same.
func TestTimerReset(t *testing.T) {
	f := NewFake(0)
	tm := f.NewTimer(10 * time.Millisecond)
	f.Advance(10 * time.Millisecond) // fired, not received
	tm.Reset(5 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("a firing from before Reset was kept")
	}
	f.Advance(4 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("fired early after Reset")
	}
	f.Advance(time.Millisecond)
	if !fired(tm.C()) {
		t.Fatal("did not fire at its reset time")
	}
	// Moved earlier while pending.
	tm.Reset(50 * time.Millisecond)
	tm.Reset(2 * time.Millisecond)
	f.Advance(2 * time.Millisecond)
	if !fired(tm.C()) || f.Pending() != 0 {
		t.Fatalf("re-armed earlier: did not fire once (pending %d)", f.Pending())
	}

	r := Real{}.NewTimer(time.Hour)
	defer r.Stop()
	start := time.Now()
	r.Reset(time.Millisecond)
	select {
	case <-r.C():
	case <-time.After(10 * time.Second):
		t.Fatal("real timer did not fire after Reset")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("real timer fired at its old time")
	}
}

// Mono is a monotonic clock that moves with real time; on a fake clock it
// is Now, so a test advancing the clock inside a pass sees a slow pass.
func TestMono(t *testing.T) {
	var r Real
	a := r.Mono()
	start := time.Now()
	for time.Since(start) < 2*time.Millisecond {
	}
	if b := r.Mono(); b-a < 2*time.Millisecond || b < a {
		t.Fatalf("Real.Mono went from %v to %v over 2 ms", a, b)
	}
	f := NewFake(time.Hour)
	f.Advance(time.Second)
	if f.Mono() != f.Now() {
		t.Fatalf("Fake.Mono %v, Now %v", f.Mono(), f.Now())
	}
}
