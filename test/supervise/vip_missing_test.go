package supervise

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/supervisor"
)

// A floating IP on an interface this host does not have (a typo, a VLAN
// not configured yet): the one-node cluster's node holds the service, as no
// fit node can, but it is unhealthy and `vigil status` says so (exit 3, the
// address under vips_failed, a vip_error warning) instead of "healthy"
// with the address listed as held; the failure is logged once, not every
// retry. When the interface appears, the address is added and all of it
// clears.
func TestVIPOnMissingInterface(t *testing.T) {
	needRoot(t)
	n := netnstest.New(t, netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"})
	const missing = "vgmiss0"
	d := newDaemon(t, "")
	d.extra = vipsYAML(testVIP) + "  - {address: 192.0.2.101/24, interface: " + missing + "}\n"
	d.wrap = []string{"nsenter", "--net=/run/netns/" + n.Hosts["a"].NSName}
	d.writeConfig("")
	d.start()
	defer d.stop(10 * time.Second)

	d.waitFor("the node active, unhealthy, 192.0.2.101 failed", 20*time.Second, func() bool {
		nm := d.status().NodeManager
		return nm != nil && nm.Role == "active" && !nm.Healthy && len(nm.VIPsFailed) == 1
	})
	st := d.status()
	nm := st.NodeManager
	if want := []string{testVIP + "/24@" + netnstest.LinkName}; !slices.Equal(nm.VIPs, want) {
		t.Errorf("vips_held %q, want %q", nm.VIPs, want)
	}
	if f := nm.VIPsFailed[0]; f.VIP != "192.0.2.101/24@"+missing || f.Error == "" {
		t.Errorf("vips_failed %+v", nm.VIPsFailed)
	}
	if st.Healthy || !slices.Contains(st.Unhealthy, "interface "+missing+" down") {
		t.Errorf("status healthy=%v %q, want unhealthy with interface %s down", st.Healthy, st.Unhealthy, missing)
	}
	if !slices.ContainsFunc(st.Warnings, func(w supervisor.Warning) bool { return w.Kind == "vip_error" }) {
		t.Errorf("no vip_error warning in %+v", st.Warnings)
	}
	out, code := d.vigil("status", "--socket", d.socket)
	if code != 3 || !strings.Contains(out, "UNHEALTHY: interface "+missing+" down") {
		t.Errorf("vigil status exit %d, want 3 and the interface named:\n%s", code, out)
	}
	if !strings.Contains(d.log.String(), `"msg":"floating IPs held, some not added"`) {
		t.Errorf("the takeover line does not say an address is missing")
	}
	// Retried every 500 ms: four retries later, still one error line.
	first := strings.Count(d.log.String(), `"msg":"cannot add floating IP`)
	time.Sleep(2 * time.Second) // the behaviour under test is what does NOT happen in 2 s
	if n := strings.Count(d.log.String(), `"msg":"cannot add floating IP`); n != 1 || first != 1 {
		t.Errorf("%d then %d cannot-add lines, want 1", first, n)
	}
	if strings.Contains(d.log.String(), `"event":"vip_unfit"`) {
		t.Errorf("a missing interface counted as a refused address too (vip_unfit): the node would stay unfit after it appears")
	}

	// The interface appears: the address is added and the node is fit.
	h := n.Hosts["a"]
	if err := h.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: missing}, PeerName: missing + "p"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{missing, missing + "p"} {
		l, err := h.Handle.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Handle.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	d.waitFor("192.0.2.101 added and the node healthy", 20*time.Second, func() bool {
		st := d.status()
		return st.Healthy && st.NodeManager != nil && st.NodeManager.Healthy && len(st.NodeManager.VIPsFailed) == 0 && len(st.NodeManager.VIPs) == 2
	})
	l, err := h.Handle.LinkByName(missing)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Handle.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(net.IP(netip.MustParseAddr("192.0.2.101").AsSlice())) }) {
		t.Errorf("192.0.2.101 not on %s: %v", missing, addrs)
	}
	if !strings.Contains(d.log.String(), `"event":"vip_added"`) {
		t.Errorf("no vip_added line")
	}
}

// A floating IP the kernel refuses on an interface that is up: an ifb
// with an MTU below IPv4's 68 has no IPv4 configuration, so every add
// fails (ENOBUFS) while the link reports up. After a second of retries the
// node is unhealthy and says which address and why (a standby that can
// hold all of it would take the service; this one-node cluster has none,
// so it keeps it, degraded). With the MTU raised the next retry adds the
// address and the node is fit at once: it never let the service go.
func TestVIPRefusedOnInterfaceUp(t *testing.T) {
	needRoot(t)
	n := netnstest.New(t, netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"})
	h := n.Hosts["a"]
	const ifb = "vgifb0"
	l := addRefusingIfb(t, h, ifb)
	d := newDaemon(t, "")
	d.extra = vipsYAML(testVIP) + "  - {address: 192.0.2.101/24, interface: " + ifb + "}\n"
	d.wrap = []string{"nsenter", "--net=/run/netns/" + h.NSName}
	d.writeConfig("")
	d.start()
	defer d.stop(10 * time.Second)

	reason := "floating IP 192.0.2.101/24@" + ifb + " could not be added: "
	d.waitFor("the node active, unhealthy for 192.0.2.101", 20*time.Second, func() bool {
		st := d.status()
		return st.NodeManager != nil && st.NodeManager.Role == "active" && !st.Healthy &&
			slices.ContainsFunc(st.Unhealthy, func(r string) bool { return strings.HasPrefix(r, reason) })
	})
	st := d.status()
	if i := slices.IndexFunc(st.Unhealthy, func(r string) bool { return strings.HasPrefix(r, reason) }); !strings.Contains(st.Unhealthy[i], "no buffer space") {
		t.Errorf("reason %q does not carry the kernel's error", st.Unhealthy[i])
	}
	if nm := st.NodeManager; len(nm.VIPsFailed) != 1 || nm.VIPsFailed[0].VIP != "192.0.2.101/24@"+ifb {
		t.Errorf("vips_failed %+v", nm.VIPsFailed)
	}
	out, code := d.vigil("status", "--socket", d.socket)
	if code != 3 || !strings.Contains(out, reason) {
		t.Errorf("vigil status exit %d, want 3 and the address named:\n%s", code, out)
	}
	if n := strings.Count(d.log.String(), `"event":"vip_unfit"`); n != 1 {
		t.Errorf("%d vip_unfit lines, want 1", n)
	}

	if err := h.Handle.LinkSetMTU(l, 1500); err != nil {
		t.Fatal(err)
	}
	d.waitFor("192.0.2.101 added and the node healthy", 20*time.Second, func() bool {
		st := d.status()
		return st.Healthy && st.NodeManager != nil && st.NodeManager.Healthy && len(st.NodeManager.VIPsFailed) == 0 && len(st.NodeManager.VIPs) == 2
	})
	addrs, err := h.Handle.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(net.IP(netip.MustParseAddr("192.0.2.101").AsSlice())) }) {
		t.Errorf("192.0.2.101 not on %s: %v", ifb, addrs)
	}
}

// addRefusingIfb gives h an interface that is up but refuses every IPv4
// address (an ifb with an MTU below IPv4's 68 has no IPv4 configuration:
// the kernel answers ENOBUFS), or skips the test where the kernel has no
// ifb.
func addRefusingIfb(t *testing.T, h *netnstest.Host, name string) netlink.Link {
	t.Helper()
	if err := h.Handle.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Skipf("no ifb interface in this kernel (%v): nothing to refuse an address on an interface that is up", err)
	}
	l, err := h.Handle.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle.LinkSetMTU(l, 60); err != nil {
		t.Fatal(err)
	}
	if err := h.Handle.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

// Three nodes, the floating IP on a refused by a's kernel (a's file puts it
// on an ifb that refuses IPv4; b's and c's on their LAN interface): a,
// given the service, is unhealthy for it after a second of retries and b
// takes it over. a stays unhealthy for it (the 5-minute hold), so the
// service does not come back to the node that cannot hold it.
func TestRefusedVIPMovesTheService(t *testing.T) {
	needRoot(t)
	const ifb = "vgifb1"
	s := newNodeSetPrep(t, "refused", []string{"a", "b", "c"}, func(id string) string {
		iface := netnstest.LinkName
		if id == "a" {
			iface = ifb
		}
		return "vips:\n  - {address: " + testVIP + "/24, interface: " + iface + "}\n"
	}, "", func(n *netnstest.Net) { addRefusingIfb(t, n.Hosts["a"], ifb) })
	a := s.nodes["a"]
	var active string
	a.waitFor("an active node", 30*time.Second, func() bool {
		r := a.status().NodeManager
		if r != nil && r.Active != "" {
			active = r.Active
		}
		return active != ""
	})
	t.Logf("first active: %s", active)
	if active != "a" {
		// The service has to reach a for its kernel to refuse it.
		s.waitKnown(active)
		d := s.nodes[active]
		if out, code := d.vigil("switchover", "--to", "a", "--socket", d.socket); code != 0 {
			t.Fatalf("switchover from %s to a: exit %d\n%s", active, code, out)
		}
	}
	a.waitFor("a active", 20*time.Second, func() bool {
		r := a.status().NodeManager
		return r != nil && r.Role == "active"
	})
	aActive := time.Now()
	reason := "floating IP " + testVIP + "/24@" + ifb + " could not be added: "
	a.waitFor("a unhealthy for the refused address", 20*time.Second, func() bool {
		st := a.status()
		return !st.Healthy && slices.ContainsFunc(st.Unhealthy, func(r string) bool { return strings.HasPrefix(r, reason) })
	})
	s.waitHolder("b holds the VIP", "b", 20*time.Second)
	t.Logf("b holds the VIP %v after a was seen active", time.Since(aActive).Round(time.Millisecond))
	// No bounce: for the next 3 s b keeps it and a stays unfit.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) { // the behaviour under test is what does NOT happen
		if h := s.holder(); h != "b" {
			t.Fatalf("holder %q, want b to keep the service", h)
		}
		if r := a.status().NodeManager; r == nil || r.Healthy || r.Role == "active" {
			t.Fatalf("a's node manager %+v, want an unhealthy standby", r)
		}
	}
	if n := strings.Count(a.log.String(), `"event":"vip_unfit"`); n != 1 {
		t.Errorf("%d vip_unfit lines on a, want 1", n)
	}
	s.checkSafe()
}
