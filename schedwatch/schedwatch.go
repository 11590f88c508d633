// Package schedwatch detects that a control-plane process is not being
// scheduled, the way Corosync logs "not scheduled for X ms": a thread
// asks to be woken every period on CLOCK_MONOTONIC and measures how late
// each wakeup comes; time the host spent suspended (CLOCK_BOOTTIME
// advancing faster than CLOCK_MONOTONIC) counts as lateness too. A wakeup
// later than the threshold starts an episode: one warning is logged, the
// monitor reports Degraded until the hold time passes without another
// late wakeup, and an end line summarises the episode. Optionally the cpu
// pressure (PSI "some avg10") of the control group or the host marks the
// node degraded the same way. PressureTracker is that pressure part alone,
// for a caller that polls PSI itself (the supervisor, for control/).
package schedwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/vigil-project/vigil/cgroup"
)

// Defaults for a zero Config field.
const (
	DefaultPeriod        = 25 * time.Millisecond // the longest; withDefaults
	MinPeriod            = 10 * time.Millisecond // the shortest; withDefaults
	DefaultThreshold     = 50 * time.Millisecond // config control.sched_delay_warn
	DefaultHold          = 10 * time.Second
	DefaultRecent        = 32
	DefaultPressureEvery = time.Second
)

// suspendSlack is ignored in the BOOTTIME-MONOTONIC difference: the two
// clocks are read one after the other.
const suspendSlack = time.Millisecond

// ErrConfig is returned by New for invalid settings.
var ErrConfig = errors.New("schedwatch: invalid config")

// PressureFunc returns a pressure percentage (PSI avg10, 0..100); ok is
// false when pressure is not available on this host.
type PressureFunc func() (avg10 float64, ok bool, err error)

// Config configures a Monitor. Zero values take the defaults above.
type Config struct {
	Period    time.Duration // timer period
	Threshold time.Duration // lateness that starts an episode (control.sched_delay_warn)
	Hold      time.Duration // Degraded stays true this long after the last late wakeup or high pressure
	Recent    int           // late wakeups kept in Snapshot.Recent

	// Pressure, with PressureWarn > 0, is polled every PressureEvery;
	// a value above PressureWarn (percent) marks the node degraded.
	Pressure      PressureFunc
	PressureWarn  float64
	PressureEvery time.Duration

	Logger *slog.Logger // nil discards
	Clock  Clock        // nil = SystemClock

	// Each, when set, is called on the monitor's goroutine after every
	// wakeup: a check of another goroutine's progress that needs a
	// timer, without a timer (and a wakeup) of its own. It must not block.
	Each func()
}

// LateEvent is one wakeup later than the threshold.
type LateEvent struct {
	At        time.Time     // wall clock, for display
	Late      time.Duration // total lateness, suspended time included
	Suspended time.Duration // part of Late the host spent suspended
}

// HistogramBounds are the upper bounds of the lateness histogram buckets.
var HistogramBounds = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
}

// Histogram is the lateness of every wakeup, Prometheus style: Counts[i]
// is the number of wakeups with lateness <= Bounds[i] (cumulative); Count
// and Sum cover all wakeups, including those above the last bound.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// Buckets returns the histogram as prometheus.NewConstHistogram wants it:
// upper bound in seconds to cumulative count.
func (h Histogram) Buckets() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		out[b.Seconds()] = h.Counts[i]
	}
	return out
}

// HistogramJSON is a Histogram as the control-plane processes report it to
// the supervisor (and so in `vigil status --json` and the metrics).
type HistogramJSON struct {
	BoundsSeconds []float64 `json:"bounds_seconds"`
	Counts        []uint64  `json:"counts"` // cumulative: wakeups at most this late
	Count         uint64    `json:"count"`
	SumSeconds    float64   `json:"sum_seconds"`
}

// JSON returns h for a report.
func (h Histogram) JSON() HistogramJSON {
	j := HistogramJSON{Counts: append([]uint64(nil), h.Counts...), Count: h.Count, SumSeconds: h.Sum.Seconds()}
	for _, b := range h.Bounds {
		j.BoundsSeconds = append(j.BoundsSeconds, b.Seconds())
	}
	return j
}

// Snapshot is the monitor's state for status and metrics.
type Snapshot struct {
	Running   bool
	Degraded  bool
	Reasons   []string // why Degraded: "late_timer", "stalled", "cpu_pressure"
	Period    time.Duration
	Threshold time.Duration
	Hold      time.Duration

	Wakeups      uint64        // timer wakeups measured
	LateWakeups  uint64        // wakeups later than Threshold
	Episodes     uint64        // warnings logged for lateness
	InEpisode    bool          // a late episode is open (not yet Hold without lateness)
	MaxLate      time.Duration // the latest wakeup since start
	LastLate     time.Duration // lateness of the most recent late wakeup
	LastLateAt   time.Time     // its wall-clock time; zero if none
	SuspendedSum time.Duration // host suspend time seen
	Recent       []LateEvent   // the most recent late wakeups, oldest first
	Histogram    Histogram

	PressureWarn      float64 // 0 = pressure not watched
	PressureAvailable bool
	PressureAvg10     float64 // last value read
	PressureEpisodes  uint64  // warnings logged for pressure
	PressureErr       string  // last read error, "" if the last read worked
}

// Monitor measures timer lateness. Run it in its own goroutine; the other
// methods are safe to call concurrently.
type Monitor struct {
	cfg   Config
	log   *slog.Logger
	clock Clock

	mu           sync.Mutex
	running      bool
	nextDeadline time.Duration // monotonic; valid while running
	wakeups      uint64
	lateWakeups  uint64
	episodes     uint64
	inEpisode    bool
	episodeStart time.Duration // monotonic of the episode's first late wakeup
	episodeMax   time.Duration
	episodeLate  uint64
	lastLateMono time.Duration
	maxLate      time.Duration
	lastLate     LateEvent
	suspendedSum time.Duration
	recent       []LateEvent // ring, len <= cfg.Recent
	recentNext   int
	hist         Histogram

	pressure *PressureTracker // nil unless PressureWarn > 0
}

// withDefaults fills the zero fields of cfg.
func (cfg Config) withDefaults() Config {
	if cfg.Threshold == 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.Period == 0 {
		// Half the threshold, within MinPeriod..DefaultPeriod: every
		// stall of 1.5 thresholds is seen, and the default 50 ms threshold
		// costs 40 wakeups a second, not the 100 of a 10 ms timer (each
		// one ~45 µs of CPU on a virtual machine).
		cfg.Period = min(DefaultPeriod, max(cfg.Threshold/2, MinPeriod))
	}
	if cfg.Hold == 0 {
		cfg.Hold = DefaultHold
	}
	if cfg.Recent == 0 {
		cfg.Recent = DefaultRecent
	}
	if cfg.PressureEvery == 0 {
		cfg.PressureEvery = DefaultPressureEvery
	}
	return cfg
}

// Validate returns what New would refuse in cfg (an error wrapping
// ErrConfig), or nil. Configuration validation calls it, so that a
// control.sched_delay_warn the control plane cannot run with is refused by
// `vigil check` rather than at start.
func (cfg Config) Validate() error {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Period < 0 || cfg.Threshold < 0 || cfg.Hold < 0 || cfg.Recent < 0 || cfg.PressureEvery < 0:
		return fmt.Errorf("%w: negative value in %+v", ErrConfig, cfg)
	case cfg.Threshold < cfg.Period:
		// Lateness is only seen once per period; a smaller threshold would
		// make every stall of one period an episode.
		return fmt.Errorf("%w: threshold %v is below the timer period %v: lateness is measured once per period", ErrConfig, cfg.Threshold, cfg.Period)
	case cfg.PressureWarn < 0 || cfg.PressureWarn > 100 || math.IsNaN(cfg.PressureWarn):
		return fmt.Errorf("%w: pressure warning %v%% outside 0..100", ErrConfig, cfg.PressureWarn)
	case cfg.PressureWarn > 0 && cfg.Pressure == nil:
		return fmt.Errorf("%w: pressure warning set without a pressure source", ErrConfig)
	}
	return nil
}

// New checks cfg and returns a Monitor that is not yet running.
func New(cfg Config) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Monitor{cfg: cfg, log: cfg.Logger, clock: cfg.Clock}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = &SystemClock{}
	}
	m.hist = Histogram{Bounds: HistogramBounds, Counts: make([]uint64, len(HistogramBounds))}
	if cfg.PressureWarn > 0 {
		var err error
		m.pressure, err = NewPressureTracker(PressureConfig{Warn: cfg.PressureWarn, Hold: cfg.Hold, Prefix: "schedwatch: ", Logger: m.log})
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run measures until ctx ends. It returns nil when ctx ends, or a clock
// error. It is not locked to a thread: a locked goroutine's wakeup is one
// more handoff than the protocol loop's, whose lateness it stands for.
func (m *Monitor) Run(ctx context.Context) error {

	mono, boot := m.clock.Now()
	deadline := mono + m.cfg.Period
	nextPressure := mono
	m.mu.Lock()
	m.running, m.nextDeadline = true, deadline
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()
	for {
		if err := m.clock.SleepUntil(ctx, deadline); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now, nowBoot := m.clock.Now()
		late := max(now-deadline, 0)
		suspended := (nowBoot - boot) - (now - mono)
		if suspended < suspendSlack {
			suspended = 0
		}
		mono, boot = now, nowBoot
		// After a stall, restart the grid from now: the ticks missed during
		// it are one late wakeup, not a burst of them.
		deadline += m.cfg.Period
		if deadline <= now {
			deadline = now + m.cfg.Period
		}
		m.observe(now, late+suspended, suspended, deadline)
		if m.cfg.Each != nil {
			m.cfg.Each()
		}
		if m.cfg.PressureWarn > 0 && now >= nextPressure {
			nextPressure = now + m.cfg.PressureEvery
			m.pollPressure(now)
		}
	}
}

// observe records one wakeup that came late (suspended included) at
// monotonic time now, and the next deadline.
func (m *Monitor) observe(now, late, suspended, next time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextDeadline = next
	m.wakeups++
	m.suspendedSum += suspended
	m.hist.Count++
	m.hist.Sum += late
	for i, b := range m.hist.Bounds {
		if late <= b {
			m.hist.Counts[i]++
		}
	}
	if late > m.cfg.Threshold {
		ev := LateEvent{At: time.Now(), Late: late, Suspended: suspended}
		m.lateWakeups++
		m.maxLate = max(m.maxLate, late)
		m.lastLate, m.lastLateMono = ev, now
		if len(m.recent) < m.cfg.Recent {
			m.recent = append(m.recent, ev)
		} else if m.cfg.Recent > 0 {
			m.recent[m.recentNext] = ev
			m.recentNext = (m.recentNext + 1) % m.cfg.Recent
		}
		if !m.inEpisode {
			m.inEpisode, m.episodeStart, m.episodeMax, m.episodeLate = true, now, 0, 0
			m.episodes++
			attrs := []any{"event", "late_timer", "late_ms", late.Milliseconds(), "threshold_ms", m.cfg.Threshold.Milliseconds()}
			if suspended > 0 {
				attrs = append(attrs, "suspended_ms", suspended.Milliseconds())
			}
			m.log.Warn(fmt.Sprintf("schedwatch: not scheduled for %d ms", late.Milliseconds()), attrs...)
		}
		m.episodeMax = max(m.episodeMax, late)
		m.episodeLate++
		return
	}
	if m.inEpisode && now-m.lastLateMono >= m.cfg.Hold {
		m.inEpisode = false
		m.log.Info("schedwatch: scheduling delay episode over", "event", "late_timer_end",
			"max_late_ms", m.episodeMax.Milliseconds(), "late_wakeups", m.episodeLate,
			"duration_ms", (m.lastLateMono - m.episodeStart).Milliseconds())
	}
}

// pollPressure reads the pressure source and tracks pressure episodes.
func (m *Monitor) pollPressure(now time.Duration) {
	avg, ok, err := m.cfg.Pressure()
	m.pressure.Observe(now, avg, ok, err)
}

// reasonsLocked lists why the node is degraded at monotonic time now.
func (m *Monitor) reasonsLocked(now time.Duration) []string {
	var r []string
	if m.lateWakeups > 0 && now-m.lastLateMono < m.cfg.Hold {
		r = append(r, "late_timer")
	}
	// The monitor thread itself may be stuck right now: its wakeup is
	// overdue. Visible to callers on other threads that do run.
	if m.running && now-m.nextDeadline > m.cfg.Threshold {
		r = append(r, "stalled")
	}
	if m.pressure != nil && m.pressure.High(now) {
		r = append(r, "cpu_pressure")
	}
	return r
}

// Degraded reports whether a wakeup was late, or pressure was high,
// within the hold time, or the monitor's pending wakeup is overdue.
func (m *Monitor) Degraded() bool {
	now, _ := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.reasonsLocked(now)) > 0
}

// Snapshot returns a copy of the monitor's state.
func (m *Monitor) Snapshot() Snapshot {
	now, _ := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{
		Running: m.running, Period: m.cfg.Period, Threshold: m.cfg.Threshold, Hold: m.cfg.Hold,
		Wakeups: m.wakeups, LateWakeups: m.lateWakeups, Episodes: m.episodes, InEpisode: m.inEpisode,
		MaxLate: m.maxLate, LastLate: m.lastLate.Late, LastLateAt: m.lastLate.At, SuspendedSum: m.suspendedSum,
	}
	if m.pressure != nil {
		ps := m.pressure.State()
		s.PressureWarn, s.PressureAvailable, s.PressureAvg10 = ps.Warn, ps.Available, ps.Avg10
		s.PressureEpisodes, s.PressureErr = ps.Episodes, ps.Err
	}
	s.Reasons = m.reasonsLocked(now)
	s.Degraded = len(s.Reasons) > 0
	s.Recent = make([]LateEvent, 0, len(m.recent))
	s.Recent = append(s.Recent, m.recent[m.recentNext:]...)
	s.Recent = append(s.Recent, m.recent[:m.recentNext]...)
	s.Histogram = Histogram{Bounds: m.hist.Bounds, Counts: append([]uint64(nil), m.hist.Counts...), Count: m.hist.Count, Sum: m.hist.Sum}
	return s
}

// CPUPressure returns a PressureFunc reading "some avg10" of cpu pressure:
// from cpu.pressure in the v2 cgroup directory dir (the control group), or
// with dir "" (cgroup v1) from the host's /proc/pressure/cpu.
func CPUPressure(dir string) PressureFunc {
	return func() (float64, bool, error) {
		var p cgroup.Pressure
		var err error
		if dir != "" {
			p, err = cgroup.GroupPressure(dir)
		} else {
			p, err = cgroup.HostPressure("/proc")
		}
		if err != nil || p.CPU == nil {
			return 0, false, err
		}
		return p.CPU.Some.Avg10, true, nil
	}
}
