package timingstat

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
)

// events counts the log lines by their event key.
func events(t *testing.T, buf *bytes.Buffer) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		ev, _ := m["event"].(string)
		out[ev]++
	}
	return out
}

// The warning is one line per episode however many ticks are late in it,
// lasts until Hold passes without one, and ends with one line.
func TestWarnEpisodes(t *testing.T) {
	var buf bytes.Buffer
	clk := clock.NewFake(time.Hour)
	w := &Warn{Process: "node manager", Share: 0.25, Lease: 60 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(&buf, nil))}
	tick := 2500 * time.Microsecond
	run := func(d, late time.Duration) {
		for end := clk.Now() + d; clk.Now() < end; {
			clk.Advance(tick)
			w.Observe(clk.Now(), late)
		}
	}
	if w.Level() != 15*time.Millisecond {
		t.Fatalf("level %v, want 25%% of 60 ms", w.Level())
	}
	run(time.Second, 14*time.Millisecond) // under 15 ms: nothing
	if st := w.State(clk.Now()); st.Warning || st.Episodes != 0 || st.WarnMS != 15 || st.RecentMaxLateMS != 14 {
		t.Fatalf("under the level: %+v", st)
	}
	if n := len(events(t, &buf)); n != 0 {
		t.Fatalf("%d lines logged under the level:\n%s", n, buf.String())
	}

	// An episode: 100 late ticks, one line.
	run(250*time.Millisecond, 16*time.Millisecond)
	run(time.Second, 100*time.Microsecond)
	run(250*time.Millisecond, 20*time.Millisecond)
	if st := w.State(clk.Now()); !st.Warning || st.Episodes != 1 || st.RecentMaxLateMS != 20 {
		t.Fatalf("in an episode: %+v", st)
	}
	if ev := events(t, &buf); ev["timing_margin"] != 1 || ev["timing_margin_end"] != 0 {
		t.Fatalf("events %v, want one timing_margin line:\n%s", ev, buf.String())
	}

	// Hold (10 s) after the last late tick, not before, it ends: once.
	run(DefaultHold-tick, 100*time.Microsecond)
	if st := w.State(clk.Now()); !st.Warning {
		t.Fatalf("ended before Hold passed: %+v", st)
	}
	run(2*tick, 100*time.Microsecond)
	st := w.State(clk.Now())
	if st.Warning || st.Episodes != 1 || st.RecentMaxLateMS != 0.1 {
		t.Fatalf("after Hold: %+v (the recent maximum forgets what is older than Hold)", st)
	}
	run(time.Second, 100*time.Microsecond)
	if ev := events(t, &buf); ev["timing_margin"] != 1 || ev["timing_margin_end"] != 1 {
		t.Fatalf("events %v, want one start and one end:\n%s", ev, buf.String())
	}

	// A second episode is a second line.
	run(tick, 30*time.Millisecond)
	if st := w.State(clk.Now()); !st.Warning || st.Episodes != 2 {
		t.Fatalf("second episode: %+v", st)
	}
	if ev := events(t, &buf); ev["timing_margin"] != 2 {
		t.Fatalf("events %v", ev)
	}
}

func TestWarnOff(t *testing.T) {
	var buf bytes.Buffer
	w := &Warn{Process: "locator", Share: 0, Lease: 60 * time.Millisecond, Log: slog.New(slog.NewJSONHandler(&buf, nil))}
	w.Observe(time.Second, time.Second)
	if st := w.State(time.Second); st.Warning || st.Episodes != 0 || st.WarnMS != 0 || st.RecentMaxLateMS != 1000 || buf.Len() != 0 {
		t.Errorf("share 0 warned: %+v %s", st, buf.String())
	}
}
