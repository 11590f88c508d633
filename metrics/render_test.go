package metrics

import (
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var updateSVG = flag.Bool("update-dashboard-svg", false, "rewrite docs/img/dashboard.svg from the dashboard render")

const dashboardSVG = "../docs/img/dashboard.svg"

// ciPrometheusDir is where scripts/install-deps.sh unpacks Debian's
// prometheus package (without installing it, so no service starts).
const ciPrometheusDir = "/var/cache/vigil-deps/prometheus/usr/bin"

// promTools finds prometheus and promtool: $VIGIL_PROMETHEUS_DIR, else
// ciPrometheusDir, else $PATH. Debian's prometheus package has both (apt-get
// download prometheus && dpkg -x prometheus_*.deb DIR gives them).
func promTools(t *testing.T) (prom, tool string) {
	t.Helper()
	if d := os.Getenv("VIGIL_PROMETHEUS_DIR"); d != "" {
		return filepath.Join(d, "prometheus"), filepath.Join(d, "promtool")
	}
	if _, err := os.Stat(filepath.Join(ciPrometheusDir, "promtool")); err == nil {
		return filepath.Join(ciPrometheusDir, "prometheus"), filepath.Join(ciPrometheusDir, "promtool")
	}
	prom, err1 := exec.LookPath("prometheus")
	tool, err2 := exec.LookPath("promtool")
	if err1 != nil || err2 != nil {
		if *updateSVG {
			t.Fatal("-update-dashboard-svg needs prometheus and promtool (Debian package prometheus; or set VIGIL_PROMETHEUS_DIR)")
		}
		t.Skip("prometheus/promtool not installed (Debian package prometheus, or VIGIL_PROMETHEUS_DIR): the dashboard's queries are not evaluated")
	}
	return prom, tool
}

// startPrometheus backfills om into a fresh TSDB and serves it on a
// loopback port; it returns the base URL. The lookback is one scrape
// interval and a bit, standing in for the staleness markers a backfill
// cannot carry (a floating IP that moved must not look held for 5 min).
func startPrometheus(t *testing.T, prom, tool string, om []byte) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "scrapes.om")
	if err := os.WriteFile(in, om, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(tool, "tsdb", "create-blocks-from", "openmetrics", in, data).CombinedOutput(); err != nil {
		t.Fatalf("promtool backfill: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cmd := exec.Command(prom, "--config.file="+cfg, "--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=100y", "--web.listen-address="+addr,
		"--query.lookback-delta=20s", "--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prom, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus not ready on %s within 60s: %v\n%s", addr, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promResult is one series of a query's answer, with a value per scenario
// step (NaN where Prometheus returned none).
type promResult struct {
	labels map[string]string
	legend string
	v      []float64
}

// expand fills in the Grafana variables the dashboard uses for a query
// over the whole scenario.
func expand(expr string) string {
	return strings.NewReplacer(
		"$instance", ".+",
		"$cluster", ".+",
		"$__rate_interval", "1m", // 4 scrape intervals, Grafana's default
		"$__range", fmt.Sprintf("%ds", int((scenarioSteps-1)*scenarioStep/time.Second)),
		"$__interval", fmt.Sprintf("%ds", int(scenarioStep/time.Second)),
	).Replace(expr)
}

var legendVar = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

func legendOf(format string, ls map[string]string) string {
	if format == "" {
		return fmt.Sprint(ls)
	}
	return legendVar.ReplaceAllStringFunc(format, func(m string) string {
		return ls[legendVar.FindStringSubmatch(m)[1]]
	})
}

// query evaluates a dashboard target with Prometheus's HTTP API over the
// scenario: a range query at every step, or an instant query at the end.
func query(t *testing.T, base string, tg dashTarget) []promResult {
	t.Helper()
	start := scenarioStart()
	end := start.Add((scenarioSteps - 1) * scenarioStep)
	q := url.Values{"query": {expand(tg.Expr)}}
	path := "/api/v1/query_range"
	if tg.Instant {
		path = "/api/v1/query"
		q.Set("time", strconv.FormatInt(end.Unix(), 10))
	} else {
		q.Set("start", strconv.FormatInt(start.Unix(), 10))
		q.Set("end", strconv.FormatInt(end.Unix(), 10))
		q.Set("step", fmt.Sprintf("%ds", int(scenarioStep/time.Second)))
	}
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
				Values [][]any           `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s %s", q.Get("query"), err, r.Error, body)
	}
	var out []promResult
	for _, s := range r.Data.Result {
		pr := promResult{labels: s.Metric, legend: legendOf(tg.LegendFormat, s.Metric), v: make([]float64, scenarioSteps)}
		for i := range pr.v {
			pr.v[i] = math.NaN()
		}
		points := s.Values
		if tg.Instant {
			points = [][]any{s.Value}
			for i := range pr.v {
				pr.v[i] = math.NaN()
			}
		}
		for _, p := range points {
			ts, _ := p[0].(float64)
			vs, _ := p[1].(string)
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				t.Fatalf("query %s: value %v", q.Get("query"), p)
			}
			i := int(math.Round((ts - float64(start.Unix())) / scenarioStep.Seconds()))
			if i >= 0 && i < scenarioSteps {
				pr.v[i] = v
			}
		}
		out = append(out, pr)
	}
	slices.SortFunc(out, func(a, b promResult) int { return strings.Compare(a.legend, b.legend) })
	return out
}

// seriesBy returns the result whose legend is name.
func seriesBy(t *testing.T, rs []promResult, name string) []float64 {
	t.Helper()
	for _, r := range rs {
		if r.legend == name {
			return r.v
		}
	}
	var have []string
	for _, r := range rs {
		have = append(have, r.legend)
	}
	t.Fatalf("no series %q in %v", name, have)
	return nil
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		if !math.IsNaN(x) && x > m {
			m = x
		}
	}
	return m
}

// TestDashboardRender drives the incident scenario through the real
// collector and HTTP server, backfills the scrapes into Prometheus, runs
// every query of the packaged dashboard with Prometheus's own PromQL, and
// checks that each panel shows the incident: roles swap, a fence and a
// failover are counted, lateness and pressure rise on a before it. With
// -update-dashboard-svg it draws the answers as docs/img/dashboard.svg.
func TestDashboardRender(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs Prometheus")
	}
	d := loadDashboard(t)
	runs := runScenario(t)
	om := openMetrics(t, runs)
	prom, tool := promTools(t)
	base := startPrometheus(t, prom, tool, om)

	results := map[int][][]promResult{} // panel id -> per target
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			rs := query(t, base, tg)
			results[p.ID] = append(results[p.ID], rs)
			n := 0
			for _, r := range rs {
				if !math.IsInf(maxOf(r.v), -1) {
					n++
				}
			}
			if n == 0 {
				t.Errorf("%s/%s: no data in the scenario: %s", p.Title, tg.RefID, expand(tg.Expr))
			}
		}
	}
	byTitle := func(title string, target int) []promResult {
		for _, p := range d.allPanels() {
			if p.Title == title {
				return results[p.ID][target]
			}
		}
		t.Fatalf("no panel %q", title)
		return nil
	}

	// What a reader must be able to see.
	role := byTitle("Role per node", 0)
	ra, rb := seriesBy(t, role, "default on pbx-a:9720"), seriesBy(t, role, "default on pbx-b:9720")
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"a active at the start", ra[10], 3}, {"b standby at the start", rb[10], 1},
		{"a unknown while fenced", ra[82], 0}, {"b active after the failover", rb[100], 3},
		{"a standby after it", ra[100], 1}, {"a active after the switchover", ra[150], 3},
	} {
		if c.got != c.want {
			t.Errorf("Role per node: %s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if m := maxOf(seriesBy(t, byTitle("Failovers", 0), "default: pbx-b:9720 took over")); m < 1 {
		t.Errorf("Failovers: b's largest bar %v, want >= 1", m)
	}
	if m := maxOf(seriesBy(t, byTitle("Fences", 0), "pbx-a:9720")); m < 1 {
		t.Errorf("Fences: a's largest bar %v, want >= 1", m)
	}
	p99 := seriesBy(t, byTitle("Control-plane lateness quantiles", 0), "pbx-a:9720 nodemanager p99")
	if calm, starved := maxOf(p99[10:40]), maxOf(p99[60:80]); !(starved > 20*calm && starved > 0.05) {
		t.Errorf("lateness p99 on a: %v calm, %v starved; want the starved one > 50 ms and 20x", calm, starved)
	}
	psi := seriesBy(t, byTitle("Control-plane pressure vs apps CPU", 1), "pbx-a:9720 CPU pressure (PSI some avg10)")
	if psi[20] > 0.05 || psi[78] < 0.4 {
		t.Errorf("PSI on a: %v calm, %v at minute 19.5; want < 5%% then > 40%%", psi[20], psi[78])
	}
	vips := byTitle("Floating IPs held", 0)
	va, vb := seriesBy(t, vips, "192.0.2.10 on pbx-a:9720"), seriesBy(t, vips, "192.0.2.10 on pbx-b:9720")
	// Every configured address on every node, 0 where not held.
	if va[10] != 1 || va[100] != 0 || vb[100] != 1 || vb[150] != 0 {
		t.Errorf("Floating IPs: a %v/%v, b %v/%v at steps 10/100 and 100/150", va[10], va[100], vb[100], vb[150])
	}
	holders := seriesBy(t, byTitle("Floating IP holders per cluster", 0), "192.0.2.10 in pbx")
	if holders[10] != 1 || holders[80] != 0 || holders[100] != 1 || holders[150] != 1 {
		t.Errorf("Floating IP holders per cluster: %v/%v/%v/%v at steps 10/80/100/150, want 1/0/1/1", holders[10], holders[80], holders[100], holders[150])
	}
	if h := seriesBy(t, byTitle("Node health", 0), "pbx-a:9720"); h[10] != 1 || h[81] != 0 || h[100] != 1 {
		t.Errorf("Node health of a: %v/%v/%v at steps 10/81/100, want 1/0/1", h[10], h[81], h[100])
	}
	if q := seriesBy(t, byTitle("Quorum", 0), "default on pbx-b:9720"); q[10] != 1 || q[100] != 1 {
		t.Errorf("Quorum of b: %v/%v at steps 10/100, want 1/1", q[10], q[100])
	}
	if up := seriesBy(t, byTitle("Processes up", 0), "nodemanager on pbx-a:9720"); up[10] != 1 || up[81] != 0 || up[100] != 1 {
		t.Errorf("Processes up, a's node manager: %v/%v/%v at steps 10/81/100, want 1/0/1", up[10], up[81], up[100])
	}

	svg := renderDashboard(d, results)
	if *updateSVG {
		if err := os.WriteFile(dashboardSVG, []byte(svg), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", dashboardSVG, len(svg))
		return
	}
	// The picture in docs/dashboard.md must be of this dashboard. The
	// drawing is deterministic for one Prometheus version (Debian 12's
	// 2.42 made the committed one).
	if old, err := os.ReadFile(dashboardSVG); err != nil || string(old) != svg {
		t.Errorf("%s is not the render of the current dashboard and scenario (%v): rerun with -update-dashboard-svg", dashboardSVG, err)
	}
}

// The SVG is a plain drawing of the answers in the dashboard's layout; it
// follows Grafana's panel types, units, value mappings and axis overrides
// only as far as this scenario needs.

const (
	svgW     = 1200.0
	colW     = svgW / 24
	rowH     = 30.0
	svgTop   = 46.0
	bgColor  = "#111217"
	panelBg  = "#181b1f"
	border   = "#2c3235"
	textCol  = "#ccccdc"
	dimText  = "#8e8e98"
	gridLine = "#2c3235"
)

var palette = []string{"#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0", "#37872D", "#FADE2A"}

type svgBuf struct{ strings.Builder }

func (s *svgBuf) f(format string, a ...any) { fmt.Fprintf(&s.Builder, format, a...) }

func (s *svgBuf) text(x, y, size float64, anchor, fill, txt string) {
	s.f(`<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="%s" fill="%s">%s</text>`+"\n", x, y, size, anchor, fill, html.EscapeString(txt))
}

func (s *svgBuf) rect(x, y, w, h float64, fill string) {
	s.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, w, h, fill)
}

func formatValue(unit string, v float64) string {
	switch {
	case math.IsNaN(v):
		return ""
	case unit == "percentunit":
		return strconv.FormatFloat(v*100, 'f', -1, 64) + "%"
	case unit == "s":
		switch a := math.Abs(v); {
		case a == 0:
			return "0"
		case a < 1e-3:
			return trimFloat(v*1e6) + " µs"
		case a < 1:
			return trimFloat(v*1e3) + " ms"
		default:
			return trimFloat(v) + " s"
		}
	}
	return trimFloat(v)
}

func trimFloat(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// niceMax rounds m up to 1, 2 or 5 times a power of ten and returns it with
// its tick step.
func niceMax(m float64) (float64, float64) {
	if m <= 0 || math.IsInf(m, 0) || math.IsNaN(m) {
		return 1, 0.25
	}
	step := math.Pow(10, math.Floor(math.Log10(m/4)))
	for _, k := range []float64{1, 2, 2.5, 5, 10} {
		if m/(step*k) <= 4 {
			step *= k
			break
		}
	}
	return math.Ceil(m/step) * step, step
}

func textWidth(s string, size float64) float64 { return float64(len([]rune(s))) * size * 0.62 }

// legend draws items left to right, wrapping, from the bottom of the panel
// up; it returns the height used.
func legendHeight(items []string, w float64) float64 {
	x, rows := 0.0, 1
	for _, it := range items {
		iw := textWidth(it, 11) + 22
		if x+iw > w && x > 0 {
			rows++
			x = 0
		}
		x += iw
	}
	if len(items) == 0 {
		return 0
	}
	return float64(rows)*15 + 4
}

func drawLegend(s *svgBuf, items, colors []string, x, y, w float64) {
	cx, cy := x, y+11
	for i, it := range items {
		iw := textWidth(it, 11) + 22
		if cx+iw > x+w && cx > x {
			cx, cy = x, cy+15
		}
		s.rect(cx, cy-8, 12, 4, colors[i])
		s.text(cx+16, cy-2, 11, "start", textCol, it)
		cx += iw
	}
}

func renderDashboard(d *dashboard, results map[int][][]promResult) string {
	var s svgBuf
	maxY := 0
	for _, p := range d.Panels {
		maxY = max(maxY, p.GridPos.Y+p.GridPos.H)
	}
	h := svgTop + float64(maxY)*rowH + 8
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans, Arial, sans-serif">`+"\n", svgW, h, svgW, h)
	s.rect(0, 0, svgW, h, bgColor)
	s.text(8, 20, 16, "start", textCol, d.Title+": the incident scenario of metrics/scenario_test.go")
	s.text(8, 37, 11, "start", dimText, "Queries from packaging/grafana/vigil-dashboard.json evaluated by Prometheus 2.42 over scrapes of the real collector; drawn by metrics/render_test.go, not Grafana. Times UTC.")
	for _, p := range d.Panels {
		x, y := float64(p.GridPos.X)*colW, svgTop+float64(p.GridPos.Y)*rowH
		w, ph := float64(p.GridPos.W)*colW, float64(p.GridPos.H)*rowH
		if p.Type == "row" {
			s.text(x+4, y+20, 14, "start", textCol, "▾ "+p.Title)
			continue
		}
		x, y, w, ph = x+4, y+4, w-8, ph-8
		s.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="3" fill="%s" stroke="%s"/>`+"\n", x, y, w, ph, panelBg, border)
		s.text(x+8, y+17, 13, "start", textCol, p.Title)
		body := box{x + 8, y + 26, w - 16, ph - 32}
		switch p.Type {
		case "timeseries":
			drawTimeseries(&s, p, results[p.ID], body)
		case "state-timeline":
			drawStateTimeline(&s, p, results[p.ID], body)
		case "heatmap":
			drawHeatmap(&s, p, results[p.ID], body)
		case "bargauge":
			drawBarGauge(&s, p, results[p.ID], body)
		}
	}
	s.f("</svg>\n")
	return s.String()
}

type box struct{ x, y, w, h float64 }

// timeAxis draws a tick every 10 minutes. Points sit at b.w*i/(n-1);
// cells (state timeline, heatmap) are b.w/n wide, so their ticks use n.
func timeAxis(s *svgBuf, b box, cells bool) {
	start := scenarioStart()
	n := float64(scenarioSteps - 1)
	if cells {
		n = scenarioSteps
	}
	for i := 0; i < scenarioSteps; i += 40 {
		x := b.x + b.w*float64(i)/n
		s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, b.y, x, b.y+b.h, gridLine)
		s.text(x, b.y+b.h+12, 10, "middle", dimText, start.Add(time.Duration(i)*scenarioStep).Format("15:04"))
	}
}

// override returns the axis overrides for a series name: unit, whether it
// goes right, a fixed max, and whether it is dashed.
func override(p dashPanel, name string) (unit string, right bool, fixedMax float64, dashed bool) {
	unit = p.FieldConfig.Defaults.Unit
	for _, o := range p.FieldConfig.Overrides {
		if o.Matcher.ID != "byRegexp" {
			continue
		}
		if re, err := regexp.Compile("^(?:" + o.Matcher.Options + ")$"); err != nil || !re.MatchString(name) {
			continue
		}
		for _, pr := range o.Properties {
			switch pr.ID {
			case "unit":
				_ = json.Unmarshal(pr.Value, &unit)
			case "custom.axisPlacement":
				var v string
				_ = json.Unmarshal(pr.Value, &v)
				right = v == "right"
			case "max":
				_ = json.Unmarshal(pr.Value, &fixedMax)
			case "custom.lineStyle":
				dashed = true
			}
		}
	}
	return unit, right, fixedMax, dashed
}

func drawTimeseries(s *svgBuf, p dashPanel, targets [][]promResult, b box) {
	type ser struct {
		r             promResult
		unit          string
		right, dashed bool
		fixedMax      float64
		color         string
	}
	var all []ser
	for _, rs := range targets {
		for _, r := range rs {
			u, right, fm, dashed := override(p, r.legend)
			all = append(all, ser{r, u, right, dashed, fm, palette[len(all)%len(palette)]})
		}
	}
	var names, colors []string
	for _, a := range all {
		names, colors = append(names, a.r.legend), append(colors, a.color)
	}
	lh := legendHeight(names, b.w)
	drawLegend(s, names, colors, b.x, b.y+b.h-lh, b.w)
	custom := p.FieldConfig.Defaults.Custom
	bars := custom["drawStyle"] == "bars"
	stepped := custom["lineInterpolation"] == "stepAfter"
	hasRight := slices.ContainsFunc(all, func(a ser) bool { return a.right })
	plot := box{b.x + 46, b.y + 4, b.w - 46, b.h - lh - 20}
	if hasRight {
		plot.w -= 40
	}
	timeAxis(s, plot, false)
	// One scale per side; bars stack.
	scale := func(right bool) (top, step float64, unit string) {
		m := 0.0
		if bars {
			for i := range scenarioSteps {
				sum := 0.0
				for _, a := range all {
					if v := a.r.v[i]; !math.IsNaN(v) {
						sum += v
					}
				}
				m = max(m, sum)
			}
		}
		unit = p.FieldConfig.Defaults.Unit
		for _, a := range all {
			if a.right != right {
				continue
			}
			unit = a.unit
			if a.fixedMax > 0 {
				top, step = niceMax(a.fixedMax)
				return top, step, unit
			}
			m = max(m, maxOf(a.r.v))
		}
		top, step = niceMax(m)
		return top, step, unit
	}
	lTop, lStep, lUnit := scale(false)
	rTop, rStep, rUnit := scale(true)
	for v := 0.0; v <= lTop+lStep/2; v += lStep {
		y := plot.y + plot.h - plot.h*v/lTop
		s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", plot.x, y, plot.x+plot.w, y, gridLine)
		s.text(plot.x-4, y+3, 10, "end", dimText, formatValue(lUnit, v))
	}
	if hasRight {
		for v := 0.0; v <= rTop+rStep/2; v += rStep {
			y := plot.y + plot.h - plot.h*v/rTop
			s.text(plot.x+plot.w+4, y+3, 10, "start", dimText, formatValue(rUnit, v))
		}
	}
	xAt := func(i int) float64 { return plot.x + plot.w*float64(i)/float64(scenarioSteps-1) }
	if bars {
		bw := plot.w / scenarioSteps * 0.9
		base := make([]float64, scenarioSteps)
		for _, a := range all {
			for i, v := range a.r.v {
				if math.IsNaN(v) || v <= 0 {
					continue
				}
				y0 := plot.y + plot.h - plot.h*base[i]/lTop
				hgt := plot.h * v / lTop
				s.rect(xAt(i)-bw/2, y0-hgt, bw, hgt, a.color)
				base[i] += v
			}
		}
		return
	}
	for _, a := range all {
		top := lTop
		if a.right {
			top = rTop
		}
		yAt := func(v float64) float64 { return plot.y + plot.h - plot.h*math.Min(v, top)/top }
		dash := ""
		if a.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		flush := func() {
			if len(pts) > 1 {
				s.f(`<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", a.color, dash, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		prev := math.NaN()
		for i, v := range a.r.v {
			if math.IsNaN(v) {
				flush()
				prev = v
				continue
			}
			if stepped && !math.IsNaN(prev) && len(pts) > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(prev)))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(v)))
			if stepped && v != prev {
				s.f(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", xAt(i), yAt(v), a.color)
			}
			prev = v
		}
		flush()
	}
}

func mapping(p dashPanel, v float64) (text, color string) {
	key := strconv.FormatFloat(v, 'f', -1, 64)
	for _, m := range p.FieldConfig.Defaults.Mappings {
		if o, ok := m.Options[key]; ok {
			return o.Text, o.Color
		}
	}
	return key, "#808080"
}

func drawStateTimeline(s *svgBuf, p dashPanel, targets [][]promResult, b box) {
	var rows []promResult
	for _, rs := range targets {
		rows = append(rows, rs...)
	}
	labelW := 0.0
	for _, r := range rows {
		labelW = max(labelW, textWidth(r.legend, 11)+8)
	}
	plot := box{b.x + labelW, b.y + 2, b.w - labelW, b.h - 18}
	timeAxis(s, plot, true)
	rh := plot.h / float64(max(len(rows), 1))
	xAt := func(i int) float64 { return plot.x + plot.w*float64(i)/float64(scenarioSteps) }
	for ri, r := range rows {
		y := plot.y + float64(ri)*rh
		s.text(plot.x-6, y+rh/2+4, 11, "end", textCol, r.legend)
		for i := 0; i < scenarioSteps; {
			v := r.v[i]
			j := i + 1
			for j < scenarioSteps && (r.v[j] == v || math.IsNaN(v) && math.IsNaN(r.v[j])) {
				j++
			}
			if !math.IsNaN(v) {
				txt, col := mapping(p, v)
				x0, x1 := xAt(i), xAt(j)
				s.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.8"/>`+"\n", x0, y+rh*0.1, x1-x0, rh*0.8, col)
				if textWidth(txt, 11) < x1-x0-4 && len(rows) <= 2 {
					s.text((x0+x1)/2, y+rh/2+4, 11, "middle", "#000000", txt)
				}
			}
			i = j
		}
	}
}

// buckets turns a "format: heatmap" answer (one series per le, cumulative)
// into rows per bucket, lowest first, with per-bucket counts.
func buckets(rs []promResult) (les []float64, counts [][]float64) {
	type b struct {
		le float64
		v  []float64
	}
	var bs []b
	for _, r := range rs {
		le, err := strconv.ParseFloat(r.labels["le"], 64)
		if err != nil {
			continue
		}
		bs = append(bs, b{le, r.v})
	}
	slices.SortFunc(bs, func(x, y b) int {
		if x.le < y.le {
			return -1
		}
		if x.le > y.le {
			return 1
		}
		return 0
	})
	for i, x := range bs {
		row := make([]float64, len(x.v))
		for j, v := range x.v {
			row[j] = v
			if i > 0 && !math.IsNaN(bs[i-1].v[j]) {
				row[j] = v - bs[i-1].v[j]
			}
		}
		les, counts = append(les, x.le), append(counts, row)
	}
	return les, counts
}

func leLabel(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	return formatValue("s", le)
}

func orange(frac float64) string {
	// From a dark brown to Grafana's orange, as the Oranges scheme on dark.
	lerp := func(a, b float64) int { return int(a + (b-a)*frac) }
	return fmt.Sprintf("#%02x%02x%02x", lerp(0x3a, 0xff), lerp(0x1e, 0x98), lerp(0x08, 0x30))
}

func drawHeatmap(s *svgBuf, p dashPanel, targets [][]promResult, b box) {
	les, counts := buckets(targets[0])
	plot := box{b.x + 50, b.y + 2, b.w - 50, b.h - 36}
	timeAxis(s, plot, true)
	peak := 0.0
	for _, row := range counts {
		peak = max(peak, maxOf(row))
	}
	rh := plot.h / float64(max(len(les), 1))
	cw := plot.w / scenarioSteps
	for bi, row := range counts {
		y := plot.y + plot.h - float64(bi+1)*rh
		if bi%2 == 0 || len(les) < 8 {
			s.text(plot.x-4, y+rh/2+3, 9, "end", dimText, "≤ "+leLabel(les[bi]))
		}
		for i, v := range row {
			if math.IsNaN(v) || v < 1e-9 || peak <= 0 {
				continue
			}
			s.rect(plot.x+float64(i)*cw, y+0.5, cw-0.5, rh-1, orange(math.Sqrt(v/peak)))
		}
	}
	// Colour scale.
	ly := plot.y + plot.h + 18
	for i := range 50 {
		s.rect(plot.x+float64(i)*3, ly, 3, 8, orange(float64(i)/49))
	}
	s.text(plot.x+155, ly+8, 10, "start", dimText, fmt.Sprintf("wakeups per minute per bucket, 0 … %.0f (√ scale)", peak))
}

func drawBarGauge(s *svgBuf, p dashPanel, targets [][]promResult, b box) {
	les, counts := buckets(targets[0])
	rh := b.h / float64(max(len(les), 1))
	peak := 0.0
	last := make([]float64, len(les))
	for i, row := range counts {
		for j := len(row) - 1; j >= 0; j-- {
			if !math.IsNaN(row[j]) {
				last[i] = row[j]
				break
			}
		}
		peak = max(peak, last[i])
	}
	labelW, valueW := 62.0, 28.0
	for i, le := range les {
		y := b.y + float64(i)*rh
		s.text(b.x+labelW-6, y+rh/2+3, 10, "end", dimText, "≤ "+leLabel(le))
		s.rect(b.x+labelW, y+rh*0.15, b.w-labelW-valueW, rh*0.7, "#22252b")
		if peak > 0 && last[i] > 0 {
			s.rect(b.x+labelW, y+rh*0.15, (b.w-labelW-valueW)*last[i]/peak, rh*0.7, "#FF9830")
		}
		s.text(b.x+b.w-2, y+rh/2+3, 10, "end", textCol, strconv.FormatFloat(math.Round(last[i]), 'f', -1, 64))
	}
}
