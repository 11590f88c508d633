package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownCgroups maps each mounted hierarchy directory under /sys/fs/cgroup to
// this process's cgroup in it.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("e2e: own cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.SplitN(sc.Text(), ":", 3)
		if len(p) != 3 {
			continue
		}
		var mount string
		switch {
		case p[1] == "":
			mount = "/sys/fs/cgroup/unified"
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				mount = "/sys/fs/cgroup" // v2 only
			}
		case strings.HasPrefix(p[1], "name="):
			mount = "/sys/fs/cgroup/" + strings.TrimPrefix(p[1], "name=")
		default:
			mount = "/sys/fs/cgroup/" + p[1]
		}
		if _, err := os.Stat(mount); err == nil {
			out[mount] = p[2]
		}
	}
	return out, sc.Err()
}

// treePids lists every process in the cgroup subtree (below the caller's
// own cgroup) in any hierarchy. It only reads: opening the tree with the
// cgroup package would clean it as a stale tree.
func treePids(subtree string) ([]int, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	for mount, rel := range own {
		root := filepath.Join(mount, rel, subtree)
		err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !de.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil // removed meanwhile
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("e2e: walk %s: %w", root, err)
		}
	}
	return out, nil
}

// killTree SIGKILLs every process of the subtree until none is left: a
// crash of everything Vigil runs on a host, applications included. Every
// process is stopped first, so that none sees another die and reacts (the
// node manager's parent-death signal would otherwise let it remove the
// floating IP in an orderly way, which a real crash does not).
func killTree(subtree string, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	stopped := map[int]bool{}
	for {
		pids, err := treePids(subtree)
		if err != nil {
			return 0, err
		}
		fresh := 0
		for _, pid := range pids {
			if pid != os.Getpid() && !stopped[pid] && !zombie(pid) {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				stopped[pid] = true
				fresh++
			}
		}
		if fresh == 0 || time.Now().After(deadline) {
			break
		}
	}
	killed := map[int]bool{}
	for {
		pids, err := treePids(subtree)
		if err != nil {
			return len(killed), err
		}
		live := 0
		for _, pid := range pids {
			if pid == os.Getpid() || zombie(pid) {
				continue
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed[pid] = true
				live++
			}
		}
		if live == 0 {
			return len(killed), nil
		}
		// A supervisor killed between freezing a group (to kill it) and
		// thawing it leaves its processes frozen with SIGKILL pending.
		thawTree(subtree)
		if time.Now().After(deadline) {
			return len(killed), fmt.Errorf("e2e: processes still in %s after %v", subtree, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zombie reports whether pid has exited and waits to be reaped (or is gone).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// thawTree writes THAWED to every v1 freezer group of the subtree (and 0
// to every v2 cgroup.freeze).
func thawTree(subtree string) {
	own, err := ownCgroups()
	if err != nil {
		return
	}
	for mount, rel := range own {
		_ = filepath.WalkDir(filepath.Join(mount, rel, subtree), func(p string, de fs.DirEntry, err error) error {
			if err != nil || !de.IsDir() {
				return nil
			}
			if _, err := os.Stat(filepath.Join(p, "freezer.state")); err == nil {
				_ = os.WriteFile(filepath.Join(p, "freezer.state"), []byte("THAWED"), 0o644)
			} else if _, err := os.Stat(filepath.Join(p, "cgroup.freeze")); err == nil {
				_ = os.WriteFile(filepath.Join(p, "cgroup.freeze"), []byte("0"), 0o644)
			}
			return nil
		})
	}
}

// removeTree removes the cgroup directories of subtree, deepest first, in
// every hierarchy, retrying while the last killed processes are reaped.
// Left behind, a tree would keep its share of the realtime budget
// (cpu.rt_runtime_us) and starve the next run's control plane of it.
func removeTree(subtree string) error {
	own, err := ownCgroups()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for mount, rel := range own {
			root := filepath.Join(mount, rel, subtree)
			var dirs []string
			_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
				if err == nil && de.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
					left = append(left, dirs[i])
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: cgroups left: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// staleTree matches the subtree names of this harness (Vigil's hosts,
// keepalived's, the keepalived noise groups): the owner's pid is in the
// name so a later run can remove what a killed one left. A tree left with a
// realtime budget (cpu.rt_runtime_us) would starve the next runs of it.
var staleTree = regexp.MustCompile(`^(?:vigil-e2e-p([0-9]+)-[0-9a-f]{8}-[abw]|e2e-keepalived-[0-9a-f]{6}\.p([0-9]+)-[ab]|e2e-noise-[0-9a-f]{6}\.p([0-9]+))$`)

// sweepStale kills and removes trees of dead owners.
func sweepStale(t TB) {
	own, err := ownCgroups()
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for mount, rel := range own {
		des, err := os.ReadDir(filepath.Join(mount, rel))
		if err != nil {
			continue
		}
		for _, de := range des {
			m := staleTree.FindStringSubmatch(de.Name())
			if m == nil || seen[de.Name()] {
				continue
			}
			seen[de.Name()] = true
			pid, _ := strconv.Atoi(m[1] + m[2] + m[3])
			if pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue
			}
			_, _ = killTree(de.Name(), 5*time.Second)
			if err := removeTree(de.Name()); err == nil {
				t.Logf("e2e: removed the cgroup tree %s of dead pid %d", de.Name(), pid)
			}
		}
	}
}
