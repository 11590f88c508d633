package ctlmsg

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// The channel's wire format. Every message is one JSON object, except a
// node manager's beat, which a supervisor that says it reads them
// (EnvBinaryBeats) gets in a compact binary frame: beats come four times a
// lease (66 a second at lease 60 ms), and decoding them as JSON, envelope
// and report, was half of an idle supervisor's CPU. A JSON message starts
// with '{', a beat frame with beatFrameV1, so one reader takes both, and a
// supervisor that never asked for frames never gets one (an older
// supervisor running a newer node manager during a package upgrade).

// EnvBinaryBeats is set by a supervisor that reads beat frames in the
// environment of the control-plane processes it starts, to BinaryBeatsV1.
const EnvBinaryBeats = "VIGIL_IPC_BEATS"

// BinaryBeatsV1 is the EnvBinaryBeats value for the frame below.
const BinaryBeatsV1 = "binary1"

// beatFrameV1 starts a beat frame; no JSON text starts with it.
const beatFrameV1 = 0x01

// maxSlot bounds a beat's service slot: far above the services a file may
// have (config checks those).
const maxSlot = 255

// maxBeatMap bounds the entries of a succession's map in a frame: one per
// node or locator of the cluster, far below it.
const maxBeatMap = 1024

// The flag bits of a beat frame.
const (
	beatLeaseValid = 1 << iota
	beatHoldingToken
	beatTokenLost
	beatHealthy
	beatMaintenance
	beatSuccession
	// beatSlot: a uvarint follows the last field, the report's Slot (a
	// service other than the first). A supervisor from before it refuses
	// the frame; none gets one (EnvAllServices).
	beatSlot
)

// Encode is m as sent on the channel: a beat in a binary frame when
// binaryBeats (the peer said it reads them), everything else as JSON.
func Encode(m *Msg, binaryBeats bool) ([]byte, error) {
	if m.beat != nil {
		if binaryBeats {
			return appendBeat(make([]byte, 0, 128), m.beat), nil
		}
		j := *m
		b, err := json.Marshal(&beatWire{Beat: true, BeatFields: *m.beat})
		if err != nil {
			return nil, fmt.Errorf("ctlmsg: encode beat: %w", err)
		}
		j.Report, j.beat = b, nil
		m = &j
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("ctlmsg: encode %s: %w", m.Type, err)
	}
	return b, nil
}

// Decode reads one message in either form. The result holds no reference
// to b.
func Decode(b []byte) (*Msg, error) {
	if len(b) > 0 && b[0] == beatFrameV1 {
		f, err := decodeBeat(b[1:])
		if err != nil {
			return nil, fmt.Errorf("ctlmsg: decode beat frame: %w", err)
		}
		return &Msg{Type: TypeReport, beat: f}, nil
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("ctlmsg: decode: %w", err)
	}
	return &m, nil
}

func appendBeat(b []byte, f *BeatFields) []byte {
	var flags byte
	set := func(bit byte, on bool) {
		if on {
			flags |= bit
		}
	}
	set(beatLeaseValid, f.LeaseValid)
	set(beatHoldingToken, f.HoldingToken)
	set(beatTokenLost, f.TokenLost)
	set(beatHealthy, f.Healthy)
	set(beatMaintenance, f.Maintenance)
	set(beatSuccession, f.Succession != nil)
	set(beatSlot, f.Slot != 0)
	b = append(b, beatFrameV1, flags)
	b = appendString(b, f.Self)
	b = appendString(b, f.Role)
	b = binary.AppendUvarint(b, f.Epoch)
	b = appendString(b, f.Active)
	b = binary.AppendVarint(b, f.LeaseRemainingMS)
	b = binary.AppendVarint(b, f.LeaseMS)
	b = binary.AppendVarint(b, f.TokenAgeMS)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.RotationMS))
	b = appendString(b, f.DrainingTo)
	b = binary.AppendVarint(b, f.DrainRemainingMS)
	if s := f.Succession; s != nil {
		b = binary.AppendUvarint(b, s.Epoch)
		b = appendString(b, s.To)
		b = appendIncarnations(b, s.Nodes)
		b = appendIncarnations(b, s.Locators)
	}
	if f.Slot != 0 {
		b = binary.AppendUvarint(b, uint64(f.Slot))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendIncarnations writes a map in key order, so that one beat is one
// byte string (tests compare them).
func appendIncarnations(b []byte, m map[string]uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, m[k])
	}
	return b
}

var errBeatShort = errors.New("truncated")

// beatReader reads a frame's fields; the first error sticks.
type beatReader struct {
	b   []byte
	err error
}

func (r *beatReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBeatShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *beatReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errBeatShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *beatReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errBeatShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *beatReader) float() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.err = errBeatShort
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *beatReader) incarnations() map[string]uint64 {
	n := r.uvarint()
	if r.err != nil || n == 0 {
		return nil
	}
	if n > maxBeatMap {
		r.err = fmt.Errorf("%d incarnations, more than %d", n, maxBeatMap)
		return nil
	}
	m := make(map[string]uint64, n)
	for range n {
		k := r.str()
		m[k] = r.uvarint()
	}
	if r.err == nil && uint64(len(m)) != n {
		r.err = errors.New("an incarnation named twice")
	}
	return m
}

func decodeBeat(b []byte) (*BeatFields, error) {
	if len(b) == 0 {
		return nil, errBeatShort
	}
	flags := b[0]
	if flags&^(beatSlot<<1-1) != 0 {
		return nil, fmt.Errorf("unknown flags %#x", flags)
	}
	r := &beatReader{b: b[1:]}
	f := &BeatFields{
		LeaseValid:   flags&beatLeaseValid != 0,
		HoldingToken: flags&beatHoldingToken != 0,
		TokenLost:    flags&beatTokenLost != 0,
		Healthy:      flags&beatHealthy != 0,
		Maintenance:  flags&beatMaintenance != 0,
	}
	f.Self = r.str()
	f.Role = r.str()
	f.Epoch = r.uvarint()
	f.Active = r.str()
	f.LeaseRemainingMS = r.varint()
	f.LeaseMS = r.varint()
	f.TokenAgeMS = r.varint()
	f.RotationMS = r.float()
	f.DrainingTo = r.str()
	f.DrainRemainingMS = r.varint()
	if flags&beatSuccession != 0 {
		s := &Succession{}
		s.Epoch = r.uvarint()
		s.To = r.str()
		s.Nodes = r.incarnations()
		s.Locators = r.incarnations()
		f.Succession = s
	}
	if flags&beatSlot != 0 {
		slot := r.uvarint()
		if r.err == nil && (slot == 0 || slot > maxSlot) {
			return nil, fmt.Errorf("slot %d out of range 1..%d", slot, maxSlot)
		}
		f.Slot = int(slot)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last field", len(r.b))
	}
	return f, nil
}
