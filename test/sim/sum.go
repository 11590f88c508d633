package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// A long run is made of chunks (a run of 50,000 schedules takes minutes
// and a machine may be wanted for something else between them); -sum adds
// their summary lines up, so the figures quoted for the whole run come
// from its log, not from a hand calculation.
//
// Each "bench=sim" line counts. Its first seed and its options are its own
// first_seed=, shapes=, twin= (printed since these keys were added), or
// else the last such key=value seen on an earlier line of the same file: a
// header like "chunk 3 seed=1100001" or "# shapes=default twin=false".
// Lines of different options, services or drift are summed apart. Two
// chunks of one group whose seeds overlap are an error: they would count
// the same schedules twice.

// sumGroup is what the chunks of one kind of run add up to.
type sumGroup struct {
	chunks  int
	seeds   [][2]uint64 // [first, last], of the chunks whose seeds are known
	unknown int         // chunks without a known first seed
	count   map[string]int64
	worst   map[string]float64
	p99lo   map[string]float64
	p99hi   map[string]float64
	p99set  map[string]bool
	seconds float64
}

// The summary line's counters, in its order; the rest are max_*, p99_*
// (summed as worst and range) and the group's identity.
var sumCounters = []string{"schedules", "violations", "kill_runs", "kill_not_preferred", "release_kill_runs",
	"releases", "failbacks", "forged", "steps", "messages", "replayed"}

// groupKeys identify a kind of run: chunks differing in them are not summed.
var groupKeys = []string{"shapes", "twin", "services", "drift"}

func runSum(files []string, stdout, stderr io.Writer) int {
	if len(files) == 0 {
		fmt.Fprintln(stderr, "sim: -sum: name the log files to add up")
		return 2
	}
	groups := map[string]*sumGroup{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "sim: -sum: %v\n", err)
			return 2
		}
		err = sumFile(f, name, groups)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "sim: -sum: %v\n", err)
			return 2
		}
	}
	if len(groups) == 0 {
		fmt.Fprintf(stderr, "sim: -sum: no bench=sim line in %s\n", strings.Join(files, ", "))
		return 2
	}
	code := 0
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		sort.Slice(g.seeds, func(i, j int) bool { return g.seeds[i][0] < g.seeds[j][0] })
		for i := 1; i < len(g.seeds); i++ {
			if g.seeds[i][0] <= g.seeds[i-1][1] {
				fmt.Fprintf(stderr, "sim: -sum: %s: seeds %d-%d and %d-%d overlap: the same schedules counted twice\n",
					k, g.seeds[i-1][0], g.seeds[i-1][1], g.seeds[i][0], g.seeds[i][1])
				code = 1
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "bench=sim-sum %s chunks=%d seeds=%s", k, g.chunks, seedRanges(g.seeds, g.unknown))
		for _, c := range sumCounters {
			fmt.Fprintf(&b, " %s=%d", c, g.count[c])
		}
		for _, m := range slices.Sorted(maps.Keys(g.worst)) {
			fmt.Fprintf(&b, " %s=%.1f", m, g.worst[m])
		}
		for _, p := range slices.Sorted(maps.Keys(g.p99lo)) {
			fmt.Fprintf(&b, " %s=%.1f-%.1f", p, g.p99lo[p], g.p99hi[p])
		}
		fmt.Fprintf(&b, " seconds=%.1f", g.seconds)
		fmt.Fprintln(stdout, b.String())
		if g.count["violations"] > 0 {
			code = 1
		}
	}
	return code
}

func sumFile(r io.Reader, name string, groups map[string]*sumGroup) error {
	ctx := map[string]string{} // key=value from earlier lines: seed, shapes, twin
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		kv := map[string]string{}
		for _, f := range fields {
			if k, v, ok := strings.Cut(strings.TrimLeft(f, "#"), "="); ok && k != "" {
				kv[k] = v
			}
		}
		if len(fields) == 0 || fields[0] != "bench=sim" {
			if len(fields) > 0 && (strings.HasPrefix(fields[0], "seed=") || fields[0] == "VIOLATION") {
				continue // one schedule's line (-v, a report), not a chunk's header
			}
			for _, k := range []string{"seed", "shapes", "twin"} {
				if v, ok := kv[k]; ok {
					ctx[k] = v
				}
			}
			continue
		}
		for _, k := range []string{"shapes", "twin"} {
			if _, ok := kv[k]; !ok {
				kv[k] = ctx[k]
			}
		}
		var ident []string
		for _, k := range groupKeys {
			v := kv[k]
			if v == "" {
				v = "?"
			}
			ident = append(ident, k+"="+v)
		}
		key := strings.Join(ident, " ")
		g := groups[key]
		if g == nil {
			g = &sumGroup{count: map[string]int64{}, worst: map[string]float64{}, p99lo: map[string]float64{}, p99hi: map[string]float64{}, p99set: map[string]bool{}}
			groups[key] = g
		}
		for _, c := range sumCounters {
			v, err := strconv.ParseInt(kv[c], 10, 64)
			if err != nil {
				return fmt.Errorf("%s:%d: %s=%q: %v", name, n, c, kv[c], err)
			}
			g.count[c] += v
		}
		for k, s := range kv {
			if !strings.HasPrefix(k, "max_") && !strings.HasPrefix(k, "p99_") {
				continue
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return fmt.Errorf("%s:%d: %s=%q: %v", name, n, k, s, err)
			}
			switch {
			case strings.HasPrefix(k, "max_"):
				g.worst[k] = max(g.worst[k], v)
			case v < 0: // no sample in this chunk
			case !g.p99set[k]:
				g.p99lo[k], g.p99hi[k], g.p99set[k] = v, v, true
			default:
				g.p99lo[k], g.p99hi[k] = min(g.p99lo[k], v), max(g.p99hi[k], v)
			}
		}
		if s, err := strconv.ParseFloat(kv["seconds"], 64); err == nil {
			g.seconds += s
		}
		g.chunks++
		first := kv["first_seed"]
		if first == "" {
			first = ctx["seed"]
			delete(ctx, "seed") // a header names one chunk's seed
		}
		k, _ := strconv.ParseUint(kv["schedules"], 10, 64)
		if seed, err := strconv.ParseUint(first, 10, 64); err == nil && k > 0 {
			g.seeds = append(g.seeds, [2]uint64{seed, seed + k - 1})
		} else {
			g.unknown++
		}
	}
	return sc.Err()
}

// seedRanges gives the seeds as contiguous ranges: 1000001-1399999.
func seedRanges(s [][2]uint64, unknown int) string {
	var out []string
	for i := 0; i < len(s); {
		lo, hi := s[i][0], s[i][1]
		for i++; i < len(s) && s[i][0] == hi+1; i++ {
			hi = s[i][1]
		}
		out = append(out, fmt.Sprintf("%d-%d", lo, hi))
	}
	if unknown > 0 {
		out = append(out, fmt.Sprintf("%d-chunks-unknown", unknown))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}
