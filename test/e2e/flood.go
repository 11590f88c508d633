package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/protocol"
)

// Flooder is a System whose cluster ports the flood scenarios can aim
// at: the UDP addresses its control plane on host listens on, the
// cluster name a forged head carries, and the cluster tag its datagrams
// carry (which an eavesdropper can read off them, and a forger without
// the key cannot compute).
type Flooder interface {
	ClusterPorts(host string) []netip.AddrPort
	ClusterName() string
	ClusterTag() uint64
}

// FloodSpec is one flood: from host (a namespace of the Net), with source
// address Src (the host's own, or one it does not own: a spoofer), at
// every target in turn, for D, as fast as one sending thread can.
type FloodSpec struct {
	Host    string
	Src     netip.AddrPort // port 0: any
	Targets []netip.AddrPort
	D       time.Duration
	// Forge, if set, makes every datagram a well-formed Vigil head (magic,
	// version, type, cluster, this sender id, to To) with a random MAC.
	// Its cluster tag is Tag if set (an eavesdropper's: past every check
	// but the MAC), otherwise the plain ClusterID of Cluster (the best a
	// forger without the key can write). Otherwise the payloads are
	// random bytes.
	Forge    bool
	Cluster  string
	Tag      uint64
	From, To string
	// Rate, if > 0, paces the flood to about that many datagrams per
	// second (the measurement was at 44,000/s); 0 is as fast as
	// one thread can.
	Rate int
}

// FloodResult is what the sender managed.
type FloodResult struct {
	Sent uint64
	Took time.Duration
}

// Rate is datagrams per second.
func (r FloodResult) Rate() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Took.Seconds()
}

// Flood is a running flood.
type Flood struct {
	done chan struct{}
	res  FloodResult
	err  error
	stop context.CancelFunc
}

// Wait waits for the flood's end and returns what it sent.
func (f *Flood) Wait() (FloodResult, error) {
	<-f.done
	return f.res, f.err
}

// Stop ends the flood early.
func (f *Flood) Stop() (FloodResult, error) {
	f.stop()
	return f.Wait()
}

// StartFlood starts s in the background. The socket is opened inside the
// host's namespace with IP_TRANSPARENT, so Src may be an address the host
// does not own (the kernel then sends with it as the source); it sends
// with sendmmsg in batches of 64 from one goroutine on one thread.
func (n *Net) StartFlood(s FloodSpec) (*Flood, error) {
	if len(s.Targets) == 0 {
		return nil, errorf("flood: no targets")
	}
	var conn *net.UDPConn
	err := n.Hosts[s.Host].Run(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", s.Src.String())
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("flood: socket in %s from %s: %w", s.Host, s.Src, err)
	}
	payloads, err := floodPayloads(s, 256)
	if err != nil {
		conn.Close()
		return nil, err
	}
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		t := s.Targets[i%len(s.Targets)]
		msgs[i] = ipv4.Message{Buffers: [][]byte{payloads[i%len(payloads)]}, Addr: net.UDPAddrFromAddrPort(t)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.D)
	f := &Flood{done: make(chan struct{}), stop: cancel}
	pc := ipv4.NewPacketConn(conn)
	go func() {
		defer close(f.done)
		defer cancel()
		defer conn.Close()
		start := time.Now()
		var sent uint64
		for round := 0; ctx.Err() == nil; round++ {
			// Rotate the payloads so consecutive batches differ.
			for i := range msgs {
				msgs[i].Buffers[0] = payloads[(round*batch+i)%len(payloads)]
			}
			k, err := pc.WriteBatch(msgs, 0)
			if err != nil {
				// A full transmit queue (ENOBUFS) is the sender's limit,
				// not an error of the run.
				if k <= 0 {
					continue
				}
			}
			sent += uint64(k)
			if s.Rate > 0 {
				// Sleep until this many datagrams are due at the rate.
				due := start.Add(time.Duration(float64(sent) / float64(s.Rate) * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
				}
			}
		}
		f.res = FloodResult{Sent: sent, Took: time.Since(start)}
	}()
	return f, nil
}

// floodPayloads returns n payloads of random length 64..200 bytes.
func floodPayloads(s FloodSpec, n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		var l [1]byte
		if _, err := rand.Read(l[:]); err != nil {
			return nil, err
		}
		b := make([]byte, 64+int(l[0])%137)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if s.Forge {
			// magic, version 3, type join, cluster tag, epoch,
			// incarnation, seq (one-byte varints), from, to,
			// to-incarnation; the rest random, its last 32 bytes the
			// (wrong) MAC.
			tag := s.Tag
			if tag == 0 {
				tag = protocol.ClusterID(s.Cluster)
			}
			h := []byte{'V', 'G', 3, byte(protocol.MsgJoin)}
			h = binary.BigEndian.AppendUint64(h, tag)
			h = append(h, 1, 1, byte(1+i%127))
			h = append(h, byte(len(s.From)))
			h = append(h, s.From...)
			h = append(h, byte(len(s.To)))
			h = append(h, s.To...)
			h = append(h, 0)
			b = append(h, b[:32]...)
		}
		out[i] = b
	}
	return out, nil
}
