package cgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RTBudget is a v1 group's realtime bandwidth (CONFIG_RT_GROUP_SCHED):
// its SCHED_RR/FIFO tasks may run Runtime out of every Period on each CPU
// (cpu.rt_runtime_us, cpu.rt_period_us). The kernel counts and throttles
// per CPU (with the scheduler feature RT_RUNTIME_SHARE off, as measured on
// this project's 6.18 test kernel): a CPU whose share of the group ran
// Runtime stops the group's realtime tasks on that CPU until the period
// ends, whatever the group used elsewhere.
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
	return rtBudgetOf(rt, per), nil
}

// rtBudgetOf is the budget of the two files' values (microseconds; a
// negative runtime is unlimited).
func rtBudgetOf(rtUs, periodUs int64) RTBudget {
	b := RTBudget{Runtime: time.Duration(rtUs) * time.Microsecond, Period: time.Duration(periodUs) * time.Microsecond}
	if rtUs < 0 {
		b.Runtime = -1
	}
	return b
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
	return appendUints(nil, s, filepath.Join(d, "cpuacct.usage_percpu"))
}

// appendUints appends the space-separated numbers of s (read from path)
// to dst.
func appendUints(dst []uint64, s, path string) ([]uint64, error) {
	for f := range strings.FieldsSeq(s) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("cgroup: parse %s: %w", path, err)
		}
		dst = append(dst, v)
	}
	return dst, nil
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

// RTReader reads a group's realtime budget and per-CPU use again and
// again from files it keeps open: each reading is one pread, not an open,
// a read and a close (on a VM each syscall costs tens of microseconds, and
// a watch reads several times a second). Not safe for concurrent use.
type RTReader struct {
	rt, period, usage *os.File
	buf               []byte
}

// OpenRTReader opens the group's cpu.rt_runtime_us, cpu.rt_period_us and
// cpuacct.usage_percpu. ErrNotSupported as RTBudget and CPUUsagePerCPU.
func (g *Group) OpenRTReader() (*RTReader, error) {
	if _, err := g.RTBudget(); err != nil {
		return nil, err
	}
	ua := g.dirFor("cpuacct")
	if ua == "" {
		return nil, fmt.Errorf("cgroup: per-cpu usage of %s: %w", g.rel, ErrNotSupported)
	}
	r := &RTReader{buf: make([]byte, 4096)}
	var err error
	open := func(dir, name string) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = os.Open(filepath.Join(dir, name))
		return f
	}
	cpu := g.dirFor("cpu")
	r.rt, r.period, r.usage = open(cpu, "cpu.rt_runtime_us"), open(cpu, "cpu.rt_period_us"), open(ua, "cpuacct.usage_percpu")
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return r, nil
}

// read returns f's content from its start.
func (r *RTReader) read(f *os.File) (string, error) {
	n, err := f.ReadAt(r.buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("cgroup: read %s: %w", f.Name(), err)
	}
	return strings.TrimSpace(string(r.buf[:n])), nil
}

// Budget reads the budget (as Group.RTBudget).
func (r *RTReader) Budget() (RTBudget, error) {
	var v [2]int64
	for i, f := range []*os.File{r.rt, r.period} {
		s, err := r.read(f)
		if err != nil {
			return RTBudget{}, err
		}
		if v[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return RTBudget{}, fmt.Errorf("cgroup: parse %s: %w", f.Name(), err)
		}
	}
	return rtBudgetOf(v[0], v[1]), nil
}

// UsagePerCPU reads the per-CPU use (as Group.CPUUsagePerCPU) into dst's
// storage when it has room.
func (r *RTReader) UsagePerCPU(dst []uint64) ([]uint64, error) {
	s, err := r.read(r.usage)
	if err != nil {
		return nil, err
	}
	return appendUints(dst[:0], s, r.usage.Name())
}

// Close closes the files.
func (r *RTReader) Close() {
	for _, f := range []*os.File{r.rt, r.period, r.usage} {
		if f != nil {
			f.Close()
		}
	}
}
