package timingstat

import (
	"fmt"
	"log/slog"
	"time"
)

// DefaultHold is how long without a lateness over the warning level ends a
// warning episode, and the span of the recent maximum: as long as the
// scheduling watch's (schedwatch.DefaultHold), so the two warnings of one
// starved spell come and go together.
const DefaultHold = 10 * time.Second

// DefaultWarnShare is control.lateness_warn_share's default: warn when the
// control plane runs a quarter of a lease late.
const DefaultWarnShare = 0.25

// Warn tells when a process's lateness eats more than a share of the
// lease: the first tick later than Share × Lease starts an episode (one
// warning logged, event=timing_margin), which lasts until Hold passes
// without another; its end is logged with the episode's worst
// (event=timing_margin_end). Time is passed in (the caller's injected
// clock). Share 0 turns the warning off; the recent maximum is kept all
// the same. Not safe for concurrent use.
type Warn struct {
	Process string        // "node manager", "locator": for the log line
	Share   float64       // control.lateness_warn_share
	Lease   time.Duration // cluster.timing.lease
	Hold    time.Duration // 0: DefaultHold
	Log     *slog.Logger  // nil: nothing logged

	episodes   uint64
	in         bool
	start      time.Duration
	lastOver   time.Duration
	episodeMax time.Duration
	overs      uint64

	// recent[i] is the worst lateness seen in the slot'th tenth of Hold,
	// slot[i] says which; the recent maximum is the worst of the slots
	// still within Hold.
	recent [10]time.Duration
	slot   [10]int64
}

// Level is the lateness that warns (Share × Lease); 0 when off.
func (w *Warn) Level() time.Duration {
	if w.Share <= 0 {
		return 0
	}
	return time.Duration(w.Share * float64(w.Lease))
}

func (w *Warn) hold() time.Duration {
	if w.Hold > 0 {
		return w.Hold
	}
	return DefaultHold
}

// Observe records that the process ran late by late at now.
func (w *Warn) Observe(now, late time.Duration) {
	w.noteRecent(now, late)
	w.expire(now)
	level := w.Level()
	if level <= 0 || late <= level {
		return
	}
	w.lastOver = now
	if !w.in {
		w.in, w.start, w.episodeMax, w.overs = true, now, 0, 0
		w.episodes++
		if w.Log != nil {
			w.Log.Warn(fmt.Sprintf("%s ran %d ms late: more than %.0f%% of the %d ms lease; the configured timing has too little margin for this host (vigil check --timing)",
				w.Process, late.Milliseconds(), w.Share*100, w.Lease.Milliseconds()),
				"event", "timing_margin", "late_ms", ms(late), "warn_ms", ms(level), "lease_ms", w.Lease.Milliseconds())
		}
	}
	w.episodeMax = max(w.episodeMax, late)
	w.overs++
}

// expire ends an episode Hold after its last late tick.
func (w *Warn) expire(now time.Duration) {
	if !w.in || now-w.lastOver < w.hold() {
		return
	}
	w.in = false
	if w.Log != nil {
		w.Log.Info(fmt.Sprintf("%s lateness back within %.0f%% of the lease", w.Process, w.Share*100),
			"event", "timing_margin_end", "max_late_ms", ms(w.episodeMax), "late_ticks", w.overs,
			"duration_ms", (w.lastOver - w.start).Milliseconds())
	}
}

func (w *Warn) slotOf(now time.Duration) int64 { return int64(now / (w.hold() / 10)) }

func (w *Warn) noteRecent(now, late time.Duration) {
	s := w.slotOf(now)
	i := int(s % int64(len(w.slot)))
	if w.slot[i] != s {
		w.slot[i], w.recent[i] = s, 0
	}
	w.recent[i] = max(w.recent[i], late)
}

// WarnState is a Warn's state as reported.
type WarnState struct {
	// Warning: an episode is open (a tick later than WarnMS within the
	// last 10 s).
	Warning  bool    `json:"warning"`
	Episodes uint64  `json:"warn_episodes"`
	WarnMS   float64 `json:"warn_ms"` // the level; 0 = the warning is off
	// RecentMaxLateMS is the worst lateness of the last 10 s.
	RecentMaxLateMS float64 `json:"recent_max_late_ms"`
}

// State returns the state at now (an episode whose hold has passed is
// closed, and logged so, now).
func (w *Warn) State(now time.Duration) WarnState {
	w.expire(now)
	cur := w.slotOf(now)
	var worst time.Duration
	for i, s := range w.slot {
		if s > cur-int64(len(w.slot)) && s <= cur {
			worst = max(worst, w.recent[i])
		}
	}
	return WarnState{Warning: w.in, Episodes: w.episodes, WarnMS: ms(w.Level()), RecentMaxLateMS: ms(worst)}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
