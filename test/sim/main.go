// Command sim runs Vigil's protocol core (package protocol) in its
// simulator (package protocol/sim) over many seeded schedules of a
// simulated network and clocks, and checks safety
// (never two nodes that each believe they hold a valid lease at the same
// instant; never one epoch for two actives) after every step, and liveness
// (exactly one active within a bound after the faults heal).
//
//	go run ./test/sim -schedules 10000 -seed 1
//	go run ./test/sim -replay 12345 -v      # one schedule, with its trace
//
// It ends with the line
//
//	bench=sim schedules=N violations=V max_recovery_ms=M ...
//
// and exits 1 if any schedule violated a property (printing its seed and a
// replayable trace). A long run is run in chunks, and
//
//	go run ./test/sim -sum LOG...
//
// adds up the summary lines of their logs (sum.go).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/protocol/sim"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// A schedule allocates fast and keeps little (tens of MiB at 2
		// workers): collecting less often makes a run ~1.6x faster.
		debug.SetGCPercent(400)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	schedules := fs.Int("schedules", 1000, "number of schedules to run")
	short := fs.Bool("short", false, "quick check: 200 schedules unless -schedules is given")
	seed := fs.Uint64("seed", 1, "first seed; schedule i uses seed+i")
	verbose := fs.Bool("v", false, "print each schedule's summary (and the trace with -replay)")
	replay := fs.Uint64("replay", 0, "run only this seed, with its full trace")
	killEvery := fs.Int("kill-every", 10, "every Nth schedule kills the active once and measures kill-to-new-active (0: never)")
	benignEvery := fs.Int("benign-every", 10, "every Nth schedule (offset by half) has only faults that must not move the active role (0: never)")
	drift := fs.Float64("drift", 0.01, "clock-rate drift bound between hosts (0.01 = 1%)")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "parallel schedules")
	twin := fs.Bool("twin", false, "check each node against a copy ticked only at its next deadline, as the node manager ticks it")
	lms := fs.Bool("lms", false, "run every schedule with last_man_standing on a shape of 4 or 5 locators (one service)")
	even := fs.Bool("even", false, "run every schedule on a shape of 4 locators (3 nodes and a witness, 4 nodes, 2 nodes and 2 witnesses)")
	large := fs.Bool("large", false, "run every schedule on a shape of 6 to 8 nodes (6, 7 or 8 locators with 0 to 2 witnesses)")
	services := fs.Int("services", 1, "services sharing the hosts, each its own protocol instance (1-4; 0: each schedule draws 1-4)")
	maxNotPreferred := fs.Float64("max-not-preferred", -1, "exit 1 if more than this share of the kill runs (0.02 = 2%) gave the role to another than the most preferred survivor; -1: never")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	sum := fs.Bool("sum", false, "run nothing: add up the summary lines of the log files named after the flags (the chunks of one long run)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *sum {
		return runSum(fs.Args(), stdout, stderr)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sim: unexpected argument %q (files are for -sum)\n", fs.Arg(0))
		return 2
	}
	if *services < 0 || *services > 4 {
		fmt.Fprintf(stderr, "sim: -services %d: want 1 to 4, or 0 to draw 1-4 per schedule\n", *services)
		return 2
	}
	if *large && (*lms || *even) {
		fmt.Fprintln(stderr, "sim: -large picks the shape itself: not with -lms or -even")
		return 2
	}
	if *short {
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == "schedules" })
		if !given {
			*schedules = 200
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "sim: -cpuprofile: %v\n", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	fmt := fmtTo{stdout}

	opts := func(s uint64) sim.Options {
		n := *services
		if n == 0 {
			n = 1 + int((s*0x9e3779b97f4a7c15)>>62) // not s%4: that would follow -kill-every's s%10
		}
		if *lms {
			n = 1
		}
		return sim.Options{Seed: s, MaxDrift: *drift, Twin: *twin, Services: n, LastManStanding: *lms, EvenLocators: *even, Large: *large,
			Kill:   *killEvery > 0 && s%uint64(*killEvery) == 0,
			Benign: *benignEvery > 0 && s%uint64(*benignEvery) == uint64(*benignEvery/2) && *benignEvery > 1}
	}
	if *replay != 0 {
		o := opts(*replay)
		o.Trace = true
		r := sim.Run(o)
		for _, l := range r.Trace {
			fmt.Println(l)
		}
		report(fmt, r)
		fmt.Printf("bench=sim schedules=1 violations=%d max_recovery_ms=%.1f max_failover_ms=%.1f seed=%d\n",
			len(r.Violations), ms(r.Recovery), ms(r.Failover), *replay)
		if len(r.Violations) > 0 {
			return 1
		}
		return 0
	}

	start := time.Now()
	var (
		next                 atomic.Int64
		mu                   sync.Mutex
		bad                  []sim.Result
		maxRec               time.Duration
		maxFail              time.Duration
		fails                []time.Duration
		recs                 []time.Duration
		steps, msg, replayed int64
		forged, releases     int64
		failbacks            int64
		notPreferred         int64
		maxFailbackGap       time.Duration
		relFails             []time.Duration
		wg                   sync.WaitGroup
	)
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(*schedules) {
					return
				}
				s := *seed + uint64(i)
				r := sim.Run(opts(s))
				mu.Lock()
				steps += int64(r.Steps)
				msg += int64(r.Messages)
				replayed += int64(r.Replayed)
				forged += int64(r.Forged)
				releases += int64(r.Releases)
				failbacks += int64(r.Failbacks)
				if r.NotPreferred {
					notPreferred++
				}
				maxFailbackGap = max(maxFailbackGap, r.FailbackGap)
				if len(r.Violations) > 0 {
					bad = append(bad, r)
				}
				if r.Recovery > maxRec {
					maxRec = r.Recovery
				}
				if r.Recovery >= 0 {
					recs = append(recs, r.Recovery)
				}
				if r.Failover >= 0 && r.ReleaseKill {
					relFails = append(relFails, r.Failover)
				} else if r.Failover >= 0 {
					fails = append(fails, r.Failover)
					maxFail = max(maxFail, r.Failover)
				}
				if *verbose {
					fmt.Printf("seed=%d %s violations=%d recovery_ms=%.1f failover_ms=%.1f not_preferred=%v release_kill=%v failback_gap_ms=%.1f steps=%d\n",
						s, r.Shape, len(r.Violations), ms(r.Recovery), ms(r.Failover), r.NotPreferred, r.ReleaseKill, ms(r.FailbackGap), r.Steps)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(bad, func(i, j int) bool { return bad[i].Seed < bad[j].Seed })
	for i, r := range bad {
		if i == 3 {
			fmt.Printf("... and %d more failing seeds\n", len(bad)-3)
			break
		}
		// Re-run with tracing: the schedule is deterministic.
		o := opts(r.Seed)
		o.Trace = true
		t := sim.Run(o)
		fmt.Printf("=== seed %d: replay with: go run ./test/sim -replay %d -drift %v -services %d\n", r.Seed, r.Seed, *drift, opts(r.Seed).Services)
		tail := t.Trace
		if len(tail) > 400 {
			fmt.Printf("(last 400 of %d trace lines)\n", len(tail))
			tail = tail[len(tail)-400:]
		}
		for _, l := range tail {
			fmt.Println(l)
		}
		report(fmt, t)
	}
	// A liveness figure, not a violation: the survivors claim in order of
	// preference (protocol.Node's claimStagger), and a change that breaks
	// it shows here as a jump (from about 0.1-0.3 % of kills to 7-13 %
	// before that rule), deterministically for the same seeds. Said before
	// the summary, which stays the last line.
	kills := len(fails) + len(relFails)
	tooOften := *maxNotPreferred >= 0 && kills > 0 && float64(notPreferred) > *maxNotPreferred*float64(kills)
	if tooOften {
		fmt.Printf("FAIL: %d of %d kills (%.1f %%) gave the role to another than the most preferred survivor, more than -max-not-preferred %g (find them with -v)\n",
			notPreferred, kills, 100*float64(notPreferred)/float64(kills), *maxNotPreferred)
	}
	// The largest bound of the simulated shapes (5 nodes; 8 with -large).
	largest := []string{"a", "b", "c", "d", "e"}
	if *large {
		largest = append(largest, "f", "g", "h")
	}
	bound := protocol.Config{Nodes: largest}.RecoveryBound(40 * time.Millisecond)
	// first_seed, shapes and twin make a line of a long run's log say
	// which schedules it counts (-sum adds chunks up by them).
	shapes := "default"
	switch {
	case *large:
		shapes = "large"
	case *lms:
		shapes = "lms"
	case *even:
		shapes = "even"
	}
	fmt.Printf("bench=sim schedules=%d violations=%d max_recovery_ms=%.1f p99_recovery_ms=%.1f recovery_bound_ms=%.1f kill_runs=%d max_failover_ms=%.1f p99_failover_ms=%.1f kill_not_preferred=%d release_kill_runs=%d max_release_failover_ms=%.1f p99_release_failover_ms=%.1f releases=%d failbacks=%d max_failback_gap_ms=%.1f forged=%d drift=%g services=%d steps=%d messages=%d replayed=%d first_seed=%d shapes=%s twin=%v seconds=%.1f\n",
		*schedules, len(bad), ms(maxRec), ms(pct(recs, 0.99)), ms(bound), len(fails)+len(relFails), ms(maxFail), ms(pct(fails, 0.99)), notPreferred,
		len(relFails), ms(slices.Max(append(relFails, 0))), ms(pct(relFails, 0.99)), releases, failbacks, ms(maxFailbackGap), forged, *drift, *services, steps, msg, replayed,
		*seed, shapes, *twin, time.Since(start).Seconds())
	if len(bad) > 0 || tooOften {
		return 1
	}
	return 0
}

// fmtTo sends the command's output to one writer (stdout, or a test's buffer).
type fmtTo struct{ w io.Writer }

func (f fmtTo) Printf(format string, a ...any) { fmt.Fprintf(f.w, format, a...) }
func (f fmtTo) Println(a ...any)               { fmt.Fprintln(f.w, a...) }

func report(fmt fmtTo, r sim.Result) {
	fmt.Printf("seed=%d %s faults:\n", r.Seed, r.Shape)
	for _, f := range r.Faults {
		fmt.Printf("  %s\n", f)
	}
	for _, v := range r.Violations {
		fmt.Printf("VIOLATION seed=%d: %s\n", r.Seed, v)
	}
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return float64(d) / 1e6
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return -1
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[int(float64(len(v)-1)*p)]
}
