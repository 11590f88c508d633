// Package netnstest builds small throw-away networks of Linux network
// namespaces for tests: one "switch" namespace holding a bridge, and one
// namespace per host, each connected to the bridge by a veth pair whose host
// end is called eth0.
//
// Namespaces are named "<prefix>-<host>" and "<prefix>-sw", with a per-test
// prefix "vt<6 random hex>.p<pid>", and bind-mounted under /run/netns exactly
// like `ip netns add`, so `ip netns exec` (and therefore sipp, kamailio, ...)
// works in them. Everything is torn down in t.Cleanup, even when the test
// fails; namespaces left by a test binary that was killed (and so ran no
// cleanup) are removed by the next New once their owner PID is gone.
//
// The helper never touches the root namespace: the veth pairs are created
// directly in the switch namespace with their peer placed in the host
// namespace in the same netlink request, so no link ever appears in the root
// namespace. Tests must use only 192.0.2.0/24 and 2001:db8::/32 inside.
//
// Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); New skips
// the test otherwise.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/nsrun"
)

// LinkName is the name of every host's interface towards the switch.
const LinkName = "eth0"

// BridgeName is the bridge in the switch namespace.
const BridgeName = "br0"

// HostSpec describes one host to create.
type HostSpec struct {
	// Name is short ([a-z0-9]{1,10}): it names the namespace and the switch port.
	Name string
	// Addr is the IPv4 address of eth0 in CIDR form, e.g. "192.0.2.11/24".
	// Empty means no IPv4 address.
	Addr string
	// Addr6 is an optional IPv6 address of eth0, e.g. "2001:db8::11/64". It is
	// added with IFA_F_NODAD so it is usable at once.
	Addr6 string
}

// Host is one namespace of a Net.
type Host struct {
	Name   string
	NS     netns.NsHandle  // open handle on the namespace (closed in cleanup)
	NSName string          // name under /run/netns, for `ip netns exec`
	Handle *netlink.Handle // netlink handle acting inside NS
	Link   string          // the interface towards the switch, LinkName
	Port   string          // the bridge port of this host in the switch namespace
	Addr   netip.Prefix    // IPv4 address of Link (invalid if none)
	Addr6  netip.Prefix    // IPv6 address of Link (invalid if none)
	MAC    net.HardwareAddr
	net    *Net
}

// Net is the network New built.
type Net struct {
	Prefix       string
	Switch       netns.NsHandle
	SwitchName   string
	SwitchHandle *netlink.Handle
	Hosts        map[string]*Host
}

var (
	validName = regexp.MustCompile(`^[a-z0-9]{1,10}$`)
	ownedName = regexp.MustCompile(`^vt[0-9a-f]{6}\.p([0-9]+)-[a-z0-9]+$`)
)

// sweepStale deletes namespaces this package created in a process that no
// longer exists (a test binary killed by its timeout runs no cleanup).
// Namespaces of live processes, and names it did not make, are left alone.
func sweepStale(t TB) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		m := ownedName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if err := netns.DeleteNamed(e.Name()); err == nil {
			t.Logf("netnstest: removed stale namespace %s of dead pid %d", e.Name(), pid)
		}
	}
}

const netnsDir = "/run/netns"

// TB is the part of testing.TB that New uses, so that programs other than
// tests (the failover benchmark) can build networks too.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// New creates the switch and the hosts. It skips the test when not root,
// and inside the cgroup v2 VM (test/vm/v2: VIGIL_VM_GUEST=1), whose cloud
// kernel cannot make a bridge: such tests run on the host's kernel in make
// test. It fails the test (t.Fatal) on any other setup error; whatever was
// created is removed in t.Cleanup.
func New(t TB, hosts ...HostSpec) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netnstest: needs root to create network namespaces")
	}
	if os.Getenv("VIGIL_VM_GUEST") == "1" {
		t.Skip("netnstest: the cgroup v2 VM's kernel cannot make a bridge; this test runs on the host's kernel in make test")
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("netnstest: random prefix: %v", err)
	}
	sweepStale(t)
	// The owner's PID is part of the namespace names (not of any interface
	// name, which must stay short) so that a later run can remove what a
	// killed test binary could not.
	n := &Net{Prefix: fmt.Sprintf("vt%s.p%d", hex.EncodeToString(rnd[:]), os.Getpid()), Hosts: map[string]*Host{}}

	n.SwitchName = n.Prefix + "-sw"
	sw, err := newNamed(n.SwitchName)
	if err != nil {
		t.Fatalf("netnstest: create namespace %s: %v", n.SwitchName, err)
	}
	n.Switch = sw
	t.Cleanup(func() { deleteNamed(t, n.SwitchName, sw) })
	if n.SwitchHandle, err = netlink.NewHandleAt(sw, unix.NETLINK_ROUTE); err != nil {
		t.Fatalf("netnstest: netlink handle in %s: %v", n.SwitchName, err)
	}
	t.Cleanup(n.SwitchHandle.Close)

	off := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName}, MulticastSnooping: &off}
	if err := n.SwitchHandle.LinkAdd(br); err != nil {
		t.Fatalf("netnstest: add bridge in %s: %v", n.SwitchName, err)
	}
	brLink, err := n.SwitchHandle.LinkByName(BridgeName)
	if err != nil {
		t.Fatalf("netnstest: bridge in %s: %v", n.SwitchName, err)
	}
	// Forward without the default 15 s STP/learning delay.
	if err := n.SwitchHandle.LinkSetUp(brLink); err != nil {
		t.Fatalf("netnstest: bridge up in %s: %v", n.SwitchName, err)
	}

	for _, spec := range hosts {
		h, err := n.addHost(t, spec, brLink.Attrs().Index)
		if err != nil {
			t.Fatalf("netnstest: host %q: %v", spec.Name, err)
		}
		n.Hosts[spec.Name] = h
	}
	if err := n.waitUp(5 * time.Second); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	return n
}

// waitUp waits until every host link and switch port is operationally up.
// Until the kernel's link watch has handled the carrier change, a new veth
// has no queueing discipline and silently drops what is sent, and the bridge
// port does not forward: a test's first frames would be lost.
func (n *Net) waitUp(within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, h := range n.Hosts {
		for _, c := range []struct {
			handle *netlink.Handle
			name   string
		}{{h.Handle, h.Link}, {n.SwitchHandle, h.Port}} {
			for {
				l, err := c.handle.LinkByName(c.name)
				if err != nil {
					return fmt.Errorf("link %s: %w", c.name, err)
				}
				if l.Attrs().OperState == netlink.OperUp {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("link %s of host %s not up within %v (state %s)", c.name, h.Name, within, l.Attrs().OperState)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	return nil
}

func (n *Net) addHost(t TB, spec HostSpec, bridgeIndex int) (*Host, error) {
	if !validName.MatchString(spec.Name) {
		return nil, fmt.Errorf("name must match %s", validName)
	}
	if _, dup := n.Hosts[spec.Name]; dup {
		return nil, errors.New("duplicate host name")
	}
	h := &Host{Name: spec.Name, NSName: n.Prefix + "-" + spec.Name, Link: LinkName, Port: "p-" + spec.Name, net: n}
	for _, a := range []struct {
		s    string
		dst  *netip.Prefix
		want bool // want IPv4
	}{{spec.Addr, &h.Addr, true}, {spec.Addr6, &h.Addr6, false}} {
		if a.s == "" {
			continue
		}
		p, err := netip.ParsePrefix(a.s)
		if err != nil || p.Addr().Is4() != a.want {
			return nil, fmt.Errorf("bad address %q", a.s)
		}
		*a.dst = p
	}

	ns, err := newNamed(h.NSName)
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", h.NSName, err)
	}
	h.NS = ns
	t.Cleanup(func() { deleteNamed(t, h.NSName, ns) })
	if h.Handle, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", h.NSName, err)
	}
	t.Cleanup(h.Handle.Close)

	// Created in the switch namespace, peer placed directly in the host's.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Port, MasterIndex: bridgeIndex},
		PeerName:      LinkName,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := n.SwitchHandle.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s/%s: %w", h.Port, LinkName, err)
	}
	port, err := n.SwitchHandle.LinkByName(h.Port)
	if err != nil {
		return nil, fmt.Errorf("switch port %s: %w", h.Port, err)
	}
	if err := n.SwitchHandle.LinkSetUp(port); err != nil {
		return nil, fmt.Errorf("switch port %s up: %w", h.Port, err)
	}

	lo, err := h.Handle.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("lo in %s: %w", h.NSName, err)
	}
	if err := h.Handle.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("lo up in %s: %w", h.NSName, err)
	}
	link, err := h.Handle.LinkByName(LinkName)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", LinkName, h.NSName, err)
	}
	h.MAC = link.Attrs().HardwareAddr
	for _, p := range []netip.Prefix{h.Addr, h.Addr6} {
		if !p.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: PrefixIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.Handle.AddrAdd(link, a); err != nil {
			return nil, fmt.Errorf("add %s to %s in %s: %w", p, LinkName, h.NSName, err)
		}
	}
	if err := h.Handle.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("%s up in %s: %w", LinkName, h.NSName, err)
	}
	return h, nil
}

// PrefixIPNet converts p to the *net.IPNet netlink uses, keeping the host
// bits (192.0.2.11/24 stays 192.0.2.11, mask /24).
func PrefixIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// HasAddr reports whether the host's Link carries addr now (a floating IP
// test's "who holds it"). Errors read as false.
func (h *Host) HasAddr(addr netip.Addr) bool {
	link, err := h.Handle.LinkByName(h.Link)
	if err != nil {
		return false
	}
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.Handle.AddrList(link, family)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			return true
		}
	}
	return false
}

// Run runs fn on an OS thread switched into the host's namespace. Sockets fn
// opens stay in that namespace after Run returns.
func (h *Host) Run(fn func() error) error { return nsrun.In(h.NS, fn) }

// Command returns `ip netns exec <ns> name args...`; the process runs in the
// host's namespace (and, as ip does, in a private mount namespace with a /sys
// of that network namespace).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NSName, name}, args...)...)
}

// Sysctl writes value to /proc/sys/<key> (key with slashes, e.g.
// "net/ipv6/conf/eth0/accept_dad") inside the host's namespace.
func (h *Host) Sysctl(key, value string) error {
	return h.Run(func() error {
		p := filepath.Join("/proc/sys", filepath.Clean("/"+key))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, h.NSName, err)
		}
		return nil
	})
}

// SetPort brings this host's bridge port up or down, which makes the host's
// eth0 gain or lose carrier, like a cable pull.
func (h *Host) SetPort(up bool) error {
	sw := h.net.SwitchHandle
	l, err := sw.LinkByName(h.Port)
	if err != nil {
		return fmt.Errorf("switch port %s: %w", h.Port, err)
	}
	if up {
		return sw.LinkSetUp(l)
	}
	return sw.LinkSetDown(l)
}

// newNamed creates a network namespace bind-mounted at /run/netns/name. The
// unshare happens on a locked thread that is thrown away afterwards.
func newNamed(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		// Never unlocked: netns.NewNamed leaves this thread in the new
		// namespace, so the runtime must terminate it with the goroutine.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(name)
		c <- result{ns, err}
	}()
	r := <-c
	return r.ns, r.err
}

func deleteNamed(t TB, name string, ns netns.NsHandle) {
	_ = ns.Close()
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netnstest: delete namespace %s: %v", name, err)
	}
}
