package supervise

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/netnstest"
)

const testVIP6 = "2001:db8::100"

// setIPv6 turns IPv6 on or off on host id's link, as
// `sysctl net.ipv6.conf.IF.disable_ipv6` would there.
func (c *vipCluster) setIPv6(id string, on bool) {
	c.t.Helper()
	v := "1"
	if on {
		v = "0"
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+c.net.Hosts[id].NSName, "sh", "-c",
		"echo "+v+" > /proc/sys/net/ipv6/conf/"+netnstest.LinkName+"/disable_ipv6")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("disable_ipv6=%s on %s: %v %s", v, id, err, out)
	}
}

// An active whose VIP interface has IPv6 turned off cannot hold the
// service's IPv6 address (the kernel refuses the add): the node manager
// reads it within a second, the node is unhealthy, and the service with
// both of its addresses moves to the standby, where callers of the IPv6
// address reach it again. With IPv6 back on, the node is healthy and,
// without failback, takes nothing back.
func TestIPv6DisabledOnVIPInterface(t *testing.T) {
	c := newVIPClusterWith(t, func(id string, d *daemon) (string, string) {
		if id == "w" {
			return "", ""
		}
		return "  - {address: " + testVIP6 + "/64, interface: " + netnstest.LinkName + "}\n", ""
	})
	cl, act, stby := c.settle()
	v6 := netip.MustParseAddr(testVIP6)
	c.nodes[act].waitFor("the active holds the IPv6 address", 10*time.Second, func() bool { return c.net.Hosts[act].HasAddr(v6) })
	defer c.setIPv6(act, true)

	c.setIPv6(act, false)
	c.nodes[stby].waitFor("the standby took both addresses", 15*time.Second, func() bool {
		return c.holds(stby) && c.net.Hosts[stby].HasAddr(v6) && !c.holds(act)
	})
	reason := "interface " + netnstest.LinkName + ": IPv6 disabled (net.ipv6.conf." + netnstest.LinkName + ".disable_ipv6 = 1)"
	c.nodes[act].waitFor("the old active reports why it is unhealthy", 10*time.Second, func() bool {
		st := c.nodes[act].status()
		return !st.Healthy && slices.Contains(st.Unhealthy, reason)
	})
	if out, code := c.nodes[act].vigil("status", "--socket", c.nodes[act].socket); code != 3 || !strings.Contains(out, reason) {
		t.Errorf("vigil status on the old active: exit %d, want 3 and %q:\n%s", code, reason, out)
	}
	if n := strings.Count(c.nodes[act].log.String(), `"event":"ipv6_disabled"`); n != 1 {
		t.Errorf("%d ipv6_disabled lines, want 1", n)
	}
	if strings.Contains(c.nodes[act].log.String(), `"event":"vip_unfit"`) {
		t.Errorf("IPv6 off counted as a refused address too (vip_unfit): the node would stay unfit after IPv6 is back")
	}

	c.setIPv6(act, true)
	c.nodes[act].waitFor("the old active healthy again", 10*time.Second, func() bool {
		st := c.nodes[act].status()
		return st.Healthy && st.NodeManager != nil && st.NodeManager.Healthy
	})
	if !strings.Contains(c.nodes[act].log.String(), `"event":"ipv6_enabled"`) {
		t.Errorf("no ipv6_enabled line")
	}
	if r, ok := cl.report(stby); !ok || r.Role != "active" || c.holds(act) {
		t.Errorf("the service moved back without failback: %s role %q", stby, r.Role)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}
