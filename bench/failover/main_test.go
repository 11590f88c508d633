package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/test/e2e"
)

// A slow run's timeline puts the fault, the holders, the outage and the
// nodes' log lines in order, in ms after the fault, and leaves out log
// lines from before the run.
func TestTimeline(t *testing.T) {
	fault := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	r := e2e.Result{Scenario: "kill", From: "a", FaultAt: fault,
		Ownership: e2e.Ownership{Changes: []e2e.Change{{At: fault.Add(-time.Minute), Holder: "a"}, {At: fault.Add(90 * time.Millisecond), Holder: "b"}}},
		Outage:    e2e.Outage{Longest: 110 * time.Millisecond, LongestStart: fault.Add(-2 * time.Millisecond)},
	}
	explain := "b: time=2026-12-05T03:00:00.085Z level=INFO msg=\"became active\" event=role\n" +
		"a: time=2026-12-05T02:58:00.000Z level=INFO msg=old event=role\n"
	got := timeline(r, explain)
	want := []string{
		"timeline, ms after the fault",
		"    -2.0 outage begins: first unanswered probe (110.0 ms long)",
		"    +0.0 fault kill on a",
		"   +85.0 b: time=2026-12-05T03:00:00.085Z",
		"   +90.0 holder=\"b\" (ownership probe)",
		"  +108.0 outage ends",
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != len(want) {
		t.Fatalf("timeline has %d lines, want %d:\n%s", len(lines), len(want), got)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to begin %q", i, lines[i], w)
		}
	}
}
