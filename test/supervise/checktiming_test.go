package supervise

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// `vigil check --timing` against a running one-node cluster prints what
// the control plane measured itself over the time asked for: the node
// manager's and the locator's lateness and the round trip to the (only)
// locator, each with samples, and a verdict with the shortest timing; the
// JSON form carries the same figures.
func TestCheckTimingRunningCluster(t *testing.T) {
	d := newDaemon(t, "")
	d.start()
	d.waitFor("node manager and locator report timing", 20*time.Second, func() bool {
		st := d.status()
		return st.NodeManager != nil && st.NodeManager.Timing != nil && st.Locator != nil && st.Locator.Timing != nil &&
			len(st.NodeManager.Timing.RTT) == 1 && st.NodeManager.Timing.RTT[0].RTT.Count > 0
	})

	out, code := d.vigil("check", "-c", d.cfgPath, "--timing", "--for", "2s")
	t.Logf("vigil check --timing --for 2s (exit %d):\n%s", code, out)
	if code != 0 && code != 1 {
		t.Fatalf("exit %d, want 0 (enough margin) or 1 (too little)", code)
	}
	for _, want := range []string{"measured the control plane of node a for 2.", "  nodemanager ", "  locator ", "  locator a ",
		"configured: timing: {token_interval: 30ms, token_timeout: 400ms, lease: 600ms, drift_margin: 50ms}",
		"\nverdict: ", "  timing: {token_interval: 30ms, "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "nodemanager" || f[0] == "locator") && (f[1] == "0" || (f[0] == "locator" && len(f) > 2 && f[2] == "0")) {
			t.Errorf("no samples in %q", line)
		}
	}

	cmd := exec.Command(vigilBin, "check", "-c", d.cfgPath, "--timing", "--for", "2s", "--json")
	js, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("--json: %v\n%s", err, js)
	}
	var res struct {
		Source   string `json:"source"`
		Lateness []struct {
			What  string  `json:"what"`
			Count uint64  `json:"count"`
			MaxMS float64 `json:"max_ms"`
		} `json:"lateness"`
		RoundTrips []struct {
			What  string  `json:"what"`
			Count uint64  `json:"count"`
			MaxMS float64 `json:"max_ms"`
		} `json:"round_trips"`
		Rules []struct {
			Field string `json:"field"`
		} `json:"rules"`
	}
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	// 2 s at a 30 ms token interval and a 600 ms lease, between two full
	// reports (one a second, so the window is 1-3 s): some 40 node
	// manager ticks, 13 locator ticks (every quarter lease), 60
	// check-ins; a noisy machine drops some, hence the generous floors.
	if res.Source != "daemon" || len(res.Lateness) != 2 || res.Lateness[0].What != "nodemanager" || res.Lateness[0].Count < 15 ||
		res.Lateness[1].What != "locator" || res.Lateness[1].Count < 4 ||
		len(res.RoundTrips) != 1 || res.RoundTrips[0].What != "a" || res.RoundTrips[0].Count < 10 || res.RoundTrips[0].MaxMS <= 0 ||
		len(res.Rules) != 3 {
		t.Errorf("--json: %s", js)
	}
}
