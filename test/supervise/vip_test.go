package supervise

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vigil-project/vigil/internal/netnstest"
)

const testVIP = "192.0.2.100"

// vipCluster is two nodes and a witness, each a `vigil supervise` in its own
// network namespace on one bridge, with a floating IP.
type vipCluster struct {
	t     *testing.T
	net   *netnstest.Net
	nodes map[string]*daemon
}

func newVIPCluster(t *testing.T) *vipCluster { return newVIPClusterWith(t, nil) }

// vipNodeConfig gives node id's configuration beyond the cluster and the
// floating IP: more top-level YAML (extra) and its processes: section.
type vipNodeConfig func(id string, d *daemon) (extra, procs string)

// newVIPClusterWith starts the cluster with each node's configuration
// extended by more (nil: none; the witness is asked too).
func newVIPClusterWith(t *testing.T, more vipNodeConfig) *vipCluster {
	t.Helper()
	needRoot(t)
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "w", Addr: "192.0.2.13/24"},
	)
	c := &vipCluster{t: t, net: n, nodes: newPeers(t, "a", "b", "w")}
	ids := []string{"a", "b", "w"}
	addrs := map[string]string{"a": "192.0.2.11:7400", "b": "192.0.2.12:7400", "w": "192.0.2.13:7400"}
	for _, id := range ids {
		d := c.nodes[id]
		var extra, procs string
		if id != "w" {
			extra = vipsYAML(testVIP)
		}
		if more != nil {
			e, p := more(id, d)
			extra += e
			procs = p
		}
		d.extra = extra
		d.cluster = pairYAML("vip", id, d, addrs)
		// nsenter joins only the network namespace; ip netns exec would also
		// remount /sys and hide the cgroup hierarchies.
		d.wrap = []string{"nsenter", "--net=/run/netns/" + n.Hosts[id].NSName}
		d.writeConfig(procs)
	}
	for _, id := range ids {
		c.nodes[id].start()
	}
	return c
}

// settle waits until one host is active and holds the VIP and the other
// is a standby that follows it; it returns the nodes as a cluster (for
// reports), the active and the standby.
func (c *vipCluster) settle() (*cluster, string, string) {
	c.t.Helper()
	cl := &cluster{t: c.t, nodes: c.nodes}
	var act string
	c.nodes["a"].waitFor("one host holds the VIP", 30*time.Second, func() bool {
		act = c.holder()
		return act != "" && cl.active() == act
	})
	stby := map[string]string{"a": "b", "b": "a"}[act]
	cl.waitFor("the standby follows the active", func() bool {
		r, ok := cl.report(stby)
		return ok && r.Role == "standby" && r.Active == act
	})
	return cl, act, stby
}

// holds reports whether host id has the floating IP on its interface now.
func (c *vipCluster) holds(id string) bool {
	return c.net.Hosts[id].HasAddr(netip.MustParseAddr(testVIP))
}

func (c *vipCluster) holder() string {
	a, b := c.holds("a"), c.holds("b")
	switch {
	case a && !b:
		return "a"
	case b && !a:
		return "b"
	}
	return ""
}

// prober samples both hosts every 2 ms and accumulates the time both held
// the floating IP at once.
type prober struct {
	mu   sync.Mutex
	dual time.Duration
	stop chan struct{}
	done chan struct{}
}

func (c *vipCluster) probe() *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		last := time.Now()
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			now := time.Now()
			if c.holds("a") && c.holds("b") {
				p.mu.Lock()
				p.dual += now.Sub(last)
				p.mu.Unlock()
			}
			last = now
		}
	}()
	return p
}

func (p *prober) end() time.Duration {
	close(p.stop)
	<-p.done
	return p.dual
}

// The floating IP follows the active role on real interfaces: one host holds
// it; kill -9 of its node manager moves it; a node manager stopped for twice
// the lease is fenced by its supervisor (the address removed; with the
// kernel lease in force the node manager itself is left alive: fence_held)
// while the other host takes over; at no sampled moment do both hosts hold
// it.
func TestVIPFollowsTheLease(t *testing.T) {
	c := newVIPCluster(t)
	var first string
	c.nodes["a"].waitFor("one host holds the VIP", 30*time.Second, func() bool {
		first = c.holder()
		return first != ""
	})
	pr := c.probe()

	if err := syscall.Kill(nmPid(t, c.nodes[first], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := map[string]string{"a": "b", "b": "a"}[first]
	c.nodes["a"].waitFor("the VIP moved after kill -9", 20*time.Second, func() bool { return c.holder() == second })

	stalled := nmPid(t, c.nodes[second], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.nodes["a"].waitFor("the VIP moved after the stall", 20*time.Second, func() bool { return c.holder() == first })
	time.Sleep(1200 * time.Millisecond) // 2x the test lease in all
	_ = syscall.Kill(stalled, syscall.SIGCONT)
	if st := c.nodes[second].status().Supervisor; st.Fences+st.FencesHeld < 1 {
		t.Errorf("stalled node manager not fenced (fences=%d fences_held=%d)", st.Fences, st.FencesHeld)
	}
	// The fenced node manager comes back as a standby; the VIP stays (or,
	// if a loaded machine made the active miss a renewal, comes back) on
	// the active. Safety is the prober's business; this is liveness.
	time.Sleep(time.Second)
	c.nodes["a"].waitFor("the VIP on "+first+" after the stall", 20*time.Second, func() bool { return c.holder() == first })
	if dual := pr.end(); dual > 0 {
		t.Errorf("both hosts held the VIP for %v", dual)
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
	if c.holds("a") || c.holds("b") {
		t.Error("a stopped vigil left the VIP behind")
	}
}

// manyAddrs are n more floating IPs for eth0, beside testVIP: the rest of
// 192.0.2.0/24 above it, then 198.51.100.0/24.
func manyAddrs(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		if 101+i <= 254 {
			out = append(out, fmt.Sprintf("192.0.2.%d", 101+i))
		} else {
			out = append(out, fmt.Sprintf("198.51.100.%d", 1+i-154))
		}
	}
	return out
}

// addrSet is the IPv4 addresses on host id's interface now.
func (c *vipCluster) addrSet(id string) map[string]bool {
	h := c.net.Hosts[id]
	out := map[string]bool{}
	link, err := h.Handle.LinkByName(netnstest.LinkName)
	if err != nil {
		return out
	}
	addrs, err := h.Handle.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return out
	}
	for _, a := range addrs {
		out[a.IP.String()] = true
	}
	return out
}

// TestManyVIPsMoveTogether: 257 floating IPs follow the role as one: the
// active holds every one and the other host none, after the start and
// after a crash of the active's node manager (its supervisor removes them
// all, the other host claims them all).
func TestManyVIPsMoveTogether(t *testing.T) {
	extra := manyAddrs(256)
	c := newVIPClusterWith(t, func(id string, d *daemon) (string, string) {
		if id == "w" {
			return "", ""
		}
		var s string // more items of the vips: list testVIP opened
		for _, a := range extra {
			s += fmt.Sprintf("  - {address: %s/24, interface: %s}\n", a, netnstest.LinkName)
		}
		return s, ""
	})
	all := append([]string{testVIP}, extra...)
	split := func(holder string) func() bool {
		other := map[string]string{"a": "b", "b": "a"}[holder]
		return func() bool {
			h, o := c.addrSet(holder), c.addrSet(other)
			for _, a := range all {
				if !h[a] || o[a] {
					return false
				}
			}
			return true
		}
	}
	_, act, stby := c.settle()
	c.nodes["a"].waitFor(act+" holds all 257 addresses, "+stby+" none", 20*time.Second, split(act))

	if err := syscall.Kill(nmPid(t, c.nodes[act], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.nodes["a"].waitFor("all 257 addresses moved to "+stby, 20*time.Second, split(stby))
	// Logged once the last first announcement is out, after the addresses.
	var evs []logEvent
	c.nodes[stby].waitFor(stby+" logs its takeover", 10*time.Second, func() bool {
		evs = events(c.nodes[stby], "takeover")
		return len(evs) > 0
	})
	t.Logf("takeover on %s: %s", stby, evs[len(evs)-1].raw)

	// A switchover back: the old active drains them all (refused in
	// the kernel, then removed), the new one claims them all.
	cl := &cluster{t: t, nodes: c.nodes}
	cl.waitFor(act+"'s new node manager follows "+stby, func() bool {
		r, ok := cl.report(act)
		return ok && r.Role == "standby" && r.Active == stby
	})
	if out, code := c.nodes[stby].vigil("switchover", "--socket", c.nodes[stby].socket, "--to", act); code != 0 {
		t.Fatalf("switchover: %d %s", code, out)
	}
	c.nodes["a"].waitFor("all 257 addresses back on "+act, 20*time.Second, split(act))
}
