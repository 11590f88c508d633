package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrState is returned (wrapped) when persisted state does not decode:
// wrong magic, truncated (a torn write) or a bad checksum. A caller that
// gets it must not start from the zero state silently: a node or locator
// that forgot its epoch could reuse one. Refuse to start and say why.
var ErrState = errors.New("protocol: corrupt persisted state")

var (
	nodeStateMagic    = []byte("VGN1")
	locatorStateMagic = []byte("VGL1")
)

// MarshalBinary encodes the state for the caller to write and fsync
// (ideally to a temporary file renamed over the old one).
func (s NodeState) MarshalBinary() ([]byte, error) {
	b := append([]byte(nil), nodeStateMagic...)
	b = binary.AppendUvarint(b, s.Incarnation)
	b = binary.AppendUvarint(b, s.MaxEpoch)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (s *NodeState) UnmarshalBinary(b []byte) error {
	r, err := checkState(b, nodeStateMagic)
	if err != nil {
		return err
	}
	v := NodeState{Incarnation: r.uvarint(), MaxEpoch: r.uvarint()}
	if r.err || len(r.b) != 0 {
		return fmt.Errorf("%w: node state fields", ErrState)
	}
	*s = v
	return nil
}

// MarshalBinary encodes the state for the caller to write and fsync.
func (s LocatorState) MarshalBinary() ([]byte, error) {
	b := append([]byte(nil), locatorStateMagic...)
	b = binary.AppendUvarint(b, s.Incarnation)
	b = binary.AppendUvarint(b, s.Epoch)
	b, err := appendStr(b, s.Holder)
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (s *LocatorState) UnmarshalBinary(b []byte) error {
	r, err := checkState(b, locatorStateMagic)
	if err != nil {
		return err
	}
	v := LocatorState{Incarnation: r.uvarint(), Epoch: r.uvarint(), Holder: r.str()}
	if r.err || len(r.b) != 0 {
		return fmt.Errorf("%w: locator state fields", ErrState)
	}
	*s = v
	return nil
}

func checkState(b, magic []byte) (*reader, error) {
	if len(b) < len(magic)+4 || string(b[:len(magic)]) != string(magic) {
		return nil, fmt.Errorf("%w: not a %s record", ErrState, magic)
	}
	body := b[:len(b)-4]
	if binary.BigEndian.Uint32(b[len(b)-4:]) != crc32.ChecksumIEEE(body) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrState)
	}
	return &reader{b: body[len(magic):]}, nil
}
