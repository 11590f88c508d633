package metrics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/supervisor"
)

// rulesPath is the Prometheus rules file the packages install under
// /usr/share/vigil/prometheus.
const rulesPath = "../packaging/prometheus/vigil-rules.yml"

// promtool finds promtool: $VIGIL_PROMETHEUS_DIR, $PATH, then where
// scripts/install-deps.sh unpacks Debian's prometheus package. Missing, it
// skips, except in CI (CI=true), where the rules must be checked.
func promtool(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("VIGIL_PROMETHEUS_DIR"); d != "" {
		return filepath.Join(d, "promtool")
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	p := filepath.Join(ciPrometheusDir, "promtool")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	const msg = "promtool not found (on $PATH, in $VIGIL_PROMETHEUS_DIR or " + ciPrometheusDir + "; `make deps` unpacks it): the Prometheus rules are not checked"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestRulesCheck: promtool check rules accepts the packaged file.
func TestRulesCheck(t *testing.T) {
	tool := promtool(t)
	out, err := exec.Command(tool, "check", "rules", rulesPath).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesPath, err, out)
	}
	t.Logf("%s", out)
}

// ruleFile is the part of a Prometheus rules file the test reads.
type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The alert-test timeline: one scrape of every target every 15 s.
const (
	ruleStep = 15 * time.Second
	// Phases, by first step.
	phaseNormal   = 0
	phaseNobody   = 20  // no node of pbx holds the addresses or is active
	phaseBoth     = 40  // both nodes of pbx hold them and are active
	phaseIncident = 60  // pbx's addresses back on a, and trouble everywhere
	phaseRecover  = 90  // everything normal again
	ruleSteps     = 150 // last step 149
)

// ruleTarget is one scrape target of the alert test and what it goes
// through, step by step.
type ruleTarget struct {
	instance, cluster, node string
	witness                 bool
	vips                    []supervisor.FloatingIP
	peers                   []string // the cluster's nodes
	// data is the cluster's second service, "data", with its own node
	// manager and locator (nil: one service, "default").
	data *dataService
	// state returns the target's condition at step i.
	state func(i int) targetState
}

// dataService is a second service of a target: its addresses and, step by
// step, whether this node holds it.
type dataService struct {
	vips  []supervisor.FloatingIP
	holds func(i int) bool
}

type targetState struct {
	down       bool // the scrape fails: up 0, no series
	snapErr    bool // the supervisor's snapshot fails: vigil_scrape_error 1
	role       string
	holds      bool
	unhealthy  bool
	noQuorum   bool
	fatal      string // a process in FATAL
	backoff    string // a process waiting to be restarted
	authDrops  uint64
	conflicts  uint64
	fences     uint64
	fencesHeld uint64
	locDegrade bool
	rtPeak     float64 // the node manager group's peak share of its realtime budget
	// dataDown: the node manager could not start the second service (a
	// refused state file).
	dataDown bool
}

func between(i, from, to int) bool { return i >= from && i < to }

// ruleTargets: cluster pbx (nodes a and b, witness w; the interface of the
// IPv4 address is eth0 on a and ens3 on b) and cluster lab (nodes x and y,
// witness z), which uses the same IPv4 address at another site: the
// alerts must group by cluster, not by address. lab has a second service,
// data, held by y except while pbx has no holder: its alerts must not
// hide behind x's active role in the first service.
func ruleTargets() []*ruleTarget {
	pbxVIPs := func(if4 string) []supervisor.FloatingIP {
		return []supervisor.FloatingIP{{Address: "192.0.2.10/24", Interface: if4}, {Address: "2001:db8::10/64", Interface: "eth1"}}
	}
	pbx, lab := []string{"a", "b"}, []string{"x", "y"}
	return []*ruleTarget{
		{instance: "pbx-a:9720", cluster: "pbx", node: "a", vips: pbxVIPs("eth0"), peers: pbx, state: func(i int) targetState {
			s := targetState{role: "active", holds: true}
			switch {
			case between(i, phaseNobody, phaseBoth):
				s.role, s.holds = "standby", false
			case between(i, phaseIncident, phaseRecover):
				s.unhealthy, s.fatal = true, "rtpengine"
				if i >= phaseIncident+20 {
					s.conflicts = 1
				}
			}
			return s
		}},
		{instance: "pbx-b:9720", cluster: "pbx", node: "b", vips: pbxVIPs("ens3"), peers: pbx, state: func(i int) targetState {
			s := targetState{role: "standby"}
			switch {
			case between(i, phaseBoth, phaseIncident):
				s.role, s.holds = "active", true
			case between(i, phaseIncident, phaseRecover):
				s.noQuorum, s.backoff, s.locDegrade = true, "kamailio", true
				s.rtPeak = 0.7
				s.authDrops = uint64(10 * (i - phaseIncident + 1))
			case i >= phaseRecover:
				s.authDrops = 300
			}
			return s
		}},
		{instance: "pbx-w:9720", cluster: "pbx", node: "w", witness: true, state: func(i int) targetState {
			return targetState{role: "witness", snapErr: between(i, phaseIncident, phaseRecover)}
		}},
		{instance: "lab-x:9720", cluster: "lab", node: "x", vips: []supervisor.FloatingIP{{Address: "192.0.2.10/24", Interface: "eth0"}}, peers: lab, data: labData(func(int) bool { return false }), state: func(i int) targetState {
			s := targetState{role: "active", holds: true}
			if i >= phaseIncident+20 {
				s.fencesHeld = 2 // stalled past its lease, twice, kept the role
			}
			s.dataDown = between(i, phaseIncident, phaseRecover)
			return s
		}},
		{instance: "lab-y:9720", cluster: "lab", node: "y", vips: []supervisor.FloatingIP{{Address: "192.0.2.10/24", Interface: "eth0"}}, peers: lab, data: labData(func(i int) bool { return !between(i, phaseNobody, phaseBoth) }), state: func(i int) targetState {
			s := targetState{role: "standby"}
			if i >= phaseIncident+20 {
				s.fences = 1
			}
			return s
		}},
		{instance: "lab-z:9720", cluster: "lab", node: "z", witness: true, data: labData(nil), state: func(i int) targetState {
			return targetState{role: "witness", down: between(i, phaseIncident, phaseRecover)}
		}},
	}
}

// labData is lab's second service, held where holds says (nil: a witness).
func labData(holds func(i int) bool) *dataService {
	return &dataService{vips: []supervisor.FloatingIP{{Address: "198.51.100.20/24", Interface: "eth0", Service: "data"}}, holds: holds}
}

// status is what the target's supervisor reports in state s (at step i):
// the same types the supervisor fills, summarized as it does.
func (rt *ruleTarget) status(t *testing.T, i int, s targetState) *supervisor.Status {
	t.Helper()
	st := &supervisor.Status{Version: "1.0.0", Cluster: rt.cluster, Node: rt.node, Role: "node", Healthy: !s.unhealthy,
		Supervisor: supervisor.SupervisorState{StartedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Fences: s.fences, FencesHeld: s.fencesHeld}}
	if rt.witness {
		st.Role = "witness"
	}
	for _, v := range rt.vips {
		v.Service = "default"
		st.FloatingIPs = append(st.FloatingIPs, v)
	}
	// A node's file always has a service (vips: is "default"); a
	// witness's lists them only when there are several.
	if !rt.witness || rt.data != nil {
		st.Services = []supervisor.ServiceStatus{{Name: "default"}}
	}
	if rt.data != nil {
		st.Services = append(st.Services, supervisor.ServiceStatus{Name: "data", Locator: &ctlmsg.LocatorReport{Self: rt.node}})
		if !rt.witness {
			st.FloatingIPs = append(st.FloatingIPs, rt.data.vips...)
			role, held := "standby", []string{}
			if rt.data.holds(i) {
				role = "active"
				for _, v := range rt.data.vips {
					held = append(held, v.Address+"@"+v.Interface)
				}
			}
			st.Services[1].NodeManager = &ctlmsg.NodeManagerReport{VIPs: held, BeatFields: ctlmsg.BeatFields{Self: rt.node, Role: role, LeaseMS: 200, Healthy: true}}
			if s.dataDown {
				st.Services[1].NodeManager = &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Slot: 1, Self: rt.node, Role: ctlmsg.RoleNotStarted},
					UnhealthyReasons: []string{"service data not started: statefile: checksum mismatch"}, StartError: "statefile: checksum mismatch"}
			}
		}
	}
	for _, c := range []string{"locator", "nodemanager"} {
		if rt.witness && c == "nodemanager" {
			continue
		}
		st.ControlPlane = append(st.ControlPlane, supervisor.ProcessStatus{Name: c, State: supervisor.StateRunning, Critical: true, Health: "none"})
	}
	if !rt.witness {
		for _, a := range []string{"kamailio", "rtpengine"} {
			p := supervisor.ProcessStatus{Name: a, State: supervisor.StateRunning, Critical: a == "rtpengine", Health: "healthy"}
			switch a {
			case s.fatal:
				p.State, p.Health = supervisor.StateFatal, "none"
			case s.backoff:
				p.State, p.Health = supervisor.StateBackoff, "none"
			}
			st.Processes = append(st.Processes, p)
		}
	}
	if !rt.witness {
		// A v1 kernel with RT group scheduling: the budget and its use.
		peak := max(s.rtPeak, 0.2)
		st.Groups = append(st.Groups, supervisor.GroupStatus{Group: "control/nodemanager", RTBudgetUsec: 300000, RTPeakShare: &peak, RTPeakUsedUsec: int64(peak * 300000)})
	}
	loc := ctlmsg.LocatorReport{Self: rt.node, Degraded: s.locDegrade}
	st.Locator = &loc
	if !rt.witness {
		nm := ctlmsg.NodeManagerReport{VIPs: []string{}, Transport: transport.Stats{Dropped: map[string]uint64{}}, Conflicts: s.conflicts, BeatFields: ctlmsg.BeatFields{Self: rt.node, Role: s.role, LeaseMS: 200, Healthy: !s.unhealthy}}
		if s.authDrops > 0 {
			nm.Transport.Dropped["auth"] = s.authDrops
		}
		for _, p := range rt.peers {
			nm.Peers = append(nm.Peers, ctlmsg.PeerState{ID: p, Healthy: true, InRing: true})
			// Each node and the witness run a locator; without quorum
			// only this node's own answers.
			nm.Locators = append(nm.Locators, ctlmsg.LocatorAnswer{ID: p, Seen: !s.noQuorum || p == rt.node, AgeMS: 20})
		}
		nm.Locators = append(nm.Locators, ctlmsg.LocatorAnswer{ID: "witness", Seen: !s.noQuorum, AgeMS: 20})
		if s.holds {
			for _, v := range rt.vips {
				nm.VIPs = append(nm.VIPs, v.Address+"@"+v.Interface)
			}
		}
		st.NodeManager = &nm
	}
	st.Summarize()
	return st
}

// seriesValues is one series' samples over the timeline ("" = no sample).
type seriesValues map[string][]string

// ruleSeries scrapes every target at every step through the real collector
// and HTTP server and returns every series, named as Prometheus stores it
// (with instance and job), plus up.
func ruleSeries(t *testing.T, targets []*ruleTarget) seriesValues {
	t.Helper()
	out := seriesValues{}
	add := func(series string, i int, v float64) {
		if out[series] == nil {
			out[series] = make([]string, ruleSteps)
		}
		out[series][i] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	for _, rt := range targets {
		var mu sync.Mutex
		var cur *supervisor.Status // nil: the snapshot fails
		url := serve(t, NewCollector(func(context.Context) (*supervisor.Status, error) {
			mu.Lock()
			defer mu.Unlock()
			if cur == nil {
				return nil, errors.New("supervisor loop busy")
			}
			return cur, nil
		}))
		target := map[string]string{"instance": rt.instance, "job": "vigil"}
		for i := range ruleSteps {
			s := rt.state(i)
			if s.down {
				add(seriesName("up", target, nil), i, 0)
				continue
			}
			var st *supervisor.Status
			if !s.snapErr {
				st = rt.status(t, i, s)
			}
			mu.Lock()
			cur = st
			mu.Unlock()
			add(seriesName("up", target, nil), i, 1)
			for name, mf := range parseText(t, get(t, url)) {
				for _, m := range mf.GetMetric() {
					ls := labels(m)
					switch mf.GetType() {
					case dto.MetricType_HISTOGRAM:
						h := m.GetHistogram()
						for _, b := range h.GetBucket() {
							add(seriesName(name+"_bucket", target, ls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)), i, float64(b.GetCumulativeCount()))
						}
						add(seriesName(name+"_bucket", target, ls, "le", "+Inf"), i, float64(h.GetSampleCount()))
						add(seriesName(name+"_sum", target, ls), i, h.GetSampleSum())
						add(seriesName(name+"_count", target, ls), i, float64(h.GetSampleCount()))
					case dto.MetricType_COUNTER:
						add(seriesName(name, target, ls), i, m.GetCounter().GetValue())
					default:
						add(seriesName(name, target, ls), i, m.GetGauge().GetValue())
					}
				}
			}
		}
	}
	return out
}

// seriesName writes a series in PromQL selector form with its labels
// sorted.
func seriesName(name string, target, ls map[string]string, extra ...string) string {
	all := map[string]string{}
	for k, v := range ls {
		all[k] = v
	}
	for k, v := range target {
		all[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		all[extra[i]] = extra[i+1]
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(name + "{")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, all[k])
	}
	b.WriteByte('}')
	return b.String()
}

// promValues writes samples in promtool's notation: "_" for no sample and
// "stale" where a series disappears, as Prometheus marks a series missing
// from a scrape.
func promValues(v []string) string {
	out := make([]string, len(v))
	seen := false
	for i, s := range v {
		switch {
		case s != "":
			out[i], seen = s, true
		case seen && v[i-1] != "":
			out[i] = "stale"
		default:
			out[i] = "_"
		}
	}
	return strings.Join(out, " ")
}

// wantAlert is an alert that must be firing at a step, with its labels
// (the expression's; the rule's severity is added).
type wantAlert struct {
	alert  string
	labels map[string]string
}

func pbxNode(n string) map[string]string {
	return map[string]string{"instance": "pbx-" + n + ":9720", "job": "vigil", "cluster": "pbx", "node": n}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// ruleExpectations: at each step, exactly these alerts fire; every other
// alert of the file must not.
func ruleExpectations() map[int][]wantAlert {
	last := func(phaseEnd int) int { return phaseEnd - 1 }
	return map[int][]wantAlert{
		last(phaseNobody): nil, // normal: nothing
		// 45 s into "nobody holds": the 1 m `for` has not passed yet.
		phaseNobody + 3: nil,
		last(phaseBoth): {
			{"VigilFloatingIPUnheld", map[string]string{"cluster": "pbx", "vip": "192.0.2.10"}},
			{"VigilFloatingIPUnheld", map[string]string{"cluster": "pbx", "vip": "2001:db8::10"}},
			{"VigilNoActiveNode", map[string]string{"cluster": "pbx", "service": "default"}},
			// lab's first service stays on x: its second has no holder.
			{"VigilFloatingIPUnheld", map[string]string{"cluster": "lab", "vip": "198.51.100.20"}},
			{"VigilNoActiveNode", map[string]string{"cluster": "lab", "service": "data"}},
		},
		last(phaseIncident): {
			{"VigilFloatingIPMultipleHolders", map[string]string{"cluster": "pbx", "vip": "192.0.2.10"}},
			{"VigilFloatingIPMultipleHolders", map[string]string{"cluster": "pbx", "vip": "2001:db8::10"}},
			{"VigilMultipleActiveNodes", map[string]string{"cluster": "pbx", "service": "default"}},
		},
		// 15 s into the incident: FATAL fires at once, the rest wait for
		// their `for`.
		phaseIncident + 1: {
			{"VigilProcessFatal", with(pbxNode("a"), "process", "rtpengine", "group", "apps", "state", "fatal")},
		},
		last(phaseRecover): {
			{"VigilProcessFatal", with(pbxNode("a"), "process", "rtpengine", "group", "apps", "state", "fatal")},
			{"VigilNodeUnhealthy", pbxNode("a")},
			{"VigilAddressConflict", with(pbxNode("a"), "service", "default")},
			{"VigilNoQuorum", with(pbxNode("b"), "service", "default")},
			{"VigilProcessDown", with(pbxNode("b"), "process", "kamailio", "group", "apps")},
			{"VigilAuthDropsRising", with(pbxNode("b"), "process", "nodemanager")},
			{"VigilControlPlaneDegraded", with(pbxNode("b"), "process", "locator", "service", "default")},
			{"VigilControlPlaneNearRealtimeBudget", with(pbxNode("b"), "group", "control/nodemanager")},
			{"VigilScrapeError", pbxNode("w")},
			{"VigilControlPlaneFenced", map[string]string{"instance": "lab-y:9720", "job": "vigil", "cluster": "lab", "node": "y"}},
			{"VigilControlPlaneStalledPastLease", map[string]string{"instance": "lab-x:9720", "job": "vigil", "cluster": "lab", "node": "x"}},
			// x cannot start data: not started, and unfit for it.
			{"VigilServiceNotStarted", map[string]string{"instance": "lab-x:9720", "job": "vigil", "cluster": "lab", "node": "x", "process": "nodemanager", "service": "data"}},
			{"VigilNodeUnhealthy", map[string]string{"instance": "lab-x:9720", "job": "vigil", "cluster": "lab", "node": "x"}},
			{"VigilTargetDown", map[string]string{"instance": "lab-z:9720", "job": "vigil"}},
		},
		last(ruleSteps): nil, // recovered: nothing
	}
}

var labelRef = regexp.MustCompile(`\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// expandAnnotation renders the only template construct the rules use,
// {{ $labels.NAME }}; a reference to a label the alert lacks is an error
// (it would render as an empty string).
func expandAnnotation(text string, ls map[string]string) (string, error) {
	var missing []string
	out := labelRef.ReplaceAllStringFunc(text, func(m string) string {
		n := labelRef.FindStringSubmatch(m)[1]
		v, ok := ls[n]
		if !ok {
			missing = append(missing, n)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("refers to labels %v the alert does not have", missing)
	}
	if strings.Contains(out, "{{") {
		return "", fmt.Errorf("template construct other than {{ $labels.NAME }}: %q", out)
	}
	return out, nil
}

type promtoolAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

type promtoolAlertTest struct {
	EvalTime  string          `yaml:"eval_time"`
	Alertname string          `yaml:"alertname"`
	ExpAlerts []promtoolAlert `yaml:"exp_alerts"`
}

type promtoolSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type promtoolTest struct {
	Interval      string              `yaml:"interval"`
	InputSeries   []promtoolSeries    `yaml:"input_series"`
	AlertRuleTest []promtoolAlertTest `yaml:"alert_rule_test"`
}

type promtoolFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval string         `yaml:"evaluation_interval"`
	Tests              []promtoolTest `yaml:"tests"`
}

// TestRulesFire runs the packaged alerts with promtool test rules over
// series produced by the real collector for two clusters going through a
// timeline: normal; no node of pbx holding its floating IPs; both holding
// them; an incident with a FATAL process, an unhealthy node, no quorum, a
// process down, authentication drops, an address conflict, a degraded and
// a fenced control plane, a failing snapshot and a target down; recovery.
// At each checked step exactly the expected alerts fire, every other
// alert of the file is checked not to, and every alert fires at least
// once.
func TestRulesFire(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs promtool over a 37-minute timeline")
	}
	tool := promtool(t)
	raw, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	type rule struct {
		labels, annotations map[string]string
	}
	rules := map[string]rule{}
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := rules[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			rules[r.Alert] = rule{r.Labels, r.Annotations}
			names = append(names, r.Alert)
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description telling the operator what to do", r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
		}
	}

	series := ruleSeries(t, ruleTargets())
	test := promtoolTest{Interval: ruleStep.String()}
	keys := make([]string, 0, len(series))
	for k := range series {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		test.InputSeries = append(test.InputSeries, promtoolSeries{Series: k, Values: promValues(series[k])})
	}

	fired := map[string]bool{}
	want := ruleExpectations()
	steps := make([]int, 0, len(want))
	for s := range want {
		steps = append(steps, s)
	}
	slices.Sort(steps)
	for _, step := range steps {
		at := (time.Duration(step) * ruleStep).String()
		for _, w := range want[step] {
			if _, ok := rules[w.alert]; !ok {
				t.Fatalf("step %d expects %s, which %s does not define", step, w.alert, rulesPath)
			}
		}
		for _, name := range names {
			tc := promtoolAlertTest{EvalTime: at, Alertname: name, ExpAlerts: []promtoolAlert{}}
			for _, w := range want[step] {
				if w.alert != name {
					continue
				}
				fired[name] = true
				exp := promtoolAlert{ExpLabels: with(w.labels), ExpAnnotations: map[string]string{}}
				for k, v := range rules[name].labels {
					exp.ExpLabels[k] = v
				}
				for k, text := range rules[name].annotations {
					s, err := expandAnnotation(text, w.labels)
					if err != nil {
						t.Fatalf("%s annotation %s: %v", name, k, err)
					}
					exp.ExpAnnotations[k] = s
				}
				tc.ExpAlerts = append(tc.ExpAlerts, exp)
			}
			test.AlertRuleTest = append(test.AlertRuleTest, tc)
		}
	}
	for _, name := range names {
		if !fired[name] {
			t.Errorf("%s is never expected to fire: add it to the timeline", name)
		}
	}

	abs, err := filepath.Abs(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(promtoolFile{RuleFiles: []string{abs}, EvaluationInterval: ruleStep.String(), Tests: []promtoolTest{test}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vigil-rules-test.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command(tool, "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules (%d series, %d checks): %v\n%.20000s", len(test.InputSeries), len(test.AlertRuleTest), err, res)
	}
	t.Logf("promtool test rules: %d series from the collector, %d alert checks at %d times: %s",
		len(test.InputSeries), len(test.AlertRuleTest), len(steps), strings.TrimSpace(string(res)))
}
