package protocol

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// Peek reads the head a receiver checks before the MAC, and the Decoder,
// which reuses its MAC state, agrees with Decode on every mutation of
// valid datagrams: same message or same error class.
func TestPeekAndDecoderAgreeWithDecode(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	d, err := NewDecoder(key)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{
		{Type: MsgJoin, ClusterID: ClusterID("edge"), Incarnation: 3, Seq: 9, From: "a", To: "b"},
		{Type: MsgCheckIn, ClusterID: ClusterID("edge"), Epoch: 4, Incarnation: 1, Seq: 1, From: "node-1", To: "w", CheckIn: CheckIn{Round: 2, Claim: true}},
		{Type: MsgToken, ClusterID: 1, Seq: 5, From: "b", To: "a", Token: Token{Epoch: 2, Seq: 7, Active: "a", Nodes: []NodeHealth{{ID: "a", Healthy: true}, {ID: "b"}}}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range msgs {
		b, err := Encode(key, m)
		if err != nil {
			t.Fatal(err)
		}
		h, err := Peek(b)
		if err != nil || h.From != m.From || h.To != m.To || h.Tag != m.ClusterID^wireMask(key) || h.Type != m.Type {
			t.Fatalf("Peek(%s) = %+v, %v", m.Type, h, err)
		}
		for i := 0; i < 2000; i++ {
			c := append([]byte(nil), b...)
			switch i % 3 {
			case 0:
				c[rng.IntN(len(c))] ^= byte(1 + rng.IntN(255))
			case 1:
				c = c[:rng.IntN(len(c)+1)]
			default:
				// a valid head with a wrong MAC: what a forger without the
				// key sends to get past Peek
				c[len(c)-1-rng.IntN(macLen)] ^= 1
			}
			want, werr := Decode(key, c)
			got, gerr := d.Decode(c)
			if (werr == nil) != (gerr == nil) || (werr != nil && !sameClass(werr, gerr)) {
				t.Fatalf("mutation %d: Decode err %v, Decoder err %v", i, werr, gerr)
			}
			if werr == nil && got.Seq != want.Seq {
				t.Fatalf("mutation %d: messages differ", i)
			}
		}
	}
	for _, tc := range []struct {
		b    []byte
		want error
	}{
		{[]byte("INVITE sip:x SIP/2.0\r\n\r\n more bytes to pass the length check......"), ErrMagic},
		{[]byte{'V', 'G'}, ErrShort},
		{append([]byte{'V', 'G', 1}, make([]byte, 60)...), ErrVersion},
	} {
		if _, err := Peek(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("Peek(%q) = %v, want %v", tc.b, err, tc.want)
		}
	}
}

func sameClass(a, b error) bool {
	for _, e := range []error{ErrShort, ErrMagic, ErrVersion, ErrTooLarge, ErrType, ErrAuth, ErrMalformed} {
		if errors.Is(a, e) {
			return errors.Is(b, e)
		}
	}
	return false
}

func BenchmarkDecoderVerify(b *testing.B) {
	key := bytes.Repeat([]byte{7}, KeySize)
	d, _ := NewDecoder(key)
	buf, _ := Encode(key, Message{Type: MsgJoin, ClusterID: 1, Seq: 1, From: "a", To: "b"})
	buf[len(buf)-1] ^= 1
	for b.Loop() {
		d.Verify(buf)
	}
}
