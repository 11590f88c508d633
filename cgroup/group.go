package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds Kill: a process that survives SIGKILL this long is
// stuck in the kernel (D state) and the caller must know.
const killTimeout = 5 * time.Second

// hdir is a group's directory in one hierarchy.
type hdir struct {
	h   *hierarchy
	dir string
}

// Group is one cgroup of the tree, in every hierarchy Vigil uses.
type Group struct {
	m     *Manager
	rel   string // relative to the base; "" = the base itself
	hdirs []hdir
}

// Path is the display path relative to the own cgroup, e.g. "vigil/apps/kamailio".
func (g *Group) Path() string { return path.Join(g.m.subtree, g.rel) }

// Dirs maps each controller to the group's absolute directory (v2: "unified").
func (g *Group) Dirs() map[string]string {
	out := map[string]string{}
	for _, hd := range g.hdirs {
		for _, c := range hd.h.ctrls {
			out[c] = hd.dir
		}
	}
	return out
}

// HierarchyDirs are the group's directories, one per hierarchy (v2: one),
// for a process that joins the group by writing its own pid into each
// cgroup.procs (the `_exec` shim of a hook) or empties it without a
// Manager (KillDirs).
func (g *Group) HierarchyDirs() []string {
	out := make([]string, 0, len(g.hdirs))
	for _, hd := range g.hdirs {
		out = append(out, hd.dir)
	}
	return out
}

// dirFor returns the group's directory in the hierarchy carrying c, or "".
func (g *Group) dirFor(c string) string {
	for _, hd := range g.hdirs {
		if hd.h.has(c) {
			return hd.dir
		}
	}
	return ""
}

// OpenFD opens the group directory for SysProcAttr.UseCgroupFD (clone3
// CLONE_INTO_CGROUP, Linux >= 5.7). Only the unified hierarchy supports it.
func (g *Group) OpenFD() (*os.File, error) {
	if g.m.mode != ModeV2 {
		return nil, fmt.Errorf("cgroup: placement fd needs cgroup v2, host is %s: %w", g.m.mode, ErrNotSupported)
	}
	dir := g.hdirs[0].dir
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// AddProc moves pid (the whole process) into the group, in every hierarchy.
func (g *Group) AddProc(pid int) error {
	for _, hd := range g.hdirs {
		if err := writeFile(hd.dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Procs returns every pid in the group and below, in any hierarchy.
func (g *Group) Procs() ([]int, error) {
	var out []int
	for _, hd := range g.hdirs {
		dirs, err := subdirs(hd.dir)
		if err != nil {
			return nil, err
		}
		for _, d := range dirs {
			ps, err := readProcs(d)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Populated reports whether any process is in the group or below (v2:
// cgroup.events; v1: any pid in any of its hierarchies).
func (g *Group) Populated() (bool, error) {
	if g.m.mode == ModeV2 {
		dir := g.hdirs[0].dir
		if !exists(dir) {
			return false, nil
		}
		ev, err := readKV(dir, "cgroup.events")
		if err != nil {
			return false, err
		}
		return ev["populated"] == 1, nil
	}
	ps, err := g.Procs()
	return len(ps) > 0, err
}

// Signal sends sig to every process in the group and below.
func (g *Group) Signal(sig syscall.Signal) error {
	ps, err := g.Procs()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		if err := unix.Kill(p, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("cgroup: signal %d to pid %d in %s: %w", sig, p, g.Path(), err))
		}
	}
	return errors.Join(errs...)
}

// Kill kills every process in the group and below and returns once none is
// left, or with an error after 5 s. v2 uses cgroup.kill (Linux >= 5.14),
// else freeze, SIGKILL, thaw; v1 does the latter with the freezer
// hierarchy, so a forking daemon cannot escape between listing and killing.
func (g *Group) Kill() error {
	ps, err := g.Procs()
	if err != nil {
		return err
	}
	if slices.Contains(ps, os.Getpid()) {
		return fmt.Errorf("cgroup: kill %s: %w", g.Path(), errHoldsCaller)
	}
	if len(ps) == 0 {
		return nil
	}
	deadline := time.Now().Add(killTimeout)
	if g.m.mode == ModeV2 && !g.m.noCgroupKill {
		dir := g.hdirs[0].dir
		err := writeFile(dir, "cgroup.kill", "1")
		if err == nil {
			return g.waitEmpty(deadline)
		}
		if !exists(dir) {
			return nil // removed meanwhile: nothing left
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		// cgroup.kill missing: kernel < 5.14, freeze instead.
	}
	for {
		if err := g.killOnce(deadline); err != nil {
			return err
		}
		if err := g.waitEmpty(time.Now().Add(200 * time.Millisecond)); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return g.waitEmpty(deadline) // error naming what is left
		}
	}
}

// killOnce freezes the group (when it can), SIGKILLs what it holds and thaws.
// A frozen task cannot fork, and the pending SIGKILL is handled before it
// runs user code again after the thaw.
func (g *Group) killOnce(deadline time.Time) error {
	fdir, file, frozen, thawed := g.freezer()
	if fdir != "" && exists(fdir) {
		if err := writeFile(fdir, file, frozen); err != nil {
			return err
		}
		defer func() {
			if err := writeFile(fdir, file, thawed); err != nil {
				g.m.log.Error("cgroup: thaw failed", "group", g.Path(), "err", err)
			}
		}()
		g.waitFrozen(fdir, min(time.Until(deadline), time.Second))
	}
	ps, err := g.Procs()
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, p := range ps {
		if p == self {
			return fmt.Errorf("cgroup: kill %s: %w", g.Path(), errHoldsCaller)
		}
		if err := unix.Kill(p, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("cgroup: kill pid %d in %s: %w", p, g.Path(), err)
		}
	}
	return nil
}

// freezer returns the directory and file that freeze the group, and the
// values for frozen and thawed; dir is "" without a freezer.
func (g *Group) freezer() (dir, file, frozen, thawed string) {
	if g.m.mode == ModeV2 {
		return g.hdirs[0].dir, "cgroup.freeze", "1", "0"
	}
	if d := g.dirFor("freezer"); d != "" {
		return d, "freezer.state", "FROZEN", "THAWED"
	}
	return "", "", "", ""
}

// waitFrozen polls until the freeze completed. It gives up quietly: a task
// in uninterruptible sleep can keep a group FREEZING, and SIGKILL is sent anyway.
func (g *Group) waitFrozen(dir string, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if g.m.mode == ModeV2 {
			if ev, err := readKV(dir, "cgroup.events"); err != nil || ev["frozen"] == 1 {
				return
			}
		} else if s, err := readFile(dir, "freezer.state"); err != nil || s == "FROZEN" {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitEmpty polls until no process is left or the deadline passes.
func (g *Group) waitEmpty(deadline time.Time) error {
	sleep := time.Millisecond
	for {
		ps, err := g.Procs()
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup: %s: pids %v still alive after SIGKILL", g.Path(), ps)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 20*time.Millisecond)
	}
}

// Delete removes the group and every group below it, killing what they
// hold first. A group that is already gone is fine.
func (g *Group) Delete() error {
	pop, err := g.Populated()
	if err != nil {
		return err
	}
	if pop {
		if err := g.Kill(); err != nil {
			return err
		}
	}
	var errs []error
	for _, hd := range g.hdirs {
		errs = append(errs, rmdirTree(hd.dir))
	}
	return errors.Join(errs...)
}

// chain returns hd.dir's ancestors below the own cgroup, top first, ending
// with dir itself; used for budgets children cannot exceed.
func (g *Group) chain(hd hdir) []string {
	own := hd.h.ownDir()
	var out []string
	for d := hd.dir; d != own && len(d) > len(own); d = filepath.Dir(d) {
		out = append(out, d)
	}
	slices.Reverse(out)
	return out
}

// KillDirs kills every process in the cgroup directories dirs (one group's
// HierarchyDirs) for a process that has no Manager: the node manager
// emptying the hooks group after each hook. It writes cgroup.kill where the
// file exists (v2, Linux >= 5.14), else SIGKILLs each pid in cgroup.procs,
// and repeats (a process may fork between the read and the kill) until
// every directory is empty or timeout has passed. It returns every pid it
// found, killed or already exiting. It refuses to act on a group holding
// the caller, and never looks below dirs (the hooks group is a leaf).
func KillDirs(dirs []string, timeout time.Duration) (found []int, err error) {
	deadline := time.Now().Add(timeout)
	sleep := time.Millisecond
	killWritten := false
	for {
		var left []int
		for _, d := range dirs {
			ps, err := readProcs(d)
			if err != nil {
				return found, err
			}
			for _, p := range ps {
				if !slices.Contains(left, p) {
					left = append(left, p)
				}
			}
		}
		if len(left) == 0 {
			return found, nil
		}
		if slices.Contains(left, os.Getpid()) {
			return found, fmt.Errorf("cgroup: kill %v: %w", dirs, errHoldsCaller)
		}
		for _, p := range left {
			if !slices.Contains(found, p) {
				found = append(found, p)
			}
		}
		if time.Now().After(deadline) {
			return found, fmt.Errorf("cgroup: %v: pids %v still there %v after SIGKILL", dirs, left, timeout)
		}
		if !killWritten {
			// cgroup.kill takes every process at once, forks included;
			// written once, the loop then only waits for the exits.
			for _, d := range dirs {
				if exists(filepath.Join(d, "cgroup.kill")) {
					if err := writeFile(d, "cgroup.kill", "1"); err == nil {
						killWritten = true
					}
				}
			}
		}
		if !killWritten {
			var errs []error
			for _, p := range left {
				if err := unix.Kill(p, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("cgroup: kill pid %d in %v: %w", p, dirs, err))
				}
			}
			if err := errors.Join(errs...); err != nil {
				return found, err
			}
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 20*time.Millisecond)
	}
}
