package realtime

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuCgroup is where a process sits for the cpu controller.
type cpuCgroup struct {
	v2         bool   // the cpu controller is (or would be) on the unified hierarchy
	rel        string // cgroup path from /proc/PID/cgroup, "" when unknown
	mount      string // mount point of that hierarchy, "" when not found
	dir        string // absolute directory of the group, "" when unknown
	cpuEnabled bool   // v2: "cpu" is in the group's cgroup.controllers
}

// cpuCgroupOf finds pid's cpu cgroup ("self" for the caller). Unknown parts
// stay empty: the caller only uses this to explain a refusal.
func cpuCgroupOf(pid string) cpuCgroup {
	var cg cpuCgroup
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		return cg
	}
	unified := ""
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "cpu") {
			cg.rel = parts[2]
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if cg.rel == "" {
		cg.v2, cg.rel = true, unified
	}
	if cg.rel == "" {
		return cg
	}
	root, mount := cgroupMount(string(mi), cg.v2)
	if mount == "" {
		return cg
	}
	cg.mount = mount
	rel := cg.rel
	if root != "/" {
		rel = strings.TrimPrefix(rel, root) // namespaced mount: its root is a subgroup
	}
	cg.dir = filepath.Join(mount, rel)
	if cg.v2 {
		if c, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.controllers")); err == nil {
			cg.cpuEnabled = slices.Contains(strings.Fields(string(c)), "cpu")
		}
	}
	return cg
}

// cgroupMount returns the root and mount point of the hierarchy carrying
// the cpu controller (v1) or of the unified hierarchy (v2), from mountinfo.
func cgroupMount(mountinfo string, v2 bool) (root, mount string) {
	for _, l := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case v2 && g[0] == "cgroup2":
		case !v2 && g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "cpu"):
		default:
			continue
		}
		return unescapeMount(f[3]), unescapeMount(f[4])
	}
	return "", ""
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline, backslash.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// rtGroupSched reports whether the kernel has RT group scheduling, from
// /proc/config.gz or /boot/config-<release>; known is false when neither
// can be read. On v1 the presence of cpu.rt_runtime_us says it directly.
func rtGroupSched() (on, known bool) {
	cfg := kernelConfig()
	if cfg == nil {
		return false, false
	}
	if !bytes.Contains(cfg, []byte("\nCONFIG_RT_GROUP_SCHED=y")) {
		return false, true
	}
	// Linux >= 6.15 can build it disabled by default (rt_group_sched=1 enables).
	if bytes.Contains(cfg, []byte("\nCONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y")) {
		cmd, _ := os.ReadFile("/proc/cmdline")
		return slices.Contains(strings.Fields(string(cmd)), "rt_group_sched=1"), true
	}
	cmd, _ := os.ReadFile("/proc/cmdline")
	if slices.Contains(strings.Fields(string(cmd)), "rt_group_sched=0") {
		return false, true
	}
	return true, true
}

func kernelConfig() []byte {
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		if z, err := gzip.NewReader(f); err == nil {
			if b, err := io.ReadAll(z); err == nil {
				return append([]byte("\n"), b...)
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		rel := string(bytes.TrimRight(u.Release[:], "\x00"))
		if b, err := os.ReadFile("/boot/config-" + rel); err == nil {
			return append([]byte("\n"), b...)
		}
	}
	return nil
}
