package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/internal/testtool"
	"golang.org/x/sys/unix"
)

// fakeRT is a group whose budget and per-CPU use the test sets.
type fakeRT struct {
	budget cgroup.RTBudget
	used   []uint64 // ns per CPU
	err    error
}

func (f *fakeRT) RTBudget() (cgroup.RTBudget, error) { return f.budget, f.err }
func (f *fakeRT) CPUUsagePerCPU() ([]uint64, error) {
	if f.err != nil {
		return nil, f.err
	}
	return append([]uint64(nil), f.used...), nil
}

// run polls w every rtPollEvery from *now for d, adding per CPU what each
// poll interval used (ms) first.
func (f *fakeRT) run(w *rtBudgetWatch, now *time.Duration, d time.Duration, perPollMS ...int) {
	for end := *now + d; *now < end; {
		*now += rtPollEvery
		for cpu, ms := range perPollMS {
			f.used[cpu] += uint64(ms) * uint64(time.Millisecond)
		}
		w.poll(*now)
	}
}

// The watch measures the busiest CPU, not the group's sum, as the kernel
// throttles: 100 ms a second on each of two CPUs is a third of a 300 ms
// budget and no warning, though the group used 200 ms; 160 ms on one CPU
// is an episode, logged once while it lasts and ended once after the
// hold, with its peak. Status's warning says which group and how much.
func TestRTBudgetWatchPerCPUEpisodes(t *testing.T) {
	var logs testtool.SyncBuffer
	w := newRTBudgetWatch(slog.New(slog.NewJSONHandler(&logs, nil)))
	nm := &fakeRT{budget: cgroup.RTBudget{Runtime: 300 * time.Millisecond, Period: time.Second}, used: make([]uint64, 2)}
	loc := &fakeRT{budget: nm.budget, used: make([]uint64, 2)}
	w.add("control/nodemanager", nm)
	w.add("control/locator", loc)
	var now time.Duration
	poll := func(d time.Duration, nmMS, locMS []int) {
		for end := now + d; now < end; {
			now += rtPollEvery
			for cpu := range 2 {
				nm.used[cpu] += uint64(nmMS[cpu]) * uint64(time.Millisecond)
				loc.used[cpu] += uint64(locMS[cpu]) * uint64(time.Millisecond)
			}
			w.poll(now)
		}
	}

	// 25 ms a poll on each CPU: 100 ms a second on each, 200 in all.
	poll(3*time.Second, []int{25, 25}, []int{1, 0})
	st, ok := w.state("control/nodemanager", now)
	if !ok || !st.Measured || st.Budget != 300*time.Millisecond {
		t.Fatalf("state = %+v, %v", st, ok)
	}
	if st.PeakShare < 0.30 || st.PeakShare > 0.37 || st.PeakUsed != 100*time.Millisecond {
		t.Errorf("two CPUs at 100 ms a second each: peak %.3f (%v), want a third of the budget (100ms)", st.PeakShare, st.PeakUsed)
	}
	if n := len(events(t, logs.String(), "rt_budget_high")); n != 0 {
		t.Fatalf("a third of the budget per CPU logged %d episodes\n%s", n, logs.String())
	}

	// 40 ms a poll on CPU 1: 160 ms a second, 53 % of the budget.
	poll(5*time.Second, []int{2, 40}, []int{1, 0})
	high := events(t, logs.String(), "rt_budget_high")
	if len(high) != 1 || high[0]["group"] != "control/nodemanager" || high[0]["cpu"] != 1.0 || high[0]["budget_ms"] != 300.0 {
		t.Fatalf("rt_budget_high lines = %v, want one for control/nodemanager on cpu 1 of 300 ms", high)
	}
	if s := high[0]["share_pct"].(float64); s < 50 || s > 56 {
		t.Errorf("share_pct = %v, want about 53", s)
	}
	st, _ = w.state("control/nodemanager", now)
	if !st.InEpisode || st.Episodes != 1 || st.PeakCPU != 1 || st.PeakUsed != 160*time.Millisecond {
		t.Errorf("state in the episode = %+v", st)
	}
	if ls, _ := w.state("control/locator", now); ls.PeakShare > 0.02 || ls.InEpisode {
		t.Errorf("the locator's state = %+v, want its own (4 ms a second)", ls)
	}
	gs := []GroupStatus{
		{Group: "control/nodemanager", RTBudgetUsec: 300000, RTPeakShare: &st.PeakShare, RTPeakUsedUsec: st.PeakUsed.Microseconds()},
		{Group: "control/locator", RTBudgetUsec: 300000, RTPeakShare: new(float64)},
	}
	warn := rtBudgetWarnings(gs)
	if len(warn) != 1 || warn[0].Kind != "rt_budget" || !strings.Contains(warn[0].Message, "control/nodemanager 160 of 300 ms on one CPU (53%)") ||
		strings.Contains(warn[0].Message, "control/locator") || !strings.Contains(warn[0].Message, "control.rt_budget") {
		t.Errorf("warnings = %+v", warn)
	}

	// Back to 10 ms a poll: the episode ends rtHold after the last high
	// window, not before, and once.
	poll(rtHold-time.Second, []int{10, 10}, []int{0, 0})
	if n := len(events(t, logs.String(), "rt_budget_high_end")); n != 0 {
		t.Fatalf("episode ended before the hold\n%s", logs.String())
	}
	poll(3*time.Second, []int{10, 10}, []int{0, 0})
	end := events(t, logs.String(), "rt_budget_high_end")
	if len(end) != 1 || end[0]["peak_used_ms"] != 160.0 || end[0]["peak_cpu"] != 1.0 {
		t.Fatalf("rt_budget_high_end lines = %v, want one with the peak 160 ms on cpu 1", end)
	}
	st, _ = w.state("control/nodemanager", now)
	if st.InEpisode || st.Episodes != 1 || st.PeakShare > 0.2 {
		t.Errorf("after the episode: %+v (the peak is of the last %v)", st, rtPeakKeep)
	}
	gs[0].RTPeakShare = &st.PeakShare
	if warn := rtBudgetWarnings(gs); len(warn) != 0 {
		t.Errorf("warnings after the episode = %+v", warn)
	}
}

// A poll that comes late measured a longer span: its use is averaged
// over it, not counted as a second's. A budget not in force (0: the
// process runs SCHED_OTHER, status says so elsewhere) is not watched,
// and what was measured against the old budget is dropped. A failing read
// is logged once.
func TestRTBudgetWatchLatePollsAndBudgetChanges(t *testing.T) {
	var logs testtool.SyncBuffer
	w := newRTBudgetWatch(slog.New(slog.NewJSONHandler(&logs, nil)))
	f := &fakeRT{budget: cgroup.RTBudget{Runtime: 100 * time.Millisecond, Period: time.Second}, used: make([]uint64, 1)}
	w.add("control/nodemanager", f)
	var now time.Duration
	f.run(w, &now, 2*time.Second, 5) // 20 ms a second
	// The next poll comes 3 s late, with 60 ms used meanwhile: still 20 a second.
	now += 3 * time.Second
	f.used[0] += uint64(60 * time.Millisecond)
	w.poll(now)
	if st, _ := w.state("control/nodemanager", now); st.PeakShare < 0.19 || st.PeakShare > 0.21 {
		t.Errorf("after a late poll: peak %.3f, want 0.20", st.PeakShare)
	}
	if n := len(events(t, logs.String(), "rt_budget_high")); n != 0 {
		t.Errorf("a late poll logged an episode")
	}

	f.budget.Runtime = 0
	f.run(w, &now, 2*time.Second, 250) // a budget of none: nothing to run out of
	st, ok := w.state("control/nodemanager", now)
	if !ok || st.Budget != 0 || st.Measured || st.InEpisode {
		t.Errorf("budget not in force: state %+v", st)
	}
	f.budget.Runtime = 100 * time.Millisecond
	f.run(w, &now, 2*time.Second, 15) // 60 ms a second, measured afresh
	st, _ = w.state("control/nodemanager", now)
	if st.Budget != 100*time.Millisecond || st.PeakShare < 0.59 || st.PeakShare > 0.61 || !st.InEpisode {
		t.Errorf("budget back: state %+v, want 60 %% and an episode", st)
	}

	f.err = errors.New("boom")
	f.run(w, &now, 2*time.Second)
	if n := len(events(t, logs.String(), "rt_budget_error")); n != 1 {
		t.Errorf("8 failed reads logged %d rt_budget_error lines, want 1", n)
	}
}

// A host without per-group budgets (v2, or no CONFIG_RT_GROUP_SCHED) says
// so once, and the watch stops; status shows no budget for the group.
func TestRTBudgetWatchUnsupported(t *testing.T) {
	var logs testtool.SyncBuffer
	w := newRTBudgetWatch(slog.New(slog.NewJSONHandler(&logs, nil)))
	if !w.poll(0) {
		t.Error("poll returned false before any group was created")
	}
	w.add("control/nodemanager", &fakeRT{err: fmt.Errorf("x: %w", cgroup.ErrNotSupported)})
	if w.poll(time.Second) {
		t.Error("poll returned true without a per-group budget")
	}
	w.poll(2 * time.Second)
	if n := len(events(t, logs.String(), "rt_budget_unwatched")); n != 1 {
		t.Errorf("rt_budget_unwatched lines = %d, want 1\n%s", n, logs.String())
	}
	if _, ok := w.state("control/nodemanager", 2*time.Second); ok {
		t.Error("an unsupported group has a state")
	}
	var none *rtBudgetWatch
	if _, ok := none.state("control/nodemanager", 0); ok {
		t.Error("a nil watch has a state")
	}
}

// On the real kernel: a SCHED_RR busy loop pinned to CPU 0 in a group
// with a 50 ms budget is throttled to 50 ms a second there, and the watch,
// reading the group's real files, sees its whole budget used on CPU 0 and
// logs an episode; a group beside it whose process sleeps shows nearly
// nothing. Needs root and a v1 kernel with CONFIG_RT_GROUP_SCHED (skips
// otherwise; the qemu VM's cgroup v2 has no per-group budget).
func TestRTBudgetWatchRealKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and a SCHED_RR process")
	}
	for _, tool := range []string{"chrt", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (util-linux) not found: %v", tool, err)
		}
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroup.Open(cgroup.Options{Subtree: "vigil-test-rt-" + hex.EncodeToString(b)})
	if err != nil {
		t.Fatalf("cgroup.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if cg.Mode() == cgroup.ModeV2 {
		t.Skip("cgroup v2 has no per-group realtime budget")
	}
	busy, err := cg.Group("control/nodemanager")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := busy.RTBudget(); errors.Is(err, cgroup.ErrNotSupported) {
		t.Skip("no cpu.rt_runtime_us on this kernel (CONFIG_RT_GROUP_SCHED off)")
	}
	idle, err := cg.Group("control/locator")
	if err != nil {
		t.Fatal(err)
	}
	const budget = 50 * time.Millisecond
	for _, g := range []*cgroup.Group{busy, idle} {
		// The kernel's realtime budget is shared with the other packages'
		// tests, which go test runs beside this one (the cgroup package
		// holds nearly all of it for a moment): wait for room.
		for deadline := time.Now().Add(30 * time.Second); ; {
			_, err := g.Apply(cgroup.Resources{RTRuntimeUs: budget.Microseconds()})
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EINVAL) || time.Now().After(deadline) {
				t.Fatalf("Apply %s: %v", g.Path(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Each child waits on its stdin until it is in its group, then becomes
	// SCHED_RR (refused outside a group with a budget) in place (exec).
	start := func(g *cgroup.Group, script string) int {
		cmd := exec.Command("sh", "-c", "read gate; exec chrt -r 10 taskset -c 0 "+script)
		gate, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill() // ours, by pid, not yet reaped
			<-done
			if t.Failed() {
				t.Logf("child %d output: %s", cmd.Process.Pid, out.String())
			}
		})
		if err := g.AddProc(cmd.Process.Pid); err != nil {
			t.Fatalf("AddProc: %v", err)
		}
		if _, err := gate.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		return cmd.Process.Pid
	}
	start(busy, `sh -c 'while :; do :; done'`)
	sleeper := start(idle, `sleep 60`)
	// The sleeper's start (three execs) is use of its own; the watch's
	// first reading comes after it.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sleeper)); strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sleeping child did not reach sleep within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	var logs testtool.SyncBuffer
	w := newRTBudgetWatch(slog.New(slog.NewJSONHandler(&logs, nil)))
	// The production reader: files opened once, read with pread.
	w.add("control/nodemanager", &groupRT{g: busy})
	w.add("control/locator", &groupRT{g: idle})
	defer w.close()
	tick := time.NewTicker(rtPollEvery)
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	var st RTBudgetState
	for {
		if !w.poll(w.now()) {
			t.Fatal("the watch stopped: no per-group budget seen")
		}
		st, _ = w.state("control/nodemanager", w.now())
		if st.Measured && len(events(t, logs.String(), "rt_budget_high")) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no episode within 30 s; state %+v\n%s", st, logs.String())
		}
		<-tick.C
	}
	// The kernel lets it run its budget and no more on CPU 0 in each
	// period; the window, not aligned with the kernel's periods, sees
	// about that.
	if st.Budget != budget || st.PeakCPU != 0 || st.PeakShare < 0.7 || st.PeakShare > 1.3 {
		t.Errorf("busy group: %+v, want about its whole %v used on cpu 0", st, budget)
	}
	high := events(t, logs.String(), "rt_budget_high")
	if len(high) != 1 || high[0]["group"] != "control/nodemanager" || high[0]["cpu"] != 0.0 || high[0]["budget_ms"] != 50.0 {
		t.Errorf("rt_budget_high lines = %v", high)
	}
	if ls, ok := w.state("control/locator", w.now()); !ok || ls.Budget != budget || ls.PeakShare > 0.1 || ls.InEpisode {
		t.Errorf("sleeping group: %+v, %v", ls, ok)
	}
	t.Logf("busy group: %.0f%% of %v on cpu %d", st.PeakShare*100, st.Budget, st.PeakCPU)
}

// poke, at every control-plane report, wakes the watch at most every
// rtPollEvery, and never blocks the loop.
func TestRTBudgetWatchPoke(t *testing.T) {
	w := newRTBudgetWatch(slog.New(slog.DiscardHandler))
	var now time.Duration
	w.now = func() time.Duration { return now }
	woken := func() bool {
		select {
		case <-w.pokes:
			return true
		default:
			return false
		}
	}
	now = time.Second
	w.poke()
	w.poke() // the same instant: nothing more, and no block
	if !woken() || woken() {
		t.Fatal("first poke: want one wake-up")
	}
	for now += 15 * time.Millisecond; now < time.Second+rtPollEvery; now += 15 * time.Millisecond {
		w.poke()
	}
	if woken() {
		t.Fatalf("reports every 15 ms woke the watch within %v", rtPollEvery)
	}
	w.poke()
	if !woken() {
		t.Fatalf("no wake-up %v after the last", now-time.Second)
	}
	var none *rtBudgetWatch
	none.poke() // a host without the watch
}

// A group throttled at its budget runs at the start of each of the
// kernel's periods: a window longer than a period can hold two of those
// runs. With polls 300 ms apart, not in step with the periods, the watch
// still reads the budget, not up to twice it.
func TestRTBudgetWatchThrottledGroupReadsItsBudget(t *testing.T) {
	w := newRTBudgetWatch(slog.New(slog.DiscardHandler))
	const budget = 50 * time.Millisecond
	f := &fakeRT{budget: cgroup.RTBudget{Runtime: budget, Period: time.Second}, used: make([]uint64, 1)}
	w.add("control/nodemanager", f)
	usedAt := func(at time.Duration) uint64 { // 50 ms at the start of each second
		k := at / time.Second
		return uint64(k*budget + min(at-k*time.Second, budget))
	}
	var peak float64
	for now := time.Duration(0); now <= 6*time.Second; now += 300 * time.Millisecond {
		f.used[0] = usedAt(now)
		w.poll(now)
		if st, _ := w.state("control/nodemanager", now); st.Measured {
			peak = max(peak, st.PeakShare)
		}
	}
	if peak < 0.9 || peak > 1.0 {
		t.Errorf("a group using its whole budget each period read %.0f%% at most, want 90-100%%", peak*100)
	}
}
