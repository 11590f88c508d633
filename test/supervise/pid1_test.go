package supervise

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

var (
	stopSig = syscall.SIGSTOP
	contSig = syscall.SIGCONT
)

// As PID 1 of a new PID namespace the supervisor reaps every orphan: a
// process whose children outlive it leaves no zombie behind.
func TestPID1ReapsOrphans(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	d := newDaemon(t, "")
	// Each run leaves three short-lived orphans, then exits 1 to be
	// restarted: dozens of orphans over the test.
	d.writeConfig(`
  - name: orphaner
    command: [/bin/sh, -c, "(sleep 0.05 &) ; (sleep 0.05 &) ; (sleep 0.05 &) ; sleep 0.2; exit 1"]
    backoff: {stable: 100ms}
`)
	d.wrap = []string{"unshare", "--pid", "--fork", "--kill-child", "--mount-proc"}
	d.start()
	st := d.status()
	if st.Supervisor.PID != 1 {
		t.Fatalf("supervisor pid %d in its namespace, want 1", st.Supervisor.PID)
	}
	d.waitFor("orphans reaped", 20*time.Second, func() bool {
		return d.status().Supervisor.Orphans >= 15
	})
	// The host pid of vigil is the child of unshare.
	vpid := childOf(t, d.cmd.Process.Pid)
	d.sigPid = vpid
	// Sample for zombies among vigil's children a few times: a zombie may
	// exist for an instant between exit and reap, never for long.
	for i := 0; i < 5; i++ {
		if z := longZombies(t, vpid); len(z) > 0 {
			t.Fatalf("zombies left under the PID-1 supervisor: %v", z)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p := d.proc("orphaner"); p.Restarts < 3 || p.State == supervisor.StateFatal {
		t.Errorf("orphaner: %+v", p)
	}
	d.stop(15 * time.Second)
	if left := treeDirs(d.subtree); len(left) != 0 {
		t.Errorf("cgroup tree left behind: %v", left)
	}
}

func childOf(t *testing.T, ppid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", ppid, ppid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("unshare has children %v", f)
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// longZombies returns the children of ppid that are zombies now and still
// zombies 200 ms later.
func longZombies(t *testing.T, ppid int) []int {
	t.Helper()
	first := zombieChildren(ppid)
	if len(first) == 0 {
		return nil
	}
	time.Sleep(200 * time.Millisecond)
	still := map[int]bool{}
	for _, p := range zombieChildren(ppid) {
		still[p] = true
	}
	var out []int
	for _, p := range first {
		if still[p] {
			out = append(out, p)
		}
	}
	return out
}

func zombieChildren(ppid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		fields := strings.Fields(s[i+2:])
		if len(fields) < 2 || fields[0] != "Z" {
			continue
		}
		if pp, _ := strconv.Atoi(fields[1]); pp == ppid {
			pid, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(f, "/proc/"), "/")[0])
			out = append(out, pid)
		}
	}
	return out
}
