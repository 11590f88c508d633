// Package realtime gives a control-plane process (supervisor, locator, node
// manager) the scheduling and memory guarantees Corosync takes for the same
// reason: SCHED_RR for every thread, locked memory, and an OOM-killer
// exemption. It is called by the process on itself, at start.
//
// Nothing here fails hard: a step the host does not permit (no capability,
// a cpu cgroup without a realtime budget under CONFIG_RT_GROUP_SCHED, cgroup
// v2 rules) is skipped and explained in Report.Degraded, and the Report says
// what is in force afterwards.
//
// Inheritance, which callers that start other programs must know: new
// threads and child processes inherit the scheduling policy; oom_score_adj
// is inherited across fork and exec; memory locks are not inherited. A
// process that forks applications after ApplySelf must reset the policy and
// oom_score_adj of its children itself (see ResetProcess).
package realtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// schedOther is SCHED_OTHER, which golang.org/x/sys names SCHED_NORMAL.
const schedOther = unix.SCHED_NORMAL

// Defaults for zero Settings fields.
const (
	DefaultPriority    = 10
	DefaultOOMScoreAdj = -1000
)

// Settings say what ApplySelf asks for.
type Settings struct {
	// Realtime asks for SCHED_RR, raised RLIMIT_MEMLOCK and mlockall; off
	// resets every thread to SCHED_OTHER (undoing a policy inherited from
	// a realtime parent).
	Realtime bool
	// Priority is the SCHED_RR priority, 1..99; 0 means DefaultPriority.
	Priority int
	// OOMScoreAdj is written to /proc/self/oom_score_adj in both modes,
	// -1000..1000; 0 means DefaultOOMScoreAdj (-1000). It is applied with
	// realtime off too: the exemption from the OOM killer is a memory
	// guarantee, not a scheduling one.
	OOMScoreAdj int
}

// Report says what is in force after ApplySelf. It is part of the control
// plane's reports (internal/ctlmsg), under "realtime".
type Report struct {
	Sched       string `json:"sched"`                 // "SCHED_RR prio 10", "SCHED_OTHER", or "mixed: ..." when threads differ
	Mlocked     bool   `json:"mlocked"`               // VmLck in /proc/self/status > 0
	MlockFlags  string `json:"mlock_flags,omitempty"` // the mlockall flags used, "" when not locked
	OOMScoreAdj int    `json:"oom_score_adj"`         // read back from /proc/self/oom_score_adj
	// RSSBeforeKiB and RSSAfterKiB are VmRSS around the mlockall call: the
	// memory that locking made resident.
	RSSBeforeKiB int64 `json:"rss_before_kib"`
	RSSAfterKiB  int64 `json:"rss_after_kib"`
	Threads      int   `json:"threads"` // threads of the process when the report was made
	// Degraded has one human line per step that was not permitted, with the reason.
	Degraded []string `json:"degraded,omitempty"`
}

// String is a one-line summary for logs.
func (r Report) String() string {
	s := fmt.Sprintf("sched=%q mlocked=%t oom_score_adj=%d threads=%d rss_kib=%d->%d",
		r.Sched, r.Mlocked, r.OOMScoreAdj, r.Threads, r.RSSBeforeKiB, r.RSSAfterKiB)
	if r.MlockFlags != "" {
		s += " mlockall=" + r.MlockFlags
	}
	if len(r.Degraded) > 0 {
		s += " degraded=" + strconv.Quote(strings.Join(r.Degraded, "; "))
	}
	return s
}

// ApplySelf applies s to the calling process and all its threads. Steps
// with realtime on, in this order: RLIMIT_MEMLOCK raised (mlockall of a Go
// process counts its whole address space reservation against it), mlockall,
// SCHED_RR on every thread; always: oom_score_adj. It never fails: each
// refusal degrades and is explained in the Report.
func ApplySelf(s Settings) Report {
	prio := s.Priority
	if prio == 0 {
		prio = DefaultPriority
	}
	adj := s.OOMScoreAdj
	if adj == 0 {
		adj = DefaultOOMScoreAdj
	}
	var r Report
	r.RSSBeforeKiB = statusKiB("VmRSS")
	if s.Realtime {
		if d := raiseMemlock(); d != "" {
			r.Degraded = append(r.Degraded, d)
		}
		flags, d := lockAll()
		r.MlockFlags = flags
		if d != "" {
			r.Degraded = append(r.Degraded, d)
		}
		if prio < 1 || prio > 99 {
			r.Degraded = append(r.Degraded, fmt.Sprintf("SCHED_RR not set: priority %d out of range 1..99", prio))
		} else if d := setRR(prio); d != "" {
			r.Degraded = append(r.Degraded, d)
		}
	} else if err := setAll(schedOther, 0); err != nil {
		r.Degraded = append(r.Degraded, "SCHED_OTHER not restored: "+err.Error())
	}
	r.RSSAfterKiB = statusKiB("VmRSS")
	if adj < -1000 || adj > 1000 {
		r.Degraded = append(r.Degraded, fmt.Sprintf("oom_score_adj not set: %d out of range -1000..1000", adj))
	} else if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(adj)), 0); err != nil {
		why := ""
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			why = " (lowering it needs CAP_SYS_RESOURCE"
			if !HasCap(unix.CAP_SYS_RESOURCE) {
				why += ", which this process lacks"
			}
			why += ")"
		}
		r.Degraded = append(r.Degraded, fmt.Sprintf("oom_score_adj %d not set: %v%s", adj, err, why))
	}
	r.OOMScoreAdj = readOOMScoreAdj()
	r.Mlocked = statusKiB("VmLck") > 0
	if !r.Mlocked {
		r.MlockFlags = ""
	}
	ths, err := Threads()
	if err != nil {
		r.Sched = "unknown: " + err.Error()
	} else {
		r.Sched = summarize(ths)
		r.Threads = len(ths)
	}
	return r
}

// raiseMemlock lifts RLIMIT_MEMLOCK to infinity, or the soft limit to the
// hard one without CAP_SYS_RESOURCE. It returns a degradation line or "".
func raiseMemlock() string {
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf)
	if err == nil {
		return ""
	}
	var cur unix.Rlimit
	if gerr := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &cur); gerr != nil {
		return fmt.Sprintf("RLIMIT_MEMLOCK not raised: %v", err)
	}
	cur.Cur = cur.Max
	if serr := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &cur); serr != nil {
		return fmt.Sprintf("RLIMIT_MEMLOCK not raised: %v", serr)
	}
	if cur.Max == unix.RLIM_INFINITY {
		return ""
	}
	note := ""
	if HasCap(unix.CAP_IPC_LOCK) {
		note = "; CAP_IPC_LOCK lets mlockall ignore the limit"
	}
	return fmt.Sprintf("RLIMIT_MEMLOCK only raised to its hard limit %d bytes (infinity refused: %v; needs CAP_SYS_RESOURCE%s)", cur.Max, err, note)
}

// HasCap reports whether the calling process has capability c (a
// unix.CAP_* number) in its effective set, from /proc/self/status.
func HasCap(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && c >= 0 && c < 64 && n&(1<<uint(c)) != 0
		}
	}
	return false
}

// lockAll locks the process's memory without making its untouched memory
// resident. The guarantee is no major page fault in the control plane: no
// page it needs is ever read from disk, however hard the host reclaims.
// Only file-backed pages can cost a major fault (there is no swap-out of
// locked anonymous pages, and an untouched anonymous page is a zero-filled
// minor fault), so:
//
//  1. mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) (Linux >= 4.4): every
//     mapping, present and future, is locked page by page as it is touched,
//     and a locked page is never evicted;
//  2. then every file-backed mapping (the binary's text, rodata and data;
//     in a cgo build the C libraries too) is populated and locked whole
//     with mlock, so code paths not yet run (the failover path) are already
//     in memory when the host is short of it.
//
// Locking everything at once with MCL_CURRENT, as before, also faulted in
// the zero pages of every anonymous mapping: the Go runtime's 32 MiB heap
// arena index and the 32 MiB BSS scratch buffer of the FIPS 140 entropy
// source, which an idle control plane never touches (85-90 MiB resident
// instead of ~20). Kernels without MCL_ONFAULT (EINVAL) get that:
// MCL_CURRENT|MCL_FUTURE.
func lockAll() (flags, degraded string) {
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if err == nil {
		if d := lockFileMappings(); d != "" {
			return "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT", d
		}
		return "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT, file mappings populated", ""
	}
	if !errors.Is(err, unix.EINVAL) {
		return "", "mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) refused: " + explainMlock(err)
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		return "", "mlockall(MCL_CURRENT|MCL_FUTURE) refused: " + explainMlock(err)
	}
	return "MCL_CURRENT|MCL_FUTURE (no MCL_ONFAULT: kernel < 4.4)", ""
}

// lockFileMappings populates and locks every readable file-backed mapping
// of the process (/proc/self/maps). It returns a degradation line or "".
func lockFileMappings() string {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return "file mappings not populated (code not yet run may fault from disk): " + err.Error()
	}
	ms, err := fileMappings(string(b))
	if err != nil {
		return "file mappings not populated (code not yet run may fault from disk): " + err.Error()
	}
	for _, m := range ms {
		if _, _, errno := unix.Syscall(unix.SYS_MLOCK, m.start, m.end-m.start, 0); errno != 0 {
			return fmt.Sprintf("file mapping %s %#x-%#x not populated (code not yet run may fault from disk): %s",
				m.path, m.start, m.end, explainMlock(errno))
		}
	}
	return ""
}

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uintptr
	path       string
}

// fileMappings are the readable mappings of a file in maps (not the
// kernel's [vdso], [vvar], [stack], nor anonymous memory).
func fileMappings(maps string) ([]mapping, error) {
	var out []mapping
	for _, l := range strings.Split(maps, "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") || !strings.HasPrefix(f[1], "r") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps: bad range %q", f[0])
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			return nil, fmt.Errorf("maps: bad range %q", f[0])
		}
		out = append(out, mapping{start: uintptr(s), end: uintptr(e), path: strings.Join(f[5:], " ")})
	}
	return out, nil
}

func explainMlock(err error) string {
	switch {
	case errors.Is(err, unix.ENOMEM):
		var l unix.Rlimit
		_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &l)
		return fmt.Sprintf("%v (RLIMIT_MEMLOCK %s is below the address space and there is no CAP_IPC_LOCK)", err, rlimString(l.Cur))
	case errors.Is(err, unix.EPERM):
		return fmt.Sprintf("%v (needs CAP_IPC_LOCK)", err)
	}
	return err.Error()
}

func rlimString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10) + " bytes"
}

// setRR puts every thread under SCHED_RR at prio, after checking the cgroup
// v2 rule that a RT task would break; it returns a degradation line or "".
func setRR(prio int) string {
	cg := cpuCgroupOf("self")
	if cg.v2 && cg.rel != "/" {
		rtg, known := rtGroupSched()
		if rtg || !known {
			if !cg.cpuEnabled {
				// The kernel refuses to enable the cpu controller above a
				// group holding RT tasks (EINVAL), which would cost the
				// whole tree its cpu.weight guarantees.
				return fmt.Sprintf("SCHED_RR not set: cgroup v2 with CONFIG_RT_GROUP_SCHED%s: an RT task in %s would make enabling the cpu controller fail (cpu.weight lost); staying SCHED_OTHER",
					unknownNote(known), cg.rel)
			}
		}
	}
	err := setAll(unix.SCHED_RR, prio)
	if err == nil {
		return ""
	}
	// A refusal part way leaves some threads realtime: undo, so that the
	// process is in one known state.
	if rerr := setAll(schedOther, 0); rerr != nil {
		return "SCHED_RR refused: " + explainRT(err, prio, cg) + "; rollback to SCHED_OTHER failed: " + rerr.Error()
	}
	return "SCHED_RR refused: " + explainRT(err, prio, cg)
}

func unknownNote(known bool) string {
	if known {
		return ""
	}
	return " (kernel config unreadable, assumed)"
}

// explainRT turns a sched_setscheduler refusal into its reason.
func explainRT(err error, prio int, cg cpuCgroup) string {
	if !errors.Is(err, unix.EPERM) {
		return err.Error()
	}
	if cg.v2 {
		if cg.rel != "/" {
			return fmt.Sprintf("cgroup v2 cpu group %s is not the root and the kernel has CONFIG_RT_GROUP_SCHED, which lets RT tasks run only in the root cpu group; staying SCHED_OTHER, cpu.weight still applies [%v]", cg.rel, err)
		}
	} else if cg.dir != "" {
		for d := cg.dir; ; d = filepath.Dir(d) {
			v, rerr := os.ReadFile(filepath.Join(d, "cpu.rt_runtime_us"))
			if rerr != nil {
				break // no RT_GROUP_SCHED, or above the mount
			}
			if strings.TrimSpace(string(v)) == "0" {
				rel := strings.TrimPrefix(d, cg.mount)
				if rel == "" {
					rel = "/"
				}
				return fmt.Sprintf("cpu cgroup %s has cpu.rt_runtime_us=0 (CONFIG_RT_GROUP_SCHED: the group and its ancestors need an RT budget) [%v]", rel, err)
			}
			if d == cg.mount || len(d) <= len(cg.mount) {
				break
			}
		}
	}
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_RTPRIO, &l) == nil && l.Cur < uint64(prio) {
		return fmt.Sprintf("no CAP_SYS_NICE and RLIMIT_RTPRIO is %d < priority %d [%v]", l.Cur, prio, err)
	}
	return fmt.Sprintf("needs CAP_SYS_NICE [%v]", err)
}

// setAll sets policy/prio on every thread of the process. Threads created
// while it runs inherit from their creator, which may not have been set yet,
// so it repeats until a pass finds no thread it has not set.
func setAll(policy uint32, prio int) error {
	done := map[int]bool{}
	for pass := 0; pass < 100; pass++ {
		tids, err := taskIDs("self")
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh++
			if policy == schedOther {
				// Only undo realtime policies: rewriting a normal thread
				// would also reset its nice value, which is the operator's.
				if a, err := unix.SchedGetAttr(tid, 0); err == nil && a.Policy != unix.SCHED_RR && a.Policy != unix.SCHED_FIFO && a.Policy != unix.SCHED_DEADLINE {
					done[tid] = true
					continue
				}
			}
			if err := setThread(tid, policy, prio); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // exited meanwhile
				}
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			done[tid] = true
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("threads keep appearing after 100 passes")
}

func setThread(tid int, policy uint32, prio int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy, Priority: uint32(prio)}
	return unix.SchedSetAttr(tid, &attr, 0)
}

// ResetSelf puts every realtime thread of the calling process back to
// SCHED_OTHER (threads created meanwhile included); normal threads keep
// their nice value.
func ResetSelf() error {
	if err := setAll(schedOther, 0); err != nil {
		return fmt.Errorf("realtime: SCHED_OTHER: %w", err)
	}
	return nil
}

// ResetProcess undoes, for a child process pid, what it inherited from a
// realtime parent: every thread back to SCHED_OTHER and oom_score_adj to 0.
func ResetProcess(pid int) error {
	tids, err := taskIDs(strconv.Itoa(pid))
	if err != nil {
		return err
	}
	var errs []error
	for _, tid := range tids {
		if err := setThread(tid, schedOther, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("realtime: pid %d thread %d: SCHED_OTHER: %w", pid, tid, err))
		}
	}
	p := filepath.Join("/proc", strconv.Itoa(pid), "oom_score_adj")
	if err := os.WriteFile(p, []byte("0"), 0); err != nil {
		errs = append(errs, fmt.Errorf("realtime: write %s: %w", p, err))
	}
	return errors.Join(errs...)
}

// SetProcessRR puts every thread of pid under SCHED_RR at prio (0 means
// DefaultPriority), for a supervisor that could only give a child's group
// its realtime budget after the child started: the child's own attempt
// was refused then. Threads created meanwhile inherit from their creator,
// so it repeats until a pass finds no thread it has not set. On failure
// the threads already set are put back to SCHED_OTHER.
func SetProcessRR(pid, prio int) error {
	if prio == 0 {
		prio = DefaultPriority
	}
	done := map[int]bool{}
	for pass := 0; pass < 100; pass++ {
		tids, err := taskIDs(strconv.Itoa(pid))
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh++
			if err := setThread(tid, unix.SCHED_RR, prio); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue
				}
				for t := range done {
					_ = setThread(t, schedOther, 0)
				}
				return fmt.Errorf("realtime: pid %d thread %d: SCHED_RR: %w", pid, tid, err)
			}
			done[tid] = true
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("realtime: pid %d: threads keep appearing after 100 passes", pid)
}

// Refresh re-reads the policy of the calling process's threads into r, and
// drops the SCHED_RR refusal from Degraded once every thread is SCHED_RR
// (the supervisor set it after the budget came: SetProcessRR).
// It costs nothing unless a SCHED_RR refusal is pending.
func (r *Report) Refresh() {
	if !slices.ContainsFunc(r.Degraded, isRRRefusal) {
		return
	}
	ths, err := Threads()
	if err != nil {
		return
	}
	r.Sched, r.Threads = summarize(ths), len(ths)
	if !strings.HasPrefix(r.Sched, "SCHED_RR") {
		return
	}
	kept := r.Degraded[:0:0]
	for _, d := range r.Degraded {
		if !isRRRefusal(d) {
			kept = append(kept, d)
		}
	}
	r.Degraded = kept
}

func isRRRefusal(d string) bool { return strings.HasPrefix(d, "SCHED_RR refused") }

// Thread is one thread's scheduling policy.
type Thread struct {
	TID      int
	Policy   string // "SCHED_OTHER", "SCHED_RR", "SCHED_FIFO", ...
	Priority int    // RT priority, 0 for normal policies
}

// Threads reads the policy of every thread of the calling process.
func Threads() ([]Thread, error) { return ThreadsOf(os.Getpid()) }

// ThreadsOf reads the policy of every thread of pid.
func ThreadsOf(pid int) ([]Thread, error) {
	tids, err := taskIDs(strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	var out []Thread
	for _, tid := range tids {
		a, err := unix.SchedGetAttr(tid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("realtime: sched_getattr thread %d: %w", tid, err)
		}
		out = append(out, Thread{TID: tid, Policy: policyName(a.Policy), Priority: int(a.Priority)})
	}
	return out, nil
}

func policyName(p uint32) string {
	switch p {
	case schedOther:
		return "SCHED_OTHER"
	case unix.SCHED_FIFO:
		return "SCHED_FIFO"
	case unix.SCHED_RR:
		return "SCHED_RR"
	case unix.SCHED_BATCH:
		return "SCHED_BATCH"
	case unix.SCHED_IDLE:
		return "SCHED_IDLE"
	case unix.SCHED_DEADLINE:
		return "SCHED_DEADLINE"
	}
	return "policy " + strconv.FormatUint(uint64(p), 10)
}

func (t Thread) sched() string {
	if t.Policy == "SCHED_RR" || t.Policy == "SCHED_FIFO" {
		return t.Policy + " prio " + strconv.Itoa(t.Priority)
	}
	return t.Policy
}

// summarize names the common policy, or how the threads differ.
func summarize(ths []Thread) string {
	count := map[string]int{}
	var order []string
	for _, t := range ths {
		s := t.sched()
		if count[s] == 0 {
			order = append(order, s)
		}
		count[s]++
	}
	if len(order) == 1 {
		return order[0]
	}
	parts := make([]string, len(order))
	for i, s := range order {
		parts[i] = fmt.Sprintf("%s on %d of %d threads", s, count[s], len(ths))
	}
	return "mixed: " + strings.Join(parts, ", ")
}

// taskIDs lists /proc/<pid>/task.
func taskIDs(pid string) ([]int, error) {
	dir := filepath.Join("/proc", pid, "task")
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("realtime: read %s: %w", dir, err)
	}
	out := make([]int, 0, len(des))
	for _, de := range des {
		if n, err := strconv.Atoi(de.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// statusKiB reads a "Key: N kB" line of /proc/self/status; -1 when unreadable.
func statusKiB(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

func readOOMScoreAdj() int {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// ApplyAndLog is ApplySelf for a control-plane process: it logs what is in
// force in one line, and one warning per step the host did not permit, so
// an operator sees at start-up exactly which guarantee is missing and why.
func ApplyAndLog(s Settings, log *slog.Logger) Report {
	r := ApplySelf(s)
	log.Info("scheduling guarantees", "event", "realtime", "sched", r.Sched, "mlocked", r.Mlocked, "oom_score_adj", r.OOMScoreAdj)
	for _, d := range r.Degraded {
		log.Warn("scheduling guarantee not in force", "event", "realtime_degraded", "reason", d)
	}
	return r
}
