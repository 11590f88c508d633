package supervise

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vigil switchover moves the active role where it is told; vigil maintenance
// on makes a node refuse the role (an active one hands it over), off lets it
// take it again. Both answer errors plainly.
func TestSwitchoverAndMaintenance(t *testing.T) {
	c := newCluster(t)
	first, second := c.activeAndStandby()

	out, code := c.nodes[first].vigil("switchover", "--socket", c.nodes[first].socket, "--to", second)
	if code != 0 {
		t.Fatalf("switchover: %d %s", code, out)
	}
	// It waits and says where the role went.
	if !strings.Contains(out, "switchover done: "+second+" is active (epoch ") {
		t.Errorf("switchover said %q", out)
	}
	if got := c.waitActive(10*time.Second, first); got != second {
		t.Fatalf("after switchover to %s the active is %s", second, got)
	}

	// A switchover asked of the standby is forwarded to the active.
	c.waitFor("the old active is standby", func() bool {
		r, ok := c.report(first)
		return ok && r.Role == "standby" && r.Active == second
	})
	out, code = c.nodes[first].vigil("switchover", "--socket", c.nodes[first].socket)
	if code != 0 {
		t.Fatalf("switchover from the standby: %d %s", code, out)
	}
	if got := c.waitActive(10*time.Second, second); got != first {
		t.Fatalf("forwarded switchover: active is %s", got)
	}

	// Maintenance on the active hands the role over and keeps it away.
	c.waitFor("the standby is back in the ring", func() bool {
		r, ok := c.report(second)
		return ok && r.Role == "standby" && r.Active == first
	})
	out, code = c.nodes[first].vigil("maintenance", "--socket", c.nodes[first].socket, "on")
	if code != 0 {
		t.Fatalf("maintenance on: %d %s", code, out)
	}
	if got := c.waitActive(10*time.Second, first); got != second {
		t.Fatalf("maintenance on the active: active is %s", got)
	}
	// ... and has seen the new active's epoch: `vigil switchover` below
	// compares against this node's view, and a view still in the old
	// epoch would take the maintenance handover, landing meanwhile, for
	// the switchover's own.
	c.waitFor("the node reports maintenance and sees the new active's epoch", func() bool {
		r, ok := c.report(first)
		s, ok2 := c.report(second)
		return ok && ok2 && r.Maintenance && r.Role == "standby" && r.Active == second &&
			s.Role == "active" && r.Epoch == s.Epoch
	})
	// Asked of the node in maintenance, the request goes to the active,
	// which has no standby to hand over to and drops it: the command says
	// the role did not move, and fails.
	out, code = c.nodes[first].vigil("switchover", "--socket", c.nodes[first].socket, "--wait", "1s")
	if code != 1 || !strings.Contains(out, "did not move within 1s: active is "+second) {
		t.Errorf("switchover that cannot happen: %d %q", code, out)
	}
	out, code = c.nodes[first].vigil("maintenance", "--socket", c.nodes[first].socket, "off")
	if code != 0 {
		t.Fatalf("maintenance off: %d %s", code, out)
	}

	// Bad input: a clear error, exit 1 or 2, nothing changes.
	out, code = c.nodes[second].vigil("switchover", "--socket", c.nodes[second].socket, "--to", "nosuch")
	if code != 1 || !strings.Contains(out, "unknown node") {
		t.Errorf("switchover to an unknown node: %d %q", code, out)
	}
	out, code = c.nodes[second].vigil("maintenance", "--socket", c.nodes[second].socket, "maybe")
	if code != 2 {
		t.Errorf("maintenance maybe: %d %q", code, out)
	}
	out, code = c.nodes["w"].vigil("switchover", "--socket", c.nodes["w"].socket)
	if code != 1 || !strings.Contains(out, "not running on this host") {
		t.Errorf("switchover on a witness: %d %q", code, out)
	}
	if got := c.active(); got != second {
		t.Errorf("bad commands moved the role to %q", got)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

func (c *cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	c.nodes["a"].waitFor(what, 10*time.Second, cond)
}

// `vigil maintenance on` survives a restart of vigil: the node comes back
// in maintenance and does not take the role when the active goes away;
// `off` survives one too. An unreadable maintenance file counts as on.
func TestMaintenanceSurvivesRestart(t *testing.T) {
	c := newCluster(t)
	first, second := c.activeAndStandby()
	d := c.nodes[second]
	if out, code := d.vigil("maintenance", "--socket", d.socket, "on"); code != 0 {
		t.Fatalf("maintenance on: %d %s", code, out)
	}
	d.stop(20 * time.Second)
	d.start()
	d.waitFor("the restarted node reports maintenance", 20*time.Second, func() bool {
		r, ok := c.report(second)
		return ok && r.Maintenance
	})
	if !strings.Contains(d.log.String(), "maintenance on, as set before this start") {
		t.Error("the restarted node manager did not log the persisted maintenance")
	}

	// The active stops: the node in maintenance must not take the role,
	// for well over the lease-expiry path (lease 600 ms + drift + claim).
	c.nodes[first].stop(20 * time.Second)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if r, ok := c.report(second); ok && r.Role != "standby" {
			t.Fatalf("%s in maintenance became %s after the active stopped", second, r.Role)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Off, restarted: eligible again, and with no other node it takes the role.
	if out, code := d.vigil("maintenance", "--socket", d.socket, "off"); code != 0 {
		t.Fatalf("maintenance off: %d %s", code, out)
	}
	d.stop(20 * time.Second)
	d.start()
	d.waitFor("the restarted node takes the role", 20*time.Second, func() bool {
		r, ok := c.report(second)
		return ok && !r.Maintenance && r.Role == "active"
	})

	// A damaged file: in maintenance, said loudly, until `off` rewrites it.
	d.stop(20 * time.Second)
	if err := os.WriteFile(filepath.Join(d.dir, "state", "maintenance.state"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	d.waitFor("maintenance from a damaged file", 20*time.Second, func() bool {
		r, ok := c.report(second)
		return ok && r.Maintenance
	})
	if !strings.Contains(d.log.String(), "maintenance state unreadable") {
		t.Error("a damaged maintenance file was not reported")
	}
	if out, code := d.vigil("maintenance", "--socket", d.socket, "off"); code != 0 {
		t.Fatalf("maintenance off after a damaged file: %d %s", code, out)
	}
	d.waitFor("maintenance off", 10*time.Second, func() bool {
		r, ok := c.report(second)
		return ok && !r.Maintenance
	})
	d.stop(20 * time.Second)
	c.nodes["w"].stop(20 * time.Second)
}
