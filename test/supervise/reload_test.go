package supervise

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// testVIP2 is the floating IP a reload adds next to testVIP.
const testVIP2 = "192.0.2.101"

// vipsYAML is the vips: section of a node holding addrs.
func vipsYAML(addrs ...string) string {
	s := "vips:\n"
	for _, a := range addrs {
		s += fmt.Sprintf("  - {address: %s/24, interface: %s}\n", a, netnstest.LinkName)
	}
	return s
}

// holdsAddr reports whether host id has addr on its interface now.
func (c *vipCluster) holdsAddr(id, addr string) bool { return c.addrSet(id)[addr] }

// reloadWith rewrites the node's vips: section and sends its supervisor
// SIGHUP, as `systemctl reload vigil` would.
func reloadWith(t *testing.T, d *daemon, extra string) {
	t.Helper()
	d.extra = extra
	d.writeConfig("")
	pid := d.sigPid
	if pid == 0 {
		pid = d.cmd.Process.Pid
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// logEvent is one JSON log line of a daemon (its supervisor's or its
// control plane's), with the fields these tests read.
type logEvent struct {
	Msg    string  `json:"msg"`
	Event  string  `json:"event"`
	Role   string  `json:"role"`
	VIP    string  `json:"vip"`
	Keys   string  `json:"keys"`
	Err    string  `json:"err"`
	From   string  `json:"from"`
	To     string  `json:"to"`
	Epoch  uint64  `json:"epoch"`
	Reason string  `json:"reason"`
	TookMS float64 `json:"took_ms"`
	// Process and Status: a process's start/exit lines.
	Process string `json:"process"`
	Status  string `json:"status"`
	// raw is the line as logged, for messages.
	raw string
}

// events returns the daemon's log events named event, in order.
func events(d *daemon, event string) []logEvent {
	var out []logEvent
	for _, line := range strings.Split(d.log.String(), "\n") {
		if !strings.Contains(line, `"event":"`+event+`"`) {
			continue
		}
		var e logEvent
		if json.Unmarshal([]byte(line), &e) != nil || e.Event != event {
			continue
		}
		e.raw = line
		out = append(out, e)
	}
	return out
}

// addrProber samples, every 2 ms, whether each address is on host a and on
// host b. It counts samples in which both held one address (dual) and
// samples in which a watched host was missing a watched address (gaps).
type addrProber struct {
	c     *vipCluster
	addrs []string
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	samples int
	dual    map[string]int
	gapHost string // whose gapAddr must never be missing ("" = none)
	gapAddr string
	gaps    int
}

func (c *vipCluster) addrProbe(gapHost, gapAddr string, addrs ...string) *addrProber {
	p := &addrProber{c: c, addrs: addrs, stop: make(chan struct{}), done: make(chan struct{}),
		dual: map[string]int{}, gapHost: gapHost, gapAddr: gapAddr}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var dual []string
			for _, a := range p.addrs {
				if c.holdsAddr("a", a) && c.holdsAddr("b", a) {
					dual = append(dual, a)
				}
			}
			gap := p.gapHost != "" && !c.holdsAddr(p.gapHost, p.gapAddr)
			p.mu.Lock()
			p.samples++
			for _, a := range dual {
				p.dual[a]++
			}
			if gap {
				p.gaps++
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// check reports what the prober saw so far as test errors.
func (p *addrProber) check(t *testing.T, when string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.samples < 50 {
		t.Errorf("%s: the prober took only %d samples", when, p.samples)
	}
	for a, n := range p.dual {
		t.Errorf("%s: both hosts held %s in %d of %d samples", when, a, n, p.samples)
	}
	if p.gaps > 0 {
		t.Errorf("%s: %s was missing on %s in %d of %d samples", when, p.gapAddr, p.gapHost, p.gaps, p.samples)
	}
}

func (p *addrProber) end() {
	close(p.stop)
	<-p.done
}

// deletions counts every removal of addr from host id's namespace, from
// the kernel's own address notifications: a remove and re-add faster than
// the 2 ms prober still shows here.
type deletions struct {
	mu   sync.Mutex
	n    int
	done chan struct{}
	end  chan struct{}
}

func (c *vipCluster) watchDeletions(t *testing.T, id, addr string) *deletions {
	t.Helper()
	ns := c.net.Hosts[id].NS
	updates := make(chan netlink.AddrUpdate, 256)
	d := &deletions{done: make(chan struct{}), end: make(chan struct{})}
	if err := netlink.AddrSubscribeWithOptions(updates, d.done, netlink.AddrSubscribeOptions{Namespace: &ns, ReceiveBufferSize: 1 << 20}); err != nil {
		t.Fatalf("subscribe to %s's addresses: %v", id, err)
	}
	want := netip.MustParseAddr(addr)
	go func() {
		defer close(d.end)
		for u := range updates {
			if ip, ok := netip.AddrFromSlice(u.LinkAddress.IP.To4()); ok && ip == want && !u.NewAddr {
				d.mu.Lock()
				d.n++
				d.mu.Unlock()
			}
		}
	}()
	return d
}

// stop ends the watch and returns the removals seen.
func (d *deletions) stop() int {
	close(d.done)
	select {
	case <-d.end:
	case <-time.After(2 * time.Second): // the library closes the channel after its next read
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// settledVIPCluster returns a VIP cluster whose active holds the VIP and
// whose standby follows it, and the two as a cluster for reports.
func settledVIPCluster(t *testing.T) (*vipCluster, *cluster, string, string) {
	t.Helper()
	c := newVIPCluster(t)
	cl, act, stby := c.settle()
	return c, cl, act, stby
}

// roleLines counts a daemon's role transitions logged so far.
func roleLines(d *daemon) int { return len(events(d, "role")) }

// A reload that adds a floating IP claims it on the active only, and one
// that removes it releases only it: the first VIP is never missing on the
// active (sampled every 2 ms), no address is ever on both hosts, and the
// role does not move (same active, same epoch, no role transition, no node
// manager restart).
func TestReloadVIPsInPlace(t *testing.T) {
	c, cl, act, stby := settledVIPCluster(t)
	r0, _ := cl.report(act)
	nmPids := map[string]int{act: nmPid(t, c.nodes[act], "nodemanager"), stby: nmPid(t, c.nodes[stby], "nodemanager")}
	roles := map[string]int{act: roleLines(c.nodes[act]), stby: roleLines(c.nodes[stby])}
	pr := c.addrProbe(act, testVIP, testVIP, testVIP2)
	defer pr.end()
	dels := c.watchDeletions(t, act, testVIP)

	// (a) add testVIP2 on both nodes, the standby first.
	reloadWith(t, c.nodes[stby], vipsYAML(testVIP, testVIP2))
	reloadWith(t, c.nodes[act], vipsYAML(testVIP, testVIP2))
	c.nodes[act].waitFor("the active holds the added VIP", 10*time.Second, func() bool { return c.holdsAddr(act, testVIP2) })
	for _, id := range []string{act, stby} {
		c.nodes[id].waitFor(id+" applied the reload", 10*time.Second, func() bool { return len(events(c.nodes[id], "reload_applied")) >= 1 })
	}
	time.Sleep(time.Second) // let a wrong move show
	if c.holdsAddr(stby, testVIP2) || c.holdsAddr(stby, testVIP) {
		t.Errorf("the standby %s holds a floating IP after the reload", stby)
	}
	if !c.holdsAddr(act, testVIP) || !c.holdsAddr(act, testVIP2) {
		t.Errorf("the active %s does not hold both floating IPs", act)
	}
	added := events(c.nodes[act], "vip_added")
	if len(added) != 1 || !strings.HasPrefix(added[0].VIP, testVIP2+"/") {
		t.Errorf("active: want one vip_added for %s, got %+v", testVIP2, added)
	}
	if n := len(events(c.nodes[stby], "vip_added")); n != 0 {
		t.Errorf("the standby claimed %d VIPs on reload", n)
	}
	pr.check(t, "adding a VIP by reload")

	// (b) remove it again.
	reloadWith(t, c.nodes[act], vipsYAML(testVIP))
	reloadWith(t, c.nodes[stby], vipsYAML(testVIP))
	c.nodes[act].waitFor("the removed VIP is gone from the active", 10*time.Second, func() bool { return !c.holdsAddr(act, testVIP2) })
	for _, id := range []string{act, stby} {
		c.nodes[id].waitFor(id+" applied the second reload", 10*time.Second, func() bool { return len(events(c.nodes[id], "reload_applied")) >= 2 })
	}
	time.Sleep(500 * time.Millisecond)
	if !c.holdsAddr(act, testVIP) {
		t.Errorf("the active %s lost the VIP it kept", act)
	}
	if c.holdsAddr(stby, testVIP2) || c.holdsAddr(act, testVIP2) {
		t.Errorf("%s is still held after its removal", testVIP2)
	}
	removed := events(c.nodes[act], "vip_removed")
	if len(removed) != 1 || !strings.HasPrefix(removed[0].VIP, testVIP2+"/") {
		t.Errorf("active: want one vip_removed for %s, got %+v", testVIP2, removed)
	}
	pr.check(t, "removing a VIP by reload")
	if n := dels.stop(); n != 0 {
		t.Errorf("the kernel removed %s from the active %d times during the reloads", testVIP, n)
	}

	// The role never moved.
	if a := cl.active(); a != act {
		t.Errorf("the active role moved from %s to %q", act, a)
	}
	if r1, _ := cl.report(act); r1.Epoch != r0.Epoch {
		t.Errorf("the epoch changed %d -> %d across the reloads", r0.Epoch, r1.Epoch)
	}
	for id, pid := range nmPids {
		if now := nmPid(t, c.nodes[id], "nodemanager"); now != pid {
			t.Errorf("%s: the node manager was restarted (pid %d -> %d)", id, pid, now)
		}
		if n := roleLines(c.nodes[id]); n != roles[id] {
			t.Errorf("%s: %d role transitions during the reloads", id, n-roles[id])
		}
		if d := events(c.nodes[id], "reload_deferred"); len(d) != 0 {
			t.Errorf("%s: a VIP-only reload was deferred: %s", id, d[0].raw)
		}
	}
}

// A reload with an invalid file is refused with every error, and changes
// nothing: no VIP added, none removed, the role where it was; the next
// valid reload works.
func TestReloadInvalidConfigRefused(t *testing.T) {
	c, cl, act, stby := settledVIPCluster(t)
	r0, _ := cl.report(act)
	roles := roleLines(c.nodes[act])
	pr := c.addrProbe(act, testVIP, testVIP, testVIP2)
	defer pr.end()
	dels := c.watchDeletions(t, act, testVIP)

	// Two errors: a VIP without a prefix length, and an unknown key.
	bad := fmt.Sprintf("vips:\n  - {address: %s/24, interface: %s}\n  - {address: %s, interface: %s}\nbogus: 1\n",
		testVIP, netnstest.LinkName, testVIP2, netnstest.LinkName)
	reloadWith(t, c.nodes[act], bad)
	var refused []logEvent
	c.nodes[act].waitFor("the reload refused", 10*time.Second, func() bool {
		refused = events(c.nodes[act], "reload_refused")
		return len(refused) >= 2
	})
	all := ""
	for _, e := range refused {
		all += e.Err + "\n"
	}
	if !strings.Contains(all, "vips[1].address") || !strings.Contains(all, "bogus") {
		t.Errorf("the refusal does not name both errors:\n%s", all)
	}
	time.Sleep(time.Second)
	if c.holdsAddr(act, testVIP2) || c.holdsAddr(stby, testVIP2) {
		t.Errorf("the refused config's VIP %s was added", testVIP2)
	}
	if n := len(events(c.nodes[act], "reload")); n != 0 {
		t.Errorf("a refused reload was applied (%d reload events)", n)
	}
	if n := len(events(c.nodes[act], "reload_applied")) + len(events(c.nodes[act], "vips_reloaded")); n != 0 {
		t.Errorf("the node manager was sent a refused config")
	}
	if s := c.nodes[act].status(); s.Supervisor.Reloads != 0 {
		t.Errorf("status counts %d reloads after a refused one", s.Supervisor.Reloads)
	}
	pr.check(t, "refused reload")

	// The same file, fixed, reloads (and changes nothing: the VIPs are the
	// ones in force).
	reloadWith(t, c.nodes[act], vipsYAML(testVIP))
	c.nodes[act].waitFor("the fixed file reloaded", 10*time.Second, func() bool { return len(events(c.nodes[act], "reload")) == 1 })
	time.Sleep(500 * time.Millisecond)
	if n := len(events(c.nodes[act], "vips_reloaded")); n != 0 {
		t.Errorf("an unchanged VIP list was re-applied")
	}
	pr.check(t, "valid reload after a refused one")
	if n := dels.stop(); n != 0 {
		t.Errorf("the kernel removed %s from the active %d times", testVIP, n)
	}
	if a := cl.active(); a != act {
		t.Errorf("the active role moved from %s to %q", act, a)
	}
	if r1, _ := cl.report(act); r1.Epoch != r0.Epoch {
		t.Errorf("the epoch changed %d -> %d", r0.Epoch, r1.Epoch)
	}
	if n := roleLines(c.nodes[act]); n != roles {
		t.Errorf("%d role transitions", n-roles)
	}
}

// A reload that lands in the middle of a failover (the active's node
// manager killed, both nodes reloaded at once with a second VIP) ends with
// one host holding both VIPs, never both hosts one.
func TestReloadDuringFailover(t *testing.T) {
	c, cl, act, stby := settledVIPCluster(t)
	pr := c.addrProbe("", "", testVIP, testVIP2)
	defer pr.end()

	if err := syscall.Kill(nmPid(t, c.nodes[act], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	reloadWith(t, c.nodes[act], vipsYAML(testVIP, testVIP2))
	reloadWith(t, c.nodes[stby], vipsYAML(testVIP, testVIP2))

	var holder string
	c.nodes["a"].waitFor("one host holds both VIPs", 20*time.Second, func() bool {
		holder = ""
		for _, id := range []string{"a", "b"} {
			other := map[string]string{"a": "b", "b": "a"}[id]
			if c.holdsAddr(id, testVIP) && c.holdsAddr(id, testVIP2) && !c.holdsAddr(other, testVIP) && !c.holdsAddr(other, testVIP2) {
				holder = id
			}
		}
		return holder != "" && cl.active() == holder
	})
	// The killed node manager is back, as standby, with the new list.
	other := map[string]string{"a": "b", "b": "a"}[holder]
	cl.waitFor("the other node follows the active", func() bool {
		r, ok := cl.report(other)
		return ok && r.Role == "standby" && r.Active == holder
	})
	time.Sleep(time.Second)
	if c.holdsAddr(other, testVIP) || c.holdsAddr(other, testVIP2) {
		t.Errorf("the standby %s holds a floating IP", other)
	}
	if !c.holdsAddr(holder, testVIP) || !c.holdsAddr(holder, testVIP2) {
		t.Errorf("the active %s lost a floating IP", holder)
	}
	pr.check(t, "reload during a failover")
	t.Logf("active before %s, after %s", act, holder)
}

// A node that takes the role over logs one event=failover line: from the
// node that was active, to itself, the new epoch, why (its node manager
// was killed: crash_release when its supervisor released the role in its
// name, token_lost when that fell back to the lease, e.g. the release
// raced the report that names the successor) and how long from the
// decision to the floating IPs announced. Every transition to active has
// exactly one.
func TestFailoverLogLine(t *testing.T) {
	c, cl, act, stby := settledVIPCluster(t)
	r0, _ := cl.report(act)
	before := len(events(c.nodes[stby], "failover"))
	if err := syscall.Kill(nmPid(t, c.nodes[act], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.nodes[stby].waitFor("the standby takes over", 20*time.Second, func() bool {
		return c.holder() == stby && cl.active() == stby
	})
	cl.waitFor("the killed node manager is back as standby", func() bool {
		r, ok := cl.report(act)
		return ok && r.Role == "standby" && r.Active == stby
	})
	time.Sleep(500 * time.Millisecond)
	fo := events(c.nodes[stby], "failover")[before:]
	if len(fo) != 1 {
		t.Fatalf("%d failover lines on %s after the kill, want 1", len(fo), stby)
	}
	f := fo[0]
	r1, _ := cl.report(stby)
	if f.From != act || f.To != stby || (f.Reason != "crash_release" && f.Reason != "token_lost") || f.Epoch <= r0.Epoch || f.Epoch > r1.Epoch {
		t.Errorf("failover line %s: want from=%s to=%s reason=crash_release or token_lost epoch in (%d, %d]", f.raw, act, stby, r0.Epoch, r1.Epoch)
	}
	if !strings.Contains(f.raw, `"took_ms":`) || f.TookMS < 0 || f.TookMS > 5000 {
		t.Errorf("failover line %s: took_ms missing or absurd", f.raw)
	}
	// Exactly once per transition, on both nodes (the first election
	// included), and never on the node that lost the role.
	for _, id := range []string{"a", "b"} {
		active := 0
		for _, e := range events(c.nodes[id], "role") {
			if e.Role == "active" {
				active++
			}
		}
		if n := len(events(c.nodes[id], "failover")); n != active {
			t.Errorf("%s: %d failover lines for %d transitions to active", id, n, active)
		}
	}
}

// A reload changes the transition hooks in place: the node managers keep
// running, and the next transition runs the new hooks under the new
// timeout.
func TestReloadHooks(t *testing.T) {
	c := newCluster(t)
	first, second := c.activeAndStandby()
	out := filepath.Join(t.TempDir(), "hooks.out")
	pids := map[string]int{}
	for _, id := range []string{"a", "b"} {
		pids[id] = nmPid(t, c.nodes[id], "nodemanager")
		reloadWith(t, c.nodes[id], fmt.Sprintf(`hooks:
  timeout: 2s
  on_active: [[/bin/sh, -c, "echo $VIGIL_EVENT $VIGIL_NODE >> %[1]s"]]
  on_standby: [[/bin/sh, -c, "echo $VIGIL_EVENT $VIGIL_NODE >> %[1]s"]]
`, out))
	}
	for _, id := range []string{"a", "b"} {
		c.nodes[id].waitFor(id+" applied the hooks", 10*time.Second, func() bool {
			return len(events(c.nodes[id], "hooks_reloaded")) == 1 && len(events(c.nodes[id], "reload_applied")) == 1
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a hook ran on reload, without a transition")
	}
	if o, code := c.nodes[first].vigil("switchover", "--socket", c.nodes[first].socket, "--to", second); code != 0 {
		t.Fatalf("switchover: %d %s", code, o)
	}
	var got string
	c.nodes["a"].waitFor("the new hooks ran", 10*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		got = string(b)
		return strings.Count(got, "\n") == 2
	})
	if !strings.Contains(got, "active "+second+"\n") || !strings.Contains(got, "standby "+first+"\n") {
		t.Errorf("hooks after the reload ran as %q", got)
	}
	for id, pid := range pids {
		if now := nmPid(t, c.nodes[id], "nodemanager"); now != pid {
			t.Errorf("%s: the node manager was restarted by the reload (pid %d -> %d)", id, pid, now)
		}
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// A reload that puts a VIP on an interface the node manager did not watch
// makes it watch that interface too: on the active by claiming the address
// there, on the standby by rebuilding its watch. The standby then sees that
// interface go down (it reports itself unhealthy) and come back.
func TestReloadNewInterface(t *testing.T) {
	c, cl, act, stby := settledVIPCluster(t)
	// A veth pair inside each host's namespace: an Ethernet interface with
	// a carrier, without a kernel module the host may lack.
	const ifn, addr = "vx0", "198.51.100.10"
	for _, id := range []string{"a", "b"} {
		h := c.net.Hosts[id].Handle
		link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifn}, PeerName: "vx1"}
		if err := h.LinkAdd(link); err != nil {
			t.Fatalf("%s: add %s: %v", id, ifn, err)
		}
		for _, n := range []string{ifn, "vx1"} {
			l, err := h.LinkByName(n)
			if err == nil {
				err = h.LinkSetUp(l)
			}
			if err != nil {
				t.Fatalf("%s: %s up: %v", id, n, err)
			}
		}
	}
	extra := vipsYAML(testVIP) + fmt.Sprintf("  - {address: %s/24, interface: %s}\n", addr, ifn)
	reloadWith(t, c.nodes[stby], extra)
	reloadWith(t, c.nodes[act], extra)
	holdsOn := func(id string) bool {
		h := c.net.Hosts[id].Handle
		link, err := h.LinkByName(ifn)
		if err != nil {
			return false
		}
		addrs, _ := h.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.String() == addr {
				return true
			}
		}
		return false
	}
	c.nodes[act].waitFor("the active holds the VIP on "+ifn, 10*time.Second, func() bool { return holdsOn(act) })
	c.nodes[stby].waitFor("the standby applied the reload", 10*time.Second, func() bool { return len(events(c.nodes[stby], "reload_applied")) == 1 })
	if holdsOn(stby) {
		t.Errorf("the standby holds %s", addr)
	}

	health := func(id string) (bool, []string) {
		st := c.nodes[id].status()
		if st.NodeManager == nil {
			return true, nil
		}
		return st.NodeManager.Healthy, st.NodeManager.UnhealthyReasons
	}
	link, err := c.net.Hosts[stby].Handle.LinkByName(ifn)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.net.Hosts[stby].Handle.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	c.nodes[stby].waitFor("the standby sees "+ifn+" down", 10*time.Second, func() bool {
		ok, why := health(stby)
		return !ok && strings.Contains(strings.Join(why, ","), ifn)
	})
	if err := c.net.Hosts[stby].Handle.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	c.nodes[stby].waitFor("the standby sees "+ifn+" up again", 10*time.Second, func() bool {
		ok, _ := health(stby)
		return ok
	})
	if a := cl.active(); a != act {
		t.Errorf("the active role moved from %s to %q", act, a)
	}
	if !c.holdsAddr(act, testVIP) || !holdsOn(act) {
		t.Errorf("the active %s does not hold both VIPs", act)
	}
}
