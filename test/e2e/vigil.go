package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// VigilOptions configure the Vigil system.
type VigilOptions struct {
	// Bin is the vigil binary.
	Bin string
	// Timing is the cluster.timing YAML mapping, e.g. "{lease: 600ms}";
	// "" runs the product's defaults.
	Timing string
	// Realtime is control.realtime (the product default is true).
	Realtime bool
	// RTBudget is control.rt_budget, default 180ms here: the three hosts
	// share one kernel's 950 ms of realtime time per second, and at the
	// product default (300ms for each of 5 realtime groups) the last ones
	// would be refused SCHED_RR; 5 x 180ms fits. The protocol uses a few
	// ms of it per second, but under the noisy neighbour the scheduler's
	// debug file showed the active node manager's group throttled for
	// 440 ms at 100ms (VM stalls and kernel work charged to it), long
	// enough to be fenced: a false failover. A real host has the kernel
	// to itself. With SecondService the default is 90ms: each node then
	// runs two locators and two node managers, ten groups in all.
	RTBudget string
	// Metrics, when set, is metrics.listen inside each host's namespace.
	Metrics string
	// KillSparesApps makes Kill kill only Vigil's own processes (the
	// control group: supervisor, locator, node manager) and leave the
	// applications running: Vigil dead on a live host.
	KillSparesApps bool
	// HandoverGap is announce.handover_gap ("" leaves the default).
	HandoverGap string
	// ControlCPUs is control.cpus on every host ("" reserves none): the
	// control plane's cpus, which the applications (the SIP server, the
	// noisy neighbour) are kept off.
	ControlCPUs string
	// ExtraVIPs more floating IPs (ExtraVIPAddrs) on each node, listed
	// before VIP, so that the SIP server's address is added and announced
	// last: a takeover of many addresses as callers of the last one see it.
	ExtraVIPs int
	// Failback, when set (e.g. "1s"), writes the floating IPs as one
	// service, sip, that prefers a and fails back after this long
	// (ScenarioFailback); "" writes the top-level vips: of old.
	Failback string
	// SecondService adds a second service, sip2: VIP2 and a SIP server of
	// its own (process sip2), preferring b, beside sip (then written as a
	// service preferring a): an active/active pair.
	SecondService bool
}

// VIP2 is the second service's floating IP (VigilOptions.SecondService).
const VIP2 = "192.0.2.101"

// ExtraVIPAddrs are n floating IPs of the documentation ranges outside the
// harness's own subnet: 198.51.100.1-254, then 203.0.113.1-254 (at most 508).
func ExtraVIPAddrs(n int) []string {
	var out []string
	for i := 0; i < n && i < 508; i++ {
		if i < 254 {
			out = append(out, fmt.Sprintf("198.51.100.%d/24", i+1))
		} else {
			out = append(out, fmt.Sprintf("203.0.113.%d/24", i-253))
		}
	}
	return out
}

// Vigil runs `vigil supervise` on a, b and w, each in its namespace, with
// the SIP server as a critical application and a noisy neighbour that
// waits for its cue in the apps group.
type Vigil struct {
	t    TB
	n    *Net
	opts VigilOptions
	dir  string
	// noiseDir, on the disk, is where the noisy neighbour writes.
	noiseDir string
	tag      string
	key      []byte
	mu       sync.Mutex
	host     map[string]*vigilHost
}

type vigilHost struct {
	id      string
	dir     string
	cfg     string
	socket  string
	subtree string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// NewVigil prepares the three hosts' configs; Start starts them.
func NewVigil(t TB, n *Net, opts VigilOptions) *Vigil {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	if opts.RTBudget == "" {
		opts.RTBudget = "180ms"
		if opts.SecondService {
			opts.RTBudget = "90ms"
		}
	}
	sweepStale(t)
	v := &Vigil{t: t, n: n, opts: opts, dir: tempDir(t, "vigil-e2e-"), tag: fmt.Sprintf("p%d-%s", os.Getpid(), hex.EncodeToString(rnd[:])), host: map[string]*vigilHost{}}
	v.noiseDir = diskTempDir(t, "vigil-e2e-noise-")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	v.key = key
	keyFile := filepath.Join(v.dir, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	for _, id := range []string{"a", "b", "w"} {
		h := &vigilHost{id: id, dir: filepath.Join(v.dir, id), subtree: "vigil-e2e-" + v.tag + "-" + id}
		h.cfg = filepath.Join(h.dir, "vigil.yaml")
		h.socket = filepath.Join(h.dir, "control.sock")
		h.logPath = filepath.Join(h.dir, "vigil.log")
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		if err := v.writeConfig(h, keyFile); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		v.host[id] = h
	}
	t.Cleanup(func() { _ = v.Stop() })
	return v
}

// Label implements System.
func (v *Vigil) Label() string {
	l := "system=vigil"
	if v.opts.HandoverGap != "" {
		l += " handover_gap=" + v.opts.HandoverGap
	}
	if v.opts.ControlCPUs != "" {
		l += " control_cpus=" + v.opts.ControlCPUs
	}
	return l
}

// Socket returns host id's control socket.
func (v *Vigil) Socket(id string) string { return v.host[id].socket }

// Log returns host id's daemon log so far.
func (v *Vigil) Log(id string) string {
	b, _ := os.ReadFile(v.host[id].logPath)
	return string(b)
}

// Explain returns the lines of both nodes' logs since `since` that say
// why the role moved or the control plane suffered: role changes, failover
// and fence lines, lost tokens and leases, late timers, health changes. The
// benchmark prints them after a false failover.
func (v *Vigil) Explain(since time.Time) string {
	var b strings.Builder
	for _, id := range []string{"a", "b", "w"} {
		for _, l := range strings.Split(v.Log(id), "\n") {
			m := explainRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && t.Before(since) {
				continue
			}
			fmt.Fprintf(&b, "%s: %s\n", id, l)
		}
	}
	return b.String()
}

// explainEvents are the log events (docs/operations.md) that say why the
// role moved, or why a control-plane process was fenced or suffered:
// what Explain shows, and bench-controlplane after a move or a fence.
const explainEvents = `role|failover|takeover|fence|fence_deferred|fence_held|fence_hold_end|fence_kill_slow|fenced_fault|token_lost|token_regenerated|lease_expired|` +
	`late_timer|loop_slow|report_skipped|node_health|claim_abandoned|switchover_refused|realtime|realtime_degraded|exit|crash_release|crash_release_skipped`

// explainRE matches a text-format log line (log.format: text) of one of
// the explainEvents, and captures its time.
var explainRE = regexp.MustCompile(`^time=(\S+) .*\bevent=(` + explainEvents + `)( |$)`)

// ExplainJSON matches a JSON-format log line (log.format: json) of one of
// the events Explain shows.
var ExplainJSON = regexp.MustCompile(`"event":"(` + explainEvents + `)"`)

func (v *Vigil) writeConfig(h *vigilHost, keyFile string) error {
	role := "node"
	if h.id == "w" {
		role = "witness"
	}
	timing := ""
	if v.opts.Timing != "" {
		timing = "  timing: " + v.opts.Timing + "\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `cluster:
  name: e2e
  node: %s
  role: %s
  key_file: %s
  nodes:
    - {id: a, address: "192.0.2.11:7400"}
    - {id: b, address: "192.0.2.12:7400"}
  witnesses:
    - {id: w, address: "192.0.2.13:7400"}
%scontrol:
  realtime: %v
  rt_budget: %s
  cpus: %q
metrics:
  listen: "%s"
runtime:
  control_socket: %s
  state_dir: %s
  cgroup: %s
log:
  level: info
  format: text
`, h.id, role, keyFile, timing, v.opts.Realtime, v.opts.RTBudget, v.opts.ControlCPUs, v.opts.Metrics, h.socket, filepath.Join(h.dir, "state"), h.subtree)
	if role == "node" {
		uas, err := WriteUAS(h.dir, v.failFlag(h.id))
		if err != nil {
			return err
		}
		noiseTmp := v.noiseDir
		cue := filepath.Join(h.dir, "noise.cue")
		// The neighbour waits for its cue (a file holding the duration in
		// seconds), consumes it, and runs; "always" brings the waiting loop
		// back after each run.
		noise := fmt.Sprintf(`while [ ! -e %[1]s ]; do sleep 0.2; done; d=$(cat %[1]s); rm -f %[1]s; exec %[2]s`,
			cue, strings.Join(NoiseArgs(noiseTmp, `"$d"`), " "))
		if v.opts.HandoverGap != "" {
			fmt.Fprintf(&b, "announce:\n  handover_gap: %s\n", v.opts.HandoverGap)
		}
		indent := ""
		if v.opts.Failback != "" || v.opts.SecondService {
			fb := v.opts.Failback
			if fb == "" {
				fb = "off"
			}
			fmt.Fprintf(&b, "services:\n  - name: sip\n    processes: [sip]\n    prefer: [%s, %s]\n    failback: %s\n", Preferred, Other(Preferred), fb)
			indent = "    "
		}
		b.WriteString(indent + "vips:\n")
		for _, a := range ExtraVIPAddrs(v.opts.ExtraVIPs) {
			fmt.Fprintf(&b, "%s  - {address: %s, interface: %s}\n", indent, a, LinkName)
		}
		fmt.Fprintf(&b, "%s  - {address: %s, interface: %s}\n", indent, VIPCIDR, LinkName)
		var sip2 string
		if v.opts.SecondService {
			fmt.Fprintf(&b, "  - name: sip2\n    vips: [{address: %s/24, interface: %s}]\n    processes: [sip2]\n    prefer: [%s, %s]\n",
				VIP2, LinkName, Other(Preferred), Preferred)
			uas2, err := writeUASOn(h.dir, "uas2", filepath.Join(v.dir, h.id, "sip2.fail"), VIP2)
			if err != nil {
				return err
			}
			sip2 = fmt.Sprintf("  - name: sip2\n    command: [\"/bin/sh\", \"-c\", %q]\n    dir: %s\n    backoff: {initial: 100ms, max: 1s, fatal_after: 3}\n", uas2, h.dir)
		}
		fmt.Fprintf(&b, `processes:
  - name: sip
    command: ["/bin/sh", "-c", %q]
    dir: %s
    critical: true
    backoff: {initial: 100ms, max: 1s, fatal_after: 3}
  - name: noise
    command: ["/bin/sh", "-c", %q]
    dir: %s
    memory_max: %d
%s`, uas, h.dir, noise, h.dir, NoiseMemoryMax, sip2)
	} else if v.opts.SecondService {
		// The witness's locator serves each service it lists.
		b.WriteString("services: [{name: sip}, {name: sip2}]\n")
	}
	return os.WriteFile(h.cfg, []byte(b.String()), 0o644)
}

func (v *Vigil) failFlag(id string) string { return filepath.Join(v.dir, id, "sip.fail") }

// Start implements System.
func (v *Vigil) Start() error {
	for _, id := range []string{"a", "b", "w"} {
		if err := v.startHost(id); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for v.n.Holder() == "" {
		if time.Now().After(deadline) {
			return errorf("no node holds %s 30 s after start\n--- a:\n%s\n--- b:\n%s", VIP, tail(v.Log("a"), 3000), tail(v.Log("b"), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (v *Vigil) startHost(id string) error {
	h := v.host[id]
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return errorf("%v", err)
	}
	defer logf.Close()
	cmd := v.n.Command(id, v.opts.Bin, "supervise", "-c", h.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return errorf("start vigil on %s: %v", id, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	v.mu.Lock()
	h.cmd, h.done = cmd, done
	v.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := client.Call(h.socket, supervisor.Request{Cmd: "status"}); err == nil {
			return nil
		}
		select {
		case <-done:
			return errorf("vigil on %s exited at start:\n%s", id, tail(v.Log(id), 3000))
		default:
		}
		if time.Now().After(deadline) {
			return errorf("vigil on %s: no control socket after 15 s:\n%s", id, tail(v.Log(id), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop implements System: SIGTERM, then whatever is left of each tree is
// killed, and the floating IP removed wherever a kill left it.
func (v *Vigil) Stop() error {
	var errs []string
	for _, id := range []string{"a", "b", "w"} {
		h := v.host[id]
		v.mu.Lock()
		cmd, done := h.cmd, h.done
		h.cmd = nil
		v.mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				errs = append(errs, id+": no exit 20 s after SIGTERM")
				_ = cmd.Process.Kill()
				<-done
			}
		}
		if _, err := killTree(h.subtree, 10*time.Second); err != nil {
			errs = append(errs, err.Error())
		}
		if err := removeTree(h.subtree); err != nil {
			errs = append(errs, err.Error())
		}
	}
	_ = os.Remove(v.failFlag("a"))
	_ = os.Remove(v.failFlag("b"))
	v.n.DropVIP("a")
	v.n.DropVIP("b")
	if len(errs) > 0 {
		return errorf("stop: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Kill implements System: every process in host's tree (the supervisor
// moved itself into it at start) stopped, then SIGKILLed.
func (v *Vigil) Kill(id string) error {
	tree := v.host[id].subtree
	if v.opts.KillSparesApps && id != "w" {
		tree = filepath.Join(tree, "control")
	}
	_, err := killTree(tree, 10*time.Second)
	return err
}

// KillNodeManager implements NodeManagerKiller: SIGKILL of host id's node
// manager alone, by its pid from `vigil status`.
func (v *Vigil) KillNodeManager(id string) error {
	pid, err := v.pidOf(id, "nodemanager")
	if err != nil {
		return err
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

// KillWitness implements System.
func (v *Vigil) KillWitness() error { return v.Kill("w") }

// ClusterPorts implements Flooder: host id's node manager (7400, nodes
// only) and locator (7401) ports, as writeConfig sets them.
func (v *Vigil) ClusterPorts(id string) []netip.AddrPort {
	a := v.n.Hosts[id].Addr.Addr()
	if id == "w" {
		return []netip.AddrPort{netip.AddrPortFrom(a, 7401)}
	}
	return []netip.AddrPort{netip.AddrPortFrom(a, 7400), netip.AddrPortFrom(a, 7401)}
}

// ClusterName implements Flooder.
func (v *Vigil) ClusterName() string { return "e2e" }

// ClusterTag implements Flooder: what an eavesdropper reads off the
// cluster's datagrams.
func (v *Vigil) ClusterTag() uint64 { return protocol.ClusterTag(v.key, v.ClusterName()) }

// Status returns host id's `vigil status --json` document.
func (v *Vigil) Status(id string) (*supervisor.Status, error) {
	resp, err := client.Call(v.host[id].socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}

func (v *Vigil) pidOf(id, name string) (int, error) {
	st, err := v.Status(id)
	if err != nil {
		return 0, errorf("status of %s: %v", id, err)
	}
	for _, p := range append(append([]supervisor.ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		if p.Name == name && p.PID > 0 {
			return p.PID, nil
		}
	}
	return 0, errorf("%s on %s has no pid", name, id)
}

// Stall implements System: the node manager is stopped.
func (v *Vigil) Stall(id string, d time.Duration) error {
	pid, err := v.pidOf(id, "nodemanager")
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return errorf("SIGSTOP node manager %d: %v", pid, err)
	}
	time.Sleep(d)
	// The supervisor may have fenced (killed) it meanwhile: ESRCH is fine.
	_ = syscall.Kill(pid, syscall.SIGCONT)
	return nil
}

// Freeze implements System: the supervisor, the locator, the node manager
// and anything else in Vigil's tree on id, except the SIP server, are
// stopped together for d.
func (v *Vigil) Freeze(id string, d time.Duration) error {
	sip, err := v.pidOf(id, "sip")
	if err != nil {
		return err
	}
	pids, err := treePids(v.host[id].subtree)
	if err != nil {
		return err
	}
	var stopped []int
	for _, pid := range pids {
		if pid == sip {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && err != syscall.ESRCH {
			for _, p := range stopped {
				_ = syscall.Kill(p, syscall.SIGCONT)
			}
			return errorf("SIGSTOP %d on %s: %v", pid, id, err)
		}
		stopped = append(stopped, pid)
	}
	if len(stopped) == 0 {
		return errorf("no Vigil process to freeze on %s", id)
	}
	time.Sleep(d)
	for _, p := range stopped {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
	return nil
}

// FailApp implements System.
func (v *Vigil) FailApp(id string) error {
	if err := os.WriteFile(v.failFlag(id), nil, 0o644); err != nil {
		return errorf("%v", err)
	}
	pid, err := v.pidOf(id, "sip")
	if err != nil {
		return err
	}
	// sh exec'd sipp: the pid is the SIP server itself.
	return syscall.Kill(pid, syscall.SIGKILL)
}

// Heal implements System: the flags go and a FATAL SIP server is restarted
// the way an operator would, with `vigil restart`.
func (v *Vigil) Heal() error {
	for _, id := range []string{"a", "b"} {
		_ = os.Remove(v.failFlag(id))
		st, err := v.Status(id)
		if err != nil {
			continue // killed by the scenario
		}
		for _, p := range st.Processes {
			if p.Name == "sip" && p.State == supervisor.StateFatal {
				if _, err := client.Call(v.host[id].socket, supervisor.Request{Cmd: "restart", Name: "sip"}); err != nil {
					return errorf("restart sip on %s: %v", id, err)
				}
			}
		}
	}
	return nil
}

// Switchover implements System: `vigil switchover` on the active.
func (v *Vigil) Switchover(id string) error {
	_, err := client.Call(v.host[id].socket, supervisor.Request{Cmd: "switchover", Name: Other(id)})
	return err
}

// Preferred is the node the service of VigilOptions.Failback prefers.
const Preferred = "a"

// Preferred implements Failbacker.
func (v *Vigil) Preferred() (string, bool) { return Preferred, v.opts.Failback != "" }

// Noise implements System: the cue starts the neighbour supervised in
// host's apps group (apps/noise, memory.max NoiseMemoryMax).
func (v *Vigil) Noise(id string, d time.Duration) error {
	cue := filepath.Join(v.host[id].dir, "noise.cue")
	if err := os.WriteFile(cue+".tmp", []byte(Seconds(d)), 0o644); err != nil {
		return errorf("%v", err)
	}
	return os.Rename(cue+".tmp", cue)
}

// HeldSockets counts the sockets of host id's node manager that its
// supervisor holds open too (ctlmsg.TypeHold), by kind: packet sockets
// (the floating-IP interfaces') and netlink sockets (the kernel lease's
// nftables socket). Read from /proc: the same socket inode among both
// processes' descriptors.
func (v *Vigil) HeldSockets(id string) (packet, netlink int, err error) {
	st, err := v.Status(id)
	if err != nil {
		return 0, 0, err
	}
	nm, err := v.pidOf(id, "nodemanager")
	if err != nil {
		return 0, 0, err
	}
	sup, err := socketInodes(st.Supervisor.PID)
	if err != nil {
		return 0, 0, err
	}
	mine, err := socketInodes(nm)
	if err != nil {
		return 0, 0, err
	}
	kinds := map[string]string{}
	for _, kind := range []string{"packet", "netlink"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", nm, kind))
		if err != nil {
			return 0, 0, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// The inode is the last column of both tables.
			if f := strings.Fields(line); len(f) > 0 {
				kinds[f[len(f)-1]] = kind
			}
		}
	}
	for ino := range mine {
		if !sup[ino] {
			continue
		}
		switch kinds[ino] {
		case "packet":
			packet++
		case "netlink":
			netlink++
		}
	}
	return packet, netlink, nil
}

// socketInodes are the inodes of pid's sockets ("socket:[N]" links).
func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			out[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return out, nil
}
