package transporttest

import (
	"bytes"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/protocol"
)

const ms = time.Millisecond

func testNet(t *testing.T) (*clock.Fake, *Network) {
	t.Helper()
	clk := clock.NewFake(time.Second)
	n, err := New(clk, bytes.Repeat([]byte{7}, protocol.KeySize), ms)
	if err != nil {
		t.Fatal(err)
	}
	return clk, n
}

func checkIn(from, to string, round uint64) protocol.Envelope {
	return protocol.Envelope{To: to, Msg: protocol.Message{Type: protocol.MsgCheckIn, From: from, To: to,
		ClusterID: protocol.ClusterID("t"), Incarnation: 1, Seq: round, CheckIn: protocol.CheckIn{Round: round}}}
}

func rounds(e *Endpoint) (out []uint64) {
	for {
		in, ok := e.Recv()
		if !ok {
			return out
		}
		out = append(out, in.Msg.CheckIn.Round)
	}
}

// Datagrams go by type to the node manager or the locator, arrive after
// the latency through the wire encoding, stamped with their arrival.
func TestNetworkRoutesAndDelays(t *testing.T) {
	clk, n := testNet(t)
	a := n.Endpoint(Addr{Host: "a"})
	wl := n.Endpoint(Addr{Host: "w", Locator: true})
	wn := n.Endpoint(Addr{Host: "w"})
	if err := a.Send(checkIn("a", "w", 1)); err != nil {
		t.Fatal(err)
	}
	if n.Deliver() != 0 {
		t.Fatal("arrived before the latency")
	}
	clk.Advance(ms)
	if n.Deliver() != 1 {
		t.Fatal("did not arrive")
	}
	in, ok := wl.Recv()
	if !ok || in.At != time.Second+ms || in.Msg.From != "a" || in.Msg.CheckIn.Round != 1 {
		t.Fatalf("locator got %+v %v", in, ok)
	}
	if _, ok := wn.Recv(); ok {
		t.Fatal("a check-in reached the node manager")
	}
	bad := checkIn("a", "w", 2)
	bad.To = "b"
	if a.Send(bad) == nil || a.Stats().SendErrors != 1 || a.Stats().Sent != 1 {
		t.Fatalf("a misaddressed envelope was sent: %+v", a.Stats())
	}
}

func TestNetworkFaults(t *testing.T) {
	clk, n := testNet(t)
	a := n.Endpoint(Addr{Host: "a"})
	w := n.Endpoint(Addr{Host: "w", Locator: true})
	n.SetRule(func(from, to Addr, m protocol.Message) Fate {
		switch m.CheckIn.Round {
		case 1:
			return Fate{Drop: true}
		case 2:
			return Fate{Delay: 10 * ms}
		case 3:
			return Fate{Extra: 1}
		}
		return Fate{}
	})
	for r := uint64(1); r <= 4; r++ {
		_ = a.Send(checkIn("a", "w", r))
	}
	clk.Advance(ms)
	n.Deliver()
	if got := rounds(w); len(got) != 3 || got[0] != 3 || got[1] != 3 || got[2] != 4 {
		t.Fatalf("first arrivals %v, want [3 3 4]", got)
	}
	clk.Advance(10 * ms)
	n.Deliver()
	if got := rounds(w); len(got) != 1 || got[0] != 2 {
		t.Fatalf("delayed arrivals %v, want [2]", got)
	}

	n.SetRule(nil)
	n.Partition([]string{"a"}, []string{"w", "b"})
	_ = a.Send(checkIn("a", "w", 5))
	clk.Advance(ms)
	if n.Deliver() != 0 {
		t.Fatal("crossed a partition")
	}
	n.Heal()
	_ = a.Send(checkIn("a", "w", 6))
	clk.Advance(ms)
	n.Deliver()
	if got := rounds(w); len(got) != 1 || got[0] != 6 {
		t.Fatalf("after heal %v, want [6]", got)
	}
	_ = w.Close()
	_ = a.Send(checkIn("a", "w", 7))
	clk.Advance(ms)
	if n.Deliver() != 0 {
		t.Fatal("delivered to a closed endpoint")
	}
}
