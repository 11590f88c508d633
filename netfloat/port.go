package netfloat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/nsrun"
)

// port holds the packet sockets of one interface: one bound to ARP, one to
// IPv6 with a filter that passes only Neighbor Advertisements. They send the
// announcements and probes and feed observe with what other hosts claim.
type port struct {
	name  string
	index int
	mac   net.HardwareAddr
	arp   *packet.Conn
	nd    *packet.Conn
	// closed tells the readers that their read error is the end: the
	// error a closed socket gives is not reliably net.ErrClosed.
	closed atomic.Bool
}

// port returns the sockets of ifname, opening them in the Manager's
// namespace on first use, and again if the interface was re-created.
func (m *Manager) port(ifname string) (*port, error) {
	link, err := m.h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("netfloat: interface %s: %w", ifname, err)
	}
	attrs := link.Attrs()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	m.ifaces[ifname] = true
	if p := m.ports[ifname]; p != nil {
		if p.index == attrs.Index && bytes.Equal(p.mac, attrs.HardwareAddr) {
			return p, nil
		}
		_ = p.close()
		delete(m.ports, ifname)
	}
	if len(attrs.HardwareAddr) != 6 {
		return nil, fmt.Errorf("netfloat: interface %s: not Ethernet (hardware address %q)", ifname, attrs.HardwareAddr)
	}
	p := &port{name: ifname, index: attrs.Index, mac: attrs.HardwareAddr}
	ifi := &net.Interface{Index: attrs.Index, Name: ifname, HardwareAddr: attrs.HardwareAddr, MTU: attrs.MTU}
	filter, err := naFilter()
	if err != nil {
		return nil, fmt.Errorf("netfloat: NA filter: %w", err)
	}
	err = nsrun.In(m.ns, func() error {
		var err error
		if p.arp, err = packet.Listen(ifi, packet.Raw, etherTypeARP, nil); err != nil {
			return err
		}
		p.nd, err = packet.Listen(ifi, packet.Raw, etherTypeIPv6, &packet.Config{Filter: filter})
		return err
	})
	if err != nil {
		_ = p.close()
		return nil, fmt.Errorf("netfloat: packet sockets on %s: %w", ifname, err)
	}
	if m.opts.KeepOpen != nil {
		if fds, err := dupFDs(p.arp, p.nd); err != nil {
			m.log.Warn("cannot hand the packet sockets on: closing them will wait for RCU", "interface", ifname, "err", err)
		} else {
			m.opts.KeepOpen("port "+ifname, fds)
		}
	}
	m.ports[ifname] = p
	m.wg.Add(2)
	go m.read(p, p.arp)
	go m.read(p, p.nd)
	return p, nil
}

// dupFDs returns close-on-exec duplicates of the conns' descriptors.
func dupFDs(conns ...syscall.Conn) ([]int, error) {
	var fds []int
	for _, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			closeFDs(fds)
			return nil, err
		}
		var dup int
		var derr error
		if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
			closeFDs(fds)
			return nil, errors.Join(err, derr)
		}
		fds = append(fds, dup)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (p *port) close() error {
	p.closed.Store(true)
	var errs []error
	for _, c := range []*packet.Conn{p.arp, p.nd} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func (p *port) send(c *packet.Conn, frame []byte) error {
	_, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])})
	return err
}

func (p *port) probe(a netip.Addr) error {
	if a.Is4() {
		return p.send(p.arp, arpProbe(p.mac, a))
	}
	return p.send(p.nd, dadProbe(p.mac, a))
}

// read passes every claim by another MAC to observe until c is closed.
func (m *Manager) read(p *port, c *packet.Conn) {
	defer m.wg.Done()
	buf := make([]byte, 1600)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if p.closed.Load() {
				return
			}
			// ENETDOWN is reported once when the link goes down;
			// the socket works again once it is up.
			m.log.Debug("packet socket read", "interface", p.name, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// The node manager runs on one P (cmd/vigil, runControlPlane): a
		// flood of ARP or ND frames must not hold it from the protocol
		// loop, so yield after every frame (a few a second normally).
		runtime.Gosched()
		cl, ok := parseClaim(buf[:n])
		if !ok || bytes.Equal(cl.MAC, p.mac) {
			continue // not a claim, or our own frame seen going out
		}
		m.observe(p, cl)
	}
}
