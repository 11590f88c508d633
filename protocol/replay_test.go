package protocol

import (
	"bytes"
	"errors"
	"testing"
)

func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	ok := func(inc, seq uint64) {
		t.Helper()
		if err := w.Accept(inc, seq); err != nil {
			t.Fatalf("(%d,%d): %v", inc, seq, err)
		}
	}
	bad := func(inc, seq uint64) {
		t.Helper()
		if err := w.Accept(inc, seq); !errors.Is(err, ErrReplay) {
			t.Fatalf("(%d,%d): got %v, want ErrReplay", inc, seq, err)
		}
	}
	ok(5, 1)
	ok(5, 2)
	bad(5, 2) // duplicate
	ok(5, 10)
	ok(5, 4) // late but within the window
	bad(5, 4)
	ok(5, 3)
	ok(5, 100)
	bad(5, 100-ReplayWindowSize) // too old
	ok(5, 100-ReplayWindowSize+1)
	bad(5, 10) // seen before the window slid? too old now
	bad(5, 0)  // never valid
	// The sender restarted: a new incarnation counts from 1 again.
	ok(6, 1)
	ok(6, 2)
	bad(5, 101) // the old incarnation is gone for good
	bad(6, 1)
	// A jump larger than the window clears it.
	ok(6, 1000)
	ok(6, 999)
	bad(6, 999)
	if err := w.Check(6, 1001); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(6, 1001); err != nil {
		t.Fatal("Check must not record")
	}
}

func TestReplayFilter(t *testing.T) {
	cfg := Config{Cluster: "c", Self: "b", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"}}
	f := NewReplayFilter(cfg)
	m := Message{Type: MsgToken, From: "a", ClusterID: ClusterID("c"), Incarnation: 1, Seq: 1, To: "b"}
	if err := f.Accept(m); err != nil {
		t.Fatal(err)
	}
	if err := f.Accept(m); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	// Host a's locator has its own sequence space.
	ack := Message{Type: MsgAck, From: "a", ClusterID: ClusterID("c"), Incarnation: 1, Seq: 1, To: "b"}
	if err := f.Accept(ack); err != nil {
		t.Fatalf("locator of the same host: %v", err)
	}
	stranger := m
	stranger.From = "z"
	if err := f.Accept(stranger); !errors.Is(err, ErrPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	other := m
	other.ClusterID, other.Seq = ClusterID("d"), 2
	if err := f.Accept(other); !errors.Is(err, ErrCluster) {
		t.Fatalf("other cluster: %v", err)
	}
}

// A check-in sealed for locator a, captured and re-sent to locator w, is
// refused by w's filter with ErrDestination (the transport counts it as
// "destination"), while a itself accepts it. Before wire version 2 the
// destination was not in the datagram and w accepted it.
func TestReplayFilterRefusesAnotherDestination(t *testing.T) {
	cfg := Config{Cluster: "c", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"}}
	m := Message{Type: MsgCheckIn, From: "b", ClusterID: ClusterID("c"), Incarnation: 2, Seq: 7, To: "a", ToIncarnation: 1,
		CheckIn: CheckIn{Round: 9, Claim: true, Epoch: 3}}
	b, err := Encode(testKey, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(testKey, b)
	if err != nil {
		t.Fatal(err)
	}
	if got.To != "a" || got.ToIncarnation != 1 {
		t.Fatalf("destination not carried: %+v", got)
	}
	cfg.Self = "w"
	if err := NewReplayFilter(cfg).Accept(got); !errors.Is(err, ErrDestination) {
		t.Fatalf("w accepted a datagram for a: %v", err)
	}
	cfg.Self = "a"
	if err := NewReplayFilter(cfg).Accept(got); err != nil {
		t.Fatalf("a refused its own datagram: %v", err)
	}
	// Rewriting the destination breaks the MAC.
	forged := append([]byte(nil), b...)
	i := bytes.Index(forged, []byte{1, 'a', 1}) // to "a", to-incarnation 1
	if i < 0 {
		t.Fatal("destination not found in the datagram")
	}
	forged[i+1] = 'w'
	if _, err := Decode(testKey, forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("a datagram re-addressed to w decoded: %v", err)
	}
}
