package netfloat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/vigil-project/vigil/internal/neightest"
)

var testMAC = net.HardwareAddr{0x02, 0, 0x5e, 0x10, 0x20, 0x30}

// The ARP frames decode with an independent parser (internal/neightest,
// written from RFC 826) to what the kernel expects of gratuitous ARP and
// probes.
func TestARPFramesDecode(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.100")
	for _, tc := range []struct {
		name     string
		frame    []byte
		op       neightest.ARPOp
		sender   netip.Addr
		tha      net.HardwareAddr
		wantForm string // "" = parseClaim must ignore it
	}{
		{"request", garpRequest(testMAC, vip), neightest.ARPRequest, vip, make(net.HardwareAddr, 6), "arp-request"},
		{"reply", garpReply(testMAC, vip), neightest.ARPReply, vip, testMAC, "arp-reply"},
		{"probe", arpProbe(testMAC, vip), neightest.ARPRequest, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.frame) < 60 {
				t.Fatalf("frame %d bytes, want padded to 60", len(tc.frame))
			}
			if !bytes.Equal(tc.frame[0:6], ethBroadcast) || !bytes.Equal(tc.frame[6:12], testMAC) {
				t.Fatalf("ethernet header % x", tc.frame[:14])
			}
			eth, p, err := neightest.ParseARPFrame(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if eth.Type != neightest.EtherTypeARP {
				t.Fatalf("EtherType %#04x", eth.Type)
			}
			if p.Op != tc.op || p.SenderIP != tc.sender || p.TargetIP != vip ||
				!bytes.Equal(p.SenderMAC, testMAC) || !bytes.Equal(p.TargetMAC, tc.tha) {
				t.Fatalf("decoded %+v", p)
			}
			c, ok := parseClaim(tc.frame)
			if tc.wantForm == "" {
				if ok {
					t.Fatalf("probe parsed as a claim: %+v", c)
				}
				return
			}
			if !ok || c.Addr != vip || !bytes.Equal(c.MAC, testMAC) || c.Form != tc.wantForm {
				t.Fatalf("parseClaim = %+v, %v", c, ok)
			}
		})
	}
}

// icmpChecksumOK verifies the frame's ICMPv6 checksum with neightest's
// implementation, not netfloat's own (which would agree with itself).
func icmpChecksumOK(t *testing.T, frame []byte) {
	t.Helper()
	ip := frame[14:]
	s, d := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	// Summing a message that includes its correct checksum gives 0xffff,
	// whose complement is 0.
	if c := neightest.ICMPv6Checksum(s, d, ip[40:]); c != 0 {
		t.Fatalf("ICMPv6 checksum does not verify (residual %#x)", c)
	}
}

// The NA and DAD solicitation decode with internal/neightest (written from
// RFC 4861) and have the fields
// receivers check (hop limit 255, flags, destinations, checksum).
func TestNDPFramesDecode(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8::100")

	na := unsolicitedNA(testMAC, vip)
	if !bytes.Equal(na[0:6], net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}) {
		t.Fatalf("NA ethernet destination % x", na[0:6])
	}
	ip := na[14:]
	if ip[7] != 255 || netip.AddrFrom16([16]byte(ip[24:40])) != allNodes || netip.AddrFrom16([16]byte(ip[8:24])) != vip ||
		int(binary.BigEndian.Uint16(ip[4:6])) != len(ip)-40 {
		t.Fatalf("NA IPv6 header % x", ip[:40])
	}
	icmpChecksumOK(t, na)
	m, err := neightest.ParseNDP(ip[40:])
	if err != nil {
		t.Fatal(err)
	}
	adv, ok := m.(neightest.NA)
	if !ok || !adv.Override || adv.Solicited || adv.Router || adv.Target != vip {
		t.Fatalf("NA decoded as %#v", m)
	}
	if len(adv.Options) != 1 {
		t.Fatalf("NA options %v", adv.Options)
	}
	if o := adv.Options[0]; o.Type != neightest.OptTargetLinkLayer || !bytes.Equal(o.MAC(), testMAC) {
		t.Fatalf("NA option %#v", adv.Options[0])
	}
	if c, ok := parseClaim(na); !ok || c.Addr != vip || !bytes.Equal(c.MAC, testMAC) || c.Form != "na" {
		t.Fatalf("parseClaim(NA) = %+v, %v", c, ok)
	}

	ns := dadProbe(testMAC, vip)
	ip = ns[14:]
	if !bytes.Equal(ns[0:6], net.HardwareAddr{0x33, 0x33, 0xff, 0, 0x01, 0x00}) {
		t.Fatalf("NS ethernet destination % x", ns[0:6])
	}
	if ip[7] != 255 || netip.AddrFrom16([16]byte(ip[8:24])) != netip.IPv6Unspecified() ||
		netip.AddrFrom16([16]byte(ip[24:40])) != netip.MustParseAddr("ff02::1:ff00:100") {
		t.Fatalf("NS IPv6 header % x", ip[:40])
	}
	icmpChecksumOK(t, ns)
	m, err = neightest.ParseNDP(ip[40:])
	if err != nil {
		t.Fatal(err)
	}
	if sol, ok := m.(neightest.NS); !ok || sol.Target != vip || len(sol.Options) != 0 {
		t.Fatalf("NS decoded as %#v", m)
	}
	if _, ok := parseClaim(ns); ok {
		t.Fatal("a solicitation is not a claim")
	}
}

// The NA filter passes NAs and rejects other ICMPv6 and other IPv6 traffic.
func TestNAFilter(t *testing.T) {
	raw, err := naFilter()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(mustDisassemble(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("2001:db8::100")
	udp := unsolicitedNA(testMAC, vip)
	udp[14+6] = 17 // next header UDP
	for _, tc := range []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"na", unsolicitedNA(testMAC, vip), true},
		{"ns", dadProbe(testMAC, vip), false},
		{"udp", udp, false},
	} {
		n, err := vm.Run(tc.frame)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != tc.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", tc.name, n, tc.pass)
		}
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	ins, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	return ins
}

func TestParseClaimRejectsGarbage(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.100")
	f := garpReply(testMAC, vip)
	for _, b := range [][]byte{nil, f[:13], f[:20], unsolicitedNA(testMAC, netip.MustParseAddr("2001:db8::1"))[:60]} {
		if c, ok := parseClaim(b); ok {
			t.Errorf("parseClaim(% x) = %+v, want rejection", b, c)
		}
	}
	bad := garpReply(testMAC, vip)
	bad[14+4] = 8 // hardware length
	if _, ok := parseClaim(bad); ok {
		t.Error("ARP with hlen 8 accepted")
	}
}

func TestNormalize(t *testing.T) {
	good, err := Normalize(VIP{Prefix: netip.MustParsePrefix("::ffff:192.0.2.1/120"), Interface: "eth0"})
	if err != nil || good.Prefix != netip.MustParsePrefix("192.0.2.1/24") {
		t.Fatalf("mapped address: %v %v", good, err)
	}
	for _, s := range []string{"192.0.2.1/24", "192.0.2.254/24", "192.0.2.0/31", "192.0.2.1/31", "192.0.2.255/32", "2001:db8::/64", "2001:db8::100/1"} {
		if _, err := Normalize(VIP{Prefix: netip.MustParsePrefix(s), Interface: "eth0"}); err != nil {
			t.Errorf("Normalize(%s): %v", s, err)
		}
	}
	for _, v := range []VIP{
		{Prefix: netip.MustParsePrefix("192.0.2.1/24")},
		{Prefix: netip.MustParsePrefix("224.0.0.1/24"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("fe80::1/64"), Interface: "eth0"},
		{Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.1/24"), Interface: "a-very-long-interface-name"},
		// Refused since issue 11: they were only refused at takeover, or not at all.
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("::/0"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.100/0"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("2001:db8::100/0"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("::ffff:192.0.2.1/96"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("::ffff:192.0.2.1/64"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("127.0.0.2/8"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("::1/128"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.255/24"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.3/30"), Interface: "eth0"},
	} {
		if _, err := Normalize(v); !errors.Is(err, ErrInvalidVIP) {
			t.Errorf("Normalize(%v) = %v, want ErrInvalidVIP", v, err)
		}
	}
}
