package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/schedwatch"
	"github.com/vigil-project/vigil/supervisor"
)

// fixture is the state a test status is built from; tests vary it.
type fixture struct {
	epoch     uint64
	pidBase   int
	vips      []string
	apps      []string
	restarts  int
	takeover  *ctlmsg.Takeover
	cpuUsec   uint64
	tokenAge  int64
	lateTicks uint64
}

func defaultFixture() fixture {
	return fixture{
		epoch: 7, pidBase: 1000,
		vips:     []string{"192.0.2.10", "2001:db8::10"},
		apps:     []string{"kamailio", "rtpengine"},
		restarts: 3,
		takeover: &ctlmsg.Takeover{Epoch: 7, AddedMS: 12.5, AnnouncedMS: 14.25},
		cpuUsec:  2_500_000, tokenAge: 40, lateTicks: 2,
	}
}

func pct(v float64) *float64 { return &v }

// status builds what an active node with two apps, the control plane and
// its cgroups reports.
func (f fixture) status(t *testing.T) *supervisor.Status {
	t.Helper()
	now := time.Now()
	nm := ctlmsg.NodeManagerReport{
		BeatFields: ctlmsg.BeatFields{
			Self: "a", Role: "active", Epoch: f.epoch, Active: "a",
			LeaseValid: true, LeaseRemainingMS: 2500, HoldingToken: true,
			TokenAgeMS: f.tokenAge, RotationMS: 3.5, Healthy: true,
		},
		Peers: []ctlmsg.PeerState{
			{ID: "a", Healthy: true, InRing: true},
			{ID: "b", Healthy: false, InRing: true},
		},
		Locators: []ctlmsg.LocatorAnswer{
			{ID: "a", Seen: true, AgeMS: 20},
			{ID: "b", Seen: true, AgeMS: 35},
			{ID: "w", Seen: false},
		},
		// last_man_standing kept every locator (membership version 0).
		Membership:   &ctlmsg.Membership{Members: []string{"a", "b", "w"}},
		VIPs:         heldVIPs(f.vips),
		Takeovers:    1,
		LastTakeover: f.takeover,
		LateTimers:   f.lateTicks, MaxLateMS: 180, SlowPasses: 3,
		Degraded: true, SchedLateEpisodes: 4, SchedMaxLateMS: 250,
		SchedLate: &schedwatch.HistogramJSON{BoundsSeconds: []float64{0.001, 0.05, 0.5}, Counts: []uint64{990, 998, 1000}, Count: 1000, SumSeconds: 0.8},
		Timing:    &timingstat.Report{WarnState: timingstat.WarnState{Warning: true, Episodes: 2, WarnMS: 50, RecentMaxLateMS: 180}},
		Transport: transport.Stats{Received: 1000, Sent: 990, SendErrors: 1,
			Dropped: map[string]uint64{"auth": 5, "replay": 2, "kernel_filter": 7}, KernelFilter: "nftables"},
		GARPSent: 3, NASent: 3, AnnounceUnleased: 2, Conflicts: 1, HookFailures: 0,
		KernelLease: &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseEnforcing, Applies: 40, LastApplyUS: 180, MaxApplyUS: 900},
	}
	loc := ctlmsg.LocatorReport{
		Self: "a", Epoch: f.epoch, Holder: "a", LeaseValid: true, LeaseRemainingMS: 2400,
		Nodes: []ctlmsg.NodeCheckin{
			{ID: "a", Seen: true, AgeMS: 15, Epoch: f.epoch, Healthy: true},
			{ID: "b", Seen: true, AgeMS: 1200, Epoch: f.epoch},
		},
		Transport:         transport.Stats{Received: 500, Sent: 500, Dropped: map[string]uint64{"short": 1}, KernelFilter: "unavailable: no nf_tables"},
		SchedLateEpisodes: 1, SchedMaxLateMS: 30,
		Timing: &timingstat.Report{WarnState: timingstat.WarnState{WarnMS: 50, RecentMaxLateMS: 3}},
	}
	st := &supervisor.Status{
		Version: "1.2.3-test", Cluster: "pbx", Node: "a", Role: "node", Healthy: true,
		Supervisor: supervisor.SupervisorState{
			PID: f.pidBase, StartedAt: now.Add(-time.Hour), Reloads: 2, RSSBytes: 12 << 20, Fences: 1,
		},
		NodeManager: &nm, Locator: &loc, FloatingIPs: configuredVIPs(f.vips),
		Services: []supervisor.ServiceStatus{{Name: "default", Prefer: []string{"a", "b"}, Failback: "off"}},
	}
	started := now.Add(-time.Minute)
	for i, n := range []string{"locator", "nodemanager"} {
		st.ControlPlane = append(st.ControlPlane, supervisor.ProcessStatus{
			Name: n, State: supervisor.StateRunning, PID: f.pidBase + 1 + i, Critical: true,
			Health: "none", StartedAt: &started, LastReport: &now,
			SchedWaitMS: 120.5 + float64(i), SchedRunMS: 4000,
		})
	}
	health := []string{"healthy", "unhealthy"}
	for i, n := range f.apps {
		ps := supervisor.ProcessStatus{
			Name: n, State: supervisor.StateRunning, PID: f.pidBase + 10 + i,
			Health: health[i%2], StartedAt: &started,
		}
		if i == 0 {
			ps.Restarts, ps.RestartUsec = f.restarts, 51_000
		} else {
			ps.State, ps.StartedAt = supervisor.StateBackoff, nil
		}
		st.Processes = append(st.Processes, ps)
	}
	groups := []string{"control", "control/supervisor", "control/locator", "control/nodemanager", "apps"}
	for _, n := range f.apps {
		groups = append(groups, "apps/"+n)
	}
	for i, g := range groups {
		st.Groups = append(st.Groups, supervisor.GroupStatus{
			Group: g, CPUUsageUsec: f.cpuUsec + uint64(i), NrThrottled: 4, ThrottledUsec: 250_000,
			MemoryCurrent: 64 << 20, MemoryMax: 256 << 20, OOMKills: 0, PidsCurrent: 5,
			PressureScope: "host", CPUPressure: pct(12.5), MemPressure: pct(0), IOPressure: pct(1.25),
		})
	}
	return st
}

// configuredVIPs are addrs as vips: configures them, on eth0.
func configuredVIPs(addrs []string) []supervisor.FloatingIP {
	var out []supervisor.FloatingIP
	for _, a := range addrs {
		bits := "/24"
		if strings.Contains(a, ":") {
			bits = "/64"
		}
		out = append(out, supervisor.FloatingIP{Address: a + bits, Interface: "eth0", Service: "default"})
	}
	return out
}

// heldVIPs are addrs as the node manager reports them held (vips_held:
// netfloat.VIP's prefix@interface).
func heldVIPs(addrs []string) []string {
	out := []string{}
	for _, v := range configuredVIPs(addrs) {
		out = append(out, v.Address+"@"+v.Interface)
	}
	return out
}

// scrape serves c through Handler with httptest and parses the text format.
func scrape(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	req, err := http.NewRequest("GET", srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

func staticSource(st *supervisor.Status) Source {
	return func(context.Context) (*supervisor.Status, error) { return st, nil }
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value is the value of the series of name whose labels include want;
// it fails the test unless exactly one series matches.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	mf, ok := fams[name]
	if !ok {
		t.Fatalf("%s not scraped", name)
	}
	var found []float64
	for _, m := range mf.GetMetric() {
		ls := labels(m)
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if ls[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			found = append(found, m.GetGauge().GetValue())
		case m.Counter != nil:
			found = append(found, m.GetCounter().GetValue())
		case m.Untyped != nil:
			found = append(found, m.GetUntyped().GetValue())
		default:
			t.Fatalf("%s%v: not a gauge or counter", name, want)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series match, want 1", name, want, len(found))
	}
	return found[0]
}

// TestSeriesStableAcrossPidsAndEpochs scrapes two statuses that differ in
// PIDs, epochs, ages and counters but not in configuration: the set of
// series must be identical, which is what keeps the cardinality bounded
// over the daemon's life.
func TestSeriesStableAcrossPidsAndEpochs(t *testing.T) {
	a := defaultFixture()
	b := defaultFixture()
	b.epoch, b.pidBase, b.restarts, b.tokenAge, b.cpuUsec, b.lateTicks = 4242, 31337, 9, 900, 9_000_000, 30
	b.takeover = &ctlmsg.Takeover{Epoch: 4242, AddedMS: 80, AnnouncedMS: 95}
	series := func(st *supervisor.Status) []string {
		var out []string
		for name, mf := range scrape(t, NewCollector(staticSource(st))) {
			for _, m := range mf.GetMetric() {
				out = append(out, name+fmt.Sprint(labels(m)))
			}
		}
		slices.Sort(out)
		return out
	}
	sa, sb := series(a.status(t)), series(b.status(t))
	if !slices.Equal(sa, sb) {
		t.Fatalf("series differ between statuses of one configuration:\n%v\n%v", sa, sb)
	}
	// And a status with one more app and VIP grows by a bounded amount.
	c := defaultFixture()
	c.apps = append(c.apps, "asterisk")
	c.vips = append(c.vips, "198.51.100.7")
	sc := series(c.status(t))
	if d := len(sc) - len(sa); d <= 0 || d > 30 {
		t.Fatalf("one more app and VIP added %d series, want 1..30", d)
	}
}

func TestValues(t *testing.T) {
	f := defaultFixture()
	st := f.status(t)
	fams := scrape(t, NewCollector(staticSource(st)))
	check := func(want float64, name string, ls ...string) {
		t.Helper()
		if got := value(t, fams, name, ls...); got != want {
			t.Errorf("%s%v = %v, want %v", name, ls, got, want)
		}
	}
	check(0, "vigil_scrape_error")
	check(1, "vigil_build_info", "version", "1.2.3-test")
	check(1, "vigil_role", "role", "active")
	check(1, "vigil_service_held", "service", "default")
	check(0, "vigil_role", "role", "standby")
	check(0, "vigil_role", "role", "candidate")
	check(0, "vigil_role", "role", "witness")
	check(float64(f.epoch), "vigil_epoch")
	check(2.5, "vigil_lease_remaining_seconds")
	check(float64(f.tokenAge)/1e3, "vigil_token_age_seconds")
	check(0.0035, "vigil_token_rotation_seconds")
	check(1, "vigil_takeovers_total")
	check(0.0125, "vigil_last_takeover_added_seconds")
	check(0.01425, "vigil_last_takeover_announced_seconds")
	for _, v := range f.vips {
		check(1, "vigil_floating_ip_held", "vip", v)
	}
	check(float64(len(f.vips)), "vigil_floating_ips_held")
	check(3, "vigil_garp_sent_total")
	check(2, "vigil_announcements_unleased_total")
	check(1, "vigil_ip_conflicts_total")
	check(5, "vigil_datagrams_dropped_total", "process", "nodemanager", "reason", "auth")
	check(1, "vigil_datagrams_dropped_total", "process", "locator", "reason", "short")
	check(7, "vigil_datagrams_dropped_total", "process", "nodemanager", "reason", "kernel_filter")
	check(1, "vigil_cluster_filter_active", "process", "nodemanager")
	check(0, "vigil_cluster_filter_active", "process", "locator")
	check(1000, "vigil_datagrams_received_total", "process", "nodemanager")
	check(1.2, "vigil_locator_checkin_age_seconds", "node", "b")
	check(0.035, "vigil_node_locator_ack_age_seconds", "locator", "b")
	check(0, "vigil_node_locator_seen", "locator", "w")
	check(0, "vigil_peer_healthy", "node", "b")
	check(1, "vigil_peer_healthy", "node", "a")
	check(1, "vigil_node_healthy")
	check(0, "vigil_maintenance")
	check(float64(f.restarts), "vigil_process_restarts_total", "process", "kamailio", "group", "apps")
	check(1, "vigil_process_up", "process", "kamailio", "group", "apps")
	check(0, "vigil_process_up", "process", "rtpengine", "group", "apps")
	check(1, "vigil_process_up", "process", "nodemanager", "group", "control")
	check(1, "vigil_process_health", "process", "kamailio", "state", "healthy")
	check(0, "vigil_process_health", "process", "kamailio", "state", "unhealthy")
	check(1, "vigil_process_health", "process", "rtpengine", "state", "unhealthy")
	check(1, "vigil_fences_total")
	check(float64(f.lateTicks), "vigil_late_ticks_total")
	check(3, "vigil_loop_slow_total")
	check(4, "vigil_sched_late_episodes_total", "process", "nodemanager")
	check(0.25, "vigil_sched_max_late_seconds", "process", "nodemanager")
	check(1, "vigil_control_degraded", "process", "nodemanager")
	check(1, "vigil_timing_margin_warning", "process", "nodemanager")
	check(0, "vigil_timing_margin_warning", "process", "locator")
	check(2, "vigil_timing_margin_episodes_total", "process", "nodemanager")
	check(0.18, "vigil_control_late_recent_max_seconds", "process", "nodemanager")
	check(0.05, "vigil_timing_margin_warn_seconds", "process", "locator")
	check(0, "vigil_control_degraded", "process", "locator")
	check(float64(f.cpuUsec)/1e6, "vigil_cgroup_cpu_usage_seconds_total", "group", "control")
	check(0.25, "vigil_cgroup_cpu_throttled_seconds_total", "group", "apps/kamailio")
	check(4, "vigil_cgroup_cpu_throttled_periods_total", "group", "apps")
	check(64<<20, "vigil_cgroup_memory_bytes", "group", "apps")
	check(256<<20, "vigil_cgroup_memory_max_bytes", "group", "apps")
	check(5, "vigil_cgroup_pids", "group", "control/locator")
	check(0.125, "vigil_cgroup_pressure_some_avg10_ratio", "group", "control", "resource", "cpu", "scope", "host")
	check(0.0125, "vigil_cgroup_pressure_some_avg10_ratio", "group", "apps", "resource", "io", "scope", "host")
	check(12<<20, "vigil_supervisor_rss_bytes")
	check(2, "vigil_reloads_total")
	check(0.051, "vigil_process_last_restart_latency_seconds", "process", "kamailio")
	check(1, "vigil_node_info", "cluster", "pbx", "node", "a")
	check(0.1205, "vigil_control_sched_wait_seconds_total", "process", "locator")
	check(0.1215, "vigil_control_sched_wait_seconds_total", "process", "nodemanager")
	check(4, "vigil_control_sched_run_seconds_total", "process", "nodemanager")
	if n := len(fams["vigil_control_sched_wait_seconds_total"].GetMetric()); n != 2 {
		t.Errorf("vigil_control_sched_wait_seconds_total: %d series, want the 2 control-plane processes only", n)
	}

	h := fams["vigil_takeover_added_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 0.0125 {
		t.Errorf("takeover histogram: count %d sum %v, want 1 and 0.0125", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestTakeoverHistogramOncePerEpoch scrapes one collector repeatedly: a
// takeover is counted once however often it is scraped, and a new epoch's
// takeover is counted again.
func TestTakeoverHistogramOncePerEpoch(t *testing.T) {
	var mu sync.Mutex
	f := defaultFixture()
	st := f.status(t)
	c := NewCollector(func(context.Context) (*supervisor.Status, error) {
		mu.Lock()
		defer mu.Unlock()
		return st, nil
	})
	count := func() (uint64, float64) {
		h := scrape(t, c)["vigil_takeover_announced_seconds"].GetMetric()[0].GetHistogram()
		return h.GetSampleCount(), h.GetSampleSum()
	}
	for range 3 {
		if n, _ := count(); n != 1 {
			t.Fatalf("after repeated scrapes of one takeover: %d observations, want 1", n)
		}
	}
	mu.Lock()
	f.epoch, f.takeover = 8, &ctlmsg.Takeover{Epoch: 8, AddedMS: 600, AnnouncedMS: 700}
	st = f.status(t)
	mu.Unlock()
	n, sum := count()
	if n != 2 || sum < 0.714 || sum > 0.715 {
		t.Fatalf("after a second takeover: count %d sum %v, want 2 and 0.71425", n, sum)
	}
}

func TestWitness(t *testing.T) {
	st := defaultFixture().status(t)
	st.Role, st.NodeManager = "witness", nil
	fams := scrape(t, NewCollector(staticSource(st)))
	if v := value(t, fams, "vigil_role", "role", "witness"); v != 1 {
		t.Fatalf("witness role = %v", v)
	}
	// Only the witness role: a 0 for "active" under a service name the
	// witness does not know would be a service no node holds.
	if n := len(fams["vigil_role"].GetMetric()); n != 1 {
		t.Fatalf("witness: %d vigil_role series, want only role=witness", n)
	}
	if _, ok := fams["vigil_epoch"]; ok {
		t.Fatal("a witness without a node manager reports vigil_epoch")
	}
	if v := value(t, fams, "vigil_report_present", "process", "nodemanager"); v != 0 {
		t.Fatalf("report_present nodemanager = %v", v)
	}
	if v := value(t, fams, "vigil_locator_checkin_age_seconds", "node", "a"); v != 0.015 {
		t.Fatalf("locator check-in age = %v", v)
	}
}

func TestScrapeError(t *testing.T) {
	var gotDeadline bool
	c := NewCollector(func(ctx context.Context) (*supervisor.Status, error) {
		_, gotDeadline = ctx.Deadline()
		return nil, errors.New("supervisor loop busy")
	}, WithVersion("9.9.9"))
	fams := scrape(t, c)
	if v := value(t, fams, "vigil_scrape_error"); v != 1 {
		t.Fatalf("vigil_scrape_error = %v, want 1", v)
	}
	if v := value(t, fams, "vigil_build_info", "version", "9.9.9"); v != 1 {
		t.Fatalf("vigil_build_info = %v", v)
	}
	if len(fams) != 2 {
		names := make([]string, 0, len(fams))
		for n := range fams {
			names = append(names, n)
		}
		t.Fatalf("a failed snapshot emitted %v, want only scrape_error and build_info", names)
	}
	if !gotDeadline {
		t.Fatal("the Source's context has no deadline")
	}
}

// TestDuplicateAndBadLabels feeds a status with a repeated process name and
// a non-UTF-8 name: the scrape still works and keeps the good series.
func TestDuplicateAndBadLabels(t *testing.T) {
	st := defaultFixture().status(t)
	st.Processes = append(st.Processes, st.Processes[0], supervisor.ProcessStatus{Name: "bad\xff", State: supervisor.StateRunning})
	fams := scrape(t, NewCollector(staticSource(st)))
	if v := value(t, fams, "vigil_process_up", "process", "kamailio", "group", "apps"); v != 1 {
		t.Fatalf("process_up kamailio = %v", v)
	}
	if v := value(t, fams, "vigil_role", "role", "active"); v != 1 {
		t.Fatalf("role active = %v", v)
	}
}

// TestDocListsEveryMetric keeps doc.go's table complete and honest: every
// scraped name is documented with its type and labels, and every documented
// name is scraped from the test status.
func TestDocListsEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^//\t(vigil_[a-z0-9_]+)\s+([GCH])\s+(.*?)\s{2,}\S`)
	documented := map[string][2]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = [2]string{m[2], strings.TrimSpace(m[3])}
	}
	st := defaultFixture().status(t)
	fams := scrape(t, NewCollector(staticSource(st)))
	types := map[dto.MetricType]string{dto.MetricType_GAUGE: "G", dto.MetricType_COUNTER: "C", dto.MetricType_HISTOGRAM: "H"}
	for name, mf := range fams {
		d, ok := documented[name]
		if !ok {
			t.Errorf("%s is not documented in doc.go", name)
			continue
		}
		if d[0] != types[mf.GetType()] {
			t.Errorf("%s: doc.go says type %s, scraped %s", name, d[0], mf.GetType())
		}
		var ls []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			ls = append(ls, l.GetName())
		}
		slices.Sort(ls)
		var dl []string
		if d[1] != "" {
			dl = strings.Split(strings.ReplaceAll(d[1], " ", ""), ",")
			slices.Sort(dl)
		}
		if !slices.Equal(ls, dl) {
			t.Errorf("%s: doc.go says labels %v, scraped %v", name, dl, ls)
		}
	}
	for name := range documented {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s is documented but not scraped from the test status", name)
		}
	}
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServe(t *testing.T) {
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewCollector(staticSource(defaultFixture().status(t)))
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, c, nil) }()

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				body = string(b)
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned before ctx ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, `vigil_role{role="active",service="default"} 1`) {
		t.Fatalf("/metrics lacks the active role:\n%.2000s", body)
	}

	// A second Serve on the same address fails and names it.
	err := Serve(ctx, addr, c, nil)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second Serve on %s: %v, want an error naming the address", addr, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after ctx ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of ctx ending")
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Fatal("still answering after Serve returned")
	}

	// "" is no listener.
	if err := Serve(context.Background(), "", c, nil); err != nil {
		t.Fatalf(`Serve(""): %v`, err)
	}
}

// twoServices is the default fixture with a second service, data, whose
// own node manager is a standby at epoch 3 without quorum (a is active for
// default) and whose own locator saw epoch 3.
func twoServices(t *testing.T) *supervisor.Status {
	t.Helper()
	st := defaultFixture().status(t)
	nm := ctlmsg.NodeManagerReport{
		BeatFields: ctlmsg.BeatFields{Self: "a", Role: "standby", Epoch: 3, Active: "b", LeaseMS: 600, Healthy: true},
		Locators: []ctlmsg.LocatorAnswer{
			{ID: "a", Seen: true, AgeMS: 20},
			{ID: "b", Seen: false},
			{ID: "w", Seen: false},
		},
		Takeovers:    4,
		LastTakeover: &ctlmsg.Takeover{Epoch: 2, AddedMS: 100, AnnouncedMS: 200},
		Transport:    transport.Stats{Received: 7, Dropped: map[string]uint64{"auth": 9}},
	}
	loc := ctlmsg.LocatorReport{Self: "a", Epoch: 3, Holder: "b"}
	st.Services = append(st.Services, supervisor.ServiceStatus{Name: "data", NodeManager: &nm, Locator: &loc})
	st.Summarize()
	return st
}

// TestSeriesPerService: a second service's node manager and locator are
// exported with its name, next to the first's, not hidden behind them:
// its role, epoch, quorum, transport and takeovers are its own.
func TestSeriesPerService(t *testing.T) {
	fams := scrape(t, NewCollector(staticSource(twoServices(t))))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vigil_role", []string{"service", "default", "role", "active"}, 1},
		{"vigil_role", []string{"service", "data", "role", "active"}, 0},
		{"vigil_role", []string{"service", "data", "role", "standby"}, 1},
		{"vigil_epoch", []string{"service", "default"}, 7},
		{"vigil_epoch", []string{"service", "data"}, 3},
		{"vigil_locator_epoch", []string{"service", "data"}, 3},
		{"vigil_quorum_ok", []string{"service", "default"}, 1},
		{"vigil_quorum_ok", []string{"service", "data"}, 0},
		{"vigil_quorum_locators_answered", []string{"service", "data"}, 1},
		{"vigil_takeovers_total", []string{"service", "data"}, 4},
		{"vigil_datagrams_dropped_total", []string{"service", "data", "process", "nodemanager", "reason", "auth"}, 9},
		{"vigil_datagrams_dropped_total", []string{"service", "default", "process", "nodemanager", "reason", "auth"}, 5},
		{"vigil_report_present", []string{"service", "data", "process", "locator"}, 1},
		{"vigil_service_held", []string{"service", "default"}, 1},
		{"vigil_service_held", []string{"service", "data"}, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	hists := map[string]uint64{}
	for _, m := range fams["vigil_takeover_added_seconds"].GetMetric() {
		hists[labels(m)["service"]] = m.GetHistogram().GetSampleCount()
	}
	if hists["default"] != 1 || hists["data"] != 1 || len(hists) != 2 {
		t.Errorf("takeover histograms by service: %v, want one observation each for default and data", hists)
	}

	// A witness: the witness role for each service, nothing of a node
	// manager.
	w := twoServices(t)
	w.Role, w.NodeManager, w.Services[1].NodeManager = "witness", nil, nil
	fams = scrape(t, NewCollector(staticSource(w)))
	for _, svc := range []string{"default", "data"} {
		if v := value(t, fams, "vigil_role", "service", svc, "role", "witness"); v != 1 {
			t.Errorf("witness: vigil_role{service=%s,role=witness} = %v", svc, v)
		}
		if v := value(t, fams, "vigil_report_present", "service", svc, "process", "nodemanager"); v != 0 {
			t.Errorf("witness: report_present{service=%s,process=nodemanager} = %v", svc, v)
		}
	}
	if _, ok := fams["vigil_epoch"]; ok {
		t.Error("a witness exports vigil_epoch")
	}
}
