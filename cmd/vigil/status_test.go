package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// A fixed cluster state renders to the same human status every time: the
// screen an operator reads at 3 a.m. changes only on purpose.
func TestStatusGolden(t *testing.T) {
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	started := now.Add(-3*time.Hour - 2*time.Minute)
	exitAt := now.Add(-12 * time.Minute)
	next := now.Add(800 * time.Millisecond)
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "sip-edge", Node: "a", Role: "node", Healthy: false,
		Unhealthy: []string{"rtpengine backoff"},
		Supervisor: supervisor.SupervisorState{PID: 812, StartedAt: started, CgroupMode: "v2",
			Cgroup: "control/supervisor", RSSBytes: 10 << 20, Reloads: 1, Fences: 1},
		NotInForce: []string{"control: memory.min: not available on cgroup v1"},
		ControlPlane: []supervisor.ProcessStatus{
			{Name: "locator", State: supervisor.StateRunning, PID: 820, Critical: true, StartedAt: &started, Health: "none", Cgroup: "control/locator"},
			{Name: "nodemanager", State: supervisor.StateRunning, PID: 821, Critical: true, StartedAt: &started, Health: "none", Cgroup: "control/nodemanager"},
		},
		NodeManager: json.RawMessage(`{"self":"a","role":"active","epoch":7,"active":"a","lease_valid":true,"lease_remaining_ms":183,
			"token_age_ms":0,"token_rotation_ms":40.2,"maintenance":false,"vips_held":["192.0.2.100/24 eth0"],
			"degraded":true,"degraded_reasons":["late_timer"],"sched_max_late_ms":73.4,"ip_conflicts":1,
			"peers":[{"id":"a","healthy":true},{"id":"b","healthy":true,"maintenance":true}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":21},{"id":"w","seen":false}]}`),
		Locator: json.RawMessage(`{"epoch":7,"holder":"a","lease_valid":true,"nodes":[{"id":"a","seen":true,"age_ms":2},{"id":"b","seen":true,"age_ms":19}]}`),
		Processes: []supervisor.ProcessStatus{
			{Name: "kamailio", State: supervisor.StateRunning, PID: 913, Critical: true, StartedAt: &started, Health: "healthy", Cgroup: "apps/kamailio"},
			{Name: "rtpengine", State: supervisor.StateBackoff, Critical: true, Restarts: 2, NextStart: &next, Health: "none", Cgroup: "apps/rtpengine",
				LastExit: &supervisor.ExitInfo{Code: -1, Signal: "SIGKILL", At: exitAt, Ran: "2h50m0s"}},
		},
	}
	var out bytes.Buffer
	printStatus(&out, st, now)
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/vigil -run TestStatusGolden -update to create it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("status output changed:\n--- got\n%s\n--- want\n%s", out.String(), want)
	}
}
