// Package neightest speaks the neighbour protocols of the LAN for tests:
// ARP (RFC 826) and IPv6 Neighbor Discovery (RFC 4861). It decodes and
// encodes their messages from the RFCs' layouts, written apart from
// netfloat's frame builders so that it can check them, and asks real
// kernels for neighbours: an ARP client on a raw AF_PACKET socket and an
// NDP client on a raw ICMPv6 socket. Tests only.
package neightest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// EtherTypeARP is ARP's EtherType (RFC 826, "ether_type$ADDRESS_RESOLUTION").
const EtherTypeARP = 0x0806

const (
	ethHeaderLen = 14
	// arpLen is an Ethernet/IPv4 ARP packet: 8 octets of fixed header,
	// then 2 × (6 + 4) of addresses.
	arpLen = 28
	// minFrame is the shortest Ethernet frame without its FCS; senders pad
	// shorter ones.
	minFrame = 60
	// ar$hrd for Ethernet and ar$pro for IPv4 (RFC 826; the protocol
	// space is the EtherType space).
	arpHrdEthernet = 1
	arpProIPv4     = 0x0800
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed message")

// ARPOp is ar$op.
type ARPOp uint16

// The operations of RFC 826.
const (
	ARPRequest ARPOp = 1
	ARPReply   ARPOp = 2
)

// ARP is an Ethernet/IPv4 ARP packet.
type ARP struct {
	Op        ARPOp
	SenderMAC net.HardwareAddr // ar$sha
	SenderIP  netip.Addr       // ar$spa
	TargetMAC net.HardwareAddr // ar$tha
	TargetIP  netip.Addr       // ar$tpa
}

// Ethernet is an Ethernet II header.
type Ethernet struct {
	Dst, Src net.HardwareAddr
	Type     uint16
}

// ParseEthernet splits a frame into its header and payload (padding
// included: the header does not say how long the payload is).
func ParseEthernet(frame []byte) (Ethernet, []byte, error) {
	if len(frame) < ethHeaderLen {
		return Ethernet{}, nil, fmt.Errorf("ethernet frame of %d octets: %w", len(frame), ErrMalformed)
	}
	h := Ethernet{
		Dst:  net.HardwareAddr(clone(frame[0:6])),
		Src:  net.HardwareAddr(clone(frame[6:12])),
		Type: binary.BigEndian.Uint16(frame[12:14]),
	}
	return h, frame[ethHeaderLen:], nil
}

// ParseARP decodes an ARP packet, the payload of an Ethernet frame.
// Anything after its 28 octets (the frame's padding) is ignored. Only
// Ethernet/IPv4 ARP is accepted: hardware type 1 with 6-octet addresses,
// protocol type 0x0800 with 4-octet addresses.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < 8 {
		return ARP{}, fmt.Errorf("ARP packet of %d octets: %w", len(b), ErrMalformed)
	}
	hrd := binary.BigEndian.Uint16(b[0:2])
	pro := binary.BigEndian.Uint16(b[2:4])
	hln, pln := b[4], b[5]
	if hrd != arpHrdEthernet || pro != arpProIPv4 || hln != 6 || pln != 4 {
		return ARP{}, fmt.Errorf("ARP hrd %d pro %#04x hln %d pln %d, want Ethernet/IPv4 (1, 0x0800, 6, 4): %w", hrd, pro, hln, pln, ErrMalformed)
	}
	if len(b) < arpLen {
		return ARP{}, fmt.Errorf("Ethernet/IPv4 ARP packet of %d octets, want %d: %w", len(b), arpLen, ErrMalformed)
	}
	return ARP{
		Op:        ARPOp(binary.BigEndian.Uint16(b[6:8])),
		SenderMAC: net.HardwareAddr(clone(b[8:14])),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: net.HardwareAddr(clone(b[18:24])),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}, nil
}

// ParseARPFrame decodes an Ethernet frame carrying ARP.
func ParseARPFrame(frame []byte) (Ethernet, ARP, error) {
	h, payload, err := ParseEthernet(frame)
	if err != nil {
		return Ethernet{}, ARP{}, err
	}
	if h.Type != EtherTypeARP {
		return h, ARP{}, fmt.Errorf("EtherType %#04x is not ARP: %w", h.Type, ErrMalformed)
	}
	p, err := ParseARP(payload)
	return h, p, err
}

// Marshal encodes p as the 28 octets of an Ethernet/IPv4 ARP packet.
func (p ARP) Marshal() ([]byte, error) {
	if len(p.SenderMAC) != 6 || len(p.TargetMAC) != 6 || !p.SenderIP.Is4() || !p.TargetIP.Is4() {
		return nil, fmt.Errorf("ARP %+v: want 6-octet MACs and IPv4 addresses", p)
	}
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:2], arpHrdEthernet)
	binary.BigEndian.PutUint16(b[2:4], arpProIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], uint16(p.Op))
	copy(b[8:14], p.SenderMAC)
	spa := p.SenderIP.As4()
	copy(b[14:18], spa[:])
	copy(b[18:24], p.TargetMAC)
	tpa := p.TargetIP.As4()
	copy(b[24:28], tpa[:])
	return b, nil
}

// ARPRequestFrame is the broadcast Ethernet frame of a "who has target,
// tell sender" from mac (RFC 826: ar$tha is not known, so zero), padded
// to the Ethernet minimum.
func ARPRequestFrame(mac net.HardwareAddr, sender, target netip.Addr) ([]byte, error) {
	p, err := ARP{Op: ARPRequest, SenderMAC: mac, SenderIP: sender, TargetMAC: make(net.HardwareAddr, 6), TargetIP: target}.Marshal()
	if err != nil {
		return nil, err
	}
	f := make([]byte, minFrame)
	copy(f[0:6], broadcastMAC())
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], EtherTypeARP)
	copy(f[ethHeaderLen:], p)
	return f, nil
}

func broadcastMAC() net.HardwareAddr { return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

func clone(b []byte) []byte { return append([]byte(nil), b...) }
