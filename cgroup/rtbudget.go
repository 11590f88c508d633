package cgroup

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RTBudget is a v1 group's realtime bandwidth (CONFIG_RT_GROUP_SCHED):
// its SCHED_RR/FIFO tasks may run Runtime out of every Period on each CPU
// (cpu.rt_runtime_us, cpu.rt_period_us). The kernel counts and throttles
// per CPU: with RT_RUNTIME_SHARE off, the default since Linux 5.11, a CPU
// whose share of the group ran Runtime stops the group's realtime tasks on
// that CPU until the period ends, whatever the group used elsewhere.
type RTBudget struct {
	Runtime time.Duration // 0: no realtime task may run; negative: unlimited
	Period  time.Duration
}

// RTBudget reads the group's realtime budget. A host whose group has no
// cpu.rt_runtime_us (cgroup v2, or a kernel without
// CONFIG_RT_GROUP_SCHED) has no per-group budget: ErrNotSupported.
func (g *Group) RTBudget() (RTBudget, error) {
	d := g.dirFor("cpu")
	if g.m.mode == ModeV2 || d == "" || !exists(filepath.Join(d, "cpu.rt_runtime_us")) {
		return RTBudget{}, fmt.Errorf("cgroup: realtime budget of %s: %w", g.rel, ErrNotSupported)
	}
	rt, err := readInt(d, "cpu.rt_runtime_us")
	if err != nil {
		return RTBudget{}, err
	}
	per, err := readInt(d, "cpu.rt_period_us")
	if err != nil {
		return RTBudget{}, err
	}
	b := RTBudget{Runtime: time.Duration(rt) * time.Microsecond, Period: time.Duration(per) * time.Microsecond}
	if rt < 0 {
		b.Runtime = -1
	}
	return b, nil
}

// CPUUsagePerCPU is the CPU time the group's tasks (its descendants' too)
// have used on each CPU since it was created, in nanoseconds, indexed by
// CPU number (v1 cpuacct.usage_percpu). The realtime budget is counted
// per CPU, so this, not the group's total, says how near it is.
// ErrNotSupported without the v1 cpuacct controller.
func (g *Group) CPUUsagePerCPU() ([]uint64, error) {
	d := g.dirFor("cpuacct")
	if g.m.mode == ModeV2 || d == "" {
		return nil, fmt.Errorf("cgroup: per-cpu usage of %s: %w", g.rel, ErrNotSupported)
	}
	s, err := readFile(d, "cpuacct.usage_percpu")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(s)
	out := make([]uint64, len(f))
	for i, x := range f {
		if out[i], err = strconv.ParseUint(x, 10, 64); err != nil {
			return nil, fmt.Errorf("cgroup: parse %s: %w", filepath.Join(d, "cpuacct.usage_percpu"), err)
		}
	}
	return out, nil
}

// readInt reads a single signed number (cpu.rt_runtime_us is -1 for
// unlimited).
func readInt(dir, name string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: parse %s: %w", filepath.Join(dir, name), err)
	}
	return v, nil
}
