package cgroup

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/testtool"
)

// helperEnv makes the test binary act as a helper process (see TestMain).
const helperEnv = "VIGIL_CGROUP_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "moveself":
		os.Exit(helperMoveSelf())
	case "delegated":
		os.Exit(helperDelegated())
	}
	// Orphans of the test children (double-forked daemons) are reparented
	// to the test process, so the tests can reap them and prove none is left.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// helperMoveSelf opens the tree named by VIGIL_CGROUP_TEST_SUBTREE, moves
// itself into control/supervisor and prints its /proc/self/cgroup.
func helperMoveSelf() int {
	m, err := Open(Options{Subtree: os.Getenv("VIGIL_CGROUP_TEST_SUBTREE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := m.MoveSelf("control/supervisor"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(b)
	return 0
}

// helperDelegated runs as the only process of a non-root v2 cgroup, like
// vigil under systemd's Delegate=yes: controllers cannot be enabled until it
// has moved itself into control/supervisor.
func helperDelegated() int {
	fail := func(f string, a ...any) int { fmt.Fprintf(os.Stderr, f+"\n", a...); return 1 }
	m, err := Open(Options{})
	if err != nil {
		return fail("Open: %v", err)
	}
	loc, err := m.Group("control/locator")
	if err != nil {
		return fail("Group: %v", err)
	}
	if _, err := loc.Apply(Resources{CPUWeight: 500}); err == nil {
		return fail("Apply before MoveSelf succeeded; the own cgroup still holds the process")
	}
	if err := m.MoveSelf("control/supervisor"); err != nil {
		return fail("MoveSelf: %v", err)
	}
	if _, err := loc.Apply(Resources{CPUWeight: 500, MemoryMin: 1 << 20}); err != nil {
		return fail("Apply after MoveSelf: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(loc.Dirs()["unified"], "cpu.weight"))
	if err != nil {
		return fail("%v", err)
	}
	fmt.Printf("path=%s cpu.weight=%s", loc.Path(), b)
	return 0
}

// kernelManager opens a tree with a random subtree on the real kernel and
// destroys it after the test, checking that nothing is left.
func kernelManager(t *testing.T, log *slog.Logger) (*Manager, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroup kernel tests need root (they create cgroups below the test's own cgroup)")
	}
	subtree := randomSubtree(t)
	m, err := Open(Options{Subtree: subtree, Logger: log})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { destroyAndCheck(t, m) })
	return m, subtree
}

func randomSubtree(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "vigil-test-" + hex.EncodeToString(b)
}

func destroyAndCheck(t *testing.T, m *Manager) {
	t.Helper()
	if err := m.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	for _, d := range m.baseDirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Destroy %s still exists (stat: %v)", d, err)
		}
	}
}

// requireV1 skips tests whose assertions read v1 interface files.
func requireV1(t *testing.T, m *Manager) {
	t.Helper()
	if m.Mode() == ModeV2 {
		t.Skip("asserts v1 interface files; the v2 path is tested in the qemu VM")
	}
}

// ownCgroups parses /proc/<pid>/cgroup into controller -> path (v1 only).
func ownCgroups(t *testing.T, pid string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return parseProcCgroup(t, string(b))
}

func parseProcCgroup(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			t.Fatalf("bad cgroup line %q", line)
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "" {
				c = "unified"
			}
			out[c] = parts[2]
		}
	}
	return out
}

// expectedPaths maps each hierarchy key Vigil uses ("cpu", ..., or
// "unified" on v2) to the path /proc/PID/cgroup shows for a process in
// rel, and to the group's absolute directory.
func expectedPaths(t *testing.T, m *Manager, subtree, rel string) (procPath, dir map[string]string) {
	t.Helper()
	own := ownCgroups(t, "self")
	procPath, dir = map[string]string{}, map[string]string{}
	if m.Mode() == ModeV2 {
		procPath["unified"] = filepath.Join(own["unified"], subtree, rel)
		dir["unified"] = filepath.Join("/sys/fs/cgroup", procPath["unified"])
		return procPath, dir
	}
	for _, c := range v1Controllers {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "cgroup.procs")); err != nil {
			continue // not mounted here (or only co-mounted under another name)
		}
		procPath[c] = filepath.Join(own[c], subtree, rel)
		dir[c] = filepath.Join("/sys/fs/cgroup", c, procPath[c])
	}
	if len(procPath) == 0 {
		t.Skip("no v1 controller mounted at /sys/fs/cgroup/<controller>")
	}
	return procPath, dir
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// gatedChild starts `sh -c script` whose script begins by blocking on a
// line from stdin, so it can be placed before it does anything. The child is
// killed and reaped at cleanup if still running.
type gatedChild struct {
	cmd  *exec.Cmd
	gate io.WriteCloser
	out  bytes.Buffer
	done chan struct{}
	err  error
	pid  int
}

func startGated(t *testing.T, script string) *gatedChild {
	t.Helper()
	c := &gatedChild{cmd: exec.Command("sh", "-c", "read gate; "+script), done: make(chan struct{})}
	c.cmd.Stdout = &c.out
	var err error
	if c.gate, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.pid = c.cmd.Process.Pid
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *gatedChild) open() { c.gate.Write([]byte("go\n")) }

// wait waits for the child's exit with a generous bound.
func (c *gatedChild) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(d):
		t.Fatalf("child %d still running after %v", c.pid, d)
		return nil
	}
}

func TestOpenCreatesTreeInOwnCgroups(t *testing.T) {
	m, subtree := kernelManager(t, nil)
	g, err := m.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g.Path(), subtree+"/control/locator"; got != want {
		t.Errorf("Path() = %q, want %q", got, want)
	}
	dirs := g.Dirs()
	_, want := expectedPaths(t, m, subtree, "control/locator")
	for c, d := range want {
		base := filepath.Dir(filepath.Dir(d))
		for _, sub := range []string{"control", "apps", "control/locator"} {
			if fi, err := os.Stat(filepath.Join(base, sub)); err != nil || !fi.IsDir() {
				t.Errorf("%s: %s/%s missing: %v", c, base, sub, err)
			}
		}
		if dirs[c] != d {
			t.Errorf("Dirs()[%s] = %q, want %q", c, dirs[c], d)
		}
		if !strings.Contains(m.Describe(), base) {
			t.Errorf("Describe() = %q lacks %s", m.Describe(), base)
		}
	}
	if len(dirs) != len(want) {
		t.Errorf("Dirs() = %v, want exactly %v", dirs, want)
	}
	// cpuset groups inherit cpus and mems so that processes can join them.
	if d := dirs["cpuset"]; d != "" && m.Mode() != ModeV2 {
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			got, parent := readTrim(t, filepath.Join(d, f)), readTrim(t, filepath.Join(d, "../../..", f))
			if got == "" || got != parent {
				t.Errorf("%s = %q, want the own cgroup's %q", filepath.Join(d, f), got, parent)
			}
		}
	}
	f, err := g.OpenFD()
	if m.Mode() == ModeV2 {
		if err != nil {
			t.Errorf("OpenFD on v2: %v", err)
		} else {
			f.Close()
		}
	} else if !errors.Is(err, ErrNotSupported) {
		t.Errorf("OpenFD on %s: err = %v, want ErrNotSupported", m.Mode(), err)
	}
	for _, bad := range []string{"", "/abs", "../escape", "apps/../..", "cgroup.procs"} {
		if _, err := m.Group(bad); err == nil {
			t.Errorf("Group(%q) succeeded", bad)
		}
	}
}

func TestApplyWritesV1Files(t *testing.T) {
	m, _ := kernelManager(t, nil)
	requireV1(t, m)
	ctl, err := m.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	ncpu := strings.Count(readTrim(t, "/proc/cpuinfo"), "processor\t:")
	cpus := strconv.Itoa(max(ncpu-1, 0))
	rt := int64(10000)
	na, err := ctl.Apply(Resources{CPUWeight: 10000, CPUs: cpus, MemoryMin: 64 << 20, PidsMax: 123, RTRuntimeUs: rt})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !slices.Contains(na, "memory.min: not available on cgroup v1") {
		t.Errorf("notApplied = %q, want memory.min reported", na)
	}
	d := ctl.Dirs()
	check := func(ctrl, file, want string) {
		t.Helper()
		if d[ctrl] == "" {
			t.Logf("%s not mounted; %s not checked", ctrl, file)
			return
		}
		if got := readTrim(t, filepath.Join(d[ctrl], file)); got != want {
			t.Errorf("%s/%s = %q, want %q", d[ctrl], file, got, want)
		}
	}
	check("cpu", "cpu.shares", "102400")
	check("cpuset", "cpuset.cpus", cpus)
	check("pids", "pids.max", "123")
	if _, err := os.Stat(filepath.Join(d["cpu"], "cpu.rt_runtime_us")); err == nil {
		check("cpu", "cpu.rt_runtime_us", "10000")
		// The ancestors below the own cgroup were raised to cover it.
		for _, anc := range []string{filepath.Dir(d["cpu"]), filepath.Dir(filepath.Dir(d["cpu"]))} {
			v, err := strconv.ParseInt(readTrim(t, filepath.Join(anc, "cpu.rt_runtime_us")), 10, 64)
			if err != nil || v < rt {
				t.Errorf("%s/cpu.rt_runtime_us = %d (%v), want >= %d", anc, v, err, rt)
			}
		}
	} else if !slices.ContainsFunc(na, func(s string) bool { return strings.HasPrefix(s, "cpu.rt_runtime_us") }) {
		t.Errorf("no cpu.rt_runtime_us on this kernel, but notApplied = %q", na)
	}

	app, err := m.Group("apps/kamailio")
	if err != nil {
		t.Fatal(err)
	}
	na, err = app.Apply(Resources{CPUWeight: 100, CPUMax: "150%", MemoryMax: 96 << 20})
	if err != nil || len(na) != 0 {
		t.Fatalf("Apply: notApplied %q, err %v", na, err)
	}
	d = app.Dirs()
	check("cpu", "cpu.shares", "1024")
	check("cpu", "cpu.cfs_quota_us", "150000")
	check("cpu", "cpu.cfs_period_us", "100000")
	check("memory", "memory.limit_in_bytes", strconv.Itoa(96<<20))

	if _, err := app.Apply(Resources{CPUMax: "fast"}); err == nil {
		t.Error("Apply(CPUMax: fast) succeeded")
	}
	// A real kernel refusal is an error naming the file.
	_, err = app.Apply(Resources{CPUs: "4096"})
	if err == nil || !strings.Contains(err.Error(), "cpuset.cpus") {
		t.Errorf("Apply(CPUs: 4096) err = %v, want an error naming cpuset.cpus", err)
	}
}

func TestApplyWritesV2Files(t *testing.T) {
	m, _ := kernelManager(t, nil)
	if m.Mode() != ModeV2 {
		t.Skipf("v2 interface files; this host is %s (TestApplyWritesV1Files covers it)", m.Mode())
	}
	ctl, err := m.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	ncpu := strings.Count(readTrim(t, "/proc/cpuinfo"), "processor\t:")
	cpus := strconv.Itoa(max(ncpu-1, 0))
	na, err := ctl.Apply(Resources{CPUWeight: 10000, CPUs: cpus, MemoryMin: 64 << 20, PidsMax: 123, RTRuntimeUs: 10000})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !slices.Contains(na, "cpu.rt_runtime_us: not available on cgroup v2") {
		t.Errorf("notApplied = %q, want cpu.rt_runtime_us reported", na)
	}
	d := ctl.Dirs()["unified"]
	check := func(dir, file, want string) {
		t.Helper()
		if got := readTrim(t, filepath.Join(dir, file)); got != want {
			t.Errorf("%s/%s = %q, want %q", dir, file, got, want)
		}
	}
	check(d, "cpu.weight", "10000")
	check(d, "cpuset.cpus", cpus)
	check(d, "pids.max", "123")
	check(d, "memory.min", strconv.Itoa(64<<20))
	check(d, "memory.low", strconv.Itoa(64<<20))
	// Protection is capped by the ancestors: they were raised below the own cgroup.
	check(filepath.Dir(d), "memory.min", strconv.Itoa(64<<20))
	check(filepath.Dir(filepath.Dir(d)), "memory.min", strconv.Itoa(64<<20))

	app, err := m.Group("apps/kamailio")
	if err != nil {
		t.Fatal(err)
	}
	if na, err := app.Apply(Resources{CPUWeight: 100, CPUMax: "150%", MemoryMax: 96 << 20}); err != nil || len(na) != 0 {
		t.Fatalf("Apply: notApplied %q, err %v", na, err)
	}
	d = app.Dirs()["unified"]
	check(d, "cpu.weight", "100")
	check(d, "cpu.max", "150000 100000")
	check(d, "memory.max", strconv.Itoa(96<<20))
	_, err = app.Apply(Resources{CPUs: "4096"})
	if err == nil || !strings.Contains(err.Error(), "cpuset.cpus") {
		t.Errorf("Apply(CPUs: 4096) err = %v, want an error naming cpuset.cpus", err)
	}
}

func TestPlaceAtSpawnV2(t *testing.T) {
	m, subtree := kernelManager(t, nil)
	if m.Mode() != ModeV2 {
		t.Skipf("CLONE_INTO_CGROUP needs cgroup v2; this host is %s", m.Mode())
	}
	g, err := m.Group("apps/spawned")
	if err != nil {
		t.Fatal(err)
	}
	f, err := g.OpenFD()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start with UseCgroupFD: %v", err)
	}
	want, _ := expectedPaths(t, m, subtree, "apps/spawned")
	got := ownCgroups(t, strconv.Itoa(cmd.Process.Pid))
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("cat: %v", err)
	}
	if got["unified"] != want["unified"] {
		t.Errorf("spawned into %q, want %q", got["unified"], want["unified"])
	}
}

func TestAddProcPlacesInEveryHierarchy(t *testing.T) {
	m, subtree := kernelManager(t, nil)
	g, err := m.Group("apps/cat")
	if err != nil {
		t.Fatal(err)
	}
	c := startGated(t, "exit 0")
	if err := g.AddProc(c.pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	want, _ := expectedPaths(t, m, subtree, "apps/cat")
	child := ownCgroups(t, strconv.Itoa(c.pid))
	for ctrl, p := range want {
		if child[ctrl] != p {
			t.Errorf("child's %s cgroup = %q, want %q", ctrl, child[ctrl], p)
		}
	}
	if ps, err := g.Procs(); err != nil || !slices.Contains(ps, c.pid) {
		t.Errorf("Procs() = %v, %v; want %d in it", ps, err, c.pid)
	}
	if pop, err := g.Populated(); err != nil || !pop {
		t.Errorf("Populated() = %v, %v; want true", pop, err)
	}
	// The parent sees the child's process too ("in the group and below").
	apps, _ := m.Group("apps")
	if ps, err := apps.Procs(); err != nil || !slices.Contains(ps, c.pid) {
		t.Errorf("apps Procs() = %v, %v; want %d in it", ps, err, c.pid)
	}
	c.open()
	if err := c.wait(t, 10*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	if pop, err := g.Populated(); err != nil || pop {
		t.Errorf("after exit Populated() = %v, %v; want false", pop, err)
	}
}

// procState is the state letter of pid from /proc (Z = zombie), or "gone".
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return "?"
	}
	return s[i+2 : i+3]
}

func TestKillForkingDaemon(t *testing.T) {
	m, _ := kernelManager(t, nil)
	t.Run("default", func(t *testing.T) { killForkingDaemon(t, m, "apps/daemon") })
	if m.Mode() == ModeV2 {
		// The path of kernels before 5.14: freeze, SIGKILL, thaw.
		m.noCgroupKill = true
		defer func() { m.noCgroupKill = false }()
		t.Run("freeze", func(t *testing.T) { killForkingDaemon(t, m, "apps/daemon-freeze") })
	}
}

func killForkingDaemon(t *testing.T, m *Manager, rel string) {
	g, err := m.Group(rel)
	if err != nil {
		t.Fatal(err)
	}
	// The inner sh double-forks two sleeps and exits: they are orphans,
	// which the kernel reparents to us (subreaper), not to the group's sh.
	c := startGated(t, `sh -c 'sleep 1000 & sleep 1000 &'; echo forked; sleep 1000`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	c.open()
	// Wait until both sleeps are orphans reparented to the test process.
	var pids, orphans []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err = g.Procs()
		if err != nil {
			t.Fatal(err)
		}
		orphans = orphans[:0]
		for _, p := range pids {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
			if p != c.pid && err == nil && strings.Contains(string(st), fmt.Sprintf("\nPPid:\t%d\n", os.Getpid())) {
				orphans = append(orphans, p)
			}
		}
		if len(orphans) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want two orphaned sleeps reparented to the test, got %v of %v", orphans, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The inner sh exits by itself once it has forked: the listing may
	// still hold it (a zombie its parent had not reaped yet), and it is
	// then ours to reap when Kill takes that parent, with status 0.
	innerSh := map[int]bool{}
	for _, p := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); p != c.pid && err == nil && string(b) == "sh\n" {
			innerSh[p] = true
		}
	}
	start := time.Now()
	if err := g.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	t.Logf("Kill took %v for %d processes", time.Since(start), len(pids))
	if left, err := g.Procs(); err != nil || len(left) != 0 {
		t.Errorf("after Kill Procs() = %v, %v; want none", left, err)
	}
	if pop, err := g.Populated(); err != nil || pop {
		t.Errorf("after Kill Populated() = %v, %v", pop, err)
	}
	if d := g.Dirs()["freezer"]; d != "" {
		if s := readTrim(t, filepath.Join(d, "freezer.state")); s != "THAWED" {
			t.Errorf("freezer.state = %s after Kill, want THAWED", s)
		}
	}
	if d := g.Dirs()["unified"]; d != "" {
		if s := readTrim(t, filepath.Join(d, "cgroup.freeze")); s != "0" {
			t.Errorf("cgroup.freeze = %s after Kill, want 0", s)
		}
	}
	var ws syscall.WaitStatus
	if err := c.wait(t, 10*time.Second); err == nil {
		t.Errorf("group shell exited cleanly, want killed")
	}
	// Reap every killed process that ended up our child (the orphans, and
	// the shell's foreground child once the shell died), then check that
	// none is left, not even as a zombie.
	for _, p := range pids {
		if p == c.pid {
			continue
		}
		end := time.Now().Add(10 * time.Second)
		for {
			got, err := syscall.Wait4(p, &ws, syscall.WNOHANG, nil)
			if got == p {
				if (!ws.Signaled() || ws.Signal() != syscall.SIGKILL) && !(innerSh[p] && ws.Exited() && ws.ExitStatus() == 0) {
					t.Errorf("pid %d: status %v, want killed by SIGKILL", p, ws)
				}
				break
			}
			if errors.Is(err, syscall.ECHILD) && procState(p) == "gone" {
				if slices.Contains(orphans, p) {
					t.Errorf("orphan %d vanished without being reaped by its subreaper", p)
				}
				break
			}
			if time.Now().After(end) {
				t.Fatalf("pid %d not reaped 10s after Kill (state %s, wait4 %v)", p, procState(p), err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, p := range pids {
		if st := procState(p); st != "gone" {
			t.Errorf("pid %d still present after Kill and reaping: state %s", p, st)
		}
	}
	// Kill of an empty group is a no-op.
	if err := g.Kill(); err != nil {
		t.Errorf("Kill of empty group: %v", err)
	}
}

func TestSignal(t *testing.T) {
	m, _ := kernelManager(t, nil)
	g, err := m.Group("apps/term")
	if err != nil {
		t.Fatal(err)
	}
	c := startGated(t, "exec sleep 1000")
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	// Wait for the exec so SIGTERM hits sleep, not the shell's read.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid))
		if strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not exec sleep")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := g.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	err = c.wait(t, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("child exit = %v, want killed by SIGTERM", err)
	}
}

func TestDeleteRemovesDirs(t *testing.T) {
	m, _ := kernelManager(t, nil)
	g, err := m.Group("apps/gone")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := m.Group("apps/gone/sub")
	if err != nil {
		t.Fatal(err)
	}
	// In the leaf: v2 allows no process beside child groups with controllers.
	c := startGated(t, "sleep 1000")
	if err := sub.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(); err != nil {
		t.Fatalf("Delete of a populated group: %v", err)
	}
	if err := c.wait(t, 10*time.Second); err == nil {
		t.Error("process in deleted group exited cleanly, want killed")
	}
	for _, gg := range []*Group{g, sub} {
		for ctrl, d := range gg.Dirs() {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s still exists after Delete (%v)", ctrl, d, err)
			}
		}
	}
	apps, _ := m.Group("apps")
	for ctrl, d := range apps.Dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: parent %s removed by Delete of a child: %v", ctrl, d, err)
		}
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if err := m.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	if err := m.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestOpenCleansStaleTree(t *testing.T) {
	first, subtree := kernelManager(t, nil)
	g, err := first.Group("apps/crashed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(Resources{PidsMax: 7}); err != nil {
		t.Fatal(err)
	}
	c := startGated(t, "sleep 1000")
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	// A new run (the first Manager is abandoned, as by a crash).
	var logs testtool.SyncBuffer
	second, err := Open(Options{Subtree: subtree, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	t.Cleanup(func() { destroyAndCheck(t, second) })
	if err := c.wait(t, 10*time.Second); err == nil {
		t.Error("stale process exited cleanly, want killed")
	}
	for ctrl, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: stale group %s survived Open (%v)", ctrl, d, err)
		}
	}
	for _, rel := range []string{"control", "apps"} {
		gg, _ := second.Group(rel)
		for ctrl, d := range gg.Dirs() {
			if _, err := os.Stat(d); err != nil {
				t.Errorf("%s: %s missing after clean Open: %v", ctrl, d, err)
			}
		}
	}
	if n := strings.Count(logs.String(), "previous run"); n != 1 {
		t.Errorf("stale tree logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), strconv.Itoa(c.pid)) {
		t.Errorf("log does not name the killed pid %d:\n%s", c.pid, logs.String())
	}
}

func TestStatsGrow(t *testing.T) {
	m, _ := kernelManager(t, nil)
	g, err := m.Group("apps/busy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(Resources{CPUMax: "150%", MemoryMax: 128 << 20, PidsMax: 50}); err != nil {
		t.Fatal(err)
	}
	before, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if before.MemoryMax != 128<<20 {
		t.Errorf("MemoryMax = %d, want %d", before.MemoryMax, 128<<20)
	}
	// The loop runs in a subshell forked inside the group, so its memory is
	// charged to the group (v2 does not move charges with a process).
	c := startGated(t, `(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done) & wait; read stop`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	// Sample while the loop runs, then let it finish.
	time.Sleep(100 * time.Millisecond)
	during, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if during.PidsCurrent < 1 || during.MemoryCurrent == 0 {
		t.Errorf("while running: PidsCurrent=%d MemoryCurrent=%d, want > 0", during.PidsCurrent, during.MemoryCurrent)
	}
	c.gate.Write([]byte("stop\n"))
	if err := c.wait(t, 60*time.Second); err != nil {
		t.Fatalf("busy child: %v", err)
	}
	after, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before %+v\nafter  %+v", before, after)
	// 300000 shell iterations take well over 10 ms of CPU on any machine.
	if after.CPUUsageUsec < before.CPUUsageUsec+10000 {
		t.Errorf("CPUUsageUsec grew from %d to %d, want >= +10ms", before.CPUUsageUsec, after.CPUUsageUsec)
	}
	if after.NrPeriods == 0 {
		t.Errorf("NrPeriods = 0 with a CPU cap and a busy child")
	}
	if after.NrThrottled > after.NrPeriods || after.OOMKills != 0 {
		t.Errorf("implausible: %+v", after)
	}
}

func TestMoveSelf(t *testing.T) {
	m, subtree := kernelManager(t, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=moveself", "VIGIL_CGROUP_TEST_SUBTREE="+subtree)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	own := ownCgroups(t, "self")
	got := parseProcCgroup(t, string(out))
	want, _ := expectedPaths(t, m, subtree, "control/supervisor")
	for ctrl, p := range want {
		if got[ctrl] != p {
			t.Errorf("helper's %s cgroup = %q, want %q", ctrl, got[ctrl], p)
		}
	}
	// Hierarchies Vigil does not use were left alone.
	for _, ctrl := range []string{"devices", "blkio", "name=systemd"} {
		if o, ok := own[ctrl]; ok && got[ctrl] != o {
			t.Errorf("helper moved in %s: %q, want %q", ctrl, got[ctrl], o)
		}
	}
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		t.Log(s.Text())
	}
}

func TestV2DelegatedMoveSelfThenEnable(t *testing.T) {
	m, _ := kernelManager(t, nil)
	if m.Mode() != ModeV2 {
		t.Skipf("no-internal-processes rule of cgroup v2; this host is %s", m.Mode())
	}
	// A stand-in for the cgroup systemd delegates to vigil.service.
	deleg, err := m.Group("delegated")
	if err != nil {
		t.Fatal(err)
	}
	f, err := deleg.OpenFD()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=delegated")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	// Own cgroup not at a root and no subtree: control/ sits directly in it.
	if want := "path=control/locator cpu.weight=500"; strings.TrimSpace(string(out)) != want {
		t.Errorf("helper printed %q, want %q", out, want)
	}
}

// KillDirs, the node manager's sweep of the hooks group, kills what it
// holds without a Manager: also a process that left its process group
// (setsid) and orphans not yet reaped by their subreaper (zombies are not
// in cgroup.procs, so it does not wait for them).
func TestKillDirsHooksGroup(t *testing.T) {
	m, _ := kernelManager(t, nil)
	g, err := m.Group(HooksGroup)
	if err != nil {
		t.Fatal(err)
	}
	c := startGated(t, `setsid sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo forked; exec sleep 1000`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	c.open()
	var pids []int
	deadline := time.Now().Add(10 * time.Second)
	for len(pids) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("want the shell and two sleeps in %s, got %v", g.Path(), pids)
		}
		time.Sleep(10 * time.Millisecond)
		if pids, err = g.Procs(); err != nil {
			t.Fatal(err)
		}
	}
	found, err := KillDirs(g.HierarchyDirs(), 10*time.Second)
	if err != nil {
		t.Fatalf("KillDirs: %v", err)
	}
	for _, p := range pids {
		if !slices.Contains(found, p) {
			t.Errorf("KillDirs found %v, missing %d of %v", found, p, pids)
		}
	}
	if left, err := g.Procs(); err != nil || len(left) != 0 {
		t.Errorf("after KillDirs Procs() = %v, %v; want none", left, err)
	}
	if err := c.wait(t, 10*time.Second); err == nil {
		t.Error("group shell exited cleanly, want killed")
	}
	// The sleeps were the shell's children: orphans now, ours to reap.
	for _, p := range pids {
		if p == c.pid {
			continue
		}
		end := time.Now().Add(10 * time.Second)
		for procState(p) != "gone" && time.Now().Before(end) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, syscall.WNOHANG, nil)
			time.Sleep(5 * time.Millisecond)
		}
		if st := procState(p); st != "gone" {
			t.Errorf("pid %d survived KillDirs: state %s", p, st)
		}
	}
	if found, err := KillDirs(g.HierarchyDirs(), time.Second); err != nil || len(found) != 0 {
		t.Errorf("KillDirs of an empty group = %v, %v", found, err)
	}
}

// A budget the parent cannot cover is refused by the kernel with a bare
// EINVAL; the error must name who holds the rest (here, a second tree
// standing in for one a killed run left behind).
func TestRefusedBudgetNamesHolders(t *testing.T) {
	hog, hogName := kernelManager(t, nil)
	requireV1(t, hog)
	var base string
	for _, d := range hog.baseDirs() {
		if exists(filepath.Join(d, "cpu.rt_runtime_us")) {
			base = d
		}
	}
	if base == "" {
		t.Skip("no cpu.rt_runtime_us on this kernel (CONFIG_RT_GROUP_SCHED off)")
	}
	own := filepath.Dir(base)
	total, err := strconv.ParseInt(readTrim(t, filepath.Join(own, "cpu.rt_runtime_us")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	g, err := hog.Group("control/hog")
	if err != nil {
		t.Fatal(err)
	}
	// Other packages' tests, run beside this one, take and give back
	// realtime budget of the same cgroup: what was free when read may be
	// taken before the hog asks for it. Read again and retry.
	var free int64
	for attempt := 0; ; attempt++ {
		held, err := childBudgets(own, "", "cpu.rt_runtime_us")
		if err != nil {
			t.Fatal(err)
		}
		free = total
		for _, h := range held {
			free -= h.v
		}
		if free < 20000 {
			t.Fatalf("the own cgroup %s has only %d µs of realtime budget free", own, free)
		}
		_, err = g.Apply(Resources{RTRuntimeUs: free - 5000})
		if err == nil {
			break
		}
		if attempt == 20 {
			t.Fatalf("hog Apply(%d): %v", free-5000, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	m, _ := kernelManager(t, nil)
	g2, err := m.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	_, err = g2.Apply(Resources{RTRuntimeUs: 10000})
	if err == nil {
		t.Fatal("Apply succeeded with the budget held by another tree")
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("err = %v, want EINVAL kept in the chain", err)
	}
	for _, want := range []string{hogName + "=" + strconv.FormatInt(free-5000, 10), "already hold", own} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
}

// On v1 a group's cpuset.cpus must contain its children's at every moment:
// reserving cpus for control/ once control/supervisor holds the supervisor
// (as it does when the supervisor applies control.cpus) was refused with
// EBUSY. The children follow the group narrowing, moving and widening
// again, and a process in a child stays in it throughout.
func TestApplyV1CPUsWithChildren(t *testing.T) {
	m, _ := kernelManager(t, nil)
	requireV1(t, m)
	if n := strings.Count(readTrim(t, "/proc/cpuinfo"), "processor\t:"); n < 2 {
		t.Skipf("needs 2 cpus, the host has %d", n)
	}
	ctl, err := m.Group("control")
	if err != nil {
		t.Fatal(err)
	}
	sup, err := m.Group("control/supervisor")
	if err != nil {
		t.Fatal(err)
	}
	d := ctl.Dirs()["cpuset"]
	if d == "" {
		t.Skip("no cpuset hierarchy")
	}
	all := readTrim(t, filepath.Join(d, "cpuset.cpus"))
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := sup.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cpus := func(g *Group) string {
		t.Helper()
		return readTrim(t, filepath.Join(g.Dirs()["cpuset"], "cpuset.cpus"))
	}
	if _, err := ctl.Apply(Resources{CPUs: "0"}); err != nil {
		t.Fatalf("narrow control/ to cpu 0 with a process in a child: %v", err)
	}
	if c, s := cpus(ctl), cpus(sup); c != "0" || s != "0" {
		t.Fatalf("after narrowing to 0: control=%q supervisor=%q, want 0", c, s)
	}
	if _, err := ctl.Apply(Resources{CPUs: "1"}); err != nil {
		t.Fatalf("move control/ from cpu 0 to cpu 1: %v", err)
	}
	if c, s := cpus(ctl), cpus(sup); c != "1" || s != "1" {
		t.Fatalf("after moving to 1: control=%q supervisor=%q, want 1", c, s)
	}
	if _, err := ctl.Apply(Resources{CPUs: all}); err != nil {
		t.Fatalf("widen control/ to %s: %v", all, err)
	}
	if c, s := cpus(ctl), cpus(sup); c != all || s != all {
		t.Fatalf("after widening: control=%q supervisor=%q, want %q (the child follows)", c, s, all)
	}
	if procs, err := sup.Procs(); err != nil || !slices.Contains(procs, cmd.Process.Pid) {
		t.Fatalf("the process left control/supervisor: %v %v", procs, err)
	}
}

// Reset puts every field it names back to what a group created now has
// (a sibling made for the comparison), in both modes, and a v1 cpuset
// reset takes the children that followed the narrowing along.
func TestResetPutsBackNewGroupValues(t *testing.T) {
	m, _ := kernelManager(t, nil)
	if n := strings.Count(readTrim(t, "/proc/cpuinfo"), "processor\t:"); n < 2 {
		t.Skipf("needs 2 cpus, the host has %d", n)
	}
	app, err := m.Group("apps")
	if err != nil {
		t.Fatal(err)
	}
	kid, err := m.Group("apps/kamailio")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := m.Group("fresh")
	if err != nil {
		t.Fatal(err)
	}
	set := Resources{CPUWeight: 500, CPUs: "1", CPUMax: "50%", MemoryMax: 96 << 20, PidsMax: 123}
	files := map[string][]string{ // controller (v1) -> files Reset must restore
		"cpu": {"cpu.shares", "cpu.cfs_quota_us"}, "cpuset": {"cpuset.cpus"},
		"memory": {"memory.limit_in_bytes"}, "pids": {"pids.max"},
	}
	if m.Mode() == ModeV2 {
		set.MemoryMin = 8 << 20
		// cpuset.cpus itself is written out (the parent's effective
		// cpus): v2 refuses to empty it while the group has tasks.
		files = map[string][]string{"unified": {"cpu.weight", "cpu.max", "cpuset.cpus.effective", "memory.max", "memory.min", "memory.low", "pids.max"}}
	}
	read := func(g *Group) map[string]string {
		out := map[string]string{}
		for ctrl, fs := range files {
			d := g.Dirs()[ctrl]
			if d == "" {
				continue
			}
			for _, f := range fs {
				out[ctrl+"/"+f] = readTrim(t, filepath.Join(d, f))
			}
		}
		return out
	}
	want := read(fresh)
	if len(want) == 0 {
		t.Skip("none of cpu, cpuset, memory, pids is mounted")
	}
	if _, err := app.Apply(set); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	applied := read(app)
	for k, v := range want {
		if applied[k] == v && k != "unified/cpuset.cpus.effective" {
			t.Fatalf("%s is %q before the reset as well: the test proves nothing", k, v)
		}
	}
	if c := read(kid)[pick(m.Mode() == ModeV2, "unified/cpuset.cpus.effective", "cpuset/cpuset.cpus")]; c != "1" {
		t.Fatalf("the child's cpus after narrowing apps/ to 1: %q", c)
	}
	na, err := app.Reset(set)
	if err != nil {
		t.Fatalf("Reset: %v (not applied %q)", err, na)
	}
	if got := read(app); !maps.Equal(got, want) {
		t.Errorf("after Reset apps/ has %v, a new group %v", got, want)
	}
	if got := read(kid); !maps.Equal(got, want) {
		// The child had no limits of its own: it is a new group too,
		// except for the cpus it followed the parent to and back.
		t.Errorf("after Reset apps/kamailio has %v, a new group %v", got, want)
	}
}

// RTReader reads what RTBudget and CPUUsagePerCPU read, again and again
// from the files it keeps open: a budget changed after it opened them and
// use that grew are seen.
func TestRTReaderRereads(t *testing.T) {
	m, _ := kernelManager(t, nil)
	requireV1(t, m)
	g, err := m.Group("control/nodemanager")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.RTBudget(); errors.Is(err, ErrNotSupported) {
		t.Skip("no cpu.rt_runtime_us on this kernel (CONFIG_RT_GROUP_SCHED off)")
	}
	if _, err := g.Apply(Resources{RTRuntimeUs: 20000}); err != nil {
		t.Fatal(err)
	}
	r, err := g.OpenRTReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := r.Budget()
	if err != nil || b.Runtime != 20*time.Millisecond || b.Period != time.Second {
		t.Fatalf("Budget = %+v, %v; want 20ms of 1s", b, err)
	}
	if _, err := g.Apply(Resources{RTRuntimeUs: 30000}); err != nil {
		t.Fatal(err)
	}
	if b, err = r.Budget(); err != nil || b.Runtime != 30*time.Millisecond {
		t.Fatalf("Budget after a change = %+v, %v; want 30ms", b, err)
	}
	before, err := r.UsagePerCPU(nil)
	if err != nil || len(before) == 0 {
		t.Fatalf("UsagePerCPU = %v, %v", before, err)
	}
	c := startGated(t, `i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	if err := c.wait(t, 60*time.Second); err != nil {
		t.Fatalf("busy child: %v", err)
	}
	after, err := r.UsagePerCPU(nil)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := g.CPUUsagePerCPU()
	if err != nil {
		t.Fatal(err)
	}
	var grew, sum, sumDirect uint64
	for i := range after {
		grew += after[i] - before[i]
		sum += after[i]
		sumDirect += direct[i]
	}
	// 100000 shell iterations take well over 10 ms on any machine.
	if grew < uint64(10*time.Millisecond) || len(direct) != len(after) || sumDirect != sum {
		t.Errorf("use grew by %v; the reader's %v against a fresh read's %v", time.Duration(grew), after, direct)
	}
}
