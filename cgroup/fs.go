package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// writeFile writes val to the cgroup interface file dir/name in one write
// (the kernel parses each write on its own).
func writeFile(dir, name, val string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroup: open %s: %w", p, err)
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", val, p, err)
	}
	return nil
}

// readFile returns dir/name with surrounding white space trimmed.
func readFile(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("cgroup: read %s: %w", p, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readUint reads a single unsigned number; "max" reads as 0 (no limit).
func readUint(dir, name string) (uint64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: parse %s: %w", filepath.Join(dir, name), err)
	}
	return v, nil
}

// readKV reads a "key value" per line file (cpu.stat, memory.events, ...).
func readKV(dir, name string) (map[string]uint64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue // e.g. non-numeric fields; not ours to judge
		}
		out[k] = n
	}
	return out, nil
}

// exists reports whether p exists (errors other than "not found" count as existing,
// so callers go on and report them when they use the path).
func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// readProcs reads the pids in dir/cgroup.procs; a missing group has none.
func readProcs(dir string) ([]int, error) {
	p := filepath.Join(dir, "cgroup.procs")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup: read %s: %w", p, err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup: parse %s: %w", p, err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// subdirs lists dir and every cgroup below it, deepest first. A missing
// dir yields nothing.
func subdirs(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walk
			}
			return err
		}
		if d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cgroup: walk %s: %w", dir, err)
	}
	slices.SortStableFunc(out, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return out, nil
}

// rmdirTree removes dir and every cgroup below it, deepest first. EBUSY is
// retried for a while: a killed task leaves its cgroup asynchronously.
func rmdirTree(dir string) error {
	dirs, err := subdirs(dir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		releaseRTBudget(d)
		deadline := time.Now().Add(2 * time.Second)
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("cgroup: rmdir %s: %w", d, err)
		}
	}
	return nil
}

// releaseRTBudget sets a v1 group's cpu.rt_runtime_us to 0 before it is
// removed (dirs go deepest first, so its children hold none by then). The
// kernel frees a removed group's task_group only once the last reference
// to it is gone: killed tasks not yet reaped (orphans of a SIGKILLed
// supervisor) keep it, and with it its budget, counted against its
// parent's for an unbounded time, so the next run's identical tree is
// refused (EINVAL) and its control plane stays SCHED_OTHER. Best effort:
// a host without the file or a group still holding RT tasks (EBUSY)
// changes nothing; the caller's retry covers what is left.
func releaseRTBudget(dir string) {
	v, err := readFile(dir, "cpu.rt_runtime_us")
	if err != nil || v == "0" {
		return
	}
	_ = writeFile(dir, "cpu.rt_runtime_us", "0")
}
