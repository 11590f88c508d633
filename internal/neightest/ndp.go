package neightest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// ICMPv6 types and option types of RFC 4861.
const (
	TypeNeighborSolicitation  = 135
	TypeNeighborAdvertisement = 136

	OptSourceLinkLayer = 1
	OptTargetLinkLayer = 2
)

// NA flag bits, in the first octet after the checksum (RFC 4861 §4.4).
const (
	naRouter    = 0x80
	naSolicited = 0x40
	naOverride  = 0x20
)

// ndpHeaderLen is type, code, checksum, 4 octets of flags/reserved and
// the 16-octet target: the fixed part of an NS and an NA.
const ndpHeaderLen = 24

// Option is an NDP option (RFC 4861 §4.6): its type and the octets after
// the type and length fields (padding included).
type Option struct {
	Type uint8
	Body []byte
}

// MAC is the Ethernet address of a source or target link-layer address
// option (RFC 2464 §8: length 1, the 6-octet address), nil for any other
// option.
func (o Option) MAC() net.HardwareAddr {
	if (o.Type != OptSourceLinkLayer && o.Type != OptTargetLinkLayer) || len(o.Body) != 6 {
		return nil
	}
	return net.HardwareAddr(clone(o.Body))
}

// Message is a decoded NS or NA.
type Message interface{ ndpType() uint8 }

// NS is a Neighbor Solicitation (RFC 4861 §4.3).
type NS struct {
	Target  netip.Addr
	Options []Option
}

// NA is a Neighbor Advertisement (RFC 4861 §4.4).
type NA struct {
	Router, Solicited, Override bool
	Target                      netip.Addr
	Options                     []Option
}

func (NS) ndpType() uint8 { return TypeNeighborSolicitation }
func (NA) ndpType() uint8 { return TypeNeighborAdvertisement }

// ParseNDP decodes an ICMPv6 message (no IPv6 header) that must be an NS
// or an NA, with the checks of RFC 4861 §7.1.1 and §7.1.2 that need no
// IPv6 header: code 0, at least 24 octets, a target that is not multicast,
// options of non-zero length that fit. The checksum is not verified (it
// needs the addresses: see ICMPv6Checksum); a raw ICMPv6 socket's kernel
// has checked it already.
func ParseNDP(b []byte) (Message, error) {
	if len(b) < ndpHeaderLen {
		return nil, fmt.Errorf("ICMPv6 message of %d octets, want at least %d: %w", len(b), ndpHeaderLen, ErrMalformed)
	}
	typ, code := b[0], b[1]
	if typ != TypeNeighborSolicitation && typ != TypeNeighborAdvertisement {
		return nil, fmt.Errorf("ICMPv6 type %d is neither NS nor NA: %w", typ, ErrMalformed)
	}
	if code != 0 {
		return nil, fmt.Errorf("ICMPv6 type %d with code %d: %w", typ, code, ErrMalformed)
	}
	target := netip.AddrFrom16([16]byte(b[8:24]))
	if target.IsMulticast() {
		return nil, fmt.Errorf("target %s is multicast: %w", target, ErrMalformed)
	}
	opts, err := parseOptions(b[ndpHeaderLen:])
	if err != nil {
		return nil, err
	}
	if typ == TypeNeighborSolicitation {
		return NS{Target: target, Options: opts}, nil
	}
	return NA{
		Router:    b[4]&naRouter != 0,
		Solicited: b[4]&naSolicited != 0,
		Override:  b[4]&naOverride != 0,
		Target:    target,
		Options:   opts,
	}, nil
}

func parseOptions(b []byte) ([]Option, error) {
	var opts []Option
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("option header cut at %d octet: %w", len(b), ErrMalformed)
		}
		// The length counts units of 8 octets, type and length included;
		// 0 is invalid (RFC 4861 §4.6).
		n := int(b[1]) * 8
		if n == 0 || n > len(b) {
			return nil, fmt.Errorf("option type %d of length %d with %d octets left: %w", b[0], b[1], len(b), ErrMalformed)
		}
		opts = append(opts, Option{Type: b[0], Body: clone(b[2:n])})
		b = b[n:]
	}
	return opts, nil
}

// Marshal encodes s as an ICMPv6 message with a zero checksum (a raw
// ICMPv6 socket's kernel fills it in; ICMPv6Checksum computes it).
// Option bodies are padded to the 8-octet unit.
func (s NS) Marshal() ([]byte, error) {
	if !s.Target.Is6() || s.Target.Is4In6() {
		return nil, fmt.Errorf("NS target %s is not IPv6", s.Target)
	}
	b := make([]byte, ndpHeaderLen, ndpHeaderLen+8*len(s.Options))
	b[0] = TypeNeighborSolicitation
	t := s.Target.As16()
	copy(b[8:24], t[:])
	for _, o := range s.Options {
		units := (2 + len(o.Body) + 7) / 8
		if units > 255 {
			return nil, fmt.Errorf("option type %d of %d octets is too long", o.Type, len(o.Body))
		}
		opt := make([]byte, units*8)
		opt[0], opt[1] = o.Type, byte(units)
		copy(opt[2:], o.Body)
		b = append(b, opt...)
	}
	return b, nil
}

// SolicitedNode is the solicited-node multicast group of addr (RFC 4291
// §2.7.1): ff02::1:ff00:0/104 with the address's low 24 bits.
func SolicitedNode(addr netip.Addr) netip.Addr {
	a := addr.As16()
	g := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff}
	copy(g[13:], a[13:])
	return netip.AddrFrom16(g)
}

// ICMPv6Checksum is the checksum of msg sent from src to dst (RFC 4443
// §2.3): the one's complement of the one's complement sum of the IPv6
// pseudo-header (RFC 8200 §8.1: source, destination, upper-layer length,
// next header 58) and msg. Over a message that carries its correct
// checksum it is 0.
func ICMPv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	ph := make([]byte, 0, 40)
	s, d := src.As16(), dst.As16()
	ph = append(ph, s[:]...)
	ph = append(ph, d[:]...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(msg)))
	ph = append(ph, 0, 0, 0, 58)
	var sum uint32
	for _, part := range [][]byte{ph, msg} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(part[i])<<8 | uint32(part[i+1])
		}
		if len(part)%2 == 1 {
			sum += uint32(part[len(part)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
