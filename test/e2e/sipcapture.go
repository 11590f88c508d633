package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// sipCapture records every SIP datagram on the client's link with the MAC
// it was sent to or came from: which node each message of a call went
// to, seen where the caller is, independent of what the servers log.
type sipCapture struct {
	fd   int // set before the reader starts, closed after it ended
	stop atomic.Bool
	done chan struct{}
	mu   sync.Mutex
	msgs map[string][]capturedMsg // by Call-ID
	err  error
}

// capturedMsg is one SIP datagram of a call on the client's link.
type capturedMsg struct {
	out  bool   // sent by the client
	peer string // the node the MAC belongs to (or the MAC)
	cseq string // "1 INVITE"
	line string // start line
}

// startSIPCapture opens a packet socket on host c's link.
func (n *Net) startSIPCapture() (*sipCapture, error) {
	macs := map[string]string{}
	for _, id := range nodeIDs {
		macs[n.Hosts[id].MAC.String()] = id
	}
	c := &sipCapture{fd: -1, done: make(chan struct{}), msgs: map[string][]capturedMsg{}}
	h := n.Hosts["c"]
	err := h.Run(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		// ETH_P_ALL: a socket bound to one protocol sees no outgoing
		// frame.
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		// 100 ms: Stop is noticed without a wake-up packet.
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		c.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: sip capture on c: %w", err)
	}
	go c.read(macs)
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *sipCapture) read(macs map[string]string) {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if c.stop.Load() {
				return
			}
			continue
		}
		if err != nil {
			if !c.stop.Load() {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || n < 14 || binary.BigEndian.Uint16(buf[12:14]) != unix.ETH_P_IP {
			continue
		}
		out := ll.Pkttype == unix.PACKET_OUTGOING
		frame := buf[:n]
		// The packet socket gives the frame from the Ethernet header:
		// destination MAC for what the client sent, source for what it
		// received.
		mac := net.HardwareAddr(frame[6:12])
		if out {
			mac = net.HardwareAddr(frame[0:6])
		}
		cid, m, ok := parseSIPFrame(frame[14:])
		if !ok {
			continue
		}
		m.out = out
		m.peer = macs[mac.String()]
		if m.peer == "" {
			m.peer = mac.String()
		}
		c.mu.Lock()
		c.msgs[cid] = append(c.msgs[cid], m)
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns what it recorded by Call-ID.
func (c *sipCapture) Stop() (map[string][]capturedMsg, error) {
	if !c.stop.Swap(true) {
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs, c.err
}

// parseSIPFrame reads an IPv4/UDP datagram to or from port SIPPort and
// returns its Call-ID, CSeq and start line.
func parseSIPFrame(ip []byte) (string, capturedMsg, bool) {
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP {
		return "", capturedMsg{}, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+8 {
		return "", capturedMsg{}, false
	}
	udp := ip[ihl:]
	src, dst := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
	if dst != SIPPort && src != SIPPort {
		return "", capturedMsg{}, false
	}
	payload := udp[8:]
	lines := bytes.Split(payload, []byte("\r\n"))
	if len(lines) < 2 {
		return "", capturedMsg{}, false
	}
	m := capturedMsg{line: string(lines[0])}
	var cid string
	for _, l := range lines[1:] {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		switch string(bytes.ToLower(bytes.TrimSpace(k))) {
		case "call-id", "i":
			cid = string(bytes.TrimSpace(v))
		case "cseq":
			m.cseq = string(bytes.TrimSpace(v))
		}
	}
	return cid, m, cid != ""
}
