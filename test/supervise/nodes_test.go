package supervise

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// nodesYAML is the cluster: body of node id in a cluster of the nodes ids
// (in that order) and no witness, at addrs.
func nodesYAML(name, id string, d *daemon, ids []string, addrs map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  name: %s\n  node: %s\n  role: node\n  key_file: %s\n  nodes:\n", name, id, filepath.Join(d.dir, "cluster.key"))
	for _, n := range ids {
		fmt.Fprintf(&b, "    - {id: %s, address: %s}\n", n, addrs[n])
	}
	return b.String() + testTiming
}

// killHost ends every Vigil process of d at once, as a host that dies
// would: all stopped first (so none notices another's death and hands
// over), then all killed.
func killHost(t *testing.T, d *daemon) {
	t.Helper()
	pids := []int{d.cmd.Process.Pid}
	for _, p := range d.status().ControlPlane {
		if p.PID > 0 {
			pids = append(pids, p.PID)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-d.done
}

// Three nodes and no witness: every node runs a locator, the quorum is 2
// of 3. The floating IP is on one node; when that host dies it moves to
// one of the two others; when the node manager of that one then crashes,
// its supervisor releases the role and the third takes it (two locators
// of three still answer). At no sampled moment do two live hosts hold it.
func TestThreeNodesNoWitness(t *testing.T) {
	needRoot(t)
	ids := []string{"a", "b", "c"}
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "c", Addr: "192.0.2.13/24"},
	)
	nodes := newPeers(t, ids...)
	addrs := map[string]string{"a": "192.0.2.11:7400", "b": "192.0.2.12:7400", "c": "192.0.2.13:7400"}
	for _, id := range ids {
		d := nodes[id]
		d.extra = vipsYAML(testVIP)
		d.cluster = nodesYAML("three", id, d, ids, addrs)
		d.wrap = []string{"nsenter", "--net=/run/netns/" + n.Hosts[id].NSName}
		d.writeConfig("")
	}
	for _, id := range ids {
		nodes[id].start()
	}
	vip := netip.MustParseAddr(testVIP)
	// A dead host keeps the address until its lifetime ends (2-3 s); its
	// kernel stops serving it when the lease ends (the kernel lease,
	// tested in netfloat and test/e2e). Only live hosts count here.
	var dead atomic.Value
	dead.Store("")
	// holders are the live hosts that have the address.
	holders := func() []string {
		var hs []string
		for _, id := range ids {
			if id != dead.Load().(string) && n.Hosts[id].HasAddr(vip) {
				hs = append(hs, id)
			}
		}
		return hs
	}
	holder := func() string {
		if hs := holders(); len(hs) == 1 {
			return hs[0]
		}
		return ""
	}
	var dual atomic.Int64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond): // the sampling period
			}
			if len(holders()) > 1 {
				dual.Add(1)
			}
		}
	}()
	defer func() {
		close(quit)
		<-done
	}()

	var first string
	nodes["a"].waitFor("one host holds the VIP", 30*time.Second, func() bool {
		first = holder()
		return first != ""
	})
	// Every node in the ring before the first failure: each then has a
	// word in who follows.
	for _, id := range ids {
		nodes[id].waitFor(id+" knows the active", 20*time.Second, func() bool {
			r := nodes[id].status().NodeManager
			return r != nil && r.Active == first
		})
	}
	dead.Store(first)
	killHost(t, nodes[first])
	alive := ids[0] // whose waitFor (it checks that daemon lives)
	if alive == first {
		alive = ids[1]
	}
	var second string
	nodes[alive].waitFor("the VIP moved after "+first+" died", 20*time.Second, func() bool {
		second = holder()
		return second != "" && second != first
	})
	t.Logf("%s died: the VIP moved to %s", first, second)

	third := ""
	for _, id := range ids {
		if id != first && id != second {
			third = id
		}
	}
	nodes[third].waitFor(third+" follows "+second, 20*time.Second, func() bool {
		r := nodes[third].status().NodeManager
		return r != nil && r.Role == "standby" && r.Active == second
	})
	if err := syscall.Kill(nmPid(t, nodes[second], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nodes[third].waitFor("the VIP on "+third+" after "+second+"'s node manager crashed", 20*time.Second, func() bool {
		return holder() == third
	})
	if d := dual.Load(); d > 0 {
		t.Errorf("%d samples saw two hosts holding the VIP", d)
	}
	for _, id := range ids {
		if id != first {
			checkGrants(t, id, nodes[id].log.String())
		}
	}
}
