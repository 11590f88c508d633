package protocol

import (
	"fmt"
	"time"
)

// Succession is what an active node tells its driver, in every report, so
// that its host can give the role up at once should the node's process die
// (CrashRelease): the epoch it holds, the standby to hand it to, and the
// incarnation of every peer process as last heard, which the release must
// carry (a receiver acts only on datagrams stamped with its own current
// incarnation).
type Succession struct {
	// Epoch is the epoch the node holds.
	Epoch uint64
	// To is the healthy standby to tell to claim at once: the most
	// preferred other node (earliest in Nodes) that the token recently
	// showed in the ring, healthy and out of maintenance (the rule of a
	// handover); ""
	// if none, and then only the locators are told.
	To string
	// Nodes and Locators are the incarnations of the other nodes' and the
	// locators' processes as this node last heard them (0: never).
	Nodes    map[string]uint64
	Locators map[string]uint64
}

// Succession returns what a release after this node's death would need,
// and false unless the node holds a valid lease at now.
func (n *Node) Succession(now time.Duration) (Succession, bool) {
	if !n.ActiveAt(now) {
		return Succession{}, false
	}
	s := Succession{Epoch: n.epoch, To: n.healthyPeer(), Nodes: map[string]uint64{}, Locators: map[string]uint64{}}
	for i, id := range n.cfg.Nodes {
		if id != n.self {
			s.Nodes[id] = n.nodeInc[i]
		}
	}
	for i, id := range n.cfg.Locators {
		s.Locators[id] = n.locInc[i]
	}
	return s, true
}

// CrashRelease builds the release of a node whose process is proven dead
// (its supervisor reaped it) while it held the role: the datagrams that
// free its epoch at the locators (MsgRelease) and tell the successor in s
// to claim the next epoch at once (MsgTransfer), sent as a NEW incarnation
// of the node. st is the node's persisted state (node.state); the returned
// state, one incarnation higher, must be persisted with fsync before any of
// the messages is sent, so that the node's next process starts above it and
// nothing of the dead one (a renewal still in flight) can count after the
// release: a locator honours a release only from its recorded holder, for
// its recorded epoch, and newer than every claim or renewal it accepted
// from it, after which only a newer one extends anything (Locator.Step);
// every receiver's replay window refuses the older incarnation.
//
// The caller must have stopped the host from serving the floating IPs
// (addresses removed, kernel lease revoked) before it sends anything: a
// release shortens the protection of the lease, which is safe only for a
// holder that no longer serves. A release that is lost, or refused (a
// receiver that restarted since s was taken), changes nothing: the lease
// then runs out as after any crash.
//
// The epochs released are s.Epoch and st.MaxEpoch when higher (a claim of
// a newer epoch, a token regeneration, that may have reached some
// locators); each locator honours only the one it recorded.
func CrashRelease(cfg Config, st NodeState, s Succession) (NodeState, []Envelope, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return st, nil, err
	}
	if indexOf(cfg.Nodes, cfg.Self) < 0 {
		return st, nil, fmt.Errorf("%w: self %q is not a node", ErrConfig, cfg.Self)
	}
	if s.Epoch == 0 {
		return st, nil, fmt.Errorf("%w: no epoch to release", ErrConfig)
	}
	st.Incarnation++
	epochs := []uint64{s.Epoch}
	if st.MaxEpoch > s.Epoch {
		epochs = append(epochs, st.MaxEpoch)
	}
	top := epochs[len(epochs)-1]
	cid := ClusterID(cfg.Cluster)
	var out []Envelope
	stamp := func(to string, seq, toInc uint64, m Message) {
		m.From, m.ClusterID, m.Epoch, m.Incarnation, m.Seq = cfg.Self, cid, top, st.Incarnation, seq
		m.To, m.ToIncarnation = to, toInc
		out = append(out, Envelope{To: to, Msg: m})
	}
	for _, id := range cfg.Locators {
		for k, e := range epochs {
			stamp(id, uint64(k+1), s.Locators[id], Message{Type: MsgRelease, Release: Release{Epoch: e}})
		}
	}
	if s.To != "" && s.To != cfg.Self && indexOf(cfg.Nodes, s.To) >= 0 {
		stamp(s.To, 1, s.Nodes[s.To], Message{Type: MsgTransfer, Transfer: Transfer{Epoch: top, To: s.To}})
	}
	return st, out, nil
}
