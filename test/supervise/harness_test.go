// Package supervise holds end-to-end tests of `vigil supervise`: the built
// binary, run as root against the real kernel's cgroups.
package supervise

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"

	"github.com/vigil-project/vigil/internal/testtool"
	"github.com/vigil-project/vigil/internal/vigilbin"
)

var vigilBin string

func TestMain(m *testing.M) {
	vigilbin.Main(m, &vigilBin)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs vigil supervise against the real kernel's cgroups")
	}
}

// daemon is one `vigil supervise` under test.
type daemon struct {
	t       *testing.T
	dir     string
	cfgPath string
	subtree string
	socket  string
	cmd     *exec.Cmd
	log     *testtool.SyncBuffer
	done    chan struct{}
	exitErr error
	// wrap, when set, prefixes the command line (e.g. unshare).
	wrap []string
	env  []string
	// sigPid, when set, is the host pid that stop signals (the daemon
	// itself when cmd is a wrapper such as unshare).
	sigPid int
	// cluster, when set, is the body of the cluster: section; else a
	// one-node cluster on port.
	cluster string
	port    int
	// extra is YAML inserted after the cluster section (vips:, ...).
	extra string
	// realtime is control.realtime; metrics is metrics.listen.
	realtime bool
	// control is YAML added to the control: section ("  cpus: \"0\"\n").
	control string
	metrics string
	// controlGroup is runtime.control_group: "" (root only) unless a test
	// sets it, whatever groups the host has.
	controlGroup string
	// relConfig starts vigil in dir with -c vigil.yaml, a relative path.
	relConfig bool
}

func newDaemon(t *testing.T, processes string) *daemon {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	d := &daemon{
		t: t, dir: dir,
		cfgPath: filepath.Join(dir, "vigil.yaml"),
		subtree: "vigil-test-" + hex.EncodeToString(rnd[:]),
		socket:  filepath.Join(dir, "control.sock"),
		log:     &testtool.SyncBuffer{},
		port:    freePort(t),
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.writeConfig(processes)
	t.Cleanup(d.cleanup)
	return d
}

func (d *daemon) writeConfig(processes string) {
	d.t.Helper()
	cluster := d.cluster
	if cluster == "" {
		cluster = fmt.Sprintf(`  name: test
  node: a
  key_file: %s
  nodes:
    - {id: a, address: 127.0.0.1:%d}
%s`, filepath.Join(d.dir, "cluster.key"), d.port, testTiming)
	}
	cfg := fmt.Sprintf(`cluster:
%s%s
control:
  realtime: %v
%smetrics:
  listen: "%s"
runtime:
  control_socket: %s
  control_group: "%s"
  state_dir: %s
  cgroup: %s
log:
  level: debug
  format: json
processes:
%s`, cluster, d.extra, d.realtime, d.control, d.metrics, d.socket, d.controlGroup, filepath.Join(d.dir, "state"), d.subtree, processes)
	// Write-then-rename, as an operator's editor would, so a reload never
	// reads half a file.
	tmp := d.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.cfgPath); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) start() {
	d.t.Helper()
	cfg := d.cfgPath
	if d.relConfig {
		cfg = filepath.Base(d.cfgPath)
	}
	args := append(append([]string{}, d.wrap...), vigilBin, "supervise", "-c", cfg)
	d.cmd = exec.Command(args[0], args[1:]...)
	if d.relConfig {
		d.cmd.Dir = d.dir
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(os.Environ(), d.env...)
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() {
		d.exitErr = d.cmd.Wait()
		close(d.done)
	}()
	d.waitFor("control socket answers", 10*time.Second, func() bool {
		_, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
		return err == nil
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(timeout time.Duration) {
	d.t.Helper()
	if d.sigPid != 0 {
		_ = syscall.Kill(d.sigPid, syscall.SIGTERM)
	} else {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("vigil did not exit within %v of SIGTERM\n%s", timeout, d.log.String())
	}
	if d.exitErr != nil {
		d.t.Fatalf("vigil exited with %v\n%s", d.exitErr, d.log.String())
	}
}

func (d *daemon) running() bool {
	if d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// cleanup kills a daemon a failed test left running (by its PID) and removes
// whatever of its cgroup tree is left, processes included.
func (d *daemon) cleanup() {
	if d.running() {
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	if m, err := cgroup.Open(cgroup.Options{Subtree: d.subtree}); err == nil {
		_ = m.Destroy()
	}
	if d.t.Failed() {
		d.t.Logf("vigil log:\n%s", d.log.String())
	}
}

func (d *daemon) status() *supervisor.Status {
	d.t.Helper()
	resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		d.t.Fatalf("status: %v\n%s", err, d.log.String())
	}
	return resp.Status
}

func (d *daemon) proc(name string) supervisor.ProcessStatus {
	d.t.Helper()
	for _, p := range d.status().Processes {
		if p.Name == name {
			return p
		}
	}
	d.t.Fatalf("no process %q in status", name)
	return supervisor.ProcessStatus{}
}

func (d *daemon) waitFor(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, d.log.String())
		}
		if !d.running() {
			d.t.Fatalf("vigil exited (%v) while waiting for %s\n%s", d.exitErr, what, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExec waits until pid runs comm. A supervised process is "running"
// from its fork, while the shim still prepares it; the shim execs from a
// locked thread, and while that exec replaces the thread group the leader
// reads as exited: /proc/PID/cgroup shows "/" in every hierarchy.
func (d *daemon) waitExec(pid int, comm string, timeout time.Duration) {
	d.t.Helper()
	d.waitFor(fmt.Sprintf("pid %d to exec %s", pid, comm), timeout, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return err == nil && strings.TrimSpace(string(b)) == comm
	})
}

func (d *daemon) waitState(name string, state supervisor.State, timeout time.Duration) supervisor.ProcessStatus {
	d.t.Helper()
	var p supervisor.ProcessStatus
	// A process may not be in status yet (a reload just signalled is
	// applied asynchronously): keep waiting rather than fail at once.
	d.waitFor(fmt.Sprintf("%s %s", name, state), timeout, func() bool {
		for _, q := range d.status().Processes {
			if q.Name == name {
				p = q
				return p.State == state
			}
		}
		return false
	})
	return p
}

// vigil runs a CLI command against this daemon.
func (d *daemon) vigil(args ...string) (string, int) {
	cmd := exec.Command(vigilBin, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return string(out), code
}

// cgroupOf reads /proc/PID/cgroup: controller -> path.
func cgroupOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroup of %d: %v", pid, err)
	}
	return parseCgroup(string(b))
}

// parseCgroup parses the content of a /proc/PID/cgroup file.
func parseCgroup(content string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(content), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "" {
				c = "unified"
			}
			m[c] = f[2]
		}
	}
	// On a v2-only host every controller's path is the unified one.
	if u, ok := m["unified"]; ok && isV2() {
		ctrls, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		for _, c := range strings.Fields(string(ctrls)) {
			m[c] = u
		}
	}
	return m
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// State is the field after the ")" of the command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// killed says whether pid has been dealt a SIGKILL that it cannot escape:
// it is exiting (PF_EXITING in /proc/PID/stat's flags) or SIGKILL is
// pending for it, or it is gone. Such a process never runs user code
// again, which is what the supervisor's fence relies on when it removes
// the addresses of a node manager that takes long to die
// (event=fence_kill_slow).
func killed(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	// After the command name: state ppid pgrp session tty_nr tpgid flags.
	f := strings.Fields(s[i+2:])
	if len(f) < 7 || f[0] == "Z" || f[0] == "X" {
		return true
	}
	const pfExiting = 0x4
	if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
		return true
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	const sigkill = 1 << (9 - 1)
	for _, l := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && m&sigkill != 0 {
			return true
		}
	}
	return false
}

// treeDirs lists every directory of the daemon's subtree that still exists,
// in any hierarchy.
func treeDirs(subtree string) []string {
	var left []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range roots {
		_ = filepath.WalkDir(r, func(p string, de os.DirEntry, err error) error {
			if err != nil || !de.IsDir() {
				return nil
			}
			if de.Name() == subtree {
				left = append(left, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return left
}

func readPidFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// freePort finds a UDP port pair (P for the node manager, P+1 for the
// locator) nobody uses right now.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		a.Close()
		if err == nil {
			b.Close()
			return p
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}

// testTiming is generous protocol timing for tests: a loaded CI machine or
// an emulated VM must not turn scheduling noise into fences and failovers.
// The product's defaults are measured by the benchmarks, not asserted here.
const testTiming = "  timing: {token_interval: 30ms, token_timeout: 400ms, lease: 600ms, drift_margin: 50ms}\n"

// testTokenTimeout is testTiming's token_timeout: a host not scheduled for
// this long may rightly lose the token, and with it the role.
const testTokenTimeout = 400 * time.Millisecond

// killed, the helper the fence test relies on: a stopped process is not
// killed; the moment it is sent SIGKILL it is, and it stays so until
// reaped.
func TestKilledHelper(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if killed(pid) {
		t.Fatal("a running process counted as killed")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if killed(pid) {
		t.Fatal("a stopped process counted as killed")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !killed(pid) {
		t.Fatal("a process just sent SIGKILL not counted as killed")
	}
	_ = cmd.Wait()
	if !killed(pid) {
		t.Fatal("a reaped process not counted as killed")
	}
}
