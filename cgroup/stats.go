package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// FullStats are a group's counters (Stats, unchanged) plus its memory
// events and the pressure (PSI) that applies to it. They are a separate
// type so that Stats stays a small comparable value for existing callers.
type FullStats struct {
	Stats
	Memory   MemoryEvents
	Pressure Pressure
}

// MemoryEvents count how often the group met its memory limits, including
// its descendants.
//
// v2: the fields of memory.events. v1 has no such file: Max is
// memory.failcnt (times usage hit memory.limit_in_bytes), OOMKill and
// UnderOOM come from memory.oom_control, and Low, High, OOM, OOMGroupKill
// stay 0.
type MemoryEvents struct {
	Low, High, Max, OOM, OOMKill, OOMGroupKill uint64
	UnderOOM                                   bool // v1 only: the group is in OOM now
}

// PSIScope says whose pressure a Pressure describes.
type PSIScope string

const (
	PSIScopeNone  PSIScope = ""      // not available
	PSIScopeGroup PSIScope = "group" // the group's own *.pressure files (v2)
	PSIScopeHost  PSIScope = "host"  // /proc/pressure: v1, or v2 with the group's files disabled
)

// PSILine is one line of a pressure file: the share of wall time (percent)
// in which tasks stalled, averaged over 10, 60 and 300 s, and the total
// stall time.
type PSILine struct {
	Avg10, Avg60, Avg300 float64
	TotalUsec            uint64
}

// PSI is one pressure file. "some": at least one task stalled; "full": all
// non-idle tasks stalled at once (for cpu only meaningful below the root,
// Linux >= 5.13; zero otherwise).
type PSI struct {
	Some, Full PSILine
}

// Pressure is the PSI of cpu, memory and io. A nil field is not available
// (CONFIG_PSI off, psi=0 on the kernel command line, cgroup.pressure 0);
// Note says why when nothing is.
type Pressure struct {
	Scope            PSIScope
	CPU, Memory, IO  *PSI
	NotAvailableNote string
}

// psiResources are the pressure files read, in Pressure field order.
var psiResources = []string{"cpu", "memory", "io"}

// FullStats reads Stats plus memory events and pressure. On v2 the
// pressure is the group's own; on v1 (which has no per-group PSI files
// unless booted with psi_v1, not relied on) and where the group's files
// are disabled it is the host's, read through /proc/pressure, and
// Pressure.Scope says so.
func (g *Group) FullStats() (FullStats, error) {
	st, err := g.Stats()
	if err != nil {
		return FullStats{}, err
	}
	fst := FullStats{Stats: st}
	if g.m.mode == ModeV2 {
		dir := g.hdirs[0].dir
		if exists(filepath.Join(dir, "memory.events")) {
			if fst.Memory, err = readMemoryEventsV2(dir); err != nil {
				return fst, err
			}
		}
		p, err := GroupPressure(dir)
		if err != nil {
			return fst, err
		}
		if p.Scope == PSIScopeGroup {
			fst.Pressure = p
			return fst, nil
		}
	} else if d := g.dirFor("memory"); d != "" {
		if fst.Memory, err = readMemoryEventsV1(d); err != nil {
			return fst, err
		}
	}
	fst.Pressure, err = HostPressure(procfs.DefaultMountPoint)
	return fst, err
}

func readMemoryEventsV2(dir string) (MemoryEvents, error) {
	ev, err := readKV(dir, "memory.events")
	if err != nil {
		return MemoryEvents{}, err
	}
	return MemoryEvents{
		Low: ev["low"], High: ev["high"], Max: ev["max"],
		OOM: ev["oom"], OOMKill: ev["oom_kill"], OOMGroupKill: ev["oom_group_kill"],
	}, nil
}

func readMemoryEventsV1(dir string) (MemoryEvents, error) {
	var me MemoryEvents
	oom, err := readKV(dir, "memory.oom_control")
	if err != nil {
		return me, err
	}
	me.OOMKill, me.UnderOOM = oom["oom_kill"], oom["under_oom"] == 1
	if me.Max, err = readUint(dir, "memory.failcnt"); err != nil {
		return me, err
	}
	return me, nil
}

// psiUnavailable reports errors meaning "this kernel or group has no PSI":
// the file is absent (CONFIG_PSI off, psi=0 hides the cgroup files) or
// reading it is refused (psi=0 for /proc/pressure, cgroup.pressure 0).
func psiUnavailable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.EOPNOTSUPP)
}

// GroupPressure reads the v2 files cpu.pressure, memory.pressure and
// io.pressure of the cgroup directory dir. Files that are missing or
// disabled are nil; with none available Scope is PSIScopeNone. Other read
// or parse errors are returned and name the file.
func GroupPressure(dir string) (Pressure, error) {
	var p Pressure
	dst := []**PSI{&p.CPU, &p.Memory, &p.IO}
	for i, res := range psiResources {
		f := filepath.Join(dir, res+".pressure")
		b, err := os.ReadFile(f)
		if psiUnavailable(err) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("cgroup: read %s: %w", f, err)
		}
		v, err := ParsePSI(string(b))
		if err != nil {
			return p, fmt.Errorf("cgroup: parse %s: %w", f, err)
		}
		*dst[i] = &v
	}
	if p.CPU != nil || p.Memory != nil || p.IO != nil {
		p.Scope = PSIScopeGroup
	} else {
		p.NotAvailableNote = "no *.pressure files in " + dir + " (PSI disabled: psi=0 or cgroup.pressure=0)"
	}
	return p, nil
}

// HostPressure reads the host-wide PSI from procRoot/pressure/* (procRoot
// is normally /proc) with github.com/prometheus/procfs. Resources without
// PSI are nil; with none available Scope is PSIScopeNone.
func HostPressure(procRoot string) (Pressure, error) {
	var p Pressure
	pfs, err := procfs.NewFS(procRoot)
	if err != nil {
		return p, fmt.Errorf("cgroup: open proc file system %s: %w", procRoot, err)
	}
	dst := []**PSI{&p.CPU, &p.Memory, &p.IO}
	for i, res := range psiResources {
		s, err := pfs.PSIStatsForResource(res)
		if psiUnavailable(err) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("cgroup: read %s: %w", filepath.Join(procRoot, "pressure", res), err)
		}
		v := PSI{}
		if s.Some != nil {
			v.Some = PSILine{Avg10: s.Some.Avg10, Avg60: s.Some.Avg60, Avg300: s.Some.Avg300, TotalUsec: s.Some.Total}
		}
		if s.Full != nil {
			v.Full = PSILine{Avg10: s.Full.Avg10, Avg60: s.Full.Avg60, Avg300: s.Full.Avg300, TotalUsec: s.Full.Total}
		}
		*dst[i] = &v
	}
	if p.CPU != nil || p.Memory != nil || p.IO != nil {
		p.Scope = PSIScopeHost
	} else {
		p.NotAvailableNote = "no " + filepath.Join(procRoot, "pressure") + " (kernel without CONFIG_PSI, or booted with psi=0)"
	}
	return p, nil
}

// ParsePSI parses the content of a pressure file:
//
//	some avg10=0.12 avg60=0.05 avg300=0.01 total=123456
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// Unknown lines and keys are skipped (the kernel may add some); a line
// without all four known keys is an error.
func ParsePSI(s string) (PSI, error) {
	var p PSI
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var dst *PSILine
		switch fields[0] {
		case "some":
			dst = &p.Some
		case "full":
			dst = &p.Full
		default:
			continue
		}
		seen := 0
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return p, fmt.Errorf("bad field %q in %q", kv, sc.Text())
			}
			var err error
			switch k {
			case "avg10":
				dst.Avg10, err = strconv.ParseFloat(v, 64)
			case "avg60":
				dst.Avg60, err = strconv.ParseFloat(v, 64)
			case "avg300":
				dst.Avg300, err = strconv.ParseFloat(v, 64)
			case "total":
				dst.TotalUsec, err = strconv.ParseUint(v, 10, 64)
			default:
				continue
			}
			if err != nil {
				return p, fmt.Errorf("bad %s in %q: %w", k, sc.Text(), err)
			}
			seen++
		}
		if seen != 4 {
			return p, fmt.Errorf("incomplete line %q", sc.Text())
		}
	}
	return p, sc.Err()
}
