package protocol

import (
	"errors"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	ns := NodeState{Incarnation: 12, MaxEpoch: 1 << 40}
	b, _ := ns.MarshalBinary()
	var ns2 NodeState
	if err := ns2.UnmarshalBinary(b); err != nil || ns2 != ns {
		t.Fatalf("node state: %+v %v", ns2, err)
	}
	ls := LocatorState{Incarnation: 3, Epoch: 99, Holder: "node-a"}
	b, _ = ls.MarshalBinary()
	var ls2 LocatorState
	if err := ls2.UnmarshalBinary(b); err != nil || ls2 != ls {
		t.Fatalf("locator state: %+v %v", ls2, err)
	}
	// Torn writes, bit flips and the wrong record type are all detected.
	for i := range b {
		for _, bad := range [][]byte{b[:i], flip(b, i)} {
			var x LocatorState
			if err := x.UnmarshalBinary(bad); !errors.Is(err, ErrState) {
				t.Fatalf("corruption at %d not detected: %v", i, err)
			}
		}
	}
	nb, _ := ns.MarshalBinary()
	if err := ls2.UnmarshalBinary(nb); !errors.Is(err, ErrState) {
		t.Fatalf("node record read as locator state: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x10
	return c
}
