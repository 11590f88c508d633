// Package cgroup creates, places processes in, limits, kills and deletes
// Vigil's cgroup tree on cgroup v1, hybrid and v2 hosts.
//
// The tree lives inside the cgroup Vigil was started in ("own" cgroup; per
// hierarchy on v1, from /proc/self/cgroup):
//
//	<own>/<subtree>/control/{supervisor,locator,nodemanager}
//	<own>/<subtree>/apps/<name>
//	<own>/<subtree>/hooks
//
// Following systemd's delegation rules, the attributes of the own cgroup
// are never written, only those of groups below it; the one exception is
// adding controllers to the own cgroup's cgroup.subtree_control on v2, which
// is the delegation interface itself. A hierarchy root is never used as
// the base: with no subtree and an own cgroup at "/", the subtree is
// "vigil". Only processes inside the tree are ever moved or signalled.
//
// Mode detection and /proc/self/cgroup parsing come from
// github.com/containerd/cgroups/v3; interface files are written directly,
// one writer per group (the Manager), and every error names the file.
package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// HooksGroup is the group transition hooks run in, a sibling of control/
// and apps/: outside the control plane's reservation and realtime budget,
// and outside the applications' limits. It is a leaf (v2's
// no-internal-processes rule): the hooks themselves join it. The node
// managers of services after the first have siblings of their own,
// hooks-<service>.
const HooksGroup = "hooks"

// ErrNotSupported is returned for features the host's cgroup setup lacks.
var ErrNotSupported = errors.New("cgroup: not supported on this host")

// errHoldsCaller is returned when an operation would kill or freeze the
// calling process itself.
var errHoldsCaller = errors.New("cgroup: group holds the calling process")

// Mode is the cgroup layout of the host.
type Mode int

const (
	ModeV1     Mode = iota + 1 // v1 hierarchies only
	ModeHybrid                 // v1 controllers plus an empty v2 hierarchy at unified/ (unused)
	ModeV2                     // unified hierarchy only
)

func (m Mode) String() string {
	switch m {
	case ModeV1:
		return "v1"
	case ModeHybrid:
		return "v1 hybrid"
	case ModeV2:
		return "v2"
	}
	return "unknown(" + strconv.Itoa(int(m)) + ")"
}

// Options configure Open.
type Options struct {
	// Subtree is the directory below the own cgroup that holds the tree;
	// "" puts control/ and apps/ directly in the own cgroup unless that is a
	// hierarchy root, in which case "vigil" is used.
	Subtree string
	Logger  *slog.Logger // nil discards
	// Root is the cgroup mount root, a test hook: "" = /sys/fs/cgroup. A
	// non-default root is read as a fake tree (mode from marker files,
	// mounts from its subdirectories).
	Root string
}

// Manager owns Vigil's tree. It is safe for concurrent use; it serialises
// group creation and controller enabling so that each file has one writer.
type Manager struct {
	mode    Mode
	log     *slog.Logger
	subtree string
	hs      []*hierarchy
	mu      sync.Mutex

	noCgroupKill bool // test hook: act as on a kernel without cgroup.kill (< 5.14)
}

// Open detects the mode and own cgroups, and creates <subtree>, control/ and
// apps/. A stale tree left by a crashed run (any group below <subtree> with
// processes) is cleaned: its processes are killed and the groups removed.
func Open(opts Options) (*Manager, error) {
	env, err := hostEnv(opts.Root)
	if err != nil {
		return nil, err
	}
	return open(opts, env)
}

func open(opts Options, env sysEnv) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hs, err := env.hierarchies()
	if err != nil {
		return nil, err
	}
	subtree, err := chooseSubtree(opts.Subtree, hs)
	if err != nil {
		return nil, err
	}
	m := &Manager{mode: env.mode, log: log, subtree: subtree, hs: hs}
	if err := m.cleanStale(); err != nil {
		return nil, err
	}
	for _, rel := range []string{"control", "apps"} {
		if _, err := m.Group(rel); err != nil {
			return nil, err
		}
	}
	log.Info("cgroup: tree ready", "mode", m.mode.String(), "tree", m.Describe())
	return m, nil
}

// Mode returns the host's cgroup mode.
func (m *Manager) Mode() Mode { return m.mode }

// Describe is a one-line account of the mode and the base directory per hierarchy.
func (m *Manager) Describe() string {
	var b strings.Builder
	b.WriteString(m.mode.String())
	b.WriteString(":")
	for i, h := range m.hs {
		fmt.Fprintf(&b, " %s=%s", h.name(), m.baseDirs()[i])
	}
	return b.String()
}

// baseDirs are <own>/<subtree> per hierarchy, in m.hs order.
func (m *Manager) baseDirs() []string {
	out := make([]string, len(m.hs))
	for i, h := range m.hs {
		out[i] = filepath.Join(h.ownDir(), m.subtree)
	}
	return out
}

// groupAt builds the Group for rel without touching the file system. rel
// "" is the base itself, only valid with a subtree (it is never the own cgroup).
func (m *Manager) groupAt(rel string) *Group {
	g := &Group{m: m, rel: path.Clean("/" + rel)[1:]}
	for i, h := range m.hs {
		g.hdirs = append(g.hdirs, hdir{h: h, dir: filepath.Join(m.baseDirs()[i], g.rel)})
	}
	return g
}

// Group creates (mkdir -p) or opens the group rel below the base, e.g.
// "control/locator" or "apps/kamailio".
func (m *Manager) Group(rel string) (*Group, error) {
	if err := checkRel(rel); err != nil {
		return nil, fmt.Errorf("cgroup: group %q: %w", rel, err)
	}
	g := m.groupAt(rel)
	m.mu.Lock()
	defer m.mu.Unlock()
	// Create level by level below the own cgroup, so cpuset groups get
	// their cpus/mems before the next level is made below them.
	for _, h := range m.hs {
		dir := h.ownDir()
		for _, e := range strings.Split(path.Join(m.subtree, g.rel), "/") {
			dir = filepath.Join(dir, e)
			if err := m.mkdir(h, dir); err != nil {
				return nil, err
			}
		}
	}
	if m.mode == ModeV2 {
		// Best effort: the kernel refuses while processes sit in the own
		// cgroup (MoveSelf retries); Apply reports what stays missing.
		if err := m.enableControllersLocked(filepath.Dir(g.hdirs[0].dir)); err != nil {
			m.log.Debug("cgroup: controllers not enabled yet", "group", g.Path(), "err", err)
		}
	}
	return g, nil
}

// mkdir creates one cgroup directory and, in a cpuset hierarchy, copies
// cpuset.cpus and cpuset.mems from the parent when they are empty (v1
// refuses tasks in a cpuset group without them).
func (m *Manager) mkdir(h *hierarchy, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cgroup: mkdir %s: %w", dir, err)
	}
	if m.mode == ModeV2 || !h.has("cpuset") {
		return nil
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readFile(dir, f)
		if err != nil {
			return err
		}
		if cur != "" {
			continue
		}
		parent, err := readFile(filepath.Dir(dir), f)
		if err != nil {
			return err
		}
		if err := writeFile(dir, f, parent); err != nil {
			return err
		}
	}
	return nil
}

// enableControllers adds Vigil's v2 controllers to cgroup.subtree_control
// from the own cgroup down to dir (the parent of the groups that need them).
func (m *Manager) enableControllers(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enableControllersLocked(dir)
}

func (m *Manager) enableControllersLocked(dir string) error {
	h := m.hs[0]
	own := h.ownDir()
	rel, err := filepath.Rel(own, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("cgroup: %s is outside %s", dir, own)
	}
	levels := []string{own}
	if rel != "." {
		acc := own
		for _, e := range strings.Split(rel, "/") {
			acc = filepath.Join(acc, e)
			levels = append(levels, acc)
		}
	}
	var errs []error
	for _, l := range levels {
		// A non-root group holding processes must not get controllers: the
		// kernel refuses domain controllers (EBUSY) but accepts threaded
		// ones (cpu, cpuset, pids), which would make it a thread root and
		// its children invalid domains that no process can then join
		// (EOPNOTSUPP), not even the supervisor leaving it. Only the root
		// (the one group without cgroup.type) may hold both.
		if exists(filepath.Join(l, "cgroup.type")) {
			procs, err := readProcs(l)
			if err != nil {
				return err
			}
			if len(procs) > 0 {
				return errors.Join(append(errs, fmt.Errorf("cgroup: not enabling controllers in %s: it holds processes %v (move them into the tree first): %w",
					filepath.Join(l, "cgroup.subtree_control"), procs, unix.EBUSY))...)
			}
		}
		avail, err := readFile(l, "cgroup.controllers")
		if err != nil {
			return err
		}
		on, err := readFile(l, "cgroup.subtree_control")
		if err != nil {
			return err
		}
		for _, c := range v2Controllers {
			if !slices.Contains(strings.Fields(avail), c) || slices.Contains(strings.Fields(on), c) {
				continue
			}
			// One controller per write: one refusal (e.g. cpu with RT tasks
			// outside the root) must not block the others.
			if err := writeFile(l, "cgroup.subtree_control", "+"+c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// MoveSelf moves the calling process (all its threads) into rel. On v2 it
// then enables the controllers, which the kernel refuses while processes
// sit in the own cgroup (no-internal-processes rule).
func (m *Manager) MoveSelf(rel string) error {
	g, err := m.Group(rel)
	if err != nil {
		return err
	}
	if err := g.AddProc(os.Getpid()); err != nil {
		return err
	}
	if m.mode == ModeV2 {
		// Now the own cgroup may be empty: enable the controllers for the
		// children of control/ and apps/.
		var errs []error
		for _, rel := range []string{"control", "apps"} {
			errs = append(errs, m.enableControllers(m.groupAt(rel).hdirs[0].dir))
		}
		if err := errors.Join(errs...); err != nil {
			m.log.Warn("cgroup: enabling controllers failed after moving into the tree", "group", g.Path(), "err", err)
		}
	}
	return nil
}

// MoveSelfHome moves the calling process back into the cgroup it was
// started in, so that Destroy can remove the whole tree. That is where it
// came from, so nothing leaves Vigil's own cgroup. On v2 the kernel refuses
// when the own cgroup has controllers enabled for its children (the
// no-internal-processes rule; the usual case under systemd, which trims the
// leftover leaf itself after we exit): that is reported with ErrNotSupported.
func (m *Manager) MoveSelfHome() error {
	pid := strconv.Itoa(os.Getpid())
	var errs []error
	for _, h := range m.hs {
		err := writeFile(h.ownDir(), "cgroup.procs", pid)
		if err != nil && m.mode == ModeV2 && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EOPNOTSUPP)) {
			err = fmt.Errorf("%w: %w", ErrNotSupported, err)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Destroy kills everything left in the tree and removes it, deepest first.
// Groups holding the calling process (on v2 the supervisor sits in
// control/supervisor) and their ancestors are left in place. Safe to call twice.
func (m *Manager) Destroy() error {
	left, err := m.destroyAll()
	if len(left) > 0 {
		m.log.Info("cgroup: groups holding the caller left in place", "groups", left)
		return err
	}
	// A subtree "a/b" created "a" too: remove it when nothing else uses it.
	for _, h := range m.hs {
		for d := filepath.Dir(path.Join(m.subtree)); d != "." && d != "/"; d = filepath.Dir(d) {
			if e := unix.Rmdir(filepath.Join(h.ownDir(), d)); e != nil && !errors.Is(e, unix.ENOENT) {
				break // in use (ENOTEMPTY, EBUSY): not ours to force
			}
		}
	}
	return err
}

// topGroups are the groups owned by Vigil at the top of the tree: the base
// itself with a subtree, else control/, apps/ and hooks/ in the own cgroup.
func (m *Manager) topGroups() []string {
	if m.subtree != "" {
		return []string{""}
	}
	out := []string{"control", "apps", HooksGroup}
	// The hooks groups of services after the first (hooks-<service>).
	seen := map[string]bool{}
	for _, base := range m.baseDirs() {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if n := e.Name(); e.IsDir() && strings.HasPrefix(n, HooksGroup+"-") && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

func (m *Manager) destroyAll() (left []string, err error) {
	var errs []error
	for _, rel := range m.topGroups() {
		l, err := m.destroyRel(rel)
		left = append(left, l...)
		errs = append(errs, err)
	}
	return left, errors.Join(errs...)
}

// destroyRel kills and removes rel and everything below it, except groups
// holding the calling process.
func (m *Manager) destroyRel(rel string) (left []string, err error) {
	g := m.groupAt(rel)
	procs, err := g.Procs()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(procs, os.Getpid()) {
		return nil, g.Delete()
	}
	children := map[string]bool{}
	for _, hd := range g.hdirs {
		des, err := os.ReadDir(hd.dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cgroup: read %s: %w", hd.dir, err)
		}
		for _, de := range des {
			if de.IsDir() {
				children[de.Name()] = true
			}
		}
	}
	var errs []error
	for c := range children {
		l, err := m.destroyRel(path.Join(rel, c))
		left = append(left, l...)
		errs = append(errs, err)
	}
	return append(left, g.Path()), errors.Join(errs...)
}

// cleanStale removes a tree left by a previous run, killing its processes
// (they are ours: the tree is ours).
func (m *Manager) cleanStale() error {
	var found []int
	var groups int
	for _, rel := range m.topGroups() {
		g := m.groupAt(rel)
		procs, err := g.Procs()
		if err != nil {
			return err
		}
		found = append(found, procs...)
		for _, hd := range g.hdirs {
			ds, err := subdirs(hd.dir)
			if err != nil {
				return err
			}
			groups += len(ds)
		}
	}
	if groups == 0 {
		return nil
	}
	// Leftover groups are removed even when empty, so that no setting of the
	// previous run survives; only a kill is worth a warning.
	if len(found) > 0 {
		m.log.Warn("cgroup: killing processes left in the tree by a previous run",
			"tree", m.Describe(), "pids", found, "groups", groups)
	} else {
		m.log.Info("cgroup: removing empty groups left by a previous run", "tree", m.Describe(), "groups", groups)
	}
	left, err := m.destroyAll()
	if err != nil {
		return fmt.Errorf("cgroup: clean stale tree: %w", err)
	}
	if len(left) > 0 {
		m.log.Warn("cgroup: stale groups holding the caller left in place", "groups", left)
	}
	return nil
}
