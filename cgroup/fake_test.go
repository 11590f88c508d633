package cgroup

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// These tests run without a kernel cgroup file system: a temporary
// directory stands in for /sys/fs/cgroup. They cover path computation and
// the v2 code path, which this (v1 hybrid) machine cannot run for real.

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fileIs(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
		return
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %q, want %q", p, got, want)
	}
}

func TestFakeV1HierarchiesAndPaths(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"cpu,cpuacct", "memory", "pids", "devices", "systemd"} {
		writeFiles(t, filepath.Join(root, d), map[string]string{"cgroup.procs": ""})
	}
	writeFiles(t, filepath.Join(root, "unified"), map[string]string{"cgroup.controllers": ""})
	writeFiles(t, filepath.Join(root, "cpu,cpuacct/system.slice"), nil)
	writeFiles(t, filepath.Join(root, "memory/system.slice/vigil.service"), nil)
	env := sysEnv{root: root, mode: modeFromFiles(root), selfCgroup: `12:name=systemd:/system.slice/vigil.service
5:cpu,cpuacct:/system.slice
4:memory:/system.slice/vigil.service
3:pids:/
2:devices:/system.slice
0::/system.slice/vigil.service
`}
	if env.mode != ModeHybrid {
		t.Fatalf("mode = %v, want hybrid", env.mode)
	}
	hs, err := env.hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hs {
		names = append(names, h.name()+"="+h.own)
	}
	want := []string{"cpu,cpuacct=/system.slice", "memory=/system.slice/vigil.service", "pids=/"}
	if !slices.Equal(names, want) {
		t.Fatalf("hierarchies = %q, want %q", names, want)
	}
	// pids sits at its root, so the subtree defaults to "vigil" everywhere.
	subtree, err := chooseSubtree("", hs)
	if err != nil || subtree != "vigil" {
		t.Fatalf("chooseSubtree = %q, %v; want vigil", subtree, err)
	}
	m := &Manager{mode: env.mode, subtree: subtree, hs: hs}
	g := m.groupAt("apps/kamailio")
	if g.Path() != "vigil/apps/kamailio" {
		t.Errorf("Path() = %q", g.Path())
	}
	dirs := g.Dirs()
	wantDirs := map[string]string{
		"cpu":     filepath.Join(root, "cpu,cpuacct/system.slice/vigil/apps/kamailio"),
		"cpuacct": filepath.Join(root, "cpu,cpuacct/system.slice/vigil/apps/kamailio"),
		"memory":  filepath.Join(root, "memory/system.slice/vigil.service/vigil/apps/kamailio"),
		"pids":    filepath.Join(root, "pids/vigil/apps/kamailio"),
	}
	if len(dirs) != len(wantDirs) {
		t.Errorf("Dirs() = %v, want %v", dirs, wantDirs)
	}
	for k, v := range wantDirs {
		if dirs[k] != v {
			t.Errorf("Dirs()[%s] = %q, want %q", k, dirs[k], v)
		}
	}
	if d := m.Describe(); !strings.HasPrefix(d, "v1 hybrid: cpu,cpuacct="+filepath.Join(root, "cpu,cpuacct/system.slice/vigil")) {
		t.Errorf("Describe() = %q", d)
	}
	if _, err := g.OpenFD(); err == nil {
		t.Error("OpenFD on v1 succeeded")
	}

	// Without a hierarchy at its root, subtree "" puts control/ and apps/
	// directly in the own cgroups.
	subtree, err = chooseSubtree("", hs[:2])
	if err != nil || subtree != "" {
		t.Errorf("chooseSubtree without a root own cgroup = %q, %v; want \"\"", subtree, err)
	}
	// A nested subtree is created level by level and removed entirely.
	m2, err := open(Options{Subtree: "a/b"}, env)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"pids/a/b/control", "memory/system.slice/vigil.service/a/b/apps"} {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			t.Errorf("nested subtree: %v", err)
		}
	}
	if err := m2.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"pids/a", "memory/system.slice/vigil.service/a"} {
		if _, err := os.Stat(filepath.Join(root, d)); !os.IsNotExist(err) {
			t.Errorf("%s left after Destroy: %v", d, err)
		}
	}
	if s, err := chooseSubtree("a/../..", hs); err == nil {
		t.Errorf("chooseSubtree accepted an escaping subtree: %q", s)
	}
}

func TestMountinfoContainerRoot(t *testing.T) {
	env := sysEnv{
		root: "/sys/fs/cgroup", mode: ModeV1,
		selfCgroup: "4:memory:/docker/abc/inner\n3:pids:/other\n",
		mountinfo: `31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /mnt/elsewhere/pids rw,relatime - cgroup cgroup rw,pids
`,
	}
	hs, err := env.hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].mount != "/sys/fs/cgroup/memory" || hs[0].own != "/inner" {
		t.Fatalf("hierarchies = %+v, want memory at /inner only (pids is mounted outside the root)", hs[0])
	}
	env.selfCgroup = "4:memory:/elsewhere\n"
	if _, err := env.hierarchies(); err == nil {
		t.Error("own cgroup outside the mounted cgroup accepted")
	}
}

func TestFakeV2OpenApplyStats(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"cgroup.controllers":     "cpuset cpu io memory hugetlb pids rdma misc",
		"cgroup.subtree_control": "",
		"cgroup.procs":           "",
	})
	env := sysEnv{root: root, mode: modeFromFiles(root), selfCgroup: "0::/\n"}
	if env.mode != ModeV2 {
		t.Fatalf("mode = %v, want v2", env.mode)
	}
	m, err := open(Options{}, env)
	if err != nil {
		t.Fatal(err)
	}
	if m.subtree != "vigil" {
		t.Fatalf("own cgroup at the root: subtree = %q, want vigil", m.subtree)
	}
	base := filepath.Join(root, "vigil")
	for _, d := range []string{"control", "apps"} {
		if fi, err := os.Stat(filepath.Join(base, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s/%s not created: %v", base, d, err)
		}
	}
	// Enabling in the own cgroup (here the root) worked; below it the fake
	// lacks the kernel's files until we add them.
	b, _ := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
	if !strings.HasPrefix(string(b), "+") {
		t.Errorf("own cgroup.subtree_control = %q, want a +controller write", b)
	}

	// Play the kernel: interface files of the levels and the group.
	ctl := map[string]string{"cgroup.controllers": "cpuset cpu memory pids", "cgroup.subtree_control": "", "memory.min": "0", "memory.low": "0"}
	writeFiles(t, base, ctl)
	writeFiles(t, filepath.Join(base, "apps"), ctl)
	writeFiles(t, filepath.Join(base, "apps/other"), map[string]string{"memory.min": "1000", "memory.low": "max"})
	kam := filepath.Join(base, "apps/kamailio")
	writeFiles(t, kam, map[string]string{
		"cgroup.procs": "", "cgroup.events": "populated 1\nfrozen 0\n", "cgroup.kill": "",
		"cpu.weight": "100", "cpu.max": "max 100000", "cpuset.cpus": "",
		"memory.min": "0", "memory.low": "0", "memory.max": "max", "pids.max": "max",
		"cpu.stat":       "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 20\nnr_throttled 3\nthrottled_usec 4567\n",
		"memory.current": "8192", "memory.events": "low 0\nhigh 0\nmax 1\noom 1\noom_kill 2\n", "pids.current": "3",
	})
	g, err := m.Group("apps/kamailio")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Dirs(); len(got) != 1 || got[unifiedKey] != kam {
		t.Errorf("Dirs() = %v, want unified=%s", got, kam)
	}
	na, err := g.Apply(Resources{CPUWeight: 20000, CPUs: "1", CPUMax: "150%", MemoryMin: 5000, MemoryMax: 1 << 20, PidsMax: 9, RTRuntimeUs: 950})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, w := range []string{"cpu.weight: 20000 out of range, 10000 used", "cpu.rt_runtime_us: not available on cgroup v2"} {
		if !slices.Contains(na, w) {
			t.Errorf("notApplied = %q, want %q", na, w)
		}
	}
	fileIs(t, filepath.Join(kam, "cpu.weight"), "10000")
	fileIs(t, filepath.Join(kam, "cpuset.cpus"), "1")
	fileIs(t, filepath.Join(kam, "cpu.max"), "150000 100000")
	fileIs(t, filepath.Join(kam, "memory.min"), "5000")
	fileIs(t, filepath.Join(kam, "memory.low"), "5000")
	fileIs(t, filepath.Join(kam, "memory.max"), strconv.Itoa(1<<20))
	fileIs(t, filepath.Join(kam, "pids.max"), "9")
	// Ancestors below the own cgroup cover their children's protection;
	// a sibling's "max" memory.low counts as nothing to add.
	fileIs(t, filepath.Join(base, "apps/memory.min"), "6000")
	fileIs(t, filepath.Join(base, "apps/memory.low"), "5000")
	fileIs(t, filepath.Join(base, "memory.min"), "6000")
	if _, err := os.Stat(filepath.Join(root, "memory.min")); err == nil {
		t.Error("the own cgroup's memory.min was written")
	}

	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{CPUUsageUsec: 1234, NrPeriods: 20, NrThrottled: 3, ThrottledUsec: 4567, MemoryCurrent: 8192, MemoryMax: 1 << 20, OOMKills: 2, PidsCurrent: 3}
	if st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	if pop, err := g.Populated(); err != nil || !pop {
		t.Errorf("Populated() = %v, %v; want true from cgroup.events", pop, err)
	}
	f, err := g.OpenFD()
	if err != nil {
		t.Fatalf("OpenFD: %v", err)
	}
	f.Close()

	if err := g.AddProc(4242); err != nil {
		t.Fatal(err)
	}
	fileIs(t, filepath.Join(kam, "cgroup.procs"), "4242")
	if _, err := g.Apply(Resources{CPUMax: "max"}); err != nil {
		t.Fatal(err)
	}
	fileIs(t, filepath.Join(kam, "cpu.max"), "max 100000")

	// A controller the own cgroup lacks is reported, not failed.
	writeFiles(t, root, map[string]string{"cgroup.controllers": "cpu memory"})
	na, err = g.Apply(Resources{PidsMax: 5})
	if err != nil || !slices.Contains(na, "pids.max: pids controller not available") {
		t.Errorf("Apply without pids: notApplied %q, err %v", na, err)
	}
}

func TestCPUShares(t *testing.T) {
	for _, c := range []struct{ weight, shares uint64 }{
		{10000, 102400}, {100, 1024}, {1, 10}, {0, 2}, {50000, 262144}, {1 << 63, 262144},
	} {
		if got := cpuShares(c.weight); got != c.shares {
			t.Errorf("cpuShares(%d) = %d, want %d", c.weight, got, c.shares)
		}
	}
}

func TestParseCPUMax(t *testing.T) {
	for _, c := range []struct {
		in    string
		quota int64
		ok    bool
	}{
		{"150%", 150000, true}, {"100%", 100000, true}, {"2.5%", 2500, true}, {"max", -1, true},
		{"0.5%", 0, false}, {"150", 0, false}, {"%", 0, false}, {"-50%", 0, false}, {"NaN%", 0, false}, {"", 0, false},
	} {
		q, err := parseCPUMax(c.in)
		if (err == nil) != c.ok || (c.ok && q != c.quota) {
			t.Errorf("parseCPUMax(%q) = %d, %v; want %d ok=%v", c.in, q, err, c.quota, c.ok)
		}
	}
}

func TestCheckRel(t *testing.T) {
	for rel, ok := range map[string]bool{
		"control/locator": true, "apps/kamailio": true, "apps": true,
		"": false, "/apps": false, "..": false, "apps/../../x": false, "apps/cgroup.procs": false, ".": false,
	} {
		if err := checkRel(rel); (err == nil) != ok {
			t.Errorf("checkRel(%q) = %v, want ok=%v", rel, err, ok)
		}
	}
}

// Dropped names exactly the settings prev made and next no longer does.
func TestDropped(t *testing.T) {
	prev := Resources{CPUWeight: 500, IOWeight: 200, CPUs: "0", CPUMax: "50%", MemoryMin: 1, MemoryMax: 2, PidsMax: 3, RTRuntimeUs: 4}
	if d := Dropped(prev, prev); d != (Resources{}) {
		t.Fatalf("nothing dropped, got %+v", d)
	}
	if d := Dropped(prev, Resources{}); d != prev {
		t.Fatalf("all dropped: got %+v, want %+v", d, prev)
	}
	if got := Dropped(prev, Resources{}).Fields(); strings.Join(got, ",") != "cpus,cpu_weight,io_weight,cpu_max,memory_min,memory_max,pids_max,rt_runtime_us" {
		t.Fatalf("Fields: %q", got)
	}
	// A changed value is applied, not reset; a new one has nothing to reset.
	next := Resources{CPUWeight: 100, CPUs: "1", MemoryMax: 9}
	want := Resources{IOWeight: 200, CPUMax: "50%", MemoryMin: 1, PidsMax: 3, RTRuntimeUs: 4}
	if d := Dropped(prev, next); d != want {
		t.Fatalf("Dropped(prev, %+v) = %+v, want %+v", next, d, want)
	}
	if d := Dropped(Resources{}, next); d != (Resources{}) {
		t.Fatalf("from nothing: %+v", d)
	}
	// A reset that failed is merged back, to be dropped (and tried) again.
	if m := Merge(next, want); Dropped(m, next) != want {
		t.Fatalf("Merge(%+v, %+v) = %+v", next, want, m)
	}
}
