package supervisor

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/supervisor/health"
)

// restartGrace is how long a planned restart of a process configured as pc
// may keep it from serving before it counts against the node's health: its
// stop (at most stop_timeout, then it is killed), the start allowance and,
// with a health check, the check's own start-up time: grace (the operator's
// word for how long the process takes to come up) plus rise checks.
func restartGrace(pc config.Process) time.Duration {
	d := pc.StopTimeout + startAllowance
	if h := pc.Health; h != nil {
		interval, rise := h.Interval, h.Rise
		if interval <= 0 {
			interval = time.Second
		}
		if rise <= 0 {
			rise = 2
		}
		d += h.Grace + time.Duration(rise)*interval
	}
	return d
}

// upForHealth says whether p counts as up (running and, with a check,
// healthy) or is down only because of a planned restart already excused.
func (p *proc) upForHealth() bool {
	if !p.graceUntil.IsZero() {
		return true
	}
	return p.state == StateRunning && (p.cfg.Health == nil || p.health.State == health.StateHealthy)
}

// beginRestartGrace excuses the planned restart of p, which the caller is
// about to stop and start again, from the node's health for restartGrace:
// without it a reload on the active node would hand the role over (the node
// is unhealthy for the moment the process is down) although a reload never
// moves it. The grace ends early when the process is back (running and
// healthy), when its run ends unplanned (a crash, a failed spawn) or when
// its health check says unhealthy: a broken new configuration still fails
// over, and only the restart itself is excused. At the deadline it counts
// again whatever its state. Only applications: the control plane is never
// excused.
func (s *Supervisor) beginRestartGrace(p *proc, reason string) {
	if p.control != "" {
		return
	}
	if p.graceTimer != nil {
		p.graceTimer.Stop()
	}
	d := restartGrace(p.cfg)
	until := s.clock.Wall().Add(d)
	p.graceUntil, p.graceReason = until, reason
	p.graceTimer = s.clock.AfterFunc(d, func() {
		s.post(func() {
			if p.graceUntil.Equal(until) {
				s.endRestartGrace(p, "deadline")
				s.updateHealth()
			}
		})
	})
	if s.needs(p) {
		p.log.Info("planned restart does not count against node health until the process is back", "event", "restart_grace", "reason", reason, "grace", d.String())
	}
}

// endRestartGrace closes p's grace, if any; outcome is why (back, exited,
// unhealthy, deadline).
func (s *Supervisor) endRestartGrace(p *proc, outcome string) {
	reason, had := p.clearRestartGrace()
	if !had || !s.needs(p) {
		return
	}
	level := slog.LevelInfo
	msg := "planned restart complete"
	if outcome != "back" {
		level = slog.LevelWarn
		msg = "planned restart did not bring the process back; it counts against node health again"
	}
	p.log.Log(context.Background(), level, msg, "event", "restart_grace_end", "reason", reason, "outcome", outcome)
}

// clearRestartGrace drops p's grace and its timer; it returns the grace's
// reason and whether there was one.
func (p *proc) clearRestartGrace() (string, bool) {
	if p.graceUntil.IsZero() {
		return "", false
	}
	if p.graceTimer != nil {
		p.graceTimer.Stop()
		p.graceTimer = nil
	}
	reason := p.graceReason
	p.graceUntil, p.graceReason = time.Time{}, ""
	return reason, true
}

// settleRestartGraces ends the grace of every process whose planned restart
// has a verdict: back (running and, with a check, healthy) or failing its
// new health check.
func (s *Supervisor) settleRestartGraces() {
	for _, p := range s.procs {
		if p.graceUntil.IsZero() || p.state != StateRunning {
			continue
		}
		switch {
		case p.cfg.Health == nil || p.health.State == health.StateHealthy:
			s.endRestartGrace(p, "back")
		case p.health.State == health.StateUnhealthy:
			s.endRestartGrace(p, "unhealthy")
		}
	}
}

// startAllowance is how long a restarted process may take to be running
// again, health check aside: spawning is milliseconds, but a host under the
// load Vigil is built for may be slow, and 10 s is also what the defaults
// call a stable run (backoff.stable) and a clean stop (stop_timeout).
const startAllowance = 10 * time.Second
