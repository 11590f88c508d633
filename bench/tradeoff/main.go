// Command tradeoff is `make bench-tradeoff`: how much failover speed costs
// in false failovers, for Vigil and for keepalived, as one picture.
//
// It sweeps Vigil's timing (leases 400, 200, 100, 60 and 40 ms, the other
// timings scaled with the lease: ScaledTiming) and keepalived's advert_int
// (1000, 100 and 10 ms, its VRRP process realtime, as in bench/failover),
// in the end-to-end harness (test/e2e). Each point runs -runs kills and
// -runs linkdowns (outage: nearest-rank p50 and p99 over both together) and
// -runs noisy runs of -noise each (false failovers: every move of the
// floating IP while nothing failed). It prints every run, one line per
// point as soon as the point is done:
//
//	bench=tradeoff system=vigil setting=lease_200ms token_interval_ms=20 token_timeout_ms=150 lease_ms=200 drift_margin_ms=25 kill_p99_ms=... linkdown_p99_ms=... fault_extra_moves=0 outage_p50_ms=... outage_p99_ms=... runs=5 outage_samples=10 errors=0 false_failovers=0 noisy_seconds=300 false_per_hour=0 false_per_hour_resolution=12
//
// and at the end writes the plot (-svg, default docs/img/tradeoff.svg) and
// a markdown table (-table, default docs/tradeoff.md), and prints the
// table. With -from LOG it runs nothing: it reads those lines from a saved
// log of an earlier run (its whole output; a point that appears twice is
// the later line) and writes the plot and table again. Running needs root,
// sipp, stress-ng and keepalived; -from needs nothing.
package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/vigil-project/vigil/bench/internal/quantile"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/internal/vigilbin"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/test/e2e"
)

func main() {
	from := flag.String("from", "", "render the plot and table from this saved log of bench=tradeoff lines instead of running")
	svgPath := flag.String("svg", "", "where to write the plot (default docs/img/tradeoff.svg; with -short a file in $TMPDIR)")
	mdPath := flag.String("table", "", "where to write the markdown table (default docs/tradeoff.md; with -short a file in $TMPDIR)")
	leases := flag.String("leases", "400ms,200ms,100ms,defaults,40ms", `Vigil's points: leases, the other timings scaled (TI = L/10, TT = 3L/4, D = max(L/8, 15ms)); "defaults" is the product's defaults (lease 60ms)`)
	adverts := flag.String("adverts", "1000ms,100ms,10ms", "keepalived's points: advert_int, multiples of 10ms")
	runs := flag.Int("runs", 5, "runs of each scenario (kill, linkdown, noisy) per point")
	noise := flag.Duration("noise", 60*time.Second, "how long the noisy neighbour runs in each noisy run")
	rate := flag.Int("rate", 50, "SIP calls per second")
	after := flag.Duration("after", 4*time.Second, "traffic after the fault")
	bin := flag.String("vigil", "", "vigil binary (default: built from this tree)")
	title := flag.String("title", "", "the plot's title (default: a generic one)")
	short := flag.Bool("short", false, "CI mode: Vigil at leases 200ms and 100ms and keepalived at 100 ms, 1 run each, 5 s of noise; output to $TMPDIR unless -svg/-table say")
	flag.Parse()
	if *short {
		*leases, *adverts, *runs, *noise = "200ms,100ms", "100ms", 1, 5*time.Second
	}
	svgOut, mdOut := outputs(*svgPath, *mdPath, *short)

	if *from != "" {
		points, note, err := readLog(*from)
		if err != nil {
			fail(err)
		}
		if err := write(points, Figure{Title: *title, Note: note}, svgOut, mdOut); err != nil {
			fail(err)
		}
		return
	}

	specs, err := parseSpecs(*leases, *adverts)
	if err != nil {
		fail(err)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-tradeoff: needs root (network namespaces, cgroups); -from renders a saved log without")
		os.Exit(2)
	}
	for _, tool := range []string{"sipp", "stress-ng", "keepalived", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "bench-tradeoff: %s missing (make deps)\n", tool)
			os.Exit(2)
		}
	}
	if *bin == "" {
		b, cleanup, err := vigilbin.Build()
		if err != nil {
			fail(err)
		}
		defer cleanup()
		*bin = b
	}
	var mline strings.Builder
	machine.Describe(&mline)
	fmt.Print(mline.String())
	date := time.Now().UTC().Format("2006-01-02")
	fmt.Printf("config date=%s runs=%d noise_s=%.0f rate=%d after_ms=%d leases=%s adverts=%s keepalived_vrrp_version=3\n",
		date, *runs, noise.Seconds(), *rate, after.Milliseconds(), *leases, *adverts)
	note := noteFrom(mline.String(), date)

	freeze := e2e.StartFreezeProbe()
	defer freeze.Stop()
	if !freeze.Realtime() {
		fmt.Println("note: the freeze probe could not get SCHED_FIFO; its figures include its own scheduling")
	}
	// SIGINT or SIGTERM: stop after the run under way, clean up, and
	// write what was measured (a point cut short says so in its runs).
	var interrupted atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		signal.Stop(sigs)
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "bench-tradeoff: %v: stopping after the run under way, then cleaning up (again to kill at once)\n", sig)
	}()

	var points []Point
	r := e2e.NewRunner(os.Stderr)
	err = r.Do(func(t e2e.TB) {
		n := e2e.NewNet(t)
		for _, s := range specs {
			if interrupted.Load() {
				return
			}
			sys := s.start(t, n, *bin)
			o := e2e.RunOptions{Rate: *rate, After: *after, Noise: *noise, Freeze: freeze}
			p := measure(t, n, sys, s, o, *runs, &interrupted)
			fmt.Println(p.Line())
			points = append(points, p)
		}
	})
	if err != nil {
		fail(err)
	}
	if interrupted.Load() {
		fmt.Println("note: interrupted; the figures are of the runs that finished")
	}
	if len(points) == 0 {
		fail(errors.New("no point measured"))
	}
	if err := write(points, Figure{Title: *title, Note: note}, svgOut, mdOut); err != nil {
		fail(err)
	}
}

// spec is one point to measure.
type spec struct {
	system, setting string
	extra           [][2]string
	timing          string // Vigil's cluster.timing, "" for the defaults
	advert          time.Duration
}

func (s spec) start(t e2e.TB, n *e2e.Net, bin string) e2e.System {
	if s.system == "vigil" {
		return e2e.NewVigil(t, n, e2e.VigilOptions{Bin: bin, Realtime: true, Timing: s.timing})
	}
	return e2e.NewKeepalived(t, n, s.advert)
}

// parseSpecs turns -leases and -adverts into points, Vigil's first, and
// checks every Vigil timing against the protocol's rules before anything
// runs.
func parseSpecs(leases, adverts string) ([]spec, error) {
	var out []spec
	for _, l := range split(leases) {
		if l == "defaults" {
			t := Timing{protocol.DefaultTokenInterval, protocol.DefaultTokenTimeout, protocol.DefaultLease, protocol.DefaultDriftMargin}
			out = append(out, spec{system: "vigil", setting: "defaults", extra: t.fields()})
			continue
		}
		d, err := time.ParseDuration(l)
		if err != nil || d <= 0 || d%time.Millisecond != 0 {
			return nil, fmt.Errorf("-leases: %q is not a whole number of milliseconds", l)
		}
		t := ScaledTiming(d)
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("-leases %s: %w", l, err)
		}
		out = append(out, spec{system: "vigil", setting: "lease_" + msStr(d), extra: t.fields(), timing: t.YAML()})
	}
	for _, a := range split(adverts) {
		if _, err := strconv.Atoi(a); err == nil {
			a += "ms"
		}
		d, err := time.ParseDuration(a)
		if err != nil || d < 10*time.Millisecond || d%(10*time.Millisecond) != 0 {
			return nil, fmt.Errorf("-adverts: %q is not a multiple of 10ms (VRRPv3 counts centiseconds)", a)
		}
		out = append(out, spec{system: "keepalived", setting: "advert_" + msStr(d), advert: d,
			extra: [][2]string{{"advert_ms", strconv.FormatInt(d.Milliseconds(), 10)}}})
	}
	if len(out) == 0 {
		return nil, errors.New("no points: -leases and -adverts are empty")
	}
	return out, nil
}

func (t Timing) fields() [][2]string {
	f := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	return [][2]string{{"token_interval_ms", f(t.TokenInterval)}, {"token_timeout_ms", f(t.TokenTimeout)},
		{"lease_ms", f(t.Lease)}, {"drift_margin_ms", f(t.DriftMargin)}}
}

// measure runs one point: kills, linkdowns, then noisy runs. Besides the
// plotted figures, the line says how often a kill or linkdown moved the
// address more than once (fault_extra_moves): a timing too short for the
// host flaps after a real failure too, and that is in its outage.
func measure(t e2e.TB, n *e2e.Net, sys e2e.System, s spec, o e2e.RunOptions, runs int, interrupted *atomic.Bool) Point {
	p := Point{System: s.system, Setting: s.setting, Extra: slices.Clone(s.extra), Runs: runs}
	var all []float64
	extra := 0 // moves after a fault beyond the one it calls for: flapping
	for _, sc := range []string{e2e.ScenarioKill, e2e.ScenarioLinkdown, e2e.ScenarioNoisy} {
		var outage []float64
		for i := 0; i < runs && !interrupted.Load(); i++ {
			began := time.Now()
			res, err := e2e.Run(t, n, sys, sc, o)
			if err != nil {
				p.Errors++
				fmt.Printf("run %d %s setting=%s scenario=%s error=%q\n", i+1, sys.Label(), s.setting, sc, err.Error())
				continue
			}
			fmt.Printf("run %d %s setting=%s %s\n", i+1, sys.Label(), s.setting, strings.TrimPrefix(res.Line(), sys.Label()+" "))
			if sc == e2e.ScenarioNoisy {
				p.NoisySeconds += o.Noise.Seconds()
				p.FalseFailovers += res.Moves
				if v, ok := sys.(*e2e.Vigil); ok && res.Moves > 0 {
					fmt.Print(indent(v.Explain(began), "    "))
				}
				continue
			}
			outage = append(outage, float64(res.Outage.Longest)/1e6)
			extra += max(0, res.Moves-1)
		}
		if sc != e2e.ScenarioNoisy {
			p.Extra = append(p.Extra, [2]string{sc + "_p99_ms", num(quantile.Nearest(outage, .99))})
			all = append(all, outage...)
		}
	}
	p.Extra = append(p.Extra, [2]string{"fault_extra_moves", strconv.Itoa(extra)})
	p.OutageSamples = len(all)
	p.OutageP50, p.OutageP99 = quantile.Nearest(all, .5), quantile.Nearest(all, .99)
	return p
}

// outputs are the plot's and the table's paths: as given, else the
// documentation's files, or for -short files in $TMPDIR, so that a CI
// run does not overwrite the checked-in figure.
func outputs(svg, md string, short bool) (string, string) {
	dir := "docs"
	if short {
		dir = os.TempDir()
	}
	if svg == "" {
		svg = filepath.Join(dir, "img", "tradeoff.svg")
		if short {
			svg = filepath.Join(dir, "vigil-tradeoff-short.svg")
		}
	}
	if md == "" {
		md = filepath.Join(dir, "tradeoff.md")
		if short {
			md = filepath.Join(dir, "vigil-tradeoff-short.md")
		}
	}
	return svg, md
}

// readLog reads the points of a saved log, and the machine and date it
// names for the caption.
func readLog(path string) ([]Point, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	points, err := ParseLog(strings.NewReader(string(b)))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	var mline, date string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "machine ") && mline == "" {
			mline = l
		}
		if strings.HasPrefix(l, "config ") && date == "" {
			for _, f := range strings.Fields(l) {
				if d, ok := strings.CutPrefix(f, "date="); ok {
					date = d
				}
			}
		}
	}
	return points, noteFrom(mline, date), nil
}

// noteFrom is the caption's last line: when and on what.
func noteFrom(machineLine, date string) string {
	m := strings.TrimSpace(strings.TrimPrefix(machineLine, "machine "))
	switch {
	case m == "" && date == "":
		return ""
	case m == "":
		return "Measured " + date + "."
	case date == "":
		return "Machine: " + m + "."
	}
	return "Measured " + date + " on " + m + "."
}

// write writes the plot and the table and prints the table.
func write(points []Point, fig Figure, svgOut, mdOut string) error {
	md := "<!-- Generated by `make bench-tradeoff` (or `go run ./bench/tradeoff -from LOG`); do not edit. -->\n\n" + Markdown(points, fig)
	for _, f := range []struct{ path, body string }{{svgOut, SVG(points, fig)}, {mdOut, md}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, []byte(f.body), 0o644); err != nil {
			return err
		}
	}
	fmt.Println()
	fmt.Print(Markdown(points, fig))
	fmt.Printf("\nbench-tradeoff: wrote %s and %s\n", svgOut, mdOut)
	return nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-tradeoff:", err)
	os.Exit(1)
}
