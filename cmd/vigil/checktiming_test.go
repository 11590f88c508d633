package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/supervisor"
)

const timingConfig = `cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
  timing: {token_interval: 10ms, token_timeout: 50ms, lease: 60ms, drift_margin: 15ms}
`

// timingDaemon answers status with the node manager's and locator's
// figures: before, then (every later call) after, where after adds
// late to the node manager's loop and rtt to each locator's round trip.
func timingDaemon(t *testing.T, late time.Duration, rtt map[string]time.Duration, restart bool) string {
	var nmLate, locLate timingstat.Hist
	hists := map[string]*timingstat.Hist{"a": {}, "b": {}, "w": {}}
	for range 100 {
		nmLate.Add(100 * time.Microsecond)
		locLate.Add(50 * time.Microsecond)
		for _, h := range hists {
			h.Add(300 * time.Microsecond)
		}
	}
	snap := func(inc uint64) *supervisor.Status {
		st := healthyStatus()
		nm := *st.NodeManager
		nm.Incarnation = inc
		nm.QuorumNeeded = 2
		nm.KernelLease = &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseEnforcing}
		nm.Timing = &timingstat.Report{Late: nmLate.JSON()}
		for _, id := range []string{"a", "b", "w"} {
			nm.Timing.RTT = append(nm.Timing.RTT, timingstat.PeerRTT{ID: id, RTT: hists[id].JSON()})
		}
		loc := ctlmsg.LocatorReport{Self: "a", Incarnation: 7, Timing: &timingstat.Report{Late: locLate.JSON()}}
		st.NodeManager, st.Locator = &nm, &loc
		return st
	}
	var mu sync.Mutex
	calls := 0
	first := snap(3)
	return fakeDaemon(t, func() *supervisor.Status {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return first
		}
		if calls == 2 {
			for range 1000 {
				nmLate.Add(200 * time.Microsecond)
				locLate.Add(80 * time.Microsecond)
			}
			nmLate.Add(late)
			locLate.Add(late / 2)
			for id, d := range rtt {
				hists[id].Add(d)
			}
		}
		if restart {
			return snap(4)
		}
		return snap(3)
	})
}

func TestCheckTiming(t *testing.T) {
	path, _ := writeConfig(t, timingConfig)
	run := func(sock string, extra ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(append([]string{"check", "-c", path, "--timing", "--for", "10ms", "--socket", sock}, extra...), &out, &errb)
		return code, out.String(), errb.String()
	}

	t.Run("enough margin", func(t *testing.T) {
		sock := timingDaemon(t, 2*time.Millisecond, map[string]time.Duration{"a": time.Millisecond, "b": 2 * time.Millisecond, "w": 3 * time.Millisecond}, false)
		code, out, errs := run(sock)
		if code != exitOK {
			t.Fatalf("exit %d\n%s%s", code, out, errs)
		}
		for _, want := range []string{
			"measured the control plane of node a",
			"  nodemanager", "  locator  ", "locator a", "locator b", "locator w",
			"2.000", // the node manager's max, exact
			"configured: timing: {token_interval: 10ms, token_timeout: 50ms, lease: 60ms, drift_margin: 15ms}",
			"verdict: ok",
			// lease 20 + 2(2+2) = 28; token_timeout 20 + 2(2+3) = 30
			"  timing: {token_interval: 10ms, token_timeout: 30ms, lease: 28ms, drift_margin: ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("too little margin", func(t *testing.T) {
		sock := timingDaemon(t, 30*time.Millisecond, map[string]time.Duration{"a": time.Millisecond, "b": time.Millisecond, "w": time.Millisecond}, false)
		code, out, _ := run(sock)
		if code != exitFailure || !strings.Contains(out, "verdict: TOO LITTLE MARGIN (lease, token_timeout)") ||
			!strings.Contains(out, "  LOW  lease") || !strings.Contains(out, "lease: 82ms") {
			t.Errorf("exit %d, want %d:\n%s", code, exitFailure, out)
		}
	})

	t.Run("json", func(t *testing.T) {
		sock := timingDaemon(t, 2*time.Millisecond, map[string]time.Duration{"a": time.Millisecond, "w": time.Millisecond}, false)
		code, out, errs := run(sock, "--json")
		var res timingResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v\n%s%s", err, out, errs)
		}
		// b answered nothing while measuring: the quorum (2 of 3) is a and w.
		if code != exitOK || !res.OK || res.Source != "daemon" || len(res.RoundTrips) != 3 ||
			strings.Join(res.Unanswered, ",") != "b" || res.Lateness[0].MaxMS != 2 || !res.Lateness[0].MaxExact ||
			res.Lateness[0].Count != 1001 || len(res.Rules) != 3 || res.Shortest.LeaseMS != 26 {
			t.Errorf("exit %d: %+v", code, res)
		}
	})

	t.Run("no quorum answered", func(t *testing.T) {
		sock := timingDaemon(t, 2*time.Millisecond, map[string]time.Duration{"a": time.Millisecond}, false)
		code, out, _ := run(sock)
		if code != exitFailure || !strings.Contains(out, "cannot judge: only 1 of 3 locators answered") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	t.Run("restarted while measuring", func(t *testing.T) {
		sock := timingDaemon(t, 2*time.Millisecond, nil, true)
		code, out, errs := run(sock)
		if code != exitFailure || !strings.Contains(errs, "restarted while measuring") || out != "" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})

	t.Run("no daemon", func(t *testing.T) {
		code, out, errs := run(filepath.Join(t.TempDir(), "none.sock"), "--for", "100ms")
		if code != exitFailure || !strings.Contains(errs, "no vigil daemon answers") || !strings.Contains(errs, "NOT the control plane's") ||
			!strings.Contains(out, "THIS COMMAND (no daemon; not the control plane)") || !strings.Contains(out, "verdict: NOT ESTABLISHED") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("usage", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := dispatch([]string{"check", "-c", path, "--timing", "--for", "0s"}, &out, &errb); code != exitUsage {
			t.Errorf("--for 0s: exit %d", code)
		}
	})
}
