package neightest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// ndpHopLimit is the hop limit of every NDP message: receivers drop one
// with any other (RFC 4861 §7.1), which proves it was not routed.
const ndpHopLimit = 255

// ARPClient sends ARP requests and reads the ARP traffic of one interface
// on a raw AF_PACKET socket. It sees the ARP frames that reach the
// interface and those other sockets of the host send, not its own.
type ARPClient struct {
	c   *packet.Conn
	mac net.HardwareAddr
}

// DialARP opens an ARP client on ifi. Call it inside ifi's network
// namespace: the socket belongs to the namespace it is created in.
func DialARP(ifi *net.Interface) (*ARPClient, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("ARP client on %s: hardware address %q is not Ethernet", ifi.Name, ifi.HardwareAddr)
	}
	c, err := packet.Listen(ifi, packet.Raw, EtherTypeARP, nil)
	if err != nil {
		return nil, fmt.Errorf("ARP client on %s: %w", ifi.Name, err)
	}
	return &ARPClient{c: c, mac: clone(ifi.HardwareAddr)}, nil
}

// InterfaceIPv4 is the first IPv4 address of ifi, the sender address an
// ARP client of the host would use. Call it inside ifi's namespace.
func InterfaceIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address", ifi.Name)
}

// Request broadcasts "who has target, tell sender" from the interface's
// MAC.
func (c *ARPClient) Request(sender, target netip.Addr) error {
	f, err := ARPRequestFrame(c.mac, sender, target)
	if err != nil {
		return err
	}
	if _, err := c.c.WriteTo(f, &packet.Addr{HardwareAddr: broadcastMAC()}); err != nil {
		return fmt.Errorf("ARP request for %s: %w", target, err)
	}
	return nil
}

// SetReadDeadline bounds Read; a Read past it fails with an error that
// matches os.ErrDeadlineExceeded.
func (c *ARPClient) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// Read returns the next ARP packet received, skipping frames that are
// not Ethernet/IPv4 ARP.
func (c *ARPClient) Read() (ARP, error) {
	buf := make([]byte, 1514)
	for {
		n, _, err := c.c.ReadFrom(buf)
		if err != nil {
			return ARP{}, err
		}
		if _, p, err := ParseARPFrame(buf[:n]); err == nil {
			return p, nil
		}
	}
}

// Close closes the socket.
func (c *ARPClient) Close() error { return c.c.Close() }

// NDPConn sends Neighbor Solicitations and reads Neighbor Advertisements
// on a raw ICMPv6 socket bound to one address of one interface.
type NDPConn struct {
	pc   *ipv6.PacketConn
	ifi  *net.Interface
	addr netip.Addr
}

// ListenNDP opens an NDP connection from addr, an address of ifi. Call it
// inside ifi's network namespace. It sets what mdlayher/ndp's Listen set
// (hop limit 255 for unicast and multicast) and more: the kernel passes
// only advertisements up, and reports their hop limit so that ReadNA can
// drop what a receiver must drop. It joins no group: the advertisement
// that answers a solicitation from a unicast address comes to that
// address (RFC 4861 §7.2.4). The ICMPv6 checksum needs no option: on a raw
// ICMPv6 socket the kernel always computes it (RFC 3542 §3.1).
func ListenNDP(ifi *net.Interface, addr netip.Addr) (*NDPConn, error) {
	if !addr.Is6() || addr.Is4In6() || addr.Zone() != "" {
		return nil, fmt.Errorf("NDP from %s: want an IPv6 address without zone", addr)
	}
	ic, err := icmp.ListenPacket("ip6:ipv6-icmp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("NDP on %s from %s: %w", ifi.Name, addr, err)
	}
	pc := ic.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"hop limit", func() error { return pc.SetHopLimit(ndpHopLimit) }},
		{"multicast hop limit", func() error { return pc.SetMulticastHopLimit(ndpHopLimit) }},
		{"multicast interface", func() error { return pc.SetMulticastInterface(ifi) }},
		{"ICMPv6 filter", func() error { return pc.SetICMPFilter(&f) }},
		{"hop limit reports", func() error { return pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true) }},
	} {
		if err := step.do(); err != nil {
			ic.Close()
			return nil, fmt.Errorf("NDP on %s: %s: %w", ifi.Name, step.what, err)
		}
	}
	return &NDPConn{pc: pc, ifi: ifi, addr: addr}, nil
}

// Solicit sends an NS for target, with the interface's MAC in a source
// link-layer address option, to target's solicited-node group (address
// resolution, RFC 4861 §7.2.2).
func (c *NDPConn) Solicit(target netip.Addr) error {
	msg, err := NS{Target: target, Options: []Option{{Type: OptSourceLinkLayer, Body: c.ifi.HardwareAddr}}}.Marshal()
	if err != nil {
		return err
	}
	// The interface by index, not by zone name: a zone is resolved in the
	// namespace of the calling thread, which need not be the socket's.
	cm := &ipv6.ControlMessage{HopLimit: ndpHopLimit, Src: c.addr.AsSlice(), IfIndex: c.ifi.Index}
	if _, err := c.pc.WriteTo(msg, cm, &net.IPAddr{IP: SolicitedNode(target).AsSlice()}); err != nil {
		return fmt.Errorf("NS for %s: %w", target, err)
	}
	return nil
}

// SetReadDeadline bounds ReadNA; a ReadNA past it fails with an error
// that matches os.ErrDeadlineExceeded.
func (c *NDPConn) SetReadDeadline(t time.Time) error { return c.pc.SetReadDeadline(t) }

// ReadNA returns the next advertisement received on the interface and its
// source, skipping what an NDP receiver drops (hop limit other than 255,
// malformed) and what this connection sent itself.
func (c *NDPConn) ReadNA() (NA, netip.Addr, error) {
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := c.pc.ReadFrom(buf)
		if err != nil {
			return NA{}, netip.Addr{}, err
		}
		ipa, ok := src.(*net.IPAddr)
		if !ok {
			return NA{}, netip.Addr{}, fmt.Errorf("NDP source %v is not an IP address", src)
		}
		from, _ := netip.AddrFromSlice(ipa.IP)
		if cm == nil || cm.HopLimit != ndpHopLimit || cm.IfIndex != c.ifi.Index || from == c.addr {
			continue
		}
		m, err := ParseNDP(buf[:n])
		if err != nil {
			continue
		}
		if na, ok := m.(NA); ok {
			return na, from, nil
		}
	}
}

// Close closes the socket.
func (c *NDPConn) Close() error { return c.pc.Close() }

// IsTimeout says whether err is a read past the deadline.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
