package procstat

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseSchedStat(t *testing.T) {
	st, err := ParseSchedStat("869567 305757 15\n")
	if err != nil || st != (SchedStat{RunNs: 869567, WaitNs: 305757, Timeslices: 15}) {
		t.Errorf("ParseSchedStat = %+v, %v", st, err)
	}
	if st.AvgWait() != time.Duration(305757/15) {
		t.Errorf("AvgWait = %v", st.AvgWait())
	}
	for _, bad := range []string{"", "1 2", "1 x 3", "-1 2 3"} {
		if _, err := ParseSchedStat(bad); err == nil {
			t.Errorf("ParseSchedStat(%q) succeeded", bad)
		}
	}
}

func TestDiffMatchesThreads(t *testing.T) {
	t0 := time.Now()
	a := Sample{At: t0, Threads: map[int]SchedStat{
		10: {RunNs: 100, WaitNs: 50, Timeslices: 2},
		11: {RunNs: 500, WaitNs: 500, Timeslices: 9}, // exits before b
		12: {RunNs: 900, WaitNs: 900, Timeslices: 9}, // id reused in b by a new thread
	}}
	b := Sample{At: t0.Add(time.Second), Threads: map[int]SchedStat{
		10: {RunNs: 300, WaitNs: 150, Timeslices: 5},
		12: {RunNs: 10, WaitNs: 20, Timeslices: 1},
		13: {RunNs: 40, WaitNs: 30, Timeslices: 2}, // started in between
	}}
	d := Diff(a, b)
	want := SchedStat{RunNs: 200 + 10 + 40, WaitNs: 100 + 20 + 30, Timeslices: 3 + 1 + 2}
	if d.SchedStat != want || d.Elapsed != time.Second {
		t.Errorf("Diff = %+v, want %+v over 1s", d, want)
	}
	if r := d.WaitRate(); r != 150e-9 {
		t.Errorf("WaitRate = %v, want 1.5e-7", r)
	}
	if (Delta{}).WaitRate() != 0 {
		t.Error("WaitRate with no elapsed time is not 0")
	}
}

func TestReadProcessSelf(t *testing.T) {
	s, err := ReadProcess(os.Getpid())
	if errors.Is(err, ErrNotAvailable) {
		t.Skip("kernel without schedstat (CONFIG_SCHED_INFO)")
	}
	if err != nil {
		t.Fatal(err)
	}
	// A Go test binary runs several OS threads.
	if len(s.Threads) < 2 {
		t.Errorf("%d threads, want >= 2", len(s.Threads))
	}
	var sum SchedStat
	for _, st := range s.Threads {
		sum = sum.add(st)
	}
	if sum != s.Total || s.Total.RunNs == 0 || s.Total.Timeslices == 0 {
		t.Errorf("Total %+v, sum of threads %+v", s.Total, sum)
	}
	leader, ok := s.Threads[os.Getpid()]
	if !ok {
		t.Fatal("the thread group leader is missing")
	}
	// The leader's own file, read later, can only have grown.
	later, err := ReadThread(os.Getpid(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if later.RunNs < leader.RunNs || later.Timeslices < leader.Timeslices {
		t.Errorf("leader went backwards: %+v then %+v", leader, later)
	}
}

// startProc starts a command, killed and reaped at cleanup.
func startProc(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(name, args...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

func TestWaitRateContendedAndSleeping(t *testing.T) {
	// Two busy loops pinned to one CPU: each waits about half the time.
	var cpu0 unix.CPUSet
	cpu0.Set(0)
	busy := []*exec.Cmd{startProc(t, "sh", "-c", "while :; do :; done"), startProc(t, "sh", "-c", "while :; do :; done")}
	for _, c := range busy {
		if err := unix.SchedSetaffinity(c.Process.Pid, &cpu0); err != nil {
			t.Fatalf("pin pid %d to cpu 0: %v", c.Process.Pid, err)
		}
	}
	sleeper := startProc(t, "sleep", "60")
	time.Sleep(100 * time.Millisecond) // let them settle (exec done)

	pids := []int{busy[0].Process.Pid, sleeper.Process.Pid}
	var first [2]Sample
	for i, pid := range pids {
		s, err := ReadProcess(pid)
		if errors.Is(err, ErrNotAvailable) {
			t.Skip("kernel without schedstat (CONFIG_SCHED_INFO)")
		}
		if err != nil {
			t.Fatal(err)
		}
		first[i] = s
	}
	time.Sleep(time.Second)
	var d [2]Delta
	var second [2]Sample
	for i, pid := range pids {
		s, err := ReadProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		second[i], d[i] = s, Diff(first[i], s)
	}
	t.Logf("busy: run %.2f wait %.2f avg wait %v; sleeper: run %.4f wait %.4f",
		d[0].RunRate(), d[0].WaitRate(), d[0].AvgWait(), d[1].RunRate(), d[1].WaitRate())
	// Sharing one CPU with an equal loop: about 0.5 each; bounds are wide
	// for a noisy host (other load only adds wait).
	if r := d[0].WaitRate(); r < 0.2 || r > 1.1 {
		t.Errorf("contended loop WaitRate = %.2f, want 0.2..1.1", r)
	}
	if r := d[0].RunRate(); r < 0.01 || r > 0.8 {
		t.Errorf("contended loop RunRate = %.2f, want 0.01..0.8", r)
	}
	if d[0].WaitRate() != WaitRate(first[0], second[0]) {
		t.Error("WaitRate disagrees with Diff(...).WaitRate()")
	}
	if d[1].WaitNs > uint64(20*time.Millisecond) || d[1].RunNs > uint64(20*time.Millisecond) {
		t.Errorf("sleeping process ran %v and waited %v in 1 s", time.Duration(d[1].RunNs), time.Duration(d[1].WaitNs))
	}
}

func TestReadProcessGone(t *testing.T) {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	_, err := ReadProcess(c.Process.Pid)
	if !errors.Is(err, ErrNoProcess) {
		t.Errorf("ReadProcess of a reaped child: %v, want ErrNoProcess", err)
	}
}
