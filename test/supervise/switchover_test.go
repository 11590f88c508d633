package supervise

import (
	"strings"
	"testing"
	"time"
)

// vigil switchover moves the active role where it is told; vigil maintenance
// on makes a node refuse the role (an active one hands it over), off lets it
// take it again. Both answer errors plainly.
func TestSwitchoverAndMaintenance(t *testing.T) {
	c := newCluster(t)
	first := c.waitActive(20*time.Second, "")
	second := map[string]string{"a": "b", "b": "a"}[first]
	c.waitFor("the standby is in the ring", func() bool {
		r, ok := c.report(second)
		return ok && r.Role == "standby" && r.Active == first
	})

	out, code := c.nodes[first].vigil("switchover", "--socket", c.nodes[first].socket, "--to", second)
	if code != 0 {
		t.Fatalf("switchover: %d %s", code, out)
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
	c.waitFor("the node reports maintenance", func() bool {
		r, ok := c.report(first)
		return ok && r.Maintenance && r.Role == "standby"
	})
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
