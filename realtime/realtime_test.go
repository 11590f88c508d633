package realtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as the child that calls ApplySelf, so
// the test runner itself never becomes realtime or mlocked.
const childEnv = "VIGIL_REALTIME_TEST_CHILD"

// childResult is what the child reports back as JSON on stdout.
type childResult struct {
	Report        Report
	ThreadsBefore int
	// After starting new goroutines locked to new OS threads:
	ThreadsAfter []Thread
	// StatPolicy is field 41 (policy) of /proc/self/task/TID/stat per
	// thread: a second reading, independent of sched_getattr.
	StatPolicy map[int]int
	VmLckKiB   int64
	OOMAdj     int
	PreRR      string // "pre-rr" mode: the policy before ApplySelf
	// FileNotLocked lists the readable file-backed mappings (/proc/self/
	// smaps) not wholly resident and locked after ApplySelf: a page of
	// them could still be read from disk (a major fault).
	FileNotLocked []string
	FileKiB       int64 // their total size
	Err           string
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child waits for "go" on stdin (the parent has placed it in its cgroup by
// then), applies the mode and prints a childResult.
func child(mode string) int {
	var res childResult
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		res.Err = "read go: " + err.Error()
	} else {
		runChild(mode, &res)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}

func runChild(mode string, res *childResult) {
	s := Settings{Realtime: mode == "on"}
	if mode == "pre-rr" {
		// Start realtime, as a child of a realtime supervisor would, so
		// that "off" has something to undo.
		if err := setAll(unix.SCHED_RR, 5); err != nil {
			res.Err = "pre-rr: " + err.Error()
			return
		}
		ths, _ := Threads()
		res.PreRR = summarize(ths)
	}
	ths, err := Threads()
	if err != nil {
		res.Err = err.Error()
		return
	}
	res.ThreadsBefore = len(ths)
	res.Report = ApplySelf(s)
	// New OS threads: each goroutine locked to its thread and blocked in a
	// syscall keeps its M, so the runtime must clone new ones, from
	// threads that are already realtime (or not).
	var started, release sync.WaitGroup
	stop := make(chan struct{})
	for range 6 {
		started.Add(1)
		release.Add(1)
		go func() {
			defer release.Done()
			runtime.LockOSThread()
			started.Done()
			<-stop
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond)
	res.ThreadsAfter, err = Threads()
	if err != nil {
		res.Err = err.Error()
	}
	res.StatPolicy = map[int]int{}
	for _, t := range res.ThreadsAfter {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", t.TID))
		if err != nil {
			continue
		}
		// Fields after the ")" of comm: state is field 3, policy field 41.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 38 {
			p, _ := strconv.Atoi(f[38])
			res.StatPolicy[t.TID] = p
		}
	}
	res.VmLckKiB = statusKiB("VmLck")
	res.FileNotLocked, res.FileKiB = fileMappingsNotLocked()
	res.OOMAdj = readOOMScoreAdj()
	close(stop)
	release.Wait()
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds cgroups, sets SCHED_RR and mlockall in a child process")
	}
}

// testGroup creates a random cgroup tree with one control group, with an RT
// budget when budgetUs > 0.
func testGroup(t *testing.T, budgetUs int64) (*cgroup.Manager, *cgroup.Group) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	m, err := cgroup.Open(cgroup.Options{Subtree: "vigil-rttest-" + hex.EncodeToString(b)})
	if err != nil {
		t.Fatalf("cgroup open: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("cgroup destroy: %v", err)
		}
	})
	g, err := m.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	if budgetUs > 0 {
		na, err := g.Apply(cgroup.Resources{RTRuntimeUs: budgetUs})
		if err != nil {
			t.Fatalf("apply rt budget: %v", err)
		}
		if len(na) > 0 {
			t.Skipf("RT budget not expressible on this host (%v): the budget test needs v1 with CONFIG_RT_GROUP_SCHED", na)
		}
	}
	return m, g
}

// runChild starts the test binary as a child in g, lets it apply mode and
// returns its result.
func runInGroup(t *testing.T, g *cgroup.Group, mode string) childResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("place child: %v", err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; output %q", err, out.String())
	}
	var res childResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &res); err != nil {
		t.Fatalf("child output %q: %v", out.String(), err)
	}
	if res.Err != "" {
		t.Fatalf("child: %s", res.Err)
	}
	t.Logf("child report: %s", res.Report)
	return res
}

// checkOOM checks oom_score_adj -1000, or, where the process may not lower
// it (no CAP_SYS_RESOURCE, as in some containers), that the refusal is
// explained and the value left alone.
func checkOOM(t *testing.T, res childResult) {
	t.Helper()
	r := res.Report
	if HasCap(unix.CAP_SYS_RESOURCE) {
		if r.OOMScoreAdj != -1000 || res.OOMAdj != -1000 {
			t.Errorf("oom_score_adj report %d, read %d, want -1000", r.OOMScoreAdj, res.OOMAdj)
		}
		return
	}
	t.Logf("no CAP_SYS_RESOURCE here: checking that the oom_score_adj refusal is explained instead of -1000")
	if r.OOMScoreAdj != res.OOMAdj || !slices.ContainsFunc(r.Degraded, func(d string) bool {
		return strings.HasPrefix(d, "oom_score_adj -1000 not set") && strings.Contains(d, "CAP_SYS_RESOURCE, which this process lacks")
	}) {
		t.Errorf("oom_score_adj refusal not explained: report %d, read %d, degraded %q", r.OOMScoreAdj, res.OOMAdj, r.Degraded)
	}
}

// otherDegraded drops the lines about capabilities this host may withhold.
func otherDegraded(ds []string) []string {
	var out []string
	for _, d := range ds {
		if !strings.HasPrefix(d, "oom_score_adj") && !strings.HasPrefix(d, "RLIMIT_MEMLOCK") {
			out = append(out, d)
		}
	}
	return out
}

func checkAllThreads(t *testing.T, res childResult, policy string, prio int, statPolicy int) {
	t.Helper()
	if len(res.ThreadsAfter) <= res.ThreadsBefore {
		t.Fatalf("no new threads were created: %d before, %d after", res.ThreadsBefore, len(res.ThreadsAfter))
	}
	for _, th := range res.ThreadsAfter {
		if th.Policy != policy || th.Priority != prio {
			t.Errorf("thread %d: %s prio %d, want %s prio %d", th.TID, th.Policy, th.Priority, policy, prio)
		}
		if p, ok := res.StatPolicy[th.TID]; ok && p != statPolicy {
			t.Errorf("thread %d: /proc stat policy %d, want %d", th.TID, p, statPolicy)
		}
	}
	if len(res.StatPolicy) == 0 {
		t.Error("no /proc/self/task/*/stat policy read")
	}
}

func TestRealtimeWithBudget(t *testing.T) {
	needRoot(t)
	_, g := testGroup(t, 20000)
	res := runInGroup(t, g, "on")
	r := res.Report
	if d := otherDegraded(r.Degraded); len(d) != 0 {
		t.Errorf("degraded in a group with an RT budget: %q", d)
	}
	if r.Sched != "SCHED_RR prio 10" {
		t.Errorf("Sched = %q, want SCHED_RR prio 10", r.Sched)
	}
	checkAllThreads(t, res, "SCHED_RR", DefaultPriority, unix.SCHED_RR)
	if !r.Mlocked || res.VmLckKiB <= 0 {
		t.Errorf("not mlocked: Mlocked=%t VmLck=%d kB", r.Mlocked, res.VmLckKiB)
	}
	checkOOM(t, res)
	checkLean(t, res)
}

// checkLean checks the memory guarantee without its old cost: every page
// of the binary is resident and locked (no major fault, ever), while the
// runtime's untouched anonymous reservations (the 32 MiB heap arena index,
// the FIPS entropy scratch buffer) are not made resident: locking them
// with MCL_CURRENT added over 60 MiB.
func checkLean(t *testing.T, res childResult) {
	t.Helper()
	r := res.Report
	if len(res.FileNotLocked) > 0 {
		t.Errorf("file-backed mappings not wholly resident and locked: %q", res.FileNotLocked)
	}
	if res.FileKiB == 0 {
		t.Error("no file-backed mapping found in /proc/self/smaps")
	}
	if r.RSSAfterKiB < r.RSSBeforeKiB {
		t.Errorf("RSS shrank while locking: %d -> %d kB", r.RSSBeforeKiB, r.RSSAfterKiB)
	}
	if grown := r.RSSAfterKiB - r.RSSBeforeKiB; grown > res.FileKiB+8<<10 {
		t.Errorf("locking made %d KiB resident, more than the file mappings (%d KiB) and 8 MiB: untouched anonymous memory was faulted in (flags %q)",
			grown, res.FileKiB, r.MlockFlags)
	}
}

// fileMappingsNotLocked reads /proc/self/smaps: the readable file-backed
// mappings whose Rss is below their Size or that are not locked (VmFlags
// "lo"; smaps' Locked is proportional, shared pages count in part), and
// their total size.
func fileMappingsNotLocked() (bad []string, totalKiB int64) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return []string{err.Error()}, 0
	}
	var head string
	var file bool
	var size, rss int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			head = l
			file = len(f) >= 6 && strings.HasPrefix(f[5], "/") && strings.HasPrefix(f[1], "r")
			continue
		}
		if !file || len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64) // 0 for VmFlags
		switch f[0] {
		case "Size:":
			size = v
			totalKiB += v
		case "Rss:":
			rss = v
		case "VmFlags:":
			if rss < size || !slices.Contains(f[1:], "lo") {
				bad = append(bad, fmt.Sprintf("%s (size %d rss %d kB, flags %v)", head, size, rss, f[1:]))
			}
		}
	}
	return bad, totalKiB
}

func TestRealtimeWithoutBudget(t *testing.T) {
	needRoot(t)
	_, g := testGroup(t, 0)
	res := runInGroup(t, g, "on")
	r := res.Report
	want := "cpu.rt_runtime_us=0 (CONFIG_RT_GROUP_SCHED"
	if cpuCgroupOf("self").v2 {
		want = "CONFIG_RT_GROUP_SCHED"
	} else if _, err := os.Stat(filepath.Join(g.Dirs()["cpu"], "cpu.rt_runtime_us")); err != nil {
		t.Skip("kernel without CONFIG_RT_GROUP_SCHED: every cpu group may hold RT tasks")
	}
	var found bool
	for _, d := range r.Degraded {
		if strings.HasPrefix(d, "SCHED_RR refused") && strings.Contains(d, want) && strings.Contains(d, g.Path()) {
			found = true
		}
	}
	if !found {
		t.Errorf("Degraded %q does not explain the refusal with %q and the group %s", r.Degraded, want, g.Path())
	}
	if r.Sched != "SCHED_OTHER" {
		t.Errorf("Sched = %q, want SCHED_OTHER", r.Sched)
	}
	checkAllThreads(t, res, "SCHED_OTHER", 0, schedOther)
	// The other steps do not depend on the RT budget.
	if !r.Mlocked {
		t.Error("not mlocked")
	}
	checkOOM(t, res)
}

func TestRealtimeOff(t *testing.T) {
	needRoot(t)
	_, g := testGroup(t, 20000)
	res := runInGroup(t, g, "pre-rr")
	if res.PreRR != "SCHED_RR prio 5" {
		t.Fatalf("child did not start realtime: %q", res.PreRR)
	}
	r := res.Report
	if d := otherDegraded(r.Degraded); len(d) != 0 {
		t.Errorf("degraded: %q", d)
	}
	if r.Sched != "SCHED_OTHER" {
		t.Errorf("Sched = %q, want SCHED_OTHER", r.Sched)
	}
	checkAllThreads(t, res, "SCHED_OTHER", 0, schedOther)
	if r.Mlocked || res.VmLckKiB != 0 {
		t.Errorf("locked with realtime off: Mlocked=%t VmLck=%d kB", r.Mlocked, res.VmLckKiB)
	}
	checkOOM(t, res) // with realtime off too
}

func TestSummarize(t *testing.T) {
	cases := []struct {
		ths  []Thread
		want string
	}{
		{[]Thread{{1, "SCHED_RR", 10}, {2, "SCHED_RR", 10}}, "SCHED_RR prio 10"},
		{[]Thread{{1, "SCHED_OTHER", 0}}, "SCHED_OTHER"},
		{[]Thread{{1, "SCHED_RR", 10}, {2, "SCHED_OTHER", 0}, {3, "SCHED_RR", 10}},
			"mixed: SCHED_RR prio 10 on 2 of 3 threads, SCHED_OTHER on 1 of 3 threads"},
	}
	for _, c := range cases {
		if got := summarize(c.ths); got != c.want {
			t.Errorf("summarize(%v) = %q, want %q", c.ths, got, c.want)
		}
	}
}

func TestCgroupMount(t *testing.T) {
	mi := `25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
33 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 25 0:31 /sub /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
`
	if r, m := cgroupMount(mi, false); r != "/" || m != "/sys/fs/cgroup/cpu,cpuacct" {
		t.Errorf("v1 cpu mount = %q %q", r, m)
	}
	if r, m := cgroupMount(mi, true); r != "/" || m != "/sys/fs/cgroup/unified" {
		t.Errorf("v2 mount = %q %q", r, m)
	}
	if _, m := cgroupMount("36 25 0:32 / /x - cgroup cgroup rw,cpuacct\n", false); m != "" {
		t.Errorf("cpuacct-only mount taken for cpu: %q", m)
	}
}
