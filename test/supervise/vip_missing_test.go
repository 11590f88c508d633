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
	if err := h.Handle.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: ifb}}); err != nil {
		t.Skipf("no ifb interface in this kernel (%v): nothing to refuse an address on an interface that is up", err)
	}
	l, err := h.Handle.LinkByName(ifb)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle.LinkSetMTU(l, 60); err != nil {
		t.Fatal(err)
	}
	if err := h.Handle.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
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
