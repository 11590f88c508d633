package protocol

import (
	"fmt"
	"time"

	"github.com/vigil-project/vigil/protocol/internal/plant"
)

// LocatorState is what a Locator needs to survive a restart. The caller
// persists it (write + fsync) whenever LocatorReady.State is non-nil, BEFORE
// sending that Ready's messages (none of them if the write failed), reports
// it with Persisted, and passes the last persisted value to
// NewLocator. Because every grant of a new epoch is persisted before it is
// answered, a restarted locator never grants an epoch twice nor forgets to
// whom it granted the last one. What it does forget is when that holder's
// lease ends (volatile, renewals are not persisted), which is why a
// restarted locator waits a full Lease+DriftMargin before granting anyone
// else (see NewLocator).
type LocatorState struct {
	Incarnation uint64 // incremented by NewLocator; stamped on every datagram
	Epoch       uint64 // highest epoch granted
	Holder      string // node granted Epoch ("" before the first grant)
	// Conf is the membership this locator adopted (Config.LastManStanding;
	// the zero value, every locator, is not written), persisted before
	// any answer counted in it is sent.
	Conf Membership `json:",omitzero"`
}

// LocatorReady is what a Locator asks its caller to do.
type LocatorReady struct {
	// State, when non-nil, must be persisted with fsync before any of
	// Messages is sent; it stays non-nil in every Ready until Persisted.
	State *LocatorState
	// Messages are to be encoded and sent, each to the host in To.
	Messages []Envelope
}

// NodeCheckIn is a locator's record of a node's last check-in.
type NodeCheckIn struct {
	ID          string
	Seen        bool
	At          time.Duration // locator clock
	Epoch       uint64
	Healthy     bool
	Maintenance bool
	TokenSeq    uint64
	// Conf and Next: the memberships the node's last check-in named.
	Conf, Next Membership
}

// LocatorStatus is a locator's view, for `vigil status` and metrics.
type LocatorStatus struct {
	Self        string
	Epoch       uint64
	Holder      string        // "" if none
	LeaseUntil  time.Duration // holder's lease as recorded here (locator clock); 0 if none
	LeaseValid  bool
	GrantIn     time.Duration // until another holder could be granted
	Quarantined bool          // restarted less than Lease+DriftMargin ago
	// Stale counts authentic datagrams addressed to another incarnation of
	// this locator (sent before it started, or replayed): answered, never
	// acted on.
	Stale uint64
	// StaleRenewals counts renewals by the holder that were not newer than
	// the last one accepted from it (a late or replayed datagram): refused,
	// the lease is not extended.
	StaleRenewals uint64
	Nodes         []NodeCheckIn
	// Conf is the membership this locator grants in (Membership).
	Conf Membership
}

// Locator records check-ins and grants the active role for one host. It is
// a pure state machine: the caller feeds it datagrams (Step) and time
// (Tick) and carries out Ready. Not safe for concurrent use.
//
// Grant rule (for a CheckIn with Claim, epoch e, from node n):
//   - n is the recorded holder: e <= Epoch renews the lease; e > Epoch
//     moves the holder to a new epoch (persisted) without waiting.
//   - n is another node: granted only if e > Epoch (at most one holder per
//     epoch, ever) AND the recorded holder's lease, counted from this
//     locator's receive time of its last renewal, plus DriftMargin has
//     passed AND Lease+DriftMargin have passed since this locator started.
//
// Membership (Config.LastManStanding, docs/protocol.md "A quorum that
// shrinks"): a claim or renewal is granted only if this locator is a
// member of the membership it adopted (LocatorState.Conf) and the check-in
// counts in that membership (CheckIn.Conf), or proposes it (CheckIn.Next,
// a change some locators adopted already). It adopts a change, persisted
// before the answer, only from the node it protects: a renewal of the
// recorded holder that it grants, proposing one member more or less one
// version on. A locator that is not a member adopts a change that adds it
// from any claim; one that started without state (Unknown) learns the
// membership only when every node checks in from that one, lately and
// with no change under way.
//
// A granted lease is recorded as now+Lease, where now is the receive time.
// A claim or renewal by the holder must be newer (incarnation, sequence)
// than the last one accepted from it, or it is refused and extends nothing:
// a late or replayed renewal never stretches the lease. A check-in stamped
// for another incarnation of this locator (Message.ToIncarnation) is
// answered with a refusal, so the node learns this incarnation, and is
// otherwise ignored (ErrStale).
type Locator struct {
	cfg        Config
	self       string
	idx        int // in cfg.Locators
	clusterID  uint64
	st         LocatorState
	dirty      bool
	seq        []uint64 // per node: sequence of what we sent it
	now        time.Duration
	startedAt  time.Duration
	leaseUntil time.Duration // holder's lease, locator clock; valid only if hasLease
	hasLease   bool
	released   bool // the persisted holder released its epoch since our start
	quarantine bool // a holder was persisted: its lease may still run after our restart
	// lost: started without a state file (AssumeLostState). Until it
	// grants anyone, it raises its recorded epoch to the highest one the
	// nodes' datagrams name: it forgot which it granted.
	lost  bool
	nodes []NodeCheckIn
	msgs  []Envelope
	// (incarnation, seq) of the last claim or renewal accepted from the
	// holder: only a newer one extends its lease.
	renewInc, renewSeq   uint64
	stale, staleRenewals uint64
}

// NewLocator returns a locator starting at now (its clock: CLOCK_BOOTTIME
// as a Duration) from the last persisted state (zero value on first start).
// It increments the incarnation; the first Ready carries the new state.
// If the state names a holder, then until now+Lease+DriftMargin it grants
// no other holder: it cannot know how long ago it last renewed that
// holder's lease (renewals are not persisted). The holder itself may renew
// or release at once.
func NewLocator(cfg Config, st LocatorState, now time.Duration) (*Locator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if indexOf(cfg.Locators, cfg.Self) < 0 {
		return nil, fmt.Errorf("%w: self %q is not a locator", ErrConfig, cfg.Self)
	}
	l := &Locator{cfg: cfg, self: cfg.Self, clusterID: ClusterID(cfg.Cluster), st: st, now: now, startedAt: now}
	l.idx = indexOf(cfg.Locators, cfg.Self)
	l.st.Conf = st.Conf.canon(len(cfg.Locators))
	// Grants are persisted before they are answered: with no holder on
	// disk this locator never granted anything, so there is no lease to
	// wait out.
	l.quarantine = st.Holder != ""
	l.st.Incarnation++
	l.dirty = true
	l.nodes = make([]NodeCheckIn, len(cfg.Nodes))
	l.seq = make([]uint64, len(cfg.Nodes))
	for i, id := range cfg.Nodes {
		l.nodes[i].ID = id
	}
	return l, nil
}

// AssumeLostState makes a locator started from a zero state (no state
// file) wait out Lease+DriftMargin before granting anyone, as after a
// restart with a holder on disk: without its file a locator cannot tell a
// first start from a lost state directory, and the previous life may have
// granted a lease that still runs. Call it before the first Step.
//
// Under Config.LastManStanding it also forgets the membership: the
// configured one may be one the cluster has left (members removed while
// this locator was away), and counting in it would let this locator and
// the removed ones form a majority of it beside the current one. It
// counts in none (Membership.Unknown) until a claim adds it back to the
// current membership, or every node checks in from one membership, lately
// and with no change under way (a first start, or the membership known
// to every node).
func (l *Locator) AssumeLostState() {
	l.quarantine, l.lost = true, true
	if l.cfg.LastManStanding > 0 {
		l.st.Conf = Membership{Unknown: true}
	}
}

// Tick advances the locator's clock. A locator has no timers of its own;
// ticking only keeps Status current.
func (l *Locator) Tick(now time.Duration) { l.advance(now) }

func (l *Locator) advance(now time.Duration) {
	if now > l.now {
		l.now = now
	}
}

// grantIn is how long until a node other than the holder could be granted.
func (l *Locator) grantIn() time.Duration {
	margin := l.cfg.DriftMargin
	if l.cfg.Planted.Has(plant.IgnoreDrift) {
		margin = 0
	}
	var until time.Duration
	if !l.released && l.quarantine {
		until = l.startedAt + l.cfg.Lease + margin
	}
	if l.hasLease && l.leaseUntil+margin > until {
		until = l.leaseUntil + margin
	}
	if d := until - l.now; d > 0 && !l.cfg.Planted.Has(plant.NoWait) {
		return d
	}
	return 0
}

// Step processes one authenticated, replay-checked message received at now
// (read the clock after the datagram arrived). Messages for nodes, from
// unknown nodes or for another cluster return an error and change nothing.
// One addressed to another incarnation of this locator returns ErrStale:
// a check-in is answered with a refusal carrying this incarnation and is
// otherwise ignored; a release is ignored.
func (l *Locator) Step(now time.Duration, m Message) error {
	if m.ClusterID != l.clusterID {
		return fmt.Errorf("%w: from %q", ErrCluster, m.From)
	}
	ni := indexOf(l.cfg.Nodes, m.From)
	if ni < 0 {
		return fmt.Errorf("%w: %q is not a node", ErrPeer, m.From)
	}
	if !m.Type.ForLocator() {
		return fmt.Errorf("%w: %s is not for a locator", ErrType, m.Type)
	}
	l.advance(now)
	if m.ToIncarnation != l.st.Incarnation {
		// Sent before this locator started (or a replay of such a
		// datagram): nothing in it may count here, not even as a
		// check-in. Answering a check-in teaches the node our incarnation;
		// the answer goes to the incarnation that sent it, so a replay
		// of an old one is dropped there.
		l.stale++
		if m.Type == MsgCheckIn {
			l.ack(ni, m, false)
			l.msgs[len(l.msgs)-1].Msg.Ack.Stale = true
		}
		return fmt.Errorf("%w: %s from %q for incarnation %d, this is %d", ErrStale, m.Type, m.From, m.ToIncarnation, l.st.Incarnation)
	}
	if l.lost && l.st.Holder == "" && m.Epoch > l.st.Epoch {
		// The epoch the sender knows (its active's): granted by a
		// majority that may have counted this locator's forgotten
		// grant. Granting it again would give one epoch two holders
		// (found by the simulator's lost states).
		l.st.Epoch = m.Epoch
		l.dirty = true
	}
	switch m.Type {
	case MsgCheckIn:
		l.checkIn(ni, m)
	case MsgRelease:
		// The holder sends Release only after it dropped the role itself
		// (or its supervisor, after its process died: CrashRelease), so
		// its lease no longer needs protecting here. Only a release sent
		// after every claim or renewal accepted from the holder counts,
		// and it then counts as the newest: a renewal sent before it (by
		// a process that has since died, still in flight) extends
		// nothing, and a release of an older incarnation delivered late
		// frees nothing a newer one claimed.
		if m.From == l.st.Holder && m.Release.Epoch == l.st.Epoch && l.newerRenewal(m) {
			l.hasLease = false
			l.released = true // the holder itself lifts the restart wait
			l.renewInc, l.renewSeq = m.Incarnation, m.Seq
		}
	default:
		return fmt.Errorf("%w: %s is not for a locator", ErrType, m.Type)
	}
	return nil
}

func (l *Locator) checkIn(ni int, m Message) {
	c := m.CheckIn
	if c.Claim && m.From == l.st.Holder && !l.newerRenewal(m) {
		// Not newer than a claim or renewal already accepted from the
		// holder: delivered late or replayed. The lease it could support
		// is already covered by the newer one (sent later, received
		// earlier); extending from now would stretch the lease past
		// anything the holder believes, and it is no news of the node.
		l.staleRenewals++
		l.ack(ni, m, false)
		return
	}
	n := len(l.cfg.Locators)
	conf, next := c.Conf.canon(n), c.Next.canon(n)
	rec := &l.nodes[ni]
	*rec = NodeCheckIn{ID: m.From, Seen: true, At: l.now, Epoch: c.Epoch, Healthy: c.Healthy, Maintenance: c.Maintenance, TokenSeq: c.TokenSeq,
		Conf: conf, Next: next}
	l.learnConf(c.Claim, conf, next)
	own := l.st.Conf
	counts := own.has(n, l.idx) && (conf == own || next != (Membership{}) && next == own) || l.cfg.Planted.Has(plant.AnyConf)
	wasHolder := m.From == l.st.Holder
	granted := false
	if c.Claim && counts {
		switch {
		case m.From == l.st.Holder && c.Epoch <= l.st.Epoch:
			// A renewal (possibly of an older epoch: the holder moved here
			// to a newer one that has no quorum yet). Extending the lease
			// of the holder we already protect is always safe.
			granted = true
		case m.From == l.st.Holder && c.Epoch > l.st.Epoch:
			granted = true
			l.st.Epoch = c.Epoch
			l.dirty = true
		case m.From != l.st.Holder && c.Epoch > l.st.Epoch && l.grantIn() == 0:
			granted = true
			l.st.Epoch, l.st.Holder = c.Epoch, m.From
			l.dirty = true
		}
		if granted {
			l.leaseUntil, l.hasLease = l.now+l.cfg.Lease, true
			l.renewInc, l.renewSeq = m.Incarnation, m.Seq
			if wasHolder && conf == own && next.childOf(own, n) {
				// The holder we protect proposes the next membership:
				// adopt it (persisted before this answer).
				l.st.Conf = next
				l.dirty = true
			}
		}
	}
	l.ack(ni, m, granted)
}

// learnConf adopts a membership a check-in teaches a locator that counts
// in none it is a member of: a change that adds this locator, proposed in
// a claim (by the holder, or by a candidate finishing it); or, for one
// that lost its state, the membership every node checks in from, once
// every node has lately, none with a change under way (on a new cluster,
// the configured one).
func (l *Locator) learnConf(claim bool, conf, next Membership) {
	n := len(l.cfg.Locators)
	own := l.st.Conf
	if claim && next != (Membership{}) && next.has(n, l.idx) && !conf.has(n, l.idx) && !conf.Unknown && (own.Unknown || next.Version > own.Version) {
		l.st.Conf = next
		l.dirty = true
		return
	}
	if !own.Unknown {
		return
	}
	// Every node checking in now, all in one membership and none with a
	// change under way: that is the cluster's. A change is proposed by a
	// node, on its disk before any locator sees it, so a node that knows
	// a newer one would say so; and only a node checking in lately
	// counts, or one cut off from this locator since it last checked in
	// could hide the change it made since.
	var all Membership
	for i, rec := range l.nodes {
		if !rec.Seen || l.now-rec.At > l.cfg.TokenTimeout || rec.Next != (Membership{}) || rec.Conf.Unknown ||
			i > 0 && rec.Conf != all {
			return
		}
		all = rec.Conf
	}
	l.st.Conf = all
	l.dirty = true
}

// newerRenewal reports whether m, a claim or renewal by the holder, was
// sent after the last one accepted from it: a later incarnation, or a
// higher sequence (each destination has its own sequence, so the order of
// the holder's datagrams to this locator is the order it sent them).
func (l *Locator) newerRenewal(m Message) bool {
	return m.Incarnation > l.renewInc || m.Incarnation == l.renewInc && m.Seq > l.renewSeq
}

// ack answers check-in m of node ni, addressed to the incarnation that
// sent it.
func (l *Locator) ack(ni int, m Message, granted bool) {
	a := Ack{Round: m.CheckIn.Round, Granted: granted, Epoch: l.st.Epoch, Holder: l.st.Holder, GrantIn: l.grantIn(), Conf: l.st.Conf}
	l.seq[ni]++
	l.msgs = append(l.msgs, Envelope{To: m.From, Msg: Message{
		Type: MsgAck, From: l.self, ClusterID: l.clusterID, Epoch: l.st.Epoch,
		Incarnation: l.st.Incarnation, Seq: l.seq[ni], To: m.From, ToIncarnation: m.Incarnation, Ack: a,
	}})
}

// Ready returns what the caller must do now: persist State (if non-nil,
// with fsync), report it with Persisted, and then send Messages. Messages
// are cleared; State is not: it comes in every Ready until Persisted. After
// a failed write the caller sends none of Messages (to the nodes, lost
// answers; they ask again).
func (l *Locator) Ready() LocatorReady {
	var rd LocatorReady
	if l.dirty {
		st := l.st
		rd.State = &st
	}
	rd.Messages, l.msgs = l.msgs, nil
	return rd
}

// Persisted tells the locator that st, the State of a Ready, is on disk. A
// newer state than st stays to be written.
func (l *Locator) Persisted(st LocatorState) {
	if st == l.st {
		l.dirty = false
	}
}

// Status is the locator's current view.
func (l *Locator) Status() LocatorStatus {
	s := LocatorStatus{
		Self: l.self, Epoch: l.st.Epoch, Holder: l.st.Holder, GrantIn: l.grantIn(),
		Quarantined: l.quarantine && !l.released && l.now < l.startedAt+l.cfg.Lease+l.cfg.DriftMargin,
		Stale:       l.stale, StaleRenewals: l.staleRenewals,
		Nodes: append([]NodeCheckIn(nil), l.nodes...), Conf: l.st.Conf,
	}
	if l.hasLease {
		s.LeaseUntil = l.leaseUntil
		s.LeaseValid = l.now < l.leaseUntil
	}
	return s
}
