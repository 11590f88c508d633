package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var goldenNow = time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)

func pct(v float64) *float64 { return &v }

// goldenStatus is a fixed state of a 2-node cluster plus a witness, seen
// from the active node a: two control-plane processes and four
// applications (one in backoff), the node manager late, its group under
// cpu pressure, a peer that answered for our address, one fence. prev is
// the same host 500 ms earlier, for the CPU rates.
func goldenStatus() (st, prev *supervisor.Status) {
	now := goldenNow
	started := now.Add(-3*time.Hour - 2*time.Minute)
	exitAt := now.Add(-12 * time.Minute)
	next := now.Add(800 * time.Millisecond)
	proc := func(name string, pid int, health string) supervisor.ProcessStatus {
		return supervisor.ProcessStatus{Name: name, State: supervisor.StateRunning, PID: pid, Critical: true, StartedAt: &started, Health: health, Cgroup: "apps/" + name}
	}
	groups := func(scale uint64) []supervisor.GroupStatus {
		return []supervisor.GroupStatus{
			{Group: "control", CPUUsageUsec: 9_000_000 + 9_000*scale, MemoryCurrent: 38 << 20, PidsCurrent: 31, PressureScope: "group", CPUPressure: pct(24.6), MemPressure: pct(0), IOPressure: pct(0.4)},
			{Group: "control/supervisor", CPUUsageUsec: 2_000_000 + 1_000*scale, MemoryCurrent: 12 << 20, PressureScope: "group", CPUPressure: pct(0.2), MemPressure: pct(0), IOPressure: pct(0)},
			{Group: "control/locator", CPUUsageUsec: 3_000_000 + 3_000*scale, MemoryCurrent: 11 << 20, PressureScope: "group", CPUPressure: pct(3.1), MemPressure: pct(0), IOPressure: pct(0)},
			{Group: "control/nodemanager", CPUUsageUsec: 4_000_000 + 5_000*scale, MemoryCurrent: 15 << 20, PressureScope: "group", CPUPressure: pct(41.3), MemPressure: pct(0), IOPressure: pct(0.4)},
			{Group: "apps", CPUUsageUsec: 500_000_000 + 900_000*scale, NrThrottled: 1520, ThrottledUsec: 48_300_000, MemoryCurrent: 1900 << 20, MemoryMax: 4 << 30, PressureScope: "group", CPUPressure: pct(63.0), MemPressure: pct(1.2), IOPressure: pct(0.8)},
			{Group: "apps/kamailio", CPUUsageUsec: 300_000_000 + 600_000*scale, MemoryCurrent: 1200 << 20, PressureScope: "group", CPUPressure: pct(58.9), MemPressure: pct(0), IOPressure: pct(0)},
			{Group: "apps/rtpengine", CPUUsageUsec: 90_000_000, MemoryCurrent: 0, PressureScope: "group", CPUPressure: pct(0), MemPressure: pct(0), IOPressure: pct(0)},
			{Group: "apps/sems", CPUUsageUsec: 100_000_000 + 290_000*scale, MemoryCurrent: 650 << 20, MemoryMax: 1 << 30, OOMKills: 2, PressureScope: "group", CPUPressure: pct(40.2), MemPressure: pct(3.5), IOPressure: pct(0.8)},
			{Group: "apps/exporter", CPUUsageUsec: 10_000_000 + 10_000*scale, MemoryCurrent: 50 << 20, PressureScope: "group", CPUPressure: pct(1.0), MemPressure: pct(0), IOPressure: pct(0)},
		}
	}
	st = &supervisor.Status{
		Version: "1.0.0", Cluster: "sip-edge", Node: "a", Role: "node", Healthy: false,
		Unhealthy: []string{"rtpengine backoff"},
		Supervisor: supervisor.SupervisorState{PID: 812, StartedAt: started, Config: "/etc/vigil/vigil.yaml", CgroupMode: "v2",
			Cgroup: "control/supervisor", RSSBytes: 10 << 20, Reloads: 1, Fences: 1},
		NotInForce: []string{"control: io.weight: no io controller"},
		ControlPlane: []supervisor.ProcessStatus{
			{Name: "locator", State: supervisor.StateRunning, PID: 820, Critical: true, StartedAt: &started, Health: "none", Cgroup: "control/locator"},
			{Name: "nodemanager", State: supervisor.StateRunning, PID: 821, Critical: true, StartedAt: &started, Health: "none", Cgroup: "control/nodemanager"},
		},
		NodeManager: fromJSON[ctlmsg.NodeManagerReport](`{"self":"a","role":"active","epoch":7,"active":"a","lease_valid":true,"lease_remaining_ms":183,"lease_ms":200,
			"healthy":false,"unhealthy_reasons":["rtpengine backoff"],"token_age_ms":0,"token_rotation_ms":40.2,"maintenance":false,"vips_held":["192.0.2.100/24@eth0"],
			"degraded":true,"degraded_reasons":["late_timer"],"sched_max_late_ms":73.4,"ip_conflicts":1,
			"last_conflict":{"vip":"192.0.2.100/24@eth0","mac":"52:54:00:12:34:56","age_ms":42300},
			"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"maintenance":true,"in_ring":true}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":21},{"id":"w","seen":false}]}`),
		Locator: fromJSON[ctlmsg.LocatorReport](`{"self":"a","epoch":7,"holder":"a","lease_valid":true,"nodes":[{"id":"a","seen":true,"age_ms":2},{"id":"b","seen":true,"age_ms":19}]}`),
		Processes: []supervisor.ProcessStatus{
			proc("kamailio", 913, "healthy"),
			{Name: "rtpengine", State: supervisor.StateBackoff, Critical: true, Restarts: 2, NextStart: &next, Health: "none", Cgroup: "apps/rtpengine",
				LastExit: &supervisor.ExitInfo{Code: -1, Signal: "SIGKILL", At: exitAt, Ran: "2h50m0s"}},
			proc("sems", 915, "healthy"),
			proc("exporter", 917, "none"),
		},
		Groups: groups(1),
		Services: []supervisor.ServiceStatus{{Name: "default", Prefer: []string{"a", "b"}, Failback: "30s",
			Processes: []string{"kamailio", "rtpengine", "sems"}}},
	}
	st.Processes[3].Critical = false
	prev = &supervisor.Status{Groups: groups(0)}
	return st, prev
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/vigil -run TestStatusGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// A fixed cluster state renders to the same human status every time: the
// screen an operator reads at 3 a.m. changes only on purpose. It fits one
// screen, and colour changes nothing but the colour.
func TestStatusGolden(t *testing.T) {
	st, prev := goldenStatus()
	st.Summarize()
	win := cpuWindow{prev: prev, d: 500 * time.Millisecond}
	var plain, coloured bytes.Buffer
	printStatus(&plain, st, win, goldenNow, false)
	golden(t, "status.golden", plain.Bytes())
	if n := strings.Count(plain.String(), "\n"); n > 40 {
		t.Errorf("human status is %d lines for 2 nodes and 4 applications; keep it to one screen (40)", n)
	}
	if strings.Contains(plain.String(), "\x1b") {
		t.Error("colour sequences without a terminal")
	}

	printStatus(&coloured, st, win, goldenNow, true)
	if !strings.Contains(coloured.String(), cRed+"UNHEALTHY") || !strings.Contains(coloured.String(), cGreen+"yes"+cReset) {
		t.Errorf("colour output lacks the red UNHEALTHY or the green quorum:\n%q", coloured.String())
	}
	stripped := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(coloured.String(), "")
	if stripped != plain.String() {
		t.Errorf("colour output is not the plain output plus colour:\n--- coloured, stripped\n%s\n--- plain\n%s", stripped, plain.String())
	}
}

// The same state as `vigil status --json` prints it: the documented keys,
// plus quorum and warnings.
func TestStatusJSONGolden(t *testing.T) {
	st, _ := goldenStatus()
	st.Summarize()
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.json.golden", out.Bytes())
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	// docs/operations.md "vigil status --json": these keys are promised.
	for _, k := range []string{"version", "cluster", "node", "role", "healthy", "unhealthy_reasons", "supervisor", "control_plane",
		"nodemanager", "locator", "processes", "cgroups", "not_in_force", "quorum", "warnings"} {
		if _, ok := m[k]; !ok {
			t.Errorf("--json lacks %q", k)
		}
	}
}

// On cgroup v1 every group's pressure is the host's: one line, no column;
// without a second snapshot there is no CPU rate. A witness has no node
// manager, so no quorum of its own.
func TestStatusHostPressureWitness(t *testing.T) {
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "sip-edge", Node: "w", Role: "witness", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: goldenNow.Add(-time.Minute), CgroupMode: "hybrid", Cgroup: "vigil/control/supervisor"},
		Locator:    fromJSON[ctlmsg.LocatorReport](`{"self":"w","epoch":3,"holder":"b","nodes":[{"id":"a","seen":true,"age_ms":5,"healthy":true},{"id":"b","seen":true,"age_ms":7,"healthy":true}]}`),
		Groups: []supervisor.GroupStatus{
			{Group: "control", CPUUsageUsec: 5, PressureScope: "host", CPUPressure: pct(33), MemPressure: pct(0), IOPressure: pct(1)},
			{Group: "control/locator", CPUUsageUsec: 5, PressureScope: "host", CPUPressure: pct(33), MemPressure: pct(0), IOPressure: pct(1)},
		},
	}
	st.Summarize()
	var out bytes.Buffer
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	s := out.String()
	for _, want := range []string{
		"active b (this host's locator)  quorum n/a",
		"host PSI some avg10 (no per-group PSI here, so no pressure warning): cpu 33.0%  memory 0.0%  io 1.0%",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "PSI CPU/MEM/IO") || strings.Contains(s, "WARNINGS") {
		t.Errorf("host pressure shown per group, or warned about:\n%s", s)
	}
	if !regexp.MustCompile(`(?m)^  locator +- +-`).MatchString(s) {
		t.Errorf("without a second snapshot CPU must be '-':\n%s", s)
	}
}

// A peer this host's locator has not heard from for a lease is shown as
// unreachable, whatever the token last said of it, with its ages in red.
func TestStatusUnreachablePeer(t *testing.T) {
	st, _ := goldenStatus()
	st.NodeManager = fromJSON[ctlmsg.NodeManagerReport](`{"self":"b","role":"active","epoch":8,"active":"b","lease_valid":true,"lease_remaining_ms":150,"lease_ms":200,"healthy":true,
		"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}],
		"locators":[{"id":"a","seen":true,"age_ms":4280},{"id":"b","seen":true,"age_ms":24},{"id":"w","seen":true,"age_ms":23}]}`)
	st.Locator = fromJSON[ctlmsg.LocatorReport](`{"self":"b","epoch":8,"holder":"b","nodes":[{"id":"a","seen":true,"age_ms":4299},{"id":"b","seen":true,"age_ms":18}]}`)
	st.Summarize()
	var plain, coloured bytes.Buffer
	printStatus(&plain, st, cpuWindow{}, goldenNow, false)
	printStatus(&coloured, st, cpuWindow{}, goldenNow, true)
	if !regexp.MustCompile(`(?m)^a +unreachable +- +4\.3s ago +4\.3s ago$`).MatchString(plain.String()) {
		t.Errorf("node a silent for 4.3 s:\n%s", plain.String())
	}
	if !strings.Contains(coloured.String(), cRed+"unreachable"+cReset) || !strings.Contains(coloured.String(), cRed+"4.3s ago"+cReset) {
		t.Errorf("unreachable peer not in red:\n%q", coloured.String())
	}
	if !strings.Contains(plain.String(), "quorum yes (2 of 3 locators answered, 2 needed)") {
		t.Errorf("quorum with a and its locator gone:\n%s", plain.String())
	}
}

// The old active of a planned handover shows the addresses it still keeps
// and to whom it is handing them.
func TestStatusDraining(t *testing.T) {
	st, _ := goldenStatus()
	st.NodeManager = fromJSON[ctlmsg.NodeManagerReport](`{"self":"a","role":"standby","epoch":7,"active":"","lease_valid":false,"lease_ms":200,"healthy":true,
		"vips_held":["192.0.2.100/24@eth0"],"draining_to":"b","drain_remaining_ms":164,
		"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}],
		"locators":[{"id":"a","seen":true,"age_ms":4},{"id":"b","seen":true,"age_ms":4},{"id":"w","seen":true,"age_ms":5}]}`)
	st.Summarize()
	var out bytes.Buffer
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	if !strings.Contains(out.String(), "role standby  maintenance off  floating IPs 192.0.2.100/24@eth0 (handing over to b, at most 164 ms more)") {
		t.Errorf("draining node:\n%s", out.String())
	}
}

// fromJSON decodes a report written as JSON in a test (the daemon's wire
// form), panicking on a typo.
func fromJSON[T any](js string) *T {
	var v T
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		panic(fmt.Sprintf("%s: %v", js, err))
	}
	return &v
}

// An active/active pair seen from b, standby for voice and active for
// data: the CLUSTER section says it is voice's, SERVICES has b's role and
// the epoch of each, and THIS HOST lists data's address too. On the
// witness, each service's row has its locator's epoch.
func TestStatusTwoServices(t *testing.T) {
	started := goldenNow.Add(-time.Hour)
	loc := `"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":4},{"id":"w","seen":true,"age_ms":5}]`
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "duo", Node: "b", Role: "node", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: started, CgroupMode: "v2", Cgroup: "control/supervisor"},
		NodeManager: fromJSON[ctlmsg.NodeManagerReport](`{"self":"b","role":"standby","epoch":4,"active":"a","lease_ms":200,"healthy":true,
			"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}],` + loc + `}`),
		Locator: fromJSON[ctlmsg.LocatorReport](`{"self":"b","epoch":4,"holder":"a"}`),
		Services: []supervisor.ServiceStatus{
			{Name: "voice", Prefer: []string{"a", "b"}, Failback: "off", Processes: []string{"voiceapp"}},
			{Name: "data", Prefer: []string{"b", "a"}, Failback: "off", Processes: []string{"dataapp"},
				NodeManager: fromJSON[ctlmsg.NodeManagerReport](`{"self":"b","role":"active","epoch":9,"active":"b","lease_valid":true,"lease_ms":200,"healthy":true,
					"vips_held":["192.0.2.101/24@eth0"],` + loc + `}`),
				Locator: fromJSON[ctlmsg.LocatorReport](`{"self":"b","epoch":9,"holder":"b"}`)},
		},
	}
	st.Summarize()
	var out bytes.Buffer
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	s := out.String()
	for _, want := range []string{
		"CLUSTER  service voice  epoch 4  active a",
		"SERVICE  HOLDER  HERE     EPOCH  PREFER  FAILBACK  NEEDS",
		"voice    a       standby  4      a > b   off       voiceapp",
		"data     b       active   9      b > a   off       dataapp",
		"role standby (voice), active (data)  maintenance off  floating IPs 192.0.2.101/24@eth0",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}

	w := &supervisor.Status{
		Version: "1.0.0", Cluster: "duo", Node: "w", Role: "witness", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: started, CgroupMode: "v2", Cgroup: "control/supervisor"},
		Locator:    fromJSON[ctlmsg.LocatorReport](`{"self":"w","epoch":4,"holder":"a"}`),
		Services: []supervisor.ServiceStatus{{Name: "voice"}, {Name: "data",
			Locator: fromJSON[ctlmsg.LocatorReport](`{"self":"w","epoch":9,"holder":"b"}`)}},
	}
	w.Summarize()
	out.Reset()
	printStatus(&out, w, cpuWindow{}, goldenNow, false)
	for _, want := range []string{"voice    a       witness  4", "data     b       witness  9"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("witness output lacks %q:\n%s", want, out.String())
		}
	}
}

// A node manager that finds a floating IP's interface down (or missing on
// this host) makes the node unhealthy for its service, as the protocol
// sees it: the health line and the exit status say so even though every
// process runs, for the first service and for the others.
func TestStatusInterfaceDown(t *testing.T) {
	st := healthyStatus()
	st.NodeManager.Healthy, st.NodeManager.UnhealthyReasons = false, []string{"interface eth0 down"}
	st.Summarize()
	var out bytes.Buffer
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	if !strings.Contains(out.String(), "UNHEALTHY: interface eth0 down") {
		t.Errorf("health line does not say the interface is down:\n%s", out.String())
	}
	if code, why := statusCode(st); code != exitUnhealthy || why != "this node is unhealthy: interface eth0 down" {
		t.Errorf("statusCode = %d, %q; want %d", code, why, exitUnhealthy)
	}
	st.Summarize() // the CLI summarizes what the supervisor summarized
	if len(st.Unhealthy) != 1 {
		t.Errorf("unhealthy reasons %q after a second Summarize, want one", st.Unhealthy)
	}

	st = healthyStatus()
	second := *st.NodeManager
	second.Healthy, second.UnhealthyReasons, second.Role = false, []string{"interface eth9 down"}, "active"
	st.Services = []supervisor.ServiceStatus{
		{Name: "voice", Prefer: []string{"a", "b"}, Failback: "off"},
		{Name: "data", Prefer: []string{"b", "a"}, Failback: "off", NodeManager: &second},
	}
	st.Summarize()
	out.Reset()
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	for _, want := range []string{"UNHEALTHY: interface eth9 down", "data     a       active, unhealthy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if code, _ := statusCode(st); code != exitUnhealthy {
		t.Errorf("statusCode = %d, want %d", code, exitUnhealthy)
	}
}

// An address the active could not add with its interface up (the kernel
// refused it) leaves the node healthy, and the service where it is, but
// its callers reach nobody: the exit status says so, as the warning does.
func TestStatusVIPNotAdded(t *testing.T) {
	st := healthyStatus()
	st.NodeManager.Role, st.NodeManager.Active = "active", "a"
	st.NodeManager.VIPsFailed = []ctlmsg.VIPFailure{{VIP: "192.0.2.100/24@eth0", Error: "file exists"}}
	st.Summarize()
	if !st.Healthy {
		t.Errorf("unhealthy: %q", st.Unhealthy)
	}
	code, why := statusCode(st)
	if code != exitUnhealthy || why != "floating IP 192.0.2.100/24@eth0 is not on this host, which holds its service" {
		t.Errorf("statusCode = %d, %q", code, why)
	}
	if !slices.ContainsFunc(st.Warnings, func(w supervisor.Warning) bool { return w.Kind == "vip_error" }) {
		t.Errorf("no vip_error warning: %+v", st.Warnings)
	}
}

// THIS HOST's role with several services: grouped by role, in the order
// each role first appears, a service not reported yet as unknown.
func TestHostRoles(t *testing.T) {
	rep := func(role string) *ctlmsg.NodeManagerReport {
		return &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: role}}
	}
	for _, c := range []struct {
		roles []string // "" for no report
		want  string
	}{
		{[]string{"active", "active"}, "active (s0, s1)"},
		{[]string{"standby", "active", "standby"}, "standby (s0, s2), active (s1)"},
		{[]string{"active", "", "candidate", "standby"}, "active (s0), unknown (s1), candidate (s2), standby (s3)"},
	} {
		st := &supervisor.Status{}
		for i, r := range c.roles {
			svc := supervisor.ServiceStatus{Name: fmt.Sprintf("s%d", i)}
			var nm *ctlmsg.NodeManagerReport
			if r != "" {
				nm = rep(r)
			}
			if i == 0 {
				st.NodeManager = nm
			} else {
				svc.NodeManager = nm
			}
			st.Services = append(st.Services, svc)
		}
		if got := hostRoles(painter(false), st); got != c.want {
			t.Errorf("%q: got %q, want %q", c.roles, got, c.want)
		}
	}
}

// On a v1 kernel with realtime budgets the CGROUP table has the most of
// its budget each control group used on one CPU in a second (yellow from
// half, red from 90 %), and a group over half is a warning that names it.
func TestStatusRealtimeBudgetPeak(t *testing.T) {
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "sip-edge", Node: "w", Role: "witness", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: goldenNow.Add(-time.Minute), CgroupMode: "hybrid", Cgroup: "vigil/control/supervisor"},
		Locator:    fromJSON[ctlmsg.LocatorReport](`{"self":"w","epoch":3,"holder":"b","nodes":[{"id":"a","seen":true,"age_ms":5,"healthy":true},{"id":"b","seen":true,"age_ms":7,"healthy":true}]}`),
		Groups: []supervisor.GroupStatus{
			{Group: "control", CPUUsageUsec: 5},
			{Group: "control/locator", CPUUsageUsec: 5, RTBudgetUsec: 300000, RTPeakShare: pct(0.93), RTPeakUsedUsec: 279000, RTHighEpisodes: 2},
			{Group: "control/nodemanager", CPUUsageUsec: 5, RTBudgetUsec: 300000},
			{Group: "apps", CPUUsageUsec: 5},
		},
	}
	st.Summarize()
	var plain, coloured bytes.Buffer
	printStatus(&plain, st, cpuWindow{}, goldenNow, false)
	printStatus(&coloured, st, cpuWindow{}, goldenNow, true)
	s := plain.String()
	for _, re := range []string{`(?m)^CGROUP +CPU +THROTTLED +RT BUDGET PEAK +MEMORY$`, `(?m)^  locator +- +- +93% of 300ms `, `(?m)^  nodemanager +- +- +- of 300ms `, `(?m)^apps +- +- +- `} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("output does not match %q:\n%s", re, s)
		}
	}
	if !strings.Contains(coloured.String(), cRed+"93% of 300ms"+cReset) {
		t.Errorf("93%% of the budget not in red:\n%q", coloured.String())
	}
	if !strings.Contains(s, "control/locator 279 of 300 ms on one CPU (93%)") || !strings.Contains(s, "raise control.rt_budget") {
		t.Errorf("no rt_budget warning naming the locator:\n%s", s)
	}
	// Without a budget (cgroup v2, no RT group scheduling) no column.
	st.Groups = []supervisor.GroupStatus{{Group: "control", CPUUsageUsec: 5}}
	st.Summarize()
	plain.Reset()
	printStatus(&plain, st, cpuWindow{}, goldenNow, false)
	if strings.Contains(plain.String(), "RT BUDGET") {
		t.Errorf("RT BUDGET column without a budget:\n%s", plain.String())
	}
}

// A service this host could not start (its state file refused): shown not
// started where its role would be, named in a warning for each process
// that could not start it, and the exit status says so, before the
// quorum it has no view of. With one service the cluster line says it.
func TestStatusServiceNotStarted(t *testing.T) {
	started := goldenNow.Add(-time.Hour)
	loc := `"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":4},{"id":"w","seen":true,"age_ms":5}]`
	why := "statefile: /var/lib/vigil/service-data/node.state: config: corrupt state file: checksum mismatch"
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "duo", Node: "b", Role: "node", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: started, CgroupMode: "v2", Cgroup: "control/supervisor"},
		NodeManager: fromJSON[ctlmsg.NodeManagerReport](`{"self":"b","role":"standby","epoch":4,"active":"a","lease_ms":200,"healthy":true,
			"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}],` + loc + `}`),
		Locator: fromJSON[ctlmsg.LocatorReport](`{"self":"b","epoch":4,"holder":"a"}`),
		Services: []supervisor.ServiceStatus{
			{Name: "voice", Prefer: []string{"a", "b"}, Failback: "off", Processes: []string{"voiceapp"}},
			{Name: "data", Prefer: []string{"b", "a"}, Failback: "off", Processes: []string{"dataapp"},
				NodeManager: &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: 1, Self: "b", Role: ctlmsg.RoleNotStarted},
					UnhealthyReasons: []string{"service data not started: " + why}, StartError: why, StartFailingMS: 12000},
				Locator: &ctlmsg.LocatorReport{Slot: 1, Self: "b", StartError: "statefile: locator.state: empty"}},
		},
	}
	st.Summarize()
	var out bytes.Buffer
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	s := out.String()
	for _, want := range []string{
		"voice    a       standby      4      a > b   off       voiceapp",
		"data     none    not started  -      b > a   off       dataapp",
		"role standby (voice), not started (data)",
		"! service data: node manager could not start it, so this node holds none of it and takes no part in it; tried again every 5s (journalctl -u vigil EVENT=service_start_failed): " + why,
		"! service data: this host's locator could not start it, so it answers no node for it",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if code, msg := statusCode(st); code != exitUnhealthy || msg != "service data is not started on this host: "+why {
		t.Errorf("statusCode = %d, %q; want %d naming data", code, msg, exitUnhealthy)
	}
	// With this host's locator of data running, its holder is the one
	// this host knows.
	st.Services[1].Locator = fromJSON[ctlmsg.LocatorReport](`{"slot":1,"self":"b","epoch":9,"holder":"a"}`)
	st.Summarize()
	out.Reset()
	printStatus(&out, st, cpuWindow{}, goldenNow, false)
	if want := "data     a       not started  -      b > a   off       dataapp"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}

	// One service: nothing of it runs on this host.
	one := healthyStatus()
	one.NodeManager = &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Self: "a", Role: ctlmsg.RoleNotStarted},
		UnhealthyReasons: []string{"not started: " + why}, StartError: why}
	one.Locator = &ctlmsg.LocatorReport{Self: "a", StartError: why}
	one.Summarize()
	out.Reset()
	printStatus(&out, one, cpuWindow{}, goldenNow, false)
	for _, want := range []string{"CLUSTER  not started on this host (see WARNINGS)", "role not started",
		"! node manager could not start the service, so this node holds none of it", "! this host's locator could not start the service, so it answers no node for it"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("one service: output lacks %q:\n%s", want, out.String())
		}
	}
	if code, msg := statusCode(one); code != exitUnhealthy || msg != "the service is not started on this host: "+why {
		t.Errorf("one service: statusCode = %d, %q", code, msg)
	}
	// A witness whose locator could not start it.
	wit := &supervisor.Status{Version: "1.0.0", Cluster: "duo", Node: "w", Role: "witness", Healthy: true,
		Supervisor: supervisor.SupervisorState{PID: 10, StartedAt: started, CgroupMode: "v2", Cgroup: "control/supervisor"},
		Locator:    &ctlmsg.LocatorReport{Self: "w", StartError: why}}
	wit.Summarize()
	out.Reset()
	printStatus(&out, wit, cpuWindow{}, goldenNow, false)
	for _, want := range []string{"CLUSTER  locator not started on this host (see WARNINGS)", "! this host's locator could not start the service"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("witness: output lacks %q:\n%s", want, out.String())
		}
	}
	if code, _ := statusCode(wit); code != exitUnhealthy {
		t.Errorf("witness: statusCode = %d, want %d", code, exitUnhealthy)
	}

	// Its locator running: the cluster as this host's locator sees it.
	one.Locator = fromJSON[ctlmsg.LocatorReport](`{"self":"a","epoch":7,"holder":"b","nodes":[{"id":"a","seen":false},{"id":"b","seen":true,"age_ms":20,"healthy":true}]}`)
	one.Summarize()
	out.Reset()
	printStatus(&out, one, cpuWindow{}, goldenNow, false)
	for _, want := range []string{"CLUSTER  epoch 7  active b (this host's locator)  node manager not started on this host (see WARNINGS)", "b     active"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("one service, its locator running: output lacks %q:\n%s", want, out.String())
		}
	}
}
