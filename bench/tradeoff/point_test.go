package main

import (
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
)

func TestScaledTiming(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		lease          time.Duration
		ti, tt, drift  time.Duration
		validatedInCfg bool
	}{
		{400 * ms, 40 * ms, 300 * ms, 50 * ms, true},
		{200 * ms, 20 * ms, 150 * ms, 25 * ms, true}, // the product's defaults before issue 14
		{100 * ms, 10 * ms, 75 * ms, 15 * ms, true},  // L/8 = 12.5 ms: the floor
		{60 * ms, 6 * ms, 45 * ms, 15 * ms, true},
		{40 * ms, 4 * ms, 30 * ms, 15 * ms, true},
		{25 * ms, 2 * ms, 18 * ms, 15 * ms, true}, // rounded down to whole ms
	} {
		got := ScaledTiming(c.lease)
		want := Timing{TokenInterval: c.ti, TokenTimeout: c.tt, Lease: c.lease, DriftMargin: c.drift}
		if got != want {
			t.Errorf("ScaledTiming(%v) = %+v, want %+v", c.lease, got, want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("ScaledTiming(%v): %v", c.lease, err)
		}
	}
	// A lease no longer than the drift floor cannot be scaled: Validate
	// says so (drift_margin must be shorter than the lease).
	if err := ScaledTiming(15 * time.Millisecond).Validate(); err == nil || !strings.Contains(err.Error(), "drift_margin") {
		t.Errorf("ScaledTiming(15ms).Validate() = %v, want a drift_margin error", err)
	}
}

// The sweep's timings pass the product's own config validation (what
// `vigil check` and start-up run), written the way the harness writes
// them into vigil.yaml.
func TestSweepTimingsPassConfigValidation(t *testing.T) {
	specs, err := parseSpecs("400ms,200ms,100ms,60ms,40ms,defaults", "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := config.WriteKeyFile(key); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		timing := ""
		if s.timing != "" {
			timing = "  timing: " + s.timing + "\n"
		}
		src := `cluster:
  name: e2e
  node: a
  key_file: ` + key + `
  nodes:
    - {id: a, address: "192.0.2.11:7400"}
    - {id: b, address: "192.0.2.12:7400"}
  witnesses:
    - {id: w, address: "192.0.2.13:7400"}
` + timing + `processes:
  - name: app
    command: [/bin/sh]
    health: {tcp: "127.0.0.1:80"}
`
		c, err := config.Parse(s.setting+".yaml", []byte(src))
		if err != nil {
			t.Errorf("%s: %v", s.setting, err)
			continue
		}
		if v, _ := (Point{Extra: s.extra}).Field("lease_ms"); v != "" && c.Cluster.Timing.Lease.Milliseconds() != mustAtoi(t, v) {
			t.Errorf("%s: config has lease %v, the line says %s ms", s.setting, c.Cluster.Timing.Lease, v)
		}
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestParseSpecsRejects(t *testing.T) {
	for _, c := range []struct{ leases, adverts string }{
		{"15ms", ""},         // drift floor ≥ lease
		{"200.5ms", ""},      // not whole ms
		{"abc", ""},          // not a duration
		{"", "15ms"},         // not a multiple of 10 ms
		{"", "5"},            // below 10 ms
		{"", ""},             // nothing to run
		{"-100ms", "1000ms"}, // negative
		{"200ms", "advert1"}, // not a duration
	} {
		if _, err := parseSpecs(c.leases, c.adverts); err == nil {
			t.Errorf("parseSpecs(%q, %q): no error", c.leases, c.adverts)
		}
	}
	s, err := parseSpecs("200ms", "1000,10ms")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range s {
		got = append(got, x.system+"/"+x.setting)
	}
	if want := []string{"vigil/lease_200ms", "keepalived/advert_1000ms", "keepalived/advert_10ms"}; !reflect.DeepEqual(got, want) {
		t.Errorf("parseSpecs: %v, want %v", got, want)
	}
	if s[0].timing != "{token_interval: 20ms, token_timeout: 150ms, lease: 200ms, drift_margin: 25ms}" {
		t.Errorf("timing %q", s[0].timing)
	}
}

func TestLineRoundTrip(t *testing.T) {
	for _, p := range []Point{
		{System: "vigil", Setting: "lease_200ms", Extra: [][2]string{{"lease_ms", "200"}, {"kill_p99_ms", "238"}},
			OutageP50: 225, OutageP99: 238.4, Runs: 5, OutageSamples: 10, Errors: 1, FalseFailovers: 0, NoisySeconds: 300},
		{System: "keepalived", Setting: "advert_10ms", Extra: [][2]string{{"advert_ms", "10"}},
			OutageP50: 33, OutageP99: 36, Runs: 5, OutageSamples: 10, FalseFailovers: 3, NoisySeconds: 240},
	} {
		line := p.Line()
		got, ok, err := ParseLine(line)
		if !ok || err != nil {
			t.Fatalf("ParseLine(%q) = ok %v, %v", line, ok, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip of %q:\n got %+v\nwant %+v", line, got, p)
		}
	}
	line := (Point{System: "vigil", Setting: "lease_40ms", Runs: 5, FalseFailovers: 2, NoisySeconds: 300}).Line()
	if !strings.Contains(line, " false_per_hour=24 ") || !strings.Contains(line, " false_per_hour_resolution=12") {
		t.Errorf("line %q: want false_per_hour=24 (2 in 300 s) and resolution 12", line)
	}
}

func TestParseLineNoOutage(t *testing.T) {
	// Every kill and linkdown errored: the line says nan, and the point
	// has no outage to plot.
	p := Point{System: "vigil", Setting: "lease_40ms", OutageP50: math.NaN(), OutageP99: math.NaN(), Runs: 1, Errors: 2, NoisySeconds: 5}
	got, ok, err := ParseLine(p.Line())
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if got.HasOutage() || !got.HasNoise() || plottable(got) {
		t.Errorf("%+v: HasOutage %v HasNoise %v", got, got.HasOutage(), got.HasNoise())
	}
	if !strings.Contains(p.Line(), "outage_p99_ms=nan") {
		t.Errorf("line %q", p.Line())
	}
}

func TestParseLineErrors(t *testing.T) {
	good := "bench=tradeoff system=vigil setting=lease_200ms outage_p50_ms=225 outage_p99_ms=238 runs=5 false_failovers=0 noisy_seconds=300"
	if p, ok, err := ParseLine(good); !ok || err != nil || p.OutageSamples != 5 {
		t.Fatalf("ParseLine(minimal) = %+v %v %v; want outage_samples = runs when absent", p, ok, err)
	}
	for _, l := range []string{"bench=failover system=vigil scenario=kill", "run 1 system=vigil", "", "machine cores=2"} {
		if _, ok, _ := ParseLine(l); ok {
			t.Errorf("ParseLine(%q): taken as a tradeoff line", l)
		}
	}
	for _, l := range []string{
		strings.Replace(good, " runs=5", "", 1),
		strings.Replace(good, "runs=5", "runs=five", 1),
		strings.Replace(good, "false_failovers=0", "false_failovers=-1", 1),
		strings.Replace(good, "outage_p99_ms=238", "outage_p99_ms=fast", 1),
		strings.Replace(good, "noisy_seconds=300", "noisy_seconds=-3", 1),
		good + " runs=6",
		good + " stray",
	} {
		if _, ok, err := ParseLine(l); !ok || err == nil {
			t.Errorf("ParseLine(%q) = ok %v, err %v; want an error", l, ok, err)
		}
	}
}

func TestParseLog(t *testing.T) {
	log := `machine cores=2 kernel=6.1.0 cgroup=v1-hybrid go=go1.22 cpu="x"
config date=2026-12-10 runs=5
run 1 system=vigil setting=lease_200ms scenario=kill outage_ms=230
bench=tradeoff system=vigil setting=lease_200ms outage_p50_ms=225 outage_p99_ms=238 runs=5 false_failovers=0 noisy_seconds=300
bench=tradeoff system=keepalived setting=advert_10ms advert_ms=10 outage_p50_ms=33 outage_p99_ms=36 runs=5 false_failovers=0 noisy_seconds=300
| system | setting |
bench=tradeoff system=vigil setting=lease_200ms outage_p50_ms=226 outage_p99_ms=240 runs=10 false_failovers=1 noisy_seconds=600
`
	ps, err := ParseLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Setting != "lease_200ms" || ps[0].Runs != 10 || ps[0].OutageP99 != 240 || ps[1].System != "keepalived" {
		t.Errorf("ParseLog: %+v; want the re-run of lease_200ms in its first place, then keepalived", ps)
	}
	if _, err := ParseLog(strings.NewReader("machine cores=2\nrun 1 x\n")); err == nil {
		t.Error("ParseLog of a log without points: no error")
	}
	if _, err := ParseLog(strings.NewReader(log + "bench=tradeoff system=vigil\n")); err == nil || !strings.Contains(err.Error(), "line 8") {
		t.Errorf("ParseLog with a broken line: %v, want an error naming line 8", err)
	}
}

func TestNoteFromLog(t *testing.T) {
	if got := noteFrom("machine cores=2 kernel=6.1\n", "2026-12-10"); got != "Measured 2026-12-10 on cores=2 kernel=6.1." {
		t.Errorf("noteFrom = %q", got)
	}
	if got := noteFrom("", ""); got != "" {
		t.Errorf("noteFrom of nothing = %q", got)
	}
}
