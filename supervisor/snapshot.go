package supervisor

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/procsig"
	"github.com/vigil-project/vigil/procstat"
)

func (s *Supervisor) statusLine() string {
	running := 0
	for _, p := range s.procs {
		if p.state == StateRunning {
			running++
		}
	}
	h := "healthy"
	if !s.healthy {
		h = "unhealthy"
	}
	return fmt.Sprintf("%d/%d processes running, node %s", running, len(s.procs), h)
}

// snapshot builds the status; it runs in the loop.
func (s *Supervisor) snapshot() Status {
	st := Status{
		Version: s.opts.Version,
		Cluster: s.cfg.Cluster.Name,
		Node:    s.cfg.Cluster.Node,
		Role:    string(s.cfg.Cluster.Role),
		Healthy: s.healthy,
		Supervisor: SupervisorState{
			PID:        os.Getpid(),
			StartedAt:  s.started,
			Config:     s.opts.ConfigPath,
			CgroupMode: s.cg.Mode().String(),
			Cgroup:     s.sup.Path(),
			Reloads:    s.reloads,
			Orphans:    s.reaper.Orphans(),
			RSSBytes:   selfRSS(),
		},
		Unhealthy: s.unhealthyReasons(),
		Processes: make([]ProcessStatus, 0, len(s.procs)),
	}
	st.Supervisor.Fences = s.fences
	st.Supervisor.FencesHeld = s.fencesHeld
	for _, svc := range s.cfg.Services {
		for _, v := range svc.VIPs {
			st.FloatingIPs = append(st.FloatingIPs, FloatingIP{Address: v.Address, Interface: v.Interface, Service: svc.Name})
		}
	}
	for i, svc := range s.cfg.Services {
		ss := ServiceStatus{Name: svc.Name, Prefer: s.serviceConfig(i).Protocol().Nodes, Failback: "off", Processes: svc.Processes}
		if svc.Failback > 0 {
			ss.Failback = svc.Failback.String()
		}
		if svc.Processes == nil {
			for _, p := range s.procs {
				if p.cfg.Critical {
					ss.Processes = append(ss.Processes, p.cfg.Name)
				}
			}
		}
		st.Services = append(st.Services, ss)
	}
	st.Groups = s.groupStatus()
	st.NotInForce = slices.Clone(s.notInForce)
	for _, p := range s.ctrl {
		if p.rtDegraded != "" {
			st.NotInForce = append(st.NotInForce, "control/"+p.cfg.Name+": realtime budget, control plane unprotected (not SCHED_RR), retrying: "+p.rtDegraded)
		}
		st.ControlPlane = append(st.ControlPlane, s.procStatus(p))
		// The first service's reports are the host's, as before
		// services; the others' go with their service.
		nms, locs := p.currentReports()
		for slot, nm := range nms {
			switch {
			case slot == 0:
				st.NodeManager = nm
			case slot < len(st.Services):
				st.Services[slot].NodeManager = nm
			}
		}
		for slot, loc := range locs {
			switch {
			case slot == 0:
				st.Locator = loc
			case slot < len(st.Services):
				st.Services[slot].Locator = loc
			}
		}
	}
	for _, p := range s.procs {
		st.Processes = append(st.Processes, s.procStatus(p))
	}
	st.Summarize() // last: it reads everything above
	return st
}

func (s *Supervisor) procStatus(p *proc) ProcessStatus {
	{
		ps := ProcessStatus{
			Name: p.cfg.Name, State: p.state, PID: p.pid, Daemonized: p.daemonized,
			Critical: p.cfg.Critical && slices.Contains(s.ctrl, p) || s.needs(p), Restarts: p.restarts, SpawnError: p.spawnErr,
			FailureCount: p.failures, RestartUsec: p.restartLat.Microseconds(),
			Health: "none",
		}
		if p.group != nil {
			ps.Cgroup = p.group.Path()
		}
		if p.state == StateRunning || p.state == StateStopping {
			t := p.startedAt
			ps.StartedAt = &t
		}
		if !p.nextStart.IsZero() {
			t := p.nextStart
			ps.NextStart = &t
		}
		if p.lastExit != nil {
			ps.LastExit = &ExitInfo{Code: p.lastExit.Code, At: p.lastExit.At, Ran: p.lastRan.Round(time.Millisecond).String()}
			if p.lastExit.Signal != 0 {
				ps.LastExit.Signal = procsig.Name(p.lastExit.Signal)
			}
		}
		if p.cfg.Health != nil {
			ps.Health = string(p.health.State)
			if ps.Health == "" {
				ps.Health = "starting"
			}
			ps.HealthError = p.health.LastError
		}
		if p.control != "" && !p.lastBeat.IsZero() {
			t := p.lastBeat
			ps.LastReport = &t
		}
		if p.control != "" && p.pid > 0 {
			if smp, err := procstat.ReadProcess(p.pid); err == nil {
				ps.SchedWaitMS = float64(smp.Total.WaitNs) / 1e6
				ps.SchedRunMS = float64(smp.Total.RunNs) / 1e6
			}
		}
		return ps
	}
}

// currentReports are p's last reports while it runs; none once it has
// exited: a dead process's report is history, not state. A node manager
// killed while active would otherwise read as active, lease valid, until
// its restart, beside the standby it released the role to.
func (p *proc) currentReports() ([]*ctlmsg.NodeManagerReport, []*ctlmsg.LocatorReport) {
	if p.pid == 0 {
		return nil, nil
	}
	var nms []*ctlmsg.NodeManagerReport
	for _, sv := range p.nms {
		nms = append(nms, sv.report)
	}
	return nms, p.locReports
}

// setLocatorReport keeps r as the locator's last report for its service;
// services is how many the file has.
func (p *proc) setLocatorReport(r *ctlmsg.LocatorReport, services int) error {
	if r.Slot < 0 || r.Slot >= services {
		return fmt.Errorf("locator report for service %d: the file has %d", r.Slot, services)
	}
	if len(p.locReports) < services {
		p.locReports = append(p.locReports, make([]*ctlmsg.LocatorReport, services-len(p.locReports))...)
	}
	p.locReports[r.Slot] = r
	return nil
}
