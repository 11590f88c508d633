package supervise

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runToEnd runs `vigil supervise -c cfg` (with d's wrapper) and returns
// its exit status and output; a run that does not end within 30 s fails
// the test.
func runToEnd(t *testing.T, d *daemon) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{}, d.wrap...), vigilBin, "supervise", "-c", d.cfgPath)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case ctx.Err() != nil:
		t.Fatalf("a second vigil supervise did not end: %s", out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("vigil supervise: %v: %s", err, out)
	return 0, ""
}

// A second `vigil supervise` with the same control socket is refused
// before it touches the cgroup tree: setting that up kills what a previous
// run left in it, which would be the running instance's processes.
func TestSecondInstanceSameSocketKillsNothing(t *testing.T) {
	d := newDaemon(t, `
  - name: app
    command: ["/bin/sleep", "1000"]
`)
	d.start()
	pid := d.waitState("app", "running", 10*time.Second).PID
	// "running" counts from the fork: until the shim has exec'd sleep,
	// alive(pid) below can read the exec's moment, when the thread group's
	// leader is briefly a zombie, as the app's end. That was this test's
	// flake (twice, the second time in the cgroup v2 VM, where the
	// running instance never saw its app end because it had not).
	d.waitExec(pid, "sleep", 10*time.Second)
	code, out := runToEnd(t, d)
	if code != 1 || !strings.Contains(out, "another vigil is running") {
		t.Fatalf("second instance: exit %d, want 1 with \"another vigil is running\":\n%s", code, out)
	}
	if !alive(pid) {
		// What the running instance saw of its end, and whether its
		// control plane went with it (the second instance's cgroup
		// set-up would have killed all of them): a clue if this fails.
		var last string
		d.waitFor("the running instance to see its app end", 3*time.Second, func() bool {
			p := d.proc("app")
			if p.LastExit == nil {
				return false
			}
			last = fmt.Sprintf("state %s, restarts %d, last exit %+v", p.State, p.Restarts, *p.LastExit)
			return true
		})
		var cp []string
		for _, c := range d.status().ControlPlane {
			cp = append(cp, fmt.Sprintf("%s pid %d alive=%v", c.Name, c.PID, alive(c.PID)))
		}
		t.Fatalf("the running instance's app (pid %d) ended once the second instance ran: %s; control plane: %v\n%s", pid, last, cp, out)
	}
	if p := d.proc("app"); p.PID != pid || p.Restarts != 0 {
		t.Fatalf("app is now pid %d after %d restarts, want pid %d untouched", p.PID, p.Restarts, pid)
	}
}

// One vigil per network namespace may hold floating IPs: a second one with
// floating IPs is refused and names the first, which keeps its address and
// its kernel lease; one without floating IPs (another cluster's witness,
// a test config) may run there, and its stop leaves the first's nftables
// tables alone.
func TestSecondInstanceWithFloatingIPsRefused(t *testing.T) {
	c := newVIPCluster(t)
	_, act, _ := c.settle()
	host := c.net.Hosts[act]
	addr := map[string]string{"a": "192.0.2.11", "b": "192.0.2.12"}[act]
	second := func(extra string) *daemon {
		x := newDaemon(t, "")
		x.wrap = []string{"nsenter", "--net=/run/netns/" + host.NSName}
		x.cluster = fmt.Sprintf("  name: other\n  node: a\n  key_file: %s/cluster.key\n  nodes:\n    - {id: a, address: %s:7500}\n%s", x.dir, addr, testTiming)
		x.extra = extra
		x.writeConfig("")
		return x
	}
	tables := func() string {
		out, err := host.Command("nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list tables: %v: %s", err, out)
		}
		return string(out)
	}
	if !strings.Contains(tables(), "table inet vigil") {
		t.Fatalf("no kernel lease table on the active %s: %s", act, tables())
	}

	code, out := runToEnd(t, second(vipsYAML("192.0.2.101")))
	if code != 1 || !strings.Contains(out, "holds floating IPs in this network namespace: pid ") {
		t.Fatalf("second instance with floating IPs: exit %d, want 1 naming the owner:\n%s", code, out)
	}
	if !c.holds(act) || c.holder() != act || !strings.Contains(tables(), "table inet vigil") {
		t.Fatalf("after the refused instance: holder %q (want %s), tables %s", c.holder(), act, tables())
	}

	w := second("")
	w.start()
	w.stop(10 * time.Second)
	if !strings.Contains(w.log.String(), "nft_cleanup_skipped") || !strings.Contains(tables(), "table inet vigil") {
		t.Fatalf("a second instance without floating IPs removed the owner's tables on its stop: %s\n%s", tables(), w.log.String())
	}
	if c.holder() != act {
		t.Fatalf("after the second instance's stop the holder is %q, want %s", c.holder(), act)
	}
}
