package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// expandCPUs turns a cpu list ("0-2,5") into the set of cpus.
func expandCPUs(list string) (map[int]bool, error) {
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

// formatCPUs writes a set back as a cpu list, ascending, with ranges.
func formatCPUs(set map[int]bool, max int) string {
	var parts []string
	for c := 0; c <= max; c++ {
		if !set[c] {
			continue
		}
		e := c
		for e+1 <= max && set[e+1] {
			e++
		}
		if e > c {
			parts = append(parts, fmt.Sprintf("%d-%d", c, e))
		} else {
			parts = append(parts, strconv.Itoa(c))
		}
		c = e
	}
	return strings.Join(parts, ",")
}

// appsCPUs is every online cpu except those reserved for the control plane,
// so applications never run on them. If the reservation would leave the
// applications no cpu at all, they share (and that is logged).
func appsCPUs(reserved string) (string, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return "", fmt.Errorf("online cpus: %w", err)
	}
	online, err := expandCPUs(string(b))
	if err != nil {
		return "", err
	}
	res, err := expandCPUs(reserved)
	if err != nil {
		return "", err
	}
	max := 0
	for c := range online {
		if c > max {
			max = c
		}
		if res[c] {
			delete(online, c)
		}
	}
	if len(online) == 0 {
		return "", fmt.Errorf("control.cpus %q leaves no cpu for the applications", reserved)
	}
	return formatCPUs(online, max), nil
}
