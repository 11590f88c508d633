package pktfilter

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/protocol"
)

// In a namespace: the filter lets a configured peer reach the port and
// drops a stranger in the kernel (counted), replaces a previous run's
// chain on a second Install, leaves another part's chain in the shared
// table alone, and Remove takes away only its own objects.
func TestFilterDropsStrangersOnly(t *testing.T) {
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "x", Addr: "192.0.2.66/24"},
	)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft (the CLI) is needed to inspect the table")
	}
	a := n.Hosts["a"]
	nft := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + a.NSName, "nft"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// Another part of Vigil (the lease filter) has its own chain there.
	nft("add", "table", "inet", Table)
	nft("add", "chain", "inet", Table, "lease_other")

	const port = 7400
	var conn *net.UDPConn
	if err := a.Run(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 11), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peers := []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("2001:db8::12")}
	var f *Filter
	for range 2 { // the second install is a restart of the process: it replaces
		var err error
		f, err = Install("nodemanager", port, peers, Options{NetNSFD: int(a.NS)})
		if err != nil {
			t.Fatalf("Install: %v", err)
		}
	}
	list := nft("list", "table", "inet", Table)
	if strings.Count(list, "udp dport 7400") != 2 || !strings.Contains(list, "@cluster_nodemanager_peers4") ||
		!strings.Contains(list, "192.0.2.12") || !strings.Contains(list, "2001:db8::12") || !strings.Contains(list, "lease_other") {
		t.Fatalf("table after two installs:\n%s", list)
	}

	send := func(host string, payload string) {
		t.Helper()
		if err := n.Hosts[host].Run(func() error {
			c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 11), Port: port})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(payload))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		send("x", "stranger")
	}
	send("b", "peer")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	nr, src, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the peer's datagram did not arrive: %v", err)
	}
	if string(buf[:nr]) != "peer" || src.Addr() != netip.MustParseAddr("192.0.2.12") {
		t.Fatalf("first datagram %q from %s, want the peer's (the stranger's were sent first)", buf[:nr], src)
	}
	sockets := socketInodes(t)
	if d, err := f.Dropped(); err != nil || d.Strangers != 5 || d.Tag != 0 {
		t.Errorf("Dropped = %+v, %v; want 5 strangers", d, err)
	}
	// Polled again and again over one kept netlink socket: closing one
	// makes the kernel take nf_tables' commit mutex and wait for a
	// kworker (see Filter.poll).
	polling := socketInodes(t)
	added := slices.DeleteFunc(slices.Clone(polling), func(s string) bool { return slices.Contains(sockets, s) })
	if len(added) != 1 {
		t.Fatalf("sockets kept open by Dropped: %v, want one", added)
	}
	for range 3 {
		if _, err := f.Dropped(); err != nil {
			t.Fatal(err)
		}
		if now := socketInodes(t); !slices.Equal(now, polling) {
			t.Fatalf("Dropped opened or closed a socket: sockets %v, were %v", now, polling)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := conn.ReadFromUDPAddrPort(buf); !errors.Is(err, netErrTimeout(err)) {
		t.Errorf("something more arrived: %v", err)
	}

	if err := f.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	list = nft("list", "table", "inet", Table)
	if strings.Contains(list, "cluster_") || !strings.Contains(list, "lease_other") {
		t.Fatalf("table after Remove:\n%s", list)
	}
	send("x", "stranger again")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if nr, _, err := conn.ReadFromUDPAddrPort(buf); err != nil || string(buf[:nr]) != "stranger again" {
		t.Fatalf("after Remove the stranger's datagram: %q, %v", buf[:nr], err)
	}
}

// netErrTimeout returns err when it is a timeout, so errors.Is matches it.
func netErrTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// With a tag, a peer's datagram reaches the port only if it is long
// enough to be Vigil's and carries the tag at its offset: a forger of the
// peer's address without the key is dropped in the kernel, counted apart
// from strangers.
func TestFilterDropsUntaggedFromPeer(t *testing.T) {
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
	)
	a := n.Hosts["a"]
	const port = 7402
	var conn *net.UDPConn
	if err := a.Run(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 11), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key := bytes.Repeat([]byte{7}, protocol.KeySize)
	tag := protocol.ClusterTag(key, "edge")
	f, err := Install("nodemanager", port, []netip.Addr{netip.MustParseAddr("192.0.2.12")}, Options{NetNSFD: int(a.NS), Tag: tag})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	defer f.Remove()

	good, err := protocol.Encode(key, protocol.Message{Type: protocol.MsgJoin, ClusterID: protocol.ClusterID("edge"), From: "b", To: "a", Incarnation: 1, Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := protocol.Encode(bytes.Repeat([]byte{8}, protocol.KeySize), protocol.Message{Type: protocol.MsgJoin, ClusterID: protocol.ClusterID("edge"), From: "b", To: "a", Incarnation: 1, Seq: 2})
	otherCluster, _ := protocol.Encode(key, protocol.Message{Type: protocol.MsgJoin, ClusterID: protocol.ClusterID("core"), From: "b", To: "a", Incarnation: 1, Seq: 3})
	short := good[:protocol.MinDatagram-1]
	// Right tag, truncated: long enough for the tag, too short for Vigil.
	send := func(payload []byte) {
		t.Helper()
		if err := n.Hosts["b"].Run(func() error {
			c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 11), Port: port})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(payload)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range [][]byte{otherKey, otherCluster, short, []byte("x"), nil} {
		send(p)
	}
	send(good)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	nr, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the tagged datagram did not arrive: %v", err)
	}
	if !bytes.Equal(buf[:nr], good) {
		t.Fatalf("first datagram to arrive is %d bytes, not the tagged one (the untagged were sent first)", nr)
	}
	if d, err := f.Dropped(); err != nil || d.Tag != 5 || d.Strangers != 0 {
		t.Errorf("Dropped = %+v, %v; want 5 without the tag", d, err)
	}
}

// socketInodes lists this process's open sockets, sorted.
func socketInodes(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}
