package clock

import (
	"testing"
	"time"
)

func TestAfterFuncFiresOnBoottime(t *testing.T) {
	start := Boottime()
	fired := make(chan time.Duration, 1)
	AfterFunc(30*time.Millisecond, func() { fired <- Boottime() })
	select {
	case at := <-fired:
		if at-start < 30*time.Millisecond {
			t.Fatalf("fired after %v of CLOCK_BOOTTIME, want >= 30ms", at-start)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timer did not fire")
	}
}

func TestAfterFuncStop(t *testing.T) {
	fired := make(chan struct{}, 1)
	tm := AfterFunc(50*time.Millisecond, func() { fired <- struct{}{} })
	tm.Stop()
	tm.Stop() // twice is fine
	// A later timer fires: by then the stopped one would have too.
	later := make(chan struct{})
	AfterFunc(200*time.Millisecond, func() { close(later) })
	<-later
	select {
	case <-fired:
		t.Fatal("a stopped timer fired")
	default:
	}
}

func TestAfterFuncZero(t *testing.T) {
	done := make(chan struct{})
	AfterFunc(0, func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a zero timer did not fire")
	}
}
