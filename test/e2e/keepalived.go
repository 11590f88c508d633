package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/cgroup"
)

// Keepalived is the System for keepalived (the Debian package, 2.2.7), set
// up the way an operator of it would put one VRRP instance in front of a
// SIP server, with the same announcements and the same scheduling priority
// as Vigil at its defaults:
//
//   - both nodes state BACKUP with nopreempt, priorities a=150, b=100, and a
//     started first, so a is the master. nopreempt because Vigil does not
//     fail back either: with preemption, a node whose link or SIP server
//     comes back takes the address back at once, a second outage no Vigil
//     scenario has. (A master still yields to a higher-priority advert
//     whatever nopreempt says, so a stalled master that resumes takes the
//     role back, as VRRP specifies.)
//   - multicast adverts (keepalived's default; the switch floods them, it
//     does no snooping), vrrp_version 3 so that advert_int can be 0.01.
//   - 3 gratuitous ARPs, no second burst, no refresh, as Vigil's netfloat
//     defaults, but back to back: with vrrp_garp_interval 0.1, 2.2.7 put
//     exactly 2 on the wire whatever vrrp_garp_master_repeat said (1, 3, 5).
//   - the VRRP process at SCHED_RR priority 10 with its memory locked
//     (vrrp_rt_priority, vrrp_no_swap), as Vigil's control.realtime, with
//     a realtime budget on its cgroup like Vigil's control groups.
//   - the SIP server tracked by a vrrp_script (is a socket bound to
//     VIP:5060 in the node's namespace?) every second, 2.2.7's shortest
//     interval; a failing check puts the instance in FAULT, which releases
//     the address with a priority-0 advert so the peer takes over at once.
//   - keepalived does not supervise applications; the SIP server is
//     restarted 100 ms after it exits, as systemd's Restart=always with
//     RestartSec=100ms would.
//
// Everything of a node (keepalived's processes, its scripts, the SIP
// server) runs in that node's cgroup, created below this process's own, so
// Kill can SIGKILL all of it at once. keepalived gets its own pid files
// and logs to a file: it touches nothing outside the node's namespace and
// the temporary directory.
type Keepalived struct {
	t      TB
	n      *Net
	advert time.Duration
	dir    string // configs, logs (in memory)
	// noiseDir, on the disk, is where the noisy neighbour writes.
	noiseDir string
	hosts    map[string]*kaHost

	mu     sync.Mutex
	noises []*noiseRun
}

// kaHost is one node's keepalived and SIP server.
type kaHost struct {
	id       string
	priority int
	dir      string
	cg       *cgroup.Manager
	apps     *cgroup.Group // apps: everything of the node
	kaGroup  *cgroup.Group // apps/keepalived: keepalived and its scripts
	sipGroup *cgroup.Group // apps/sip: the SIP server

	conf, pidFile, vrrpPidFile, checkerPidFile, bfdPidFile string
	logPath, sipLogPath, failFlag, uas                     string

	mu       sync.Mutex
	rtWarned bool     // the missing realtime budget was reported
	ka       *kaProc  // running keepalived, nil if none
	sip      *sipLoop // running SIP server loop, nil if none
}

// kaProc is one run of keepalived.
type kaProc struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once reaped
	logFrom int64         // size of the log when it started
}

// sipLoop runs the SIP server and restarts it after it exits.
type sipLoop struct {
	mu      sync.Mutex
	stopped bool
	stop    chan struct{}
	done    chan struct{}
}

// halt ends the loop's restarts. Under l.mu, so that no restart begins
// after it returns: the caller then kills the server for good.
func (l *sipLoop) halt() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
}

// noiseRun is one noisy neighbour.
type noiseRun struct {
	g    *cgroup.Group
	done chan struct{}
}

const (
	kaPriorityA = 150
	kaPriorityB = 100
	// kaSIPRestartDelay is the SIP server's restart delay (RestartSec).
	kaSIPRestartDelay = 100 * time.Millisecond
	// kaRTBudgetUs is the realtime budget of a node's keepalived group per
	// cpu.rt_period_us, where the kernel has CONFIG_RT_GROUP_SCHED: a
	// C VRRP process needs far less than Vigil's Go processes (300 ms).
	kaRTBudgetUs   = 100_000
	kaStopTimeout  = 5 * time.Second
	kaStartTimeout = 20 * time.Second
)

// placeScript moves the shell into the cgroup.procs files given before
// "--" and execs the rest, so the command runs in the group from its first
// instruction (cgroup v1 has no placement at spawn).
const placeScript = `while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"`

// NewKeepalived prepares keepalived on nodes a and b of n with advert
// interval advert (a multiple of 10 ms, as VRRPv3 counts centiseconds).
// It skips the test when keepalived, sipp or ss are missing, unless the
// environment variable CI is set, in which case it fails it. Cleanup stops
// everything and removes the cgroups.
func NewKeepalived(t TB, n *Net, advert time.Duration) *Keepalived {
	t.Helper()
	for _, need := range [][2]string{{"keepalived", "keepalived"}, {"sipp", "sip-tester"}, {"ss", "iproute2"}, {"nsenter", "util-linux"}} {
		if _, err := exec.LookPath(need[0]); err != nil {
			msg := fmt.Sprintf("e2e: %s not installed (Debian package %s)", need[0], need[1])
			if os.Getenv("CI") != "" {
				t.Fatalf("%s", msg)
			}
			t.Skip(msg)
		}
	}
	if advert < 10*time.Millisecond || advert > 40950*time.Millisecond || advert%(10*time.Millisecond) != 0 {
		t.Fatalf("e2e: keepalived advert interval %v: must be a multiple of 10ms in [10ms, 40.95s]", advert)
	}
	ss, _ := exec.LookPath("ss")
	sweepStale(t) // what a killed test binary left, keepalived included
	k := &Keepalived{t: t, n: n, advert: advert, hosts: map[string]*kaHost{},
		dir: tempDir(t, "vigil-e2e-keepalived-"), noiseDir: diskTempDir(t, "vigil-e2e-keepalived-noise-")}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("e2e: random: %v", err)
	}
	tag := fmt.Sprintf("e2e-keepalived-%s.p%d", hex.EncodeToString(rnd[:]), os.Getpid())
	t.Cleanup(func() {
		if err := k.Stop(); err != nil {
			t.Errorf("e2e: keepalived cleanup: %v", err)
		}
		for _, h := range k.hosts {
			if err := h.cg.Destroy(); err != nil {
				t.Errorf("e2e: keepalived cleanup: %v", err)
			}
		}
	})
	for _, id := range nodeIDs {
		h, err := k.newHost(id, tag+"-"+id, ss)
		if err != nil {
			t.Fatalf("%v", err)
		}
		k.hosts[id] = h
	}
	return k
}

func (k *Keepalived) newHost(id, subtree, ss string) (*kaHost, error) {
	dir := filepath.Join(k.dir, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, errorf("keepalived %s: %w", id, err)
	}
	h := &kaHost{
		id:             id,
		priority:       kaPriorityA,
		dir:            dir,
		conf:           filepath.Join(dir, "keepalived.conf"),
		pidFile:        filepath.Join(dir, "keepalived.pid"),
		vrrpPidFile:    filepath.Join(dir, "vrrp.pid"),
		checkerPidFile: filepath.Join(dir, "checkers.pid"),
		bfdPidFile:     filepath.Join(dir, "bfd.pid"),
		logPath:        filepath.Join(dir, "keepalived.log"),
		sipLogPath:     filepath.Join(dir, "sip.log"),
		failFlag:       filepath.Join(dir, "sip.fail"),
	}
	if id == "b" {
		h.priority = kaPriorityB
	}
	uas, err := WriteUAS(dir, h.failFlag)
	if err != nil {
		return nil, err
	}
	h.uas = uas
	// A socket bound to VIP:5060 in this namespace is the SIP server up.
	check := fmt.Sprintf("#!/bin/sh\n[ -n \"$(%s -Hnlu src %s:%d)\" ]\n", ss, VIP, SIPPort)
	if err := os.WriteFile(filepath.Join(dir, "check_sip.sh"), []byte(check), 0o755); err != nil {
		return nil, errorf("keepalived %s: %w", id, err)
	}
	if h.cg, err = cgroup.Open(cgroup.Options{Subtree: subtree}); err != nil {
		return nil, errorf("keepalived %s: %w", id, err)
	}
	if h.apps, err = h.cg.Group("apps"); err == nil {
		if h.kaGroup, err = h.cg.Group("apps/keepalived"); err == nil {
			h.sipGroup, err = h.cg.Group("apps/sip")
		}
	}
	if err != nil {
		_ = h.cg.Destroy()
		return nil, errorf("keepalived %s: %w", id, err)
	}
	return h, nil
}

// Label implements System.
func (k *Keepalived) Label() string {
	return fmt.Sprintf("system=keepalived advert_ms=%d", k.advert.Milliseconds())
}

// config is keepalived.conf for h.
func (k *Keepalived) config(h *kaHost) string {
	return fmt.Sprintf(`# Vigil e2e harness: keepalived on node %[1]s.
global_defs {
	router_id e2e_%[1]s
	vrrp_version 3
	script_user root
	enable_script_security
	vrrp_garp_master_repeat 3
	vrrp_garp_master_delay 0
	vrrp_garp_master_refresh 0
	vrrp_rt_priority 10
	vrrp_no_swap
}

vrrp_script sip {
	script "%[2]s"
	interval 1
	timeout 1
	fall 1
	rise 1
}

vrrp_instance VI_1 {
	state BACKUP
	nopreempt
	interface %[3]s
	virtual_router_id 51
	priority %[4]d
	advert_int %[5]s
	virtual_ipaddress {
		%[6]s dev %[3]s
	}
	track_script {
		sip
	}
}
`, h.id, filepath.Join(h.dir, "check_sip.sh"), LinkName, h.priority,
		strconv.FormatFloat(k.advert.Seconds(), 'f', -1, 64), VIPCIDR)
}

// command returns argv run in host's namespace and in group g from its
// first instruction.
func (k *Keepalived) command(host string, g *cgroup.Group, argv ...string) *exec.Cmd {
	inner := k.n.Command(host, argv[0], argv[1:]...)
	args := []string{"-c", placeScript, "sh"}
	var dirs []string
	for _, d := range g.Dirs() {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
			args = append(args, filepath.Join(d, "cgroup.procs"))
		}
	}
	args = append(args, "--")
	args = append(args, inner.Args...)
	return exec.Command("/bin/sh", args...)
}

// Start implements System: the SIP servers, then keepalived on a until it
// holds the address, then on b until it is a backup.
func (k *Keepalived) Start() error {
	if err := k.start(); err != nil {
		// Leave nothing running: the caller stops only what started.
		return errors.Join(err, k.Stop())
	}
	return nil
}

func (k *Keepalived) start() error {
	deadline := time.Now().Add(kaStartTimeout)
	for _, id := range nodeIDs {
		h := k.hosts[id]
		k.n.DropVIP(id)
		if err := os.Remove(h.failFlag); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errorf("keepalived %s: %w", id, err)
		}
		if err := k.startSIP(h); err != nil {
			return err
		}
	}
	// keepalived would start in FAULT (and log it) while no SIP server
	// listens yet: wait for both.
	for _, id := range nodeIDs {
		if err := k.waitSIP(id, deadline); err != nil {
			return err
		}
	}
	for _, id := range nodeIDs {
		h := k.hosts[id]
		if err := k.startKeepalived(h); err != nil {
			return err
		}
		if err := k.waitState(h, id == "a", deadline); err != nil {
			return err
		}
	}
	if hd := k.n.Holder(); hd != "a" {
		return errorf("keepalived: holder after start is %q, want a\n--- a:\n%s\n--- b:\n%s", hd, k.Log("a"), k.Log("b"))
	}
	return nil
}

// waitSIP waits until host's SIP server listens.
func (k *Keepalived) waitSIP(id string, deadline time.Time) error {
	h := k.hosts[id]
	for {
		if k.n.Command(id, filepath.Join(h.dir, "check_sip.sh")).Run() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(h.sipLogPath)
			return errorf("keepalived %s: SIP server not listening on %s:%d: %s", id, VIP, SIPPort, tail(string(b), 800))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits until h is master (holds the address) or backup, by its
// log since it started.
func (k *Keepalived) waitState(h *kaHost, master bool, deadline time.Time) error {
	want := "Entering BACKUP STATE"
	if master {
		want = "Entering MASTER STATE"
	}
	h.mu.Lock()
	p := h.ka
	h.mu.Unlock()
	for {
		if p != nil && strings.Contains(k.logSince(h, p.logFrom), want) && (!master || k.n.Holds(h.id)) {
			return nil
		}
		if p != nil {
			select {
			case <-p.done:
				return errorf("keepalived %s exited during start:\n%s", h.id, k.Log(h.id))
			default:
			}
		}
		if time.Now().After(deadline) {
			return errorf("keepalived %s: no %q within %v (holder %q)\n--- a:\n%s\n--- b:\n%s",
				h.id, want, kaStartTimeout, k.n.Holder(), k.Log("a"), k.Log("b"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (k *Keepalived) logSince(h *kaHost, off int64) string {
	b, err := os.ReadFile(h.logPath)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// Log returns the tail of host's keepalived log, for failure messages.
func (k *Keepalived) Log(host string) string {
	h, ok := k.hosts[host]
	if !ok {
		return ""
	}
	b, err := os.ReadFile(h.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(string(b), 4000)
}

// startKeepalived writes h's configuration and starts keepalived.
func (k *Keepalived) startKeepalived(h *kaHost) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ka != nil {
		return errorf("keepalived %s: already running", h.id)
	}
	if err := os.WriteFile(h.conf, []byte(k.config(h)), 0o644); err != nil {
		return errorf("keepalived %s: %w", h.id, err)
	}
	// After a SIGKILL the pid files stay, and keepalived refuses to start
	// ("daemon is already running") while a pid in them exists, which
	// includes an orphaned child that init has not reaped yet (seconds
	// here, where init is not systemd). Nothing of ours runs any more.
	for _, f := range []string{h.pidFile, h.vrrpPidFile, h.checkerPidFile, h.bfdPidFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errorf("keepalived %s: %w", h.id, err)
		}
	}
	logf, err := os.OpenFile(h.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return errorf("keepalived %s: %w", h.id, err)
	}
	defer logf.Close()
	st, err := logf.Stat()
	if err != nil {
		return errorf("keepalived %s: %w", h.id, err)
	}
	fmt.Fprintf(logf, "=== e2e: starting keepalived at %s\n", time.Now().Format(time.RFC3339Nano))
	// Each start: the budget may have been taken by others (the kernel
	// refuses more than the parent's in all children) and freed since.
	// Not applicable (cgroup v2, no CONFIG_RT_GROUP_SCHED) means no budget
	// is needed; an error means none could be had.
	if na, err := h.kaGroup.Apply(cgroup.Resources{RTRuntimeUs: kaRTBudgetUs}); err != nil || len(na) > 0 {
		fmt.Fprintf(logf, "=== e2e: realtime budget: %v %v\n", err, na)
		// keepalived then logs "cannot raise priority" and runs
		// SCHED_OTHER: the comparison with a realtime Vigil is less fair.
		if err != nil && !h.rtWarned {
			h.rtWarned = true
			k.t.Logf("e2e: keepalived %s: no realtime budget (%v %v): its VRRP process runs SCHED_OTHER", h.id, err, na)
		}
	}
	// -n: stay in the foreground (our child, so we reap it); -l -G: log to
	// the console only, not to the machine's syslog; own pid files so
	// nothing under /run is used or checked.
	cmd := k.command(h.id, h.kaGroup, "keepalived", "-n", "-l", "-G", "-D",
		"-f", h.conf, "-p", h.pidFile, "-r", h.vrrpPidFile, "-c", h.checkerPidFile, "-b", h.bfdPidFile)
	cmd.Dir = h.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return errorf("keepalived %s: start: %w", h.id, err)
	}
	p := &kaProc{cmd: cmd, done: make(chan struct{}), logFrom: st.Size()}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	h.ka = p
	return nil
}

// stopKeepalived ends h's keepalived as `systemctl stop` would: SIGTERM
// (it then drops the address and sends a priority-0 advert), SIGKILL to
// what is left after kaStopTimeout.
func (k *Keepalived) stopKeepalived(h *kaHost) error {
	h.mu.Lock()
	p := h.ka
	h.ka = nil
	h.mu.Unlock()
	if p == nil {
		return nil
	}
	var errs []error
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, errorf("keepalived %s: SIGTERM: %w", h.id, err))
	}
	select {
	case <-p.done:
	case <-time.After(kaStopTimeout):
		errs = append(errs, errorf("keepalived %s: still running %v after SIGTERM, killed\n%s", h.id, kaStopTimeout, k.Log(h.id)))
	}
	// Its children, whatever the parent did with them.
	if err := h.kaGroup.Kill(); err != nil {
		errs = append(errs, errorf("keepalived %s: %w", h.id, err))
	}
	<-p.done
	return errors.Join(errs...)
}

// startSIP starts h's SIP server loop.
func (k *Keepalived) startSIP(h *kaHost) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sip != nil {
		return errorf("keepalived %s: SIP server already running", h.id)
	}
	logf, err := os.OpenFile(h.sipLogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return errorf("keepalived %s: %w", h.id, err)
	}
	l := &sipLoop{stop: make(chan struct{}), done: make(chan struct{})}
	h.sip = l
	go func() {
		defer close(l.done)
		defer logf.Close()
		for {
			l.mu.Lock()
			if l.stopped {
				l.mu.Unlock()
				return
			}
			cmd := k.command(h.id, h.sipGroup, "/bin/sh", "-c", h.uas)
			cmd.Dir = h.dir
			cmd.Stdout, cmd.Stderr = logf, logf
			err := cmd.Start()
			l.mu.Unlock()
			if err != nil {
				fmt.Fprintf(logf, "e2e: start SIP server: %v\n", err)
			} else {
				err = cmd.Wait()
				fmt.Fprintf(logf, "e2e: %s SIP server exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
			}
			select {
			case <-l.stop:
				return
			case <-time.After(kaSIPRestartDelay):
			}
		}
	}()
	return nil
}

// stopSIP ends h's SIP server loop and kills the server.
func (k *Keepalived) stopSIP(h *kaHost) error {
	h.mu.Lock()
	l := h.sip
	h.sip = nil
	h.mu.Unlock()
	if l == nil {
		return nil
	}
	l.halt()
	err := h.sipGroup.Kill()
	<-l.done
	if err != nil {
		return errorf("keepalived %s: %w", h.id, err)
	}
	return nil
}

// Stop implements System.
func (k *Keepalived) Stop() error {
	var errs []error
	for _, id := range nodeIDs {
		h, ok := k.hosts[id]
		if !ok {
			continue // NewKeepalived failed before making it
		}
		errs = append(errs, k.stopKeepalived(h), k.stopSIP(h))
		// Scripts or servers started while stopping.
		if err := h.apps.Kill(); err != nil {
			errs = append(errs, errorf("keepalived %s: %w", id, err))
		}
	}
	errs = append(errs, k.stopNoise())
	for _, id := range nodeIDs {
		k.n.DropVIP(id)
	}
	return errors.Join(errs...)
}

func (k *Keepalived) host(id string) (*kaHost, error) {
	h, ok := k.hosts[id]
	if !ok {
		return nil, errorf("keepalived: no node %q", id)
	}
	return h, nil
}

// Kill implements System: SIGKILL for every process of the node at once
// (its cgroup frozen first, so keepalived cannot respawn a child). The
// address stays on the interface, as after a real crash.
func (k *Keepalived) Kill(host string) error {
	h, err := k.host(host)
	if err != nil {
		return err
	}
	h.mu.Lock()
	p, l := h.ka, h.sip
	h.ka, h.sip = nil, nil
	h.mu.Unlock()
	if l != nil {
		l.halt()
	}
	err = h.apps.Kill()
	if l != nil {
		<-l.done
	}
	if p != nil {
		<-p.done
	}
	if err != nil {
		return errorf("keepalived %s: kill: %w", host, err)
	}
	return nil
}

// VRRPPid is the pid of host's VRRP process, the one that sends and
// receives the adverts.
func (k *Keepalived) VRRPPid(host string) (int, error) {
	h, err := k.host(host)
	if err != nil {
		return 0, err
	}
	return k.vrrpPid(h)
}

// Pids is every process in host's keepalived group at this instant:
// keepalived's parent, its VRRP process and a check script while one runs.
func (k *Keepalived) Pids(host string) ([]int, error) {
	h, err := k.host(host)
	if err != nil {
		return nil, err
	}
	pids, err := h.kaGroup.Procs()
	if err != nil {
		return nil, errorf("keepalived %s: %w", host, err)
	}
	return pids, nil
}

// vrrpPid is the pid of h's VRRP process, checked to be in h's group.
func (k *Keepalived) vrrpPid(h *kaHost) (int, error) {
	b, err := os.ReadFile(h.vrrpPidFile)
	if err != nil {
		return 0, errorf("keepalived %s: VRRP pid: %w", h.id, err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, errorf("keepalived %s: VRRP pid file %s: %w", h.id, h.vrrpPidFile, err)
	}
	procs, err := h.kaGroup.Procs()
	if err != nil {
		return 0, errorf("keepalived %s: %w", h.id, err)
	}
	if !slices.Contains(procs, pid) {
		return 0, errorf("keepalived %s: VRRP pid %d is not running in %s", h.id, pid, h.kaGroup.Path())
	}
	return pid, nil
}

// Stall implements System: SIGSTOP of the VRRP process, which sends the
// adverts, for d.
func (k *Keepalived) Stall(host string, d time.Duration) error {
	h, err := k.host(host)
	if err != nil {
		return err
	}
	pid, err := k.vrrpPid(h)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return errorf("keepalived %s: SIGSTOP %d: %w", host, pid, err)
	}
	time.Sleep(d)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return errorf("keepalived %s: SIGCONT %d: %w", host, pid, err)
	}
	return nil
}

// Freeze implements System: keepalived's parent and its VRRP process are
// stopped together for d (the SIP server keeps running).
func (k *Keepalived) Freeze(host string, d time.Duration) error {
	h, err := k.host(host)
	if err != nil {
		return err
	}
	vrrp, err := k.vrrpPid(h)
	if err != nil {
		return err
	}
	h.mu.Lock()
	p := h.ka
	h.mu.Unlock()
	if p == nil {
		return errorf("keepalived %s: not running", host)
	}
	pids := []int{p.cmd.Process.Pid, vrrp}
	for i, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			for _, q := range pids[:i] {
				_ = syscall.Kill(q, syscall.SIGCONT)
			}
			return errorf("keepalived %s: SIGSTOP %d: %w", host, pid, err)
		}
	}
	time.Sleep(d)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	return nil
}

// FailApp implements System: with the fail flag present every restart of
// the SIP server exits at once.
func (k *Keepalived) FailApp(host string) error {
	h, err := k.host(host)
	if err != nil {
		return err
	}
	if err := os.WriteFile(h.failFlag, nil, 0o644); err != nil {
		return errorf("keepalived %s: %w", host, err)
	}
	if err := h.sipGroup.Kill(); err != nil {
		return errorf("keepalived %s: %w", host, err)
	}
	return nil
}

// Heal implements System.
func (k *Keepalived) Heal() error {
	var errs []error
	for _, id := range nodeIDs {
		if err := os.Remove(k.hosts[id].failFlag); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, errorf("keepalived %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Switchover implements System the way keepalived's operators plan one
// with nopreempt: restart keepalived on the master (`systemctl restart
// keepalived`). Stopping, it drops the address and sends a priority-0
// advert, on which the backup takes over after its skew time (a fraction
// of an advert interval) rather than the master-down interval; started
// again, it stays backup because of nopreempt. Lowering the master's
// priority and reloading (SIGHUP) moves nothing with nopreempt: the backup
// ignores lower-priority adverts and the master keeps its role. It returns
// once keepalived runs again on host.
func (k *Keepalived) Switchover(host string) error {
	h, err := k.host(host)
	if err != nil {
		return err
	}
	if err := k.stopKeepalived(h); err != nil {
		return err
	}
	return k.startKeepalived(h)
}

// KillWitness implements System: keepalived has no witness.
func (k *Keepalived) KillWitness() error { return ErrNotApplicable }

// Noise implements System: the noisy neighbour as a keepalived operator
// would run it next to the SIP server, a unit in its own memory-limited
// group, in host's namespace. It returns at once.
func (k *Keepalived) Noise(host string, d time.Duration) error {
	if _, err := k.host(host); err != nil {
		return err
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return errorf("keepalived noise: %w", err)
	}
	cg, err := cgroup.Open(cgroup.Options{Subtree: fmt.Sprintf("e2e-noise-%s.p%d", hex.EncodeToString(rnd[:]), os.Getpid())})
	if err != nil {
		return errorf("keepalived noise: %w", err)
	}
	fail := func(err error) error {
		_ = cg.Destroy()
		return errorf("keepalived noise on %s: %w", host, err)
	}
	g, err := cg.Group("apps/noise")
	if err != nil {
		return fail(err)
	}
	if na, err := g.Apply(cgroup.Resources{MemoryMax: NoiseMemoryMax}); err != nil {
		return fail(err)
	} else if len(na) > 0 {
		return fail(fmt.Errorf("memory limit not applied: %v", na))
	}
	tmp, err := os.MkdirTemp(k.noiseDir, "run-")
	if err != nil {
		return fail(err)
	}
	argv := NoiseArgs(tmp, Seconds(d))
	cmd := k.command(host, g, argv...)
	logf, err := os.OpenFile(filepath.Join(k.dir, "noise-"+host+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fail(err)
	}
	r := &noiseRun{g: g, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		// stress-ng's workers, should any outlive it.
		if err := cg.Destroy(); err != nil {
			k.t.Logf("e2e: keepalived noise cleanup: %v", err)
		}
		_ = os.RemoveAll(tmp)
		close(r.done)
	}()
	k.mu.Lock()
	k.noises = append(k.noises, r)
	k.mu.Unlock()
	return nil
}

// stopNoise ends every noisy neighbour still running.
func (k *Keepalived) stopNoise() error {
	k.mu.Lock()
	rs := k.noises
	k.noises = nil
	k.mu.Unlock()
	var errs []error
	for _, r := range rs {
		select {
		case <-r.done:
			continue
		default:
		}
		// The waiting goroutine then removes the group.
		if err := r.g.Kill(); err != nil {
			errs = append(errs, errorf("keepalived noise: %w", err))
		}
		<-r.done
	}
	return errors.Join(errs...)
}
