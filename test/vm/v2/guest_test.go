package v2

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/testtool"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// The tests in this file run inside the VM only (run.sh sets VIGIL_VM_GUEST
// and VIGIL_BIN): they own the guest's whole cgroup v2 hierarchy, create
// cgroups at its root and assert what only v2 has.

const cgroot = "/sys/fs/cgroup"

func needGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("VIGIL_VM_GUEST") != "1" {
		t.Skip("runs inside the cgroup v2 VM only (test/vm/v2/run.sh)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("guest tests need root")
	}
	if _, err := os.Stat(filepath.Join(cgroot, "cgroup.controllers")); err != nil {
		t.Fatalf("no cgroup v2 at %s: %v", cgroot, err)
	}
	if os.Getenv("VIGIL_BIN") == "" {
		t.Fatal("VIGIL_BIN not set")
	}
}

// vigild is one `vigil supervise` under test.
type vigild struct {
	t       *testing.T
	dir     string
	subtree string
	socket  string
	cmd     *exec.Cmd
	log     *testtool.SyncBuffer
	done    chan struct{}
	exitErr error
}

func newVigild(t *testing.T, sections string) *vigild {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	d := &vigild{t: t, dir: t.TempDir(), subtree: "vmv2-" + hex.EncodeToString(rnd[:]), log: &testtool.SyncBuffer{}}
	d.socket = filepath.Join(d.dir, "control.sock")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(d.dir, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`cluster:
  name: test
  node: a
  key_file: %s
  nodes:
    - {id: a, address: 127.0.0.1:17400}
metrics:
  listen: ""
runtime:
  control_socket: %s
  state_dir: %s
  cgroup: %s
log:
  level: debug
  format: json
%s`, keyFile, d.socket, filepath.Join(d.dir, "state"), d.subtree, sections)
	if err := os.WriteFile(filepath.Join(d.dir, "vigil.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.running() {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("vigil log:\n%s", d.log.String())
		}
	})
	return d
}

// start runs vigil; sys, when set, places it (e.g. UseCgroupFD).
func (d *vigild) start(sys *syscall.SysProcAttr) {
	d.t.Helper()
	d.cmd = exec.Command(os.Getenv("VIGIL_BIN"), "supervise", "-c", filepath.Join(d.dir, "vigil.yaml"))
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = sys
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() {
		d.exitErr = d.cmd.Wait()
		close(d.done)
	}()
	d.waitFor("control socket", 20*time.Second, func() bool {
		_, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
		return err == nil
	})
}

func (d *vigild) running() bool {
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

func (d *vigild) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("vigil did not exit within 30s of SIGTERM")
	}
	if d.exitErr != nil {
		d.t.Fatalf("vigil exited with %v", d.exitErr)
	}
}

func (d *vigild) waitFor(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		if !d.running() {
			d.t.Fatalf("vigil exited (%v) while waiting for %s", d.exitErr, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *vigild) proc(name string) supervisor.ProcessStatus {
	d.t.Helper()
	resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		d.t.Fatalf("status: %v", err)
	}
	for _, p := range resp.Status.Processes {
		if p.Name == name {
			return p
		}
	}
	d.t.Fatalf("no process %q in status", name)
	return supervisor.ProcessStatus{}
}

func (d *vigild) waitRunning(name string) supervisor.ProcessStatus {
	d.t.Helper()
	var p supervisor.ProcessStatus
	d.waitFor(name+" running", 20*time.Second, func() bool {
		p = d.proc(name)
		return p.State == supervisor.StateRunning && p.PID > 0
	})
	return p
}

// cgroupV2 is the unified path of pid from /proc/PID/cgroup ("0::/a/b").
func cgroupV2(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatalf("pid %d: no v2 line in %q", pid, b)
	return ""
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// wantFile asserts the content of a cgroup interface file.
func wantFile(t *testing.T, path, want string) {
	t.Helper()
	if got := readTrim(t, path); got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}

// wantControllers asserts that dir enables, for its children, every one of
// Vigil's controllers the guest kernel offers.
func wantControllers(t *testing.T, dir string) {
	t.Helper()
	on := strings.Fields(readTrim(t, filepath.Join(dir, "cgroup.subtree_control")))
	avail := strings.Fields(readTrim(t, filepath.Join(cgroot, "cgroup.controllers")))
	for _, c := range []string{"cpu", "cpuset", "memory", "pids"} {
		if !slices.Contains(avail, c) {
			t.Fatalf("guest kernel lacks the %s controller: %v", c, avail)
		}
		if !slices.Contains(on, c) {
			t.Errorf("%s/cgroup.subtree_control = %v, lacks %s", dir, on, c)
		}
	}
}

// watcher records IN_MODIFY on cgroup interface files: a write(2) to a
// kernfs file raises it like on any file, so it shows which files the
// supervisor wrote and which it did not.
type watcher struct {
	fd    int
	names map[int32]string
}

func newWatcher(t *testing.T, files ...string) *watcher {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify_init1: %v", err)
	}
	w := &watcher{fd: fd, names: map[int32]string{}}
	t.Cleanup(func() { unix.Close(fd) })
	for _, f := range files {
		wd, err := unix.InotifyAddWatch(fd, f, unix.IN_MODIFY)
		if err != nil {
			t.Fatalf("inotify watch %s: %v", f, err)
		}
		w.names[int32(wd)] = f
	}
	return w
}

// modified drains the queued events and counts IN_MODIFY per file.
func (w *watcher) modified(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return out
		}
		if err != nil {
			t.Fatalf("read inotify: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			if mask&unix.IN_MODIFY != 0 {
				out[w.names[wd]]++
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}

const treeSections = `control:
  realtime: false
  cpu_weight: 5000
  memory_min: 32Mi
apps:
  cpu_weight: 200
  cpu_max: "150%%"
  memory_max: 512Mi
  pids_max: 300
processes:
  - name: app
    command: [/bin/sh, -c, "(/bin/sleep 0.05 &) ; exec /bin/sleep 1000"]
    memory_max: 64Mi
    pids_max: 20
  - name: stubborn
    command: [/bin/sh, -c, "trap '' TERM; echo $$ > %s; while :; do sleep 0.1; done"]
    stop_timeout: 500ms
`

// On v2, with the guest's root as the own cgroup: the supervisor moves into
// control/supervisor, the controllers are enabled down the tree, the
// configured values are written, every process is placed at clone time
// (CLONE_INTO_CGROUP: nothing writes its cgroup.procs), a stop that needs a
// kill uses cgroup.kill, and the whole tree is gone afterwards.
func TestGuestTreePlacementKillCleanup(t *testing.T) {
	needGuest(t)
	pidfile := filepath.Join(t.TempDir(), "stubborn.pid")
	d := newVigild(t, fmt.Sprintf(treeSections, pidfile))
	d.start(nil)
	base := filepath.Join(cgroot, d.subtree)
	app := d.waitRunning("app")
	stub := d.waitRunning("stubborn")
	// Its SIGTERM trap is set once it has written its pid.
	d.waitFor("stubborn's pid file", 20*time.Second, func() bool {
		b, err := os.ReadFile(pidfile)
		return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(stub.PID)
	})

	if got, want := cgroupV2(t, d.cmd.Process.Pid), "/"+d.subtree+"/control/supervisor"; got != want {
		t.Errorf("supervisor in %q, want %q", got, want)
	}
	if got, want := cgroupV2(t, app.PID), "/"+d.subtree+"/apps/app"; got != want {
		t.Errorf("app in %q, want %q", got, want)
	}
	if got, want := cgroupV2(t, stub.PID), "/"+d.subtree+"/apps/stubborn"; got != want {
		t.Errorf("stubborn in %q, want %q", got, want)
	}
	for _, dir := range []string{cgroot, base, filepath.Join(base, "control"), filepath.Join(base, "apps")} {
		wantControllers(t, dir)
	}
	wantFile(t, filepath.Join(base, "control/cpu.weight"), "5000")
	wantFile(t, filepath.Join(base, "control/memory.min"), strconv.Itoa(32<<20))
	wantFile(t, filepath.Join(base, "control/memory.low"), strconv.Itoa(32<<20))
	wantFile(t, filepath.Join(base, "apps/cpu.weight"), "200")
	wantFile(t, filepath.Join(base, "apps/cpu.max"), "150000 100000")
	wantFile(t, filepath.Join(base, "apps/memory.max"), strconv.Itoa(512<<20))
	wantFile(t, filepath.Join(base, "apps/pids.max"), "300")
	wantFile(t, filepath.Join(base, "apps/app/memory.max"), strconv.Itoa(64<<20))
	wantFile(t, filepath.Join(base, "apps/app/pids.max"), "20")

	// Placement at spawn: kill -9 the app and watch its group while the
	// supervisor starts the next one. The barrier fallback would write
	// apps/app/cgroup.procs; CLONE_INTO_CGROUP writes nothing.
	procs := filepath.Join(base, "apps/app/cgroup.procs")
	w := newWatcher(t, procs)
	if err := syscall.Kill(app.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var again supervisor.ProcessStatus
	d.waitFor("app restarted", 20*time.Second, func() bool {
		again = d.proc("app")
		return again.State == supervisor.StateRunning && again.PID > 0 && again.PID != app.PID
	})
	if got := cgroupV2(t, again.PID); got != "/"+d.subtree+"/apps/app" {
		t.Errorf("restarted app in %q", got)
	}
	if n := w.modified(t)[procs]; n != 0 {
		t.Errorf("%s written %d times on restart: the process was moved after clone, not placed by CLONE_INTO_CGROUP", procs, n)
	}
	// Control: a write to cgroup.procs (a no-op move of the app into its
	// own group) does show, so the silence above means something.
	if err := os.WriteFile(procs, []byte(strconv.Itoa(again.PID)), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := w.modified(t)[procs]; n == 0 {
		t.Fatalf("inotify saw no IN_MODIFY on %s after our own write: the placement check proves nothing", procs)
	}
	// The fallback is logged at debug level: the app's orphaned sleep,
	// reaped by the supervisor, shows that debug lines are logged at all.
	d.waitFor("a debug line (orphan_reaped)", 20*time.Second, func() bool {
		return strings.Contains(d.log.String(), `"level":"DEBUG","msg":"reaped orphan"`)
	})
	if strings.Contains(d.log.String(), "CLONE_INTO_CGROUP refused") {
		t.Error("the supervisor fell back to placing before exec")
	}

	// Stop: stubborn ignores SIGTERM, so after its stop_timeout the group
	// is killed, through cgroup.kill and not the freeze fallback.
	kill := filepath.Join(base, "apps/stubborn/cgroup.kill")
	freeze := filepath.Join(base, "apps/stubborn/cgroup.freeze")
	w = newWatcher(t, kill, freeze)
	d.stop()
	mods := w.modified(t)
	if mods[kill] == 0 {
		t.Errorf("cgroup.kill of apps/stubborn never written (writes: %v)", mods)
	}
	if mods[freeze] != 0 {
		t.Errorf("cgroup.freeze of apps/stubborn written %d times: the freeze fallback ran", mods[freeze])
	}
	if !strings.Contains(d.log.String(), `"process":"stubborn","event":"stop_timeout"`) {
		t.Error("stubborn's stop_timeout kill not logged")
	}
	for _, pid := range []int{again.PID, stub.PID} {
		if alive(pid) {
			t.Errorf("pid %d survived the stop", pid)
		}
	}
	// The own cgroup is the root, which may hold processes beside enabled
	// controllers: the supervisor moves home and the whole tree goes.
	if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree %s left after stop (stat: %v)", base, err)
	}
	if strings.Contains(d.log.String(), `"event":"cgroup_leftover"`) {
		t.Error("supervisor could not leave control/supervisor although its own cgroup is the root")
	}
}

// As under systemd's Delegate=yes: vigil is started, alone, in a non-root
// cgroup (placed there at clone time). It moves into control/supervisor,
// which empties its own cgroup so the controllers can be enabled there. At
// stop the kernel refuses the move back home (the own cgroup has
// controllers enabled: no internal processes), so control/supervisor stays,
// empty, for the service manager to remove; everything else goes.
func TestGuestDelegatedOwnCgroup(t *testing.T) {
	needGuest(t)
	for _, c := range []string{"cpu", "cpuset", "memory", "pids"} {
		if err := os.WriteFile(filepath.Join(cgroot, "cgroup.subtree_control"), []byte("+"+c), 0o644); err != nil {
			t.Fatalf("enable %s at the root: %v", c, err)
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	own := filepath.Join(cgroot, "vmv2-service-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, own) })
	fd, err := unix.Open(own, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	d := newVigild(t, `control:
  realtime: false
  cpu_weight: 4000
processes:
  - name: app
    command: [/bin/sleep, "1000"]
`)
	d.start(&syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd})
	app := d.waitRunning("app")
	ownRel := strings.TrimPrefix(own, cgroot)
	base := filepath.Join(own, d.subtree)
	if got, want := cgroupV2(t, d.cmd.Process.Pid), ownRel+"/"+d.subtree+"/control/supervisor"; got != want {
		t.Errorf("supervisor in %q, want %q", got, want)
	}
	if got, want := cgroupV2(t, app.PID), ownRel+"/"+d.subtree+"/apps/app"; got != want {
		t.Errorf("app in %q, want %q", got, want)
	}
	if got := readTrim(t, filepath.Join(own, "cgroup.procs")); got != "" {
		t.Errorf("own cgroup still holds %q", got)
	}
	for _, dir := range []string{own, base, filepath.Join(base, "control"), filepath.Join(base, "apps")} {
		wantControllers(t, dir)
	}
	wantFile(t, filepath.Join(base, "control/cpu.weight"), "4000")
	if strings.Contains(d.log.String(), "CLONE_INTO_CGROUP refused") {
		t.Error("the supervisor fell back to placing before exec")
	}
	d.stop()
	if alive(app.PID) {
		t.Errorf("app %d survived the stop", app.PID)
	}
	if !strings.Contains(d.log.String(), `"event":"cgroup_leftover"`) {
		t.Error("no cgroup_leftover line: did the kernel really let the supervisor back into a cgroup with controllers enabled?")
	}
	var left []string
	_ = filepath.WalkDir(base, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			left = append(left, strings.TrimPrefix(p, base))
		}
		return nil
	})
	if want := []string{"", "/control", "/control/supervisor"}; !slices.Equal(left, want) {
		t.Errorf("left after stop: %q, want only %q", left, want)
	}
	if got := readTrim(t, filepath.Join(base, "control/supervisor/cgroup.procs")); got != "" {
		t.Errorf("control/supervisor still holds %q after vigil exited", got)
	}
}

// removeTree removes dir and the cgroups below it, deepest first.
func removeTree(t *testing.T, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("rmdir %s: %v", dirs[i], err)
		}
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}
