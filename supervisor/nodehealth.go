package supervisor

import (
	"context"
	"slices"
	"strings"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/supervisor/health"
)

func (s *Supervisor) startHealth(p *proc, gen uint64) {
	if p.cfg.Health == nil {
		return
	}
	chk, err := health.NewChecker(p.cfg.Health, runner{s.reaper})
	if err != nil {
		p.log.Error("invalid health check", "event", "health_error", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.monCancel = cancel
	hlog := p.log.With("check", string(p.cfg.Health.Kind))
	p.monitor = health.NewMonitor(p.cfg.Health, chk, func(st health.Status) {
		s.post(func() {
			if gen != p.gen {
				return
			}
			p.health = st
			if st.State == health.State("unhealthy") {
				p.log.Warn("health check failing", "event", "health", "health", string(st.State), "err", st.LastError)
			} else {
				p.log.Info("health changed", "event", "health", "health", string(st.State))
			}
			s.updateHealth()
		})
	}, hlog)
	p.health = p.monitor.Status()
	go p.monitor.Run(ctx)
}

func (s *Supervisor) stopHealth(p *proc) {
	if p.monCancel != nil {
		p.monCancel()
		p.monCancel = nil
	}
	p.monitor = nil
	p.health = health.Status{}
}

// updateHealth recomputes the node's health from its critical processes and
// tells systemd when the summary changes.
func (s *Supervisor) updateHealth() {
	s.settleRestartGraces()
	reasons := s.unhealthyReasons()
	healthy := len(reasons) == 0
	if healthy != s.healthy && !s.stopping {
		if healthy {
			s.log.Info("node healthy", "event", "node_health", "healthy", true)
		} else {
			s.log.Warn("node unhealthy", "event", "node_health", "healthy", false, "reasons", strings.Join(reasons, "; "))
		}
	}
	// What each service's node manager is told.
	appHealthy := make([]bool, s.cfg.ServiceCount())
	for slot := range appHealthy {
		appHealthy[slot] = len(s.appUnhealthyReasonsFor(slot)) == 0
	}
	if !slices.Equal(appHealthy, s.appHealthy) {
		s.appHealthy = appHealthy
		s.pushHealth()
	}
	s.healthy = healthy
	s.notify.status(s.statusLine())
}

// unhealthyReasons is why this host is unhealthy: a critical application or
// a control-plane process is down or failing.
func (s *Supervisor) unhealthyReasons() []string {
	r := s.appUnhealthyReasons()
	for _, p := range s.ctrl {
		if p.state != StateRunning {
			r = append(r, p.cfg.Name+" "+string(p.state))
		}
	}
	return r
}

// appUnhealthyReasons covers the applications any service needs (for the
// host's health: status, systemd).
func (s *Supervisor) appUnhealthyReasons() []string {
	var r []string
	for slot := range s.cfg.ServiceCount() {
		for _, x := range s.appUnhealthyReasonsFor(slot) {
			if !slices.Contains(r, x) {
				r = append(r, x)
			}
		}
	}
	return r
}

// appUnhealthyReasonsFor covers the applications the service in slot
// needs only (its processes:, or without that list the critical ones):
// what its node manager weighs when it decides whether this node may hold
// it.
func (s *Supervisor) appUnhealthyReasonsFor(slot int) []string {
	var r []string
	for _, p := range s.procs {
		if !s.needsFor(slot, p) || !p.graceUntil.IsZero() {
			continue
		}
		switch {
		case p.state != StateRunning:
			r = append(r, p.cfg.Name+" "+string(p.state))
		case p.cfg.Health != nil && p.health.State != health.State("healthy"):
			st := string(p.health.State)
			if st == "" {
				st = "starting"
			}
			r = append(r, p.cfg.Name+" health "+st)
		}
	}
	return r
}

// needs reports whether any of the node's services needs p.
func (s *Supervisor) needs(p *proc) bool {
	for slot := range s.cfg.ServiceCount() {
		if s.needsFor(slot, p) {
			return true
		}
	}
	return false
}

// needsFor reports whether the service in slot needs p (serviceNeeds).
func (s *Supervisor) needsFor(slot int, p *proc) bool {
	var svc config.Service
	if s.cfg != nil && slot < len(s.cfg.Services) {
		svc = s.cfg.Services[slot]
	}
	return serviceNeeds(svc, p.cfg.Name, p.cfg.Critical)
}

// serviceNeeds reports whether the service is healthy on this node only
// while the process called name runs (and passes its health check): it is
// listed in the service's processes, or, when the service lists none, it
// is critical.
func serviceNeeds(svc config.Service, name string, critical bool) bool {
	if svc.Processes == nil {
		return critical
	}
	return slices.Contains(svc.Processes, name)
}
