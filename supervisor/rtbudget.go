package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/vigil-project/vigil/cgroup"
)

// RTBudgetWarnShare is the share of its realtime budget (control.rt_budget,
// cpu.rt_runtime_us) that a control-plane group may use on one CPU within
// one period before `vigil status` warns and the supervisor logs
// event=rt_budget_high. There is no config key for it.
//
// Why a half: a group that uses its whole budget on a CPU is not run there
// at all until the period (a second) ends; its timers go off up to a
// second late, and a lease (60 ms at the default timing) runs out. Nothing else on the host
// says why: the process is only late (late_timer). The use is not steady:
// a takeover, a garbage collection, a flood of datagrams or the VM's own
// stalls (charged to whatever ran) add to a second's use, and the bench
// with four services saw a node manager throttled every second at a budget
// its average use was under (docs/protocol.md). Half leaves room for
// one such second to double the use; the warning comes while an operator
// can still raise the budget, before a throttled second fences anyone.
const RTBudgetWarnShare = 0.5

// Timing of the watch. A poll reads one small file per group (the
// budget: two more a second); four a second place a period's window
// within a quarter of a second of the kernel's own, whose phase is not
// visible from user space (they come with the control plane's reports,
// poke; a second apart without them). The peak shown is of the last
// rtPeakKeep, and an episode ends after rtHold below the threshold, so
// that a use hovering at it logs one episode, not one per poll.
const (
	rtPollEvery    = 250 * time.Millisecond
	rtPollFallback = time.Second
	rtBudgetEvery  = time.Second
	rtPeakKeep     = 10 * time.Second
	rtHold         = 10 * time.Second
)

// rtSource is what the watch reads of a group (groupRT).
type rtSource interface {
	RTBudget() (cgroup.RTBudget, error)
	CPUUsagePerCPU() ([]uint64, error)
}

// groupRT reads a real group through a cgroup.RTReader, opened at the
// first reading (off the supervisor's loop) and kept open: a pread a
// reading. Reading with an open, a read and a close per file (and a
// timer of its own), the watch cost an idle supervisor 0.15-0.2 % of a
// CPU per group on the test VM.
type groupRT struct {
	g *cgroup.Group
	r *cgroup.RTReader
}

func (x *groupRT) reader() (*cgroup.RTReader, error) {
	if x.r == nil {
		r, err := x.g.OpenRTReader()
		if err != nil {
			return nil, err
		}
		x.r = r
	}
	return x.r, nil
}

func (x *groupRT) RTBudget() (cgroup.RTBudget, error) {
	r, err := x.reader()
	if err != nil {
		return cgroup.RTBudget{}, err
	}
	return r.Budget()
}

func (x *groupRT) CPUUsagePerCPU() ([]uint64, error) {
	r, err := x.reader()
	if err != nil {
		return nil, err
	}
	return r.UsagePerCPU(nil) // the watch keeps each reading: new storage
}

func (x *groupRT) close() {
	if x.r != nil {
		x.r.Close()
		x.r = nil
	}
}

// rtWindow is a group's use over at most a period, on its busiest CPU.
type rtWindow struct {
	at    time.Duration // end of the window (the watch's clock)
	share float64       // used over the budget
	used  time.Duration // on cpu (averaged to one period only for a longer window)
	cpu   int
}

type rtSample struct {
	at   time.Duration
	used []uint64 // ns per CPU
}

// rtGroupWatch is the watch of one group.
type rtGroupWatch struct {
	name        string
	src         rtSource
	budget      cgroup.RTBudget // as last read; Runtime <= 0: nothing to watch
	budgetAt    time.Duration
	budgetRead  bool
	unsupported bool
	readErr     string
	samples     []rtSample // oldest first: the newest at least a period old, and those after
	windows     []rtWindow // those of the last rtPeakKeep
	in          bool
	lastHigh    time.Duration
	peak        rtWindow // of the episode under way
	episodes    uint64
}

// rtBudgetWatch measures how much of its realtime budget each
// control-plane group uses on its busiest CPU, a period at a time, and
// logs the episodes in which that passes RTBudgetWarnShare. Status reads
// its state (state); the polls run off the main loop (watchRTBudget).
type rtBudgetWatch struct {
	mu     sync.Mutex
	log    *slog.Logger
	now    func() time.Duration // monotonic: polls and status read the same clock
	groups []*rtGroupWatch
	noted  bool

	// pokes wake the polling goroutine (poke); lastPoke is the main
	// loop's own, unlocked.
	pokes    chan struct{}
	lastPoke time.Duration
}

// RTBudgetState is one group's realtime budget and its use, for status.
type RTBudgetState struct {
	Budget time.Duration // per CPU per period; 0: none in force or unknown
	Period time.Duration
	// Peak is the busiest window of the last rtPeakKeep (Measured: there
	// was one).
	Measured  bool
	PeakShare float64
	PeakUsed  time.Duration
	PeakCPU   int
	Episodes  uint64
	InEpisode bool
}

func newRTBudgetWatch(log *slog.Logger) *rtBudgetWatch {
	start := time.Now()
	return &rtBudgetWatch{log: log, now: func() time.Duration { return time.Since(start) }, pokes: make(chan struct{}, 1)}
}

// poke asks for a poll now if the last was rtPollEvery ago: the
// supervisor's loop calls it at each control-plane report (four or more a
// second), so the watch reads in a wake-up the host pays for anyway. A
// timer of its own, at every rtPollFallback, was a tenth of a per cent of
// a CPU on the test VM for one group at four wake-ups a second, and
// doubled an idle witness's supervisor. Only the main loop calls it.
func (w *rtBudgetWatch) poke() {
	if w == nil {
		return
	}
	now := w.now()
	if now-w.lastPoke < rtPollEvery {
		return
	}
	w.lastPoke = now
	select {
	case w.pokes <- struct{}{}:
	default:
	}
}

// add watches src under name (e.g. "control/nodemanager"), from the
// moment its group is created; a nil watch (none on this host) ignores it.
func (w *rtBudgetWatch) add(name string, src rtSource) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.groups = append(w.groups, &rtGroupWatch{name: name, src: src})
}

// state returns name's state; ok false if it is not watched.
func (w *rtBudgetWatch) state(name string, now time.Duration) (RTBudgetState, bool) {
	if w == nil {
		return RTBudgetState{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.groups {
		if g.name != name || g.unsupported {
			continue
		}
		st := RTBudgetState{Episodes: g.episodes, InEpisode: g.in}
		if g.budget.Runtime > 0 {
			st.Budget, st.Period = g.budget.Runtime, g.budget.Period
		}
		for _, x := range g.windows {
			if now-x.at <= rtPeakKeep && (!st.Measured || x.share > st.PeakShare) {
				st.Measured, st.PeakShare, st.PeakUsed, st.PeakCPU = true, x.share, x.used, x.cpu
			}
		}
		return st, true
	}
	return RTBudgetState{}, false
}

// poll reads every group once; now is a monotonic time. It returns false
// when the groups have no per-group budget on this host (cgroup v2, or no
// CONFIG_RT_GROUP_SCHED): polling again is useless, as it is a property
// of the kernel, not of one group.
func (w *rtBudgetWatch) poll(now time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	watched := false
	for _, g := range w.groups {
		if !g.unsupported {
			w.pollGroup(g, now)
		}
		watched = watched || !g.unsupported
	}
	if len(w.groups) == 0 {
		return true // none created yet (a spawn that failed is retried)
	}
	if !watched && !w.noted {
		w.noted = true
		w.log.Info("no per-group realtime budget on this kernel: the control plane's use of one is not watched",
			"event", "rt_budget_unwatched")
	}
	return watched
}

func (w *rtBudgetWatch) pollGroup(g *rtGroupWatch, now time.Duration) {
	if !g.budgetRead || now-g.budgetAt >= rtBudgetEvery {
		b, err := g.src.RTBudget()
		if errors.Is(err, cgroup.ErrNotSupported) {
			g.unsupported = true
			return
		}
		if err != nil {
			w.readFailed(g, err)
			return
		}
		if b != g.budget {
			// A new budget (none, restored, changed at a restart): the
			// windows measured against the old one no longer say anything.
			g.samples, g.windows = g.samples[:0], g.windows[:0]
		}
		g.budget, g.budgetAt, g.budgetRead = b, now, true
	}
	if g.budget.Runtime <= 0 || g.budget.Period <= 0 {
		// Not in force (the process runs SCHED_OTHER, and status says so)
		// or unlimited: no budget to run out of.
		w.endEpisode(g, now, true)
		return
	}
	used, err := g.src.CPUUsagePerCPU()
	if err != nil {
		w.readFailed(g, err)
		return
	}
	g.readErr = ""
	if n := len(g.samples); n > 0 && !grew(g.samples[n-1].used, used) {
		g.samples = g.samples[:0] // a new group, or CPUs came and went
	}
	g.samples = append(g.samples, rtSample{at: now, used: used})
	// The oldest sample kept is the newest one at least a period old.
	for len(g.samples) > 1 && g.samples[1].at <= now-g.budget.Period {
		g.samples = g.samples[1:]
	}
	if now-g.samples[0].at < g.budget.Period {
		return // not a period's worth yet (a start, a reset)
	}
	// The window is the longest span of at most a period, counted as it
	// is: a longer one can hold the budget of two of the kernel's periods
	// (a group throttled at the end of one runs at the start of the next)
	// and read up to twice what any period used. Only when polls were too
	// far apart for such a window (the fallback's one a second) is a
	// longer span taken, and its use averaged over it.
	base, scale := g.samples[0], false
	if now-base.at > g.budget.Period {
		if len(g.samples) > 2 && now-g.samples[1].at >= g.budget.Period/2 {
			base = g.samples[1]
		} else {
			scale = true
		}
	}
	span := now - base.at
	win := rtWindow{at: now}
	for cpu := range used {
		d := time.Duration(used[cpu] - base.used[cpu])
		if scale {
			d = d * g.budget.Period / span
		}
		if d > win.used {
			win.used, win.cpu = d, cpu
		}
	}
	win.share = float64(win.used) / float64(g.budget.Runtime)
	keep := g.windows[:0]
	for _, x := range g.windows {
		if now-x.at < rtPeakKeep {
			keep = append(keep, x)
		}
	}
	g.windows = append(keep, win)

	if win.share >= RTBudgetWarnShare {
		if !g.in {
			g.in, g.peak = true, win
			g.episodes++
			w.log.Warn("control-plane group near its realtime budget: at the budget the kernel stops it on that CPU until the period ends, and leases can run out; raise control.rt_budget",
				"event", "rt_budget_high", "group", g.name, "cpu", win.cpu,
				"used_ms", msf(win.used), "budget_ms", msf(g.budget.Runtime), "share_pct", pct(win.share))
		} else if win.share > g.peak.share {
			g.peak = win
		}
		g.lastHigh = now
		return
	}
	w.endEpisode(g, now, false)
}

// endEpisode ends g's episode once its use has stayed below the threshold
// for rtHold, or at once when the budget went away (now).
func (w *rtBudgetWatch) endEpisode(g *rtGroupWatch, now time.Duration, at bool) {
	if !g.in || !at && now-g.lastHigh < rtHold {
		return
	}
	g.in = false
	w.log.Info("control-plane group back under half its realtime budget", "event", "rt_budget_high_end", "group", g.name,
		"peak_cpu", g.peak.cpu, "peak_used_ms", msf(g.peak.used), "peak_share_pct", pct(g.peak.share))
}

func (w *rtBudgetWatch) readFailed(g *rtGroupWatch, err error) {
	if g.readErr == "" {
		w.log.Warn("cannot read a control-plane group's realtime budget or use", "event", "rt_budget_error", "group", g.name, "err", err)
	}
	g.readErr = err.Error()
}

// grew: b is a later reading of the same CPUs as a (no counter went back).
func grew(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if b[i] < a[i] {
			return false
		}
	}
	return true
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()/100) / 10 }
func pct(x float64) float64       { return float64(int(x*1000+0.5)) / 10 }

// watchRTBudget polls w at each poke, and at least every
// rtPollFallback (a control plane that stopped reporting: its windows are
// then longer, and scaled), until ctx ends, or until the host turns out to
// have no per-group budget. It reads cgroup files, so it runs in its own
// goroutine, never in the main loop.
func watchRTBudget(ctx context.Context, w *rtBudgetWatch) {
	t := time.NewTimer(rtPollFallback)
	defer t.Stop()
	defer w.close()
	for {
		if !w.poll(w.now()) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.pokes:
		case <-t.C:
		}
		// A second from this poll: while reports poke it, the fallback
		// never fires (no wake-up of its own).
		t.Reset(rtPollFallback)
	}
}

// rtBudgetWarnings are the control groups whose use of their realtime
// budget on one CPU reached RTBudgetWarnShare in a period of the last
// rtPeakKeep, one warning for all.
func rtBudgetWarnings(groups []GroupStatus) []Warning {
	var over []string
	for _, g := range groups {
		if g.RTPeakShare == nil || g.RTBudgetUsec <= 0 || *g.RTPeakShare < RTBudgetWarnShare {
			continue
		}
		over = append(over, fmt.Sprintf("%s %.0f of %.0f ms on one CPU (%.0f%%)", g.Group,
			float64(g.RTPeakUsedUsec)/1e3, float64(g.RTBudgetUsec)/1e3, *g.RTPeakShare*100))
	}
	if len(over) == 0 {
		return nil
	}
	return []Warning{{Kind: "rt_budget", Message: fmt.Sprintf(
		"control plane used over %.0f%% of its realtime budget in a second of the last %s: %s; at the budget the kernel stops it until the second ends and its lease can run out: raise control.rt_budget (journalctl -u vigil EVENT=rt_budget_high)",
		RTBudgetWarnShare*100, rtPeakKeep, strings.Join(over, ", "))}}
}

// close closes the groups' open files; the watch reads nothing after.
func (w *rtBudgetWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.groups {
		if x, ok := g.src.(*groupRT); ok {
			x.close()
		}
		g.unsupported = true
	}
}

// nowOrZero is the watch's clock; a nil watch (none started) has none.
func (w *rtBudgetWatch) nowOrZero() time.Duration {
	if w == nil {
		return 0
	}
	return w.now()
}
