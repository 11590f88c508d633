package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
)

// Header is the unauthenticated head of a datagram, as Peek reads it: what
// a receiver can check before it spends a MAC computation. Nothing in it is
// to be trusted until Decode has verified the MAC.
type Header struct {
	Type MsgType
	// Tag is the cluster tag as sent: ClusterTag(key, cluster) for a
	// datagram of this cluster and key.
	Tag      uint64
	From, To string
}

// Peek checks a datagram's size, magic, version and type and reads its
// claimed sender, destination and cluster tag, without the MAC: the cheap
// checks a receiver does first, so that garbage costs no HMAC. Errors are
// Decode's sentinels (ErrShort, ErrMagic, ErrVersion, ErrTooLarge, ErrType,
// ErrMalformed). It does not allocate.
func Peek(b []byte) (Header, error) {
	var h Header
	if len(b) < minHeader+macLen {
		return h, ErrShort
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return h, ErrMagic
	}
	if b[2] != wireVersion {
		return h, fmt.Errorf("%w: %d", ErrVersion, b[2])
	}
	if len(b) > MaxDatagram {
		return h, ErrTooLarge
	}
	h.Type = MsgType(b[3])
	if h.Type == 0 || h.Type > msgTypeMax {
		return Header{}, fmt.Errorf("%w: %d", ErrType, b[3])
	}
	r := reader{b: b[4 : len(b)-macLen]}
	h.Tag = r.u64()
	r.uvarint() // epoch
	r.uvarint() // incarnation
	r.uvarint() // seq
	from, to := r.strBytes(), r.strBytes()
	if r.err {
		return Header{}, ErrMalformed
	}
	// Converting in the comparison's place would not allocate, but the
	// caller compares with map keys: ids are at most 64 bytes.
	h.From, h.To = string(from), string(to)
	return h, nil
}

func (r *reader) strBytes() []byte {
	n := int(r.byte())
	if r.err || n > MaxIDLen || len(r.b) < n {
		r.err = true
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// Decoder is Decode with its HMAC state kept between calls: a receiver
// that reads a flood spends one SHA-256 pass per datagram instead of
// rebuilding the keyed hash each time. Not safe for concurrent use.
type Decoder struct {
	mac  hash.Hash
	sum  [sha256.Size]byte
	mask uint64
}

// NewDecoder returns a Decoder for the 32-byte cluster key.
func NewDecoder(key []byte) (*Decoder, error) {
	if len(key) != KeySize {
		return nil, ErrKey
	}
	return &Decoder{mac: hmac.New(sha256.New, key), mask: wireMask(key)}, nil
}

// Verify reports whether b's MAC is right; b has passed Peek.
func (d *Decoder) Verify(b []byte) bool {
	if len(b) < macLen {
		return false
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	d.mac.Reset()
	d.mac.Write(body)
	return hmac.Equal(d.mac.Sum(d.sum[:0]), sum)
}

// Decode is the package's Decode (same checks, same errors).
func (d *Decoder) Decode(b []byte) (Message, error) {
	h, err := Peek(b)
	if err != nil {
		if err == ErrMalformed {
			// Decode authenticates before it parses: an unparsable head
			// under a wrong MAC is an authentication failure there.
			if !d.Verify(b) {
				return Message{}, ErrAuth
			}
		}
		return Message{}, err
	}
	if !d.Verify(b) {
		return Message{}, ErrAuth
	}
	return parse(h.Type, b[:len(b)-macLen], d.mask)
}
