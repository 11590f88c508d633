package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cfsPeriodUs is the CFS period Vigil uses for CPU caps (the kernel default).
const cfsPeriodUs = 100000

// Resources are the settings of one group. Zero values leave the kernel's
// (inherited) setting alone.
type Resources struct {
	CPUWeight   uint64 // v2 cpu.weight (1..10000), v1 cpu.shares = weight*1024/100 clamped to [2, 262144]
	IOWeight    uint64 // v2 io.weight "default N" (1..10000; effective with BFQ or io.cost); not used on v1
	CPUs        string // cpuset.cpus, "" = leave (inherit)
	CPUMax      string // percent of one CPU, "150%" -> quota 150000 per 100000 period; "max" = no cap
	MemoryMin   int64  // v2 memory.min and memory.low; not available on v1
	MemoryMax   int64  // v2 memory.max, v1 memory.limit_in_bytes
	PidsMax     int64  // pids.max
	RTRuntimeUs int64  // v1 cpu.rt_runtime_us (CONFIG_RT_GROUP_SCHED); not available on v2
}

// Dropped is what prev sets and next does not: the settings a new
// configuration removed, for Reset.
func Dropped(prev, next Resources) Resources {
	var d Resources
	if prev.CPUs != "" && next.CPUs == "" {
		d.CPUs = prev.CPUs
	}
	if prev.CPUWeight != 0 && next.CPUWeight == 0 {
		d.CPUWeight = prev.CPUWeight
	}
	if prev.IOWeight != 0 && next.IOWeight == 0 {
		d.IOWeight = prev.IOWeight
	}
	if prev.CPUMax != "" && next.CPUMax == "" {
		d.CPUMax = prev.CPUMax
	}
	if prev.MemoryMin != 0 && next.MemoryMin == 0 {
		d.MemoryMin = prev.MemoryMin
	}
	if prev.MemoryMax != 0 && next.MemoryMax == 0 {
		d.MemoryMax = prev.MemoryMax
	}
	if prev.PidsMax != 0 && next.PidsMax == 0 {
		d.PidsMax = prev.PidsMax
	}
	if prev.RTRuntimeUs != 0 && next.RTRuntimeUs == 0 {
		d.RTRuntimeUs = prev.RTRuntimeUs
	}
	return d
}

// Merge is base with each setting it leaves zero taken from over.
func Merge(base, over Resources) Resources {
	if base.CPUs == "" {
		base.CPUs = over.CPUs
	}
	if base.CPUWeight == 0 {
		base.CPUWeight = over.CPUWeight
	}
	if base.IOWeight == 0 {
		base.IOWeight = over.IOWeight
	}
	if base.CPUMax == "" {
		base.CPUMax = over.CPUMax
	}
	if base.MemoryMin == 0 {
		base.MemoryMin = over.MemoryMin
	}
	if base.MemoryMax == 0 {
		base.MemoryMax = over.MemoryMax
	}
	if base.PidsMax == 0 {
		base.PidsMax = over.PidsMax
	}
	if base.RTRuntimeUs == 0 {
		base.RTRuntimeUs = over.RTRuntimeUs
	}
	return base
}

// Fields names the settings r sets, as the configuration spells them.
func (r Resources) Fields() []string {
	var out []string
	add := func(set bool, name string) {
		if set {
			out = append(out, name)
		}
	}
	add(r.CPUs != "", "cpus")
	add(r.CPUWeight != 0, "cpu_weight")
	add(r.IOWeight != 0, "io_weight")
	add(r.CPUMax != "", "cpu_max")
	add(r.MemoryMin != 0, "memory_min")
	add(r.MemoryMax != 0, "memory_max")
	add(r.PidsMax != 0, "pids_max")
	add(r.RTRuntimeUs != 0, "rt_runtime_us")
	return out
}

// setting is one interface file write of Apply.
type setting struct {
	ctrl, file, val string
	budget          bool // raise the ancestors below the own cgroup to at least the children's sum
}

// cpuShares maps a v2 weight (default 100) to v1 shares (default 1024).
func cpuShares(weight uint64) uint64 {
	if weight > math.MaxUint64/1024 {
		return 262144
	}
	return min(max(weight*1024/100, 2), 262144)
}

// parseCPUMax turns "150%" into a quota in µs per cfsPeriodUs; "max" is -1.
func parseCPUMax(s string) (int64, error) {
	if s == "max" {
		return -1, nil
	}
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("cgroup: cpu max %q: want a percentage of one CPU, e.g. 150%%", s)
	}
	pct, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(pct) || math.IsInf(pct, 0) {
		return 0, fmt.Errorf("cgroup: cpu max %q: not a number", s)
	}
	quota := int64(math.Round(pct * cfsPeriodUs / 100))
	if quota < 1000 || pct > 1e6 {
		return 0, fmt.Errorf("cgroup: cpu max %q: out of range (1%% .. 1000000%%)", s)
	}
	return quota, nil
}

// settings translates r into interface file writes for the group's mode,
// and lists what this mode cannot express. Order matters: cpuset first (so
// the group may hold its cpus), CFS period before quota, budgets bottom-up.
// With reset, each field r sets is written back to what a new group has
// (r's values only say which fields).
func (g *Group) settings(r Resources, reset bool) (ws []setting, notApplied []string, err error) {
	v2 := g.m.mode == ModeV2
	if r.MemoryMin < 0 || r.MemoryMax < 0 || r.PidsMax < 0 || r.RTRuntimeUs < 0 {
		return nil, nil, fmt.Errorf("cgroup: %s: negative resource value in %+v", g.Path(), r)
	}
	if reset {
		r = Resources{
			CPUs:      pick(r.CPUs != "", cpusInherit, ""),
			CPUWeight: pick[uint64](r.CPUWeight != 0, 100, 0),
			IOWeight:  pick[uint64](r.IOWeight != 0, 100, 0),
			CPUMax:    pick(r.CPUMax != "", "max", ""),
			// The limits' defaults ("max") have no number: resetLimit.
			MemoryMin: pick[int64](r.MemoryMin != 0, resetZero, 0), MemoryMax: pick[int64](r.MemoryMax != 0, resetLimit, 0),
			PidsMax: pick[int64](r.PidsMax != 0, resetLimit, 0), RTRuntimeUs: pick[int64](r.RTRuntimeUs != 0, resetZero, 0),
		}
	}
	if r.CPUs != "" {
		ws = append(ws, setting{ctrl: "cpuset", file: "cpuset.cpus", val: r.CPUs})
	}
	if r.CPUWeight != 0 {
		if v2 {
			w := min(max(r.CPUWeight, 1), 10000)
			if w != r.CPUWeight {
				notApplied = append(notApplied, fmt.Sprintf("cpu.weight: %d out of range, %d used", r.CPUWeight, w))
			}
			ws = append(ws, setting{ctrl: "cpu", file: "cpu.weight", val: strconv.FormatUint(w, 10)})
		} else {
			ws = append(ws, setting{ctrl: "cpu", file: "cpu.shares", val: strconv.FormatUint(cpuShares(r.CPUWeight), 10)})
		}
	}
	if r.CPUMax != "" {
		quota, err := parseCPUMax(r.CPUMax)
		if err != nil {
			return nil, nil, err
		}
		period := strconv.Itoa(cfsPeriodUs)
		if v2 {
			q := "max"
			if quota > 0 {
				q = strconv.FormatInt(quota, 10)
			}
			ws = append(ws, setting{ctrl: "cpu", file: "cpu.max", val: q + " " + period})
		} else if reset {
			ws = append(ws, setting{ctrl: "cpu", file: "cpu.cfs_quota_us", val: "-1"})
		} else {
			ws = append(ws,
				setting{ctrl: "cpu", file: "cpu.cfs_period_us", val: period},
				setting{ctrl: "cpu", file: "cpu.cfs_quota_us", val: strconv.FormatInt(quota, 10)})
		}
	}
	if r.IOWeight != 0 {
		if v2 {
			w := min(max(r.IOWeight, 1), 10000)
			ws = append(ws, setting{ctrl: "io", file: "io.weight", val: "default " + strconv.FormatUint(w, 10)})
		} else if !reset {
			// blkio.weight needs the blkio hierarchy (which Vigil does not
			// manage: one more migration per spawn) and the CFQ/BFQ scheduler.
			notApplied = append(notApplied, "io.weight: not used on cgroup v1")
		}
	}
	if r.MemoryMin != 0 {
		if v2 {
			v := resetVal(r.MemoryMin, "0")
			ws = append(ws,
				setting{ctrl: "memory", file: "memory.min", val: v, budget: !reset},
				setting{ctrl: "memory", file: "memory.low", val: v, budget: !reset})
		} else if !reset {
			notApplied = append(notApplied, "memory.min: not available on cgroup v1")
		}
	}
	if r.MemoryMax != 0 {
		f, unlimited := "memory.max", "max"
		if !v2 {
			f, unlimited = "memory.limit_in_bytes", "-1"
		}
		ws = append(ws, setting{ctrl: "memory", file: f, val: resetVal(r.MemoryMax, unlimited)})
	}
	if r.PidsMax != 0 {
		ws = append(ws, setting{ctrl: "pids", file: "pids.max", val: resetVal(r.PidsMax, "max")})
	}
	if r.RTRuntimeUs != 0 {
		if v2 {
			if !reset {
				notApplied = append(notApplied, "cpu.rt_runtime_us: not available on cgroup v2")
			}
		} else {
			ws = append(ws, setting{ctrl: "cpu", file: "cpu.rt_runtime_us", val: resetVal(r.RTRuntimeUs, "0"), budget: !reset})
		}
	}
	return ws, notApplied, nil
}

// Markers settings uses for a reset: no real value is negative (settings
// refuses those), so these cannot be asked for.
const (
	resetZero  int64 = -1 // write the "none" a new group has: 0
	resetLimit int64 = -2 // write the "no limit" a new group has: max (v1: -1)
	// cpusInherit: the parent's cpus (apply says how, per mode).
	cpusInherit = "\x00inherit"
)

// resetVal is v as the interface file wants it, or def for a reset marker.
func resetVal(v int64, def string) string {
	if v == resetZero || v == resetLimit {
		return def
	}
	return strconv.FormatInt(v, 10)
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}

// Apply writes r. Settings this host cannot express (a controller not
// mounted, memory.min on v1, cpu.rt_runtime_us without
// CONFIG_RT_GROUP_SCHED) are returned in notApplied; err is for real
// failures and names the file.
func (g *Group) Apply(r Resources) (notApplied []string, err error) {
	return g.apply(r, false)
}

// Reset writes back, for every field r sets (whatever its value), what a
// new group has: no limit, no protection, the default weight, the
// parent's cpus. Apply's zero values leave a running value alone, so a
// setting dropped from the configuration needs this to end: without it a
// reload that removed apps.memory_max, or control.cpus, kept the old
// value in force until the next start.
func (g *Group) Reset(r Resources) (notApplied []string, err error) {
	return g.apply(r, true)
}

func (g *Group) apply(r Resources, reset bool) (notApplied []string, err error) {
	ws, notApplied, err := g.settings(r, reset)
	if err != nil || len(ws) == 0 {
		return notApplied, err
	}
	var enableErr error
	var avail []string
	if g.m.mode == ModeV2 {
		if g.rel != "" {
			enableErr = g.m.enableControllers(filepath.Dir(g.hdirs[0].dir))
		}
		s, err := readFile(g.hdirs[0].h.ownDir(), "cgroup.controllers")
		if err != nil {
			return notApplied, err
		}
		avail = strings.Fields(s)
	}
	g.m.mu.Lock()
	defer g.m.mu.Unlock()
	for _, w := range ws {
		hd, ok := g.hdirFor(w.ctrl)
		if !ok || (g.m.mode == ModeV2 && !slices.Contains(avail, w.ctrl)) {
			notApplied = append(notApplied, fmt.Sprintf("%s: %s controller not available", w.file, w.ctrl))
			continue
		}
		if !exists(filepath.Join(hd.dir, w.file)) {
			if g.m.mode == ModeV2 {
				return notApplied, fmt.Errorf("cgroup: %s: %s controller not enabled for %s: %w",
					w.file, w.ctrl, hd.dir, errors.Join(enableErr, os.ErrNotExist))
			}
			notApplied = append(notApplied, fmt.Sprintf("%s: not available on this kernel", w.file))
			continue
		}
		if w.budget {
			if err := g.raiseAncestors(hd, w.file, w.val); err != nil {
				return notApplied, err
			}
		}
		write := writeFile
		switch {
		case w.file == "cpuset.cpus" && w.val == cpusInherit && g.m.mode == ModeV2:
			// Not empty (the parent's, inherited): the kernel refuses to
			// empty the cpus of a group with tasks (ENOSPC), so the
			// parent's effective cpus, written out.
			write = func(dir, file, _ string) error {
				p, err := readFile(filepath.Dir(dir), "cpuset.cpus.effective")
				if err != nil {
					return err
				}
				return writeFile(dir, file, strings.TrimSpace(p))
			}
		case w.file == "cpuset.cpus" && w.val == cpusInherit:
			// v1 has no inheritance: the parent's list, as a new group
			// copies it.
			write = func(dir, _, _ string) error {
				p, err := readFile(filepath.Dir(dir), "cpuset.cpus")
				if err != nil {
					return err
				}
				return writeV1CPUs(dir, strings.TrimSpace(p))
			}
		case w.file == "cpuset.cpus" && g.m.mode != ModeV2:
			write = func(dir, _, val string) error { return writeV1CPUs(dir, val) }
		}
		if err := write(hd.dir, w.file, w.val); err != nil {
			if w.budget {
				err = explainBudget(hd.dir, w.file, err)
			}
			return notApplied, err
		}
	}
	return notApplied, nil
}

// explainBudget adds to a refused budget write (EINVAL: the parent cannot
// cover it) what the parent grants and which of dir's siblings hold the
// rest, so that an operator sees at once that, say, a stale tree left by a
// killed run keeps the realtime budget.
func explainBudget(dir, file string, err error) error {
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	parent := filepath.Dir(dir)
	pv, unl, perr := readBudget(parent, file)
	if perr != nil || unl {
		return err
	}
	others, cerr := childBudgets(parent, dir, file)
	if cerr != nil {
		return err
	}
	var held int64
	var holders []string
	for _, h := range others {
		held += h.v
		holders = append(holders, fmt.Sprintf("%s=%d", h.name, h.v))
	}
	if len(holders) == 0 {
		return fmt.Errorf("%w (the parent %s grants %d in all)", err, parent, pv)
	}
	return fmt.Errorf("%w (the parent %s grants %d, its other children already hold %d: %s)",
		err, parent, pv, held, strings.Join(holders, ", "))
}

// hdirFor returns the group's directory in the hierarchy carrying ctrl.
func (g *Group) hdirFor(ctrl string) (hdir, bool) {
	for _, hd := range g.hdirs {
		if g.m.mode == ModeV2 || hd.h.has(ctrl) {
			return hd, true
		}
	}
	return hdir{}, false
}

// readBudget reads a budget file; "max" and negative values (-1 for
// unlimited RT runtime) read as unlimited.
func readBudget(dir, file string) (v int64, unlimited bool, err error) {
	s, err := readFile(dir, file)
	if err != nil {
		return 0, false, err
	}
	if s == "max" {
		return 0, true, nil
	}
	v, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("cgroup: parse %s: %w", filepath.Join(dir, file), err)
	}
	return v, v < 0, nil
}

// childBudget is one child group's share of its parent's budget.
type childBudget struct {
	name string
	v    int64
}

// childBudgets lists the children of dir other than except that hold a
// (limited, non-zero) budget in file; a child without the file holds none.
func childBudgets(dir, except, file string) ([]childBudget, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cgroup: read %s: %w", dir, err)
	}
	var out []childBudget
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		if !de.IsDir() || p == except {
			continue
		}
		v, unl, err := readBudget(p, file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !unl && v != 0 {
			out = append(out, childBudget{de.Name(), v})
		}
	}
	return out, nil
}

// raiseAncestors makes every ancestor of hd.dir below the own cgroup hold
// at least the sum of its children's file values, counting hd.dir at val:
// the kernel refuses a child cpu.rt_runtime_us its parent cannot cover, and
// caps a child's effective memory.min/low at its parent's. Ancestors are
// only raised, never lowered, and written top-down. The own cgroup is not
// written: if it is too small, the group's own write fails and says so.
func (g *Group) raiseAncestors(hd hdir, file, val string) error {
	want, err := strconv.ParseInt(val, 10, 64)
	if err != nil {
		return fmt.Errorf("cgroup: %s: bad value %q: %w", file, val, err)
	}
	chain := g.chain(hd)
	if len(chain) < 2 {
		return nil
	}
	type raise struct {
		dir string
		val int64
	}
	var raises []raise
	need := want
	for i := len(chain) - 2; i >= 0; i-- {
		dir, child := chain[i], chain[i+1]
		cur, unlimited, err := readBudget(dir, file)
		if err != nil {
			return err
		}
		if unlimited {
			break // covers anything below it
		}
		held, err := childBudgets(dir, child, file)
		if err != nil {
			return err
		}
		sum := need
		for _, h := range held {
			sum += h.v
		}
		if sum <= cur {
			break // this and every higher ancestor already cover it
		}
		raises = append(raises, raise{dir, sum})
		need = sum
	}
	for i := len(raises) - 1; i >= 0; i-- {
		if err := writeFile(raises[i].dir, file, strconv.FormatInt(raises[i].val, 10)); err != nil {
			return explainBudget(raises[i].dir, file, err)
		}
	}
	return nil
}

// Stats are a group's counters, including its descendants.
type Stats struct {
	CPUUsageUsec, NrPeriods, NrThrottled, ThrottledUsec uint64
	MemoryCurrent, MemoryMax                            uint64 // MemoryMax 0 = no limit
	OOMKills                                            uint64
	PidsCurrent                                         uint64
}

// v1Unlimited is the smallest value v1 memory.limit_in_bytes reports for "no limit".
const v1Unlimited = 1 << 62

// Stats reads the group's counters. Counters of controllers the host
// lacks stay 0.
func (g *Group) Stats() (Stats, error) {
	var st Stats
	var err error
	if g.m.mode == ModeV2 {
		err = g.statsV2(&st)
	} else {
		err = g.statsV1(&st)
	}
	return st, err
}

func (g *Group) statsV2(st *Stats) error {
	dir := g.hdirs[0].dir
	cpu, err := readKV(dir, "cpu.stat") // core file: always there
	if err != nil {
		return err
	}
	st.CPUUsageUsec, st.NrPeriods, st.NrThrottled, st.ThrottledUsec =
		cpu["usage_usec"], cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_usec"]
	if exists(filepath.Join(dir, "memory.current")) {
		if st.MemoryCurrent, err = readUint(dir, "memory.current"); err != nil {
			return err
		}
		if st.MemoryMax, err = readUint(dir, "memory.max"); err != nil {
			return err
		}
		ev, err := readKV(dir, "memory.events")
		if err != nil {
			return err
		}
		st.OOMKills = ev["oom_kill"]
	}
	if exists(filepath.Join(dir, "pids.current")) {
		if st.PidsCurrent, err = readUint(dir, "pids.current"); err != nil {
			return err
		}
	}
	return nil
}

func (g *Group) statsV1(st *Stats) error {
	var err error
	if d := g.dirFor("cpuacct"); d != "" {
		ns, err := readUint(d, "cpuacct.usage")
		if err != nil {
			return err
		}
		st.CPUUsageUsec = ns / 1000
	}
	if d := g.dirFor("cpu"); d != "" {
		cpu, err := readKV(d, "cpu.stat")
		if err != nil {
			return err
		}
		st.NrPeriods, st.NrThrottled, st.ThrottledUsec = cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_time"]/1000
	}
	if d := g.dirFor("memory"); d != "" {
		if st.MemoryCurrent, err = readUint(d, "memory.usage_in_bytes"); err != nil {
			return err
		}
		if st.MemoryMax, err = readUint(d, "memory.limit_in_bytes"); err != nil {
			return err
		}
		if st.MemoryMax >= v1Unlimited {
			st.MemoryMax = 0
		}
		oom, err := readKV(d, "memory.oom_control")
		if err != nil {
			return err
		}
		st.OOMKills = oom["oom_kill"]
	}
	if d := g.dirFor("pids"); d != "" {
		if st.PidsCurrent, err = readUint(d, "pids.current"); err != nil {
			return err
		}
	}
	return nil
}
