package main

import (
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

// sweep is a made-up full sweep in the shape the benchmark writes.
func sweep() []Point {
	v := func(setting string, p99 float64, falses int) Point {
		return Point{System: "vigil", Setting: setting, OutageP50: p99 - 10, OutageP99: p99, Runs: 5, OutageSamples: 10, FalseFailovers: falses, NoisySeconds: 300}
	}
	k := func(setting string, p99 float64, falses int) Point {
		return Point{System: "keepalived", Setting: setting, Extra: [][2]string{{"advert_ms", strings.TrimSuffix(strings.TrimPrefix(setting, "advert_"), "ms")}},
			OutageP50: p99 - 5, OutageP99: p99, Runs: 5, OutageSamples: 10, FalseFailovers: falses, NoisySeconds: 300}
	}
	return []Point{
		v("lease_400ms", 470, 0), v("lease_200ms", 238, 0), v("lease_100ms", 125, 0), v("lease_60ms", 80, 2), v("lease_40ms", 58, 7),
		k("advert_1000ms", 3522, 0), k("advert_100ms", 360, 0), k("advert_10ms", 36, 0),
	}
}

// shape is one drawn point: its centre, fill and tooltip.
type shape struct {
	x, y  float64
	fill  string
	title string
}

// parseSVG checks that s is well-formed XML and returns its points (by
// tooltip), its polylines and all its text.
func parseSVG(t *testing.T, s string) (points map[string]shape, polylines int, texts []string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	points = map[string]shape{}
	var cur *shape
	var inTitle, inText bool
	attr := func(e xml.StartElement, name string) string {
		for _, a := range e.Attr {
			if a.Name.Local == name {
				return a.Value
			}
		}
		return ""
	}
	f := func(s string) float64 {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("attribute %q: %v", s, err)
		}
		return x
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			switch {
			case e.Name.Local == "polyline":
				polylines++
			case attr(e, "class") == "point" && e.Name.Local == "circle":
				cur = &shape{x: f(attr(e, "cx")), y: f(attr(e, "cy")), fill: attr(e, "fill")}
			case attr(e, "class") == "point" && e.Name.Local == "rect":
				cur = &shape{x: f(attr(e, "x")) + f(attr(e, "width"))/2, y: f(attr(e, "y")) + f(attr(e, "height"))/2, fill: attr(e, "fill")}
			case e.Name.Local == "title":
				inTitle = true
			case e.Name.Local == "text":
				inText = true
			}
		case xml.CharData:
			if inTitle && cur != nil {
				cur.title += string(e)
			}
			if inText {
				texts = append(texts, string(e))
			}
		case xml.EndElement:
			switch e.Name.Local {
			case "title":
				inTitle = false
			case "text":
				inText = false
			case "circle", "rect":
				if cur != nil && cur.title != "" {
					points[strings.Fields(cur.title)[0]+" "+strings.TrimSuffix(strings.Fields(cur.title)[1], ":")] = *cur
				}
				cur = nil
			}
		}
	}
	return points, polylines, texts
}

func TestSVG(t *testing.T) {
	ps := sweep()
	svg := SVG(ps, Figure{Note: "Measured 2026-12-10 on cores=2."})
	points, polylines, texts := parseSVG(t, svg)
	all := strings.Join(texts, "\n")

	if len(points) != len(ps) {
		t.Fatalf("%d points drawn, want %d: %v", len(points), len(ps), points)
	}
	if polylines != 2 {
		t.Errorf("%d polylines, want one per system (2)", polylines)
	}
	for _, want := range []string{
		"failover outage p99, ms (kill and linkdown; log scale)",
		"false failovers per hour, noisy neighbour (log scale)",
		"Vigil (labels: lease)", "keepalived (labels: advert_int)",
		"10", "100", "1000", // x decades
		"200 ms (< 12/h)", "40 ms", "60 ms", "1000 ms (< 12/h)", "10 ms (< 12/h)",
		"below resolution",
		"Measured 2026-12-10 on cores=2.",
	} {
		if !containsLine(texts, want) {
			t.Errorf("no text %q in the plot; texts:\n%s", want, all)
		}
	}
	if !strings.Contains(all, "300 s in all per point") || !strings.Contains(all, "None observed is not zero") {
		t.Errorf("the caption does not give the noisy time or say what a hollow point is:\n%s", all)
	}

	// Hollow for none observed, filled for observed; every hollow point
	// has its arrow.
	for name, s := range points {
		hollow := s.fill == "#ffffff"
		zero := strings.Contains(s.title, " 0 false failovers")
		if hollow != zero {
			t.Errorf("%s: fill %s, title %q", name, s.fill, s.title)
		}
	}
	if n, want := strings.Count(svg, `class="bound"`), 6; n != want {
		t.Errorf("%d upper-bound arrows, want %d (one per point with none observed)", n, want)
	}

	// Log scales: outages in order across; rates in order up; the same
	// resolution at the same height; a decade is as wide at both ends.
	x := func(k string) float64 { return points[k].x }
	y := func(k string) float64 { return points[k].y }
	order := []string{"keepalived advert_10ms", "vigil lease_40ms", "vigil lease_60ms", "vigil lease_100ms", "vigil lease_200ms", "keepalived advert_100ms", "vigil lease_400ms", "keepalived advert_1000ms"}
	for i := 1; i < len(order); i++ {
		if x(order[i-1]) >= x(order[i]) {
			t.Errorf("%s (x %.1f) is not left of %s (x %.1f)", order[i-1], x(order[i-1]), order[i], x(order[i]))
		}
	}
	if !(y("vigil lease_40ms") < y("vigil lease_60ms") && y("vigil lease_60ms") < y("vigil lease_200ms")) {
		t.Errorf("rates not in order up the axis: 84/h at %.1f, 24/h at %.1f, <12/h at %.1f", y("vigil lease_40ms"), y("vigil lease_60ms"), y("vigil lease_200ms"))
	}
	if y("vigil lease_200ms") != y("keepalived advert_10ms") {
		t.Errorf("two points with none in 300 s at different heights: %.1f, %.1f", y("vigil lease_200ms"), y("keepalived advert_10ms"))
	}
	// 36 → 360 ms: one decade, as wide as 100 → 1000 ms.
	if d1, d2 := x("keepalived advert_100ms")-x("keepalived advert_10ms"), x("vigil lease_400ms")-x("vigil lease_40ms"); math.Abs(d1-d2*math.Log10(10)/math.Log10(470.0/58)) > 0.5 {
		t.Errorf("36→360 ms is %.1f px, 58→470 ms %.1f px: not one log scale", d1, d2)
	}
	ax := newLogAxis([]float64{36, 3522}, 0, 1000)
	if dec := ax.pos(1000) - ax.pos(100); math.Abs(dec-(ax.pos(100)-ax.pos(10))) > 1e-9 {
		t.Errorf("decades of different widths: %v and %v", dec, ax.pos(100)-ax.pos(10))
	}
	// 24/h is 2 events; 84/h is 7: log10(84/24) of a decade apart.
	ay := newLogAxis([]float64{12, 24, 84}, 0, 1000)
	want := (ay.pos(84) - ay.pos(24)) / (ay.pos(100) - ay.pos(10))
	if math.Abs(want-math.Log10(84.0/24)) > 1e-9 {
		t.Errorf("log axis: %v of a decade between 24 and 84, want %v", want, math.Log10(84.0/24))
	}
}

func containsLine(texts []string, want string) bool {
	for _, s := range texts {
		if strings.TrimSpace(s) == want {
			return true
		}
	}
	return false
}

func TestSVGSkipsPointsWithoutData(t *testing.T) {
	ps := sweep()
	ps[4].OutageSamples, ps[4].OutageP99 = 0, math.NaN() // lease_40ms: every kill failed
	svg := SVG(ps, Figure{})
	points, _, texts := parseSVG(t, svg)
	if _, ok := points["vigil lease_40ms"]; ok {
		t.Error("a point without outage drawn")
	}
	if !strings.Contains(strings.Join(texts, "\n"), "Not plotted (no completed runs): vigil lease_40ms.") {
		t.Error("the caption does not say which point is missing")
	}
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Error("NaN or Inf in the SVG")
	}
}

func TestSVGAllZero(t *testing.T) {
	// Nothing observed anywhere (the short mode, usually): the y axis
	// still spans a decade around the bound, and nothing is drawn at 0.
	ps := []Point{
		{System: "vigil", Setting: "lease_200ms", OutageP50: 230, OutageP99: 240, Runs: 1, OutageSamples: 2, NoisySeconds: 5},
		{System: "keepalived", Setting: "advert_100ms", OutageP50: 280, OutageP99: 300, Runs: 1, OutageSamples: 2, NoisySeconds: 5},
	}
	svg := SVG(ps, Figure{})
	points, polylines, texts := parseSVG(t, svg)
	if len(points) != 2 || polylines != 0 {
		t.Errorf("%d points, %d polylines; want 2 points and no line (one point per system)", len(points), polylines)
	}
	if !containsLine(texts, "1000") || !containsLine(texts, "200 ms (< 720/h)") {
		t.Errorf("texts: %q", texts)
	}
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Error("NaN or Inf in the SVG")
	}
}

func TestLogAxisTicks(t *testing.T) {
	a := newLogAxis([]float64{36, 3522}, 0, 300)
	if a.lo != 1 || a.hi != 4 {
		t.Errorf("axis for 36..3522: decades %d..%d, want 1..4", a.lo, a.hi)
	}
	var labels []string
	for _, tk := range a.ticks() {
		if tk.label != "" {
			labels = append(labels, tk.label)
		}
	}
	if got, want := strings.Join(labels, " "), "10 20 50 100 200 500 1000 2000 5000 10000"; got != want {
		t.Errorf("labels %q, want %q", got, want)
	}
	wide := newLogAxis([]float64{0.5, 9000}, 0, 300) // 9000 + a third of a decade: up to 1e5
	labels = nil
	for _, tk := range wide.ticks() {
		if tk.label != "" {
			labels = append(labels, tk.label)
		}
	}
	if got, want := strings.Join(labels, " "), "0.1 1 10 100 1000 10000 100000"; got != want {
		t.Errorf("wide axis labels %q, want %q (decades only)", got, want)
	}
}

func TestMarkdown(t *testing.T) {
	ps := sweep()
	ps[0].Extra = ScaledTiming(400e6).fields()
	ps[0].Errors = 1
	md := Markdown(ps, Figure{Note: "Measured somewhere."})
	lines := strings.Split(strings.TrimSpace(md), "\n")
	rows := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "| vigil") || strings.HasPrefix(l, "| keepalived") {
			rows++
		}
	}
	if rows != len(ps) {
		t.Errorf("%d rows, want %d:\n%s", rows, len(ps), md)
	}
	for _, want := range []string{
		"| vigil | 400 ms | TI 40, TT 300, L 400, D 50 ms | 5 + 5 (1 errors) | 460 / 470 | 0 false failovers in 300 s of noise (< 12/h; 95% bound 36/h) |",
		"| vigil | 40 ms | – | 5 + 5 | 48 / 58 | 7 false failovers in 300 s of noise (84/h) |",
		"| keepalived | 10 ms | advert_int 10 ms |",
		// keepalived 10 ms: 36 ms, none seen; no Vigil point is that fast.
		"- keepalived 10 ms (p99 36 ms, 0 false failovers in 300 s): NO vigil point is both as fast and as free of false failovers.",
		// keepalived 100 ms: 360 ms; lease 200 and 100 are faster with none seen.
		"- keepalived 100 ms (p99 360 ms, 0 false failovers in 300 s): vigil at 200 ms, 100 ms is as fast or faster with no more false failovers.",
		"Measured somewhere.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in:\n%s", want, md)
		}
	}
}

func TestVerdictsNeedEnoughNoise(t *testing.T) {
	// None in 60 s is not shown better than none in 600 s: the shorter
	// run could not have told 6/h from 60/h.
	ps := []Point{
		{System: "vigil", Setting: "lease_40ms", OutageP99: 50, Runs: 1, OutageSamples: 2, NoisySeconds: 60},
		{System: "keepalived", Setting: "advert_100ms", OutageP99: 300, Runs: 10, OutageSamples: 20, NoisySeconds: 600},
	}
	v := Verdicts(ps)
	if len(v) != 1 || !strings.Contains(v[0], "NO vigil point") {
		t.Errorf("Verdicts = %q", v)
	}
	ps[0].NoisySeconds = 600
	if v := Verdicts(ps); len(v) != 1 || strings.Contains(v[0], "NO vigil point") {
		t.Errorf("with equal noise: Verdicts = %q", v)
	}
}
