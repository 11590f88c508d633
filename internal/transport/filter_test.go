package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/protocol"
)

// In namespaces, a node listening on the wildcard address with its entry
// address (192.0.2.11) not the primary one: its datagrams leave from the
// entry address (peers check the source); a stranger's datagrams are
// dropped by the kernel filter and counted as kernel_filter; datagrams
// from the peer b's address that claim another sender ("source"), that
// carry a forged head and a wrong MAC ("auth"), or that are random bytes
// ("magic") are dropped by reason and by source; b's authentic datagrams
// are delivered all the same.
func TestReceivePathChecks(t *testing.T) {
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.21/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "x", Addr: "192.0.2.66/24"},
	)
	a := n.Hosts["a"]
	link, err := a.Handle.LinkByName(netnstest.LinkName)
	if err != nil {
		t.Fatal(err)
	}
	// The entry address is a secondary one: routing would pick .21.
	if err := a.Handle.AddrAdd(link, &netlink.Addr{IPNet: netnstest.PrefixIPNet(netip.MustParsePrefix("192.0.2.11/24"))}); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "a"
	cfg.Cluster.Listen = "0.0.0.0:7400"
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "192.0.2.12:7400"}}
	key := bytes.Repeat([]byte{1}, 32)
	var tr *Transport
	if err := a.Run(func() error {
		var err error
		tr, err = Open(cfg, ProtocolConfig(cfg), key, false, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if st := tr.Stats(); st.KernelFilter != "nftables" || st.RecvBufferBytes < RecvBuffer {
		t.Fatalf("kernel filter %q, receive buffer %d; want nftables and >= %d", st.KernelFilter, st.RecvBufferBytes, RecvBuffer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan Inbound, 64)
	go tr.Run(ctx, in)

	// a -> b leaves from a's entry address.
	var bconn *net.UDPConn
	if err := n.Hosts["b"].Run(func() error {
		var err error
		bconn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 12), Port: 7400})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer bconn.Close()
	cid := protocol.ClusterID("edge")
	if err := tr.Send(protocol.Envelope{To: "b", Msg: protocol.Message{Type: protocol.MsgJoin, ClusterID: cid, From: "a", To: "b", Incarnation: 1, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = bconn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, src, err := bconn.ReadFromUDPAddrPort(buf); err != nil || src != netip.MustParseAddrPort("192.0.2.11:7400") {
		t.Fatalf("a's datagram: from %v, %v; want from its entry address 192.0.2.11:7400", src, err)
	}

	seq := uint64(0)
	valid := func(from string) []byte {
		seq++
		b, err := protocol.Encode(key, protocol.Message{Type: protocol.MsgJoin, ClusterID: cid, From: from, To: "a", Incarnation: 1, Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	forged := valid("b")
	forged[len(forged)-1] ^= 1
	dst := netip.MustParseAddrPort("192.0.2.11:7400")
	// The stranger sends valid-looking datagrams: the kernel drops them.
	for range 10 {
		sendFrom(t, n.Hosts["x"], netip.MustParseAddrPort("192.0.2.66:40000"), dst, forged)
	}
	// From b's address (spoofed from x, which does not own it):
	spoof := netip.MustParseAddrPort("192.0.2.12:7400")
	sendFrom(t, n.Hosts["x"], spoof, dst, valid("a")) // claims a, comes from b: source
	sendFrom(t, n.Hosts["x"], spoof, dst, forged)     // b's head, wrong MAC: auth
	// Without the key the spoofer cannot write the cluster tag: the kernel
	// drops its garbage and its forged heads from b's address.
	sendFrom(t, n.Hosts["x"], spoof, dst, []byte("random garbage, not a vigil datagram at all, long enough"))
	untagged, err := protocol.Encode(bytes.Repeat([]byte{9}, 32), protocol.Message{Type: protocol.MsgJoin, ClusterID: cid, From: "b", To: "a", Incarnation: 1, Seq: 99})
	if err != nil {
		t.Fatal(err)
	}
	sendFrom(t, n.Hosts["x"], spoof, dst, untagged)
	good := valid("b")
	if _, err := bconn.WriteToUDPAddrPort(good, dst); err != nil {
		t.Fatal(err)
	}

	select {
	case got := <-in:
		if got.Msg.From != "b" || got.Msg.Seq != seq {
			t.Fatalf("delivered %+v, want b's seq %d", got.Msg, seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b's datagram not delivered")
	}
	want := map[string]uint64{"source": 1, "auth": 1, "kernel_tag": 2, "kernel_filter": 10}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := tr.Stats()
		ok := st.DroppedBySource["192.0.2.12"] == 2 && st.Dropped["stranger"] == 0
		for k, v := range want {
			ok = ok && st.Dropped[k] == v
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %v, 2 drops from 192.0.2.12 in userspace, no stranger there", st, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendFrom sends b to dst from src inside h, whether or not h owns src
// (IP_TRANSPARENT: a spoofer on the LAN).
func sendFrom(t *testing.T, h *netnstest.Host, src, dst netip.AddrPort, b []byte) {
	t.Helper()
	err := h.Run(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				}
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", src.String())
		if err != nil {
			return err
		}
		defer pc.Close()
		_, err = pc.(*net.UDPConn).WriteToUDPAddrPort(b, dst)
		return err
	})
	if err != nil {
		t.Fatal(fmt.Errorf("send from %s in %s: %w", src, h.Name, err))
	}
}

// Peer traffic is never queued behind garbage: with the catch-all socket's
// buffer overflowing with datagrams from the peer b's address (another
// port: a spoofer, or anything on b), b's node manager's own datagram,
// sent last, is delivered first, through its lane. With one socket it was
// lost in the overflow or read after everything queued before it.
func TestPeerNotQueuedBehindGarbage(t *testing.T) {
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "x", Addr: "192.0.2.66/24"},
	)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "a"
	cfg.Cluster.Listen = "192.0.2.11:7400"
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "192.0.2.12:7400"}}
	key := bytes.Repeat([]byte{1}, 32)
	var tr *Transport
	if err := n.Hosts["a"].Run(func() error {
		var err error
		tr, err = Open(cfg, ProtocolConfig(cfg), key, false, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	dst := netip.MustParseAddrPort("192.0.2.11:7400")
	good, _ := protocol.Encode(key, protocol.Message{Type: protocol.MsgJoin, ClusterID: protocol.ClusterID("edge"), From: "b", To: "a", Incarnation: 1, Seq: 1})
	// Fill the catch-all socket past overflow before anything reads:
	// datagrams of the good one's size (so no room is left that would fit
	// it), from b's address, port 40000, carrying the cluster tag (as an
	// eavesdropper could: the kernel filter lets them through) and a
	// wrong MAC.
	junk := append([]byte(nil), good...)
	junk[len(junk)-1] ^= 1
	if err := n.Hosts["x"].Run(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) }); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "192.0.2.12:40000")
		if err != nil {
			return err
		}
		defer pc.Close()
		for range 40000 {
			if _, err := pc.(*net.UDPConn).WriteToUDPAddrPort(junk, dst); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var bconn *net.UDPConn
	if err := n.Hosts["b"].Run(func() error {
		var err error
		bconn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 12), Port: 7400})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer bconn.Close()
	if _, err := bconn.WriteToUDPAddrPort(good, dst); err != nil {
		t.Fatal(err)
	}
	// Let the kernel account the overflow before the readers start.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if d, _ := socketDrops(tr.conn); d > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the catch-all socket never overflowed: the test floods too little")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan Inbound, 1)
	go tr.Run(ctx, in)
	select {
	case got := <-in:
		if got.Msg.From != "b" || got.Msg.Seq != 1 {
			t.Fatalf("delivered %+v", got.Msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("b's datagram was not delivered behind a full catch-all socket (stats %+v)", tr.Stats())
	}
}
