package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
)

// killLeftovers kills whatever a run left in g. It may block for seconds.
func killLeftovers(g *cgroup.Group) error {
	if g == nil {
		return nil
	}
	if procs, err := g.Procs(); err != nil || len(procs) == 0 {
		return nil
	}
	return g.Kill()
}

func (s *Supervisor) setupCgroups() error {
	cg, err := cgroup.Open(cgroup.Options{Subtree: s.cfg.Runtime.Cgroup, Logger: s.log})
	if err != nil {
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	s.cg = cg
	if s.sup, err = cg.Group("control/supervisor"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	// On v2 a process may not sit in a group whose controllers are enabled
	// for its children, so the supervisor lives in a leaf of its own.
	if err := cg.MoveSelf("control/supervisor"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: move into control/supervisor: %w", err)
	}
	if s.apps, err = cg.Group("apps"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	if s.cfg.Cluster.Role == config.RoleNode {
		s.setupHooksGroup()
	}
	s.applyGroupResources()
	return nil
}

// setupHooksGroup creates the group the node manager's transition hooks
// run in: hooks/, a sibling of control/ and apps/. Not below control/: a
// CPU- or memory-heavy hook must not be charged to the control plane's
// reservation (its cpu weight, memory.min, realtime budget) nor hit its
// limits. Not below apps/: the applications' limits (apps.memory_max,
// pids_max, cpu_max) are sized for them, and a hook that repairs a stuck
// application must still run when they are exhausted; apps/<name> is the
// applications' namespace too. A new v1 group has cpu.rt_runtime_us 0 (no
// realtime budget) and the default cpu weight, which is what a hook gets.
// Without it hooks still run, in the node manager's group: said loudly.
func (s *Supervisor) setupHooksGroup() {
	s.hooks, s.hooksApplied, s.hooksErr = nil, nil, ""
	for slot := range s.cfg.ServiceCount() {
		g, err := s.cg.Group(s.hooksGroupName(slot))
		if err != nil {
			g, s.hooksErr = nil, err.Error()
			s.log.Warn("cannot create the hooks cgroup; hooks run in the node manager's cgroup, charged to the control plane",
				"event", "hooks_cgroup_error", "group", s.hooksGroupName(slot), "err", err)
		}
		s.hooks = append(s.hooks, g)
		s.hooksApplied = append(s.hooksApplied, cgroup.Resources{})
	}
}

// hooksGroupName is the hooks group of the node manager of slot.
func (s *Supervisor) hooksGroupName(slot int) string {
	if slot == 0 || slot >= len(s.cfg.Services) {
		return cgroup.HooksGroup
	}
	return cgroup.HooksGroup + "-" + s.cfg.Services[slot].Name
}

// hooksGroup is the hooks group of the node manager of slot, nil if none.
func (s *Supervisor) hooksGroup(slot int) *cgroup.Group {
	if slot < len(s.hooks) {
		return s.hooks[slot]
	}
	return nil
}

// applyGroupResources writes the control/ and apps/ values of the config.
// What the host cannot do is logged once, not fatal.
func (s *Supervisor) applyGroupResources() {
	s.notInForce = nil
	ctrl, err := s.cg.Group("control")
	if err == nil {
		s.ctrlGroup = ctrl
		var na []string
		na, err = s.applyResources(ctrl, &s.ctrlApplied, s.log.With("group", "control"), cgroup.Resources{CPUWeight: s.cfg.Control.CPUWeight, IOWeight: s.cfg.Control.IOWeight, CPUs: s.cfg.Control.CPUs, MemoryMin: s.cfg.Control.MemoryMin})
		for _, n := range na {
			s.notInForce = append(s.notInForce, "control: "+n)
			s.log.Info("control group setting not in force on this host", "event", "cgroup_degraded", "group", "control", "setting", n)
		}
	}
	if err != nil {
		// In status too: a reservation that silently did not happen
		// (control.cpus refused with EBUSY on v1 did) is what an operator
		// must not have to find in the journal.
		s.notInForce = append(s.notInForce, "control: "+err.Error())
		s.log.Warn("cannot apply control group resources", "event", "cgroup_error", "group", "control", "err", err)
	}
	appsRes := cgroup.Resources{CPUWeight: s.cfg.Apps.CPUWeight, IOWeight: s.cfg.Apps.IOWeight, CPUMax: s.cfg.Apps.CPUMax, MemoryMax: s.cfg.Apps.MemoryMax, PidsMax: s.cfg.Apps.PidsMax}
	if s.cfg.Control.CPUs != "" {
		// Reserved cpus are the control plane's alone: the applications
		// get every other online cpu.
		cpus, err := appsCPUs(s.cfg.Control.CPUs)
		if err != nil {
			s.notInForce = append(s.notInForce, "apps: cpuset: "+err.Error())
			s.log.Warn("cannot keep applications off the reserved cpus", "event", "cgroup_degraded", "err", err)
		} else {
			appsRes.CPUs = cpus
		}
	}
	na, err := s.applyResources(s.apps, &s.appsApplied, s.log.With("group", "apps"), appsRes)
	for _, n := range na {
		s.notInForce = append(s.notInForce, "apps: "+n)
		s.log.Info("apps group setting not in force on this host", "event", "cgroup_degraded", "group", "apps", "setting", n)
	}
	if err != nil {
		s.notInForce = append(s.notInForce, "apps: "+err.Error())
		s.log.Warn("cannot apply apps group resources", "event", "cgroup_error", "group", "apps", "err", err)
	}
	if s.hooksErr != "" {
		s.notInForce = append(s.notInForce, "hooks: no hooks cgroup, hooks run in the node manager's: "+s.hooksErr)
	}
	for slot, g := range s.hooks {
		if g == nil {
			continue
		}
		// The reserved cpus are the control plane's alone, hooks' too.
		name := s.hooksGroupName(slot)
		if _, err := s.applyResources(g, &s.hooksApplied[slot], s.log.With("group", name), cgroup.Resources{CPUs: appsRes.CPUs}); err != nil {
			s.notInForce = append(s.notInForce, name+": cpuset: "+err.Error())
			s.log.Warn("cannot keep hooks off the reserved cpus", "event", "cgroup_error", "group", name, "err", err)
		}
	}
}

// applyResources writes r to g, after putting back the kernel's value of
// every setting *last made and r no longer does, and records r in *last.
// A zero in r leaves a value alone, so without the reset a setting
// removed from the configuration (control.cpus, apps.memory_max, a
// process's pids_max) stayed in force after a reload or a restart of the
// process until vigil itself restarted.
// A reset the kernel refused stays in *last, to be tried again next time.
func (s *Supervisor) applyResources(g *cgroup.Group, last *cgroup.Resources, log *slog.Logger, r cgroup.Resources) ([]string, error) {
	drop := cgroup.Dropped(*last, r)
	*last = r
	var notApplied []string
	var resetErr error
	if drop != (cgroup.Resources{}) {
		na, err := g.Reset(drop)
		notApplied = na
		if err != nil {
			resetErr = fmt.Errorf("reset %s: %w", strings.Join(drop.Fields(), ","), err)
			*last = cgroup.Merge(r, drop)
		} else {
			log.Info("setting removed from the configuration: the kernel's default is back", "event", "cgroup_reset",
				"settings", strings.Join(drop.Fields(), ","))
		}
	}
	na, err := g.Apply(r)
	return append(notApplied, na...), errors.Join(resetErr, err)
}

func (s *Supervisor) destroyCgroups() {
	if s.cg == nil {
		return
	}
	// Leave control/supervisor so that the whole tree can go. Under systemd
	// on v2 the kernel refuses, and systemd removes the leaf after we exit.
	if err := s.cg.MoveSelfHome(); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, cgroup.ErrNotSupported) {
			level = slog.LevelDebug
		}
		s.log.Log(context.Background(), level, "supervisor stays in control/supervisor", "event", "cgroup_leftover", "err", err)
	}
	if err := s.cg.Destroy(); err != nil {
		s.log.Error("cannot remove cgroup tree", "event", "cgroup_error", "err", err)
	}
}

// deleteGroup removes p's group off the loop (a kill inside may poll for
// seconds) and runs then, if any, back on the loop when it is gone.
func (s *Supervisor) deleteGroup(p *proc, then func()) {
	g := p.group
	if g == nil {
		if then != nil {
			then()
		}
		return
	}
	p.group, p.applied = nil, cgroup.Resources{}
	key := "apps/" + p.cfg.Name
	if p.control != "" {
		key = "control/" + p.cfg.Name
	}
	done := make(chan struct{})
	s.deleting[key] = done
	remove := s.removeGroup
	go func() {
		err := remove(g)
		s.post(func() {
			if s.deleting[key] == done {
				delete(s.deleting, key)
			}
			close(done)
			if err != nil {
				p.log.Warn("cannot remove process cgroup", "event", "cgroup_error", "err", err)
			}
			if then != nil {
				then()
			}
		})
	}()
}
