package neightest

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/vigil-project/vigil/internal/netnstest"
)

func twoHosts(t *testing.T) (a, b *netnstest.Host) {
	t.Helper()
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24", Addr6: "2001:db8::11/64"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24", Addr6: "2001:db8::12/64"},
	)
	return n.Hosts["a"], n.Hosts["b"]
}

func inHost(t *testing.T, h *netnstest.Host, fn func(ifi *net.Interface) error) {
	t.Helper()
	if err := h.Run(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		return fn(ifi)
	}); err != nil {
		t.Fatalf("in %s: %v", h.Name, err)
	}
}

// A real kernel answers the client's request for an address its host
// holds, and nothing answers for one nobody holds.
func TestARPClientAgainstKernel(t *testing.T) {
	a, b := twoHosts(t)
	var c *ARPClient
	var own netip.Addr
	inHost(t, a, func(ifi *net.Interface) (err error) {
		if own, err = InterfaceIPv4(ifi); err != nil {
			return err
		}
		c, err = DialARP(ifi)
		return err
	})
	t.Cleanup(func() { c.Close() })
	if own != a.Addr.Addr() {
		t.Fatalf("InterfaceIPv4 = %s, want %s", own, a.Addr.Addr())
	}
	// replies sends one request and collects the replies to it within wait.
	replies := func(target netip.Addr, wait time.Duration) []ARP {
		t.Helper()
		if err := c.Request(own, target); err != nil {
			t.Fatal(err)
		}
		var got []ARP
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		for {
			p, err := c.Read()
			if IsTimeout(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Op == ARPReply && p.TargetIP == own {
				got = append(got, p)
			}
		}
		return got
	}
	got := replies(b.Addr.Addr(), 2*time.Second)
	if len(got) != 1 || got[0].SenderIP != b.Addr.Addr() || !bytes.Equal(got[0].SenderMAC, b.MAC) || !bytes.Equal(got[0].TargetMAC, a.MAC) {
		t.Fatalf("replies for b's address: %+v, want one from %s", got, b.MAC)
	}
	if got := replies(netip.MustParseAddr("192.0.2.13"), 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("replies for an address nobody holds: %+v", got)
	}
}

// A real kernel advertises an address its host holds in answer to the
// client's solicitation, and the solicitation is what a receiver accepts:
// hop limit 255, to the solicited-node group, with a checksum that
// ICMPv6Checksum verifies (so its pseudo-header is the kernel's).
func TestNDPClientAgainstKernel(t *testing.T) {
	a, b := twoHosts(t)
	var c *NDPConn
	inHost(t, a, func(ifi *net.Interface) (err error) {
		c, err = ListenNDP(ifi, a.Addr6.Addr())
		return err
	})
	t.Cleanup(func() { c.Close() })
	var capt *packet.Conn
	inHost(t, b, func(ifi *net.Interface) (err error) {
		capt, err = packet.Listen(ifi, packet.Raw, 0x86dd, nil)
		return err
	})
	t.Cleanup(func() { capt.Close() })

	// advertisements sends one NS and collects the NAs within wait.
	advertisements := func(target netip.Addr, wait time.Duration) []NA {
		t.Helper()
		if err := c.Solicit(target); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		var got []NA
		for {
			na, from, err := c.ReadNA()
			if IsTimeout(err) {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
			if from != target {
				t.Errorf("NA from %s, asked %s", from, target)
			}
			got = append(got, na)
		}
	}
	target := b.Addr6.Addr()
	// Up to three solicitations a second apart, as a host's neighbour
	// discovery sends them (RFC 4861 MAX_MULTICAST_SOLICIT): a single one
	// went unanswered once in CI on a loaded machine (0 advertisements in
	// 2 s; the cause was not found). Each that arrives is answered once.
	var got []NA
	for try := 0; try < 3 && len(got) == 0; try++ {
		got = advertisements(target, time.Second)
	}
	if len(got) != 1 {
		t.Fatalf("%d advertisements for b's address: %+v", len(got), got)
	}
	na := got[0]
	if !na.Solicited || na.Router || na.Target != target || len(na.Options) != 1 ||
		na.Options[0].Type != OptTargetLinkLayer || !bytes.Equal(na.Options[0].MAC(), b.MAC) {
		t.Fatalf("NA %+v", na)
	}
	if got := advertisements(netip.MustParseAddr("2001:db8::13"), 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("advertisements for an address nobody holds: %+v", got)
	}

	// The first NS as b's link saw it.
	buf := make([]byte, 1514)
	if err := capt.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		n, _, err := capt.ReadFrom(buf)
		if err != nil {
			t.Fatalf("b saw no NS for %s: %v", target, err)
		}
		f := buf[:n]
		if len(f) < 14+40+24 || f[14+6] != 58 || f[14+40] != TypeNeighborSolicitation {
			continue
		}
		ip := f[14:]
		src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		msg := ip[40 : 40+plen]
		m, err := ParseNDP(msg)
		if err != nil {
			t.Fatal(err)
		}
		ns := m.(NS)
		if ns.Target != target {
			continue
		}
		if ip[7] != 255 || src != a.Addr6.Addr() || dst != SolicitedNode(target) {
			t.Fatalf("NS hop limit %d, %s -> %s", ip[7], src, dst)
		}
		if !bytes.Equal(f[0:6], []byte{0x33, 0x33, 0xff, 0, 0, 0x12}) {
			t.Errorf("NS Ethernet destination % x", f[0:6])
		}
		if cs := ICMPv6Checksum(src, dst, msg); cs != 0 || msg[2]|msg[3] == 0 {
			t.Fatalf("the kernel's checksum %#02x%02x does not verify (residual %#04x)", msg[2], msg[3], cs)
		}
		if len(ns.Options) != 1 || ns.Options[0].Type != OptSourceLinkLayer || !bytes.Equal(ns.Options[0].MAC(), a.MAC) {
			t.Fatalf("NS options %+v", ns.Options)
		}
		return
	}
}
