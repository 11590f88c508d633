package protocol

import "fmt"

// ReplayWindow rejects replayed datagrams of one sender process: it keeps
// the sender's incarnation and a 64-entry sliding bitmap of the sequence
// numbers seen below the highest one. A datagram of a newer incarnation
// (the sender restarted and counts from 1 again) resets the window; one of
// an older incarnation, one already seen, or one more than 64 behind the
// highest is rejected with ErrReplay. The zero value accepts anything first.
type ReplayWindow struct {
	inc  uint64
	top  uint64 // highest seq accepted in inc
	bits uint64 // bit i set: seq top-i was accepted
	init bool
}

// ReplayWindowSize is how far behind the highest sequence number a late
// (reordered) datagram may arrive and still be accepted.
const ReplayWindowSize = 64

// Check reports whether (incarnation, seq) would be accepted, without
// recording it.
func (w *ReplayWindow) Check(incarnation, seq uint64) error {
	if seq == 0 {
		return fmt.Errorf("%w: sequence 0", ErrReplay)
	}
	if !w.init || incarnation > w.inc {
		return nil
	}
	if incarnation < w.inc {
		return fmt.Errorf("%w: incarnation %d older than %d", ErrReplay, incarnation, w.inc)
	}
	if seq > w.top {
		return nil
	}
	d := w.top - seq
	if d >= ReplayWindowSize {
		return fmt.Errorf("%w: seq %d more than %d behind %d", ErrReplay, seq, ReplayWindowSize, w.top)
	}
	if w.bits&(1<<d) != 0 {
		return fmt.Errorf("%w: seq %d seen", ErrReplay, seq)
	}
	return nil
}

// Accept checks (incarnation, seq) and records it when accepted. Call it
// only for datagrams that passed authentication (Decode), or an attacker
// could advance the window.
func (w *ReplayWindow) Accept(incarnation, seq uint64) error {
	if err := w.Check(incarnation, seq); err != nil {
		return err
	}
	if !w.init || incarnation > w.inc {
		*w = ReplayWindow{inc: incarnation, top: seq, bits: 1, init: true}
		return nil
	}
	if seq > w.top {
		shift := seq - w.top
		if shift >= ReplayWindowSize {
			w.bits = 0
		} else {
			w.bits <<= shift
		}
		w.bits |= 1
		w.top = seq
		return nil
	}
	w.bits |= 1 << (w.top - seq)
	return nil
}

// ReplayFilter is the receiver's set of ReplayWindows, one per sending
// process (a host's node and its locator count separately). It only keeps
// windows for the hosts of the Config, so its memory is bounded. It also
// refuses datagrams addressed to another host (ErrDestination): the MAC
// covers the destination, so a datagram captured on its way to one
// locator cannot be replayed to another. Not safe for concurrent use.
type ReplayFilter struct {
	clusterID uint64
	self      string
	peers     map[string]bool
	windows   map[replayKey]*ReplayWindow
}

type replayKey struct {
	from    string
	locator bool
}

// NewReplayFilter returns a filter for the peers of cfg (nodes and
// locators), receiving as cfg.Self.
func NewReplayFilter(cfg Config) *ReplayFilter {
	f := &ReplayFilter{clusterID: ClusterID(cfg.Cluster), self: cfg.Self, peers: map[string]bool{}, windows: map[replayKey]*ReplayWindow{}}
	for _, id := range cfg.Nodes {
		f.peers[id] = true
	}
	for _, id := range cfg.Locators {
		f.peers[id] = true
	}
	return f
}

// Accept checks that a decoded message is for this cluster and this host,
// from a known peer, and not a replay; it records it when accepted.
// Errors: ErrCluster, ErrDestination, ErrPeer, ErrReplay (wrapped).
func (f *ReplayFilter) Accept(m Message) error {
	if m.ClusterID != f.clusterID {
		return fmt.Errorf("%w: from %q", ErrCluster, m.From)
	}
	if m.To != f.self {
		return fmt.Errorf("%w: %q, sent by %q to %q", ErrDestination, f.self, m.From, m.To)
	}
	if !f.peers[m.From] {
		return fmt.Errorf("%w: %q", ErrPeer, m.From)
	}
	k := replayKey{m.From, m.Type.FromLocator()}
	w := f.windows[k]
	if w == nil {
		w = &ReplayWindow{}
		f.windows[k] = w
	}
	if err := w.Accept(m.Incarnation, m.Seq); err != nil {
		return fmt.Errorf("from %q: %w", m.From, err)
	}
	return nil
}
