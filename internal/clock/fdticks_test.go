package clock

import (
	"os"
	"strings"
	"testing"
	"time"
)

// Real's timers are timerfds here (this kernel has them): the point of
// them is that they are not Go timers.
func TestRealTimersAreTimerfds(t *testing.T) {
	for _, tk := range []Ticks{Real{}.NewTimer(time.Hour), Real{}.NewTicker(time.Hour)} {
		if _, ok := tk.(*fdTicks); !ok {
			t.Fatalf("%T, want a timerfd", tk)
		}
		tk.Stop()
	}
}

func TestFDTimerFiresOnce(t *testing.T) {
	start := time.Now()
	tm := newFDTicks(20*time.Millisecond, 0)
	defer tm.Stop()
	select {
	case <-tm.C():
		if el := time.Since(start); el < 20*time.Millisecond {
			t.Fatalf("fired after %v, want >= 20ms", el)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timer did not fire")
	}
	// A one-shot: nothing more (a later one-shot fires first).
	other := newFDTicks(100*time.Millisecond, 0)
	defer other.Stop()
	<-other.C()
	select {
	case <-tm.C():
		t.Fatal("a one-shot timer fired twice")
	default:
	}
}

func TestFDTickerTicksAndKeepsOne(t *testing.T) {
	tk := newFDTicks(5*time.Millisecond, 5*time.Millisecond)
	defer tk.Stop()
	for i := range 5 {
		select {
		case <-tk.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("tick %d did not come", i)
		}
	}
	// Not read for 20 periods: one firing waits, not a backlog.
	time.Sleep(100 * time.Millisecond)
	<-tk.C()
	select {
	case <-tk.C():
		// The next period may have passed since: allowed, but no more.
		select {
		case <-tk.C():
			t.Fatal("a slow receiver found a backlog of ticks")
		default:
		}
	default:
	}
}

// Reset drops a firing not yet received and arms afresh: the NM's tick
// re-armed at its next deadline must not see a firing of the old one.
func TestFDResetDropsPendingFiring(t *testing.T) {
	tm := newFDTicks(time.Millisecond, 0)
	defer tm.Stop()
	time.Sleep(20 * time.Millisecond) // it fired, not received
	start := time.Now()
	tm.Reset(50 * time.Millisecond)
	<-tm.C()
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("received %v after Reset(50ms): a firing of the old setting", el)
	}
	// Many resets racing the reader: never a firing before its setting's
	// deadline.
	for i := range 200 {
		tm.Reset(time.Duration(i%3) * 100 * time.Microsecond)
		set := time.Now()
		d := 2 * time.Millisecond
		tm.Reset(d)
		<-tm.C()
		if el := time.Since(set); el < d {
			t.Fatalf("round %d: fired %v after Reset(%v)", i, el, d)
		}
	}
}

func TestFDTickerResetChangesPeriod(t *testing.T) {
	tk := newFDTicks(time.Hour, time.Hour)
	defer tk.Stop()
	tk.Reset(5 * time.Millisecond)
	start := time.Now()
	for range 4 {
		<-tk.C()
	}
	if el := time.Since(start); el < 20*time.Millisecond || el > 10*time.Second {
		t.Fatalf("4 ticks at 5ms took %v", el)
	}
}

// Stop ends the reader and frees the descriptor: no goroutine or fd per
// timer is left behind (the node manager makes one per hold-off).
func TestFDStopReleases(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip(err)
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.Contains(l, "timerfd") {
				n++
			}
		}
		return n
	}
	before := fds()
	for range 100 {
		tm := newFDTicks(time.Millisecond, 0)
		tm.Stop()
		tm.Stop()                  // twice is fine
		tm.Reset(time.Millisecond) // after Stop: nothing
	}
	deadline := time.Now().Add(10 * time.Second)
	for fds() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d timerfds open after stopping 100 timers, %d before", fds(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tm := newFDTicks(time.Millisecond, 0)
	tm.Stop()
	select {
	case <-tm.C():
		t.Fatal("a timer stopped before its deadline fired")
	case <-time.After(50 * time.Millisecond):
	}
}

// A tick is one read: after an expiry the reader waits for the next one
// instead of reading again to be told EAGAIN (a system call per tick on
// an idle control plane). A one-shot timer re-armed after every firing,
// as the node manager's tick is, fires every time.
func TestFDTicksReadOncePerExpiry(t *testing.T) {
	tk := newFDTicks(2*time.Millisecond, 2*time.Millisecond)
	defer tk.Stop()
	const n = 40
	for i := range n {
		select {
		case <-tk.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("tick %d did not come", i)
		}
	}
	// A wake-up whose expiry a Reset discarded, or a receiver slower than
	// the period, reads nothing now and then; one per tick is the bug.
	if e := tk.empty.Load(); e > n/4 {
		t.Errorf("%d reads found no expiry in %d ticks", e, n)
	}

	tm := newFDTicks(time.Millisecond, 0)
	defer tm.Stop()
	for i := range n {
		select {
		case <-tm.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("firing %d of a re-armed timer did not come", i)
		}
		tm.Reset(time.Millisecond)
	}
	if e := tm.empty.Load(); e > n/4 {
		t.Errorf("%d reads found no expiry in %d firings", e, n)
	}
}
