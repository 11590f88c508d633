package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigil-project/vigil/supervisor"
)

// serve runs c behind serveOn, the server Serve starts, on a loopback port
// and returns the /metrics URL; the server stops with the test.
func serve(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, c, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serveOn: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serveOn did not stop within 10s")
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

// get fetches url in the text format and returns the body.
func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

// parseText parses a whole exposition with Prometheus's text parser: any
// line it rejects fails the test.
func parseText(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("text parser: %v\n%.3000s", err, body)
	}
	return fams
}

// unitless are the metrics that have no unit: states, flags, counts of
// things that are not events, identifiers' values.
var unitless = map[string]bool{
	"vigil_scrape_error": true, "vigil_timing_margin_warning": true, "vigil_report_present": true,
	"vigil_role": true, "vigil_node_healthy": true, "vigil_guarantees_not_in_force": true,
	"vigil_epoch": true, "vigil_lease_valid": true, "vigil_token_held": true, "vigil_token_lost": true,
	"vigil_maintenance": true, "vigil_floating_ips_held": true, "vigil_floating_ip_held": true, "vigil_service_held": true, "vigil_kernel_lease_enforced": true,
	"vigil_peer_healthy": true, "vigil_peer_maintenance": true, "vigil_peer_in_ring": true,
	"vigil_node_locator_seen": true, "vigil_locator_epoch": true, "vigil_locator_quarantined": true,
	"vigil_locator_node_seen": true, "vigil_control_degraded": true, "vigil_control_mlocked": true, "vigil_cluster_filter_active": true,
	"vigil_process_up": true, "vigil_process_consecutive_failures": true, "vigil_process_health": true,
	"vigil_cgroup_read_error": true, "vigil_cgroup_pids": true,
	"vigil_process_state": true, "vigil_quorum_ok": true, "vigil_quorum_locators": true,
	"vigil_quorum_locators_answered": true, "vigil_quorum_locators_needed": true,
	"vigil_membership_version": true, "vigil_membership_locators": true, "vigil_service_not_started": true,
}

// unitWords are name parts that mean the value has a unit, so the name
// must end in that unit.
var unitWords = regexp.MustCompile(`(usage|_time|_age|memory|rss|latency|duration|remaining|_wait_|_run_)`)

var metricName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// labelBounds are, per label name, the values a status may give it. A
// label not listed is unbounded as far as the lint knows.
type labelBounds map[string][]string

// bounds derives the allowed label values and the per-family series bound
// from the status the collector was given: processes, groups, floating IPs
// and nodes, times the largest fixed enumeration (roles, health states).
func bounds(t *testing.T, st *supervisor.Status) (labelBounds, int) {
	t.Helper()
	nm := st.NodeManager
	if nm == nil {
		t.Fatal("no node manager report")
	}
	var procs, groups, nodes, reasons []string
	for _, p := range append(slices.Clone(st.Processes), st.ControlPlane...) {
		procs = append(procs, p.Name)
	}
	for _, g := range st.Groups {
		groups = append(groups, g.Group)
	}
	for _, p := range nm.Peers {
		nodes = append(nodes, p.ID)
	}
	for _, l := range nm.Locators {
		nodes = append(nodes, l.ID)
	}
	for r := range nm.Transport.Dropped {
		reasons = append(reasons, r)
	}
	// The locator's report names nodes too; the fixture's are a subset of
	// the node manager's peers and locators.
	for _, s := range []*[]string{&procs, &groups, &nodes, &reasons} {
		slices.Sort(*s)
		*s = slices.Compact(*s)
	}
	lb := labelBounds{
		"process":   procs,
		"group":     groups, // includes "apps" and "control", the process groups
		"vip":       vipAddrs(st),
		"interface": {"eth0"},
		"service":   serviceNames(st),
		"node":      nodes,
		"locator":   nodes,
		"role":      roles[:],
		"state":     append(slices.Clone(healthStates[:]), "running", "backoff", "exited", "fatal", "stopping", "stopped"),
		"resource":  {"cpu", "memory", "io"},
		"scope":     {"group", "host", "unknown"},
		"reason":    append(reasons, "short"), // the locator's drop in the fixture
		"version":   {st.Version},
		"cluster":   {st.Cluster},
	}
	maxEnum := max(len(roles), len(healthStates), len(processStates), len(lb["resource"]))
	per := maxEnum * (len(procs) + len(groups) + len(nm.VIPs) + len(nodes))
	return lb, per
}

// vipAddrs are the addresses of st's configured floating IPs.
func vipAddrs(st *supervisor.Status) []string {
	var out []string
	for _, v := range st.FloatingIPs {
		out = append(out, vipAddr(v.Address))
	}
	return out
}

// lint checks parsed families against the naming and cardinality rules and
// returns one line per problem.
func lint(fams map[string]*dto.MetricFamily, lb labelBounds, perFamily int) []string {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		mf := fams[name]
		if !metricName.MatchString(name) {
			fail("%s: not a lower-case snake_case name", name)
		}
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue // client_golang's standard collectors, if ever registered
		}
		if !strings.HasPrefix(name, "vigil_") {
			fail("%s: not under vigil_", name)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			fail("%s: no HELP", name)
		}
		typ := mf.GetType()
		switch typ {
		case dto.MetricType_COUNTER:
			if !strings.HasSuffix(name, "_total") {
				fail("%s: counter not ending in _total", name)
			}
		case dto.MetricType_HISTOGRAM:
			if !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes") {
				fail("%s: histogram without a unit (_seconds, _bytes)", name)
			}
		case dto.MetricType_GAUGE:
			if strings.HasSuffix(name, "_total") {
				fail("%s: gauge ending in _total", name)
			}
		default:
			fail("%s: type %s; want counter, gauge or histogram", name, typ)
		}
		base := strings.TrimSuffix(name, "_total")
		hasUnit := strings.HasSuffix(base, "_seconds") || strings.HasSuffix(base, "_bytes") || strings.HasSuffix(base, "_ratio")
		switch {
		case strings.HasSuffix(name, "_info"):
			if typ != dto.MetricType_GAUGE {
				fail("%s: an _info metric must be a gauge", name)
			}
			for _, m := range mf.GetMetric() {
				if m.GetGauge().GetValue() != 1 || len(m.GetLabel()) == 0 {
					fail("%s: an _info series must be 1 with labels, got %v %v", name, m.GetGauge().GetValue(), labels(m))
				}
			}
		case unitless[name]:
			if hasUnit {
				fail("%s: listed as unitless but has a unit", name)
			}
		case typ == dto.MetricType_COUNTER && !unitWords.MatchString(base):
			// A count of events: _total is its unit.
		case !hasUnit:
			fail("%s: no unit suffix (_seconds, _bytes, _ratio, _total, _info)", name)
		}
		if strings.Contains(name, "pressure") && !strings.HasSuffix(name, "_ratio") {
			fail("%s: pressure must be a _ratio", name)
		}

		series := mf.GetMetric()
		if len(series) > perFamily {
			fail("%s: %d series, more than the status bound %d", name, len(series), perFamily)
		}
		// The family's own bound: the product of its labels' value counts.
		prod := 1
		if len(series) > 0 {
			for _, l := range series[0].GetLabel() {
				prod *= max(len(lb[l.GetName()]), 1)
			}
		}
		if len(series) > prod {
			fail("%s: %d series, more than its labels allow (%d)", name, len(series), prod)
		}
		for _, m := range series {
			for _, l := range m.GetLabel() {
				ln, lv := l.GetName(), l.GetValue()
				switch strings.ToLower(ln) {
				case "pid", "pids", "epoch", "incarnation":
					fail("%s: unbounded label %s=%q", name, ln, lv)
					continue
				}
				allowed, ok := lb[ln]
				switch {
				case !ok:
					fail("%s: label %s has no known bound", name, ln)
				case !slices.Contains(allowed, lv):
					fail("%s: label %s=%q is not one of %v", name, ln, lv, allowed)
				}
			}
			if h := m.GetHistogram(); h != nil && len(h.GetBucket()) > 20 {
				fail("%s: %d buckets", name, len(h.GetBucket()))
			}
		}
	}
	return bad
}

// bigFixture is an active node with several apps, floating IPs, peers and
// locators, so every per-thing family has more than one series.
func bigFixture() fixture {
	f := defaultFixture()
	f.apps = append(f.apps, "asterisk", "freeswitch", "redis")
	f.vips = append(f.vips, "198.51.100.7", "203.0.113.9")
	return f
}

// TestExpositionParsesAndIsBounded scrapes the real server (serveOn, what
// Serve runs) for a status with several processes, groups, floating IPs
// and nodes, parses the whole body with Prometheus's text parser and lints
// every family: vigil_ names, HELP, unit suffixes, no PID or epoch labels,
// label values drawn from the status, and series counts within a bound
// computed from the status.
func TestExpositionParsesAndIsBounded(t *testing.T) {
	f := bigFixture()
	st := f.status(t)
	body := get(t, serve(t, NewCollector(staticSource(st))))
	fams := parseText(t, body)
	if len(fams) < 70 {
		t.Fatalf("only %d metric families scraped", len(fams))
	}
	// Text the parser accepted can still carry a PID or epoch value under
	// a bounded-looking name: look for the fixture's numbers in the labels.
	for _, line := range strings.Split(body, "\n") {
		if i := strings.IndexByte(line, '{'); i >= 0 && !strings.HasPrefix(line, "#") {
			ls := line[i:strings.LastIndexByte(line, '}')]
			if strings.Contains(ls, fmt.Sprintf("%q", fmt.Sprint(f.epoch))) || strings.Contains(ls, fmt.Sprint(f.pidBase)) {
				t.Errorf("label values carry an epoch or PID: %s", line)
			}
		}
	}
	lb, per := bounds(t, st)
	t.Logf("%d families, per-family bound %d series", len(fams), per)
	for _, p := range lint(fams, lb, per) {
		t.Error(p)
	}
	// The families that carry the bounded labels really have one series
	// per thing: the bound is not vacuous.
	for name, want := range map[string]int{
		"vigil_process_up":                       len(st.Processes) + len(st.ControlPlane),
		"vigil_floating_ip_held":                 len(f.vips),
		"vigil_cgroup_cpu_usage_seconds_total":   len(st.Groups),
		"vigil_cgroup_pressure_some_avg10_ratio": 3 * len(st.Groups),
		"vigil_process_health":                   4 * (len(st.Processes) + len(st.ControlPlane)),
		"vigil_process_state":                    6 * (len(st.Processes) + len(st.ControlPlane)),
	} {
		if got := len(fams[name].GetMetric()); got != want {
			t.Errorf("%s: %d series, want %d", name, got, want)
		}
	}
}

// TestLintCatchesViolations feeds the lint an exposition that breaks each
// rule once: every break must be reported.
func TestLintCatchesViolations(t *testing.T) {
	var b strings.Builder
	b.WriteString(`# HELP vigil_restart_latency How long a restart took.
# TYPE vigil_restart_latency gauge
vigil_restart_latency{process="kamailio",pid="4242"} 0.05
# TYPE vigil_quiet gauge
vigil_quiet 1
# HELP other_thing Not ours.
# TYPE other_thing gauge
other_thing 1
# HELP vigil_restarts Restarts.
# TYPE vigil_restarts counter
vigil_restarts 3
# HELP vigil_load_pressure_percent Pressure.
# TYPE vigil_load_pressure_percent gauge
vigil_load_pressure_percent 12
# HELP vigil_node_info Info.
# TYPE vigil_node_info gauge
vigil_node_info{node="a"} 2
# HELP vigil_epoch_seen Epoch.
# TYPE vigil_epoch_seen gauge
vigil_epoch_seen{epoch="7"} 1
# HELP vigil_process_up Up.
# TYPE vigil_process_up gauge
`)
	for i := range 5 {
		fmt.Fprintf(&b, "vigil_process_up{process=\"worker-%d\"} 1\n", i)
	}
	lb := labelBounds{"process": {"kamailio", "worker-0", "worker-1"}, "node": {"a"}}
	got := lint(parseText(t, b.String()), lb, 4)
	for _, want := range []string{
		`vigil_restart_latency: unbounded label pid="4242"`,
		`vigil_restart_latency: no unit suffix`,
		`vigil_quiet: no HELP`,
		`other_thing: not under vigil_`,
		`vigil_restarts: counter not ending in _total`,
		`vigil_load_pressure_percent: pressure must be a _ratio`,
		`vigil_node_info: an _info series must be 1`,
		`vigil_epoch_seen: unbounded label epoch="7"`,
		`vigil_process_up: 5 series, more than the status bound 4`,
		`vigil_process_up: 5 series, more than its labels allow (3)`,
		`vigil_process_up: label process="worker-4" is not one of`,
	} {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, want)
		}
		if !found {
			t.Errorf("lint missed %q; reported:\n%s", want, strings.Join(got, "\n"))
		}
	}
}

// serviceNames are the services of st and "" (an address held that no
// service configures any more).
func serviceNames(st *supervisor.Status) []string {
	out := []string{""}
	for _, s := range st.Services {
		out = append(out, s.Name)
	}
	return out
}
