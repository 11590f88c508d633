package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParsePSI(t *testing.T) {
	p, err := ParsePSI("some avg10=1.50 avg60=0.25 avg300=0.01 total=123456\nfull avg10=0.10 avg60=0.20 avg300=0.30 total=42\n")
	if err != nil {
		t.Fatal(err)
	}
	want := PSI{Some: PSILine{1.5, 0.25, 0.01, 123456}, Full: PSILine{0.1, 0.2, 0.3, 42}}
	if p != want {
		t.Errorf("ParsePSI = %+v, want %+v", p, want)
	}
	// Older kernels have no "full" line for cpu; unknown lines and keys are skipped.
	p, err = ParsePSI("some avg10=3.00 avg60=2.00 avg300=1.00 total=7 extra=9\nnew avg10=1\n")
	if err != nil || p != (PSI{Some: PSILine{3, 2, 1, 7}}) {
		t.Errorf("ParsePSI(some only) = %+v, %v", p, err)
	}
	for _, bad := range []string{
		"some avg10=x avg60=0 avg300=0 total=0",
		"some avg10=0 avg60=0 avg300=0",
		"full avg10=0 avg60=0 avg300=0 total=-1",
		"some avg10",
	} {
		if _, err := ParsePSI(bad); err == nil {
			t.Errorf("ParsePSI(%q) succeeded", bad)
		}
	}
}

func TestHostPressureFakeProc(t *testing.T) {
	proc := t.TempDir()
	writeFiles(t, filepath.Join(proc, "pressure"), map[string]string{
		"cpu":    "some avg10=12.50 avg60=3.00 avg300=1.00 total=1000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=4\n",
	})
	p, err := HostPressure(proc)
	if err != nil {
		t.Fatal(err)
	}
	if p.Scope != PSIScopeHost || p.CPU == nil || p.Memory == nil || p.IO != nil {
		t.Fatalf("HostPressure = %+v, want host scope with cpu and memory, io missing", p)
	}
	if p.CPU.Some != (PSILine{12.5, 3, 1, 1000}) || p.Memory.Full.TotalUsec != 4 {
		t.Errorf("HostPressure cpu=%+v memory=%+v", *p.CPU, *p.Memory)
	}
	// A kernel without PSI (no pressure directory) is "not available", not an error.
	p, err = HostPressure(t.TempDir())
	if err != nil || p.Scope != PSIScopeNone || p.CPU != nil || p.NotAvailableNote == "" {
		t.Errorf("HostPressure without pressure files = %+v, %v; want not available with a note", p, err)
	}
	// A corrupt file is an error naming it.
	writeFiles(t, filepath.Join(proc, "pressure"), map[string]string{"io": "some avg10=zz avg60=0 avg300=0 total=0\n"})
	if _, err := HostPressure(proc); err == nil || !strings.Contains(err.Error(), filepath.Join(proc, "pressure", "io")) {
		t.Errorf("HostPressure with a corrupt io file: err = %v, want one naming the file", err)
	}
}

// fakeV2Group builds a fake v2 root holding apps/kamailio with the files
// FullStats reads, and returns the group and its directory.
func fakeV2Group(t *testing.T) (*Group, string) {
	t.Helper()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"cgroup.controllers": "cpu memory pids", "cgroup.subtree_control": "", "cgroup.procs": ""})
	m, err := open(Options{Subtree: "v"}, sysEnv{root: root, mode: ModeV2, selfCgroup: "0::/\n"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Group("apps/kamailio")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "v/apps/kamailio")
	writeFiles(t, dir, map[string]string{
		"cpu.stat":       "usage_usec 900\nuser_usec 800\nsystem_usec 100\nnr_periods 10\nnr_throttled 4\nthrottled_usec 333\n",
		"memory.current": "4096", "memory.max": "1048576", "pids.current": "2",
		"memory.events":   "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n",
		"cpu.pressure":    "some avg10=55.00 avg60=40.00 avg300=10.00 total=99\nfull avg10=1.00 avg60=2.00 avg300=3.00 total=8\n",
		"memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"io.pressure":     "some avg10=0.50 avg60=0.00 avg300=0.00 total=2\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=3\n",
	})
	return g, dir
}

func TestFakeV2FullStats(t *testing.T) {
	g, dir := fakeV2Group(t)
	st, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	wantBase := Stats{CPUUsageUsec: 900, NrPeriods: 10, NrThrottled: 4, ThrottledUsec: 333, MemoryCurrent: 4096, MemoryMax: 1 << 20, OOMKills: 5, PidsCurrent: 2}
	if st.Stats != wantBase {
		t.Errorf("Stats = %+v, want %+v", st.Stats, wantBase)
	}
	if want := (MemoryEvents{Low: 1, High: 2, Max: 3, OOM: 4, OOMKill: 5, OOMGroupKill: 6}); st.Memory != want {
		t.Errorf("Memory = %+v, want %+v", st.Memory, want)
	}
	p := st.Pressure
	if p.Scope != PSIScopeGroup || p.CPU == nil || p.Memory == nil || p.IO == nil {
		t.Fatalf("Pressure = %+v, want group scope with all three", p)
	}
	if *p.CPU != (PSI{Some: PSILine{55, 40, 10, 99}, Full: PSILine{1, 2, 3, 8}}) || p.IO.Full.Avg10 != 0.25 || p.Memory.Some.TotalUsec != 1 {
		t.Errorf("Pressure cpu=%+v memory=%+v io=%+v", *p.CPU, *p.Memory, *p.IO)
	}

	// Only some files: the others are nil, the scope stays the group's.
	if err := os.Remove(filepath.Join(dir, "io.pressure")); err != nil {
		t.Fatal(err)
	}
	if st, err = g.FullStats(); err != nil || st.Pressure.Scope != PSIScopeGroup || st.Pressure.IO != nil || st.Pressure.CPU == nil {
		t.Errorf("without io.pressure: %+v, %v", st.Pressure, err)
	}

	// No pressure files at all (psi=0 hides them): the host's PSI stands
	// in, or nothing when the host has none either; never an error.
	for _, f := range []string{"cpu.pressure", "memory.pressure"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	st, err = g.FullStats()
	if err != nil {
		t.Fatalf("FullStats without pressure files: %v", err)
	}
	_, hostErr := os.ReadFile("/proc/pressure/cpu")
	switch {
	case hostErr == nil:
		if st.Pressure.Scope != PSIScopeHost || st.Pressure.CPU == nil {
			t.Errorf("Pressure = %+v, want the host's", st.Pressure)
		}
	case errors.Is(hostErr, os.ErrNotExist) || errors.Is(hostErr, unix.EOPNOTSUPP):
		if st.Pressure.Scope != PSIScopeNone || st.Pressure.NotAvailableNote == "" {
			t.Errorf("Pressure = %+v, want not available with a note", st.Pressure)
		}
	default:
		t.Fatalf("read /proc/pressure/cpu: %v", hostErr)
	}

	// A corrupt pressure file is an error naming it.
	writeFiles(t, dir, map[string]string{"cpu.pressure": "some avg10=1 avg60=1\n"})
	if _, err := g.FullStats(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "cpu.pressure")) {
		t.Errorf("corrupt cpu.pressure: err = %v, want one naming the file", err)
	}
}

// readHostCPUPressure reads /proc/pressure/cpu directly, bypassing procfs.
func readHostCPUPressure(t *testing.T) (PSI, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/pressure/cpu")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.EOPNOTSUPP) {
		return PSI{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePSI(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return p, true
}

func TestFullStatsKernelBusyGroup(t *testing.T) {
	m, _ := kernelManager(t, nil)
	requireV1(t, m)
	g, err := m.Group("apps/busy")
	if err != nil {
		t.Fatal(err)
	}
	// A quota of 5% of a CPU that three busy loops exhaust even on a busy
	// host: throttling, and more runnable tasks than this 2-CPU host has,
	// so host CPU pressure.
	if _, err := g.Apply(Resources{CPUMax: "5%"}); err != nil {
		t.Fatal(err)
	}
	before, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	hostBefore, psiOK := readHostCPUPressure(t)
	c := startGated(t, `p=; for i in 1 2 3; do (while :; do :; done) >/dev/null & p="$p $!"; done; read stop; kill $p`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	time.Sleep(1500 * time.Millisecond)
	during, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	hostAfter, _ := readHostCPUPressure(t)
	c.gate.Write([]byte("stop\n"))
	if err := c.wait(t, 30*time.Second); err != nil {
		t.Fatalf("busy child: %v", err)
	}
	t.Logf("before %+v\nduring %+v", before.Stats, during.Stats)
	if during.PidsCurrent < 4 {
		t.Errorf("PidsCurrent = %d, want >= 4 (shell and three loops)", during.PidsCurrent)
	}
	// 1.5 s at a 5% quota is about 75 ms of CPU (a period or two more with
	// scheduling slack); the quota is the upper bound.
	if got := during.CPUUsageUsec - before.CPUUsageUsec; got < 10000 || got > 300000 {
		t.Errorf("CPU usage grew by %d µs in 1.5 s under a 5%% quota, want 10000..300000", got)
	}
	if during.NrThrottled <= before.NrThrottled || during.ThrottledUsec <= before.ThrottledUsec {
		t.Errorf("no throttling under an exhausted quota: before %+v during %+v", before.Stats, during.Stats)
	}
	if !psiOK {
		if during.Pressure.Scope != PSIScopeNone {
			t.Errorf("host without PSI, Pressure = %+v", during.Pressure)
		}
		return
	}
	p := during.Pressure
	if p.Scope != PSIScopeHost || p.CPU == nil || p.Memory == nil || p.IO == nil {
		t.Fatalf("v1 Pressure = %+v, want host scope with cpu, memory and io", p)
	}
	// FullStats read the host file between the two direct reads.
	if p.CPU.Some.TotalUsec < hostBefore.Some.TotalUsec || p.CPU.Some.TotalUsec > hostAfter.Some.TotalUsec {
		t.Errorf("host cpu some total %d outside the direct reads [%d, %d]", p.CPU.Some.TotalUsec, hostBefore.Some.TotalUsec, hostAfter.Some.TotalUsec)
	}
	if hostAfter.Some.TotalUsec <= hostBefore.Some.TotalUsec {
		t.Errorf("host cpu pressure total did not grow with 3 busy loops on %d CPUs", numCPU(t))
	}
}

func numCPU(t *testing.T) int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	return set.Count()
}

func TestFullStatsKernelOOM(t *testing.T) {
	m, _ := kernelManager(t, nil)
	requireV1(t, m)
	g, err := m.Group("apps/hog")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(Resources{MemoryMax: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	before, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	if before.Memory != (MemoryEvents{}) {
		t.Fatalf("fresh group has memory events: %+v", before.Memory)
	}
	// awk doubles a string until the group's limit OOM-kills it; the shell
	// (small) survives and reports awk's status.
	c := startGated(t, `awk 'BEGIN { s = "x"; while (1) s = s s }'; echo "status=$?"`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	if err := c.wait(t, 60*time.Second); err != nil {
		t.Fatalf("shell: %v", err)
	}
	if out := c.out.String(); !strings.Contains(out, "status=137") {
		t.Errorf("awk was not SIGKILLed: %q", out)
	}
	after, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memory events after the hog: %+v", after.Memory)
	if after.Memory.OOMKill < 1 || after.OOMKills != after.Memory.OOMKill {
		t.Errorf("OOMKill = %d (Stats.OOMKills %d), want >= 1 and equal", after.Memory.OOMKill, after.OOMKills)
	}
	if after.Memory.Max < 1 {
		t.Errorf("memory.failcnt = %d, want >= 1 after hitting the limit", after.Memory.Max)
	}
	if after.Memory.UnderOOM {
		t.Errorf("UnderOOM still set after the kill")
	}
}

// TestFullStatsKernelV2 runs in the cgroup v2 VM (cgroup/testdata/run-v2-vm.sh).
func TestFullStatsKernelV2(t *testing.T) {
	m, _ := kernelManager(t, nil)
	if m.Mode() != ModeV2 {
		t.Skip("reads v2 pressure files; this host is " + m.Mode().String())
	}
	g, err := m.Group("apps/busy")
	if err != nil {
		t.Fatal(err)
	}
	c := startGated(t, `i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`)
	if err := g.AddProc(c.pid); err != nil {
		t.Fatal(err)
	}
	c.open()
	if err := c.wait(t, 60*time.Second); err != nil {
		t.Fatalf("busy child: %v", err)
	}
	st, err := g.FullStats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	if st.CPUUsageUsec == 0 {
		t.Error("no CPU usage after a busy child")
	}
	dir := g.Dirs()[unifiedKey]
	if _, err := os.Stat(filepath.Join(dir, "cpu.pressure")); err == nil {
		if st.Pressure.Scope != PSIScopeGroup || st.Pressure.CPU == nil {
			t.Errorf("Pressure = %+v, want the group's own", st.Pressure)
		}
	} else if st.Pressure.Scope == PSIScopeGroup {
		t.Errorf("group scope without %s/cpu.pressure", dir)
	}
}
