package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Figure is what the plot and the table say beside the points.
type Figure struct {
	Title string
	// Note is one more caption line (how and where it was measured).
	Note string
}

// series is the points of one system, in sweep order.
type series struct {
	system string
	points []Point
}

func bySystem(ps []Point) []series {
	var out []series
	for _, p := range ps {
		i := slices.IndexFunc(out, func(s series) bool { return s.system == p.System })
		if i < 0 {
			out = append(out, series{system: p.System})
			i = len(out) - 1
		}
		out[i].points = append(out[i].points, p)
	}
	return out
}

// plottable says whether p has both coordinates.
func plottable(p Point) bool { return p.HasOutage() && p.HasNoise() }

// yValue is where p goes on the false failover axis: its rate, or with
// none observed its resolution (one event in its noisy time), drawn as an
// upper bound.
func yValue(p Point) (y float64, bound bool) {
	if p.FalseFailovers == 0 {
		return p.Resolution(), true
	}
	return p.PerHour(), false
}

// logAxis maps [10^lo, 10^hi] onto [from, to] (pixels).
type logAxis struct {
	lo, hi   int // decades
	from, to float64
}

// newLogAxis covers xs with whole decades and some room (a third of a
// decade) on either side for markers and labels.
func newLogAxis(xs []float64, from, to float64) logAxis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		if x > 0 && !math.IsInf(x, 0) && !math.IsNaN(x) {
			lo, hi = min(lo, math.Log10(x)), max(hi, math.Log10(x))
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	a := logAxis{lo: int(math.Floor(lo - 0.3)), hi: int(math.Ceil(hi + 0.3)), from: from, to: to}
	if a.hi <= a.lo {
		a.hi = a.lo + 1
	}
	return a
}

func (a logAxis) pos(x float64) float64 {
	f := (math.Log10(x) - float64(a.lo)) / float64(a.hi-a.lo)
	return a.from + f*(a.to-a.from)
}

// tick is one mark on an axis; labelled ticks get their value written.
type tick struct {
	v     float64
	label string
}

// ticks are 1, 2 and 5 per decade labelled (when the axis spans at most
// three decades; else 1 only) and the rest of 1..9 unlabelled.
func (a logAxis) ticks() []tick {
	var out []tick
	for d := a.lo; d <= a.hi; d++ {
		for m := 1; m <= 9; m++ {
			if d == a.hi && m > 1 {
				break
			}
			v := float64(m) * math.Pow(10, float64(d))
			t := tick{v: v}
			if m == 1 || (a.hi-a.lo <= 3 && (m == 2 || m == 5)) {
				t.label = fmtTick(v)
			}
			out = append(out, t)
		}
	}
	return out
}

// fmtTick writes a tick value without exponent or trailing zeros.
func fmtTick(v float64) string {
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// colours and markers per series, in order of appearance.
var palette = []struct{ colour, marker string }{
	{"#1f5fbf", "circle"}, {"#c8321e", "square"}, {"#2e8b3e", "diamond"}, {"#7a3fa0", "triangle"},
}

// SVG draws the trade-off: outage p99 (kill and linkdown) across, false
// failovers per hour under the noisy neighbour up, both on log scales,
// one curve per system, each point labelled with its setting. A point
// with no false failover is drawn hollow at its resolution (one event in
// its noisy time) with an arrow down: an upper bound, not a zero.
func SVG(ps []Point, fig Figure) string {
	const (
		w, h                 = 860.0, 600.0
		left, right          = 90.0, 590.0
		top, bottom          = 60.0, 450.0
		legendX              = 610.0
		fontSize, smallFont  = 13, 11
		markerR, arrowLength = 5.0, 14.0
	)
	var xs, ys []float64
	for _, p := range ps {
		if plottable(p) {
			y, _ := yValue(p)
			xs, ys = append(xs, p.OutageP99), append(ys, y)
		}
	}
	ax := newLogAxis(xs, left, right)
	ay := newLogAxis(ys, bottom, top)

	var b strings.Builder
	e := html.EscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="Helvetica, Arial, sans-serif" font-size="%d">`+"\n", w, h, w, h, fontSize)
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="#ffffff"/>`+"\n", w, h)
	title := fig.Title
	if title == "" {
		title = "Failover speed against false failovers"
	}
	fmt.Fprintf(&b, `<text x="%g" y="30" font-size="16" font-weight="bold">%s</text>`+"\n", left, e(title))

	// Below resolution: the band under the finest resolution of any point
	// with none observed; no point can tell rates in it apart from zero.
	floor := math.Inf(1)
	for _, p := range ps {
		if plottable(p) && p.FalseFailovers == 0 {
			floor = min(floor, p.Resolution())
		}
	}
	if !math.IsInf(floor, 1) {
		yb := ay.pos(floor)
		fmt.Fprintf(&b, `<rect class="unresolved" x="%g" y="%.1f" width="%g" height="%.1f" fill="#eeeeee"/>`+"\n", left, yb, right-left, bottom-yb)
	}

	// Grid, ticks and tick labels.
	fmt.Fprintf(&b, `<g class="grid" stroke="#dddddd" stroke-width="1">`+"\n")
	for _, t := range ax.ticks() {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g"/>`+"\n", ax.pos(t.v), top, ax.pos(t.v), bottom)
	}
	for _, t := range ay.ticks() {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f"/>`+"\n", left, ay.pos(t.v), right, ay.pos(t.v))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#333333"/>`+"\n", left, top, right-left, bottom-top)
	fmt.Fprintf(&b, `<g class="xticks" text-anchor="middle">`+"\n")
	for _, t := range ax.ticks() {
		x, l := ax.pos(t.v), 4.0
		if t.label != "" {
			l = 7
			fmt.Fprintf(&b, `<text x="%.1f" y="%g">%s</text>`+"\n", x, bottom+22, t.label)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#333333"/>`+"\n", x, bottom, x, bottom+l)
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<g class="yticks" text-anchor="end">`+"\n")
	for _, t := range ay.ticks() {
		y, l := ay.pos(t.v), 4.0
		if t.label != "" {
			l = 7
			fmt.Fprintf(&b, `<text x="%g" y="%.1f">%s</text>`+"\n", left-10, y+4, t.label)
		}
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#333333"/>`+"\n", left-l, y, left, y)
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<text class="xlabel" x="%g" y="%g" text-anchor="middle">failover outage p99, ms (kill and linkdown; log scale)</text>`+"\n", (left+right)/2, bottom+45)
	fmt.Fprintf(&b, `<text class="ylabel" transform="translate(%g %g) rotate(-90)" text-anchor="middle">false failovers per hour, noisy neighbour (log scale)</text>`+"\n", left-55, (top+bottom)/2)
	if !math.IsInf(floor, 1) {
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="%d" fill="#666666">below resolution</text>`+"\n", left+6, bottom-6, smallFont)
	}

	// The curves, their points and labels.
	ss := bySystem(ps)
	for si, s := range ss {
		st := palette[si%len(palette)]
		fmt.Fprintf(&b, `<g class="series" data-system="%s" fill="%s" stroke="%s">`+"\n", e(s.system), st.colour, st.colour)
		var path []string
		for _, p := range s.points {
			if plottable(p) {
				y, _ := yValue(p)
				path = append(path, fmt.Sprintf("%.1f,%.1f", ax.pos(p.OutageP99), ay.pos(y)))
			}
		}
		if len(path) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke-width="2"/>`+"\n", strings.Join(path, " "))
		}
		for _, p := range s.points {
			if !plottable(p) {
				continue
			}
			y, bound := yValue(p)
			px, py := ax.pos(p.OutageP99), ay.pos(y)
			fill := st.colour
			if bound {
				fill = "#ffffff"
			}
			b.WriteString(marker(st.marker, px, py, markerR, fill, st.colour, p))
			if bound {
				fmt.Fprintf(&b, `<path class="bound" d="M%.1f,%.1f V%.1f M%.1f,%.1f L%.1f,%.1f L%.1f,%.1f" fill="none" stroke-width="1.5"/>`+"\n",
					px, py+markerR, py+markerR+arrowLength, px-3.5, py+markerR+arrowLength-5, px, py+markerR+arrowLength, px+3.5, py+markerR+arrowLength-5)
			}
			// Labels slant away from the curve: the first series' up and
			// right, the others' down and right, so that points close
			// together (the same resolution, similar outages) keep
			// their labels apart.
			// Below a bound, the label starts under the arrows' tips,
			// its own and those of other curves' points at that height.
			lx, ly, angle := px+7, py-9, -40.0
			if si > 0 {
				ly, angle = py+16, 40
				if bound {
					lx, ly = px+4, py+markerR+arrowLength+12
				}
			}
			fmt.Fprintf(&b, `<text class="label" x="%.1f" y="%.1f" transform="rotate(%g %.1f %.1f)" stroke="none" font-size="%d">%s</text>`+"\n",
				lx, ly, angle, lx, ly, smallFont, e(pointLabel(p)))
		}
		b.WriteString("</g>\n")
	}

	// Legend.
	ly := top + 10
	fmt.Fprintf(&b, `<g class="legend">`+"\n")
	for si, s := range ss {
		st := palette[si%len(palette)]
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"/>`+"\n", legendX, ly, legendX+30, ly, st.colour)
		b.WriteString(marker(st.marker, legendX+15, ly, markerR, st.colour, st.colour, Point{}))
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", legendX+40, ly+4, e(seriesName(s)))
		ly += 22
	}
	fmt.Fprintf(&b, `<circle cx="%g" cy="%g" r="%g" fill="#ffffff" stroke="#333333"/>`+"\n", legendX+15, ly, markerR)
	fmt.Fprintf(&b, `<path d="M%g,%g V%g M%g,%g L%g,%g L%g,%g" fill="none" stroke="#333333" stroke-width="1.5"/>`+"\n",
		legendX+15, ly+markerR, ly+markerR+arrowLength, legendX+11.5, ly+markerR+arrowLength-5, legendX+15, ly+markerR+arrowLength, legendX+18.5, ly+markerR+arrowLength-5)
	for i, l := range []string{"none observed: drawn at one", "event in the point's noisy time", "(3600/T per hour), an upper", "bound, not a zero"} {
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="%d">%s</text>`+"\n", legendX+40, ly+4+float64(i)*15, smallFont, l)
	}
	ly += 70
	if !math.IsInf(floor, 1) {
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="30" height="12" fill="#eeeeee" stroke="#cccccc"/>`+"\n", legendX, ly-6)
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="%d">below every point's resolution</text>`+"\n", legendX+40, ly+4, smallFont)
		ly += 22
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="%d">Better: down and left.</text>`+"\n", legendX, ly+4, smallFont)
	b.WriteString("</g>\n")

	// Caption.
	cy := bottom + 75
	fmt.Fprintf(&b, `<g class="caption" font-size="%d" fill="#333333">`+"\n", smallFont)
	for _, l := range caption(ps, fig) {
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", left-60, cy, e(l))
		cy += 16
	}
	b.WriteString("</g>\n</svg>\n")
	return b.String()
}

// marker draws one point's marker; p (when set) gives it a tooltip.
func marker(kind string, x, y, r float64, fill, stroke string, p Point) string {
	var shape string
	switch kind {
	case "square":
		shape = fmt.Sprintf(`<rect class="point" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" stroke="%s" stroke-width="1.5"`, x-r, y-r, 2*r, 2*r, fill, stroke)
	case "diamond":
		shape = fmt.Sprintf(`<path class="point" d="M%.1f,%.1f L%.1f,%.1f L%.1f,%.1f L%.1f,%.1f Z" fill="%s" stroke="%s" stroke-width="1.5"`, x, y-r*1.3, x+r*1.3, y, x, y+r*1.3, x-r*1.3, y, fill, stroke)
	case "triangle":
		shape = fmt.Sprintf(`<path class="point" d="M%.1f,%.1f L%.1f,%.1f L%.1f,%.1f Z" fill="%s" stroke="%s" stroke-width="1.5"`, x, y-r*1.3, x+r*1.2, y+r, x-r*1.2, y+r, fill, stroke)
	default:
		shape = fmt.Sprintf(`<circle class="point" cx="%.1f" cy="%.1f" r="%.1f" fill="%s" stroke="%s" stroke-width="1.5"`, x, y, r, fill, stroke)
	}
	if p.System == "" {
		return shape + "/>\n"
	}
	return shape + "><title>" + html.EscapeString(tooltip(p)) + "</title></" + strings.Fields(shape[1:])[0] + ">\n"
}

func tooltip(p Point) string {
	return fmt.Sprintf("%s %s: outage p99 %s ms, %s", p.System, p.Setting, num(p.OutageP99), falseText(p))
}

// pointLabel is the label beside a point: its setting, and with none
// observed the bound it stands for, "< 12/h".
func pointLabel(p Point) string {
	if p.FalseFailovers == 0 {
		return fmt.Sprintf("%s (< %s/h)", p.Label(), num(p.Resolution()))
	}
	return p.Label()
}

// seriesName is a curve's name in the legend: the system and what its
// labels are.
func seriesName(s series) string {
	name := s.system
	switch s.system {
	case "vigil":
		name = "Vigil"
	}
	if len(s.points) > 0 {
		if k, _, ok := strings.Cut(s.points[0].Setting, "_"); ok {
			switch k {
			case "lease":
				k = "lease"
			case "advert":
				k = "advert_int"
			}
			return name + " (labels: " + k + ")"
		}
	}
	return name
}

// falseText is a point's false failovers in words, honest about zero.
func falseText(p Point) string {
	if !p.HasNoise() {
		return "no noisy runs"
	}
	if p.FalseFailovers == 0 {
		return fmt.Sprintf("0 false failovers in %s s of noise (< %s/h; 95%% bound %s/h)", num(p.NoisySeconds), num(p.Resolution()), num(3*p.Resolution()))
	}
	noun := "false failovers"
	if p.FalseFailovers == 1 {
		noun = "false failover"
	}
	return fmt.Sprintf("%d %s in %s s of noise (%s/h)", p.FalseFailovers, noun, num(p.NoisySeconds), num(p.PerHour()))
}

// caption is the lines under the plot: what was measured, how much of it.
func caption(ps []Point, fig Figure) []string {
	runs, noisy := map[int]bool{}, map[string]bool{}
	for _, p := range ps {
		runs[p.Runs] = true
		noisy[num(p.NoisySeconds)] = true
	}
	out := []string{
		fmt.Sprintf("Outage: nearest-rank p99 of the longest SIP OPTIONS gap (2 ms probes) over kill and linkdown, %s run(s) of each per point.", joinKeys(runs)),
		fmt.Sprintf("False failovers: moves of the floating IP under the noisy neighbour (stress-ng CPU, memory, fsync), %s s in all per point.", joinKeys(noisy)),
		"None observed is not zero: such points sit at one event per noisy time, arrow down; the 95% upper bound is 3x that.",
	}
	var skipped []string
	for _, p := range ps {
		if !plottable(p) {
			skipped = append(skipped, p.System+" "+p.Setting)
		}
	}
	if len(skipped) > 0 {
		out = append(out, "Not plotted (no completed runs): "+strings.Join(skipped, ", ")+".")
	}
	if fig.Note != "" {
		out = append(out, fig.Note)
	}
	return out
}

func joinKeys[K comparable](m map[K]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, fmt.Sprint(k))
	}
	slices.Sort(ks)
	return strings.Join(ks, "/")
}

// Markdown is the table of every point (for the README's comparison)
// with, for each point of a system other than the first, whether a point
// of the first system (Vigil) is at least as good on both axes.
func Markdown(ps []Point, fig Figure) string {
	var b strings.Builder
	b.WriteString("| system | setting | timing | runs (kill + linkdown) | outage p50 / p99 ms | false failovers under the noisy neighbour |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, p := range ps {
		outage := "no completed run"
		if p.HasOutage() {
			outage = num(p.OutageP50) + " / " + num(p.OutageP99)
		}
		runs := fmt.Sprintf("%d + %d", p.Runs, p.Runs)
		if p.Errors > 0 {
			runs += fmt.Sprintf(" (%d errors)", p.Errors)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", p.System, p.Label(), timingText(p), runs, outage, falseText(p))
	}
	if v := Verdicts(ps); len(v) > 0 {
		b.WriteString("\n")
		for _, l := range v {
			b.WriteString("- " + l + "\n")
		}
	}
	if fig.Note != "" {
		b.WriteString("\n" + fig.Note + "\n")
	}
	return b.String()
}

// timingText is a Vigil point's timing, or a keepalived point's advert.
func timingText(p Point) string {
	var parts []string
	for _, f := range []struct{ key, name string }{
		{"token_interval_ms", "TI"}, {"token_timeout_ms", "TT"}, {"lease_ms", "L"}, {"drift_margin_ms", "D"}, {"advert_ms", "advert_int"},
	} {
		if v, ok := p.Field(f.key); ok {
			parts = append(parts, f.name+" "+v)
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ") + " ms"
}

// Verdicts says, for each point of the other systems, whether some point
// of the first (Vigil) is at least as fast (outage p99) and has at most
// as many false failovers per hour, or that none is. Rates with none
// observed compare by their resolution: a point with none in 300 s is not
// taken as better than one with one in 3000 s.
func Verdicts(ps []Point) []string {
	ss := bySystem(ps)
	if len(ss) < 2 {
		return nil
	}
	first := ss[0]
	var out []string
	for _, s := range ss[1:] {
		for _, k := range s.points {
			if !plottable(k) {
				continue
			}
			var better []string
			for _, v := range first.points {
				if plottable(v) && v.OutageP99 <= k.OutageP99 && atMost(v, k) {
					better = append(better, v.Label())
				}
			}
			if len(better) > 0 {
				out = append(out, fmt.Sprintf("%s %s (p99 %s ms, %s): %s at %s is as fast or faster with no more false failovers.",
					k.System, k.Label(), num(k.OutageP99), rateText(k), first.system, strings.Join(better, ", ")))
			} else {
				out = append(out, fmt.Sprintf("%s %s (p99 %s ms, %s): NO %s point is both as fast and as free of false failovers.",
					k.System, k.Label(), num(k.OutageP99), rateText(k), first.system))
			}
		}
	}
	return out
}

// atMost says whether a's false failover rate is at most b's as far as
// the runs can tell: an observed rate against an observed rate; none
// observed against anything by its resolution.
func atMost(a, b Point) bool {
	ya, _ := yValue(a)
	if b.FalseFailovers == 0 {
		return a.FalseFailovers == 0 && ya <= b.Resolution()*1.0001
	}
	return ya <= b.PerHour()
}

func rateText(p Point) string {
	if p.FalseFailovers == 0 {
		return fmt.Sprintf("0 false failovers in %s s", num(p.NoisySeconds))
	}
	return fmt.Sprintf("%s false failovers/h", num(p.PerHour()))
}
