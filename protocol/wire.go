package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"
)

// Wire format, version 3 (all integers big endian or unsigned varints):
//
//	magic "VG" | version 1 | type 1 | cluster tag 8 | epoch uvarint |
//	incarnation uvarint | seq uvarint | from (len 1 + bytes) |
//	to (len 1 + bytes) | to-incarnation uvarint | body | HMAC-SHA256 32
//
// The MAC covers every byte before it and is keyed with the 32-byte
// cluster key. Because it covers the destination (to, and the incarnation
// of the destination process the sender last heard from), a datagram
// captured on its way to one host is refused by every other host
// (ReplayFilter: ErrDestination), and one sent to an earlier incarnation
// of the receiving process is not acted on (Node.Step, Locator.Step:
// ErrStale). The cluster tag is the cluster id (ClusterID, a hash of the
// name) masked with a value derived from the key (ClusterTag): only a key
// holder can write a head that passes the receiver's cheap checks, which
// its kernel packet filter repeats (internal/pktfilter), so a flood of
// forged heads from a spoofed peer address costs no wakeup and no MAC.
// Version 1 lacked the destination, version 2 sent the unmasked id; both
// are refused (ErrVersion). Bodies:
//
//	token:      epoch, seq uvarint | active str | handover str | n 1 | n × (id str | flags 1)
//	checkin:    round uvarint | flags 1 | epoch uvarint | token seq uvarint [| membership | next membership]
//	ack:        round uvarint | flags 1 (granted, stale) | epoch uvarint | holder str | grant-in ns uvarint [| membership]
//
// with membership = version uvarint | members 1 | flags 1 (unknown). The
// memberships (Config.LastManStanding) are written only when they are not
// the configured one (Membership's zero value) and, for a check-in, no
// change is proposed: a cluster without last_man_standing, and one whose
// membership never changed, send exactly what they sent before.
//
//	release:    epoch uvarint
//	transfer:   epoch uvarint | to str
//	join:       (empty)
//	switchover: to str | token seq uvarint
//
// The switchover's token seq came after version 3 shipped: a receiver
// takes the body without it (from an earlier build) as seq 0, and an
// earlier build refuses the longer body as malformed (docs/operations.md,
// upgrading a pair).
const (
	wireVersion = 3
	macLen      = sha256.Size
	// MaxDatagram is the largest datagram Encode produces and Decode accepts;
	// it fits in one unfragmented IPv6 packet (minimum MTU 1280, less the
	// IPv6 and UDP headers).
	MaxDatagram = 1232
	minHeader   = 2 + 1 + 1 + 8 + 1 + 1 + 1 + 1 + 1 + 1 // magic..to-incarnation with 1-byte varints and empty ids
	// MinDatagram is the shortest datagram Decode accepts.
	MinDatagram = minHeader + macLen
	// TagOffset is where the cluster tag (8 bytes) sits in a datagram.
	TagOffset = 4
)

var magic = [2]byte{'V', 'G'}

// Sentinel errors of Encode, Decode and the replay filter. Receivers drop
// the datagram and count the error; none of them is fatal.
var (
	ErrShort     = errors.New("protocol: datagram too short")
	ErrMagic     = errors.New("protocol: not a vigil datagram")
	ErrVersion   = errors.New("protocol: unsupported wire version")
	ErrTooLarge  = errors.New("protocol: datagram too large")
	ErrType      = errors.New("protocol: unknown message type")
	ErrAuth      = errors.New("protocol: authentication failed")
	ErrMalformed = errors.New("protocol: malformed body")
	ErrKey       = errors.New("protocol: cluster key must be 32 bytes")
	ErrReplay    = errors.New("protocol: replayed or stale datagram")
	ErrPeer      = errors.New("protocol: unknown peer")
	ErrCluster   = errors.New("protocol: datagram for another cluster")
	// ErrDestination: an authentic datagram addressed to another host,
	// i.e. captured on its way there and re-sent here.
	ErrDestination = errors.New("protocol: datagram for another host")
	// ErrStale: an authentic datagram addressed to an earlier incarnation
	// of the receiving process (sent before it restarted). It is only used
	// to tell the sender this incarnation; never acted on.
	ErrStale = fmt.Errorf("%w: addressed to an earlier incarnation of this process", ErrReplay)
)

// Encode serialises and authenticates m with the 32-byte cluster key.
func Encode(key []byte, m Message) ([]byte, error) {
	return AppendEncode(nil, key, m)
}

// AppendEncode is Encode appending to dst (which may be nil), for callers
// that reuse buffers.
func AppendEncode(dst []byte, key []byte, m Message) ([]byte, error) {
	if len(key) != KeySize {
		return nil, ErrKey
	}
	return appendEncode(dst, hmac.New(sha256.New, key), wireMask(key), m)
}

// Encoder is AppendEncode with its HMAC state and wire mask kept between
// calls: a sender saves a keyed-hash setup (two SHA-256 blocks and their
// allocations) per datagram. Not safe for concurrent use.
type Encoder struct {
	mac  hash.Hash
	mask uint64
}

// NewEncoder returns an Encoder for the 32-byte cluster key.
func NewEncoder(key []byte) (*Encoder, error) {
	if len(key) != KeySize {
		return nil, ErrKey
	}
	return &Encoder{mac: hmac.New(sha256.New, key), mask: wireMask(key)}, nil
}

// AppendEncode is the package's AppendEncode (same bytes, same errors).
func (e *Encoder) AppendEncode(dst []byte, m Message) ([]byte, error) {
	e.mac.Reset()
	return appendEncode(dst, e.mac, e.mask, m)
}

// appendEncode serialises m after dst and appends the MAC computed with
// mac, which is keyed and reset.
func appendEncode(dst []byte, mac hash.Hash, mask uint64, m Message) ([]byte, error) {
	if m.Type == 0 || m.Type > msgTypeMax {
		return nil, fmt.Errorf("%w: %d", ErrType, m.Type)
	}
	start := len(dst)
	b := append(dst, magic[0], magic[1], wireVersion, byte(m.Type))
	b = binary.BigEndian.AppendUint64(b, m.ClusterID^mask)
	b = binary.AppendUvarint(b, m.Epoch)
	b = binary.AppendUvarint(b, m.Incarnation)
	b = binary.AppendUvarint(b, m.Seq)
	var err error
	if b, err = appendStr(b, m.From); err != nil {
		return nil, err
	}
	if b, err = appendStr(b, m.To); err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, m.ToIncarnation)
	switch m.Type {
	case MsgToken:
		t := m.Token
		b = binary.AppendUvarint(b, t.Epoch)
		b = binary.AppendUvarint(b, t.Seq)
		if b, err = appendStr(b, t.Active); err != nil {
			return nil, err
		}
		if b, err = appendStr(b, t.Handover); err != nil {
			return nil, err
		}
		if len(t.Nodes) > MaxPeers {
			return nil, fmt.Errorf("%w: %d nodes in token", ErrTooLarge, len(t.Nodes))
		}
		b = append(b, byte(len(t.Nodes)))
		for _, h := range t.Nodes {
			if b, err = appendStr(b, h.ID); err != nil {
				return nil, err
			}
			b = append(b, flags(h.Healthy, h.Maintenance, h.InRing))
		}
	case MsgCheckIn:
		c := m.CheckIn
		b = binary.AppendUvarint(b, c.Round)
		b = append(b, flags(c.Claim, c.Healthy, c.Maintenance))
		b = binary.AppendUvarint(b, c.Epoch)
		b = binary.AppendUvarint(b, c.TokenSeq)
		if c.Conf != (Membership{}) || c.Next != (Membership{}) {
			b = appendMembership(b, c.Conf)
			b = appendMembership(b, c.Next)
		}
	case MsgAck:
		a := m.Ack
		b = binary.AppendUvarint(b, a.Round)
		b = append(b, flags(a.Granted, a.Stale))
		b = binary.AppendUvarint(b, a.Epoch)
		if b, err = appendStr(b, a.Holder); err != nil {
			return nil, err
		}
		g := a.GrantIn
		if g < 0 {
			g = 0
		}
		b = binary.AppendUvarint(b, uint64(g))
		if a.Conf != (Membership{}) {
			b = appendMembership(b, a.Conf)
		}
	case MsgRelease:
		b = binary.AppendUvarint(b, m.Release.Epoch)
	case MsgTransfer:
		b = binary.AppendUvarint(b, m.Transfer.Epoch)
		if b, err = appendStr(b, m.Transfer.To); err != nil {
			return nil, err
		}
	case MsgJoin:
	case MsgSwitchover:
		if b, err = appendStr(b, m.Switchover.To); err != nil {
			return nil, err
		}
		b = binary.AppendUvarint(b, m.Switchover.TokenSeq)
	}
	if len(b)-start+macLen > MaxDatagram {
		return nil, ErrTooLarge
	}
	mac.Write(b[start:])
	return mac.Sum(b), nil
}

// Decode authenticates and parses one datagram. It never panics; every
// failure is one of the sentinel errors (ErrShort, ErrMagic, ErrVersion,
// ErrTooLarge, ErrType, ErrKey, ErrAuth, ErrMalformed), possibly wrapped.
// Decode does not check replay: pass the result to a ReplayFilter.
func Decode(key []byte, b []byte) (Message, error) {
	var m Message
	if len(key) != KeySize {
		return m, ErrKey
	}
	if len(b) < minHeader+macLen {
		return m, ErrShort
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return m, ErrMagic
	}
	if b[2] != wireVersion {
		return m, fmt.Errorf("%w: %d", ErrVersion, b[2])
	}
	if len(b) > MaxDatagram {
		return m, ErrTooLarge
	}
	m.Type = MsgType(b[3])
	if m.Type == 0 || m.Type > msgTypeMax {
		return Message{}, fmt.Errorf("%w: %d", ErrType, b[3])
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return Message{}, ErrAuth
	}
	return parse(m.Type, body, wireMask(key))
}

// wireMask is what the cluster id is masked with on the wire: the first 8
// bytes of HMAC-SHA256(key, "vigil-cluster-tag").
func wireMask(key []byte) uint64 {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("vigil-cluster-tag"))
	return binary.BigEndian.Uint64(mac.Sum(nil))
}

// ClusterTag is the cluster tag datagrams of the cluster named cluster,
// keyed with key, carry at TagOffset (big endian): ClusterID(cluster)
// masked with a key-derived value. Without the key it cannot be guessed
// (64 bits); anyone who sees the cluster's traffic can read it, so it
// keeps out blind floods, not an eavesdropper's (docs/operations.md).
func ClusterTag(key []byte, cluster string) uint64 {
	return ClusterID(cluster) ^ wireMask(key)
}

// parse reads an authenticated datagram's fields (body: the datagram
// without its MAC, typ: its checked type, mask: wireMask of the key).
func parse(typ MsgType, body []byte, mask uint64) (Message, error) {
	m := Message{Type: typ}
	r := reader{b: body[4:]}
	m.ClusterID = r.u64() ^ mask
	m.Epoch = r.uvarint()
	m.Incarnation = r.uvarint()
	m.Seq = r.uvarint()
	m.From = r.str()
	m.To = r.str()
	m.ToIncarnation = r.uvarint()
	switch m.Type {
	case MsgToken:
		m.Token.Epoch = r.uvarint()
		m.Token.Seq = r.uvarint()
		m.Token.Active = r.str()
		m.Token.Handover = r.str()
		n := int(r.byte())
		if n > MaxPeers {
			r.err = true
		}
		for i := 0; i < n && !r.err; i++ {
			h := NodeHealth{ID: r.str()}
			f := r.byte()
			h.Healthy, h.Maintenance, h.InRing = f&1 != 0, f&2 != 0, f&4 != 0
			m.Token.Nodes = append(m.Token.Nodes, h)
		}
	case MsgCheckIn:
		m.CheckIn.Round = r.uvarint()
		f := r.byte()
		m.CheckIn.Claim, m.CheckIn.Healthy, m.CheckIn.Maintenance = f&1 != 0, f&2 != 0, f&4 != 0
		m.CheckIn.Epoch = r.uvarint()
		m.CheckIn.TokenSeq = r.uvarint()
		if len(r.b) > 0 {
			m.CheckIn.Conf = r.membership()
			m.CheckIn.Next = r.membership()
			if m.CheckIn.Conf == (Membership{}) && m.CheckIn.Next == (Membership{}) {
				r.err = true // written only when not both the configured one
			}
		}
	case MsgAck:
		m.Ack.Round = r.uvarint()
		f := r.byte()
		m.Ack.Granted, m.Ack.Stale = f&1 != 0, f&2 != 0
		m.Ack.Epoch = r.uvarint()
		m.Ack.Holder = r.str()
		g := r.uvarint()
		if g > uint64(1<<62) {
			r.err = true
		}
		m.Ack.GrantIn = time.Duration(g)
		if len(r.b) > 0 {
			m.Ack.Conf = r.membership()
			if m.Ack.Conf == (Membership{}) {
				r.err = true
			}
		}
	case MsgRelease:
		m.Release.Epoch = r.uvarint()
	case MsgTransfer:
		m.Transfer.Epoch = r.uvarint()
		m.Transfer.To = r.str()
	case MsgJoin:
	case MsgSwitchover:
		m.Switchover.To = r.str()
		if len(r.b) > 0 {
			m.Switchover.TokenSeq = r.uvarint()
		}
	}
	if r.err || len(r.b) != 0 {
		return Message{}, fmt.Errorf("%w: %s from %q", ErrMalformed, m.Type, m.From)
	}
	return m, nil
}

func flags(bits ...bool) byte {
	var f byte
	for i, v := range bits {
		if v {
			f |= 1 << i
		}
	}
	return f
}

func appendMembership(b []byte, m Membership) []byte {
	b = binary.AppendUvarint(b, m.Version)
	return append(b, m.Members, flags(m.Unknown))
}

func appendStr(b []byte, s string) ([]byte, error) {
	if len(s) > MaxIDLen {
		return nil, fmt.Errorf("%w: id of %d bytes", ErrTooLarge, len(s))
	}
	b = append(b, byte(len(s)))
	return append(b, s...), nil
}

// reader parses a body; after the first error every read returns zero.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) byte() byte {
	if r.err || len(r.b) < 1 {
		r.err = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err || len(r.b) < 8 {
		r.err = true
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

// membership reads one written by appendMembership: an unknown one has
// no members and version 0; a known one with no members is only the
// configured one (version 0).
func (r *reader) membership() Membership {
	m := Membership{Version: r.uvarint(), Members: r.byte()}
	f := r.byte()
	m.Unknown = f&1 != 0
	if f&^1 != 0 || m.Unknown && (m.Members != 0 || m.Version != 0) || !m.Unknown && m.Members == 0 && m.Version != 0 {
		r.err = true
	}
	return m
}

func (r *reader) str() string {
	n := int(r.byte())
	if r.err || n > MaxIDLen || len(r.b) < n {
		r.err = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
