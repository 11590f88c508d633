package supervise

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// `vigil reload` (the unit's ExecReload=) applies a valid file and says
// what it did (exit 0); refuses an invalid one with its FILE:LINE:COL
// errors (exit 2), changing nothing; and fails (exit 1) without a daemon.
// A SIGHUP returned 0 in every case, before the daemon had read the file.
func TestReloadCommand(t *testing.T) {
	d := newDaemon(t, `
  - name: keep
    command: [/bin/sleep, "1000"]
`)
	d.start()
	keep := d.waitState("keep", supervisor.StateRunning, 10*time.Second).PID

	d.writeConfig(`
  - name: keep
    command: [/bin/sleep, "1000"]
  - name: added
    command: [/bin/sleep, "1001"]
`)
	out, code := d.vigil("reload", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("vigil reload of a valid file: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "reloaded "+d.cfgPath) || !strings.Contains(out, "added (starting):") || !strings.Contains(out, "added\n") {
		t.Errorf("vigil reload does not say what it did:\n%s", out)
	}
	// Applied when the command returned: the new process is in status
	// at once (it starts in the background).
	found := false
	for _, p := range d.status().Processes {
		found = found || p.Name == "added"
	}
	if !found {
		t.Errorf("vigil reload returned before the reload was applied")
	}
	d.waitState("added", supervisor.StateRunning, 10*time.Second)
	before := d.status()

	// Invalid: an unknown key on line 3 of the processes list's entry.
	good, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), `    command: [/bin/sleep, "1001"]`, `    command: [/bin/sleep, "1001"]
    restart_polcy: always`, 1)
	if bad == string(good) {
		t.Fatal("test config has no line to break")
	}
	if err := os.WriteFile(d.cfgPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	badLine := 0
	for i, l := range strings.Split(bad, "\n") {
		if strings.Contains(l, "restart_polcy") {
			badLine = i + 1
		}
	}
	// Asked of the daemon (--socket), and found from the file (-c): the
	// file's control socket is unknown then, and the file's own errors
	// are the answer.
	wantPos := d.cfgPath + ":" + strconv.Itoa(badLine) + ":"
	for _, args := range [][]string{{"--socket", d.socket}, {"-c", d.cfgPath}} {
		out, code = d.vigil(append([]string{"reload"}, args...)...)
		if code != 2 {
			t.Errorf("vigil reload %v of an invalid file: exit %d, want 2\n%s", args, code, out)
		}
		if !strings.Contains(out, wantPos) || !strings.Contains(out, "restart_polcy") {
			t.Errorf("vigil reload %v: the refusal does not name %s and the key:\n%s", args, wantPos, out)
		}
	}
	if n := len(events(d, "reload_refused")); n != 1 {
		t.Errorf("the daemon refused %d reloads, want 1 (the --socket one)", n)
	}
	after := d.status()
	if after.Supervisor.Reloads != before.Supervisor.Reloads {
		t.Errorf("a refused reload was counted: %d -> %d", before.Supervisor.Reloads, after.Supervisor.Reloads)
	}
	if len(after.Processes) != len(before.Processes) {
		t.Errorf("a refused reload changed the process list")
	}
	for i, p := range after.Processes {
		if p.PID != before.Processes[i].PID {
			t.Errorf("%s: pid changed on a refused reload", p.Name)
		}
	}
	if p := d.proc("keep"); p.PID != keep {
		t.Errorf("keep was restarted")
	}

	// An unreadable file is as invalid (exit 2), and says why.
	if err := os.Rename(d.cfgPath, d.cfgPath+".moved"); err != nil {
		t.Fatal(err)
	}
	out, code = d.vigil("reload", "--socket", d.socket)
	if code != 2 || !strings.Contains(out, "no such file") {
		t.Errorf("vigil reload with the file gone: exit %d, want 2 and the reason\n%s", code, out)
	}
	if err := os.Rename(d.cfgPath+".moved", d.cfgPath); err != nil {
		t.Fatal(err)
	}
	d.stop(15 * time.Second)

	// No daemon: a runtime failure, exit 1.
	out, code = d.vigil("reload", "--socket", filepath.Join(d.dir, "none.sock"))
	if code != 1 || !strings.Contains(out, "not running") {
		t.Errorf("vigil reload without a daemon: exit %d, want 1\n%s", code, out)
	}
}
