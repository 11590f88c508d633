package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Transition hooks run in order, each under its timeout, off the protocol's
// path: a failing and a hanging hook are logged and the next one still runs.
func TestHooksRunInOrderWithTimeouts(t *testing.T) {
	d := newDaemon(t, "")
	out := filepath.Join(d.dir, "hooks.out")
	d.extra = fmt.Sprintf(`hooks:
  timeout: 300ms
  on_active:
    - [/bin/sh, -c, "echo first $VIGIL_EVENT >> %[1]s; exit 1"]
    - [/bin/sh, -c, "echo second >> %[1]s; exec sleep 5"]
    - [/bin/sh, -c, "echo third $VIGIL_EVENT $VIGIL_NODE $VIGIL_CLUSTER epoch=$VIGIL_EPOCH >> %[1]s"]
`, out)
	d.writeConfig("")
	d.start()
	var lines []string
	d.waitFor("three hooks ran", 20*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(lines) == 3
	})
	if lines[0] != "first active" || lines[1] != "second" || !strings.HasPrefix(lines[2], "third active a test epoch=") {
		t.Errorf("hooks ran as %q", lines)
	}
	log := d.log.String()
	if !strings.Contains(log, `"event":"hook"`) || !strings.Contains(log, "exit status 1") {
		t.Error("failing hook not logged")
	}
	if !strings.Contains(log, "timed out after 300ms") {
		t.Error("hanging hook not cut at its timeout")
	}
	// The protocol did not wait for them: the node became active before the
	// slow hook ended, and it is active now.
	d.waitFor("node manager reports active", 10*time.Second, func() bool {
		st := d.status()
		return st.NodeManager != nil && strings.Contains(string(st.NodeManager), `"role":"active"`)
	})
	d.stop(15 * time.Second)
}

// A hook runs outside the control plane's privileges: SCHED_OTHER and
// oom_score_adj 0 under a realtime node manager (a CPU-heavy on_active hook
// at its SCHED_RR got it fenced), and its background child dies with it at
// the timeout.
func TestHookOutsideControlPlane(t *testing.T) {
	d := newDaemon(t, "")
	d.realtime = true
	dir := t.TempDir()
	out, bg := filepath.Join(dir, "out"), filepath.Join(dir, "bg")
	// Fields: the hook's policy and oom_score_adj, then its parent's (the
	// node manager: the shim execs in place). Reported before the busy
	// loop: under TCG (the v2 VM) the loop outlasts the 1 s timeout.
	d.extra = fmt.Sprintf(`hooks:
  timeout: 1s
  on_active:
    - [/bin/sh, -c, "s=$(cat /proc/$$/stat); p=$(cat /proc/$PPID/stat); sleep 1000 >/dev/null 2>&1 & echo $! > %[2]s; echo \"$(echo \"$s\" | cut -d' ' -f41) $(cat /proc/$$/oom_score_adj) $(echo \"$p\" | cut -d' ' -f41) $(cat /proc/$PPID/oom_score_adj)\" > %[1]s.tmp; mv %[1]s.tmp %[1]s; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 1000"]
`, out, bg)
	d.writeConfig("")
	d.start()
	var fields []string
	d.waitFor("hook reported", 30*time.Second, func() bool {
		b, err := os.ReadFile(out)
		fields = strings.Fields(string(b))
		return err == nil
	})
	b, err := os.ReadFile(bg)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sleepAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if len(fields) != 4 {
		t.Fatalf("hook wrote %q", fields)
	}
	t.Logf("hook policy %s oom_score_adj %s; node manager policy %s oom_score_adj %s", fields[0], fields[1], fields[2], fields[3])
	if fields[2] != "2" {
		t.Logf("the node manager is not SCHED_RR on this host: only the hook's own values are checked")
	}
	if fields[0] != "0" || fields[1] != "0" {
		t.Errorf("hook ran with policy %s (want 0, SCHED_OTHER), oom_score_adj %s (want 0)", fields[0], fields[1])
	}
	d.waitFor("hook timed out", 20*time.Second, func() bool {
		return strings.Contains(d.log.String(), "timed out after 1s")
	})
	d.waitFor("background child gone", 10*time.Second, func() bool { return !sleepAlive(pid) })
	d.stop(15 * time.Second)
}

// sleepAlive reports whether pid is a live (not zombie) sleep, or the
// shell it was forked from before its exec.
func sleepAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && (strings.Contains(s[:i], "(sleep") || strings.Contains(s[:i], "(sh")) && s[i+2] != 'Z'
}
