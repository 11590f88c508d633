package neightest

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
)

// The frames below are written out octet by octet from the layouts of
// RFC 826 (ARP), RFC 4861 §4.3/§4.4/§4.6 (NS, NA, options) and RFC 2464
// §8 (Ethernet link-layer option), with the documentation MACs of RFC 7042
// and addresses of RFC 5737/3849.

var (
	macA = net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01}
	macB = net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x02}
)

// who has 192.0.2.1? tell 192.0.2.2 (at macA)
var arpRequestFrame = []byte{
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // source: macA
	0x08, 0x06, // EtherType ARP
	0x00, 0x01, // ar$hrd Ethernet
	0x08, 0x00, // ar$pro IPv4
	0x06, 0x04, // ar$hln, ar$pln
	0x00, 0x01, // ar$op request
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // ar$sha
	0xc0, 0x00, 0x02, 0x02, // ar$spa 192.0.2.2
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ar$tha unknown
	0xc0, 0x00, 0x02, 0x01, // ar$tpa 192.0.2.1
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60
}

// 192.0.2.1 is at macB, to 192.0.2.2 at macA (unpadded, as a sender's own
// AF_PACKET socket sees it before the driver pads it).
var arpReplyFrame = []byte{
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x01,
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x02,
	0x08, 0x06,
	0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
	0x00, 0x02, // reply
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x02, 0xc0, 0x00, 0x02, 0x01,
	0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, 0xc0, 0x00, 0x02, 0x02,
}

func TestParseARPFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		eth   Ethernet
		want  ARP
	}{
		{"request", arpRequestFrame, Ethernet{Dst: broadcastMAC(), Src: macA, Type: 0x0806},
			ARP{Op: ARPRequest, SenderMAC: macA, SenderIP: netip.MustParseAddr("192.0.2.2"), TargetMAC: make(net.HardwareAddr, 6), TargetIP: netip.MustParseAddr("192.0.2.1")}},
		{"reply", arpReplyFrame, Ethernet{Dst: macA, Src: macB, Type: 0x0806},
			ARP{Op: ARPReply, SenderMAC: macB, SenderIP: netip.MustParseAddr("192.0.2.1"), TargetMAC: macA, TargetIP: netip.MustParseAddr("192.0.2.2")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eth, p, err := ParseARPFrame(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(eth.Dst, tc.eth.Dst) || !bytes.Equal(eth.Src, tc.eth.Src) || eth.Type != tc.eth.Type {
				t.Errorf("ethernet %+v, want %+v", eth, tc.eth)
			}
			if p.Op != tc.want.Op || p.SenderIP != tc.want.SenderIP || p.TargetIP != tc.want.TargetIP ||
				!bytes.Equal(p.SenderMAC, tc.want.SenderMAC) || !bytes.Equal(p.TargetMAC, tc.want.TargetMAC) {
				t.Errorf("ARP %+v, want %+v", p, tc.want)
			}
			// The decoded packet does not alias the frame (the client
			// reuses nothing, but a caller may).
			p.SenderMAC[0] ^= 0xff
			if !bytes.Equal(tc.frame[22:28], tc.want.SenderMAC) {
				t.Error("decoded MAC aliases the frame")
			}
		})
	}
}

func TestARPRequestFrameEncodes(t *testing.T) {
	f, err := ARPRequestFrame(macA, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f, arpRequestFrame) {
		t.Fatalf("request frame\n% x\nwant\n% x", f, arpRequestFrame)
	}
	for _, bad := range []ARP{
		{Op: ARPRequest, SenderMAC: macA, TargetMAC: macB, SenderIP: netip.MustParseAddr("2001:db8::1"), TargetIP: netip.MustParseAddr("192.0.2.1")},
		{Op: ARPRequest, SenderMAC: macA[:5], TargetMAC: macB, SenderIP: netip.MustParseAddr("192.0.2.2"), TargetIP: netip.MustParseAddr("192.0.2.1")},
		{Op: ARPRequest, SenderMAC: macA, TargetMAC: macB, SenderIP: netip.MustParseAddr("192.0.2.2")},
	} {
		if b, err := bad.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) = % x, want an error", bad, b)
		}
	}
}

func TestParseARPRejects(t *testing.T) {
	mod := func(off int, v ...byte) []byte { return withBytes(arpRequestFrame, off, v...) }
	for name, f := range map[string][]byte{
		"empty":            nil,
		"header cut":       arpRequestFrame[:13],
		"not ARP":          mod(12, 0x08, 0x00),
		"IEEE 802 hrd":     mod(14, 0x00, 0x06),
		"IPv6 pro":         mod(16, 0x86, 0xdd),
		"hln 8":            mod(18, 8),
		"pln 16":           mod(19, 16),
		"cut in addresses": arpRequestFrame[:14+27],
		"cut in header":    arpRequestFrame[:14+7],
	} {
		if _, p, err := ParseARPFrame(f); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseARPFrame = %+v, %v; want ErrMalformed", name, p, err)
		}
	}
}

var (
	ndpTarget = netip.MustParseAddr("2001:db8::1")
	ndpAsker  = netip.MustParseAddr("2001:db8::2")
)

// NS from 2001:db8::2 (macA) for 2001:db8::1, to ff02::1:ff00:1.
var nsMessage = []byte{
	0x87, 0x00, // type 135, code 0
	0x6d, 0x27, // checksum (computed apart, with a separate implementation)
	0x00, 0x00, 0x00, 0x00, // reserved
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // target
	0x01, 0x01, 0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // source link-layer address, 1 unit, macA
}

// NA from 2001:db8::1 (macB) to 2001:db8::2: solicited, override.
var naMessage = []byte{
	0x88, 0x00, // type 136, code 0
	0xdb, 0x71, // checksum
	0x60, 0x00, 0x00, 0x00, // R=0 S=1 O=1, reserved
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // target
	0x02, 0x01, 0x00, 0x00, 0x5e, 0x00, 0x53, 0x02, // target link-layer address, 1 unit, macB
}

func TestParseNDP(t *testing.T) {
	m, err := ParseNDP(nsMessage)
	if err != nil {
		t.Fatal(err)
	}
	ns, ok := m.(NS)
	if !ok || ns.Target != ndpTarget || len(ns.Options) != 1 || ns.Options[0].Type != OptSourceLinkLayer || !bytes.Equal(ns.Options[0].MAC(), macA) {
		t.Fatalf("NS decoded as %#v", m)
	}

	m, err = ParseNDP(naMessage)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(NA)
	if !ok || na.Router || !na.Solicited || !na.Override || na.Target != ndpTarget || len(na.Options) != 1 ||
		na.Options[0].Type != OptTargetLinkLayer || !bytes.Equal(na.Options[0].MAC(), macB) {
		t.Fatalf("NA decoded as %#v", m)
	}

	// Each flag is its own bit: R alone, then O alone.
	for _, tc := range []struct {
		octet     byte
		r, s, o   bool
		extraOpts []byte
	}{
		{0x80, true, false, false, nil},
		{0x20, false, false, true, nil},
		{0xe0, true, true, true, nil},
		// An unknown option (type 200, 2 units) is kept, with its padding.
		{0x00, false, false, false, []byte{200, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}},
	} {
		b := append(slices.Clone(naMessage), tc.extraOpts...)
		b[4] = tc.octet
		m, err := ParseNDP(b)
		if err != nil {
			t.Fatal(err)
		}
		na := m.(NA)
		if na.Router != tc.r || na.Solicited != tc.s || na.Override != tc.o {
			t.Errorf("flags %#02x decoded R=%v S=%v O=%v", tc.octet, na.Router, na.Solicited, na.Override)
		}
		if tc.extraOpts != nil && (len(na.Options) != 2 || na.Options[1].Type != 200 || !bytes.Equal(na.Options[1].Body, tc.extraOpts[2:]) || na.Options[1].MAC() != nil) {
			t.Errorf("options %+v", na.Options)
		}
	}
}

func TestParseNDPRejects(t *testing.T) {
	mod := withBytes
	for name, b := range map[string][]byte{
		"empty":                 nil,
		"cut in target":         naMessage[:23],
		"router advertisement":  mod(naMessage, 0, 134),
		"echo request":          mod(nsMessage, 0, 128),
		"code 1":                mod(naMessage, 1, 1),
		"multicast target":      mod(nsMessage, 8, 0xff, 0x02),
		"option length 0":       mod(naMessage, 25, 0),
		"option past the end":   mod(naMessage, 25, 2),
		"option header cut":     append(slices.Clone(naMessage), 1),
		"NS option past at end": nsMessage[:len(nsMessage)-1],
	} {
		if m, err := ParseNDP(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseNDP = %#v, %v; want ErrMalformed", name, m, err)
		}
	}
}

func TestNSMarshal(t *testing.T) {
	b, err := NS{Target: ndpTarget, Options: []Option{{Type: OptSourceLinkLayer, Body: macA}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := withBytes(nsMessage, 2, 0, 0) // the kernel fills the checksum
	if !bytes.Equal(b, want) {
		t.Fatalf("NS\n% x\nwant\n% x", b, want)
	}
	if b, err := (NS{Target: netip.MustParseAddr("192.0.2.1")}).Marshal(); err == nil {
		t.Fatalf("NS for an IPv4 target encoded: % x", b)
	}
}

// withBytes is a copy of base with v written at off.
func withBytes(base []byte, off int, v ...byte) []byte {
	b := slices.Clone(base)
	copy(b[off:], v)
	return b
}

func TestICMPv6Checksum(t *testing.T) {
	// RFC 1071 §3's example sums to 0xddf2; the pseudo-header of :: to ::
	// adds the length 8 and next header 58: 0xde34, complemented 0x21cb.
	if c := ICMPv6Checksum(netip.IPv6Unspecified(), netip.IPv6Unspecified(), []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); c != 0x21cb {
		t.Errorf("RFC 1071 example: %#04x, want 0x21cb", c)
	}
	// Odd length: the last octet counts as 0xf600 (padded with zero);
	// 0x0001+0xf203+0xf4f5+0xf600+7+58 = 0x2dd3a, folded 0xdd3c,
	// complemented 0x22c3.
	if c := ICMPv6Checksum(netip.IPv6Unspecified(), netip.IPv6Unspecified(), []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6}); c != 0x22c3 {
		t.Errorf("odd length: %#04x, want 0x22c3", c)
	}
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		msg      []byte
	}{
		{"NS", ndpAsker, SolicitedNode(ndpTarget), nsMessage},
		{"NA", ndpTarget, ndpAsker, naMessage},
	} {
		if c := ICMPv6Checksum(tc.src, tc.dst, tc.msg); c != 0 {
			t.Errorf("%s: a message with its correct checksum sums to %#04x, want 0", tc.name, c)
		}
		zero := withBytes(tc.msg, 2, 0, 0)
		if c, want := ICMPv6Checksum(tc.src, tc.dst, zero), uint16(tc.msg[2])<<8|uint16(tc.msg[3]); c != want {
			t.Errorf("%s: checksum %#04x, want %#04x", tc.name, c, want)
		}
		// The addresses are covered: the wrong destination does not verify.
		if c := ICMPv6Checksum(tc.src, netip.MustParseAddr("2001:db8::3"), tc.msg); c == 0 {
			t.Errorf("%s: verifies for the wrong destination", tc.name)
		}
	}
}

func TestSolicitedNode(t *testing.T) {
	for in, want := range map[string]string{
		"2001:db8::1":              "ff02::1:ff00:1",
		"2001:db8::100":            "ff02::1:ff00:100",
		"2001:db8::12:3456:789a":   "ff02::1:ff56:789a",
		"fe80::200:5eff:fe00:5301": "ff02::1:ff00:5301",
	} {
		if got := SolicitedNode(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("SolicitedNode(%s) = %s, want %s", in, got, want)
		}
	}
}
