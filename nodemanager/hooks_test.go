package nodemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/execshim"
)

// The hooks run through `vigil _exec`, which in this package's tests is the
// test binary itself (/proc/self/exe): it becomes the shim here.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == execshim.ShimCommand {
		err := execshim.Run()
		fmt.Fprintf(os.Stderr, "vigil: cannot start process: %v\n", err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

// logLines collects a hook runner's JSON log, and tells when a line with
// want appears.
type logLines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	seen  chan struct{}
	bytes int // bytes written, kept or not
	keep  bool
}

func newLogLines(keep bool, want string) *logLines {
	return &logLines{keep: keep, want: want, seen: make(chan struct{})}
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes += len(p)
	if l.keep {
		l.buf.Write(p)
	}
	if l.want != "" && bytes.Contains(p, []byte(l.want)) {
		close(l.seen)
		l.want = ""
	}
	return len(p), nil
}

// records are the log lines as maps.
func (l *logLines) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// outputLines are the hook's output as logged.
func (l *logLines) outputLines(t *testing.T) []string {
	var out []string
	for _, r := range l.records(t) {
		if r["event"] == "hook_output" && r["line"] != nil {
			out = append(out, r["line"].(string))
		}
	}
	return out
}

// A hook started by a realtime node manager runs at SCHED_OTHER, nice 0 and
// oom_score_adj 0: a CPU-heavy on_active hook at the node manager's SCHED_RR
// got it fenced.
func TestHookSchedulingReset(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SCHED_RR and oom_score_adj -1000 for the test process")
	}
	oldOOM, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	// The node manager's -1000 needs CAP_SYS_RESOURCE, which a container
	// may lack; any value but 0 shows whether the hook inherits it.
	adj := "-1000"
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(adj), 0); err != nil {
		t.Logf("oom_score_adj -1000: %v; using 500", err)
		adj = "500"
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(adj), 0); err != nil {
			t.Fatalf("oom_score_adj %s: %v", adj, err)
		}
	}
	defer func() { _ = os.WriteFile("/proc/self/oom_score_adj", bytes.TrimSpace(oldOOM), 0) }()
	// The hook is forked from this thread: make it what the node
	// manager's are.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: 1}, 0); err != nil {
		t.Skipf("cannot run SCHED_RR here (no realtime budget in this cgroup?): %v", err)
	}
	defer func() {
		// Threads the runtime started from this one meanwhile are RR too.
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			_ = unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}, 0)
		}
		if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_NORMAL {
			t.Errorf("restore SCHED_OTHER: %+v %v", a, err)
		}
	}()
	if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_RR {
		t.Fatalf("test thread not SCHED_RR: %+v %v", a, err)
	}
	out := filepath.Join(t.TempDir(), "sched")
	logs := newLogLines(true, "")
	h := newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
	// Busy first, then report: policy is /proc/PID/stat field 41, nice
	// field 19.
	script := `i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done
s=$(cat /proc/$$/stat)
echo "$(echo "$s" | cut -d' ' -f41) $(echo "$s" | cut -d' ' -f19) $(cat /proc/$$/oom_score_adj)" > ` + out
	h.runOne(context.Background(), hookJob{event: "active", timeout: 60 * time.Second, argv: []string{"/bin/sh", "-c", script}})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("hook did not run: %v; log %s", err, logs.buf.String())
	}
	if got := strings.TrimSpace(string(b)); got != "0 0 0" {
		t.Errorf("hook ran with policy, nice, oom_score_adj %q, want SCHED_OTHER (0), 0, 0", got)
	}
}

// alive reports whether pid is a live (not zombie) background child of a
// test hook: a sleep, or the shell it forked before exec.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) || !(strings.Contains(s[:i], "(sleep") || strings.Contains(s[:i], "(sh")) {
		return false
	}
	return s[i+2] != 'Z'
}

// Every process a hook starts ends with it: at the timeout, and when the
// hook exits leaving a background child behind.
func TestHookProcessGroupKilled(t *testing.T) {
	for _, tc := range []struct {
		name, tail string
		timeout    time.Duration
		failed     bool
	}{
		{"at the timeout", "exec sleep 1000", 500 * time.Millisecond, true},
		{"after the hook exits", "exit 0", 30 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			logs := newLogLines(true, "")
			h := newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
			// The group is killed while the hook is still unreaped: its
			// pid, the group's id, cannot have gone to another process.
			leader := ""
			h.beforeGroupKill = func(pgid int) { leader = procState(pgid) }
			script := fmt.Sprintf("sleep 1000 >/dev/null 2>&1 & echo $! > %s.tmp; mv %[1]s.tmp %[1]s; %s", pidFile, tc.tail)
			h.runOne(context.Background(), hookJob{event: "active", timeout: tc.timeout, argv: []string{"/bin/sh", "-c", script}})
			if leader != "Z" {
				t.Errorf("the hook's group was killed with its leader in state %q, want Z (exited, not yet reaped)", leader)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatalf("hook did not start its child: %v; log %s", err, logs.buf.String())
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if alive(pid) {
					_ = unix.Kill(pid, unix.SIGKILL) // the test's own child's child
				}
			})
			// SIGKILL is delivered before kill(2) returns; the exit itself
			// may take a moment on a loaded machine.
			deadline := time.Now().Add(10 * time.Second)
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if alive(pid) {
				t.Errorf("the hook's background child %d survived it", pid)
			}
			if got := h.failures.Load() == 1; got != tc.failed {
				t.Errorf("failures %d; log %s", h.failures.Load(), logs.buf.String())
			}
		})
	}
}

// A chatty hook's output is streamed into the log line by line and capped:
// 40 MB of it costs the node manager neither memory nor log volume (it
// was buffered whole: 145 MiB resident).
func TestHookOutputCapped(t *testing.T) {
	logs := newLogLines(true, "")
	h := newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h.runOne(context.Background(), hookJob{event: "active", timeout: 2 * time.Minute, argv: []string{"/bin/sh", "-c",
		"yes 'a chatty hook writes this line again and again and again' | head -c 40000000"}})
	runtime.ReadMemStats(&after)
	if h.failures.Load() != 0 {
		t.Fatalf("hook failed: %s", logs.buf.String())
	}
	lines := logs.outputLines(t)
	total := 0
	for _, l := range lines {
		total += len(l) + 1
		if l != "a chatty hook writes this line again and again and again" {
			t.Fatalf("logged %q", l)
		}
	}
	if total > hookOutputCap || total < hookOutputCap-100 {
		t.Errorf("logged %d bytes of output, want just under the %d cap", total, hookOutputCap)
	}
	if n := strings.Count(logs.buf.String(), "hook output truncated"); n != 1 {
		t.Errorf("%d truncation lines", n)
	}
	// Logging ~1000 lines allocates a few MB at most; buffering the output
	// allocates more than the 40 MB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
		t.Errorf("running the hook allocated %d MiB", alloc>>20)
	}
}

// Output is logged as it comes, not when the hook ends.
func TestHookOutputStreamed(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := newLogLines(true, `"line":"ready"`)
	h := newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.runOne(context.Background(), hookJob{event: "standby", timeout: 30 * time.Second, argv: []string{"/bin/sh", "-c",
			"echo ready; read x < " + fifo + "; echo $x"}})
	}()
	// O_RDWR: never blocks, and the hook's read waits for the write.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	select {
	case <-logs.seen:
	case <-time.After(20 * time.Second):
		t.Error("the hook's first line was not logged while it ran")
	}
	if _, err := f.WriteString("finished\n"); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := logs.outputLines(t); !slices.Equal(got, []string{"ready", "finished"}) {
		t.Errorf("logged output %q", got)
	}
}

// A hook's environment is exactly the documented variables and PATH:
// nothing the node manager inherited (NOTIFY_SOCKET, VIGIL_EXEC_SPEC...).
func TestHookEnvironment(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("VIGIL_PRIVATE_TEST", "secret")
	t.Setenv(execshim.HooksCgroupEnv, `["/sys/fs/cgroup/x/hooks"]`)
	m := testManager(t, false)
	logs := newLogLines(true, "")
	m.hooks = newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
	out := filepath.Join(t.TempDir(), "env")
	run := func(env []string) map[string]string {
		m.hooks.runOne(context.Background(), hookJob{event: "x", timeout: 30 * time.Second, argv: []string{"/bin/sh", "-c", "env > " + out}, env: env})
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("hook did not run: %v; log %s", err, logs.buf.String())
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(l, "=")
			if k != "PWD" { // the shell's own
				got[k] = v
			}
		}
		return got
	}
	got := run(m.hookEnv("active", 7, ""))
	want := map[string]string{
		"PATH": os.Getenv("PATH"), "VIGIL_EVENT": "active", "VIGIL_ROLE": "active", "VIGIL_PREVIOUS_ROLE": "none",
		"VIGIL_NODE": "a", "VIGIL_CLUSTER": "edge", "VIGIL_SERVICE": config.ImplicitService, "VIGIL_EPOCH": "7", "VIGIL_REASON": "",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("on_active environment\n got %v\nwant %v", got, want)
	}
	got = run(m.hookEnv("standby", 8, "lease expired"))
	want["VIGIL_EVENT"], want["VIGIL_ROLE"], want["VIGIL_PREVIOUS_ROLE"], want["VIGIL_EPOCH"], want["VIGIL_REASON"] = "standby", "standby", "active", "8", "lease expired"
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("on_standby environment\n got %v\nwant %v", got, want)
	}
	got = run(m.hookEnv("fault", 8, "lost the active role"))
	want["VIGIL_EVENT"], want["VIGIL_REASON"] = "fault", "lost the active role"
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("on_fault environment\n got %v\nwant %v", got, want)
	}
}

// A hook that cannot join the hooks group does not run: it would run in
// the node manager's group, charged to the control plane. It fails, and
// the log says why.
func TestHookCannotJoinCgroup(t *testing.T) {
	logs := newLogLines(true, "")
	h := newHookRunner(slog.New(slog.NewJSONHandler(logs, nil)), clock.Real{})
	// A group that is gone (removed under a running node manager).
	missing := filepath.Join(t.TempDir(), "no-such-cgroup")
	h.cgroup = []string{missing}
	out := filepath.Join(t.TempDir(), "ran")
	h.runOne(context.Background(), hookJob{event: "active", timeout: 30 * time.Second, argv: []string{"/bin/sh", "-c", "touch " + out}})
	if _, err := os.Stat(out); err == nil {
		t.Error("the hook ran although it could not join its cgroup")
	}
	if h.failures.Load() != 1 {
		t.Errorf("failures = %d, want 1", h.failures.Load())
	}
	var why, failed string
	for _, r := range logs.records(t) {
		if r["event"] == "hook_output" {
			why, _ = r["line"].(string)
		}
		if r["msg"] == "hook failed" {
			failed, _ = r["err"].(string)
		}
	}
	if !strings.Contains(why, "join cgroup "+missing) || !strings.Contains(why, "not run") {
		t.Errorf("the hook's output says %q, want why it did not run", why)
	}
	if !strings.Contains(failed, "exit status 127") || !strings.Contains(failed, "not started") {
		t.Errorf("hook failed with %q", failed)
	}
}

// procState is the state letter of pid in /proc (R, S, Z, ...), "" when
// there is no such process.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}
