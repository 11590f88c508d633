package schedwatch

import (
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"
)

// PressureConfig configures a PressureTracker.
type PressureConfig struct {
	// Resource names the pressure in log lines and events: "cpu" (the
	// default) logs event=cpu_pressure and event=cpu_pressure_end.
	Resource string
	// Warn is the PSI "some avg10" (percent) above which an episode starts.
	Warn float64
	// Hold: an episode ends once the value has stayed at or below Warn this
	// long (0 = DefaultHold), so a value hovering at the threshold logs one
	// episode, not one per poll.
	Hold time.Duration
	// Prefix starts every log message ("schedwatch: " for the Monitor).
	Prefix string
	// Attrs are added to every log line, e.g. "group", "control".
	Attrs  []any
	Logger *slog.Logger // nil discards
}

// PressureState is a tracker's state for status and metrics.
type PressureState struct {
	Warn      float64
	Available bool    // the last read found pressure on this host
	Avg10     float64 // last value read
	Episodes  uint64  // warnings logged
	InEpisode bool
	Err       string // last read error, "" if the last read worked
}

// PressureTracker turns polled pressure values into episodes: one warning
// line when the value first exceeds Warn, one info line when it has stayed
// at or below Warn for Hold. It does not poll by itself: the caller feeds
// Observe (the Monitor from its timer loop, the supervisor from its own
// ticker), so one read of a cgroup's PSI can feed cpu, memory and io
// trackers. Safe for concurrent use.
type PressureTracker struct {
	cfg PressureConfig
	log *slog.Logger

	mu       sync.Mutex
	ok       bool
	avg10    float64
	err      string
	episodes uint64
	in       bool
	lastHigh time.Duration // monotonic time of the last value above Warn
	max      float64       // highest value of the current episode
}

// NewPressureTracker checks cfg and returns a tracker.
func NewPressureTracker(cfg PressureConfig) (*PressureTracker, error) {
	if cfg.Resource == "" {
		cfg.Resource = "cpu"
	}
	if cfg.Hold == 0 {
		cfg.Hold = DefaultHold
	}
	switch {
	case cfg.Warn <= 0 || cfg.Warn > 100 || math.IsNaN(cfg.Warn):
		return nil, fmt.Errorf("%w: pressure warning %v%% outside (0, 100]", ErrConfig, cfg.Warn)
	case cfg.Hold < 0:
		return nil, fmt.Errorf("%w: negative pressure hold %v", ErrConfig, cfg.Hold)
	}
	t := &PressureTracker{cfg: cfg, log: cfg.Logger}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	return t, nil
}

// Observe records one read at monotonic time now: avg10 is valid when ok;
// err is a failed read (logged once until a read works again).
func (t *PressureTracker) Observe(now time.Duration, avg10 float64, ok bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.cfg.Resource
	if err != nil {
		if t.err == "" {
			t.log.Warn(t.cfg.Prefix+"reading pressure failed", append([]any{"event", "pressure_error", "resource", res, "err", err}, t.cfg.Attrs...)...)
		}
		t.err = err.Error()
		return
	}
	t.err, t.ok = "", ok
	if !ok {
		return
	}
	t.avg10 = avg10
	if avg10 > t.cfg.Warn {
		t.lastHigh = now
		t.max = max(t.max, avg10)
		if !t.in {
			t.in, t.max = true, avg10
			t.episodes++
			t.log.Warn(fmt.Sprintf("%s%s pressure %.1f%% above %.1f%%", t.cfg.Prefix, res, avg10, t.cfg.Warn),
				append([]any{"event", res + "_pressure", "avg10", avg10, "threshold_pct", t.cfg.Warn}, t.cfg.Attrs...)...)
		}
		return
	}
	if t.in && now-t.lastHigh >= t.cfg.Hold {
		t.in = false
		t.log.Info(fmt.Sprintf("%s%s pressure episode over", t.cfg.Prefix, res),
			append([]any{"event", res + "_pressure_end", "max_avg10", t.max}, t.cfg.Attrs...)...)
	}
}

// High reports whether the value exceeded Warn within Hold before now.
func (t *PressureTracker) High(now time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.episodes > 0 && now-t.lastHigh < t.cfg.Hold
}

// State returns a copy of the tracker's state.
func (t *PressureTracker) State() PressureState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return PressureState{Warn: t.cfg.Warn, Available: t.ok, Avg10: t.avg10, Episodes: t.episodes, InEpisode: t.in, Err: t.err}
}
