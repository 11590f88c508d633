// Command failover is `make bench-failover`: every scenario of the end-to-end
// harness (test/e2e) run many times against Vigil at its defaults and against
// keepalived (Debian's package) at advert_int 1 s, 100 ms and 10 ms with VRRP
// version 3, in the same namespaces and the same run. It prints every run, a
// table, and one summary line per system, setting and scenario:
//
//	bench=failover system=vigil scenario=kill runs=10 errors=0 outage_p50_ms=... outage_p99_ms=... outage_max_ms=... failed_calls=0 retrans_calls=... false_failovers=0 dual_p50_ms=... dual_max_ms=... dual_at_end=0
//
// Outage is what a caller sees: the longest gap between answered SIP OPTIONS
// sent every 2 ms from the client to the floating IP. Calls are SIPp calls
// (INVITE/200/ACK/BYE) at -rate per second. Dual is the time both nodes held
// the floating IP, sampled every 1 ms; dual_at_end counts runs where both
// still held it when the run ended (a killed keepalived leaves its address
// behind for good). Needs root, sipp, stress-ng and keepalived.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/test/e2e"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/vigilbin"
)

func main() {
	runs := flag.Int("runs", 10, "runs per system and scenario")
	short := flag.Bool("short", false, "CI mode: one run of kill, stall, switchover and a 5 s noisy, Vigil and keepalived at 100 ms")
	scenarios := flag.String("scenarios", strings.Join(e2e.Scenarios, ","), "comma-separated scenarios")
	systems := flag.String("systems", "vigil,keepalived-1000,keepalived-100,keepalived-10", "comma-separated: vigil, keepalived-<advert ms>")
	noise := flag.Duration("noise", 60*time.Second, "how long the noisy neighbour runs")
	flood := flag.Duration("flood", 60*time.Second, "how long the flood scenarios flood the active's cluster ports")
	timing := flag.String("timing", "", `Vigil's cluster.timing as a YAML mapping, e.g. "{token_interval: 30ms, token_timeout: 400ms, lease: 600ms, drift_margin: 50ms}" (the e2e tests' timing); default: the product's defaults`)
	freezeProbe := flag.Bool("freeze-probe", true, "run the freeze probe (a SCHED_FIFO thread in the root group waking every 1 ms; freeze_max_ms); off, freeze_max_ms reads 0")
	rtWatchEvery := flag.Duration("rt-watch", 0, "sample the kernel's realtime throttling of every group this often (e.g. 100ms; reads "+e2e.SchedDebugPath+", a few ms of CPU each) and print each group seen throttled in a run (0: off)")
	floodRate := flag.Int("flood-rate", 0, "datagrams/s of the flood scenarios; 0: as fast as one sending thread can")
	rate := flag.Int("rate", 50, "SIP calls per second")
	after := flag.Duration("after", 4*time.Second, "traffic after the fault")
	bin := flag.String("vigil", "", "vigil binary (default: built from this tree)")
	explainOver := flag.Duration("explain-over", 100*time.Millisecond, "print the timeline (fault, holders, outage, the nodes' log) of each Vigil run whose callers saw a longer outage (0: never)")
	cpus := flag.String("control-cpus", "", `Vigil's control.cpus on every host, e.g. "0" (the control plane's cpus, kept from the applications and the noisy neighbour); default: none reserved`)
	extraVIPs := flag.Int("vips", 0, "more floating IPs on each Vigil node (at most 508), listed before the SIP server's so that its address is added and announced last")
	gap := flag.String("handover-gap", "", `Vigil's announce.handover_gap, e.g. "30ms" (break-before-make switchover); default: the product's default`)
	failback := flag.String("failback", "", `Vigil's floating IPs as one service preferring a that fails back after this long, e.g. "1s"; needed by the failback scenario (-scenarios failback), which is not in the default list`)
	flag.Parse()
	if *short {
		*runs, *noise = 1, 5*time.Second
		*scenarios = "kill,stall,switchover,noisy"
		*systems = "vigil,keepalived-100"
	}
	if *extraVIPs < 0 || *extraVIPs > 508 {
		fmt.Fprintln(os.Stderr, "bench-failover: -vips must be from 0 to 508")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-failover: needs root (network namespaces, cgroups)")
		os.Exit(2)
	}
	for _, tool := range []string{"sipp", "stress-ng", "keepalived", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "bench-failover: %s missing (make deps)\n", tool)
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

	machine.Describe(os.Stdout)
	vt := "defaults"
	if *timing != "" {
		vt = strconv.Quote(*timing)
	}
	// rcu_expedited decides the node-manager crash's figures: the node
	// manager's exit and the supervisor's release each wait for RCU grace
	// periods (docs/operations.md, "Node manager crash on a live host").
	rcu := "unknown"
	if b, err := os.ReadFile("/sys/kernel/rcu_expedited"); err == nil {
		rcu = strings.TrimSpace(string(b))
	}
	fb := *failback
	if fb == "" {
		fb = "off"
	}
	fmt.Printf("config runs=%d rate=%d after_ms=%d noise_s=%.0f flood_s=%.0f flood_rate=%d vigil_timing=%s vigil_extra_vips=%d vigil_failback=%s keepalived_vrrp_version=3 rcu_expedited=%s\n",
		*runs, *rate, after.Milliseconds(), noise.Seconds(), flood.Seconds(), *floodRate, vt, *extraVIPs, fb, rcu)

	var rtWatch *e2e.RTThrottleProbe
	if *rtWatchEvery > 0 {
		var err error
		if rtWatch, err = e2e.StartRTThrottleProbe(*rtWatchEvery); err != nil {
			fail(err)
		}
		defer rtWatch.Stop()
	}
	var freeze *e2e.FreezeProbe
	if *freezeProbe {
		freeze = e2e.StartFreezeProbe()
		defer freeze.Stop()
		if !freeze.Realtime() {
			fmt.Println("note: the freeze probe could not get SCHED_FIFO; its figures include its own scheduling")
		}
	}
	// SIGINT or SIGTERM ends the benchmark after the run under way, with
	// the namespaces, processes and files it made cleaned up and the runs
	// finished summed up; a second one kills it where it stands (and
	// leaves them behind).
	var interrupted atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		signal.Stop(sigs)
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "bench-failover: %v: stopping after the run under way, then cleaning up (again to kill at once)\n", sig)
	}()
	r := e2e.NewRunner(os.Stderr)
	var all []agg
	err := r.Do(func(t e2e.TB) {
		n := e2e.NewNet(t)
	systems:
		for _, sysName := range split(*systems) {
			sys, err := newSystem(t, n, sysName, e2e.VigilOptions{Bin: *bin, Realtime: true, Timing: *timing, HandoverGap: *gap,
				ControlCPUs: *cpus, ExtraVIPs: *extraVIPs, Failback: *failback})
			if err != nil {
				t.Fatalf("%v", err)
			}
			for _, sc := range split(*scenarios) {
				a := agg{system: sys.Label(), scenario: sc}
				for i := 0; i < *runs; i++ {
					if interrupted.Load() {
						all = append(all, a)
						break systems
					}
					began := time.Now()
					o := e2e.RunOptions{Rate: *rate, After: *after, Noise: *noise, Flood: *flood, FloodRate: *floodRate, Freeze: freeze}
					var guard string
					var disturbed bool
					if v, ok := sys.(*e2e.Vigil); ok {
						// Fences, epoch and drops on the active, read
						// before the fault and before the stop.
						var before uint64
						o.BeforeFault = func(active string) { _, before, _ = vigilGuard(v, active) }
						o.AtEnd = func(r e2e.Result) {
							var fences, epoch uint64
							guard, epoch, fences = vigilGuard(v, r.From)
							guard += fmt.Sprintf(" epoch_before=%d", before)
							disturbed = fences > 0 || epoch != before
						}
					}
					res, err := e2e.Run(t, n, sys, sc, o)
					if errors.Is(err, e2e.ErrNotApplicable) {
						a.na = true
						break
					}
					if err != nil {
						a.errors++
						fmt.Printf("run %d %s scenario=%s error=%q\n", i+1, sys.Label(), sc, err.Error())
						continue
					}
					var throttled []e2e.RTThrottle
					if rtWatch != nil {
						var werr error
						throttled, werr = rtWatch.Take()
						guard += fmt.Sprintf(" rt_throttled=%d", len(throttled))
						if werr != nil {
							guard += fmt.Sprintf(" rt_watch_error=%q", werr.Error())
						}
					}
					fmt.Printf("run %d %s%s\n", i+1, res.Line(), guard)
					for _, e := range throttled {
						fmt.Println("    " + e.String())
					}
					for _, l := range res.LostLines() {
						fmt.Println("    " + l)
					}
					if v, ok := sys.(*e2e.Vigil); ok && (res.FalseFailover || disturbed && !e2e.ExpectsFailover(sc)) {
						// Why it moved, from the nodes' own logs.
						fmt.Print(indent(v.Explain(began), "    "))
					}
					if v, ok := sys.(*e2e.Vigil); ok && *explainOver > 0 && res.Outage.Longest > *explainOver {
						// Where a slow failover's time went, or what the
						// nodes did while callers saw a gap without one.
						fmt.Print(indent(timeline(res, v.Explain(began)), "    "))
					}
					a.add(res)
				}
				all = append(all, a)
			}
		}
	})
	if err != nil {
		fail(err)
	}
	if interrupted.Load() {
		fmt.Println("note: interrupted; the figures are of the runs that finished")
	}
	printTable(all)
	for _, a := range all {
		fmt.Println(a.summary())
	}
}

// vigilGuard is " fences=N epoch=E dropped_nm=... dropped_loc=..." for
// the active host: what the flood scenarios promise to leave alone, and
// where the garbage went; with the epoch and the fences on their own.
func vigilGuard(v *e2e.Vigil, host string) (string, uint64, uint64) {
	st, err := v.Status(host)
	if err != nil {
		return fmt.Sprintf(" status_error=%q", err.Error()), 0, 0
	}
	var nm ctlmsg.NodeManagerReport
	var loc ctlmsg.LocatorReport
	if st.NodeManager != nil {
		nm = *st.NodeManager
	}
	if st.Locator != nil {
		loc = *st.Locator
	}
	return fmt.Sprintf(" fences=%d fences_held=%d epoch=%d dropped_nm=%s dropped_loc=%s", st.Supervisor.Fences, st.Supervisor.FencesHeld, nm.Epoch, kv(nm.Transport.Dropped), kv(loc.Transport.Dropped)),
		nm.Epoch, st.Supervisor.Fences
}

func kv(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// newSystem is the system called name; vo configures Vigil.
func newSystem(t e2e.TB, n *e2e.Net, name string, vo e2e.VigilOptions) (e2e.System, error) {
	if name == "vigil" {
		return e2e.NewVigil(t, n, vo), nil
	}
	if ms, ok := strings.CutPrefix(name, "keepalived-"); ok {
		v, err := strconv.Atoi(ms)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad system %q: keepalived-<advert ms>", name)
		}
		return e2e.NewKeepalived(t, n, time.Duration(v)*time.Millisecond), nil
	}
	return nil, fmt.Errorf("unknown system %q", name)
}

type agg struct {
	system, scenario string
	na               bool
	errors           int
	outage, dual     []float64
	freeze           []float64
	failed, retrans  int
	straddled        int // lost calls the SIP traces show straddling the move
	falseFailovers   int
	moves, atEnd     int
	retakes          int // runs where the holder took the address back after a gap
	runs             int
}

func (a *agg) add(r e2e.Result) {
	a.runs++
	a.outage = append(a.outage, float64(r.Outage.Longest)/1e6)
	a.dual = append(a.dual, float64(r.Dual)/1e6)
	a.freeze = append(a.freeze, float64(r.FreezeMax)/1e6)
	a.failed += r.Calls.Failed + r.Calls.Unfinished
	a.retrans += r.Calls.RetransCalls
	a.straddled += r.Straddled()
	if r.FalseFailover {
		a.falseFailovers++
	}
	if r.Moves > 0 {
		a.moves++
	}
	if r.Retakes > 0 {
		a.retakes++
	}
	if r.DualAtEnd {
		a.atEnd++
	}
}

// pct is the nearest-rank percentile of sorted-on-demand xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (a agg) summary() string {
	if a.na {
		return fmt.Sprintf("bench=failover %s scenario=%s not_applicable=true", a.system, a.scenario)
	}
	return fmt.Sprintf("bench=failover %s scenario=%s runs=%d errors=%d outage_p50_ms=%.0f outage_p99_ms=%.0f outage_max_ms=%.0f failed_calls=%d lost_straddled=%d retrans_calls=%d false_failovers=%d failovers=%d retakes=%d dual_p50_ms=%.0f dual_max_ms=%.0f dual_at_end=%d freeze_p50_ms=%.0f freeze_max_ms=%.0f",
		a.system, a.scenario, a.runs, a.errors, pct(a.outage, .5), pct(a.outage, .99), pct(a.outage, 1),
		a.failed, a.straddled, a.retrans, a.falseFailovers, a.moves, a.retakes, pct(a.dual, .5), pct(a.dual, 1), a.atEnd, pct(a.freeze, .5), pct(a.freeze, 1))
}

func printTable(all []agg) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "system\tscenario\truns\toutage p50 ms\tp99\tmax\tfailed calls\tretrans calls\tfalse failovers\tdual max ms\tdual at end\tfreeze max ms\t")
	for _, a := range all {
		sys := strings.TrimPrefix(a.system, "system=")
		if a.na {
			fmt.Fprintf(w, "%s\t%s\tn/a\t\t\t\t\t\t\t\t\t\t\n", sys, a.scenario)
			continue
		}
		runs := strconv.Itoa(a.runs)
		if a.errors > 0 {
			runs += fmt.Sprintf(" (+%d err)", a.errors)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%.0f\t%d\t%.0f\t\n", sys, a.scenario, runs,
			pct(a.outage, .5), pct(a.outage, .99), pct(a.outage, 1), a.failed, a.retrans, a.falseFailovers, pct(a.dual, 1), a.atEnd, pct(a.freeze, 1))
	}
	w.Flush()
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

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-failover:", err)
	os.Exit(1)
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}

// timeline is a slow run's events in ms after the fault: the fault, each
// change of holder the ownership probe saw, the callers' longest outage,
// and the nodes' own log lines (explain, as Vigil.Explain returns them).
func timeline(r e2e.Result, explain string) string {
	type ev struct {
		at   time.Duration
		what string
	}
	evs := []ev{{0, "fault " + r.Scenario + " on " + r.From}}
	for _, c := range r.Ownership.Changes {
		if c.At.After(r.FaultAt.Add(-time.Second)) {
			evs = append(evs, ev{c.At.Sub(r.FaultAt), fmt.Sprintf("holder=%q (ownership probe)", c.Holder)})
		}
	}
	if o := r.Outage; o.Longest > 0 {
		evs = append(evs, ev{o.LongestStart.Sub(r.FaultAt), fmt.Sprintf("outage begins: first unanswered probe (%.1f ms long)", ms(o.Longest))},
			ev{o.LongestStart.Add(o.Longest).Sub(r.FaultAt), "outage ends: next answered probe sent"})
	}
	for _, l := range strings.Split(strings.TrimSuffix(explain, "\n"), "\n") {
		_, rest, ok := strings.Cut(l, "time=")
		if !ok {
			continue
		}
		stamp, _, _ := strings.Cut(rest, " ")
		t, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || t.Before(r.FaultAt.Add(-time.Second)) {
			continue
		}
		evs = append(evs, ev{t.Sub(r.FaultAt), l})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	var b strings.Builder
	b.WriteString("timeline, ms after the fault (log times have ms resolution):\n")
	for _, e := range evs {
		fmt.Fprintf(&b, "%+8.1f %s\n", ms(e.at), e.what)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
