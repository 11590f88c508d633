package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/protocol"
)

// Real UDP on loopback: a valid datagram is delivered once; a replay, one
// under the wrong key, a truncated one, one for another cluster and plain
// garbage are dropped and counted by reason, and the receiver keeps going.
func TestDropsAreCountedAndNothingStops(t *testing.T) {
	port := freePair(t)
	cfg := &config.Config{}
	cfg.Cluster.Name = "edge"
	cfg.Cluster.Node = "b"
	cfg.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "127.0.0.1:1"}, {ID: "b", Address: cfg.Cluster.Listen}}
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
	m := protocol.Message{Type: protocol.MsgJoin, From: "a", ClusterID: protocol.ClusterID("edge"), Incarnation: 1, Seq: 1}
	good, _ := protocol.Encode(key, m)
	wrongKey, _ := protocol.Encode(bytes.Repeat([]byte{2}, 32), func() protocol.Message { m2 := m; m2.Seq = 2; return m2 }())
	other := m
	other.Seq, other.ClusterID = 3, protocol.ClusterID("elsewhere")
	otherCluster, _ := protocol.Encode(key, other)
	stranger := m
	stranger.Seq, stranger.From = 4, "mallory"
	unknownPeer, _ := protocol.Encode(key, stranger)
	for _, b := range [][]byte{good, good, wrongKey, good[:len(good)-5], otherCluster, unknownPeer, []byte("INVITE sip:x SIP/2.0\r\n\r\n"), {}} {
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
	want := map[string]uint64{"replay": 1, "auth": 1, "cluster": 1, "peer": 1}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := tr.Stats()
		ok := st.Received == 1
		for k, v := range want {
			ok = ok && st.Dropped[k] == v
		}
		// truncated, garbage and empty: short or magic or auth, whichever
		// check the decoder hits first; three in all.
		var total uint64
		for _, v := range st.Dropped {
			total += v
		}
		if ok && total == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %v plus 3 malformed", st, want)
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
