package schedwatch

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// A tracker names its resource in the events and carries the caller's
// attributes; High and State follow the episode; a value hovering around
// the threshold is one episode, not one per crossing.
func TestPressureTrackerResourceAndAttrs(t *testing.T) {
	var logs bytes.Buffer
	tr, err := NewPressureTracker(PressureConfig{Resource: "memory", Warn: 20, Hold: 5 * time.Second,
		Attrs: []any{"group", "control"}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sec := func(s int) time.Duration { return time.Duration(s) * time.Second }
	for i, v := range []float64{5, 25, 15, 30, 10, 10} { // over at 1 s and 3 s
		tr.Observe(sec(i), v, true, nil)
	}
	start := logEvents(t, logs.String(), "memory_pressure")
	if len(start) != 1 || start[0]["avg10"] != 25.0 || start[0]["group"] != "control" || start[0]["msg"] != "memory pressure 25.0% above 20.0%" {
		t.Fatalf("memory_pressure lines = %v\n%s", start, logs.String())
	}
	if !tr.High(sec(7)) || tr.High(sec(8)) {
		t.Errorf("High: want true until 5 s after the last high value (3 s)")
	}
	if s := tr.State(); !s.InEpisode || s.Episodes != 1 || !s.Available || s.Avg10 != 10 {
		t.Errorf("state during the episode: %+v", s)
	}
	tr.Observe(sec(8), 10, true, nil)
	end := logEvents(t, logs.String(), "memory_pressure_end")
	if len(end) != 1 || end[0]["max_avg10"] != 30.0 || end[0]["group"] != "control" {
		t.Errorf("memory_pressure_end lines = %v", end)
	}

	// Errors are logged once until a read works; "not available" is not
	// an error and clears nothing it should not.
	tr.Observe(sec(9), 0, false, errors.New("boom"))
	tr.Observe(sec(10), 0, false, errors.New("boom"))
	if s := tr.State(); s.Err != "boom" || len(logEvents(t, logs.String(), "pressure_error")) != 1 {
		t.Errorf("after two failed reads: %+v\n%s", s, logs.String())
	}
	tr.Observe(sec(11), 0, false, nil)
	if s := tr.State(); s.Err != "" || s.Available {
		t.Errorf("after a read without PSI: %+v", s)
	}
}

func TestPressureTrackerConfig(t *testing.T) {
	for _, cfg := range []PressureConfig{{}, {Warn: -1}, {Warn: 101}, {Warn: 10, Hold: -time.Second}} {
		if _, err := NewPressureTracker(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("NewPressureTracker(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}
