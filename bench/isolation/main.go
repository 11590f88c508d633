// Command isolation benchmarks the reserved control plane (issue 3): two
// control-plane processes, one in control/locator and one in
// control/nodemanager, ping-pong a UDP token on loopback at 1 kHz while
// apps/ runs a noisy neighbour, with the reservation on (cpu weight 10000,
// SCHED_RR via realtime.ApplySelf with an RT budget, mlock, oom_score_adj)
// and off (control at the apps' weight, no realtime), alternating in the
// same run. A freeze probe (SCHED_FIFO, in control/probe) measures the
// VM's own stalls, the floor no in-guest isolation can remove.
//
//	go run ./bench/isolation [-short] [-duration 60s] [-slices 4] [-variants cpu,io]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/bench/internal/memhog"
	"github.com/vigil-project/vigil/cgroup"
)

var allVariants = []string{"cpu", "cpu-nice", "memory", "io", "quota", "all"}

// RT budgets per 1 s period (cpu.rt_period_us) and CPU, of the host's
// 950000: a group that uses its budget up is stopped until the next period
// (hundreds of ms), so it must cover the Go runtime's own threads too,
// which run SCHED_RR as well (spinning Ms, sysmon, GC workers).
const (
	rtBudgetUs    = 300000
	probeBudgetUs = 200000
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	short := flag.Bool("short", false, "CI mode: every variant for ~3 s, small memory hog")
	duration := flag.Duration("duration", 60*time.Second, "measured time per variant, split into alternating reserved/unreserved slices")
	nslices := flag.Int("slices", 4, "slices per variant (even; order reserved, unreserved, unreserved, reserved, ... so that linear drift hits both alike)")
	variants := flag.String("variants", strings.Join(allVariants, ","), "comma-separated variants to run")
	flag.Parse()
	if *short {
		*duration, *nslices = 3*time.Second, 2
	}
	if *nslices < 2 || *nslices%2 != 0 {
		fmt.Fprintln(os.Stderr, "bench/isolation: -slices must be even and >= 2")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/isolation: needs root (it builds cgroups and uses SCHED_RR)")
		os.Exit(2)
	}
	if _, err := exec.LookPath("stress-ng"); err != nil {
		fmt.Fprintln(os.Stderr, "bench/isolation: stress-ng not found (apt-get install -y stress-ng)")
		os.Exit(2)
	}
	var vs []string
	for _, v := range strings.Split(*variants, ",") {
		if !slices.Contains(allVariants, v) {
			fmt.Fprintf(os.Stderr, "bench/isolation: unknown variant %q (have %v)\n", v, allVariants)
			os.Exit(2)
		}
		vs = append(vs, v)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	os.Exit(run(ctx, vs, *duration, *nslices, *short))
}

// bench holds what one run creates; cleanup removes all of it.
type bench struct {
	m      *cgroup.Manager
	tmp    string // scratch directory on disk (not tmpfs): hog files
	self   string // this binary, re-executed in its roles
	short  bool
	memHog memhog.Plan
}

func run(ctx context.Context, vs []string, dur time.Duration, nslices int, short bool) int {
	machine.Describe(os.Stdout)
	fmt.Println("note: latency is per hop (locator->nodemanager and back, each one-way on the shared CLOCK_MONOTONIC, the first hop from the ping's scheduled send instant so its own wake-up delay counts); rtt_* is the round trip")
	fmt.Println("note: other engineers compile and test on this machine during the run: their load is part of the noise, for both modes alike")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "vigil-isolation-" + hex.EncodeToString(b)
	m, err := cgroup.Open(cgroup.Options{Subtree: name})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/isolation:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/isolation:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("/var/tmp", name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/isolation:", err)
		_ = m.Destroy()
		return 1
	}
	bn := &bench{m: m, tmp: tmp, self: self, short: short}
	defer func() {
		// Kills every hog and role (all live in the tree) and removes it.
		if err := m.Destroy(); err != nil {
			fmt.Fprintln(os.Stderr, "bench/isolation: cleanup:", err)
		}
		if err := os.RemoveAll(tmp); err != nil {
			fmt.Fprintln(os.Stderr, "bench/isolation: cleanup:", err)
		}
	}()
	fmt.Printf("tree: %s scratch=%s duration_per_variant=%s slices=%d\n", m.Describe(), tmp, dur, nslices)
	failed := 0
	var summaries []string
	for _, v := range vs {
		if ctx.Err() != nil {
			break
		}
		s, err := bn.variant(ctx, v, dur, nslices)
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "variant %s failed: %v\n", v, err)
			s = fmt.Sprintf("bench=isolation variant=%s failed=1 error=%q", v, err.Error())
		}
		summaries = append(summaries, s)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench/isolation: interrupted")
		failed++
	}
	for _, s := range summaries {
		fmt.Println(s)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// hog is one noisy-neighbour command in its apps/ group.
type hog struct {
	group string
	res   cgroup.Resources
	argv  []string
}

// hogs returns the noisy neighbours of variant v. Every command has its own
// time limit as a backstop (stress-ng --timeout, coreutils timeout), so
// nothing outlives a bench that was killed with SIGKILL.
func (bn *bench) hogs(v string, limit time.Duration) ([]hog, error) {
	secs := strconv.Itoa(int(limit.Seconds()))
	ncpu := runtime.NumCPU()
	cpuWorkers := strconv.Itoa(4 * ncpu)
	cpu := hog{group: "apps/cpu", argv: []string{"stress-ng", "--cpu", cpuWorkers, "--timeout", secs, "-q"}}
	cpuNice := hog{group: "apps/cpu", argv: append([]string{"nice", "-n", "-10"}, cpu.argv...)}
	quota := hog{group: "apps/quota", res: cgroup.Resources{CPUMax: strconv.Itoa(50*ncpu) + "%"}, argv: cpu.argv}
	ioHog := hog{group: "apps/io", argv: []string{"sh", "-c",
		// stress-ng's hdd writers fsync after every 4 KiB write, plus a dd
		// whose every write is O_DSYNC.
		fmt.Sprintf(`stress-ng --hdd 2 --hdd-bytes 64m --hdd-write-size 4k --hdd-opts fsync --temp-path %s --timeout %s -q &
timeout %s sh -c 'while :; do dd if=/dev/zero of=%s/dsync bs=4k count=4096 oflag=dsync status=none; done' ; wait`,
			bn.tmp, secs, secs, bn.tmp)}}
	var out []hog
	switch v {
	case "cpu":
		out = []hog{cpu}
	case "cpu-nice":
		out = []hog{cpuNice}
	case "quota":
		out = []hog{quota}
	case "io":
		out = []hog{ioHog}
	case "memory", "all":
		p := bn.memHog
		mem := hog{group: "apps/memory", res: cgroup.Resources{MemoryMax: p.Max}, argv: p.Argv(bn.tmp, limit)}
		out = []hog{mem}
		if v == "all" {
			out = append(out, cpuNice, ioHog, quota)
		}
	}
	return out, nil
}

// prepareMemory sizes the memory hog and writes its page-cache file once.
func (bn *bench) prepareMemory() error {
	p, err := memhog.Size(bn.short)
	if err != nil {
		return err
	}
	bn.memHog = p
	note, err := p.Prepare(bn.tmp)
	if note != "" {
		fmt.Println(note)
	}
	return err
}

// startHogs places and starts the hogs; each waits on its stdin until it
// sits in its group, so no hog work escapes the group.
func (bn *bench) startHogs(hs []hog) ([]*exec.Cmd, error) {
	var cmds []*exec.Cmd
	for _, h := range hs {
		g, err := bn.m.Group(h.group)
		if err != nil {
			return cmds, err
		}
		res := h.res
		res.CPUWeight = 100
		if na, err := g.Apply(res); err != nil {
			return cmds, err
		} else if len(na) > 0 {
			fmt.Printf("note: %s: not applied: %v\n", h.group, na)
		}
		cmd := exec.Command("sh", append([]string{"-c", `read x; exec "$@"`, "hog"}, h.argv...)...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		w, err := cmd.StdinPipe()
		if err != nil {
			return cmds, err
		}
		if err := cmd.Start(); err != nil {
			return cmds, fmt.Errorf("start %v: %w", h.argv, err)
		}
		cmds = append(cmds, cmd)
		if err := g.AddProc(cmd.Process.Pid); err != nil {
			return cmds, err
		}
		if _, err := w.Write([]byte("\n")); err != nil {
			return cmds, err
		}
	}
	return cmds, nil
}

// stopHogs kills every group under apps/ and reaps the commands.
func (bn *bench) stopHogs(cmds []*exec.Cmd) error {
	g, err := bn.m.Group("apps")
	if err != nil {
		return err
	}
	kerr := g.Kill()
	for _, c := range cmds {
		_ = c.Wait()
	}
	return kerr
}

// hostStats are host-wide reclaim and pressure counters.
type hostStats struct {
	pgscanKswapd, pgscanDirect, pgmajfault  int64
	memSomeTotal, cpuSomeTotal, ioSomeTotal int64 // PSI totals, µs
}

func readHostStats() hostStats {
	var s hostStats
	if b, err := os.ReadFile("/proc/vmstat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch {
			case f[0] == "pgscan_kswapd":
				s.pgscanKswapd = v
			case f[0] == "pgscan_direct":
				s.pgscanDirect = v
			case f[0] == "pgmajfault":
				s.pgmajfault = v
			}
		}
	}
	psi := func(res string) int64 {
		b, err := os.ReadFile("/proc/pressure/" + res)
		if err != nil {
			return -1
		}
		for _, f := range strings.Fields(strings.SplitN(string(b), "\n", 2)[0]) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return -1
	}
	s.memSomeTotal, s.cpuSomeTotal, s.ioSomeTotal = psi("memory"), psi("cpu"), psi("io")
	return s
}

// samples pools one mode's results over its slices.
type samples struct {
	hop, rtt []float64 // ms
	sent     int
	lost     int
	cpu      time.Duration // ping's CPU time
	reports  []string
}

func (s *samples) add(r pingResult) {
	for _, v := range r.Hop {
		s.hop = append(s.hop, float64(v)/1000)
	}
	for _, v := range r.RTT {
		s.rtt = append(s.rtt, float64(v)/1000)
	}
	s.sent += r.Sent
	s.lost += r.Lost
	s.cpu += r.CPU
}

func (bn *bench) variant(ctx context.Context, v string, dur time.Duration, nslices int) (string, error) {
	fmt.Printf("--- variant=%s\n", v)
	if v == "memory" || v == "all" {
		if err := bn.prepareMemory(); err != nil {
			return "", err
		}
	}
	warm := 2 * time.Second
	if v == "memory" || v == "all" {
		warm = 8 * time.Second // stress-ng fills its anon memory, the re-reader fills the cache
	}
	if bn.short {
		warm = 500 * time.Millisecond
	}
	slice := dur / time.Duration(nslices)
	hs, err := bn.hogs(v, warm+dur+time.Duration(nslices)*3*time.Second+30*time.Second)
	if err != nil {
		return "", err
	}
	cmds, err := bn.startHogs(hs)
	defer func() {
		if err := bn.stopHogs(cmds); err != nil {
			fmt.Fprintln(os.Stderr, "stop hogs:", err)
		}
	}()
	if err != nil {
		return "", err
	}
	select {
	case <-time.After(warm):
	case <-ctx.Done():
		return "", ctx.Err()
	}
	before := readHostStats()
	var on, off samples
	var freeze []float64
	var probeCPU time.Duration
	for i := 0; i < nslices; i++ {
		// reserved, unreserved, unreserved, reserved, ...
		reserved := (i%4 == 0) || (i%4 == 3)
		r, late, err := bn.slice(ctx, reserved, slice)
		if err != nil {
			return "", fmt.Errorf("slice %d (reserved=%t): %w", i, reserved, err)
		}
		for _, x := range late {
			freeze = append(freeze, float64(x)/1000)
		}
		probeCPU += r.ProbeCPU
		if reserved {
			on.add(r)
			on.reports = append(on.reports, r.Report)
		} else {
			off.add(r)
		}
	}
	after := readHostStats()
	if ex := exited(cmds); len(ex) > 0 {
		return "", fmt.Errorf("hog exited early: %v", ex)
	}
	for _, s := range []*samples{&on, &off} {
		slices.Sort(s.hop)
		slices.Sort(s.rtt)
	}
	slices.Sort(freeze)
	mode := func(name string, s samples) {
		fmt.Printf("variant=%s mode=%s ping_cpu_pct=%.1f hops=%d sent=%d lost=%d hop_p50_ms=%.3f hop_p99_ms=%.3f hop_p999_ms=%.3f hop_max_ms=%.3f rtt_p50_ms=%.3f rtt_p999_ms=%.3f rtt_max_ms=%.3f\n",
			v, name, 100*s.cpu.Seconds()/(float64(s.sent)/1000), len(s.hop), s.sent, s.lost, pct(s.hop, .5), pct(s.hop, .99), pct(s.hop, .999), pct(s.hop, 1), pct(s.rtt, .5), pct(s.rtt, .999), pct(s.rtt, 1))
	}
	mode("reserved", on)
	mode("unreserved", off)
	fmt.Printf("variant=%s freeze_probe cpu_pct=%.1f samples=%d late_p50_ms=%.3f late_p99_ms=%.3f late_p999_ms=%.3f late_max_ms=%.3f\n",
		v, 100*probeCPU.Seconds()/dur.Seconds(), len(freeze), pct(freeze, .5), pct(freeze, .99), pct(freeze, .999), pct(freeze, 1))
	fmt.Printf("variant=%s host pgscan_kswapd=%d pgscan_direct=%d pgmajfault=%d psi_some_ms memory=%.0f cpu=%.0f io=%.0f (over %.0fs)\n",
		v, after.pgscanKswapd-before.pgscanKswapd, after.pgscanDirect-before.pgscanDirect, after.pgmajfault-before.pgmajfault,
		float64(after.memSomeTotal-before.memSomeTotal)/1000, float64(after.cpuSomeTotal-before.cpuSomeTotal)/1000,
		float64(after.ioSomeTotal-before.ioSomeTotal)/1000, dur.Seconds())
	if len(on.reports) > 0 {
		fmt.Printf("variant=%s reserved realtime: %s\n", v, on.reports[0])
	}
	rp999, rmax := pct(on.hop, .999), pct(on.hop, 1)
	up999, umax := pct(off.hop, .999), pct(off.hop, 1)
	fp999, fmax := pct(freeze, .999), pct(freeze, 1)
	ratio := math.NaN()
	if rp999 > 0 {
		ratio = up999 / rp999
	}
	return fmt.Sprintf("bench=isolation variant=%s reserved_p50_ms=%.3f reserved_p99_ms=%.3f reserved_p999_ms=%.3f reserved_max_ms=%.3f unreserved_p999_ms=%.3f unreserved_max_ms=%.3f ratio_p999=%.2f freeze_p999_ms=%.3f freeze_max_ms=%.3f samples=%d unreserved_p50_ms=%.3f unreserved_p99_ms=%.3f unreserved_samples=%d reserved_above_floor_p999_ms=%.3f reserved_above_floor_max_ms=%.3f lost=%d target_met=%t failed=0",
		v, pct(on.hop, .5), pct(on.hop, .99), rp999, rmax, up999, umax, ratio, fp999, fmax, len(on.hop),
		pct(off.hop, .5), pct(off.hop, .99), len(off.hop), math.Max(0, rp999-fp999), math.Max(0, rmax-fmax),
		on.lost+off.lost, rp999 <= 2 && rmax <= 20), nil
}

// exited lists hogs that ended by themselves before being stopped.
func exited(cmds []*exec.Cmd) []string {
	var out []string
	for _, c := range cmds {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(c.Process.Pid, &ws, syscall.WNOHANG, nil)
		if err == nil && pid == c.Process.Pid {
			out = append(out, fmt.Sprintf("%v: %v", c.Args[4:], ws.ExitStatus()))
		}
	}
	return out
}

// role is one re-executed copy of the bench in its group.
type role struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func (bn *bench) startRole(name, group string, env ...string) (*role, error) {
	g, err := bn.m.Group(group)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bn.self)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+name), env...)
	cmd.Stderr = os.Stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	rd, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r := &role{cmd: cmd, stdin: w, out: bufio.NewReaderSize(rd, 1<<20)}
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		r.stop()
		return nil, err
	}
	if _, err := w.Write([]byte("go\n")); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

func (r *role) stop() {
	_ = r.stdin.Close()
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// result reads the role's JSON line and waits for it to exit.
func (r *role) result() (pingResult, error) {
	var res pingResult
	line, err := r.out.ReadString('\n')
	_ = r.stdin.Close()
	werr := r.cmd.Wait()
	if err != nil {
		return res, fmt.Errorf("read result: %w (exit: %v)", err, werr)
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return res, fmt.Errorf("parse result: %w", err)
	}
	if ps := r.cmd.ProcessState; ps != nil {
		res.CPU = ps.UserTime() + ps.SystemTime()
	}
	if res.Err != "" {
		return res, errors.New(res.Err)
	}
	return res, nil
}

// slice configures the control groups for one mode, runs pong, ping and
// the freeze probe for d and returns ping's and the probe's samples.
func (bn *bench) slice(ctx context.Context, reserved bool, d time.Duration) (pingResult, []int32, error) {
	var res pingResult
	weight := uint64(100) // the apps' weight
	if reserved {
		weight = 10000
	}
	for _, gr := range []struct {
		rel string
		r   cgroup.Resources
	}{
		{"control", cgroup.Resources{CPUWeight: weight}},
		{"control/locator", cgroup.Resources{CPUWeight: weight, RTRuntimeUs: rtBudgetUs}},
		{"control/nodemanager", cgroup.Resources{CPUWeight: weight, RTRuntimeUs: rtBudgetUs}},
		{"control/probe", cgroup.Resources{RTRuntimeUs: probeBudgetUs}},
	} {
		g, err := bn.m.Group(gr.rel)
		if err != nil {
			return res, nil, err
		}
		if na, err := g.Apply(gr.r); err != nil {
			return res, nil, err
		} else if len(na) > 0 && reserved {
			fmt.Printf("note: %s: not applied: %v\n", gr.rel, na)
		}
	}
	rt := "0"
	if reserved {
		rt = "1"
	}
	ds := durationEnv + "=" + d.String()
	pong, err := bn.startRole("pong", "control/nodemanager", realtimeEnv+"="+rt)
	if err != nil {
		return res, nil, err
	}
	defer pong.stop()
	line, err := pong.out.ReadString('\n')
	var port int
	if _, serr := fmt.Sscanf(line, "port %d", &port); err != nil || serr != nil {
		return res, nil, fmt.Errorf("pong did not report its port: %q %v", line, err)
	}
	probe, err := bn.startRole("probe", "control/probe", ds)
	if err != nil {
		return res, nil, err
	}
	defer probe.stop()
	ping, err := bn.startRole("ping", "control/locator", realtimeEnv+"="+rt, portEnv+"="+strconv.Itoa(port), ds)
	if err != nil {
		return res, nil, err
	}
	defer ping.stop()
	var wg sync.WaitGroup
	var pres pingResult
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		pres, perr = probe.result()
	}()
	done := make(chan struct{})
	go func() {
		res, err = ping.result()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		_ = ping.cmd.Process.Kill()
		_ = probe.cmd.Process.Kill()
		<-done
		wg.Wait()
		return res, nil, ctx.Err()
	}
	wg.Wait()
	if err != nil {
		return res, nil, fmt.Errorf("ping: %w", err)
	}
	if perr != nil {
		return res, nil, fmt.Errorf("freeze probe: %w", perr)
	}
	res.ProbeCPU = pres.CPU
	return res, pres.Late, nil
}

// pct is the q-quantile of sorted xs (nearest rank); NaN when empty.
func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}
