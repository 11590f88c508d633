package supervisor

import "github.com/vigil-project/vigil/cgroup"

// GroupStatus is one cgroup's usage and pressure, for `vigil status`.
type GroupStatus struct {
	Group         string `json:"group"`
	CPUUsageUsec  uint64 `json:"cpu_usage_usec"`
	NrThrottled   uint64 `json:"nr_throttled"`
	ThrottledUsec uint64 `json:"throttled_usec"`
	MemoryCurrent uint64 `json:"memory_current_bytes"`
	MemoryMax     uint64 `json:"memory_max_bytes"` // 0 = no limit
	OOMKills      uint64 `json:"oom_kills"`
	PidsCurrent   uint64 `json:"pids_current"`
	// Pressure is PSI "some" avg10 in percent; PressureScope says whose:
	// "group" (cgroup v2) or "host" (v1 has no per-group PSI).
	PressureScope string   `json:"pressure_scope,omitempty"`
	CPUPressure   *float64 `json:"cpu_pressure_some_avg10,omitempty"`
	MemPressure   *float64 `json:"memory_pressure_some_avg10,omitempty"`
	IOPressure    *float64 `json:"io_pressure_some_avg10,omitempty"`
	// RTBudgetUsec is the realtime time the group's tasks may use on each
	// CPU per second (cpu.rt_runtime_us: control.rt_budget on a v1 kernel
	// with CONFIG_RT_GROUP_SCHED; absent: none in force, or the host has
	// no per-group budget). RTPeakShare is the largest share of it they
	// used on one CPU within a second over the last 10 s (rtBudgetWatch),
	// RTPeakUsedUsec that use; RTHighEpisodes counts the episodes over
	// RTBudgetWarnShare since the supervisor started.
	RTBudgetUsec   int64    `json:"rt_budget_usec,omitempty"`
	RTPeakShare    *float64 `json:"rt_budget_peak_share,omitempty"`
	RTPeakUsedUsec int64    `json:"rt_budget_peak_used_usec,omitempty"`
	RTHighEpisodes uint64   `json:"rt_budget_high_episodes,omitempty"`
	Error          string   `json:"error,omitempty"`
}

// groupStatus reads the tree's main groups: control and its three
// members, apps and each application, and hooks (on a node). It only reads: the groups are the
// ones the supervisor already holds (opening one could create it).
func (s *Supervisor) groupStatus() []GroupStatus {
	type named struct {
		rel string
		g   *cgroup.Group
	}
	groups := []named{{"control", s.ctrlGroup}, {"control/supervisor", s.sup}}
	for _, p := range s.ctrl {
		groups = append(groups, named{"control/" + p.cfg.Name, p.group})
	}
	groups = append(groups, named{"apps", s.apps})
	for _, p := range s.procs {
		groups = append(groups, named{"apps/" + p.cfg.Name, p.group})
	}
	for slot, g := range s.hooks {
		groups = append(groups, named{s.hooksGroupName(slot), g})
	}
	out := make([]GroupStatus, 0, len(groups))
	for _, n := range groups {
		if n.g == nil {
			continue
		}
		gs := GroupStatus{Group: n.rel}
		fs, err := n.g.FullStats()
		{
			gs.CPUUsageUsec, gs.NrThrottled, gs.ThrottledUsec = fs.CPUUsageUsec, fs.NrThrottled, fs.ThrottledUsec
			gs.MemoryCurrent, gs.MemoryMax, gs.OOMKills, gs.PidsCurrent = fs.MemoryCurrent, fs.MemoryMax, fs.OOMKills, fs.PidsCurrent
			gs.PressureScope = string(fs.Pressure.Scope)
			if fs.Pressure.CPU != nil {
				gs.CPUPressure = &fs.Pressure.CPU.Some.Avg10
			}
			if fs.Pressure.Memory != nil {
				gs.MemPressure = &fs.Pressure.Memory.Some.Avg10
			}
			if fs.Pressure.IO != nil {
				gs.IOPressure = &fs.Pressure.IO.Some.Avg10
			}
		}
		if err != nil {
			gs.Error = err.Error()
		}
		if rt, ok := s.rtWatch.state(n.rel, s.rtWatch.nowOrZero()); ok {
			gs.RTBudgetUsec, gs.RTHighEpisodes = rt.Budget.Microseconds(), rt.Episodes
			if rt.Measured && rt.Budget > 0 {
				share := rt.PeakShare
				gs.RTPeakShare, gs.RTPeakUsedUsec = &share, rt.PeakUsed.Microseconds()
			}
		}
		out = append(out, gs)
	}
	return out
}
