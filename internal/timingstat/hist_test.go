package timingstat

import (
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	if Bound(0) != 10*time.Microsecond || Bound(4) != 20*time.Microsecond || Bound(40) != 10240*time.Microsecond {
		t.Fatalf("bounds %v %v %v", Bound(0), Bound(4), Bound(40))
	}
	for i := 1; i < buckets-1; i++ {
		for _, d := range []time.Duration{Bound(i-1) + 1, Bound(i)} {
			if got := bucketOf(d); got != i {
				t.Errorf("bucketOf(%v) = %d, want %d", d, got, i)
			}
		}
	}
	if bucketOf(0) != 0 || bucketOf(time.Hour) != buckets-1 {
		t.Errorf("bucketOf(0)=%d bucketOf(1h)=%d", bucketOf(0), bucketOf(time.Hour))
	}
}

func TestWindow(t *testing.T) {
	var h Hist
	for range 998 {
		h.Add(100 * time.Microsecond)
	}
	h.Add(3 * time.Millisecond)
	h.Add(-time.Millisecond) // counts as 0
	before := h.JSON()
	w := before.Whole()
	if w.Count != 1000 || w.Max != 3*time.Millisecond || !w.MaxExact {
		t.Fatalf("whole: %+v", w)
	}
	// p50 is the 100 µs bucket's bound (≤ 19 % above), p99.9 the 1000th value's bucket.
	if q := w.Quantile(0.5); q < 100*time.Microsecond || q > 119*time.Microsecond {
		t.Errorf("p50 %v", q)
	}
	if q := w.Quantile(0.999); q < 100*time.Microsecond || q > 119*time.Microsecond {
		t.Errorf("p99.9 %v (the 999th of 1000 values is 100 µs)", q)
	}
	if q := w.Quantile(1); q != 3*time.Millisecond {
		t.Errorf("p100 %v, want the max", q)
	}

	// A window without a new maximum: the max is bounded by its bucket.
	for range 10 {
		h.Add(time.Millisecond)
	}
	w, ok := h.JSON().Sub(before)
	if !ok || w.Count != 10 || w.MaxExact || w.Max < time.Millisecond || w.Max > 1190*time.Microsecond {
		t.Errorf("window: %+v ok=%v", w, ok)
	}
	// A new maximum in the window is exact.
	h.Add(7 * time.Millisecond)
	w, ok = h.JSON().Sub(before)
	if !ok || w.Count != 11 || !w.MaxExact || w.Max != 7*time.Millisecond {
		t.Errorf("window with a new max: %+v", w)
	}
	// An empty window.
	now := h.JSON()
	if w, ok := now.Sub(now); !ok || w.Count != 0 || w.Max != 0 || w.Quantile(0.99) != 0 {
		t.Errorf("empty window: %+v", w)
	}
	// A restarted process: counts went down.
	var fresh Hist
	fresh.Add(time.Millisecond)
	if _, ok := fresh.JSON().Sub(before); ok {
		t.Errorf("a snapshot of a restarted process subtracted without complaint")
	}
}

func TestRecorderRoundTrips(t *testing.T) {
	r := NewRecorder(nil, []string{"a", "w"})
	r.Sent("a", 1, 100*time.Millisecond)
	r.Sent("w", 1, 100*time.Millisecond)
	r.Sent("w", 1, 101*time.Millisecond) // sent again in the same round
	r.Acked("a", 1, 102*time.Millisecond)
	r.Acked("a", 1, 109*time.Millisecond) // a duplicate answer: counted once
	r.Acked("w", 1, 104*time.Millisecond)
	r.Acked("x", 1, 104*time.Millisecond) // not a locator of ours
	for i := range uint64(40) {           // unanswered check-ins are forgotten, not kept
		r.Sent("a", 10+i, time.Second)
	}
	rep := r.Report(time.Second)
	if len(rep.RTT) != 2 || rep.RTT[0].ID != "a" || rep.RTT[1].ID != "w" {
		t.Fatalf("rtt %+v", rep.RTT)
	}
	if a := rep.RTT[0].RTT; a.Count != 1 || a.Max() != 2*time.Millisecond {
		t.Errorf("a: %+v", a)
	}
	if w := rep.RTT[1].RTT; w.Count != 1 || w.Max() != 3*time.Millisecond {
		t.Errorf("w: %+v (the round trip counts from the last send)", w)
	}
	if n := len(r.peers[0].pending); n != pendingPerPeer {
		t.Errorf("%d check-ins pending, want at most %d", n, pendingPerPeer)
	}
}
