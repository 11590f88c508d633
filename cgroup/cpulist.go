package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ParseCPUs turns a cpu list ("0-2,5", as in cpuset.cpus) into the set of
// cpus.
func ParseCPUs(list string) (map[int]bool, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(strings.TrimSpace(list), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("cpu list %q: bad range %q", list, part)
			}
		}
		for c := a; c <= b; c++ {
			set[c] = true
		}
	}
	return set, nil
}

// FormatCPUs writes a set back as a cpu list, ascending, with ranges.
func FormatCPUs(set map[int]bool) string {
	cpus := make([]int, 0, len(set))
	for c, in := range set {
		if in {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		} else {
			parts = append(parts, strconv.Itoa(cpus[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func sameCPUs(a, b map[int]bool) bool {
	return FormatCPUs(a) == FormatCPUs(b)
}

func intersect(a, b map[int]bool) map[int]bool {
	out := map[int]bool{}
	for c, in := range a {
		if in && b[c] {
			out[c] = true
		}
	}
	return out
}

// writeV1CPUs writes cpuset.cpus of the cgroup v1 group dir. There a
// group's cpus must contain each child's at every moment, or the kernel
// refuses the write (EBUSY): the supervisor's own group under control/
// exists before control.cpus is applied, so a plain write of "0" over
// "0-1" failed. So dir first widens to its old and new cpus together
// (both within its parent's, so their union is too), each child is moved
// to its cpus within val (a child that had dir's old cpus, copied from
// it when it was created, follows it to val; one left with none gets
// val), and then dir narrows to val.
func writeV1CPUs(dir, val string) error {
	want, err := ParseCPUs(val)
	if err != nil {
		return err
	}
	cur, err := readFile(dir, "cpuset.cpus")
	if err != nil {
		return err
	}
	old, err := ParseCPUs(cur)
	if err != nil {
		return err
	}
	union := map[int]bool{}
	for c := range old {
		union[c] = true
	}
	for c := range want {
		union[c] = true
	}
	if !sameCPUs(union, old) {
		if err := writeFile(dir, "cpuset.cpus", FormatCPUs(union)); err != nil {
			return err
		}
	}
	kids, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, k := range kids {
		if !k.IsDir() {
			continue
		}
		kd := filepath.Join(dir, k.Name())
		kv, err := readFile(kd, "cpuset.cpus")
		if err != nil {
			return err
		}
		ks, err := ParseCPUs(kv)
		if err != nil {
			return err
		}
		next := intersect(ks, want)
		if sameCPUs(ks, old) || len(next) == 0 {
			next = want
		}
		if !sameCPUs(next, ks) {
			if err := writeV1CPUs(kd, FormatCPUs(next)); err != nil {
				return err
			}
		}
	}
	if !sameCPUs(union, want) || sameCPUs(old, want) {
		return writeFile(dir, "cpuset.cpus", val)
	}
	return nil
}
