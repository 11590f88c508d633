package supervise

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// nodeSet is a cluster of nodes without a witness, each a `vigil
// supervise` in its own namespace on one bridge at 192.0.2.11, .12, ...,
// holding testVIP. A sampler counts the moments at which two live hosts
// have the address.
type nodeSet struct {
	t     *testing.T
	ids   []string
	net   *netnstest.Net
	nodes map[string]*daemon
	vip   netip.Addr
	mu    sync.Mutex
	dead  map[string]bool // killed hosts: they keep the address until its lifetime ends
	dual  atomic.Int64    // samples with two live holders
	// longestDual is the longest run of such samples: a planned handover
	// keeps the address on the old active, silent, until the successor
	// announced it (nodemanager/drain.go), never past the old lease.
	longestDual atomic.Int64 // nanoseconds
}

// newNodeSet starts the nodes ids; body is each one's configuration after
// the cluster: section (its floating IPs, services).
func newNodeSet(t *testing.T, name string, ids []string, body func(id string) string) *nodeSet {
	t.Helper()
	return newNodeSetWith(t, name, ids, body, "")
}

// newNodeSetWith is newNodeSet with more keys in every cluster: section
// (clusterExtra, indented as its keys).
func newNodeSetWith(t *testing.T, name string, ids []string, body func(id string) string, clusterExtra string) *nodeSet {
	t.Helper()
	return newNodeSetPrep(t, name, ids, body, clusterExtra, nil)
}

// newNodeSetPrep is newNodeSetWith with prep run on the namespaces before
// any node starts (an interface a host's floating IP is to sit on).
func newNodeSetPrep(t *testing.T, name string, ids []string, body func(id string) string, clusterExtra string, prep func(*netnstest.Net)) *nodeSet {
	t.Helper()
	var specs []netnstest.HostSpec
	addrs := map[string]string{}
	for i, id := range ids {
		specs = append(specs, netnstest.HostSpec{Name: id, Addr: fmt.Sprintf("192.0.2.%d/24", 11+i)})
		addrs[id] = fmt.Sprintf("192.0.2.%d:7400", 11+i)
	}
	s := &nodeSet{t: t, ids: ids, net: netnstest.New(t, specs...), nodes: newPeers(t, ids...),
		vip: netip.MustParseAddr(testVIP), dead: map[string]bool{}}
	for _, id := range ids {
		d := s.nodes[id]
		d.extra = body(id)
		d.cluster = nodesYAML(name, id, d, ids, addrs) + clusterExtra
		d.wrap = []string{"nsenter", "--net=/run/netns/" + s.net.Hosts[id].NSName}
		d.writeConfig("")
	}
	if prep != nil {
		prep(s.net)
	}
	for _, id := range ids {
		s.nodes[id].start()
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var since time.Time
		for {
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond): // the sampling period
			}
			if len(s.holders()) < 2 {
				since = time.Time{}
				continue
			}
			s.dual.Add(1)
			if since.IsZero() {
				since = time.Now()
			}
			if d := int64(time.Since(since)); d > s.longestDual.Load() {
				s.longestDual.Store(d)
			}
		}
	}()
	t.Cleanup(func() {
		close(quit)
		<-done
	})
	return s
}

// holders are the live hosts that have the address. A dead host keeps it
// until its lifetime ends (2-3 s); its kernel stops serving it when the
// lease ends (the kernel lease, tested in netfloat and test/e2e).
func (s *nodeSet) holders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hs []string
	for _, id := range s.ids {
		if !s.dead[id] && s.net.Hosts[id].HasAddr(s.vip) {
			hs = append(hs, id)
		}
	}
	return hs
}

// holder is the one live host that has the address, "" if none or several.
func (s *nodeSet) holder() string {
	if hs := s.holders(); len(hs) == 1 {
		return hs[0]
	}
	return ""
}

// anyLive is a node that runs, whose waitFor checks that its daemon lives.
func (s *nodeSet) anyLive() *daemon {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.ids {
		if !s.dead[id] {
			return s.nodes[id]
		}
	}
	s.t.Fatal("every node is dead")
	return nil
}

// kill ends id's host (killHost); revive starts it again.
func (s *nodeSet) kill(id string) {
	s.mu.Lock()
	s.dead[id] = true
	s.mu.Unlock()
	killHost(s.t, s.nodes[id])
}

func (s *nodeSet) revive(id string) {
	s.nodes[id].start()
	// Its node manager removes what the host held before it reports:
	// until then the address may still be there, its lifetime not over.
	s.nodes[id].waitFor(id+"'s node manager reports", 20*time.Second, func() bool {
		return s.nodes[id].status().NodeManager != nil
	})
	s.mu.Lock()
	delete(s.dead, id)
	s.mu.Unlock()
}

// waitHolder waits until the one live holder is want (any when ""), and
// returns it.
func (s *nodeSet) waitHolder(what, want string, timeout time.Duration) string {
	s.t.Helper()
	var got string
	s.anyLive().waitFor(what, timeout, func() bool {
		got = s.holder()
		return got != "" && (want == "" || got == want)
	})
	return got
}

// waitKnown waits until every live node manager knows active as the
// active: each then has a word in who follows it.
func (s *nodeSet) waitKnown(active string) {
	s.t.Helper()
	for _, id := range s.ids {
		s.mu.Lock()
		dead := s.dead[id]
		s.mu.Unlock()
		if dead {
			continue
		}
		s.nodes[id].waitFor(id+" knows the active "+active, 20*time.Second, func() bool {
			r := s.nodes[id].status().NodeManager
			return r != nil && r.Active == active
		})
	}
}

// checkSafe fails the test if two live hosts ever held the address, and
// checks the locator log of every node but skip for overlapping grants (a
// host killed early may have logged none).
func (s *nodeSet) checkSafe(skip ...string) {
	s.t.Helper()
	if d := s.dual.Load(); d > 0 {
		s.t.Errorf("%d samples saw two hosts holding the VIP", d)
	}
	s.checkGrants(skip...)
}

// checkPlanned is checkSafe for a run with planned handovers: two hosts
// may hold the address at once, the old one silent, for less than the
// lease the old one held (maxOverlap).
func (s *nodeSet) checkPlanned(skip ...string) {
	s.t.Helper()
	longest := time.Duration(s.longestDual.Load())
	s.t.Logf("two hosts held the VIP in %d samples, at most %v in a row (a planned handover's drain)", s.dual.Load(), longest)
	if longest >= maxOverlap {
		s.t.Errorf("two hosts held the VIP for %v in a row, want < %v (the old active's lease)", longest, maxOverlap)
	}
	s.checkGrants(skip...)
}

func (s *nodeSet) checkGrants(skip ...string) {
	s.t.Helper()
	for _, id := range s.ids {
		if !slices.Contains(skip, id) {
			checkGrants(s.t, id, s.nodes[id].log.String())
		}
	}
}

// Three nodes and no witness: every node runs a locator, the quorum is 2
// of 3. The floating IP is on one node; when that host dies it moves to
// one of the two others; when the node manager of that one then crashes,
// its supervisor releases the role and the third takes it (two locators
// of three still answer). At no sampled moment do two live hosts hold it.
func TestThreeNodesNoWitness(t *testing.T) {
	needRoot(t)
	s := newNodeSet(t, "three", []string{"a", "b", "c"}, func(string) string { return vipsYAML(testVIP) })
	first := s.waitHolder("one host holds the VIP", "", 30*time.Second)
	s.waitKnown(first)
	s.kill(first)
	second := s.waitHolder("the VIP moved after "+first+" died", "", 20*time.Second)
	if second == first {
		t.Fatalf("%s still holds the VIP", first)
	}
	t.Logf("%s died: the VIP moved to %s", first, second)

	third := ""
	for _, id := range s.ids {
		if id != first && id != second {
			third = id
		}
	}
	s.nodes[third].waitFor(third+" follows "+second, 20*time.Second, func() bool {
		r := s.nodes[third].status().NodeManager
		return r != nil && r.Role == "standby" && r.Active == second
	})
	if err := syscall.Kill(nmPid(t, s.nodes[second], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitHolder("the VIP on "+third+" after "+second+"'s node manager crashed", third, 20*time.Second)
	s.checkSafe(first)
}

// Eight nodes and no witness, the most the wire format allows: eight
// locators, a quorum of 5. Each death of the holder moves the floating IP
// to a survivor while five hosts or more are left; with four left no
// quorum is left either and nobody may take it; one host back makes five,
// and the address is held again. At no sampled moment do two live hosts
// hold it.
func TestEightNodesQuorumArithmetic(t *testing.T) {
	needRoot(t)
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	s := newNodeSet(t, "eight", ids, func(string) string { return vipsYAML(testVIP) })
	holder := s.waitHolder("one of eight holds the VIP", "", 60*time.Second)
	var killed []string
	for len(killed) < 3 {
		s.waitKnown(holder)
		s.kill(holder)
		killed = append(killed, holder)
		next := s.waitHolder(fmt.Sprintf("the VIP moved after %s died (%d of 8 left)", holder, 8-len(killed)), "", 30*time.Second)
		if slices.Contains(killed, next) {
			t.Fatalf("%s, dead, holds the VIP", next)
		}
		preferred := ""
		for _, id := range ids {
			if !slices.Contains(killed, id) {
				preferred = id
				break
			}
		}
		t.Logf("%s died: the VIP moved to %s (most preferred survivor %s)", holder, next, preferred)
		holder = next
	}

	// Four of eight left: below the quorum of 5.
	s.waitKnown(holder)
	s.kill(holder)
	killed = append(killed, holder)
	live := s.anyLive()
	live.waitFor("a survivor sees no quorum", 20*time.Second, func() bool {
		q := live.status().Quorum
		return q != nil && !q.OK && q.Needed == 5
	})
	// What must NOT happen: a holder without a quorum.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if hs := s.holders(); len(hs) > 0 {
			t.Fatalf("%v hold the VIP with four locators of eight (quorum 5)", hs)
		}
	}

	back := killed[0]
	s.revive(back)
	h := s.waitHolder(back+" back: five of eight hold a quorum again, and the VIP", "", 30*time.Second)
	t.Logf("%s back: the VIP on %s", back, h)
	s.checkSafe(killed...)
}
