package netfloat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Address add, replace and dump are built with the netlink library's nl
// request machinery on a NETLINK_ROUTE socket opened in the target namespace,
// because netlink.Addr (v1.3.1) cannot carry IFA_PROTO, the mark that tells our
// addresses from everybody else's.

// ifaProto is IFA_PROTO (Linux >= 6.1): the originator of an address, shown
// by `ip -d addr` as "proto". Older kernels ignore the attribute.
const ifaProto = 11

// kaddr is one address as the kernel reports it.
type kaddr struct {
	Index     int
	Prefix    netip.Prefix
	Label     string
	Proto     uint8
	Flags     uint32
	Valid     uint32 // seconds left; 0xffffffff = forever
	Preferred uint32
}

func (m *Manager) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = m.nlSockets
	return req
}

// addrReplace adds p to the link or refreshes it (NLM_F_REPLACE), with our
// mark and a valid and preferred lifetime of lft seconds. Preferred equals
// valid so the address never sits deprecated (IPv6 would stop using it as a
// source) before it disappears.
func (m *Manager) addrReplace(index int, p netip.Prefix, label string, lft uint32) error {
	if _, err := m.addrReplaceReq(index, p, label, lft).Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("netfloat: add %s to ifindex %d: %w", p, index, err)
	}
	return nil
}

// addrReplaceReq is addrReplace's request, for execBatch.
func (m *Manager) addrReplaceReq(index int, p netip.Prefix, label string, lft uint32) *nl.NetlinkRequest {
	req := m.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	family := unix.AF_INET
	var flags uint32
	if p.Addr().Is6() {
		family = unix.AF_INET6
		// The lease, not DAD, decides who holds a VIP; DAD would keep
		// the address tentative (unusable) for about a second.
		flags |= unix.IFA_F_NODAD
	}
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(p.Bits())
	msg.Scope = unix.RT_SCOPE_UNIVERSE
	msg.Flags = uint8(flags)
	req.AddData(msg)
	ip := p.Addr().AsSlice()
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_FLAGS, nl.Uint32Attr(flags)))
	if p.Addr().Is4() {
		if p.Bits() < 31 {
			// The broadcast of the subnet, as `ip addr add ... brd +`.
			b := p.Addr().As4()
			mask := net.CIDRMask(p.Bits(), 32)
			for i := range b {
				b[i] |= ^mask[i]
			}
			req.AddData(nl.NewRtAttr(unix.IFA_BROADCAST, b[:]))
		}
		if label != "" {
			req.AddData(nl.NewRtAttr(unix.IFA_LABEL, nl.ZeroTerminated(label)))
		}
	}
	req.AddData(nl.NewRtAttr(ifaProto, nl.Uint8Attr(m.opts.Protocol)))
	ci := nl.IfaCacheInfo{IfaCacheinfo: unix.IfaCacheinfo{Prefered: lft, Valid: lft}}
	req.AddData(nl.NewRtAttr(unix.IFA_CACHEINFO, ci.Serialize()))
	return req
}

// addrDel removes p from the link; an address or link that is already gone
// is not an error.
func (m *Manager) addrDel(index int, p netip.Prefix) error {
	_, err := m.addrDelReq(index, p).Execute(unix.NETLINK_ROUTE, 0)
	if err == nil || isGone(err) {
		return nil
	}
	return fmt.Errorf("netfloat: delete %s from ifindex %d: %w", p, index, err)
}

// addrDelReq is addrDel's request, for execBatch.
func (m *Manager) addrDelReq(index int, p netip.Prefix) *nl.NetlinkRequest {
	req := m.request(unix.RTM_DELADDR, unix.NLM_F_ACK)
	family := unix.AF_INET
	if p.Addr().Is6() {
		family = unix.AF_INET6
	}
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(p.Bits())
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, p.Addr().AsSlice()))
	return req
}

func isGone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ENODEV) || errors.As(err, &lnf)
}

// addrDump lists every address in the namespace.
func (m *Manager) addrDump() ([]kaddr, error) {
	var out []kaddr
	for attempt := 0; ; attempt++ {
		req := m.request(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfAddrmsg(unix.AF_UNSPEC))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
		if errors.Is(err, nl.ErrDumpInterrupted) && attempt < 5 {
			continue // the list changed while it was read; read it again
		}
		if err != nil {
			return nil, fmt.Errorf("netfloat: list addresses: %w", err)
		}
		for _, b := range msgs {
			if a, ok := parseAddrMsg(b); ok {
				out = append(out, a)
			}
		}
		return out, nil
	}
}

func parseAddrMsg(b []byte) (kaddr, bool) {
	if len(b) < unix.SizeofIfAddrmsg {
		return kaddr{}, false
	}
	msg := nl.DeserializeIfAddrmsg(b)
	attrs, err := nl.ParseRouteAttr(b[msg.Len():])
	if err != nil {
		return kaddr{}, false
	}
	a := kaddr{Index: int(msg.Index), Flags: uint32(msg.Flags)}
	var local, address netip.Addr
	for _, at := range attrs {
		switch at.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_LABEL:
			a.Label = nl.BytesToString(at.Value)
		case ifaProto:
			if len(at.Value) >= 1 {
				a.Proto = at.Value[0]
			}
		case unix.IFA_FLAGS:
			if len(at.Value) >= 4 {
				a.Flags = nl.NativeEndian().Uint32(at.Value)
			}
		case unix.IFA_CACHEINFO:
			if len(at.Value) >= unix.SizeofIfaCacheinfo {
				ci := nl.DeserializeIfaCacheInfo(at.Value)
				a.Valid, a.Preferred = ci.Valid, ci.Prefered
			}
		}
	}
	// IPv4 reports the local address in IFA_LOCAL (IFA_ADDRESS is the peer
	// on point-to-point links); IPv6 only sends IFA_ADDRESS.
	ip := address
	if local.IsValid() {
		ip = local
	}
	if !ip.IsValid() {
		return kaddr{}, false
	}
	a.Prefix = netip.PrefixFrom(ip.Unmap(), int(msg.Prefixlen))
	return a, a.Prefix.IsValid()
}
