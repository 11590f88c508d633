package clock

import (
	"testing"
	"time"
)

// One alarm, set again and again: each setting fires once, at or after
// its time on CLOCK_BOOTTIME; a later Set replaces an earlier one; Stop
// ends it and a Set after Stop does nothing.
func TestAlarmSetAgainAndAgain(t *testing.T) {
	fired := make(chan time.Duration, 8)
	a := NewAlarm(func() { fired <- Boottime() })
	defer a.Stop()
	wait := func(what string) time.Duration {
		select {
		case at := <-fired:
			return at
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the alarm did not fire", what)
			return 0
		}
	}
	for i := range 3 {
		start := Boottime()
		a.Set(20 * time.Millisecond)
		if at := wait("setting"); at-start < 20*time.Millisecond {
			t.Fatalf("setting %d fired after %v, want >= 20ms", i, at-start)
		}
	}
	// Replaced: an hour-long setting moved to 10 ms fires at 10 ms.
	a.Set(time.Hour)
	start := Boottime()
	a.Set(10 * time.Millisecond)
	if at := wait("replaced setting"); at-start < 10*time.Millisecond || at-start > 5*time.Second {
		t.Fatalf("replaced setting fired after %v", at-start)
	}
	// Zero fires at once (a zero timerfd value would disarm it).
	a.Set(0)
	wait("zero setting")

	a.Set(30 * time.Millisecond)
	a.Stop()
	a.Stop() // twice is fine
	a.Set(time.Millisecond)
	// A timer past both: by then the stopped alarm would have fired.
	later := make(chan struct{})
	AfterFunc(200*time.Millisecond, func() { close(later) })
	<-later
	select {
	case <-fired:
		t.Fatal("a stopped alarm fired")
	default:
	}
}

// The fake clock's alarm: fires in Advance at its setting, a new setting
// replaces the old, Stop ends it.
func TestFakeAlarm(t *testing.T) {
	f := NewFake(time.Second)
	var at []time.Duration
	a := f.NewAlarm(func() { at = append(at, f.Now()) })
	a.Set(50 * time.Millisecond)
	a.Set(80 * time.Millisecond) // replaces the 50 ms setting
	f.Advance(100 * time.Millisecond)
	if len(at) != 1 || at[0] != time.Second+80*time.Millisecond {
		t.Fatalf("fired at %v, want once at 1.08s", at)
	}
	a.Set(10 * time.Millisecond)
	a.Stop()
	f.Advance(time.Second)
	if len(at) != 1 {
		t.Fatalf("a stopped alarm fired: %v", at)
	}
}
