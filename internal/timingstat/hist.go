// Package timingstat measures what a host's control plane can keep: how
// late each process's protocol tick runs and how long a check-in takes to
// be answered by each locator. The running node manager and locator keep
// these figures (Recorder) and report them to the supervisor; `vigil check
// --timing` samples them over a chosen time and judges the configured
// timing against them (Judge); the processes warn while their lateness
// eats more than a set share of the lease (Warn).
package timingstat

import (
	"math"
	"time"
)

// The histogram's buckets are log-spaced, four to an octave (19 % wide),
// from 10 µs: fine enough to read a percentile off, few enough to send
// four times a lease. Bucket i holds values in (Bound(i-1), Bound(i)];
// bucket 0 everything up to 10 µs, the last everything above 10.5 s.
const (
	bucketBase = 10 * time.Microsecond
	perOctave  = 4
	buckets    = 81 // Bound(80) = 10 µs · 2^20 ≈ 10.5 s
)

// Bound is the upper bound of bucket i (the last bucket has none: +Inf).
func Bound(i int) time.Duration {
	if i >= buckets-1 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(float64(bucketBase) * math.Exp2(float64(i)/perOctave))
}

// bucketOf is the index of the bucket holding d.
func bucketOf(d time.Duration) int {
	if d <= bucketBase {
		return 0
	}
	i := int(math.Ceil(math.Log2(float64(d)/float64(bucketBase)) * perOctave))
	// Float rounding at a bound: keep d <= Bound(i) and d > Bound(i-1).
	for i > 0 && i < buckets-1 && d <= Bound(i-1) {
		i--
	}
	for i < buckets-1 && d > Bound(i) {
		i++
	}
	return min(i, buckets-1)
}

// Hist is a histogram of durations with the exact count, sum and maximum.
// The zero value is empty and ready. Not safe for concurrent use.
type Hist struct {
	counts [buckets]uint64
	count  uint64
	sum    time.Duration
	max    time.Duration
}

// Add records one value; negative values count as 0.
func (h *Hist) Add(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(d)]++
	h.count++
	h.sum += d
	h.max = max(h.max, d)
}

// HistJSON is a Hist as reported: counts per bucket (not cumulative),
// trimmed after the last non-empty one; bucket i's upper bound is
// Bound(i), 10 µs · 2^(i/4). Everything is since the process started, so
// that two snapshots can be subtracted (Sub).
type HistJSON struct {
	Count      uint64   `json:"count"`
	SumSeconds float64  `json:"sum_seconds"`
	MaxSeconds float64  `json:"max_seconds"`
	Counts     []uint64 `json:"counts"`
}

// JSON returns h for a report.
func (h *Hist) JSON() HistJSON {
	n := buckets
	for n > 0 && h.counts[n-1] == 0 {
		n--
	}
	return HistJSON{Count: h.count, SumSeconds: h.sum.Seconds(), MaxSeconds: h.max.Seconds(), Counts: append([]uint64{}, h.counts[:n]...)}
}

// Max is the largest value recorded.
func (j HistJSON) Max() time.Duration { return seconds(j.MaxSeconds) }

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// Window is what happened between two snapshots of one histogram.
type Window struct {
	Count  uint64
	Counts []uint64 // per bucket, as in HistJSON
	// Max is the largest value in the window: exact when MaxExact (the
	// maximum since start grew during the window), otherwise an upper
	// bound (the upper bound of the highest bucket that grew, and no more
	// than the maximum since start).
	Max      time.Duration
	MaxExact bool
}

// Sub returns the values recorded after before was taken and up to j.
// ok is false when j is not a later snapshot of the same histogram (a
// count went down: the process restarted in between).
func (j HistJSON) Sub(before HistJSON) (w Window, ok bool) {
	if j.Count < before.Count {
		return w, false
	}
	w.Count = j.Count - before.Count
	w.Counts = make([]uint64, len(j.Counts))
	top := -1
	for i, c := range j.Counts {
		var b uint64
		if i < len(before.Counts) {
			b = before.Counts[i]
		}
		if c < b {
			return Window{}, false
		}
		w.Counts[i] = c - b
		if c > b {
			top = i
		}
	}
	if len(before.Counts) > len(j.Counts) {
		return Window{}, false
	}
	switch {
	case w.Count == 0:
	case j.MaxSeconds > before.MaxSeconds:
		w.Max, w.MaxExact = j.Max(), true
	case top >= 0:
		w.Max = min(Bound(top), j.Max())
	}
	return w, true
}

// Whole is the window of everything in j (since the process started).
func (j HistJSON) Whole() Window {
	w, _ := j.Sub(HistJSON{})
	w.Max, w.MaxExact = j.Max(), j.Count > 0
	return w
}

// Quantile returns an upper bound of the q-quantile (0 < q <= 1) of the
// window's values: the upper bound of the bucket it falls in, never above
// Max. 0 for an empty window.
func (w Window) Quantile(q float64) time.Duration {
	if w.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(w.Count)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range w.Counts {
		seen += c
		if seen >= rank {
			return min(Bound(i), w.Max)
		}
	}
	return w.Max
}
