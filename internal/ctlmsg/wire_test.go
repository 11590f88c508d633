package ctlmsg

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// fillDistinct sets every exported field under v to a value no other field
// has (strings "s1", "s2", ...; numbers 1, 2, ...; maps of two entries),
// so that a codec that swaps two fields fails the round trip.
func fillDistinct(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillDistinct(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillDistinct(v.Field(i), n)
			}
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fillDistinct(k, n)
			fillDistinct(e, n)
			v.SetMapIndex(k, e)
		}
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int: // a service slot: within what a beat frame carries
		v.SetInt(int64(*n%maxSlot + 1))
	case reflect.Int64:
		v.SetInt(-int64(*n) * 1000003) // negative and multi-byte varints too
	case reflect.Uint64:
		v.SetUint(uint64(*n) << 40)
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	default:
		panic("fillDistinct: no case for " + v.Kind().String() + ": the beat frame needs one too")
	}
}

func beatMsg(t *testing.T, f BeatFields) *Msg {
	t.Helper()
	m, err := NodeManagerReportMsg(&NodeManagerReport{Beat: true, BeatFields: f})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Every BeatFields field, at a value of its own, survives the binary frame
// and the JSON form alike, and both decode to the same report. A field
// added to BeatFields without the frame fails here (fillDistinct sets it).
func TestBeatFrameKeepsEveryField(t *testing.T) {
	var f BeatFields
	n := 0
	fillDistinct(reflect.ValueOf(&f).Elem(), &n)
	want := &NodeManagerReport{Beat: true, BeatFields: f}
	for _, binary := range []bool{true, false} {
		b, err := Encode(beatMsg(t, f), binary)
		if err != nil {
			t.Fatal(err)
		}
		if isJSON := b[0] == '{'; isJSON == binary {
			t.Fatalf("binary=%v sent %q", binary, b[:1])
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatalf("binary=%v: %v", binary, err)
		}
		got, err := m.NodeManagerReport()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("binary=%v: after the wire\n%+v\nsent\n%+v", binary, got, want)
		}
	}
	// Each flag alone, and none: the bits are not mixed up.
	for i := range 7 {
		var g BeatFields
		switch i {
		case 0:
			g.LeaseValid = true
		case 1:
			g.HoldingToken = true
		case 2:
			g.TokenLost = true
		case 3:
			g.Healthy = true
		case 4:
			g.Maintenance = true
		case 5:
			g.Succession = &Succession{Epoch: 9}
		case 6:
			g.Slot = 3
		}
		b, _ := Encode(beatMsg(t, g), true)
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := m.NodeManagerReport()
		if !reflect.DeepEqual(got.BeatFields, g) {
			t.Errorf("flag %d: got %+v, sent %+v", i, got.BeatFields, g)
		}
	}
}

// A frame is what the supervisor pays for four times a lease: it is small
// and the same beat is the same bytes (maps in key order).
func TestBeatFrameSmallAndStable(t *testing.T) {
	f := BeatFields{Self: "node-a", Role: "active", Epoch: 42, Active: "node-a", LeaseValid: true, LeaseRemainingMS: 55,
		LeaseMS: 60, HoldingToken: true, TokenAgeMS: 3, RotationMS: 20.5, Healthy: true,
		Succession: &Succession{Epoch: 42, To: "node-b", Nodes: map[string]uint64{"node-a": 7, "node-b": 9},
			Locators: map[string]uint64{"node-a": 3, "node-b": 4, "witness": 5}}}
	b1, _ := Encode(beatMsg(t, f), true)
	b2, _ := Encode(beatMsg(t, f), true)
	if !bytes.Equal(b1, b2) {
		t.Errorf("one beat, two frames:\n%x\n%x", b1, b2)
	}
	j, _ := Encode(beatMsg(t, f), false)
	if len(b1) > 120 || len(b1) > len(j)/3 {
		t.Errorf("frame %d bytes, JSON %d", len(b1), len(j))
	}
}

// Any truncation or trailing byte is refused with an error (never a beat
// with fields shifted), as are unknown flags and absurd map sizes; no
// input panics (FuzzDecode runs this on random input).
func TestBeatFrameBadInput(t *testing.T) {
	f := BeatFields{Self: "a", Role: "active", Epoch: 3, Active: "a", LeaseRemainingMS: 50, LeaseMS: 60, RotationMS: 1,
		Succession: &Succession{Epoch: 3, To: "b", Nodes: map[string]uint64{"a": 1, "b": 2}, Locators: map[string]uint64{"w": 1}}}
	good, _ := Encode(beatMsg(t, f), true)
	for i := 1; i < len(good); i++ {
		if _, err := Decode(good[:i]); err == nil {
			t.Errorf("a frame cut to %d of %d bytes decodes", i, len(good))
		}
	}
	if _, err := Decode(append(bytes.Clone(good), 0)); err == nil {
		t.Error("a frame with a trailing byte decodes")
	}
	bad := bytes.Clone(good)
	bad[1] |= 0x80
	if _, err := Decode(bad); err == nil {
		t.Error("a frame with an unknown flag decodes")
	}
	// A slot flag with the slot of the first service (which is sent
	// without the flag) or beyond any file's: refused.
	for _, slot := range []uint64{0, maxSlot + 1} {
		g := f
		g.Succession = nil
		b, _ := Encode(beatMsg(t, g), true)
		b[1] |= beatSlot
		b = binary.AppendUvarint(b, slot)
		if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "slot") {
			t.Errorf("a frame of slot %d: %v", slot, err)
		}
	}
	huge := []byte{beatFrameV1, beatSuccession, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := Decode(huge); err == nil || !strings.Contains(err.Error(), "incarnations") {
		t.Errorf("a frame claiming 2^32 incarnations: %v", err)
	}
	dup := []byte{beatFrameV1, beatSuccession}
	dup = appendString(dup, "")
	dup = appendString(dup, "")
	dup = append(dup, 0)
	dup = appendString(dup, "")
	dup = append(dup, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	dup = appendString(dup, "")
	dup = append(dup, 0, 0)
	dup = appendString(dup, "")
	dup = append(dup, 2)
	dup = appendString(dup, "a")
	dup = append(dup, 1)
	dup = appendString(dup, "a")
	dup = append(dup, 2, 0)
	if _, err := Decode(dup); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a frame naming one incarnation twice: %v", err)
	}
	// A beat is a node manager's: asked for as a locator's report, an error.
	m, err := Decode(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.LocatorReport(); err == nil {
		t.Error("a beat read as a locator report")
	}
}

func FuzzDecode(f *testing.F) {
	full, _ := NodeManagerReportMsg(&NodeManagerReport{BeatFields: BeatFields{Self: "a"}})
	j, _ := json.Marshal(full)
	f.Add(j)
	var bf BeatFields
	n := 0
	fillDistinct(reflect.ValueOf(&bf).Elem(), &n)
	m, _ := NodeManagerReportMsg(&NodeManagerReport{Beat: true, BeatFields: bf})
	b, _ := Encode(m, true)
	f.Add(b)
	f.Add([]byte{beatFrameV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil || m.beat == nil {
			return
		}
		// A frame that decodes encodes back to a frame that decodes to the
		// same beat.
		again, err := Encode(m, true)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if !reflect.DeepEqual(m.beat, m2.beat) {
			t.Fatalf("%+v\n%+v", m.beat, m2.beat)
		}
	})
}

func BenchmarkDecodeBeat(b *testing.B) {
	f := BeatFields{Self: "node-a", Role: "active", Epoch: 42, Active: "node-a", LeaseValid: true, LeaseRemainingMS: 55,
		LeaseMS: 60, HoldingToken: true, TokenAgeMS: 3, RotationMS: 20.5, Healthy: true,
		Succession: &Succession{Epoch: 42, To: "node-b", Nodes: map[string]uint64{"node-a": 7, "node-b": 9},
			Locators: map[string]uint64{"node-a": 3, "node-b": 4, "witness": 5}}}
	m, _ := NodeManagerReportMsg(&NodeManagerReport{Beat: true, BeatFields: f})
	for _, binary := range []bool{true, false} {
		name := "json"
		if binary {
			name = "frame"
		}
		b.Run(name, func(b *testing.B) {
			enc, _ := Encode(m, binary)
			for b.Loop() {
				m, err := Decode(enc)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.NodeManagerReport(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
