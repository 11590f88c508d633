package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func sampleMessages() []Message {
	h := Message{From: "node-a", ClusterID: ClusterID("sip-edge"), Epoch: 42, Incarnation: 3, Seq: 1 << 40}
	with := func(t MsgType, f func(*Message)) Message {
		m := h
		m.Type = t
		f(&m)
		return m
	}
	return []Message{
		with(MsgToken, func(m *Message) {
			m.Token = Token{Epoch: 42, Seq: 9, Active: "node-a", Handover: "node-b", Nodes: []NodeHealth{
				{ID: "node-a", Healthy: true, InRing: true}, {ID: "node-b", Maintenance: true}}}
		}),
		with(MsgToken, func(m *Message) { m.Token = Token{Epoch: 1, Seq: 1} }),
		with(MsgCheckIn, func(m *Message) {
			m.CheckIn = CheckIn{Round: 3<<32 | 7, Claim: true, Epoch: 43, Healthy: true, TokenSeq: 12}
		}),
		with(MsgCheckIn, func(m *Message) { m.CheckIn = CheckIn{Maintenance: true} }),
		with(MsgCheckIn, func(m *Message) {
			m.CheckIn = CheckIn{Round: 9, Claim: true, Epoch: 44, Conf: Membership{Version: 2, Members: 0b10111}}
		}),
		with(MsgCheckIn, func(m *Message) {
			m.CheckIn = CheckIn{Round: 9, Claim: true, Epoch: 44, Next: Membership{Version: 1, Members: 0b01111}}
		}),
		with(MsgAck, func(m *Message) {
			m.Ack = Ack{Round: 78, Epoch: 43, Conf: Membership{Version: 7, Members: 0b11}}
		}),
		with(MsgAck, func(m *Message) { m.Ack = Ack{Round: 79, Epoch: 43, Conf: Membership{Unknown: true}} }),
		with(MsgAck, func(m *Message) {
			m.Ack = Ack{Round: 77, Granted: true, Epoch: 43, Holder: "node-a", GrantIn: 225 * time.Millisecond}
		}),
		with(MsgRelease, func(m *Message) { m.Release = Release{Epoch: 42} }),
		with(MsgTransfer, func(m *Message) { m.Transfer = Transfer{Epoch: 42, To: "node-b"} }),
		with(MsgJoin, func(m *Message) {}),
		with(MsgSwitchover, func(m *Message) { m.Switchover = Switchover{To: "node-b", TokenSeq: 300} }),
		with(MsgSwitchover, func(m *Message) { m.Switchover = Switchover{} }),
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b, err := Encode(testKey, m)
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if len(b) > 200 {
			t.Errorf("%s: %d bytes; the encoding should be compact", m.Type, len(b))
		}
		got, err := Decode(testKey, b)
		if err != nil {
			t.Fatalf("%s: decode: %v", m.Type, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", m.Type, got, m)
		}
	}
}

// remac recomputes the MAC of a datagram whose body was edited, to reach
// the parser with well-authenticated garbage.
func remac(b []byte) []byte {
	body := b[:len(b)-macLen]
	mac := hmac.New(sha256.New, testKey)
	mac.Write(body)
	return mac.Sum(append([]byte(nil), body...))
}

func TestDecodeErrors(t *testing.T) {
	good, err := Encode(testKey, sampleMessages()[0])
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	otherKey := bytes.Repeat([]byte{8}, 32)
	cases := []struct {
		name string
		key  []byte
		b    []byte
		want error
	}{
		{"empty", testKey, nil, ErrShort},
		{"short", testKey, good[:20], ErrShort},
		{"magic", testKey, mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"version", testKey, mod(func(b []byte) []byte { b[2] = 9; return b }), ErrVersion},
		{"type0", testKey, mod(func(b []byte) []byte { b[3] = 0; return b }), ErrType},
		{"type99", testKey, mod(func(b []byte) []byte { b[3] = 99; return b }), ErrType},
		{"too large", testKey, append(append([]byte(nil), good...), make([]byte, MaxDatagram)...), ErrTooLarge},
		{"flipped body bit", testKey, mod(func(b []byte) []byte { b[20] ^= 1; return b }), ErrAuth},
		{"flipped mac bit", testKey, mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrAuth},
		{"truncated", testKey, good[:len(good)-1], ErrAuth},
		{"wrong key", otherKey, good, ErrAuth},
		{"bad key length", testKey[:16], good, ErrKey},
		{"trailing garbage, authenticated", testKey, remac(mod(func(b []byte) []byte {
			return append(b[:len(b)-macLen], append([]byte{0xff}, b[len(b)-macLen:]...)...)
		})), ErrMalformed},
		{"cut body, authenticated", testKey, remac(mod(func(b []byte) []byte {
			return append(b[:len(b)-macLen-3], b[len(b)-macLen:]...)
		})), ErrMalformed},
		{"type changed, authenticated", testKey, remac(mod(func(b []byte) []byte { b[3] = byte(MsgRelease); return b })), ErrMalformed},
	}
	for _, c := range cases {
		_, err := Decode(c.key, c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	m := sampleMessages()[0]
	if _, err := Encode(testKey[:31], m); !errors.Is(err, ErrKey) {
		t.Errorf("short key: %v", err)
	}
	bad := m
	bad.Type = 0
	if _, err := Encode(testKey, bad); !errors.Is(err, ErrType) {
		t.Errorf("type 0: %v", err)
	}
	long := m
	long.From = strings.Repeat("x", MaxIDLen+1)
	if _, err := Encode(testKey, long); !errors.Is(err, ErrTooLarge) {
		t.Errorf("long id: %v", err)
	}
	many := m
	many.Token.Nodes = make([]NodeHealth, MaxPeers+1)
	if _, err := Encode(testKey, many); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too many nodes: %v", err)
	}
	// The largest legal token still fits in one datagram.
	big := m
	big.From = strings.Repeat("f", MaxIDLen)
	big.Token.Active, big.Token.Handover = strings.Repeat("a", MaxIDLen), strings.Repeat("h", MaxIDLen)
	big.Token.Nodes = make([]NodeHealth, MaxPeers)
	for i := range big.Token.Nodes {
		big.Token.Nodes[i].ID = strings.Repeat(string(rune('a'+i)), MaxIDLen)
	}
	b, err := Encode(testKey, big)
	if err != nil {
		t.Fatalf("largest token: %v", err)
	}
	if _, err := Decode(testKey, b); err != nil {
		t.Fatalf("largest token: %v", err)
	}
}

func TestClusterIDDiffers(t *testing.T) {
	x1, x2 := ClusterID("x"), ClusterID("x")
	if ClusterID("a") == ClusterID("b") || x1 != x2 || x1 == 0 {
		t.Fatal("ClusterID must be a stable hash of the name")
	}
}

// The cluster tag sits at TagOffset, depends on the key and the name,
// and Decode gives the core back the plain cluster id; a version-2
// datagram (the unmasked id) is refused as a version mismatch.
func TestClusterTag(t *testing.T) {
	other := bytes.Repeat([]byte{9}, KeySize)
	tag := ClusterTag(testKey, "edge")
	if tag == ClusterID("edge") || tag == ClusterTag(other, "edge") || tag == ClusterTag(testKey, "core") || tag != ClusterTag(testKey, "edge") {
		t.Fatal("ClusterTag must be a stable function of both the key and the name, and not the plain id")
	}
	m := Message{Type: MsgJoin, ClusterID: ClusterID("edge"), Incarnation: 1, Seq: 1, From: "a", To: "b"}
	b, err := Encode(testKey, m)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint64(b[TagOffset:]); got != tag {
		t.Fatalf("tag on the wire %x, want %x", got, tag)
	}
	if len(b) < MinDatagram {
		t.Fatalf("a %d-byte datagram is shorter than MinDatagram %d", len(b), MinDatagram)
	}
	got, err := Decode(testKey, b)
	if err != nil || got.ClusterID != m.ClusterID {
		t.Fatalf("Decode: cluster id %x, %v; want %x", got.ClusterID, err, m.ClusterID)
	}
	d, _ := NewDecoder(testKey)
	if got, err := d.Decode(b); err != nil || got.ClusterID != m.ClusterID {
		t.Fatalf("Decoder.Decode: cluster id %x, %v; want %x", got.ClusterID, err, m.ClusterID)
	}
	v2 := append([]byte(nil), b...)
	v2[2] = 2
	if _, err := Decode(testKey, v2); !errors.Is(err, ErrVersion) {
		t.Fatalf("a version-2 datagram: %v, want ErrVersion", err)
	}
}

// The Encoder, which keeps its MAC state between calls, writes the bytes
// Encode writes, also after a refused message and when appending to a
// buffer that already holds data.
func TestEncoderAgreesWithEncode(t *testing.T) {
	if _, err := NewEncoder(testKey[:31]); !errors.Is(err, ErrKey) {
		t.Errorf("short key: %v", err)
	}
	e, err := NewEncoder(testKey)
	if err != nil {
		t.Fatal(err)
	}
	bad := sampleMessages()[0]
	bad.From = strings.Repeat("x", MaxIDLen+1)
	prefix := []byte("prefix")
	for round := 0; round < 3; round++ {
		for _, m := range sampleMessages() {
			want, err := Encode(testKey, m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.AppendEncode(append([]byte(nil), prefix...), m)
			if err != nil {
				t.Fatalf("%s: %v", m.Type, err)
			}
			if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("%s: Encoder wrote %x, Encode %x", m.Type, got[len(prefix):], want)
			}
			if _, err := e.AppendEncode(nil, bad); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("long id: %v", err)
			}
		}
	}
}

// A switchover body without the token seq (what builds before the field
// send) decodes with TokenSeq 0, which the active takes as fresh; a body
// with bytes after the seq is still malformed.
func TestDecodeSwitchoverWithoutTokenSeq(t *testing.T) {
	m := sampleMessages()[0]
	m.Type, m.Token, m.Switchover = MsgSwitchover, Token{}, Switchover{To: "node-b", TokenSeq: 5}
	b, err := Encode(testKey, m)
	if err != nil {
		t.Fatal(err)
	}
	body := b[:len(b)-macLen]
	if body[len(body)-1] != 5 {
		t.Fatalf("the token seq is not the body's last byte: % x", body)
	}
	old := remac(append(append([]byte(nil), body[:len(body)-1]...), make([]byte, macLen)...))
	got, err := Decode(testKey, old)
	if err != nil {
		t.Fatalf("a switchover of an earlier build: %v", err)
	}
	if got.Switchover != (Switchover{To: "node-b"}) {
		t.Fatalf("decoded %+v", got.Switchover)
	}
	long := remac(append(append(append([]byte(nil), body...), 1), make([]byte, macLen)...))
	if _, err := Decode(testKey, long); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a byte after the token seq: %v, want ErrMalformed", err)
	}
}

// The memberships of last_man_standing are a trailer written only when
// one differs from the configured membership: a check-in or ack without
// them is byte for byte what an earlier build sends, and a trailer that
// says nothing (both the configured one), or a membership that cannot be
// (unknown with members, known with none past version 0), is malformed.
func TestMembershipTrailer(t *testing.T) {
	h := Message{From: "a", To: "b", ClusterID: ClusterID("edge"), Epoch: 1, Incarnation: 1, Seq: 1}
	plain := h
	plain.Type, plain.CheckIn = MsgCheckIn, CheckIn{Round: 5, Claim: true, Epoch: 3}
	with := plain
	with.CheckIn.Conf = Membership{Version: 1, Members: 0b0111}
	b1, err := Encode(testKey, plain)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Encode(testKey, with)
	if err != nil {
		t.Fatal(err)
	}
	if len(b2) != len(b1)+6 {
		t.Errorf("trailer of %d bytes, want 6 (two memberships of 3)", len(b2)-len(b1))
	}
	body := b2[:len(b2)-macLen]
	for _, c := range []struct {
		name    string
		trailer []byte
	}{
		{"both configured", []byte{0, 0, 0, 0, 0, 0}},
		{"unknown with members", []byte{0, 3, 1, 0, 0, 0}},
		{"unknown past version 0", []byte{2, 0, 1, 0, 0, 0}},
		{"no members past version 0", []byte{2, 0, 0, 0, 0, 0}},
		{"unknown flag bits", []byte{1, 3, 4, 0, 0, 0}},
		{"half a trailer", []byte{1, 3}},
	} {
		bad := append(append([]byte{}, body[:len(body)-6]...), c.trailer...)
		if _, err := Decode(testKey, remac(append(bad, make([]byte, macLen)...))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", c.name, err)
		}
	}
}
