package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/protocol"
)

// Real UDP on loopback: a valid datagram is delivered once; a replay, one
// under the wrong key, a truncated one, one for another cluster, one
// captured on its way to another host and plain garbage are dropped and
// counted by reason, and the receiver keeps going.
func TestDropsAreCountedAndNothingStops(t *testing.T) {
	port := freePair(t)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "b"
	cfg.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "127.0.0.1:1"}, {ID: "b", Address: cfg.Cluster.Listen}, {ID: "c", Address: "127.0.0.1:3"}}
	pcfg := ProtocolConfig(cfg)
	key := bytes.Repeat([]byte{1}, 32)
	tr, err := Open(cfg, pcfg, key, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan Inbound, 16)
	go tr.Run(ctx, in)

	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(tr.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := protocol.Message{Type: protocol.MsgJoin, From: "a", ClusterID: protocol.ClusterID("edge"), Incarnation: 1, Seq: 1, To: "b"}
	good, _ := protocol.Encode(key, m)
	wrongKey, _ := protocol.Encode(bytes.Repeat([]byte{2}, 32), func() protocol.Message { m2 := m; m2.Seq = 2; return m2 }())
	other := m
	other.Seq, other.ClusterID = 3, protocol.ClusterID("elsewhere")
	otherCluster, _ := protocol.Encode(key, other)
	stranger := m
	stranger.Seq, stranger.From = 4, "mallory"
	unknownPeer, _ := protocol.Encode(key, stranger)
	// Authentic, from a known peer, fresh, but sealed for host c.
	elsewhere := m
	elsewhere.Seq, elsewhere.To = 5, "c"
	forOtherHost, _ := protocol.Encode(key, elsewhere)
	badMAC := append([]byte(nil), good...)
	badMAC[len(badMAC)-1] ^= 1
	for _, b := range [][]byte{good, good, wrongKey, good[:len(good)-5], otherCluster, unknownPeer, forOtherHost, []byte("INVITE sip:x SIP/2.0\r\n\r\n"), {}, badMAC} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-in:
		if got.Msg.From != "a" || got.Msg.Seq != 1 || got.At <= 0 {
			t.Fatalf("delivered %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("valid datagram not delivered")
	}
	// Another key writes another cluster tag: refused before the MAC, as
	// another cluster's datagram is.
	want := map[string]uint64{"replay": 1, "cluster": 2, "peer": 1, "destination": 1}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := tr.Stats()
		ok := st.Received == 1
		for k, v := range want {
			ok = ok && st.Dropped[k] == v
		}
		// truncated, garbage and empty: short or magic or auth, whichever
		// check the decoder hits first; three in all, besides the bad MAC.
		var total uint64
		for _, v := range st.Dropped {
			total += v
		}
		if ok && total == 9 && st.Dropped["auth"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %v, an auth and 3 malformed", st, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case extra := <-in:
		t.Fatalf("a bad datagram was delivered: %+v", extra)
	default:
	}
}

func freePair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		a.Close()
		if b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1}); err == nil {
			b.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// Run stops when its context ends but leaves the socket open: a node
// manager that is stopping still sends its handover (release, transfer)
// after it stopped listening. Only Close closes the socket.
func TestRunEndsWithoutClosingTheSocket(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	port := freePair(t)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "b"
	cfg.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: peer.LocalAddr().String()}, {ID: "b", Address: cfg.Cluster.Listen}}
	key := bytes.Repeat([]byte{1}, 32)
	tr, err := Open(cfg, ProtocolConfig(cfg), key, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx, make(chan Inbound)); close(done) }()
	time.Sleep(20 * time.Millisecond) // let Run block in its read
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}

	m := protocol.Message{Type: protocol.MsgTransfer, From: "b", ClusterID: protocol.ClusterID("edge"), Incarnation: 1, Seq: 1, To: "a",
		Transfer: protocol.Transfer{Epoch: 3, To: "a"}}
	if err := tr.Send(protocol.Envelope{To: "a", Msg: m}); err != nil {
		t.Fatalf("send after Run ended: %v", err)
	}
	buf := make([]byte, 2048)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatalf("the handover datagram did not arrive: %v", err)
	}
	got, err := protocol.Decode(key, buf[:n])
	if err != nil || got.Type != protocol.MsgTransfer || got.Transfer.To != "a" {
		t.Fatalf("received %+v, %v", got, err)
	}

	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(protocol.Envelope{To: "a", Msg: m}); err == nil {
		t.Error("send after Close succeeded")
	}
}

// A burst of garbage is one warning when it begins and one line with the
// totals when it has been quiet for the episode's gap, not a line per
// datagram; the per-source counters stay bounded however many sources a
// spoofer uses.
func TestDropsLogOncePerEpisodeAndSourcesAreBounded(t *testing.T) {
	port := freePair(t)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "b"
	cfg.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "127.0.0.1:1"}, {ID: "b", Address: cfg.Cluster.Listen}}
	rec := &recorder{}
	tr, err := Open(cfg, ProtocolConfig(cfg), bytes.Repeat([]byte{1}, 32), false, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.quiet = 200 * time.Millisecond
	if st := tr.Stats(); st.KernelFilter != "off: loopback cluster" {
		t.Errorf("kernel filter on a loopback cluster: %q", st.KernelFilter)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tr.Run(ctx, make(chan Inbound, 1))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(tr.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 100 {
		if _, err := c.Write([]byte("garbage garbage garbage garbage garbage garbage garbage garbage")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for tr.Stats().Dropped["magic"] < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 100 magic", tr.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The episode ends after its quiet gap; Stats notices.
	for rec.count("datagram_drops_ended") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no datagram_drops_ended after the quiet gap")
		}
		time.Sleep(20 * time.Millisecond)
		tr.Stats()
	}
	if n := rec.count("datagram_dropped"); n != 1 {
		t.Errorf("%d datagram_dropped warnings for one burst, want 1", n)
	}
	if got := tr.Stats().DroppedBySource["127.0.0.1"]; got != 100 {
		t.Errorf("drops from 127.0.0.1 = %d, want 100", got)
	}

	// A spoofer cycling through addresses.
	for i := range 1000 {
		tr.drop("stranger", netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).Next(), nil)
	}
	st := tr.Stats()
	if len(st.DroppedBySource) > maxSources+1 || st.DroppedBySource["other"] == 0 {
		t.Errorf("%d per-source counters (other=%d), want at most %d and the rest under other", len(st.DroppedBySource), st.DroppedBySource["other"], maxSources+1)
	}
}

// recorder is a slog.Handler counting records by their event attribute.
type recorder struct {
	mu     sync.Mutex
	events map[string]int
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "event" {
			r.mu.Lock()
			if r.events == nil {
				r.events = map[string]int{}
			}
			r.events[a.Value.String()]++
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

func (r *recorder) count(event string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[event]
}

// The reader reads when the poller says there is something, and after a
// batch that emptied the socket it waits instead of reading once more to
// be told EAGAIN (rawBatch.each): an idle node manager makes one system
// call per datagram, not two. What a burst leaves behind a full batch is
// read at once, and nothing is lost between batches: on the lane of a
// peer and on the catch-all socket.
func TestReaderReadsOnlyWhatIsThere(t *testing.T) {
	lanePeer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer lanePeer.Close()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := freePair(t)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "b"
	cfg.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: lanePeer.LocalAddr().String()}, {ID: "b", Address: cfg.Cluster.Listen}}
	key := bytes.Repeat([]byte{1}, 32)
	tr, err := Open(cfg, ProtocolConfig(cfg), key, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if len(tr.lanes) == 0 {
		t.Fatal("no lane to peer a")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan Inbound, 1024)
	go tr.Run(ctx, in)

	dst := net.UDPAddrFromAddrPort(tr.Addr())
	seq := uint64(0)
	send := func(c *net.UDPConn) {
		t.Helper()
		seq++
		b, err := protocol.Encode(key, protocol.Message{Type: protocol.MsgJoin, From: "a", ClusterID: protocol.ClusterID("edge"), Incarnation: 1, Seq: seq, To: "b"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	next := uint64(0)
	receive := func(n int) {
		t.Helper()
		for range n {
			select {
			case got := <-in:
				next++
				if got.Msg.Seq != next {
					t.Fatalf("received seq %d, want %d", got.Msg.Seq, next)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("datagram %d not delivered", next+1)
			}
		}
	}
	// Singles, each delivered before the next is sent, on the lane and on
	// the catch-all socket.
	const singles = 100
	for _, c := range []*net.UDPConn{lanePeer, other} {
		before := tr.emptyReads.Load()
		for range singles {
			send(c)
			receive(1)
		}
		// A read may find nothing now and then (a wake-up for a datagram
		// a previous read already took); one per datagram is the bug.
		if empty := tr.emptyReads.Load() - before; empty > singles/4 {
			t.Errorf("%d reads found nothing for %d datagrams", empty, singles)
		}
	}
	// Bursts longer than a batch, then singles again: nothing stays
	// behind a full batch or a partial one. Two batches and a bit: as a
	// user without SO_RCVBUFFORCE, a socket's buffer is rmem_max (208
	// KiB on a stock kernel), and a burst must fit in it.
	const burst = 2*readBatch + 3
	for _, c := range []*net.UDPConn{lanePeer, other} {
		for range burst {
			send(c)
		}
		receive(burst)
		for range 3 {
			send(c)
			receive(1)
		}
	}
	if st := tr.Stats(); st.Received != next || len(st.Dropped) != 0 {
		t.Fatalf("stats %+v, want %d received and no drops", st, next)
	}
}
