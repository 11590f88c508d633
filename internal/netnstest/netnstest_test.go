package netnstest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// udpEcho checks that a datagram from host from reaches host to at dst and
// that the reply comes back, with sockets opened inside the namespaces.
func udpEcho(t *testing.T, from, to *Host, dst netip.Addr) {
	t.Helper()
	var srv *net.UDPConn
	if err := to.Run(func() (err error) {
		srv, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IP(dst.AsSlice())})
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to.Name, err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, peer, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDP(buf[:n], peer)
		}
	}()

	var cli *net.UDPConn
	if err := from.Run(func() (err error) {
		cli, err = net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatalf("dial in %s: %v", from.Name, err)
	}
	defer cli.Close()
	msg := []byte("ping " + from.Name + " -> " + to.Name)
	buf := make([]byte, 1500)
	// Retry: the first datagram may wait on neighbour resolution.
	for i := 0; i < 20; i++ {
		if _, err := cli.Write(msg); err != nil {
			t.Fatalf("send from %s: %v", from.Name, err)
		}
		_ = cli.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := cli.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("echo %q, want %q", buf[:n], msg)
			}
			return
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("recv in %s: %v", from.Name, err)
		}
	}
	t.Fatalf("no UDP echo from %s (%s) to %s", from.Name, dst, to.Name)
}

func TestTwoHostsEcho(t *testing.T) {
	n := New(t,
		HostSpec{Name: "a", Addr: "192.0.2.11/24", Addr6: "2001:db8::11/64"},
		HostSpec{Name: "b", Addr: "192.0.2.12/24", Addr6: "2001:db8::12/64"},
	)
	a, b := n.Hosts["a"], n.Hosts["b"]
	udpEcho(t, a, b, b.Addr.Addr())
	udpEcho(t, b, a, a.Addr.Addr())
	udpEcho(t, a, b, b.Addr6.Addr())

	// The namespaces are usable by `ip netns exec`, as sipp needs.
	out, err := a.Command("ip", "-o", "addr", "show", "dev", LinkName).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "192.0.2.11/24") {
		t.Fatalf("ip netns exec shows %q, want 192.0.2.11/24 on %s", out, LinkName)
	}
	if a.MAC.String() == b.MAC.String() || len(a.MAC) != 6 {
		t.Fatalf("MACs a=%s b=%s", a.MAC, b.MAC)
	}
	for _, c := range []struct {
		h    *Host
		addr string
		want bool
	}{{a, "192.0.2.11", true}, {a, "2001:db8::11", true}, {a, "192.0.2.12", false}, {b, "2001:db8::12", true}, {b, "2001:db8::11", false}} {
		if got := c.h.HasAddr(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("%s.HasAddr(%s) = %v, want %v", c.h.Name, c.addr, got, c.want)
		}
	}

	// The hosts are not in the test process's own namespace.
	root, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, h := range n.Hosts {
		if h.NS.Equal(root) {
			t.Fatalf("host %s is in the root namespace", h.Name)
		}
	}
}

func TestCleanupRemovesNamespaces(t *testing.T) {
	var names []string
	t.Run("build", func(t *testing.T) {
		n := New(t, HostSpec{Name: "x", Addr: "192.0.2.21/24"})
		names = append(names, n.SwitchName, n.Hosts["x"].NSName)
		for _, name := range names {
			if _, err := os.Stat(filepath.Join(netnsDir, name)); err != nil {
				t.Fatalf("namespace %s not visible: %v", name, err)
			}
		}
	})
	if len(names) == 0 {
		t.Skip("subtest skipped")
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still present after cleanup (err=%v)", name, err)
		}
	}
}

func TestSweepStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("netnstest: needs root to create network namespaces")
	}
	// A namespace left by a dead owner: pid 2^22+1 is above any pid_max.
	dead := "vt0badc0.p4194305-a"
	alive := fmt.Sprintf("vt0badc0.p%d-a", os.Getpid())
	for _, name := range []string{dead, alive} {
		ns, err := newNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	}
	sweepStale(t)
	if _, err := os.Stat(filepath.Join(netnsDir, dead)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale %s not swept (err=%v)", dead, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, alive)); err != nil {
		t.Errorf("live %s swept: %v", alive, err)
	}
}
