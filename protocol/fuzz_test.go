package protocol

import (
	"reflect"
	"testing"
	"time"
)

// FuzzDecode: arbitrary datagrams never panic; whatever decodes encodes
// back to the same bytes and decodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(testKey, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("VG\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(testKey, b)
		if err != nil {
			return
		}
		b2, err := Encode(testKey, m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v (%+v)", err, m)
		}
		m2, err := Decode(testKey, b2)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, m, m2)
		}
	})
}

// FuzzDecodeUnauthenticated: with the MAC recomputed, the fuzzer reaches
// the body parser with arbitrary bodies; still no panic, and a message
// that parses round-trips.
func FuzzDecodeUnauthenticated(f *testing.F) {
	for _, m := range sampleMessages() {
		b, _ := Encode(testKey, m)
		f.Add(b[:len(b)-macLen])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b := remac(append(body, make([]byte, macLen)...))
		m, err := Decode(testKey, b)
		if err != nil {
			return
		}
		b2, err := Encode(testKey, m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		if m2, err := Decode(testKey, b2); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzNodeStep feeds a node an arbitrary sequence of authenticated messages
// (as if from compromised or buggy peers holding the key) and local inputs.
// It must never panic and must keep its own invariants:
//   - it holds a lease only as Active, and never longer than one Lease
//     past the latest claim or renewal it sent;
//   - every claim it sends is for an epoch already in the state to persist;
//   - the persisted state never goes backwards.
func FuzzNodeStep(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte{200, 0, 0, 3, 1, 0, 2, 1, 1, 3, 2, 1, 0, 2, 1, 4, 9, 9, 9, 1})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := testCfg("a")
		n, err := NewNode(cfg, NodeState{}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Second
		var persisted NodeState
		var lastClaimSent time.Duration = -1
		var rounds []uint64
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		peers := []string{"a", "b", "w", "zz"}
		var seq uint64
		for steps := 0; len(data) > 0 && steps < 500; steps++ {
			op := next()
			switch op % 9 {
			case 0:
				now += time.Duration(next()) * ms
				n.Tick(now)
			case 1:
				now += time.Duration(next()) * ms * 10
				n.Tick(now)
			case 2:
				n.SetHealth(now, next()%2 == 0)
			case 3:
				n.SetMaintenance(now, next()%4 == 0)
			case 4:
				_ = n.Switchover(now, peers[int(next())%len(peers)])
			case 5:
				n.Late(now, time.Duration(next())*ms)
			default:
				seq++
				m := Message{Type: MsgType(next()%8 + 0), From: peers[int(next())%len(peers)], ClusterID: ClusterID("t"),
					Epoch: uint64(next() % 8), Incarnation: 1, Seq: seq, ToIncarnation: n.st.Incarnation}
				if next()%8 == 0 {
					m.ToIncarnation = uint64(next() % 4) // sent to another incarnation of this node
				}
				var round uint64
				if len(rounds) > 0 {
					round = rounds[int(next())%len(rounds)]
				}
				e := uint64(next() % 8)
				holder := peers[int(next())%len(peers)]
				switch m.Type {
				case MsgToken:
					m.Token = Token{Epoch: e, Seq: uint64(next()), Active: holder, Handover: peers[int(next())%len(peers)],
						Nodes: []NodeHealth{{ID: "a", Healthy: true, InRing: true}, {ID: "b", Healthy: next()%2 == 0, InRing: next()%2 == 0}}}
				case MsgAck:
					m.Ack = Ack{Round: round, Granted: next()%2 == 0, Epoch: e, Holder: holder, GrantIn: time.Duration(next()) * ms}
				case MsgTransfer:
					m.Transfer = Transfer{Epoch: e, To: holder}
				case MsgSwitchover:
					m.Switchover = Switchover{To: holder, TokenSeq: uint64(next())}
				}
				_ = n.Step(now, m)
			}
			rd := n.Ready()
			if rd.State != nil {
				if rd.State.MaxEpoch < persisted.MaxEpoch || rd.State.Incarnation < persisted.Incarnation {
					t.Fatalf("state went backwards: %+v after %+v", rd.State, persisted)
				}
				persisted = *rd.State
				n.Persisted(*rd.State)
			}
			for _, env := range rd.Messages {
				if env.Msg.Type == MsgCheckIn && env.Msg.CheckIn.Claim {
					if env.Msg.CheckIn.Epoch > persisted.MaxEpoch {
						t.Fatalf("claim of epoch %d sent before it was persisted (%d)", env.Msg.CheckIn.Epoch, persisted.MaxEpoch)
					}
					lastClaimSent = now
				}
				if env.Msg.Type == MsgCheckIn && env.Msg.CheckIn.Round != 0 {
					rounds = append(rounds, env.Msg.CheckIn.Round)
					if len(rounds) > 16 {
						rounds = rounds[1:]
					}
				}
				if _, err := Encode(testKey, env.Msg); err != nil {
					t.Fatalf("node produced an unencodable message: %v", err)
				}
			}
			st := n.Status()
			if n.ActiveAt(now) && n.Role() != Active {
				t.Fatal("ActiveAt without the Active role")
			}
			if n.ActiveAt(now) && (lastClaimSent < 0 || st.LeaseUntil > lastClaimSent+cfg.Lease) {
				t.Fatalf("lease until %v, but the last claim/renewal was sent at %v", st.LeaseUntil, lastClaimSent)
			}
		}
	})
}
