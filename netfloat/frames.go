package netfloat

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/net/bpf"
)

// Ethernet frames are built and parsed by hand: they are a few fixed-size
// fields, and building them whole lets the IPv6 announcements use the VIP as
// source address (as keepalived does) without a link-local address or an
// ICMPv6 socket bound to a possibly tentative address.

const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	ethHdrLen     = 14
	arpLen        = 28
	ipv6HdrLen    = 40
	protoICMPv6   = 58
	icmpNS        = 135
	icmpNA        = 136
	optTargetLL   = 2
	minFrameLen   = 60 // Ethernet minimum without FCS; short frames are padded
	arpOpRequest  = 1
	arpOpReply    = 2
	naFlagOverrde = 0x20
)

var (
	ethBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodes     = netip.MustParseAddr("ff02::1")
)

func ethHeader(b []byte, dst, src net.HardwareAddr, typ uint16) {
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], typ)
}

// arpFrame builds a broadcast ARP frame.
func arpFrame(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := make([]byte, minFrameLen)
	ethHeader(b, ethBroadcast, sha, etherTypeARP)
	a := b[ethHdrLen:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s4 := spa.As4()
	copy(a[14:18], s4[:])
	copy(a[18:24], tha)
	t4 := tpa.As4()
	copy(a[24:28], t4[:])
	return b
}

// garpRequest is the announcement form of RFC 5227 (request, sender = target
// = VIP, target MAC zero). Linux receivers treat it as gratuitous because
// sender and target IP are equal.
func garpRequest(mac net.HardwareAddr, vip netip.Addr) []byte {
	return arpFrame(arpOpRequest, mac, vip, make(net.HardwareAddr, 6), vip)
}

// garpReply is the reply form. Linux (arp_is_garp) only treats a reply as
// gratuitous when the target MAC equals the sender MAC, so both carry ours.
func garpReply(mac net.HardwareAddr, vip netip.Addr) []byte {
	return arpFrame(arpOpReply, mac, vip, mac, vip)
}

// arpProbe is an RFC 5227 probe: sender IP 0.0.0.0, so it pollutes no cache;
// a holder of the address answers with a unicast reply.
func arpProbe(mac net.HardwareAddr, vip netip.Addr) []byte {
	return arpFrame(arpOpRequest, mac, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), vip)
}

// ipv6Frame wraps an ICMPv6 message (checksum field zero) in IPv6 and
// Ethernet headers, hop limit 255 as Neighbor Discovery requires, and fills
// in the checksum.
func ipv6Frame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, icmp []byte) []byte {
	b := make([]byte, ethHdrLen+ipv6HdrLen+len(icmp))
	ethHeader(b, dstMAC, srcMAC, etherTypeIPv6)
	ip := b[ethHdrLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6] = protoICMPv6
	ip[7] = 255
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	msg := ip[ipv6HdrLen:]
	copy(msg, icmp)
	binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(s16, d16, msg))
	return b
}

func icmpv6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[0:4], uint32(len(msg)))
	l[7] = protoICMPv6
	add(l[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// unsolicitedNA is an RFC 4861 §7.2.6 unsolicited Neighbor Advertisement to
// all-nodes: Override set, Solicited clear (required for a multicast
// destination), with the Target Link-Layer Address option.
func unsolicitedNA(mac net.HardwareAddr, vip netip.Addr) []byte {
	icmp := make([]byte, 32)
	icmp[0] = icmpNA
	icmp[4] = naFlagOverrde
	t := vip.As16()
	copy(icmp[8:24], t[:])
	icmp[24], icmp[25] = optTargetLL, 1
	copy(icmp[26:32], mac)
	return ipv6Frame(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, mac, vip, allNodes, icmp)
}

// dadProbe is a Duplicate Address Detection Neighbor Solicitation: source ::,
// to the target's solicited-node group, no options. A host that holds the
// address answers with an NA to all-nodes.
func dadProbe(mac net.HardwareAddr, vip netip.Addr) []byte {
	t := vip.As16()
	group := netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
	icmp := make([]byte, 24)
	icmp[0] = icmpNS
	copy(icmp[8:24], t[:])
	dst := net.HardwareAddr{0x33, 0x33, 0xff, t[13], t[14], t[15]}
	return ipv6Frame(dst, mac, netip.IPv6Unspecified(), group, icmp)
}

// claimFrame is what a received frame says about who uses an address.
type claimFrame struct {
	Addr netip.Addr       // the address the sender says it holds
	MAC  net.HardwareAddr // the link-layer address it gives for it
	// Form describes the frame: "arp-request", "arp-reply" or "na".
	Form string
}

// parseClaim extracts an address claim from an ARP frame (any ARP packet
// whose sender IP is set: replies, gratuitous requests and replies, and
// ordinary requests, which also assert the sender's binding) or from a
// Neighbor Advertisement. ok is false for everything else, including ARP
// probes (sender 0.0.0.0).
func parseClaim(b []byte) (c claimFrame, ok bool) {
	if len(b) < ethHdrLen {
		return c, false
	}
	switch binary.BigEndian.Uint16(b[12:14]) {
	case etherTypeARP:
		a := b[ethHdrLen:]
		if len(a) < arpLen || binary.BigEndian.Uint16(a[0:2]) != 1 ||
			binary.BigEndian.Uint16(a[2:4]) != 0x0800 || a[4] != 6 || a[5] != 4 {
			return c, false
		}
		spa := netip.AddrFrom4([4]byte(a[14:18]))
		if spa.IsUnspecified() {
			return c, false
		}
		c = claimFrame{Addr: spa, MAC: net.HardwareAddr(bytes.Clone(a[8:14]))}
		switch binary.BigEndian.Uint16(a[6:8]) {
		case arpOpRequest:
			c.Form = "arp-request"
		case arpOpReply:
			c.Form = "arp-reply"
		default:
			return c, false
		}
		return c, true
	case etherTypeIPv6:
		ip := b[ethHdrLen:]
		if len(ip) < ipv6HdrLen+24 || ip[0]>>4 != 6 || ip[6] != protoICMPv6 {
			return c, false
		}
		msg := ip[ipv6HdrLen:]
		if pl := int(binary.BigEndian.Uint16(ip[4:6])); pl < len(msg) {
			msg = msg[:pl]
		}
		if len(msg) < 24 || msg[0] != icmpNA || msg[1] != 0 {
			return c, false
		}
		c = claimFrame{Addr: netip.AddrFrom16([16]byte(msg[8:24])), Form: "na"}
		for opts := msg[24:]; len(opts) >= 8; {
			l := int(opts[1]) * 8
			if l == 0 || l > len(opts) {
				break
			}
			if opts[0] == optTargetLL && l >= 8 {
				c.MAC = net.HardwareAddr(bytes.Clone(opts[2:8]))
			}
			opts = opts[l:]
		}
		if c.MAC == nil {
			// Without the option the advertiser is the frame's source.
			c.MAC = net.HardwareAddr(bytes.Clone(b[6:12]))
		}
		return c, true
	}
	return c, false
}

// naFilter keeps only ICMPv6 Neighbor Advertisements on an ETH_P_IPV6 packet
// socket, so the reader does not wake for every media packet on a busy host.
// It assumes no extension headers, which NDP packets never carry in practice.
func naFilter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: ethHdrLen + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoICMPv6, SkipFalse: 3},
		bpf.LoadAbsolute{Off: ethHdrLen + ipv6HdrLen, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpNA, SkipFalse: 1},
		bpf.RetConstant{Val: 256},
		bpf.RetConstant{Val: 0},
	})
}
