package supervisor

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// A reload names every setting it does not apply, and only those: the
// cluster, the paths and logging set up at start, the control plane's own
// scheduling. Floating IPs, hooks, processes and cgroup values apply in
// place and are not named.
func TestRestartOnlyKeys(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{
			Cluster: config.Cluster{
				Name: "c", Node: "a", Role: config.RoleNode, KeyFile: "/k",
				Nodes:  []config.Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "192.0.2.12:7400"}},
				Timing: config.Timing{TokenInterval: 20 * time.Millisecond, TokenTimeout: 150 * time.Millisecond, Lease: 200 * time.Millisecond, DriftMargin: 25 * time.Millisecond},
			},
			VIPs: []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}},
			Services: []config.Service{{Name: "voice", VIPs: []config.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}},
				Prefer: []string{"a", "b"}}},
			Control: config.ControlGroup{CPUWeight: 10000, Realtime: true, SchedDelayWarn: 50 * time.Millisecond},
			Hooks:   config.Hooks{Timeout: 10 * time.Second},
			Runtime: config.Runtime{StateDir: "/var/lib/vigil", ControlSocket: "/run/vigil/control.sock"},
			Log:     config.Log{Level: "info", Format: "text"},
		}
	}
	if k := restartOnlyKeys(base(), base()); len(k) != 0 {
		t.Errorf("identical configs: %v", k)
	}
	inPlace := base()
	inPlace.VIPs = append(inPlace.VIPs, config.VIP{Address: "192.0.2.101/24", Interface: "eth0"})
	inPlace.Hooks.OnActive = [][]string{{"/bin/true"}}
	inPlace.Hooks.Timeout = time.Second
	inPlace.Control.CPUWeight = 5000
	inPlace.Processes = []config.Process{{Name: "app"}}
	inPlace.Services[0].Processes = []string{"app"}
	inPlace.Services[0].VIPs = inPlace.VIPs
	if k := restartOnlyKeys(base(), inPlace); len(k) != 0 {
		t.Errorf("settings applied in place reported as needing a restart: %v", k)
	}
	next := base()
	next.Cluster.Nodes[1].Address = "192.0.2.13:7400"
	next.Cluster.Timing.Lease = 300 * time.Millisecond
	next.Cluster.KeyFile = "/k2"
	next.Control.Realtime = false
	next.Runtime.StateDir = "/srv/vigil"
	next.Metrics.Listen = "127.0.0.1:9721"
	next.Log.Level = "debug"
	next.Services[0].Prefer = []string{"b", "a"}
	next.Services[0].Failback = time.Minute
	want := []string{"cluster.key_file", "cluster.nodes", "cluster.timing.lease", "services[0].prefer", "services[0].failback", "control.realtime", "metrics.listen", "runtime.state_dir", "log.level"}
	if k := restartOnlyKeys(base(), next); !slices.Equal(k, want) {
		t.Errorf("got %v, want %v", k, want)
	}
}

// The fence waits for the rest of the lease, or of a planned handover's
// drain, never less than half a lease, and one lease when the report
// holds neither.
func TestFenceWait(t *testing.T) {
	const lease = 200 * time.Millisecond
	for _, c := range []struct {
		report string
		want   time.Duration
	}{
		{`{"lease_valid":true,"lease_remaining_ms":180}`, 180 * time.Millisecond},
		{`{"lease_valid":true,"lease_remaining_ms":20}`, 100 * time.Millisecond},
		{`{"lease_valid":false,"draining_to":"b","drain_remaining_ms":150}`, 150 * time.Millisecond},
		{`{"lease_valid":false,"draining_to":"b","drain_remaining_ms":0}`, 100 * time.Millisecond},
		{`{"lease_valid":false}`, lease},
		{``, lease}, // no report yet
	} {
		if got := fenceWait(reportOf(t, c.report), lease); got != c.want {
			t.Errorf("%s: %v, want %v", c.report, got, c.want)
		}
	}
}

// A fence is a fault of this node only if the fenced node manager held the
// role or addresses; a fenced standby lost nothing.
func TestFenceFault(t *testing.T) {
	for _, c := range []struct {
		report  string
		removed bool
		want    bool
	}{
		{`{"role":"active","epoch":7}`, false, true},
		{`{"role":"standby","epoch":7,"draining_to":"b"}`, false, true},
		{`{"role":"standby","epoch":7}`, true, true},
		{`{"role":"standby","epoch":7}`, false, false},
		{``, false, false},
	} {
		f := fenceFault(reportOf(t, c.report), c.removed, 812*time.Millisecond)
		if (f != nil) != c.want {
			t.Errorf("%s removed=%v: %+v, want fault %v", c.report, c.removed, f, c.want)
			continue
		}
		if f != nil && (f.Type != ctlmsg.TypeFault || f.Epoch != 7 || len(f.Reasons) != 1 || f.Reasons[0] != "fenced: node manager silent for 812 ms, past its lease") {
			t.Errorf("%s: %+v", c.report, f)
		}
	}
}

// reportOf is the node manager report in js, nil for "" (none yet).
func reportOf(t *testing.T, js string) *ctlmsg.NodeManagerReport {
	t.Helper()
	if js == "" {
		return nil
	}
	var r ctlmsg.NodeManagerReport
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &r
}

// A control-plane process's last report is shown while it runs and not
// once it has exited: a node manager SIGKILLed while active must not read
// as active in status until its restart (TestClusterNodeManagerCrashRelease
// counted that as two holders in a slow VM).
func TestReportsOnlyWhileRunning(t *testing.T) {
	nm := &ctlmsg.NodeManagerReport{}
	nm.Role, nm.LeaseValid, nm.LeaseRemainingMS = "active", true, 500
	loc := &ctlmsg.LocatorReport{}
	p := &proc{pid: 100, nms: []nmService{{report: nm}}, locReports: []*ctlmsg.LocatorReport{loc}}
	if n, l := p.currentReports(); len(n) != 1 || n[0] != nm || len(l) != 1 || l[0] != loc {
		t.Fatalf("running: reports %v %v, want the last ones", n, l)
	}
	p.pid = 0 // exited (lifecycle.go), not yet restarted
	if n, l := p.currentReports(); n != nil || l != nil {
		t.Fatalf("exited: reports %+v %+v, want none", n, l)
	}
}

// The locator serves every service and reports each by its slot: each
// report goes with its service, whatever order they come in, and one for a
// service the file does not have is refused (kept as a bad report).
func TestLocatorReportsByService(t *testing.T) {
	p := &proc{pid: 100, control: ctlLocator}
	second := &ctlmsg.LocatorReport{Slot: 1, Holder: "b"}
	first := &ctlmsg.LocatorReport{Holder: "a"}
	for _, r := range []*ctlmsg.LocatorReport{second, first} {
		if err := p.setLocatorReport(r, 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, l := p.currentReports(); len(l) != 2 || l[0] != first || l[1] != second {
		t.Fatalf("reports %+v, want the first service's then the second's", l)
	}
	if err := p.setLocatorReport(&ctlmsg.LocatorReport{Slot: 2}, 2); err == nil {
		t.Fatal("a report for a third service of two was kept")
	}
	if err := p.setLocatorReport(&ctlmsg.LocatorReport{Slot: -1}, 2); err == nil {
		t.Fatal("a report for service -1 was kept")
	}
	if _, l := p.currentReports(); len(l) != 2 || l[0] != first || l[1] != second {
		t.Fatalf("after refused reports: %+v, want the kept ones", l)
	}
}
