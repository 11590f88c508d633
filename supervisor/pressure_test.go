package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/internal/testtool"
)

// events returns the JSON log lines whose event is ev.
func events(t *testing.T, logs, ev string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["event"] == ev {
			out = append(out, m)
		}
	}
	return out
}

func psi(avg10 float64) *cgroup.PSI { return &cgroup.PSI{Some: cgroup.PSILine{Avg10: avg10}} }

// An episode of cpu pressure over the threshold is logged once when it
// starts and once when it has been over for the hold time; memory and io
// are tracked apart; a failing read is logged once, not every second.
func TestPressureWatchEpisodes(t *testing.T) {
	var logs testtool.SyncBuffer
	cpu := []float64{5, 35, 60, 15, 10}
	var reads int
	var readErr error
	w := newPressureWatch(func() (cgroup.Pressure, error) {
		if readErr != nil {
			return cgroup.Pressure{}, readErr
		}
		v := cpu[min(reads, len(cpu)-1)]
		reads++
		return cgroup.Pressure{Scope: cgroup.PSIScopeGroup, CPU: psi(v), Memory: psi(1), IO: nil}, nil
	}, slog.New(slog.NewJSONHandler(&logs, nil)))
	for s := range 5 {
		w.poll(time.Duration(s) * time.Second)
	}
	start := events(t, logs.String(), "cpu_pressure")
	if len(start) != 1 || start[0]["avg10"] != 35.0 || start[0]["group"] != "control" || start[0]["threshold_pct"] != PressureWarnPct {
		t.Fatalf("cpu_pressure lines = %v, want one at 35%% for control\n%s", start, logs.String())
	}
	if n := len(events(t, logs.String(), "memory_pressure")) + len(events(t, logs.String(), "io_pressure")); n != 0 {
		t.Errorf("memory at 1%% and io unavailable logged %d episodes", n)
	}
	// Below the threshold since 3 s: the episode ends 10 s after the last
	// high value (at 2 s), not before.
	w.poll(11 * time.Second)
	if n := len(events(t, logs.String(), "cpu_pressure_end")); n != 0 {
		t.Errorf("episode ended 9 s after the last high value")
	}
	w.poll(12 * time.Second)
	end := events(t, logs.String(), "cpu_pressure_end")
	if len(end) != 1 || end[0]["max_avg10"] != 60.0 {
		t.Errorf("cpu_pressure_end lines = %v, want one with max 60", end)
	}

	readErr = errors.New("boom")
	for s := 13; s < 16; s++ {
		w.poll(time.Duration(s) * time.Second)
	}
	if n := len(events(t, logs.String(), "pressure_error")); n != 1 {
		t.Errorf("3 failed reads logged %d pressure_error lines, want 1", n)
	}

	// The host's pressure (cgroup v1) is not the control plane's: one
	// line says it is not watched, and no episode is logged.
	var hostLogs testtool.SyncBuffer
	w = newPressureWatch(func() (cgroup.Pressure, error) {
		return cgroup.Pressure{Scope: cgroup.PSIScopeHost, CPU: psi(90)}, nil
	}, slog.New(slog.NewJSONHandler(&hostLogs, nil)))
	for s := range 3 {
		w.poll(time.Duration(s) * time.Second)
	}
	if len(events(t, hostLogs.String(), "pressure_unwatched")) != 1 || len(events(t, hostLogs.String(), "cpu_pressure")) != 0 {
		t.Errorf("host pressure at 90%%:\n%s", hostLogs.String())
	}
}

// watchPressure reads the control group's own pressure files: a cgroup v2 tree in a temporary directory with a
// control group whose cpu.pressure is over the threshold.
func TestWatchPressureReadsControlGroup(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory io pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroup.Open(cgroup.Options{Root: root, Subtree: "vigil"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := cg.Group("control")
	if err != nil {
		t.Fatal(err)
	}
	dir := g.Dirs()["unified"]
	for name, content := range map[string]string{
		"cpu.stat":     "usage_usec 100\n",
		"cpu.pressure": "some avg10=42.00 avg60=10.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"io.pressure":  "some avg10=0.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs testtool.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchPressure(ctx, g, true, slog.New(slog.NewJSONHandler(&logs, nil)))
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(events(t, logs.String(), "cpu_pressure")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watchPressure did not return after its context ended")
	}
	ev := events(t, logs.String(), "cpu_pressure")
	if len(ev) != 1 || ev[0]["avg10"] != 42.0 {
		t.Fatalf("cpu_pressure lines = %v\n%s", ev, logs.String())
	}
	if n := len(events(t, logs.String(), "pressure_error")) + len(events(t, logs.String(), "io_pressure")); n != 0 {
		t.Errorf("unexpected pressure_error or io_pressure lines:\n%s", logs.String())
	}
}

// Status warns about a control group's pressure over the threshold: per
// group on cgroup v2, once for the host's value where that is all there is.
func TestPressureWarnings(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	v2 := []GroupStatus{
		{Group: "control", PressureScope: "group", CPUPressure: f(25), MemPressure: f(3), IOPressure: f(0)},
		{Group: "control/supervisor", PressureScope: "group", CPUPressure: f(2)},
		{Group: "control/nodemanager", PressureScope: "group", CPUPressure: f(41.5), IOPressure: f(22)},
		{Group: "apps", PressureScope: "group", CPUPressure: f(90), MemPressure: f(50)},
	}
	got := pressureWarnings(v2)
	want := []Warning{
		{Kind: "cpu_pressure", Message: "control plane cpu pressure over 20% (PSI some avg10): control 25.0%, control/nodemanager 41.5%"},
		{Kind: "io_pressure", Message: "control plane io pressure over 20% (PSI some avg10): control/nodemanager 22.0%"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("v2 groups:\n got %q\nwant %q", got, want)
	}
	v1 := []GroupStatus{
		{Group: "control", PressureScope: "host", CPUPressure: f(33), MemPressure: f(20)},
		{Group: "control/locator", PressureScope: "host", CPUPressure: f(33), MemPressure: f(20)},
		{Group: "apps", PressureScope: "host", CPUPressure: f(33)},
	}
	if got := pressureWarnings(v1); len(got) != 0 {
		t.Errorf("v1 (host PSI, not the control plane's): %q, want none", got)
	}
	if got := pressureWarnings([]GroupStatus{{Group: "control"}, {Group: "apps", CPUPressure: f(99)}}); len(got) != 0 {
		t.Errorf("no control pressure: %q", got)
	}
}

// Without per-group PSI (cgroup v1, or v2 with PSI off) the watch says so
// once and stops polling: an idle supervisor reads no cgroup file a
// second for a value it would ignore.
func TestWatchPressureStopsWithoutGroupPSI(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory io pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroup.Open(cgroup.Options{Root: root, Subtree: "vigil"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := cg.Group("control")
	if err != nil {
		t.Fatal(err)
	}
	for _, v2 := range []bool{true, false} { // v2 without *.pressure files; v1
		var logs testtool.SyncBuffer
		done := make(chan struct{})
		go func() {
			watchPressure(context.Background(), g, v2, slog.New(slog.NewJSONHandler(&logs, nil)))
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("v2=%t: watchPressure still polling a host without per-group PSI", v2)
		}
		if n := len(events(t, logs.String(), "pressure_unwatched")); n != 1 {
			t.Errorf("v2=%t: %d pressure_unwatched lines, want 1:\n%s", v2, n, logs.String())
		}
	}
}
