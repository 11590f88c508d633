// Package procstat reads per-process scheduler statistics from /proc: how
// long a process ran and how long its threads waited on a run queue for a
// CPU (/proc/PID/task/TID/schedstat). The wait time is the direct measure
// of a control-plane process being starved by other work on the host.
package procstat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotAvailable is returned when the kernel has no schedstat files
// (built without CONFIG_SCHED_INFO).
var ErrNotAvailable = errors.New("procstat: /proc/PID/schedstat not available on this kernel")

// ErrNoProcess is returned when the process does not exist (any more).
var ErrNoProcess = errors.New("procstat: no such process")

// SchedStat are one task's (or the sum of a process's tasks') scheduler
// counters, cumulative since the task started.
type SchedStat struct {
	RunNs      uint64 // time spent on a CPU
	WaitNs     uint64 // time spent runnable, waiting on a run queue
	Timeslices uint64 // number of times it was scheduled onto a CPU
}

func (s SchedStat) add(o SchedStat) SchedStat {
	return SchedStat{RunNs: s.RunNs + o.RunNs, WaitNs: s.WaitNs + o.WaitNs, Timeslices: s.Timeslices + o.Timeslices}
}

// sub returns s-o, or s when any counter went backwards (not the same
// task: a recycled thread id).
func (s SchedStat) sub(o SchedStat) SchedStat {
	if s.RunNs < o.RunNs || s.WaitNs < o.WaitNs || s.Timeslices < o.Timeslices {
		return s
	}
	return SchedStat{RunNs: s.RunNs - o.RunNs, WaitNs: s.WaitNs - o.WaitNs, Timeslices: s.Timeslices - o.Timeslices}
}

// AvgWait is the mean run-queue wait per timeslice: how long, on average,
// the task waited each time it became runnable before it got a CPU.
func (s SchedStat) AvgWait() time.Duration {
	if s.Timeslices == 0 {
		return 0
	}
	return time.Duration(s.WaitNs / s.Timeslices)
}

// ParseSchedStat parses the content of a schedstat file: "run wait slices".
func ParseSchedStat(s string) (SchedStat, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return SchedStat{}, fmt.Errorf("procstat: schedstat %q: want 3 fields", s)
	}
	var v [3]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return SchedStat{}, fmt.Errorf("procstat: schedstat %q: %w", s, err)
		}
		v[i] = n
	}
	return SchedStat{RunNs: v[0], WaitNs: v[1], Timeslices: v[2]}, nil
}

// ReadThread reads /proc/PID/task/TID/schedstat.
func ReadThread(pid, tid int) (SchedStat, error) {
	p := filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "schedstat")
	b, err := os.ReadFile(p)
	if err != nil {
		return SchedStat{}, readErr(p, pid, err)
	}
	st, err := ParseSchedStat(string(b))
	if err != nil {
		return SchedStat{}, fmt.Errorf("%w (%s)", err, p)
	}
	return st, nil
}

// readErr classifies a failed read of p: the process is gone, or the
// kernel lacks schedstat, or something else.
func readErr(p string, pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		if _, serr := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); serr != nil {
			return fmt.Errorf("procstat: read %s: %w", p, ErrNoProcess)
		}
		if errors.Is(err, fs.ErrNotExist) && filepath.Base(p) == "schedstat" && !exists("/proc/self/schedstat") {
			return fmt.Errorf("procstat: read %s: %w", p, ErrNotAvailable)
		}
	}
	return fmt.Errorf("procstat: read %s: %w", p, err)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Sample is one reading of every thread of a process.
type Sample struct {
	PID     int
	At      time.Time         // when it was taken (carries the monotonic clock)
	Total   SchedStat         // the sum over Threads
	Threads map[int]SchedStat // by thread id
}

// ReadProcess reads the schedstat of every thread of pid and sums them.
// Threads that exit while it reads are skipped.
func ReadProcess(pid int) (Sample, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	des, err := os.ReadDir(dir)
	if err != nil {
		return Sample{}, readErr(dir, pid, err)
	}
	s := Sample{PID: pid, At: time.Now(), Threads: make(map[int]SchedStat, len(des))}
	for _, de := range des {
		tid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		st, err := ReadThread(pid, tid)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
				continue // the thread exited after the listing
			}
			return Sample{}, err
		}
		s.Threads[tid] = st
		s.Total = s.Total.add(st)
	}
	if len(s.Threads) == 0 {
		// Every listed thread was gone: so is the process.
		return Sample{}, fmt.Errorf("procstat: read %s: %w", dir, ErrNoProcess)
	}
	return s, nil
}

// Delta is what a process's threads did between two samples.
type Delta struct {
	SchedStat
	Elapsed time.Duration
}

// Diff returns the counters accrued between a and b (a taken first).
// Threads are matched by id: a thread present in both contributes its
// increase, a thread only in b started in between and contributes all of
// its counters. Threads that exited in between are lost, so the result
// is a lower bound.
func Diff(a, b Sample) Delta {
	d := Delta{Elapsed: b.At.Sub(a.At)}
	for tid, sb := range b.Threads {
		if sa, ok := a.Threads[tid]; ok {
			d.SchedStat = d.SchedStat.add(sb.sub(sa))
		} else {
			d.SchedStat = d.SchedStat.add(sb)
		}
	}
	return d
}

// WaitRate is the run-queue wait accrued per second of wall time between
// the samples, summed over threads: 0.05 means the process's threads
// together waited 50 ms per second for a CPU. It is 0 when no time passed.
func (d Delta) WaitRate() float64 {
	if d.Elapsed <= 0 {
		return 0
	}
	return float64(d.WaitNs) / float64(d.Elapsed.Nanoseconds())
}

// RunRate is CPU time per second of wall time (1.0 = one CPU busy).
func (d Delta) RunRate() float64 {
	if d.Elapsed <= 0 {
		return 0
	}
	return float64(d.RunNs) / float64(d.Elapsed.Nanoseconds())
}

// WaitRate is Diff(a, b).WaitRate(): the run-queue wait per second
// between two samples of the same process.
func WaitRate(a, b Sample) float64 { return Diff(a, b).WaitRate() }
