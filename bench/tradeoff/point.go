package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-project/vigil/protocol"
)

// Timing is one Vigil point of the sweep: cluster.timing.
type Timing struct {
	TokenInterval, TokenTimeout, Lease, DriftMargin time.Duration
}

// MinDriftMargin is the floor of the scaled drift margin: besides clock
// drift (which scales with the lease), D is the time the node manager has
// to drop the addresses after its lease ends before a locator grants the
// role again (docs/protocol.md, "Defaults and why"), and that time does
// not shrink with the lease.
const MinDriftMargin = 15 * time.Millisecond

// ScaledTiming is the sweep's timing for lease L: the product defaults'
// ratios at L = 200 ms, scaled: TI = L/10 (ten renewal chances per lease),
// TT = 3L/4 (7.5 intervals, and below L + D so detection never lengthens a
// failover), D = L/8 (clock drift up to D/(2L+D) = 5.9%) but at least
// MinDriftMargin. Times are rounded down to whole milliseconds; TI is at
// least protocol.MinTokenInterval.
func ScaledTiming(lease time.Duration) Timing {
	ms := func(d time.Duration) time.Duration { return d.Truncate(time.Millisecond) }
	t := Timing{
		TokenInterval: max(ms(lease/10), protocol.MinTokenInterval),
		TokenTimeout:  ms(lease * 3 / 4),
		Lease:         lease,
		DriftMargin:   max(ms(lease/8), MinDriftMargin),
	}
	return t
}

// YAML is the timing as a cluster.timing flow mapping (e2e.VigilOptions).
func (t Timing) YAML() string {
	return fmt.Sprintf("{token_interval: %s, token_timeout: %s, lease: %s, drift_margin: %s}",
		msStr(t.TokenInterval), msStr(t.TokenTimeout), msStr(t.Lease), msStr(t.DriftMargin))
}

// Validate applies the protocol's timing rules, the ones config
// validation (`vigil check`) reports, to t.
func (t Timing) Validate() error {
	c := protocol.Config{Cluster: "tradeoff", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"},
		TokenInterval: t.TokenInterval, TokenTimeout: t.TokenTimeout, Lease: t.Lease, DriftMargin: t.DriftMargin}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("timing %s: %w", t.YAML(), err)
	}
	return nil
}

func msStr(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// Point is one system at one setting, summed over its runs: what one
// `bench=tradeoff` line says.
type Point struct {
	System  string // "vigil", "keepalived"
	Setting string // "lease_200ms", "advert_10ms", "defaults"
	// Extra are the line's other fields (the timing, per-scenario
	// figures), kept in order for the table and for re-printing.
	Extra [][2]string

	OutageP50, OutageP99 float64 // ms, over kill and linkdown runs together
	Runs                 int     // runs per scenario asked for
	OutageSamples        int     // kill and linkdown runs that completed
	Errors               int     // runs that could not be carried out
	FalseFailovers       int     // moves of the address under the noisy neighbour
	NoisySeconds         float64 // total time the neighbour ran, over completed noisy runs
}

// HasOutage says whether the point has an outage figure to plot.
func (p Point) HasOutage() bool { return p.OutageSamples > 0 }

// HasNoise says whether the point has a false failover rate to plot.
func (p Point) HasNoise() bool { return p.NoisySeconds > 0 }

// PerHour is the observed false failover rate.
func (p Point) PerHour() float64 {
	if !p.HasNoise() {
		return math.NaN()
	}
	return float64(p.FalseFailovers) * 3600 / p.NoisySeconds
}

// Resolution is the rate one event in the noisy time would give: with
// none observed, the rate cannot be told apart from anything below it.
// (The 95% upper bound with none observed is 3× this, the rule of three.)
func (p Point) Resolution() float64 {
	if !p.HasNoise() {
		return math.NaN()
	}
	return 3600 / p.NoisySeconds
}

// Label is the setting as a point's label on the plot: "200 ms" for
// "lease_200ms", the setting itself when it has no such form.
func (p Point) Label() string {
	_, v, ok := strings.Cut(p.Setting, "_")
	if !ok {
		return p.Setting
	}
	if n, ok := strings.CutSuffix(v, "ms"); ok {
		if _, err := strconv.Atoi(n); err == nil {
			return n + " ms"
		}
	}
	return v
}

// Field returns an Extra field's value.
func (p Point) Field(key string) (string, bool) {
	for _, kv := range p.Extra {
		if kv[0] == key {
			return kv[1], true
		}
	}
	return "", false
}

// Line is the point as its `bench=tradeoff` line.
func (p Point) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bench=tradeoff system=%s setting=%s", p.System, p.Setting)
	for _, kv := range p.Extra {
		fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
	}
	fmt.Fprintf(&b, " outage_p50_ms=%s outage_p99_ms=%s runs=%d outage_samples=%d errors=%d false_failovers=%d noisy_seconds=%s false_per_hour=%s false_per_hour_resolution=%s",
		num(p.OutageP50), num(p.OutageP99), p.Runs, p.OutageSamples, p.Errors, p.FalseFailovers, num(p.NoisySeconds), num(p.PerHour()), num(p.Resolution()))
	return b.String()
}

// num formats a figure for a line: at most one decimal, "nan" for none.
func num(x float64) string {
	if math.IsNaN(x) {
		return "nan"
	}
	return strconv.FormatFloat(math.Round(x*10)/10, 'f', -1, 64)
}

// derived are the fields Line writes that Parse recomputes rather than
// keeps.
var derived = []string{"bench", "system", "setting", "outage_p50_ms", "outage_p99_ms", "runs", "outage_samples", "errors",
	"false_failovers", "noisy_seconds", "false_per_hour", "false_per_hour_resolution"}

// ParseLine reads one `bench=tradeoff` line. ok is false for any other
// line (the benchmark's log has run lines, the machine line, the table).
func ParseLine(line string) (p Point, ok bool, err error) {
	fields := strings.Fields(line)
	if len(fields) == 0 || fields[0] != "bench=tradeoff" {
		return Point{}, false, nil
	}
	kv := map[string]string{}
	for _, f := range fields[1:] {
		k, v, found := strings.Cut(f, "=")
		if !found || k == "" {
			return Point{}, true, fmt.Errorf("field %q is not key=value", f)
		}
		if _, dup := kv[k]; dup {
			return Point{}, true, fmt.Errorf("field %q twice", k)
		}
		kv[k] = v
		if !slices.Contains(derived, k) {
			p.Extra = append(p.Extra, [2]string{k, v})
		}
	}
	for _, k := range []string{"system", "setting", "outage_p50_ms", "outage_p99_ms", "runs", "false_failovers", "noisy_seconds"} {
		if _, found := kv[k]; !found {
			return Point{}, true, fmt.Errorf("no %s", k)
		}
	}
	p.System, p.Setting = kv["system"], kv["setting"]
	for _, f := range []struct {
		key string
		dst *float64
	}{{"outage_p50_ms", &p.OutageP50}, {"outage_p99_ms", &p.OutageP99}, {"noisy_seconds", &p.NoisySeconds}} {
		x, err := strconv.ParseFloat(kv[f.key], 64)
		if err != nil || x < 0 {
			return Point{}, true, fmt.Errorf("%s=%s: not a figure", f.key, kv[f.key])
		}
		*f.dst = x
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"runs", &p.Runs}, {"false_failovers", &p.FalseFailovers}, {"outage_samples", &p.OutageSamples}, {"errors", &p.Errors}} {
		s, found := kv[f.key]
		if !found {
			continue // the last two are optional
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Point{}, true, fmt.Errorf("%s=%s: not a count", f.key, s)
		}
		*f.dst = n
	}
	if _, found := kv["outage_samples"]; !found && !math.IsNaN(p.OutageP99) {
		// A line without it (written by hand): the outage is a figure.
		p.OutageSamples = p.Runs
	}
	if math.IsNaN(p.OutageP99) {
		p.OutageSamples = 0
	}
	if math.IsNaN(p.NoisySeconds) {
		p.NoisySeconds = 0
	}
	return p, true, nil
}

// ParseLog reads every `bench=tradeoff` line of a saved benchmark log, in
// order. A point that appears twice (a re-run appended to the log) is the
// later line, in the place of the first.
func ParseLog(r io.Reader) ([]Point, error) {
	var out []Point
	at := map[[2]string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		p, ok, err := ParseLine(sc.Text())
		if !ok {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		k := [2]string{p.System, p.Setting}
		if i, seen := at[k]; seen {
			out[i] = p
			continue
		}
		at[k] = len(out)
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no bench=tradeoff lines")
	}
	return out, nil
}
