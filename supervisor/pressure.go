package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/schedwatch"
)

// PressureWarnPct is the PSI "some avg10" (percent) of a control group
// above which `vigil status` warns and the supervisor logs
// event=cpu_pressure (memory_pressure, io_pressure). There is no config
// key for it.
//
// Why 20: "some avg10" is the share of the last 10 s in which at least one
// of the group's tasks waited: for a cpu, for reclaim, for I/O. The
// control plane does a few microseconds of work per token hop and holds
// the high CPU weight, so its own waits stay near 0 % on a healthy host;
// a brief burst (a reload, a garbage collection) moves avg10 by a few
// percent. 20 % is two of the last ten seconds with a control-plane task
// waiting: far above that noise, and the trend that comes before the
// late_timer warning and a lost lease, which is when an operator can still
// act. It is a warning, never a health input (see ARCHITECTURE.md, Health).
//
// On cgroup v1 there is no per-group PSI: no warning, no event (see
// pressureWarnings).
const PressureWarnPct = 20.0

// pressureEvery: the kernel updates avg10 every 2 s; a poll a second
// catches each update without adding load.
const pressureEvery = time.Second

// pressureResources are the PSI resources warned about, in output order.
var pressureResources = []string{"cpu", "memory", "io"}

func (g GroupStatus) pressureOf(res string) *float64 {
	switch res {
	case "cpu":
		return g.CPUPressure
	case "memory":
		return g.MemPressure
	default:
		return g.IOPressure
	}
}

// pressureWarnings are the control groups' pressures above
// PressureWarnPct, one warning per resource. A host without per-group PSI
// (cgroup v1) gets none: its groups carry the host's value, which a busy
// application alone can push over any threshold, so a warning would cry
// wolf on every loaded host; there the control plane's own measure is its
// lateness (late_timer), and status shows the host's PSI as context.
func pressureWarnings(groups []GroupStatus) []Warning {
	var out []Warning
	for _, res := range pressureResources {
		var over []string
		for _, g := range groups {
			if g.Group != "control" && !strings.HasPrefix(g.Group, "control/") {
				continue
			}
			if v := g.pressureOf(res); v != nil && *v > PressureWarnPct && g.PressureScope == string(cgroup.PSIScopeGroup) {
				over = append(over, fmt.Sprintf("%s %.1f%%", g.Group, *v))
			}
		}
		if len(over) > 0 {
			out = append(out, Warning{Kind: res + "_pressure",
				Message: fmt.Sprintf("control plane %s pressure over %.0f%% (PSI some avg10): %s", res, PressureWarnPct, strings.Join(over, ", "))})
		}
	}
	return out
}

// pressureWatch turns polls of the control group's pressure into log
// events through schedwatch.PressureTracker: event=cpu_pressure when a
// resource first exceeds PressureWarnPct, cpu_pressure_end when it has
// stayed below for schedwatch.DefaultHold (memory_ and io_ alike). Status
// shows the current value; the journal keeps when an episode began.
type pressureWatch struct {
	read      func() (cgroup.Pressure, error)
	log       *slog.Logger
	trackers  map[string]*schedwatch.PressureTracker // created at the first read with per-group PSI
	readErr   string
	hostNoted bool
}

func newPressureWatch(read func() (cgroup.Pressure, error), log *slog.Logger) *pressureWatch {
	return &pressureWatch{read: read, log: log}
}

// poll reads once; now is a monotonic time. It returns false when there is
// nothing to watch on this host (no per-group PSI): polling again is useless.
func (w *pressureWatch) poll(now time.Duration) bool {
	p, err := w.read()
	if err != nil {
		if w.readErr == "" {
			w.log.Warn("cannot read the control group's pressure", "event", "pressure_error", "group", "control", "err", err)
		}
		w.readErr = err.Error()
		return true
	}
	w.readErr = ""
	switch p.Scope {
	case cgroup.PSIScopeNone, cgroup.PSIScopeHost:
		// Not the control plane's pressure (see pressureWarnings).
		if !w.hostNoted {
			w.hostNoted = true
			w.log.Info("no per-group pressure on this host: the control plane's pressure is not watched, its lateness is (event=late_timer)",
				"event", "pressure_unwatched", "group", "control")
		}
		return false
	}
	if w.trackers == nil {
		w.trackers = make(map[string]*schedwatch.PressureTracker, len(pressureResources))
		for _, res := range pressureResources {
			t, err := schedwatch.NewPressureTracker(schedwatch.PressureConfig{
				Resource: res, Warn: PressureWarnPct, Logger: w.log,
				Attrs: []any{"group", "control"},
			})
			if err != nil {
				// PressureWarnPct is a valid constant: a programmer error.
				panic(err)
			}
			w.trackers[res] = t
		}
	}
	for i, psi := range []*cgroup.PSI{p.CPU, p.Memory, p.IO} {
		t := w.trackers[pressureResources[i]]
		if psi == nil {
			t.Observe(now, 0, false, nil)
			continue
		}
		t.Observe(now, psi.Some.Avg10, true, nil)
	}
	return true
}

// watchPressure polls g's (control/) pressure every pressureEvery until
// ctx ends and logs its episodes (pressureWatch). It reads cgroup files,
// so it runs in its own goroutine, never in the main loop. The supervisor
// starts it once the tree exists: go watchPressure(ctx, s.ctrlGroup, v2, s.log).
//
// Only per-group PSI is watched (cgroup v2), and only the pressure files
// are read: the group's full statistics each second, of which the watch
// used nothing else, were a tenth of an idle supervisor's CPU. A host
// without per-group PSI cannot grow it while running, so there the watch
// says so once and stops polling: the idle cost does not depend on the
// kernel or the cgroup version.
func watchPressure(ctx context.Context, g *cgroup.Group, v2 bool, log *slog.Logger) {
	if g == nil {
		return
	}
	w := newPressureWatch(func() (cgroup.Pressure, error) { return groupPressure(g, v2) }, log)
	start := time.Now()
	t := time.NewTicker(pressureEvery)
	defer t.Stop()
	for {
		if !w.poll(time.Since(start)) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// groupPressure is g's own PSI on cgroup v2 (FullStats' Pressure without
// the rest); elsewhere a Pressure of host scope, which the watch ignores.
func groupPressure(g *cgroup.Group, v2 bool) (cgroup.Pressure, error) {
	if dir := g.Dirs()["unified"]; v2 && dir != "" {
		p, err := cgroup.GroupPressure(dir)
		if err != nil || p.Scope == cgroup.PSIScopeGroup {
			return p, err
		}
	}
	return cgroup.Pressure{Scope: cgroup.PSIScopeHost}, nil
}
