// Command supervisor benchmarks `vigil supervise`: restart latency (exit seen
// by the reaper -> new child placed in its cgroup and released), and the
// supervisor's RSS and CPU use with many idle processes.
//
//	go run ./bench/supervisor [-short] [-vigil bin/vigil] [-restarts 300] [-procs 50] [-idle 30s]
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

func main() {
	short := flag.Bool("short", false, "CI mode: few restarts, short idle window")
	bin := flag.String("vigil", "bin/vigil", "vigil binary")
	restarts := flag.Int("restarts", 300, "restarts to measure")
	procs := flag.Int("procs", 50, "idle processes")
	idle := flag.Duration("idle", 30*time.Second, "idle measurement window")
	timing := flag.String("timing", "", `cluster.timing of the idle run's one-node cluster as a YAML mapping, e.g. "{token_interval: 20ms, token_timeout: 150ms, lease: 200ms, drift_margin: 25ms}"; default: the product's defaults (the node manager reports four times a lease)`)
	rcu := flag.String("rcu-expedited", "both", "host: measure restarts with the host's /sys/kernel/rcu_expedited only; both: also with it set to 1 (restored afterwards)")
	flag.Parse()
	if *short {
		*restarts, *idle, *rcu = 40, 3*time.Second, "host"
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/supervisor: needs root (it builds cgroups)")
		os.Exit(2)
	}
	machine.Describe(os.Stdout)
	failed := 0
	hostRCU := readRCU()
	l := &live{}
	go l.stopOnSignal(hostRCU)
	fmt.Printf("note: on cgroup v1 every placement migrates the child, and the first migration after a quiet spell waits for an RCU grace period (~5-15 ms); rcu_expedited=1 shortens it, cgroup v2 avoids it with CLONE_INTO_CGROUP\n")
	lat, err := restartLatency(l, *bin, *restarts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "restart run failed:", err)
		failed++
	}
	sort.Float64s(lat)
	fmt.Printf("bench=supervisor scenario=restart rcu_expedited=%s restarts=%d restart_p50_ms=%.3f restart_p99_ms=%.3f restart_max_ms=%.3f failed_runs=%d\n",
		hostRCU, len(lat), pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1), failed)
	if *rcu == "both" && hostRCU == "0" {
		if err := os.WriteFile(rcuFile, []byte("1"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "cannot set rcu_expedited:", err)
		} else {
			elat, err := restartLatency(l, *bin, *restarts)
			_ = os.WriteFile(rcuFile, []byte(hostRCU), 0o644)
			efail := 0
			if err != nil {
				fmt.Fprintln(os.Stderr, "restart run (rcu_expedited=1) failed:", err)
				efail, failed = 1, failed+1
			}
			sort.Float64s(elat)
			fmt.Printf("bench=supervisor scenario=restart rcu_expedited=1 restarts=%d restart_p50_ms=%.3f restart_p99_ms=%.3f restart_max_ms=%.3f failed_runs=%d\n",
				len(elat), pct(elat, 0.50), pct(elat, 0.99), pct(elat, 1), efail)
		}
	}
	rss, cpu, err := idleCost(l, *bin, *timing, *procs, *idle)
	ifail := 0
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle run failed:", err)
		ifail, failed = 1, failed+1
	}
	timingName := *timing
	if timingName == "" {
		timingName = "defaults"
	}
	fmt.Printf("bench=supervisor scenario=idle procs=%d timing=%q idle_s=%.0f rss_mib=%.1f idle_cpu_pct=%.3f failed_runs=%d\n", *procs, timingName, idle.Seconds(), rss, cpu, ifail)
	fmt.Printf("bench=supervisor restarts=%d restart_p50_ms=%.3f restart_p99_ms=%.3f rss_mib=%.1f idle_cpu_pct=%.3f failed_runs=%d\n",
		len(lat), pct(lat, 0.50), pct(lat, 0.99), rss, cpu, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

const rcuFile = "/sys/kernel/rcu_expedited"

func readRCU() string {
	b, err := os.ReadFile(rcuFile)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

type run struct {
	dir, cfg, socket string
	cmd              *exec.Cmd
	logR             io.ReadCloser
	live             *live
}

// live is the vigil run in progress: an interrupted benchmark stops it
// (SIGTERM, as r.stop does) and puts rcu_expedited back, rather than
// leaving a supervisor and its processes behind.
type live struct {
	mu sync.Mutex
	r  *run
}

func (l *live) stopOnSignal(hostRCU string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	s := <-sig
	fmt.Fprintf(os.Stderr, "bench/supervisor: %v: stopping the vigil under test\n", s)
	l.mu.Lock()
	r := l.r
	l.mu.Unlock()
	if r != nil {
		r.stop()
	}
	if hostRCU == "0" || hostRCU == "1" {
		_ = os.WriteFile(rcuFile, []byte(hostRCU), 0o644)
	}
	os.Exit(130)
}

// startVigil starts a one-node cluster with processes; timing, if not
// empty, is its cluster.timing. It is l's run until its stop.
func (l *live) startVigil(bin, timing, processes string) (*run, error) {
	r, err := startVigil(bin, timing, processes)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.r, r.live = r, l
	l.mu.Unlock()
	return r, nil
}

func startVigil(bin, timing, processes string) (*run, error) {
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	r := &run{dir: dir, cfg: filepath.Join(dir, "vigil.yaml"), socket: filepath.Join(dir, "control.sock")}
	timingLine := ""
	if timing != "" {
		timingLine = "  timing: " + timing
	}
	cfg := fmt.Sprintf(`cluster:
  name: bench
  node: a
  key_file: %s/cluster.key
  nodes: [{id: a, address: 127.0.0.1:17499}]
%s
control: {realtime: false}
metrics: {listen: ""}
runtime: {control_socket: %s, state_dir: %s/state, cgroup: vigil-bench-%s}
log: {level: info, format: json}
processes:
%s`, dir, timingLine, r.socket, dir, hex.EncodeToString(rnd[:]), processes)
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin, "supervise", "-c", r.cfg)
	pr, pw := io.Pipe()
	r.cmd.Stderr, r.cmd.Stdout = pw, io.Discard
	r.logR = pr
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := client.Call(r.socket, supervisor.Request{Cmd: "status"}); err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("vigil did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *run) stop() {
	if l := r.live; l != nil {
		l.mu.Lock()
		if l.r == r {
			l.r = nil
		}
		l.mu.Unlock()
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.logR.Close()
	os.RemoveAll(r.dir)
}

// restartLatency reads the supervisor's own measurement from its log: every
// immediate restart logs latency_us from the reaper's wait4 to the release of
// the new child, placed in its cgroup.
func restartLatency(l *live, bin string, n int) ([]float64, error) {
	r, err := l.startVigil(bin, "", `
  - name: flapper
    command: [/bin/sh, -c, "sleep 0.02; exit 1"]
    backoff: {stable: 1ms}
`)
	if err != nil {
		return nil, err
	}
	defer r.stop()
	var lat []float64
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r.logR)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.Contains(line, []byte(`"latency_us"`)) {
				continue
			}
			var ev struct {
				LatencyUS int64 `json:"latency_us"`
			}
			if json.Unmarshal(line, &ev) == nil {
				mu.Lock()
				lat = append(lat, float64(ev.LatencyUS)/1000)
				if len(lat) == n {
					close(done)
				}
				mu.Unlock()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Duration(n)*200*time.Millisecond + 30*time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	out := append([]float64(nil), lat...)
	if len(out) < n {
		return out, fmt.Errorf("only %d of %d restarts seen", len(out), n)
	}
	return out[:n], nil
}

// idleCost measures the supervisor's RSS and CPU with procs idle processes.
func idleCost(l *live, bin, timing string, procs int, window time.Duration) (rssMiB, cpuPct float64, err error) {
	var b strings.Builder
	for i := 0; i < procs; i++ {
		fmt.Fprintf(&b, "  - name: idle%d\n    command: [/bin/sleep, \"100000\"]\n", i)
	}
	r, err := l.startVigil(bin, timing, b.String())
	if err != nil {
		return 0, 0, err
	}
	defer r.stop()
	go func() { _, _ = io.Copy(io.Discard, r.logR) }()
	// Let start-up settle before measuring.
	time.Sleep(time.Second)
	pid := r.cmd.Process.Pid
	t0, c0, err := cpuTicks(pid)
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(window)
	t1, c1, err := cpuTicks(pid)
	if err != nil {
		return 0, 0, err
	}
	resp, err := client.Call(r.socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return 0, 0, err
	}
	running := 0
	for _, p := range resp.Status.Processes {
		if p.State == supervisor.StateRunning {
			running++
		}
	}
	if running != procs {
		return 0, 0, fmt.Errorf("%d of %d processes running", running, procs)
	}
	rss, err := vmRSS(pid)
	if err != nil {
		return 0, 0, err
	}
	const clkTck = 100 // USER_HZ on Linux
	cpuPct = float64(c1-c0) / clkTck / t1.Sub(t0).Seconds() * 100
	return float64(rss) / 1024, cpuPct, nil
}

func cpuTicks(pid int) (time.Time, uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15 of stat; f starts at field 3.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Now(), ut + st, nil
}

func vmRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				return strconv.ParseUint(f[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}
