// Command controlplane measures what Vigil's control plane costs at idle:
// two nodes and a witness, each a `vigil supervise` with the product's
// control plane (realtime on: SCHED_RR, mlockall), in one network namespace
// of their own on its loopback. Per process (each host's supervisor,
// locator and node manager) it prints the resident memory at idle (VmRSS,
// and uss: the pages only that process maps) and after
// a soak of token traffic, the CPU it used at idle (schedstat run time of
// all its threads over repeated windows: median, p99, count), and, with
// -memory, its major page faults while the memory neighbour of
// bench/isolation drives the host into reclaim.
//
//	go run ./bench/controlplane [-vigil bin/vigil] [-timing lease200,lease60] [-keepalived 100ms,10ms] [-window 60s] [-samples 6] [-soak 0] [-memory 60s] [-services 1] [-short]
//
// With -services N > 1 the cluster has N services, placed alternately on
// a and b before the measure: each host's one locator and each node's one
// node manager serve them all, and each node holds a floating IP per
// service, so every host has a network namespace of its
// own on a bridge (the e2e harness's) rather than one shared loopback.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/bench/internal/memhog"
	"github.com/vigil-project/vigil/bench/internal/quantile"
	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
	"github.com/vigil-project/vigil/test/e2e"
	"golang.org/x/sys/unix"
)

// timings are the cluster.timing presets -timing names; "default" sets
// none (the binary's own defaults).
var timings = map[string]string{
	"default":  "",
	"lease200": "{token_interval: 20ms, token_timeout: 150ms, lease: 200ms, drift_margin: 25ms}",
	"lease60":  "{token_interval: 10ms, token_timeout: 50ms, lease: 60ms, drift_margin: 15ms}",
	// half of lease60's datagrams, the same pause tolerance (L - TI =
	// 50 ms), a failover about 10 ms longer: how the cost scales.
	"lease70ti20": "{token_interval: 20ms, token_timeout: 100ms, lease: 70ms, drift_margin: 15ms}",
}

func main() {
	bin := flag.String("vigil", "bin/vigil", "vigil binary (the product's static build: make build)")
	timing := flag.String("timing", "lease200,lease60", "comma-separated cluster.timing presets: default, lease200 (20/150/200/25 ms), lease60 (10/50/60/15 ms), lease70ti20 (20/100/70/15 ms)")
	window := flag.Duration("window", 60*time.Second, "idle CPU window per timing, split into -samples windows")
	nsamples := flag.Int("samples", 6, "CPU windows per timing")
	soak := flag.Duration("soak", 0, "token traffic after the idle windows before resident memory is read again (e.g. 1h)")
	memory := flag.Duration("memory", 0, "run the memory neighbour for this long after the soak and count major faults (0: skip)")
	rtBudget := flag.Duration("rt-budget", 150*time.Millisecond, "control.rt_budget of each host: three hosts (six realtime groups) share this machine's realtime budget (950 ms per second), the product default 300ms would not fit them all; at 100ms a node manager using 8-10 % of a CPU was throttled and fenced on a loaded machine")
	kaAdverts := flag.String("keepalived", "", "comma-separated advert intervals (e.g. 100ms,10ms): also measure keepalived (VRRP between nodes a and b, as bench/failover runs it) at idle with the same windows, side by side")
	short := flag.Bool("short", false, "CI mode: 2 windows of 2 s, a small memory neighbour, keepalived at 100ms unless -keepalived says otherwise")
	services := flag.Int("services", 1, "services in the cluster (1 to 4): a floating IP each on the nodes, placed alternately on a and b")
	bridge := flag.Bool("bridge", false, "each host in a network namespace of its own on a bridge, each node with a floating IP per service (always with -services > 1), not all on one loopback: to compare one service with several")
	flag.Parse()
	kaSet := false
	flag.Visit(func(f *flag.Flag) { kaSet = kaSet || f.Name == "keepalived" })
	if *short {
		*window, *nsamples = 4*time.Second, 2
		if !kaSet {
			*kaAdverts = "100ms"
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/controlplane: needs root (network namespace, cgroups, SCHED_RR)")
		os.Exit(2)
	}
	if *services < 1 || *services > 4 {
		fmt.Fprintln(os.Stderr, "bench/controlplane: -services must be 1 to 4")
		os.Exit(2)
	}
	if *nsamples < 1 {
		fmt.Fprintln(os.Stderr, "bench/controlplane: -samples must be >= 1")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/controlplane:", err)
		os.Exit(2)
	}
	var adverts []time.Duration
	if *kaAdverts != "" {
		for _, a := range strings.Split(*kaAdverts, ",") {
			d, err := time.ParseDuration(a)
			if err != nil || d < 10*time.Millisecond || d%(10*time.Millisecond) != 0 {
				fmt.Fprintf(os.Stderr, "bench/controlplane: -keepalived %q: want durations that are multiples of 10ms, e.g. 100ms,10ms\n", a)
				os.Exit(2)
			}
			adverts = append(adverts, d)
		}
	}
	var names []string
	for _, n := range strings.Split(*timing, ",") {
		if _, ok := timings[n]; !ok {
			fmt.Fprintf(os.Stderr, "bench/controlplane: unknown timing %q (have default, lease200, lease60, lease70ti20)\n", n)
			os.Exit(2)
		}
		names = append(names, n)
	}
	if *memory > 0 {
		if _, err := exec.LookPath("stress-ng"); err != nil {
			fmt.Fprintln(os.Stderr, "bench/controlplane: stress-ng not found (apt-get install -y stress-ng)")
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	machine.Describe(os.Stdout)
	fmt.Println("note: cpu_pct is % of one CPU: run time of all the process's threads (/proc/PID/task/*/schedstat) over each window; other engineers use this machine meanwhile, which adds wake-up latency but not run time")
	failed := 0
	var summaries []string
	for _, n := range names {
		s, err := measure(ctx, abs, n, *services, *bridge || *services > 1, *rtBudget, *window, *nsamples, *soak, *memory, *short)
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "timing %s failed: %v\n", n, err)
			s = fmt.Sprintf("bench=controlplane timing=%s failed=1 error=%q", n, err.Error())
		}
		summaries = append(summaries, s)
		if ctx.Err() != nil {
			break
		}
	}
	for _, a := range adverts {
		if ctx.Err() != nil {
			break
		}
		s, err := measureKeepalived(ctx, a, *window, *nsamples)
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "keepalived %v failed: %v\n", a, err)
			s = fmt.Sprintf("bench=controlplane system=keepalived advert_ms=%d failed=1 error=%q", a.Milliseconds(), err.Error())
		}
		summaries = append(summaries, s)
	}
	for _, s := range summaries {
		fmt.Println(s)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// host is one `vigil supervise` of the cluster.
type host struct {
	id, dir, cfg, socket, subtree string
	cmd                           *exec.Cmd
	done                          chan struct{}
}

// proc is one measured process.
type proc struct {
	host, name string
	pid        int
	cpu        []float64 // % of a CPU per window
	rss        []float64 // MiB, at each window's end
	uss        []float64 // MiB of pages no other process maps (private), at each window's end
	restarts   int       // windows lost to a restart of the process
	// memRestarts: restarts during the memory neighbour (the faults of
	// the process that died are not counted); soakRestarts: during the
	// soak.
	memRestarts, soakRestarts int
}

// cluster is where the hosts run: each one's network namespace and
// address, and the services.
type cluster struct {
	ns, addr map[string]string
	services int
	bridge   bool // a namespace per host: each node holds a floating IP per service
}

func measure(ctx context.Context, bin, timing string, services int, bridge bool, rtBudget, window time.Duration, nsamples int, soak, memory time.Duration, short bool) (_ string, rerr error) {
	fmt.Printf("--- timing=%s %s services=%d\n", timing, timings[timing], services)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	tag := hex.EncodeToString(rnd[:])
	if bridge {
		// A floating IP per service on each node: one namespace per host
		// (one Vigil holding floating IPs per namespace).
		var s string
		var err error
		derr := e2e.NewRunner(os.Stderr).Do(func(t e2e.TB) {
			n := e2e.NewNet(t)
			cl := cluster{ns: map[string]string{}, addr: map[string]string{}, services: services, bridge: true}
			for i, id := range []string{"a", "b", "w"} {
				cl.ns[id] = n.Hosts[id].NSName
				cl.addr[id] = fmt.Sprintf("192.0.2.%d:7400", 11+i)
			}
			s, err = measureIn(ctx, bin, timing, tag, cl, rtBudget, window, nsamples, soak, memory, short)
		})
		if derr != nil {
			return "", derr
		}
		return s, err
	}
	ns := "vigil-cp-" + tag
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("lo up: %v: %s", err, out)
	}
	cl := cluster{ns: map[string]string{}, addr: map[string]string{}, services: 1}
	for id, port := range map[string]int{"a": 17610, "b": 17620, "w": 17630} {
		cl.ns[id], cl.addr[id] = ns, fmt.Sprintf("127.0.0.1:%d", port)
	}
	return measureIn(ctx, bin, timing, tag, cl, rtBudget, window, nsamples, soak, memory, short)
}

func measureIn(ctx context.Context, bin, timing, tag string, cl cluster, rtBudget, window time.Duration, nsamples int, soak, memory time.Duration, short bool) (_ string, rerr error) {
	base, err := os.MkdirTemp("/var/tmp", "vigil-cp-"+tag+"-")
	if err != nil {
		return "", err
	}
	defer func() {
		if rerr != nil {
			fmt.Fprintf(os.Stderr, "bench/controlplane: logs kept in %s\n", base)
			return
		}
		os.RemoveAll(base)
	}()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(base, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", err
	}
	var hosts []*host
	defer func() {
		for _, h := range hosts {
			h.stop()
		}
	}()
	for _, id := range []string{"a", "b", "w"} {
		h, err := startHost(bin, base, keyFile, id, tag, timings[timing], rtBudget, cl)
		if err != nil {
			return "", err
		}
		hosts = append(hosts, h)
	}
	// The node managers' hold-off, then one active.
	active, err := waitActive(ctx, hosts, 30*time.Second)
	if err != nil {
		return "", err
	}
	if cl.services > 1 {
		// Whoever came up first holds every service (failback off):
		// place them alternately, so that runs compare like with like.
		if err := place(ctx, hosts, cl.services, 60*time.Second); err != nil {
			return "", err
		}
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return "", err
	}
	epoch0 := epochs(hosts)
	procs, err := resolve(hosts, nil)
	if err != nil {
		return "", err
	}
	fences0 := fences(hosts)
	// With -bridge each host has a network namespace of its own: its UDP
	// counters are its control plane's datagrams.
	udp0 := map[string][2]int64{}
	rateAt := time.Now()
	kl0 := map[string][]uint64{}
	for _, h := range hosts {
		if n, ok := kernelLeaseApplies(h); ok {
			kl0[h.id] = n
		}
		if cl.ns[h.id] != "" {
			if o, i, err := udpCounters(h.cmd.Process.Pid); err == nil {
				udp0[h.id] = [2]int64{o, i}
			}
		}
	}
	win := window / time.Duration(nsamples)
	// The most of its realtime budget each control group used on one CPU
	// within a second (vigil status, rtBudgetWatch's peak of the last 10
	// s), read after each sample, outside the measured windows.
	rtPeak := map[string]map[string]float64{}
	rtInForce := map[string]int64{}
	for i := 0; i < nsamples; i++ {
		if _, err := resolve(hosts, procs); err != nil {
			return "", err
		}
		t := time.Now()
		start := map[*proc]int64{}
		pids := map[*proc]int{}
		for _, p := range procs {
			start[p], _ = runNS(p.pid)
			pids[p] = p.pid
		}
		if err := sleepCtx(ctx, win); err != nil {
			return "", err
		}
		el := time.Since(t)
		if _, err := resolve(hosts, procs); err != nil {
			return "", err
		}
		for _, p := range procs {
			r, err := runNS(p.pid)
			if err != nil || p.pid != pids[p] {
				p.restarts++ // restarted in the window (fenced?): no sample
				continue
			}
			p.cpu = append(p.cpu, 100*float64(r-start[p])/float64(el.Nanoseconds()))
			rss, _ := vmRSSKiB(p.pid)
			p.rss = append(p.rss, float64(rss)/1024)
			uss, _ := privateKiB(p.pid)
			p.uss = append(p.uss, float64(uss)/1024)
		}
		for _, h := range hosts {
			st, err := h.status()
			if err != nil {
				continue
			}
			for _, g := range st.Groups {
				if g.RTPeakShare == nil || g.RTBudgetUsec <= 0 {
					continue
				}
				if rtPeak[h.id] == nil {
					rtPeak[h.id] = map[string]float64{}
				}
				rtPeak[h.id][g.Group] = max(rtPeak[h.id][g.Group], *g.RTPeakShare)
				rtInForce[h.id] = g.RTBudgetUsec
			}
		}
	}
	rateEl := time.Since(rateAt).Seconds()
	var rateLines []string
	for _, h := range hosts {
		// Kernel lease transactions (nftables): one per refresh of each
		// active service's lease on the host.
		if n0, ok := kl0[h.id]; ok {
			if n, ok := kernelLeaseApplies(h); ok && len(n) == len(n0) {
				var sum float64
				var per []string
				for i := range n {
					r := float64(int64(n[i])-int64(n0[i])) / rateEl // a restarted node manager counts from 0: negative, shown as is
					sum += r
					per = append(per, fmt.Sprintf("s%d:%.0f", i, r))
				}
				rateLines = append(rateLines, fmt.Sprintf("bench=controlplane timing=%s services=%d host=%s kernel_lease_tx_per_s=%.0f per_service=%s window_s=%.0f",
					timing, cl.services, h.id, sum, strings.Join(per, ","), rateEl))
			}
		}
		if pk := rtPeak[h.id]; len(pk) > 0 {
			var per []string
			for _, g := range slices.Sorted(maps.Keys(pk)) {
				per = append(per, fmt.Sprintf("%s:%.0f", strings.TrimPrefix(g, "control/"), pk[g]*100))
			}
			rateLines = append(rateLines, fmt.Sprintf("bench=controlplane timing=%s services=%d host=%s rt_budget_ms=%d rt_budget_peak_pct=%s",
				timing, cl.services, h.id, rtInForce[h.id]/1000, strings.Join(per, ",")))
		}
		u0, ok := udp0[h.id]
		if !ok {
			continue
		}
		if o, i, err := udpCounters(h.cmd.Process.Pid); err == nil {
			rateLines = append(rateLines, fmt.Sprintf("bench=controlplane timing=%s services=%d host=%s udp_out_per_s=%.0f udp_in_per_s=%.0f window_s=%.0f",
				timing, cl.services, h.id, float64(o-u0[0])/rateEl, float64(i-u0[1])/rateEl, rateEl))
		}
	}
	rssSoak := map[*proc]float64{}
	if soak > 0 {
		fmt.Printf("soak: %s of token traffic\n", soak)
		if err := sleepCtx(ctx, soak); err != nil {
			return "", err
		}
		before := map[*proc]int{}
		for _, p := range procs {
			before[p] = p.pid
		}
		// A process restarted during the soak (fenced?) is read as it
		// runs now, and counted.
		if _, err := resolve(hosts, procs); err != nil {
			return "", err
		}
		for _, p := range procs {
			if p.pid != before[p] {
				p.soakRestarts++
			}
			rss, _ := vmRSSKiB(p.pid)
			rssSoak[p] = float64(rss) / 1024
		}
	}
	maj := map[*proc]int64{}
	var memNote string
	if memory > 0 {
		var err error
		maj, memNote, err = underMemory(ctx, hosts, procs, base, memory, short)
		if err != nil {
			return "", err
		}
	}
	epoch1 := epochs(hosts)
	moves := 0
	for id, e := range epoch1 {
		if e != epoch0[id] {
			moves++
		}
	}
	roles := map[string]string{}
	for _, h := range hosts {
		roles[h.id] = "standby"
		if h.id == active {
			roles[h.id] = "active"
		}
		if h.id == "w" {
			roles[h.id] = "witness"
		}
	}
	var cpMaxCPU, cpMaxRSS, supMaxCPU float64
	var cpMaj int64
	for _, p := range procs {
		cs := slices.Clone(p.cpu)
		slices.Sort(cs)
		rs := slices.Clone(p.rss)
		slices.Sort(rs)
		us := slices.Clone(p.uss)
		slices.Sort(us)
		line := fmt.Sprintf("bench=controlplane timing=%s host=%s role=%s proc=%s sched=%s rss_idle_mib=%.1f uss_idle_mib=%.1f cpu_pct_p50=%.3f cpu_pct_p99=%.3f windows=%d restarts=%d window_s=%.0f",
			timing, p.host, roles[p.host], p.name, schedOf(p.pid), quantile.Nearest(rs, .5), quantile.Nearest(us, .5), quantile.Nearest(cs, .5), quantile.Nearest(cs, .99), len(cs), p.restarts, win.Seconds())
		if soak > 0 {
			line += fmt.Sprintf(" rss_soak_mib=%.1f restarts_soak=%d soak_s=%.0f", rssSoak[p], p.soakRestarts, soak.Seconds())
		}
		if memory > 0 {
			line += fmt.Sprintf(" majflt_memory=%d restarts_memory=%d memory_s=%.0f", maj[p], p.memRestarts, memory.Seconds())
		}
		fmt.Println(line)
		if p.name == "supervisor" {
			supMaxCPU = math.Max(supMaxCPU, quantile.Nearest(cs, .5))
			continue
		}
		cpMaxCPU = math.Max(cpMaxCPU, quantile.Nearest(cs, .5))
		if len(rs) > 0 {
			cpMaxRSS = math.Max(cpMaxRSS, slices.Max(rs))
		}
		if soak > 0 {
			cpMaxRSS = math.Max(cpMaxRSS, rssSoak[p])
		}
		cpMaj += maj[p]
	}
	for _, l := range rateLines {
		fmt.Println(l)
	}
	if memNote != "" {
		fmt.Println(memNote)
	}
	s := fmt.Sprintf("bench=controlplane timing=%s services=%d control_plane_cpu_pct_p50_max=%.3f control_plane_rss_mib_max=%.1f supervisor_cpu_pct_p50_max=%.3f windows=%d window_s=%.0f failovers=%d fences=%d",
		timing, cl.services, cpMaxCPU, cpMaxRSS, supMaxCPU, nsamples, win.Seconds(), moves, fences(hosts)-fences0)
	if soak > 0 {
		s += fmt.Sprintf(" soak_s=%.0f", soak.Seconds())
	}
	if memory > 0 {
		s += fmt.Sprintf(" control_plane_majflt_memory=%d memory_s=%.0f", cpMaj, memory.Seconds())
	}
	if nf := fences(hosts) - fences0; moves > 0 || nf > 0 {
		// An idle cluster should do neither: say why, from the hosts' logs.
		// Its figures are not those of a steady cluster: a role that moved
		// sends a claim's datagrams and takeover's transactions, and a
		// throttled realtime group (-rt-budget below what it uses) stops.
		fmt.Printf("warning: %d epoch changes and %d fences in an idle cluster: these figures are not of a steady cluster (one cause: -rt-budget below what the control plane uses, which the kernel then throttles every second; the hosts' lines below say why)\n", moves, nf)
		for _, h := range hosts {
			for _, l := range whyLines(filepath.Join(h.dir, "vigil.log"), 100) {
				fmt.Printf("    %s: %s\n", h.id, l)
			}
		}
	}
	return s + " failed=0", nil
}

// whyLines is up to max of the last such lines of a host's log.
func whyLines(path string, max int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{"(log: " + err.Error() + ")"}
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if e2e.ExplainJSON.MatchString(l) { // the lines that say why an idle cluster moved its role or fenced
			out = append(out, l)
		}
	}
	if len(out) > max {
		out = append([]string{fmt.Sprintf("(%d earlier lines left out)", len(out)-max)}, out[len(out)-max:]...)
	}
	return out
}

// underMemory runs the memory neighbour for d in a cgroup of its own and
// returns each process's major faults meanwhile.
func underMemory(ctx context.Context, hosts []*host, procs []*proc, base string, d time.Duration, short bool) (map[*proc]int64, string, error) {
	plan, err := memhog.Size(short)
	if err != nil {
		return nil, "", err
	}
	note, err := plan.Prepare(base)
	if err != nil {
		return nil, "", err
	}
	if note != "" {
		fmt.Println(note)
	}
	m, err := cgroup.Open(cgroup.Options{Subtree: "vigil-cp-hog-" + filepath.Base(base)})
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = m.Destroy() }()
	g, err := m.Group("apps/memory")
	if err != nil {
		return nil, "", err
	}
	if _, err := g.Apply(cgroup.Resources{MemoryMax: plan.Max, CPUWeight: 100}); err != nil {
		return nil, "", err
	}
	argv := plan.Argv(base, d+30*time.Second)
	cmd := exec.Command("sh", append([]string{"-c", `read x; exec "$@"`, "hog"}, argv...)...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	defer func() {
		_ = g.Kill()
		_ = cmd.Wait()
	}()
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		return nil, "", err
	}
	if _, err := w.Write([]byte("\n")); err != nil {
		return nil, "", err
	}
	before := map[*proc]int64{}
	for _, p := range procs {
		before[p], _ = majflt(p.pid)
	}
	h0, scan0 := vmstat()
	if err := sleepCtx(ctx, d); err != nil {
		return nil, "", err
	}
	pids := map[*proc]int{}
	for _, p := range procs {
		pids[p] = p.pid
	}
	if _, err := resolve(hosts, procs); err != nil {
		return nil, "", err
	}
	out := map[*proc]int64{}
	for _, p := range procs {
		a, err := majflt(p.pid)
		if err != nil {
			return nil, "", fmt.Errorf("%s/%s under memory pressure: %w", p.host, p.name, err)
		}
		if p.pid != pids[p] {
			// Restarted meanwhile (fenced): the new process's faults, all
			// within the window; the dead one's are lost.
			p.memRestarts++
			out[p] = a
			continue
		}
		out[p] = a - before[p]
	}
	h1, scan1 := vmstat()
	return out, fmt.Sprintf("memory neighbour: host pgmajfault=%d pgscan=%d over %.0fs (the whole host: whether the pressure was real)", h1-h0, scan1-scan0, d.Seconds()), nil
}

func startHost(bin, base, keyFile, id, tag, timing string, rtBudget time.Duration, cl cluster) (*host, error) {
	dir := filepath.Join(base, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h := &host{id: id, dir: dir, cfg: filepath.Join(dir, "vigil.yaml"), socket: filepath.Join(dir, "control.sock"),
		subtree: "vigil-cp-" + tag + "-" + id}
	role := "node"
	if id == "w" {
		role = "witness"
	}
	tl := ""
	if timing != "" {
		tl = "  timing: " + timing + "\n"
	}
	cfg := fmt.Sprintf(`cluster:
  name: bench
  node: %s
  role: %s
  key_file: %s
  nodes:
    - {id: a, address: "%s"}
    - {id: b, address: "%s"}
  witnesses:
    - {id: w, address: "%s"}
%scontrol: {realtime: true, rt_budget: %dms}
metrics: {listen: ""}
runtime: {control_socket: %s, state_dir: %s/state, cgroup: %s}
log: {level: info, format: json}
processes: []
`, id, role, keyFile, cl.addr["a"], cl.addr["b"], cl.addr["w"], tl, rtBudget.Milliseconds(), h.socket, dir, h.subtree)
	if cl.bridge {
		cfg += "services:\n"
		for i := range cl.services {
			if role == "witness" {
				cfg += fmt.Sprintf("  - {name: s%d}\n", i)
				continue
			}
			cfg += fmt.Sprintf("  - {name: s%d, vips: [{address: 192.0.2.%d/24, interface: %s}]}\n", i, 100+i, e2e.LinkName)
		}
	}
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "vigil.log"))
	if err != nil {
		return nil, err
	}
	// nsenter --net, not ip netns exec, which would remount /sys and hide
	// the cgroup hierarchies (ARCHITECTURE.md).
	h.cmd = exec.Command("nsenter", "--net=/run/netns/"+cl.ns[id], bin, "supervise", "-c", h.cfg)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	h.done = make(chan struct{})
	go func() { _ = h.cmd.Wait(); logf.Close(); close(h.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := h.status(); err == nil {
			return h, nil
		}
		select {
		case <-h.done:
			return h, fmt.Errorf("host %s exited at start (log: %s)", id, filepath.Join(dir, "vigil.log"))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return h, fmt.Errorf("host %s: control socket did not answer", id)
		}
	}
}

// resolve lists each host's supervisor, locator and node manager, or
// updates the pids of procs (a fenced node manager comes back as another).
func resolve(hosts []*host, procs []*proc) ([]*proc, error) {
	byKey := map[string]*proc{}
	for _, p := range procs {
		byKey[p.host+"/"+p.name] = p
	}
	var out []*proc
	for _, h := range hosts {
		st, err := h.status()
		if err != nil {
			return nil, err
		}
		found := map[string]int{"supervisor": st.Supervisor.PID}
		names := []string{"supervisor"}
		for _, p := range st.ControlPlane {
			found[p.Name] = p.PID
			names = append(names, p.Name) // locator, nodemanager
		}
		for _, name := range names {
			pid, ok := found[name]
			if !ok {
				continue
			}
			if p := byKey[h.id+"/"+name]; p != nil {
				p.pid = pid
				continue
			}
			out = append(out, &proc{host: h.id, name: name, pid: pid})
		}
	}
	return out, nil
}

// fences is the fences of all hosts' supervisors so far.
func fences(hosts []*host) uint64 {
	var n uint64
	for _, h := range hosts {
		if st, err := h.status(); err == nil {
			n += st.Supervisor.Fences
		}
	}
	return n
}

// kernelLeaseApplies is the number of kernel lease transactions each
// service's node manager on h has sent (index: the service's slot); false
// on a host without node managers (a witness) or with no status.
func kernelLeaseApplies(h *host) ([]uint64, bool) {
	st, err := h.status()
	if err != nil {
		return nil, false
	}
	rs := st.Reports()
	n := make([]uint64, len(rs))
	found := false
	for i, r := range rs {
		if r != nil && r.KernelLease != nil {
			n[i] = r.KernelLease.Applies
			found = true
		}
	}
	return n, found
}

func (h *host) status() (*supervisor.Status, error) {
	resp, err := client.Call(h.socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, errors.New("no status in the answer")
	}
	return resp.Status, nil
}

func (h *host) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

func waitActive(ctx context.Context, hosts []*host, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, h := range hosts {
			if st, err := h.status(); err == nil && st.NodeManager != nil && st.NodeManager.Role == "active" && st.NodeManager.LeaseValid {
				return h.id, nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no node became active within %s", d)
}

// place moves service i (s<i>) to node a if i is even, b if odd, by
// switchover, and waits until each holds its lease there.
func place(ctx context.Context, hosts []*host, services int, d time.Duration) error {
	deadline := time.Now().Add(d)
	byID := map[string]*host{}
	for _, h := range hosts {
		byID[h.id] = h
	}
	var where []string
	for i := range services {
		want := []string{"a", "b"}[i%2]
		svc := fmt.Sprintf("s%d", i)
		asked := false
		for {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not active on %s within %s", svc, want, d)
			}
			if st, err := byID[want].status(); err == nil {
				if r := st.Report(i); r != nil && r.Role == "active" && r.LeaseValid {
					break
				}
			}
			if !asked {
				if st, err := byID[want].status(); err == nil && st.Report(i) != nil && st.Report(i).Active != "" && st.Report(i).Role == "standby" {
					resp, err := client.Call(byID[want].socket, supervisor.Request{Cmd: "switchover", Service: svc, Name: want})
					asked = err == nil && resp.OK
				}
			}
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
		where = append(where, svc+"="+want)
	}
	fmt.Printf("placed %s\n", strings.Join(where, " "))
	return nil
}

// epochs is each node's epoch now: a change between two reads is a
// failover (or a switchover: none is made here).
func epochs(hosts []*host) map[string]uint64 {
	out := map[string]uint64{}
	for _, h := range hosts {
		if st, err := h.status(); err == nil && st.NodeManager != nil {
			out[h.id] = st.NodeManager.Epoch
		}
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// udpCounters reads the UDP datagrams sent and received in the network
// namespace of pid (/proc/PID/net/snmp, the namespace's own counters).
func udpCounters(pid int) (out, in int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", pid))
	if err != nil {
		return 0, 0, err
	}
	var head []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for k := 1; k < len(f) && k < len(head); k++ {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			switch head[k] {
			case "OutDatagrams":
				out = v
			case "InDatagrams":
				in = v
			}
		}
		return out, in, nil
	}
	return 0, 0, fmt.Errorf("no Udp counters in /proc/%d/net/snmp", pid)
}

// runNS sums the run time of every thread of pid (schedstat's first field).
func runNS(pid int) (int64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name(), "schedstat"))
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			sum += v
		}
	}
	return sum, nil
}

// statFields are the fields of /proc/PID/stat after the command name
// (f[0] is field 3, state).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:]), nil
}

// majflt is the process's major faults, all threads (stat field 12).
func majflt(pid int) (int64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(f[9], 10, 64)
}

// vmstat reads counters of /proc/vmstat: the host's major faults and
// pages scanned by reclaim (kswapd and direct), which show whether the
// neighbour drove the host into reclaim at all.
func vmstat() (majflt, scanned int64) {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "pgmajfault":
			majflt = n
		case "pgscan_kswapd", "pgscan_direct":
			scanned += n
		}
	}
	return majflt, scanned
}

// privateKiB is the memory only pid maps (Private_Clean + Private_Dirty of
// /proc/PID/smaps_rollup): what the host gets back when it exits. VmRSS
// also counts the binary's pages, which every vigil process shares (and
// mlockall makes resident in each).
func privateKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	var sum int64
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		for _, key := range []string{"Private_Clean:", "Private_Dirty:"} {
			if v, ok := strings.CutPrefix(l, key); ok {
				f := strings.Fields(v)
				if len(f) == 0 {
					continue
				}
				k, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("smaps_rollup of %d: %q: %w", pid, l, err)
				}
				sum += k
				n++
			}
		}
	}
	if n != 2 {
		return 0, fmt.Errorf("no Private_Clean and Private_Dirty for %d", pid)
	}
	return sum, nil
}

func vmRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// schedOf names the policy of pid's main thread: rr when the control
// plane's realtime guarantee is in force.
func schedOf(pid int) string {
	a, err := unix.SchedGetAttr(pid, 0)
	switch {
	case err != nil:
		return "unknown"
	case a.Policy == unix.SCHED_RR:
		return "rr"
	case a.Policy == unix.SCHED_FIFO:
		return "fifo"
	}
	return "other"
}
