package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	cgroups "github.com/containerd/cgroups/v3"
)

// v1Controllers are the v1 controllers Vigil uses, in the order their
// hierarchies are listed. Other mounted hierarchies (devices, blkio,
// name=systemd, ...) are never touched.
var v1Controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"}

// v2Controllers are the v2 controllers Vigil enables for its groups.
var v2Controllers = []string{"cpu", "cpuset", "memory", "pids", "io"}

// unifiedKey is the Dirs() key of the single v2 hierarchy.
const unifiedKey = "unified"

// hierarchy is one mounted cgroup hierarchy Vigil writes into.
type hierarchy struct {
	ctrls []string // v1 controllers of this mount that Vigil uses; v2: ["unified"]
	mount string   // mount point, e.g. /sys/fs/cgroup/memory
	own   string   // the cgroup Vigil was started in, relative to the mount ("/..." form)
}

// name is the hierarchy's display name, e.g. "cpu,cpuacct".
func (h *hierarchy) name() string { return strings.Join(h.ctrls, ",") }

// has reports whether the hierarchy carries controller c.
func (h *hierarchy) has(c string) bool { return slices.Contains(h.ctrls, c) }

// ownDir is the absolute directory of the own cgroup in this hierarchy.
func (h *hierarchy) ownDir() string { return filepath.Join(h.mount, h.own) }

// sysEnv is what Open reads from the host; tests substitute a fake root.
type sysEnv struct {
	root       string // cgroup mount root, /sys/fs/cgroup
	mode       Mode
	selfCgroup string // content of /proc/self/cgroup
	mountinfo  string // content of /proc/self/mountinfo; "" = derive mounts from root's subdirectories
}

// hostEnv reads the real host. With a non-default root (a test hook) the
// mode is taken from marker files and mounts from root's subdirectories.
func hostEnv(root string) (sysEnv, error) {
	env := sysEnv{root: root}
	sc, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return env, fmt.Errorf("cgroup: read /proc/self/cgroup: %w", err)
	}
	env.selfCgroup = string(sc)
	if root == "" {
		env.root = "/sys/fs/cgroup"
		switch cgroups.Mode() {
		case cgroups.Legacy:
			env.mode = ModeV1
		case cgroups.Hybrid:
			env.mode = ModeHybrid
		case cgroups.Unified:
			env.mode = ModeV2
		default:
			return env, fmt.Errorf("cgroup: no cgroup file system mounted at /sys/fs/cgroup: %w", ErrNotSupported)
		}
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return env, fmt.Errorf("cgroup: read /proc/self/mountinfo: %w", err)
		}
		env.mountinfo = string(mi)
		return env, nil
	}
	env.mode = modeFromFiles(root)
	return env, nil
}

// modeFromFiles detects the mode of a (possibly fake) root by its files,
// the way the kernel lays them out: cgroup.controllers only exists on v2.
func modeFromFiles(root string) Mode {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return ModeV2
	}
	if _, err := os.Stat(filepath.Join(root, "unified", "cgroup.controllers")); err == nil {
		return ModeHybrid
	}
	return ModeV1
}

// mountEntry is one cgroup mount below the root.
type mountEntry struct {
	point string   // mount point
	root  string   // the cgroup path mounted there ("/" unless in a container without cgroupns)
	opts  []string // v1 super options (controllers, name=...); nil for cgroup2
	v2    bool
}

// mounts lists the cgroup mounts of env, from mountinfo or, for a fake
// root, from its subdirectories (each named after its controllers).
func (env sysEnv) mounts() ([]mountEntry, error) {
	if env.mountinfo == "" {
		if env.mode == ModeV2 {
			return []mountEntry{{point: env.root, root: "/", v2: true}}, nil
		}
		des, err := os.ReadDir(env.root)
		if err != nil {
			return nil, fmt.Errorf("cgroup: read %s: %w", env.root, err)
		}
		var out []mountEntry
		for _, de := range des {
			if !de.IsDir() {
				continue
			}
			p := filepath.Join(env.root, de.Name())
			if de.Name() == "unified" {
				out = append(out, mountEntry{point: p, root: "/", v2: true})
				continue
			}
			out = append(out, mountEntry{point: p, root: "/", opts: strings.Split(de.Name(), ",")})
		}
		return out, nil
	}
	var out []mountEntry
	s := bufio.NewScanner(strings.NewReader(env.mountinfo))
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		point := unescapeMount(pf[4])
		if point != env.root && !strings.HasPrefix(point, env.root+"/") {
			continue
		}
		switch qf[0] {
		case "cgroup2":
			out = append(out, mountEntry{point: point, root: unescapeMount(pf[3]), v2: true})
		case "cgroup":
			out = append(out, mountEntry{point: point, root: unescapeMount(pf[3]), opts: strings.Split(qf[2], ",")})
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("cgroup: parse /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline and backslash.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// relToMount turns a path from /proc/self/cgroup into a path relative to
// a mount whose root is mroot (they differ inside containers without a
// cgroup namespace).
func relToMount(p, mroot string) (string, error) {
	p, mroot = path.Clean("/"+p), path.Clean("/"+mroot)
	if mroot == "/" {
		return p, nil
	}
	if p == mroot {
		return "/", nil
	}
	if strings.HasPrefix(p, mroot+"/") {
		return strings.TrimPrefix(p, mroot), nil
	}
	return "", fmt.Errorf("own cgroup %s is outside the mounted cgroup %s", p, mroot)
}

// hierarchies finds the hierarchies Vigil uses and its own cgroup in each.
func (env sysEnv) hierarchies() ([]*hierarchy, error) {
	legacy, unified, err := cgroups.ParseCgroupFromReaderUnified(strings.NewReader(env.selfCgroup))
	if err != nil {
		return nil, fmt.Errorf("cgroup: parse /proc/self/cgroup: %w", err)
	}
	ms, err := env.mounts()
	if err != nil {
		return nil, err
	}
	if env.mode == ModeV2 {
		for _, m := range ms {
			if m.v2 && m.point == env.root {
				own, err := relToMount(unified, m.root)
				if err != nil {
					return nil, fmt.Errorf("cgroup: %s: %w", m.point, err)
				}
				return []*hierarchy{{ctrls: []string{unifiedKey}, mount: m.point, own: own}}, nil
			}
		}
		return nil, fmt.Errorf("cgroup: no cgroup2 mount at %s: %w", env.root, ErrNotSupported)
	}
	// v1 and hybrid: one hierarchy per mount carrying a controller we use.
	// Hybrid's unified mount carries no controllers and is not used.
	var out []*hierarchy
	byPoint := map[string]*hierarchy{}
	for _, c := range v1Controllers {
		var m *mountEntry
		for i := range ms {
			if !ms[i].v2 && slices.Contains(ms[i].opts, c) {
				m = &ms[i]
				break
			}
		}
		if m == nil {
			continue // not mounted on this host
		}
		if h, ok := byPoint[m.point]; ok {
			h.ctrls = append(h.ctrls, c)
			continue
		}
		p, ok := legacy[c]
		if !ok {
			continue // mounted, but this process is not listed in it (foreign mount)
		}
		own, err := relToMount(p, m.root)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %s: %w", m.point, err)
		}
		h := &hierarchy{ctrls: []string{c}, mount: m.point, own: own}
		byPoint[m.point] = h
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cgroup: none of %s mounted under %s: %w", strings.Join(v1Controllers, ", "), env.root, ErrNotSupported)
	}
	return out, nil
}

// chooseSubtree applies the rule that a hierarchy root is never written:
// with no subtree configured and any own cgroup at "/", use "vigil".
func chooseSubtree(subtree string, hs []*hierarchy) (string, error) {
	if subtree != "" {
		if err := checkRel(subtree); err != nil {
			return "", fmt.Errorf("cgroup: subtree %q: %w", subtree, err)
		}
		return path.Clean(subtree), nil
	}
	for _, h := range hs {
		if h.own == "/" {
			return "vigil", nil
		}
	}
	return "", nil
}

// checkRel rejects paths that are empty, absolute or leave the tree.
func checkRel(rel string) error {
	if rel == "" {
		return fmt.Errorf("empty path")
	}
	if strings.HasPrefix(rel, "/") {
		return fmt.Errorf("absolute path")
	}
	c := path.Clean(rel)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Errorf("path leaves the tree")
	}
	for _, e := range strings.Split(c, "/") {
		if strings.HasPrefix(e, "cgroup.") || strings.ContainsAny(e, "\x00\n") {
			return fmt.Errorf("bad group name %q", e)
		}
	}
	return nil
}
