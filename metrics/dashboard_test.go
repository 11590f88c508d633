package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// dashboardPath is the Grafana dashboard the packages install under
// /usr/share/vigil/grafana.
const dashboardPath = "../packaging/grafana/vigil-dashboard.json"

type dashDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashTarget struct {
	Datasource   *dashDS `json:"datasource"`
	RefID        string  `json:"refId"`
	Expr         string  `json:"expr"`
	LegendFormat string  `json:"legendFormat"`
	Format       string  `json:"format"`
	Instant      bool    `json:"instant"`
}

type dashOverride struct {
	Matcher struct {
		ID      string `json:"id"`
		Options string `json:"options"`
	} `json:"matcher"`
	Properties []struct {
		ID    string          `json:"id"`
		Value json.RawMessage `json:"value"`
	} `json:"properties"`
}

type dashMapping struct {
	Type    string `json:"type"`
	Options map[string]struct {
		Text  string `json:"text"`
		Color string `json:"color"`
	} `json:"options"`
}

type dashPanel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Datasource *dashDS `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets     []dashTarget `json:"targets"`
	Panels      []dashPanel  `json:"panels"` // a collapsed row's
	FieldConfig struct {
		Defaults struct {
			Unit     string         `json:"unit"`
			Mappings []dashMapping  `json:"mappings"`
			Custom   map[string]any `json:"custom"`
		} `json:"defaults"`
		Overrides []dashOverride `json:"overrides"`
	} `json:"fieldConfig"`
	Options struct {
		YAxis struct {
			Unit string `json:"unit"`
		} `json:"yAxis"`
	} `json:"options"`
}

type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int         `json:"schemaVersion"`
	Title         string      `json:"title"`
	UID           string      `json:"uid"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *dashDS         `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Datasource *dashDS `json:"datasource"`
			Expr       string  `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return &d
}

// allPanels flattens rows: the panels that draw something.
func (d *dashboard) allPanels() []dashPanel {
	var out []dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// wantPanels are the panels issue 7 asks for, by title, with their type
// and the metric each must read.
var wantPanels = []struct{ title, typ, metric string }{
	{"Role per node", "state-timeline", "vigil_role"},
	{"Failovers", "timeseries", "vigil_takeovers_total"},
	{"Token rotation time", "timeseries", "vigil_token_rotation_seconds"},
	{"Takeover time", "timeseries", "vigil_last_takeover_announced_seconds"},
	{"Takeover time distribution", "bargauge", "vigil_takeover_announced_seconds_bucket"},
	{"Control-plane lateness", "heatmap", "vigil_sched_late_seconds_bucket"},
	{"Control-plane lateness quantiles", "timeseries", "vigil_sched_late_seconds_bucket"},
	{"Control-plane pressure vs apps CPU", "timeseries", "vigil_cgroup_pressure_some_avg10_ratio"},
	{"Control-plane pressure vs apps CPU", "timeseries", "vigil_cgroup_cpu_usage_seconds_total"},
	{"Restarts per process", "timeseries", "vigil_process_restarts_total"},
	{"Floating IPs held", "state-timeline", "vigil_floating_ip_held"},
	{"Fences", "timeseries", "vigil_fences_total"},
	// Issue 11: health, quorum, processes, authentication drops, address
	// conflicts, and the floating IP holders grouped by cluster.
	{"Floating IP holders per cluster", "state-timeline", "vigil_node_info"},
	{"Floating IP holders per cluster", "state-timeline", "vigil_floating_ip_held"},
	{"Node health", "state-timeline", "vigil_node_healthy"},
	{"Quorum", "state-timeline", "vigil_quorum_ok"},
	{"Processes up", "state-timeline", "vigil_process_up"},
	{"Authentication drops", "timeseries", "vigil_datagrams_dropped_total"},
	{"Address conflicts", "timeseries", "vigil_ip_conflicts_total"},
}

var (
	vigilName = regexp.MustCompile(`\bvigil_[a-z0-9_]+`)
	// selector is a metric name with its label matchers.
	selector = regexp.MustCompile(`\b(vigil_[a-z0-9_]+)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$`)
)

// targetLabels are added by Prometheus, not by the collector.
var targetLabels = []string{"instance", "job"}

// family resolves a name used in PromQL to the scraped family it reads:
// itself, or a histogram's _bucket/_sum/_count series.
func family(fams map[string]*dto.MetricFamily, name string) (*dto.MetricFamily, bool) {
	if mf, ok := fams[name]; ok {
		return mf, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if mf, ok := fams[base]; ok && mf.GetType() == dto.MetricType_HISTOGRAM {
				return mf, true
			}
		}
	}
	return nil, false
}

// checkExpr reports the vigil_ names expr uses that the collector does not
// export, and label matchers that no exported series could satisfy.
func checkExpr(fams map[string]*dto.MetricFamily, expr string) []string {
	var bad []string
	for _, name := range vigilName.FindAllString(expr, -1) {
		if _, ok := family(fams, name); !ok {
			bad = append(bad, name+" is not exported")
		}
	}
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		mf, ok := family(fams, m[1])
		if !ok {
			continue
		}
		for _, part := range strings.Split(m[2], ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			lm := matcher.FindStringSubmatch(part)
			if lm == nil {
				bad = append(bad, m[1]+": cannot read matcher "+part)
				continue
			}
			ln, op, lv := lm[1], lm[2], lm[3]
			if slices.Contains(targetLabels, ln) || (ln == "le" && strings.HasSuffix(m[1], "_bucket")) {
				continue
			}
			var values []string
			for _, s := range mf.GetMetric() {
				if v, ok := labels(s)[ln]; ok {
					values = append(values, v)
				}
			}
			switch {
			case len(values) == 0:
				bad = append(bad, m[1]+" has no label "+ln)
			case op == "=" && !slices.Contains(values, lv):
				bad = append(bad, m[1]+": no series with "+ln+"=\""+lv+"\"")
			}
		}
	}
	return bad
}

// variableQuery is a query variable's PromQL: Grafana 10 stores it as
// {"query": ...}, older dashboards as a string.
func variableQuery(raw json.RawMessage) string {
	var obj struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Query != "" {
		return obj.Query
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// TestDashboardQueriesUseExportedMetrics reads the packaged dashboard and
// checks every PromQL expression against a real scrape of the collector:
// each vigil_ name must be exported and each label matcher must match a
// label the series carry. It also checks the panels the issue asks for,
// the data source input and the node variable.
func TestDashboardQueriesUseExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	fams := parseText(t, get(t, serve(t, NewCollector(staticSource(defaultFixture().status(t))))))

	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: Grafana 10 dashboards are 36 or later", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q", d.UID, d.Title)
	}
	const ds = "${DS_PROMETHEUS}"
	if !slices.ContainsFunc(d.Inputs, func(in struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	}) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		t.Error("no DS_PROMETHEUS datasource input")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			if v.Datasource == nil || v.Datasource.UID != ds {
				t.Errorf("variable %s: datasource %v, want %s", v.Name, v.Datasource, ds)
			}
			for _, p := range checkExpr(fams, variableQuery(v.Query)) {
				t.Errorf("variable %s: %s", v.Name, p)
			}
		}
	}
	if vars["DS_PROMETHEUS"] != "datasource" {
		t.Errorf("no DS_PROMETHEUS datasource variable: %v", vars)
	}
	if vars["instance"] != "query" {
		t.Errorf("no instance query variable: %v", vars)
	}
	// One Grafana over many clusters: a cluster variable, and the node
	// list follows it.
	if vars["cluster"] != "query" {
		t.Errorf("no cluster query variable: %v", vars)
	}
	for _, v := range d.Templating.List {
		if v.Name == "instance" && !strings.Contains(variableQuery(v.Query), `cluster=~"$cluster"`) {
			t.Errorf("the instance variable does not follow the cluster variable: %s", v.Query)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr == "" {
			continue
		}
		for _, p := range checkExpr(fams, a.Expr) {
			t.Errorf("annotation: %s", p)
		}
	}

	ids := map[int]bool{}
	titles := map[string]dashPanel{}
	used := map[string]bool{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = p
		if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v", p.Title, g)
		}
		if p.Datasource == nil || p.Datasource.UID != ds {
			t.Errorf("%s: datasource %v, want %s", p.Title, p.Datasource, ds)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != ds {
				t.Errorf("%s/%s: datasource %v, want %s", p.Title, tg.RefID, tg.Datasource, ds)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("%s/%s: does not follow the node variable: %s", p.Title, tg.RefID, tg.Expr)
			}
			names := vigilName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s/%s: reads no vigil_ metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
			}
			for _, prob := range checkExpr(fams, tg.Expr) {
				t.Errorf("%s/%s: %s", p.Title, tg.RefID, prob)
			}
		}
	}
	for _, w := range wantPanels {
		p, ok := titles[w.title]
		if !ok {
			t.Errorf("no panel %q", w.title)
			continue
		}
		if p.Type != w.typ {
			t.Errorf("%q is a %s, want %s", w.title, p.Type, w.typ)
		}
		reads := false
		for _, tg := range p.Targets {
			reads = reads || slices.Contains(vigilName.FindAllString(tg.Expr, -1), w.metric)
		}
		if !reads {
			t.Errorf("%q does not read %s", w.title, w.metric)
		}
	}
	t.Logf("%d panels read %d vigil_ series names", len(titles), len(used))
}

// TestDashboardCheckCatchesUnknownMetrics: the check above must be able to
// fail on a misspelt name, a label the series lack and a value none has.
func TestDashboardCheckCatchesUnknownMetrics(t *testing.T) {
	fams := parseText(t, get(t, serve(t, NewCollector(staticSource(defaultFixture().status(t))))))
	for expr, want := range map[string]string{
		`rate(vigil_takeover_total[5m])`:                            "vigil_takeover_total is not exported",
		`vigil_role{instance=~"$instance", state="active"}`:         "vigil_role has no label state",
		`vigil_cgroup_cpu_usage_seconds_total{group="app"}`:         `no series with group="app"`,
		`histogram_quantile(0.9, rate(vigil_role_bucket[1m]))`:      "vigil_role_bucket is not exported",
		`sum(rate(vigil_sched_late_seconds_bucket{le="0.01"}[1m]))`: "",
	} {
		got := strings.Join(checkExpr(fams, expr), "; ")
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("checkExpr(%s) = %q, want %q", expr, got, want)
		}
	}
}
