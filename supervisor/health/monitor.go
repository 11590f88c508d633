package health

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/vigil-project/vigil/config"
)

// State is a monitor's verdict.
type State string

const (
	StateStarting  State = "starting"  // no verdict yet
	StateHealthy   State = "healthy"   // Rise consecutive successes since the last failure verdict
	StateUnhealthy State = "unhealthy" // Fall consecutive counted failures
)

// Status is a snapshot of a Monitor.
type Status struct {
	State           State
	LastError       string    // "" after a success
	LastCheck       time.Time // when the last check finished; zero before the first
	ConsecutiveOK   int
	ConsecutiveFail int    // counted failures only: failures inside Grace are not counted
	Checks          uint64 // every finished check
	Failures        uint64 // every failed check, inside Grace too
}

// Monitor runs a Checker every Interval with Timeout per check. It turns
// healthy after Rise consecutive successes and unhealthy after Fall
// consecutive failures; from "starting", the first verdict needs Rise
// successes or Fall failures. Failures during Grace after Run starts do not
// count towards Fall (they still break a run of successes, and show in
// LastError and Failures). onChange is called from the monitor goroutine on
// every State change, so it must not block for long.
type Monitor struct {
	check    Checker
	interval time.Duration
	timeout  time.Duration
	rise     int
	fall     int
	grace    time.Duration
	onChange func(Status)
	log      *slog.Logger

	// Injected for tests; real time otherwise.
	now       func() time.Time
	newTicker func(time.Duration) (<-chan time.Time, func())

	mu     sync.Mutex
	status Status
}

// NewMonitor returns a Monitor for c. Zero or negative durations and counts
// in h fall back to the documented defaults (interval 1s, timeout 300ms,
// rise 2, fall 3); a timeout not below the interval is clamped to it. A nil
// log discards; a nil onChange is allowed.
func NewMonitor(h *config.Health, c Checker, onChange func(Status), log *slog.Logger) *Monitor {
	def := config.DefaultHealth()
	m := &Monitor{
		check:    c,
		interval: def.Interval,
		timeout:  def.Timeout,
		rise:     def.Rise,
		fall:     def.Fall,
		onChange: onChange,
		log:      log,
		now:      time.Now,
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		status: Status{State: StateStarting},
	}
	if h != nil {
		if h.Interval > 0 {
			m.interval = h.Interval
		}
		if h.Timeout > 0 {
			m.timeout = h.Timeout
		}
		if h.Rise > 0 {
			m.rise = h.Rise
		}
		if h.Fall > 0 {
			m.fall = h.Fall
		}
		if h.Grace > 0 {
			m.grace = h.Grace
		}
	}
	if m.timeout > m.interval {
		m.timeout = m.interval
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// Status returns a snapshot; safe from any goroutine.
func (m *Monitor) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run checks at once, then every Interval, until ctx is done. A check still
// running when ctx ends is abandoned (its context is cancelled) and not
// counted. Run is meant to be called once per Monitor; the grace period
// starts when it is called.
func (m *Monitor) Run(ctx context.Context) {
	started := m.now()
	ticks, stop := m.newTicker(m.interval)
	defer stop()
	for {
		m.runOnce(ctx, started)
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}

func (m *Monitor) runOnce(ctx context.Context, started time.Time) {
	cctx, cancel := context.WithTimeout(ctx, m.timeout)
	err := m.check.Check(cctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the result says nothing about the target
	}
	now := m.now()
	inGrace := now.Sub(started) < m.grace

	m.mu.Lock()
	s := &m.status
	prev := s.State
	s.Checks++
	s.LastCheck = now
	if err == nil {
		s.LastError = ""
		s.ConsecutiveOK++
		s.ConsecutiveFail = 0
		if s.State != StateHealthy && s.ConsecutiveOK >= m.rise {
			s.State = StateHealthy
		}
	} else {
		s.LastError = err.Error()
		s.Failures++
		s.ConsecutiveOK = 0
		if !inGrace {
			s.ConsecutiveFail++
			if s.State != StateUnhealthy && s.ConsecutiveFail >= m.fall {
				s.State = StateUnhealthy
			}
		}
	}
	snap := *s
	m.mu.Unlock()

	if err != nil {
		m.log.Debug("health check failed", "error", snap.LastError, "consecutive_fail", snap.ConsecutiveFail, "in_grace", inGrace)
	}
	if snap.State == prev {
		return
	}
	level := slog.LevelInfo
	if snap.State == StateUnhealthy {
		level = slog.LevelWarn
	}
	m.log.Log(ctx, level, "health state changed", "from", string(prev), "to", string(snap.State), "last_error", snap.LastError)
	if m.onChange != nil {
		m.onChange(snap)
	}
}
