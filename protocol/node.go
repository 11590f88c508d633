package protocol

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/vigil-project/vigil/protocol/internal/plant"
)

// NodeState is what a Node needs to survive a restart. The caller persists
// it with fsync whenever Ready.State is non-nil, before sending that
// Ready's messages, and passes the last persisted value to NewNode.
type NodeState struct {
	Incarnation uint64 // incremented by NewNode; stamped on every datagram
	MaxEpoch    uint64 // highest epoch this node ever claimed; claims use larger ones
	// Conf is the membership this node counts its quorum in, Next a
	// change of it under way (Membership; zero values, not written, when
	// it never changed). A change this node proposes is on disk before any
	// locator can adopt it, so a node that ever proposed one says so at
	// every start (Locator.learnConf relies on it).
	Conf Membership `json:",omitzero"`
	Next Membership `json:",omitzero"`
}

// Errors of Node inputs.
var (
	ErrNoActive    = errors.New("protocol: no active node known")
	ErrNoCandidate = errors.New("protocol: no healthy standby to hand over to")
	ErrUnknownNode = errors.New("protocol: unknown node")
)

// LocatorAck is the node's record of a locator's last answer.
type LocatorAck struct {
	ID      string
	Seen    bool
	LastAck time.Duration // node clock
	// Conf is the membership its last answer reported.
	Conf Membership
}

// NodeStatus is a node's view, for `vigil status` and metrics.
type NodeStatus struct {
	Self         string
	Role         Role
	Epoch        uint64
	Active       string        // active node as known here, "" if none
	LeaseUntil   time.Duration // own lease (node clock), 0 unless Active
	LeaseValid   bool
	HoldingToken bool
	TokenAge     time.Duration // since this node last held the token
	LastRotation time.Duration // time between the last two token visits
	TokenLost    bool
	Healthy      bool
	Maintenance  bool
	Incarnation  uint64
	// Stale counts authentic datagrams addressed to another incarnation
	// of this node (sent before it started, or replayed): never acted on.
	Stale    uint64
	Peers    []NodeHealth // last known summary of every node
	Locators []LocatorAck
	// Conf is the membership this node counts its quorum in, Next a
	// change of it under way (zero: none); Quorum the grants it needs.
	Conf, Next Membership
	Quorum     int
}

type roundKind uint8

const (
	roundRenew roundKind = iota + 1 // active's check-in: renews the lease
	roundClaim                      // claim of a new epoch (candidate, or active regenerating)
	roundProbe                      // "who is active?"
)

// round is one CheckIn sent to every locator and the answers to it.
type round struct {
	id      uint64
	kind    roundKind
	epoch   uint64
	sentAt  time.Duration
	msg     CheckIn // what was sent, to re-send to a locator that restarted
	granted uint32  // locators that granted (probe: that answered)
	refused uint32
	grantIn []time.Duration
	// probe: per answer, when a quorum of it could grant another node
	// (our clock), and whose lease it protects until then ("" if none)
	frees []lapse
	// refusals (claim/renew) or answers (probe) naming a valid holder
	holders map[string]uint32
	epochs  map[string]uint64
	// The membership the round counts in, and the change it carries:
	// only answers of members count, a quorum of them decides. A round
	// with a change (next) is won by a quorum of conf's members granting
	// in conf or next, or by a quorum of next's members granting in next
	// (the two majorities intersect, so either is as safe): a change
	// that locators outside it adopted, or that one which lost its state
	// cannot, still leaves a quorum (found by the simulator).
	conf, next  Membership
	members     uint32 // conf's and next's
	cmask       uint32 // conf's
	nmask       uint32 // next's
	quorum      int    // conf's
	nquorum     int    // next's
	nmem        int    // conf's
	grantedNext uint32 // granted in next
}

func (r *round) answered() uint32 { return r.granted | r.refused }

// won: a quorum granted, in conf (or its change), or in next.
func (r *round) won() bool {
	return bits.OnesCount32(r.granted&r.cmask) >= r.quorum ||
		r.nmask != 0 && bits.OnesCount32(r.grantedNext&r.nmask) >= r.nquorum
}

// lost: the answers so far leave neither quorum possible.
func (r *round) lost() bool {
	if bits.OnesCount32(r.cmask&^r.refused) >= r.quorum {
		return false
	}
	bad := r.refused | r.granted&^r.grantedNext
	return r.nmask == 0 || bits.OnesCount32(r.nmask&^bad) < r.nquorum
}

// holderQuorum is how many answers naming one holder quorumHolder takes
// for that holder's.
func (r *round) holderQuorum() int { return min(r.quorum, r.nmem-r.quorum+1) }

// lapse is a lease a locator protects for holder until at; lapsed, one
// it recorded for holder that has run out (at is when we heard so).
type lapse struct {
	at     time.Duration
	holder string
	lapsed bool
}

// Node is the protocol state machine of one host with role node. It never
// reads a clock, a socket or a file: the node manager passes in time (a
// monotonic clock that counts through suspend, CLOCK_BOOTTIME, as a
// Duration), authenticated and replay-checked messages (Step) and local
// facts (SetHealth, SetMaintenance, Switchover, Late), and after each call
// carries out Ready(). Not safe for concurrent use: one goroutine owns it.
//
// Call Tick at NextDeadline (asked after every call) and at the latest a
// TokenInterval after the last call (a longer gap reads as a stall of its
// own), or simply every TokenInterval/4, and Step for every accepted
// datagram whose type is not ForLocator. Read `now` after
// the input happened (after recvmsg returned). The floating IPs may be held
// only while ActiveAt(now) is true: arm a timer at Status().LeaseUntil and
// remove them when it fires even if no BecameStandby arrived, and give the
// addresses a kernel lifetime ending at LeaseUntil.
type Node struct {
	cfg       Config
	self      string
	idx       int
	clusterID uint64
	quorum    int
	nloc      int
	st        NodeState
	dirty     bool
	roundSeq  uint64

	// Per destination process (index in cfg.Nodes / cfg.Locators): the
	// sequence of what we sent there, and its incarnation as last heard
	// (stamped on every datagram to it as ToIncarnation).
	nodeSeq, locSeq []uint64
	nodeInc, locInc []uint64
	helloAt         []time.Duration // last join sent to answer a stale datagram, per node
	helloSent       []bool
	stale           uint64

	now     time.Duration
	lateGap time.Duration

	role       Role
	epoch      uint64 // epoch of the active we know of (ours when Active)
	maxSeen    uint64 // highest epoch any locator reported
	active     string
	leaseUntil time.Duration
	lastRenew  time.Duration
	lastBump   time.Duration
	bump       bool // a locator holds another holder at >= our epoch: move to a new epoch

	healthy bool
	maint   bool

	// fwd is the switchover request this standby last forwarded, while
	// it may still be sent again (forwardAgain).
	fwd *forwarded

	tok         Token
	holding     bool
	heldSince   time.Duration
	lastTokenAt time.Duration
	seenEpoch   uint64
	seenSeq     uint64
	lastRecvTok time.Duration
	rotation    time.Duration
	lost        bool
	// activeEpoch is the last epoch this node was active in: a token of
	// that epoch naming no active is one this node dropped itself.
	activeEpoch uint64
	peers       []NodeHealth
	peersAt     time.Duration
	// fitSince[i], when fit[i], is when the token first showed node i in
	// the ring, healthy and out of maintenance, with no token since that
	// showed it otherwise (and no token timeout without any token): what
	// Config.Failback is measured from.
	fit      []bool
	fitSince []time.Duration
	// activeSince is when this node last became active: a failback
	// waits Config.Failback from there too, so that a switchover to a
	// less preferred node is not undone at once.
	activeSince time.Duration
	lastHeard   []time.Duration
	heard       []bool

	// Membership (Config.LastManStanding): per locator, since when it has
	// answered without a gap of a token timeout (locSince), and when it
	// last answered in this node's membership or the change under way
	// (locCurAt); when this node's membership last changed (confAt).
	locSince []time.Duration
	locCurAt []time.Duration
	confAt   time.Duration

	rounds    []*round // renewals in flight
	claim     *round
	probe     *round
	needProbe bool // late: re-check with the locators before trusting timers
	// reclaim: this node's lease ran out while it was active (its own
	// stall, or renewals unanswered while the locators paused). Once its
	// re-check finds no other holder it claims the role back at once,
	// and until its claim is decided it keeps a token naming no active
	// rather than pass it: the others were likely paused with it (one
	// machine's pause), and a move of the role would only add a second
	// interruption to the first.
	reclaim       bool
	reclaimSince  time.Duration
	nextClaim     time.Duration
	blockUntil    time.Duration // no claims before (after handing over)
	expectFree    time.Duration // candidate: when the locators said the holder's lease ends
	transferUntil time.Duration // candidate by transfer: retry refused claims quickly until
	// claimMisses counts consecutive claims that no quorum of locators
	// answered; each one backs the next claim off further (claimBackoff).
	// Reset by a won claim, a quorum of answers or an accepted token.
	claimMisses int
	// splitRetries counts quick retries after split votes (splitRetry);
	// reset by a won claim and by a new candidacy.
	splitRetries int
	locAck       []LocatorAck

	msgs   []Envelope
	events []Event
	// Rounds made since the last Ready (queued), and those whose
	// datagrams the last Ready carried (inReady): Sent dates them.
	queued, inReady []*round
}

// NewNode returns the node of cfg.Self starting at now, from the last
// persisted state (zero value on first start). It increments the
// incarnation; the first Ready carries the state to persist. A node always
// starts as Standby and healthy, with no lease: whatever it held before the
// restart is gone. The caller must therefore remove every floating IP a
// previous incarnation may have left BEFORE sending anything from the
// first Ready: this incarnation may release the old epoch at the locators,
// after which another node may be granted the role at once.
func NewNode(cfg Config, st NodeState, now time.Duration) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	idx := indexOf(cfg.Nodes, cfg.Self)
	if idx < 0 {
		return nil, fmt.Errorf("%w: self %q is not a node", ErrConfig, cfg.Self)
	}
	n := &Node{
		cfg: cfg, self: cfg.Self, idx: idx, clusterID: ClusterID(cfg.Cluster),
		quorum: cfg.Quorum(), nloc: len(cfg.Locators), st: st, dirty: true,
		now: now, lateGap: 2 * cfg.TokenInterval, healthy: true, lastTokenAt: now,
		maxSeen: st.MaxEpoch,
	}
	n.st.Incarnation++
	n.lastHeard = make([]time.Duration, len(cfg.Nodes))
	n.heard = make([]bool, len(cfg.Nodes))
	n.peers = make([]NodeHealth, len(cfg.Nodes))
	n.fit, n.fitSince = make([]bool, len(cfg.Nodes)), make([]time.Duration, len(cfg.Nodes))
	for i, id := range cfg.Nodes {
		n.peers[i] = NodeHealth{ID: id}
	}
	n.nodeSeq, n.nodeInc = make([]uint64, len(cfg.Nodes)), make([]uint64, len(cfg.Nodes))
	n.helloAt, n.helloSent = make([]time.Duration, len(cfg.Nodes)), make([]bool, len(cfg.Nodes))
	n.locSeq, n.locInc = make([]uint64, len(cfg.Locators)), make([]uint64, len(cfg.Locators))
	n.locAck = make([]LocatorAck, len(cfg.Locators))
	for i, id := range cfg.Locators {
		n.locAck[i].ID = id
	}
	n.locSince, n.locCurAt = make([]time.Duration, len(cfg.Locators)), make([]time.Duration, len(cfg.Locators))
	n.st.Conf, n.st.Next = st.Conf.canon(len(cfg.Locators)), st.Next.canon(len(cfg.Locators))
	n.confAt = now
	n.sendNodes(Message{Type: MsgJoin})
	return n, nil
}

// ActiveAt reports whether, by this node's own view, it holds a valid lease
// at now (node clock). It is the only test for holding the floating IPs.
func (n *Node) ActiveAt(now time.Duration) bool {
	return n.role == Active && now < n.leaseUntil
}

// LeaseUntil is the end of the own lease (node clock) while Active, else 0:
// what every announcement for the floating IPs is checked against.
func (n *Node) LeaseUntil() time.Duration {
	if n.role != Active {
		return 0
	}
	return n.leaseUntil
}

// Role is the node's current role.
func (n *Node) Role() Role { return n.role }

// Tick advances time and runs the timers: lease expiry, renewals, token
// passing, token-loss detection, claim retries.
func (n *Node) Tick(now time.Duration) {
	n.advance(now)
	n.timers()
}

// Late tells the node that its own execution was delayed by d (a timer
// fired late, the process was stopped): it re-checks with the locators
// before trusting its token timer, so its own stall never makes it declare
// a healthy active's token lost.
func (n *Node) Late(now time.Duration, d time.Duration) {
	n.advance(now)
	if d > 0 {
		n.noteLate()
	}
	n.timers()
}

// SetHealth reports whether every critical process is up. An unhealthy
// active hands over to a healthy standby (if there is one); an unhealthy
// standby claims the role only when no healthy node is known.
func (n *Node) SetHealth(now time.Duration, healthy bool) {
	n.advance(now)
	n.healthy = healthy
	n.timers()
}

// SetMaintenance puts the node in or out of maintenance. A node in
// maintenance never claims the active role; an active one hands over as
// soon as a healthy standby is in the ring.
func (n *Node) SetMaintenance(now time.Duration, on bool) {
	n.advance(now)
	n.maint = on
	if on && n.role == Candidate {
		n.abandonClaim("maintenance")
	}
	n.timers()
}

// Switchover moves the active role to node `to` ("" = the most preferred
// healthy standby: the earliest in Nodes). On the active it hands over at once: it drops
// the role (BecameStandby), releases its epoch at the locators and tells
// the target to claim the next epoch, which the locators then grant
// without waiting for the lease. On a standby it forwards the request to
// the active. Errors: ErrUnknownNode, ErrNoActive, ErrNoCandidate.
func (n *Node) Switchover(now time.Duration, to string) error {
	n.advance(now)
	defer n.timers()
	if to != "" && indexOf(n.cfg.Nodes, to) < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownNode, to)
	}
	if n.role != Active {
		if n.active == "" || n.active == n.self {
			return ErrNoActive
		}
		if n.seenEpoch != n.epoch || n.seenSeq == 0 {
			// The request says how fresh it is by the token it last saw
			// (Switchover.TokenSeq); this node knows of the active only
			// from the locators so far, its token is a moment away.
			return fmt.Errorf("%w: no token of epoch %d seen yet; try again", ErrNoActive, n.epoch)
		}
		n.send(n.active, Message{Type: MsgSwitchover, Switchover: Switchover{To: to, TokenSeq: n.seenSeq}})
		n.fwd = &forwarded{to: to, active: n.active, again: 2, until: n.now + 2*n.cfg.TokenTimeout}
		return nil
	}
	if to == n.self {
		return nil
	}
	if to == "" {
		if to = n.healthyPeer(); to == "" {
			return ErrNoCandidate
		}
	} else {
		// A named target must be fit to serve, as the token last showed
		// it: handing the role to a broken node is an outage on request.
		p := n.peers[indexOf(n.cfg.Nodes, to)]
		switch {
		case !n.peersFresh() || !p.InRing:
			return fmt.Errorf("%w: %q is not in the ring", ErrNoCandidate, to)
		case p.Maintenance:
			return fmt.Errorf("%w: %q is in maintenance", ErrNoCandidate, to)
		case !p.Healthy:
			return fmt.Errorf("%w: %q is not healthy", ErrNoCandidate, to)
		}
	}
	n.handover(to, "switchover", true)
	return nil
}

// Step processes one message for this node (a type that is not
// ForLocator) that passed Decode and a ReplayFilter, received at now.
// Messages from unknown peers, of the wrong type or for another cluster
// return an error and change nothing.
//
// A message addressed to another incarnation of this node (ToIncarnation,
// e.g. sent before this node started, or a replay of one) returns ErrStale
// and is not acted on: an ack is ignored; a node's message only teaches
// this node the sender's incarnation, and is answered with a Join (at most
// one per token interval per node) so that the sender learns ours.
func (n *Node) Step(now time.Duration, m Message) error {
	if m.ClusterID != n.clusterID {
		return fmt.Errorf("%w: from %q", ErrCluster, m.From)
	}
	if m.Type.ForLocator() || m.Type == 0 || m.Type > msgTypeMax {
		return fmt.Errorf("%w: %s is not for a node", ErrType, m.Type)
	}
	if m.Type == MsgAck {
		li := indexOf(n.cfg.Locators, m.From)
		if li < 0 {
			return fmt.Errorf("%w: %q is not a locator", ErrPeer, m.From)
		}
		n.advance(now)
		if m.ToIncarnation != n.st.Incarnation {
			// Acks answer our own check-ins and are stamped with the
			// incarnation that sent them: this one answered an earlier
			// incarnation of this node.
			n.stale++
			return fmt.Errorf("%w: ack from %q for incarnation %d, this is %d", ErrStale, m.From, m.ToIncarnation, n.st.Incarnation)
		}
		n.locInc[li] = max(n.locInc[li], m.Incarnation)
		n.onAck(li, m.Ack)
		n.timers()
		return nil
	}
	ni := indexOf(n.cfg.Nodes, m.From)
	if ni < 0 {
		return fmt.Errorf("%w: %q is not a node", ErrPeer, m.From)
	}
	n.advance(now)
	// Authentic, so its sender existed with this incarnation; never
	// regress (a replay carries an older one).
	knewInc := n.nodeInc[ni]
	n.nodeInc[ni] = max(n.nodeInc[ni], m.Incarnation)
	if m.ToIncarnation != n.st.Incarnation {
		n.stale++
		if !n.helloSent[ni] || n.now-n.helloAt[ni] >= n.cfg.TokenInterval {
			n.helloSent[ni], n.helloAt[ni] = true, n.now
			n.send(m.From, Message{Type: MsgJoin})
		}
		n.timers()
		return fmt.Errorf("%w: %s from %q for incarnation %d, this is %d", ErrStale, m.Type, m.From, m.ToIncarnation, n.st.Incarnation)
	}
	n.lastHeard[ni], n.heard[ni] = n.now, true
	switch m.Type {
	case MsgToken:
		n.onToken(m.Token)
	case MsgTransfer:
		if m.Transfer.To == n.self && m.Transfer.Epoch >= n.epoch && n.role == Standby && n.healthy && !n.maint {
			cause := CauseHandover
			if knewInc != 0 && m.Incarnation > knewInc {
				// A planned handover comes from the incarnation that
				// passed the token; a newer one is the supervisor's
				// release for a node manager that died (CrashRelease).
				cause = CauseCrashRelease
			}
			n.active = ""
			n.becomeCandidate(n.now, cause)
		}
	case MsgSwitchover:
		if n.role != Active {
			break // the requester's view is old; it sees no change and says so
		}
		to := m.Switchover.To
		if to == n.self {
			to = ""
		}
		if reason := n.staleSwitchover(m); reason != "" {
			n.events = append(n.events, SwitchoverRefused{From: m.From, To: to, Reason: reason})
			break
		}
		if err := n.Switchover(n.now, to); err != nil {
			// An impossible request is dropped; the requester sees no
			// change, the active's journal says why.
			n.events = append(n.events, SwitchoverRefused{From: m.From, To: to, Reason: err.Error()})
		}
	case MsgJoin:
	}
	n.timers()
	return nil
}

// staleSwitchover says why a forwarded switchover request is too old to
// carry out, or "" when it is fresh.
//
// A request made in another term (a datagram delayed or replayed from
// before this node's epoch) is not this active's to carry out: found by
// the simulator, a request from inside a partition moved the role 2.5 s
// after the partition healed. Within the term, the token seq the requester
// last saw dates it: the token moves on at most once per token interval,
// so a request more than a token timeout's worth of passes (and one
// rotation of the ring) behind is at least that old. Also found by the
// simulator: a request lost on a cut link, replayed 1.1 s later from
// inside the replay window, moved the role long after the operator was
// told it had not.
func (n *Node) staleSwitchover(m Message) string {
	if m.Epoch != n.epoch {
		return fmt.Sprintf("made in epoch %d, this is epoch %d", m.Epoch, n.epoch)
	}
	seen := m.Switchover.TokenSeq
	if seen == 0 || n.seenEpoch != n.epoch {
		return "" // a sender from before the field; as before, fresh by its epoch
	}
	limit := uint64(n.cfg.TokenTimeout/n.cfg.TokenInterval) + uint64(len(n.cfg.Nodes))
	if n.seenSeq > seen && n.seenSeq-seen > limit {
		return fmt.Sprintf("too old: made at token %d, the token is at %d (more than %d passes later)", seen, n.seenSeq, limit)
	}
	return ""
}

// Ready returns and clears what the caller must do now (see Ready). The
// state is not cleared: it comes in every Ready until the caller reports it
// on disk with Persisted. A caller whose write failed must not believe it
// persisted, and the core must not either.
func (n *Node) Ready() Ready {
	var rd Ready
	if n.dirty {
		st := n.st
		rd.State = &st
	}
	rd.Messages, n.msgs = n.msgs, nil
	rd.Events, n.events = n.events, nil
	clear(n.inReady)
	n.inReady, n.queued = n.queued, n.inReady[:0]
	return rd
}

// Sent tells the node that the Messages of the last Ready are being sent
// now: read the clock after the State is on disk, just before sending. A
// round's timeout and the lease a claim or renewal wins count from when
// its datagrams left, never earlier than this reading (a lease counted
// from a later moment than the send could outlast the locators'). Without
// Sent they count from when the round was made, which a slow disk (the
// claim's epoch must be on disk first) can make so long ago that every
// claim times out before it is even sent.
func (n *Node) Sent(now time.Duration) {
	for _, r := range n.inReady {
		if now > r.sentAt {
			r.sentAt = now
		}
	}
	clear(n.inReady)
	n.inReady = n.inReady[:0]
}

// Persisted tells the node that st, the State of a Ready, is on disk (written
// and fsynced). A newer state than st stays to be written.
func (n *Node) Persisted(st NodeState) {
	if st == n.st {
		n.dirty = false
	}
}

// Status is the node's current view.
func (n *Node) Status() NodeStatus {
	s := NodeStatus{
		Self: n.self, Role: n.role, Epoch: n.epoch, Active: n.active,
		HoldingToken: n.holding, TokenAge: n.now - n.lastTokenAt, LastRotation: n.rotation,
		TokenLost: n.lost, Healthy: n.healthy, Maintenance: n.maint, Incarnation: n.st.Incarnation, Stale: n.stale,
		Peers: slices.Clone(n.peers), Locators: slices.Clone(n.locAck),
		Conf: n.st.Conf, Next: n.st.Next, Quorum: n.confQuorum(n.st.Conf),
	}
	if n.holding {
		s.TokenAge = 0
	}
	if n.role == Active {
		s.LeaseUntil = n.leaseUntil
		s.LeaseValid = n.now < n.leaseUntil
	}
	return s
}

// ---- time ----

func (n *Node) advance(now time.Duration) {
	if now < n.now {
		now = n.now // the clock is monotonic; ignore a caller's mistake
	}
	gap := now - n.now
	n.now = now
	if gap > n.lateGap {
		n.noteLate()
		switch {
		case n.role == Active && n.now >= n.leaseUntil:
			// checkLease, just below, steps down and reclaims.
		case n.role != Active:
			// Our own stall is no news of the active: the token timer
			// does not count it (the probe that noteLate started
			// answers sooner when the active is really gone).
			n.lastTokenAt = min(n.now, n.lastTokenAt+gap)
		}
	}
	n.checkLease()
}

func (n *Node) noteLate() {
	n.needProbe = true
	if n.probe == nil {
		n.startProbe()
	}
}

func (n *Node) checkLease() {
	if n.role == Active && n.now >= n.leaseUntil {
		n.stepDown("lease expired", "", false)
		// Alive to see it: re-check and claim the role back (reclaim)
		// rather than hand the others a token naming no active. A
		// lease that ran out while this node ran is most often one
		// whose renewals went unanswered while the locators were
		// paused, the others with them.
		if !n.reclaim {
			n.reclaim, n.reclaimSince = true, n.now
		}
		n.noteLate()
	}
}

func (n *Node) timers() {
	now := n.now
	n.checkLease()
	n.expireRounds()
	if n.role == Active {
		n.maybeHandover()
		n.reconfigure()
	}
	if n.role == Active {
		// Renew every interval even without the token: a lost token or a
		// dead standby must never cost the active its lease.
		if now-n.lastRenew >= n.cfg.TokenInterval && !n.cfg.Planted.Has(plant.RenewOnlyWithToken) {
			n.checkInAll()
		}
		if n.bump && n.claim == nil && now-n.lastBump >= n.cfg.TokenTimeout {
			n.lastBump = now
			n.sendClaim()
		}
	}
	if n.holding && now-n.heldSince >= n.cfg.TokenInterval && !n.holdForReclaim() {
		n.passToken()
	}
	if n.holding && n.role == Standby && n.tok.Active == "" && n.mayClaimFromToken(n.tok) {
		// We hold the token and it names no active (the active stepped
		// down or handed over to us): claim.
		n.becomeCandidate(now+time.Duration(n.idx)*n.cfg.TokenInterval/2, n.tokenCause(n.tok))
	}
	n.checkTokenLoss()
	if n.role == Candidate && n.claim == nil && now >= n.nextClaim {
		if !n.eligible() {
			n.abandonClaim("not eligible")
		} else {
			n.sendClaim()
		}
	}
}

// NextDeadline is the earliest time at which Tick could act on what the
// node knows now: a driver that ticks then, and after every input, acts
// when one ticking finely would. It is never later than a timer that is
// due; it may be earlier (a wakeup that finds nothing to do), and at or
// before Now when something is due already. Inputs (Step, SetHealth, ...)
// change it: ask again after each. The driver still ticks at least every
// token interval, which its own stall detection (advance) relies on.
func (n *Node) NextDeadline() time.Duration {
	next := n.now + n.cfg.TokenTimeout
	at := func(t time.Duration) { next = min(next, t) }
	if n.role == Active {
		at(n.leaseUntil)
		at(n.lastRenew + n.cfg.TokenInterval)
		if n.bump && n.claim == nil {
			at(n.lastBump + n.cfg.TokenTimeout)
		}
		if (n.maint || !n.healthy) && n.healthyPeer() != "" {
			at(n.now) // maybeHandover
		}
		if to, due := n.failbackTo(); to != "" {
			at(n.now)
		} else if due != 0 {
			at(due)
		}
		if next, _, due := n.nextConf(); next != (Membership{}) {
			at(due) // reconfigure
		}
	}
	if n.holding {
		pass := n.heldSince + n.cfg.TokenInterval
		if n.reclaim && n.tok.Active == "" {
			pass = max(pass, n.reclaimSince+n.cfg.TokenTimeout/2) // holdForReclaim
		}
		at(pass)
		if n.role == Standby && n.tok.Active == "" {
			// A token naming no active: claim once mayClaimFromToken
			// holds. Of its terms only blockUntil, and an unhealthy
			// node's healthy peer going stale (eligible), change with
			// time alone.
			if n.mayClaimFromToken(n.tok) {
				at(n.now)
			}
			if n.blockUntil > n.now {
				at(n.blockUntil)
			}
			if !n.healthy {
				at(n.peersAt + n.cfg.TokenTimeout)
			}
		}
	} else {
		at(n.lastTokenAt + n.cfg.TokenTimeout) // checkTokenLoss
	}
	if n.role == Candidate && n.claim == nil {
		at(n.nextClaim)
	}
	for _, r := range n.rounds {
		at(r.sentAt + n.cfg.Lease) // expireRounds
	}
	if n.claim != nil {
		at(n.claim.sentAt + n.roundTimeout())
	}
	if n.probe != nil {
		at(n.probe.sentAt + n.roundTimeout())
	}
	return next
}

// holdForReclaim: keep a token that names no active while reclaiming
// (see Node.reclaim), for at most half a token timeout so the ring never
// stops for long.
func (n *Node) holdForReclaim() bool {
	return n.reclaim && n.tok.Active == "" && n.now-n.reclaimSince < n.cfg.TokenTimeout/2
}

func (n *Node) roundTimeout() time.Duration { return 3 * n.cfg.TokenInterval }

func (n *Node) expireRounds() {
	keep := n.rounds[:0]
	for _, r := range n.rounds {
		if n.now < r.sentAt+n.cfg.Lease {
			keep = append(keep, r)
		}
	}
	clear(n.rounds[len(keep):])
	n.rounds = keep
	if r := n.claim; r != nil && n.now >= r.sentAt+n.roundTimeout() {
		n.claimFailed(r)
	}
	if r := n.probe; r != nil && n.now >= r.sentAt+n.roundTimeout() {
		n.probeDone(r)
	}
}

// ---- token ----

func (n *Node) onToken(t Token) {
	if t.Epoch < n.epoch || (t.Epoch == n.seenEpoch && t.Seq <= n.seenSeq) || t.Epoch < n.seenEpoch {
		return // stale or duplicate token
	}
	// If we were stalled (needProbe), the token may be an old one: we keep
	// it, but claim nothing from it until the probe told us the current
	// epoch (probeDone drops tokens of an older epoch).
	if n.role == Active && t.Epoch > n.epoch && t.Active != n.self {
		n.stepDown(fmt.Sprintf("token of epoch %d names %q", t.Epoch, t.Active), "", false)
	}
	if t.Epoch > n.epoch {
		n.epoch = t.Epoch
	}
	n.seenEpoch, n.seenSeq = t.Epoch, t.Seq
	if n.role != Active {
		n.active = t.Active
		if n.active == n.self {
			n.active = ""
		}
	}
	for _, h := range t.Nodes {
		if i := indexOf(n.cfg.Nodes, h.ID); i >= 0 && i != n.idx {
			n.peers[i] = h
		}
	}
	n.noteFit()
	n.peersAt = n.now
	n.holdStarts()
	n.tok = t
	n.tok.Nodes = slices.Clone(t.Nodes)
	n.holding, n.heldSince, n.lastTokenAt, n.lost = true, n.now, n.now, false
	n.claimMisses = 0 // a live ring: claim promptly again when it calls for it
	n.forwardAgain()
	if n.role != Active || n.now-n.lastRenew >= n.cfg.TokenInterval/2 {
		// An active's hop check-in is a renewal, and its renewal timer
		// (every token interval) mostly fires just before the token
		// returns: a second renewal then, a millisecond later, only
		// costs every locator and this node a datagram each way.
		n.checkInAll()
	}
	switch {
	case n.role == Candidate && t.Active != "" && t.Active != n.self:
		n.abandonClaim(fmt.Sprintf("active %q alive", t.Active))
	case n.role == Standby && t.Active == "" && n.mayClaimFromToken(t):
		n.becomeCandidate(n.now, n.tokenCause(t))
	}
}

// forwarded is a switchover request a standby sent to active; again is
// how many more times it may go (forwardAgain).
type forwarded struct {
	to, active string
	again      int
	until      time.Duration
}

// forwardAgain sends the last forwarded switchover request again with the
// next two tokens this standby takes, dated by each, while the same node
// is active and within two token timeouts of the request. An active
// refuses a request its view makes stale or impossible, and two of its
// refusals are of a view a moment old: the active regenerated the token
// as the request was on its way ("made in epoch 3, this is epoch 4": seen
// in CI, 12 ms after the new epoch, on a cluster just formed), and, having
// regenerated it, has not yet seen the requester in its new ring ("not in
// the ring"). The regenerated token reaches the requester within a
// rotation, and the active sees the requester's entry before the token
// comes round again: two more sends cover both. A request the active
// carried out is not sent again (the next token names no active, or
// another), an old one is never revived: the operator, waiting seconds,
// sees the move or is told it did not happen.
func (n *Node) forwardAgain() {
	f := n.fwd
	if f == nil {
		return
	}
	if n.now >= f.until || n.role != Standby || n.active != f.active || n.seenEpoch != n.epoch {
		n.fwd = nil
		return
	}
	n.send(n.active, Message{Type: MsgSwitchover, Switchover: Switchover{To: f.to, TokenSeq: n.seenSeq}})
	if f.again--; f.again == 0 {
		n.fwd = nil
	}
}

// tokenCause is why a standby claims from a token that names no active.
func (n *Node) tokenCause(t Token) ClaimCause {
	switch {
	case t.Handover == n.self:
		return CauseHandover
	case n.activeEpoch != 0 && t.Epoch == n.activeEpoch:
		return CauseLeaseLost
	}
	return CauseNoActive
}

func (n *Node) mayClaimFromToken(t Token) bool {
	return (t.Handover == "" || t.Handover == n.self) && n.now >= n.blockUntil && !n.needProbe && n.eligible()
}

// passToken updates this node's entry and sends the token to the next node
// of the ring (itself if it is alone).
func (n *Node) passToken() {
	t := n.tok
	t.Nodes = n.ringEntries(t.Nodes)
	t.Seq++
	switch {
	case n.role == Active:
		t.Active, t.Handover = n.self, ""
	case t.Active == n.self:
		t.Active = ""
	}
	next := n.nextInRing(t)
	if t.Handover != "" && t.Active == "" {
		next = t.Handover
	}
	n.seenEpoch, n.seenSeq = t.Epoch, t.Seq
	n.lastTokenAt = n.now
	if next == n.self {
		n.tok, n.heldSince = t, n.now
		n.holdStarts()
		if n.role != Active || n.lastRenew != n.now {
			n.checkInAll()
		}
		return
	}
	n.holding = false
	n.send(next, Message{Type: MsgToken, Token: t})
}

// holdStarts measures the rotation time: between two visits of the token.
func (n *Node) holdStarts() {
	if n.lastRecvTok != 0 {
		n.rotation = n.now - n.lastRecvTok
	}
	n.lastRecvTok = n.now
}

// ringEntries returns the token's node list updated with this node's own
// health and with every node heard from recently marked in the ring.
func (n *Node) ringEntries(in []NodeHealth) []NodeHealth {
	out := make([]NodeHealth, len(n.cfg.Nodes))
	for i, id := range n.cfg.Nodes {
		out[i] = NodeHealth{ID: id}
	}
	for _, h := range in {
		if i := indexOf(n.cfg.Nodes, h.ID); i >= 0 {
			out[i] = h
		}
	}
	for i := range out {
		if n.heard[i] && n.now-n.lastHeard[i] < n.cfg.TokenTimeout {
			out[i].InRing = true
		}
	}
	out[n.idx] = NodeHealth{ID: n.self, Healthy: n.healthy, Maintenance: n.maint, InRing: true}
	return out
}

func (n *Node) nextInRing(t Token) string {
	for k := 1; k < len(n.cfg.Nodes); k++ {
		i := (n.idx + k) % len(n.cfg.Nodes)
		if i < len(t.Nodes) && t.Nodes[i].InRing {
			return n.cfg.Nodes[i]
		}
	}
	return n.self
}

// newToken starts the token of a new epoch held by this (active) node;
// only nodes heard from within TokenTimeout are in its ring, the others
// rejoin with MsgJoin.
func (n *Node) newToken() {
	t := Token{Epoch: n.epoch, Seq: 1, Active: n.self}
	for i := range n.cfg.Nodes {
		if i != n.idx && !(n.heard[i] && n.now-n.lastHeard[i] < n.cfg.TokenTimeout) {
			continue
		}
		h := n.peers[i]
		h.InRing = true
		t.Nodes = append(t.Nodes, h)
	}
	t.Nodes = n.ringEntries(t.Nodes)
	for i := range t.Nodes {
		if i != n.idx && !(n.heard[i] && n.now-n.lastHeard[i] < n.cfg.TokenTimeout) {
			t.Nodes[i].InRing = false
		}
	}
	n.tok, n.holding, n.heldSince, n.lastTokenAt, n.lost = t, true, n.now, n.now, false
	n.seenEpoch, n.seenSeq = t.Epoch, t.Seq
}

func (n *Node) checkTokenLoss() {
	if n.holding || n.now-n.lastTokenAt < n.cfg.TokenTimeout {
		return
	}
	switch n.role {
	case Active:
		// Our own lease is the evidence that we are alive: regenerate.
		n.declareLost(lapse{})
	case Standby:
		// Re-check with the locators first: if a quorum still holds a
		// live lease for the active, the ring broke (or we were stalled),
		// the active did not fail.
		n.needProbe = true
		if n.probe == nil {
			n.startProbe()
		}
	}
}

// declareLost: no token for a token timeout. l is the lease the locators
// still protect, if a probe just found one lapsing.
func (n *Node) declareLost(l lapse) {
	if !n.lost {
		n.events = append(n.events, TokenLost{Age: n.now - n.lastTokenAt})
		n.lost = true
	}
	n.lastTokenAt = n.now // re-arm: act again only after another timeout
	switch n.role {
	case Active:
		if n.claim == nil {
			n.sendClaim()
		}
	case Standby:
		n.sendNodes(Message{Type: MsgJoin})
		if n.eligible() && n.now >= n.blockUntil {
			// Stagger by preference so that nodes restarted together do
			// not split the locators' votes and the most preferred
			// claims first. A claim before a lapsing lease frees would
			// only be refused, and its retry would race the others'
			// first claims landing just as the lease ends: the first
			// claim waits for it, staggered as a retry is.
			stagger := n.claimStagger(l.holder)
			at := n.now + stagger
			if l.at > n.now {
				at = max(at, l.at+n.cfg.TokenInterval/4+stagger)
			}
			n.becomeCandidate(at, CauseTokenLost)
		}
	}
}

// ---- roles ----

func (n *Node) eligible() bool {
	if n.maint {
		return false
	}
	return n.healthy || n.healthyPeer() == ""
}

func (n *Node) peersFresh() bool { return n.now-n.peersAt < n.cfg.TokenTimeout }

// healthyPeer is the most preferred other node (the earliest in Nodes)
// that the token recently showed in the ring, healthy and not in
// maintenance: a handover there is the one a failback would not undo.
func (n *Node) healthyPeer() string {
	if !n.peersFresh() {
		return ""
	}
	for i, p := range n.peers {
		if i != n.idx && p.InRing && p.Healthy && !p.Maintenance {
			return p.ID
		}
	}
	return ""
}

// noteFit updates fit and fitSince from the peers the token just showed
// (before peersAt moves): a gap of a token timeout without any token breaks
// every run, since nothing is known of the peers over it.
func (n *Node) noteFit() {
	if !n.peersFresh() {
		clear(n.fit)
	}
	for i, p := range n.peers {
		switch ok := i != n.idx && p.InRing && p.Healthy && !p.Maintenance; {
		case ok && !n.fit[i]:
			n.fit[i], n.fitSince[i] = true, n.now
		case !ok:
			n.fit[i] = false
		}
	}
}

// failbackTo is the most preferred node (earlier in Nodes than this one)
// fit for Config.Failback without a break while this node was active, ""
// if none, and when the first one still waiting becomes due (0 if none
// waits).
func (n *Node) failbackTo() (to string, due time.Duration) {
	if n.cfg.Failback <= 0 || !n.peersFresh() {
		return "", 0
	}
	for i := 0; i < n.idx; i++ {
		if !n.fit[i] {
			continue
		}
		at := max(n.fitSince[i], n.activeSince) + n.cfg.Failback
		if n.now >= at {
			return n.cfg.Nodes[i], 0
		}
		if due == 0 || at < due {
			due = at
		}
	}
	return "", due
}

func (n *Node) maybeHandover() {
	var reason string
	planned := false
	switch {
	case n.maint:
		reason, planned = "maintenance", true
	case !n.healthy:
		// Unplanned: its applications or link are broken, so it must
		// not keep serving the address while it hands over.
		reason = "unhealthy"
	default:
		// A failback is planned, like a switchover: the more preferred
		// node has shown itself fit for Failback, and this one is fine.
		if to, _ := n.failbackTo(); to != "" {
			n.handover(to, "failback", true)
		}
		return
	}
	if to := n.healthyPeer(); to != "" {
		n.handover(to, reason, planned)
	}
}

// handover drops the role first, then releases the epoch and tells the
// target to claim the next one: the old active holds nothing by the time
// any locator frees its lease.
func (n *Node) handover(to, reason string, planned bool) {
	e := n.epoch
	n.stepDown(fmt.Sprintf("handover to %q: %s", to, reason), to, planned)
	n.sendLocators(Message{Type: MsgRelease, Release: Release{Epoch: e}})
	n.send(to, Message{Type: MsgTransfer, Transfer: Transfer{Epoch: e, To: to}})
	n.blockUntil = n.now + n.cfg.TokenTimeout
	if n.holding {
		n.tok.Active, n.tok.Handover = "", to
		n.passToken()
	}
}

// stepDown leaves the active role; to names the node it was handed to
// ("" if the role was lost), planned that the handover was asked for.
func (n *Node) stepDown(reason, to string, planned bool) {
	if n.role == Active {
		n.events = append(n.events, BecameStandby{Epoch: n.epoch, Reason: reason, To: to, Planned: planned, LeaseUntil: n.leaseUntil})
		n.activeEpoch = n.epoch
	}
	n.role = Standby
	n.leaseUntil = 0
	n.active = ""
	n.bump = false
	clear(n.rounds)
	n.rounds = n.rounds[:0]
	if n.claim != nil {
		n.release(n.claim)
		n.claim = nil
	}
	if n.holding && n.tok.Active == n.self {
		n.tok.Active = ""
	}
}

func (n *Node) becomeCandidate(at time.Duration, cause ClaimCause) {
	if n.role != Standby {
		return
	}
	n.role = Candidate
	n.expectFree = 0
	n.splitRetries = 0
	n.nextClaim = at
	if cause == CauseHandover || cause == CauseCrashRelease {
		// Handed the role, by the Transfer or by the token naming us
		// (whichever came first): refusals for a while mean only that
		// the old active's Release is still on its way (claimFailed).
		n.transferUntil = at + n.cfg.TokenTimeout/2
	}
	n.events = append(n.events, BecameCandidate{Epoch: n.nextEpoch(), Cause: cause})
}

func (n *Node) abandonClaim(reason string) {
	n.reclaim = false
	if n.role != Candidate {
		return
	}
	if n.claim != nil {
		n.release(n.claim)
		n.claim = nil
	}
	n.role = Standby
	n.lastTokenAt = n.now
	n.events = append(n.events, ClaimAbandoned{Reason: reason})
	n.sendNodes(Message{Type: MsgJoin})
}

func (n *Node) nextEpoch() uint64 {
	return max(n.st.MaxEpoch, n.maxSeen, n.epoch) + 1
}

// ---- rounds ----

func (n *Node) newRound(kind roundKind, epoch uint64) *round {
	n.roundSeq++
	r := &round{id: n.st.Incarnation<<32 | n.roundSeq&0xffffffff, kind: kind, epoch: epoch, sentAt: n.now,
		conf: n.st.Conf, next: n.st.Next}
	r.cmask, r.nmem, r.quorum = uint32(r.conf.set(n.nloc)), r.conf.size(n.nloc), n.confQuorum(r.conf)
	if r.next != (Membership{}) {
		r.nmask, r.nquorum = uint32(r.next.set(n.nloc)), n.confQuorum(r.next)
	}
	r.members = r.cmask | r.nmask
	n.queued = append(n.queued, r)
	return r
}

// checkInAll is a token hop's check-in at every locator; for the active it
// is also a lease renewal.
func (n *Node) checkInAll() {
	c := CheckIn{Healthy: n.healthy, Maintenance: n.maint, TokenSeq: n.seenSeq, Epoch: n.epoch, Conf: n.st.Conf, Next: n.st.Next}
	if n.role == Active {
		r := n.newRound(roundRenew, n.epoch)
		n.rounds = append(n.rounds, r)
		c.Round, c.Claim = r.id, true
		r.msg = c
		n.lastRenew = n.now
	}
	n.sendLocators(Message{Type: MsgCheckIn, CheckIn: c})
}

// sendClaim claims a fresh epoch, persisted (Ready.State) before the claim
// is sent, so no restart ever reuses it.
func (n *Node) sendClaim() {
	e := n.nextEpoch()
	n.st.MaxEpoch = e
	n.dirty = true
	r := n.newRound(roundClaim, e)
	n.claim = r
	r.msg = CheckIn{Round: r.id, Claim: true, Epoch: e, Healthy: n.healthy, Maintenance: n.maint, TokenSeq: n.seenSeq, Conf: r.conf, Next: r.next}
	n.sendLocators(Message{Type: MsgCheckIn, CheckIn: r.msg})
}

func (n *Node) startProbe() {
	r := n.newRound(roundProbe, 0)
	n.probe = r
	r.msg = CheckIn{Round: r.id, Epoch: n.epoch, Healthy: n.healthy, Maintenance: n.maint, TokenSeq: n.seenSeq, Conf: r.conf, Next: r.next}
	n.sendLocators(Message{Type: MsgCheckIn, CheckIn: r.msg})
}

// release frees the grants a failed or abandoned claim obtained, so that
// a minority grant never blocks another candidate.
func (n *Node) release(r *round) {
	for li := range n.cfg.Locators {
		if r.granted&(1<<li) != 0 {
			n.send(n.cfg.Locators[li], Message{Type: MsgRelease, Release: Release{Epoch: r.epoch}})
		}
	}
}

func (n *Node) onAck(li int, a Ack) {
	a.Conf = a.Conf.canon(n.nloc)
	n.noteConf(li, a.Conf)
	defer n.learnConf()
	if a.Epoch > n.maxSeen {
		n.maxSeen = a.Epoch
	}
	inConf := n.st.Conf.has(n.nloc, li) && (a.Conf == n.st.Conf || n.st.Next != (Membership{}) && a.Conf == n.st.Next)
	if n.role == Active && !a.Granted && a.Holder != n.self && a.Epoch >= n.epoch && inConf {
		n.bump = true
	}
	var r *round
	switch {
	case n.claim != nil && n.claim.id == a.Round:
		r = n.claim
	case n.probe != nil && n.probe.id == a.Round:
		r = n.probe
	default:
		for _, x := range n.rounds {
			if x.id == a.Round {
				r = x
				break
			}
		}
	}
	if r == nil {
		if a.Granted && a.Holder == n.self && n.role != Active && (n.claim == nil || a.Epoch != n.claim.epoch) {
			// A grant for a claim we already gave up on: free it, or that
			// locator would block every other candidate for a whole lease.
			n.send(n.cfg.Locators[li], Message{Type: MsgRelease, Release: Release{Epoch: a.Epoch}})
		}
		return
	}
	bit := uint32(1) << li
	if r.answered()&bit != 0 || r.members&bit == 0 {
		return // counted already, or not a member of the round's membership
	}
	if a.Stale {
		// This locator (re)started since we last heard from it and did not
		// consider the check-in; now we know its incarnation. Re-sending
		// keeps the round: a lease granted in answer still counts from
		// r.sentAt, before the locator receives the copy.
		n.send(n.cfg.Locators[li], Message{Type: MsgCheckIn, CheckIn: r.msg})
		return
	}
	validOther := a.Holder != "" && a.Holder != n.self && a.GrantIn > 0
	if r.kind == roundProbe {
		if r.cmask&bit == 0 {
			return // a probe counts in its membership only
		}
		r.granted |= bit
		switch {
		case validOther:
			r.frees = append(r.frees, lapse{at: n.now + a.GrantIn, holder: a.Holder})
		case a.Holder != "" && a.Holder != n.self:
			// Run out: free now, and still whose lease it was, so that
			// the claim stagger does not wait for that node (found by
			// the simulator: the most preferred survivor, seeing the
			// dead active's lease run out, stood back half an interval
			// for it and a less preferred one claimed first).
			r.frees = append(r.frees, lapse{at: n.now, holder: a.Holder, lapsed: true})
		default:
			r.frees = append(r.frees, lapse{at: n.now})
		}
		// Count a holder as alive only if this locator saw it renew within
		// the last few token intervals: an active renews every interval,
		// a dead one leaves a lease that merely has not run out yet.
		if a.Holder != "" && a.GrantIn > n.renewingGrantIn() {
			n.addHolder(r, a, bit)
		}
		if n.probeDecided(r) {
			n.probeDone(r)
		}
		return
	}
	if a.Granted && a.Holder == n.self && (a.Epoch == r.epoch || r.kind == roundRenew && a.Epoch > r.epoch) &&
		(a.Conf == r.conf || r.next != (Membership{}) && a.Conf == r.next || n.cfg.Planted.Has(plant.AnyConf)) {
		r.granted |= bit
		if r.next != (Membership{}) && a.Conf == r.next {
			r.grantedNext |= bit
		}
		r.grantIn = append(r.grantIn, 0)
	} else {
		r.refused |= bit
		r.grantIn = append(r.grantIn, a.GrantIn)
		if validOther || a.Epoch >= r.epoch {
			n.addHolder(r, a, bit)
		}
	}
	switch {
	case r.won():
		if r.kind == roundClaim {
			n.claimWon(r)
		} else {
			n.renewed(r)
		}
	case r.lost():
		if r.kind == roundClaim {
			n.claimFailed(r)
		} else if h, ok := n.quorumHolder(r); ok && h != n.self {
			n.stepDown(fmt.Sprintf("locators granted %q", h), "", false)
		}
	}
}

func (n *Node) addHolder(r *round, a Ack, bit uint32) {
	if a.Holder == "" {
		// No holder: a locator that lost its state, whose epoch is the
		// highest the nodes named (Locator.lost), not a grant.
		return
	}
	if r.holders == nil {
		r.holders = map[string]uint32{}
		r.epochs = map[string]uint64{}
	}
	r.holders[a.Holder] |= bit
	r.epochs[a.Holder] = max(r.epochs[a.Holder], a.Epoch)
}

// quorumHolder is a holder that a quorum of answers named, or enough of
// them that no other node can gather a quorum while they do: with an odd
// number of members the same, with an even one fewer (2 of 4). A claim
// fails as soon as that many refused it, so with four locators a
// candidate refused by two naming the live active never saw a quorum
// name it, and stayed a candidate, out of the ring, for as long as that
// active lived (found by the namespace test of last_man_standing on four
// nodes; the simulator's shapes had three or five locators).
func (n *Node) quorumHolder(r *round) (string, bool) {
	need := r.holderQuorum()
	for h, set := range r.holders {
		if bits.OnesCount32(set) >= need {
			return h, true
		}
	}
	return "", false
}

func (n *Node) renewed(r *round) {
	if n.role != Active {
		return
	}
	if u := n.leaseStart(r) + n.cfg.Lease; u > n.leaseUntil {
		n.leaseUntil = u
		n.events = append(n.events, LeaseExtended{Until: u})
	}
	n.removeRound(r)
}

// leaseStart is when a lease granted in answer to r starts on our clock:
// when we sent r, which is before any locator received it.
func (n *Node) leaseStart(r *round) time.Duration {
	return r.sentAt
}

func (n *Node) removeRound(r *round) {
	n.rounds = slices.DeleteFunc(n.rounds, func(x *round) bool { return x == r })
}

// claimWon: a quorum granted epoch r.epoch to this node. The lease counts
// from when the claim was sent, before any locator received it.
func (n *Node) claimWon(r *round) {
	n.claim = nil
	n.claimMisses = 0
	n.splitRetries = 0
	n.reclaim = false
	lease := n.leaseStart(r) + n.cfg.Lease
	if lease <= n.now {
		n.nextClaim = n.now
		return // too late to be of use; claim again
	}
	switch n.role {
	case Candidate:
		if n.maxSeen > r.epoch {
			// A locator named a newer epoch while this claim was out:
			// its quorum may be one whose intersection with that
			// epoch's lost its state (docs/protocol.md, lost state),
			// and the epoch one another node held. Free it and claim
			// above (found by the simulator, seed 21319 of -lms).
			n.release(r)
			n.nextClaim = n.now
			return
		}
		n.role = Active
		n.activeSince = n.now
		n.epoch, n.active = r.epoch, n.self
		n.leaseUntil, n.lastRenew, n.bump = lease, r.sentAt, false
		n.events = append(n.events, BecameActive{Epoch: r.epoch, LeaseUntil: lease})
		n.newToken()
	case Active:
		n.epoch, n.bump = r.epoch, false
		if lease > n.leaseUntil && !n.cfg.Planted.Has(plant.RenewOnlyWithToken) {
			n.leaseUntil = lease
			n.events = append(n.events, LeaseExtended{Until: lease})
		}
		n.events = append(n.events, TokenRegenerated{Epoch: r.epoch})
		n.newToken()
	default:
		n.release(r)
	}
}

func (n *Node) claimFailed(r *round) {
	n.claim = nil
	n.reclaim = false
	if n.role == Active {
		// Never release while active: a locator's lease record is per
		// holder, and it protects the lease we still hold.
		if h, ok := n.quorumHolder(r); ok && h != n.self {
			n.stepDown(fmt.Sprintf("locators granted %q", h), "", false)
		}
		return // the next token timeout or bump retries
	}
	n.release(r)
	if n.role != Candidate {
		return
	}
	var backoff time.Duration
	if bits.OnesCount32(r.answered()) < r.quorum {
		// No quorum answered: the locators are out of reach, and another
		// claim at once would only burn (and fsync) one more epoch.
		n.claimMisses++
		backoff = n.claimBackoff()
	} else {
		n.claimMisses = 0
	}
	// When could a quorum grant us? The quorum-th smallest wait reported.
	w := slices.Clone(r.grantIn)
	slices.Sort(w)
	wait := n.cfg.TokenInterval
	if len(w) >= r.quorum {
		wait = w[r.quorum-1]
	} else if len(w) > 0 {
		wait = w[len(w)-1]
	}
	if r.sentAt < n.transferUntil {
		// Handed the role: the old active's Release may simply not have
		// reached every locator before our claim did. Counted from when
		// the claim was sent: one whose last answer was lost fails only
		// at the round timeout, after the window.
		n.nextClaim = n.now + n.cfg.TokenInterval/4 + backoff
		return
	}
	if n.splitRetry(r) {
		n.splitRetries++
		n.nextClaim = n.now + n.cfg.TokenInterval/2
		return
	}
	free := n.now + wait + backoff
	if h, ok := n.quorumHolder(r); ok && h != n.self {
		if n.expectFree > 0 && free > n.expectFree+n.cfg.TokenInterval {
			// We waited for that holder's lease once and it was renewed
			// since: it is alive. Stand by.
			n.active = h
			n.epoch = max(n.epoch, r.epochs[h])
			if n.holding && n.tok.Epoch < n.epoch {
				n.holding = false // a stale token; the active has its own
			} else if n.holding {
				n.tok.Active = h
			}
			n.abandonClaim(fmt.Sprintf("active %q alive", h))
			// h may be a rival candidate whose claim then failed, not an
			// active: re-check after half a lease instead of a full token
			// timeout (an active h would have sent us its token by then).
			n.lastTokenAt = n.now - n.cfg.TokenTimeout + n.cfg.Lease/2
			return
		}
		n.expectFree = free
	}
	h, _ := n.quorumHolder(r)
	n.nextClaim = free + n.cfg.TokenInterval/4 + n.claimStagger(h)
}

// claimStagger is how much later than the most preferred candidate this
// one claims: half a token interval for each node earlier in the
// preference order (Nodes) that could claim too. Not counted: skip (the
// holder whose lease is being waited out) and, once a token was seen, the
// nodes it last showed out of the ring, unhealthy or in maintenance. So
// the most preferred survivor claims first and alone, and candidates
// claiming from the same lapse do not split the locators' votes. Half an
// interval is well over the spread of their views of when it lapses (a
// message delay and the clocks' drift).
func (n *Node) claimStagger(skip string) time.Duration {
	rank := 0
	for i := range n.idx {
		p := n.peers[i]
		if p.ID == skip || n.seenEpoch > 0 && (!p.InRing || !p.Healthy || p.Maintenance) {
			continue
		}
		rank++
	}
	return time.Duration(rank) * n.cfg.TokenInterval / 2
}

// maxSplitRetries bounds the quick retries of splitRetry in one candidacy:
// past it, a candidate waits out the grants as any other.
const maxSplitRetries = 3

// splitRetry: claim r failed in a split vote that this node should win.
// A quorum answered, no holder got a quorum, and every holder the
// refusals named is a rival candidate: a grant newer than the lease this
// node knew of, to a node later in the preference order (Nodes). The rival
// releases its grants as its own claim fails, as this node did, so a
// claim half a token interval later finds its locators free; a rival
// earlier in the order is left to do just that, and this node waits out
// the grants as before. Without it both waited out the grants and
// claimed again together, and each host's locator, hearing its own
// node's claim first, split the votes again: after the death of a host
// in a cluster of three nodes, up to 310 ms instead of 90 ms in the
// simulator, and the role could go to either survivor.
func (n *Node) splitRetry(r *round) bool {
	if n.splitRetries >= maxSplitRetries || bits.OnesCount32(r.answered()) < r.quorum {
		return false
	}
	if _, ok := n.quorumHolder(r); ok {
		return false
	}
	rivals := false
	for h := range r.holders {
		if h == n.self {
			continue
		}
		if r.epochs[h] <= n.epoch || indexOf(n.cfg.Nodes, h) < n.idx {
			return false // a lease we knew of, or a more preferred rival
		}
		rivals = true
	}
	return rivals
}

// MaxClaimBackoff is the longest a candidate waits, on top of the usual
// retry, before claiming again after claims no quorum answered: four leases
// plus up to a quarter of jitter. Config.RecoveryBound includes it.
func (c Config) MaxClaimBackoff() time.Duration {
	c = c.withDefaults()
	return 5 * c.Lease
}

// claimBackoff is the extra wait after the claimMisses-th consecutive claim
// without a quorum of answers: a quarter lease, doubling each time, capped
// at four leases, plus up to a quarter of that as jitter so that candidates
// cut off together do not claim in step when the network comes back. The
// jitter is a hash of who and which attempt, not a random source: the core
// stays deterministic (the simulator replays seeds).
func (n *Node) claimBackoff() time.Duration {
	if n.claimMisses <= 0 {
		return 0
	}
	b := n.cfg.Lease / 4
	for i := 1; i < n.claimMisses && b < 4*n.cfg.Lease; i++ {
		b *= 2
	}
	b = min(b, 4*n.cfg.Lease)
	h := uint64(14695981039346656037) // FNV-1a
	for _, c := range []byte(n.self) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	for _, v := range []uint64{n.st.Incarnation, uint64(n.claimMisses), n.roundSeq} {
		h = (h ^ v) * 1099511628211
	}
	return b + time.Duration(h%uint64(b/4+1))
}

func (n *Node) probeDecided(r *round) bool {
	if _, ok := n.quorumHolder(r); ok {
		return true
	}
	best := 0
	for _, set := range r.holders {
		best = max(best, bits.OnesCount32(set))
	}
	// answers that cannot belong to a quorum for any holder
	return bits.OnesCount32(r.granted)-best > r.nmem-r.quorum || bits.OnesCount32(r.granted) == r.nmem
}

// probeDone acts on the locators' answer to "who is active?".
func (n *Node) probeDone(r *round) {
	n.probe = nil
	n.needProbe = false
	h, ok := n.quorumHolder(r)
	if ok && h != n.self {
		n.reclaim = false // someone else holds it now
		if e := r.epochs[h]; e > n.epoch {
			n.epoch = e
		}
		n.active = h
		if n.holding && n.tok.Epoch < n.epoch {
			n.holding = false // an old token from before our stall
		}
		if n.role == Standby && !n.holding && n.now-n.lastTokenAt >= n.cfg.TokenTimeout {
			// The active is alive; we are out of its ring. Rejoin, and
			// check again when its last renewals would no longer count
			// were it dead, if that comes before another token timeout:
			// the node after the active in the ring often times out
			// just after the active died holding the token, while its
			// last renewal still looked recent.
			n.lastTokenAt = n.now
			if d := n.renewalsStale(r, h); d < n.cfg.TokenTimeout {
				n.lastTokenAt = n.now - n.cfg.TokenTimeout + d
			}
			n.sendNodes(Message{Type: MsgJoin})
		}
		return
	}
	if n.reclaim && n.role == Standby {
		// No other holder: claim the role back now, before the others
		// (resuming too) claim it from a token naming no active.
		if n.eligible() && n.now >= n.blockUntil {
			n.becomeCandidate(n.now, CauseLeaseLost)
			return
		}
		n.reclaim = false
	}
	if n.role == Standby && !n.holding && n.now-n.lastTokenAt >= n.cfg.TokenTimeout {
		// The lease a quorum still protects, if any: its holder was not
		// seen renewing lately (or the probe would have named it), so it
		// lapses when the quorum-th answer says.
		var l lapse
		slices.SortFunc(r.frees, func(x, y lapse) int { return cmp.Compare(x.at, y.at) })
		switch {
		case len(r.frees) >= r.quorum:
			l = r.frees[r.quorum-1]
		case len(r.frees) > r.nmem-r.quorum:
			// An even membership decides with fewer answers than a
			// quorum (probeDecided: 2 of 4): wait for the latest of
			// them, or the first claim goes out before the lease has
			// lapsed, is refused, and a less preferred node's first
			// claim lands before its retry (a third of the kills of
			// four locators went to another than the most preferred
			// survivor). With an odd one this is the quorum's.
			l = r.frees[len(r.frees)-1]
		}
		n.declareLost(l)
	}
}

// renewingGrantIn is the least grant-in with which a probe's answer counts
// its holder as renewing: one the locator saw renew within the last three
// token intervals.
func (n *Node) renewingGrantIn() time.Duration {
	return n.cfg.Lease + n.cfg.DriftMargin - 3*n.cfg.TokenInterval
}

// renewalsStale is how long after now the probe r would no longer count h
// as renewing (probeDone) if h renewed no more: when fewer of its answers
// than counted it alive still show a renewal within the last few token
// intervals. At least a token interval.
func (n *Node) renewalsStale(r *round, h string) time.Duration {
	var stale []time.Duration
	for _, l := range r.frees {
		if l.holder == h && !l.lapsed {
			stale = append(stale, l.at-n.renewingGrantIn())
		}
	}
	// As many as counted h alive (quorumHolder): with an even
	// membership two of four, so a probe decided on two answers is not
	// left waiting a token timeout for a third (found by the simulator:
	// the most preferred survivor of four re-checked only after the
	// others had claimed).
	need := r.holderQuorum()
	if len(stale) < need {
		return n.cfg.TokenTimeout
	}
	slices.Sort(stale)
	return max(n.cfg.TokenInterval, stale[len(stale)-need]-n.now+n.cfg.TokenInterval/4)
}

// ---- sending ----

// send stamps m for one destination process: its own sequence there (so a
// receiver's window sees every datagram meant for it, and only those) and
// its incarnation as last heard (0 until we hear from it).
func (n *Node) send(to string, m Message) {
	seqs, incs, i := n.nodeSeq, n.nodeInc, indexOf(n.cfg.Nodes, to)
	if m.Type.ForLocator() {
		seqs, incs, i = n.locSeq, n.locInc, indexOf(n.cfg.Locators, to)
	}
	if i < 0 {
		return // not a peer: nothing can be addressed to it
	}
	seqs[i]++
	m.From, m.ClusterID, m.Epoch, m.Incarnation, m.Seq = n.self, n.clusterID, n.epoch, n.st.Incarnation, seqs[i]
	m.To, m.ToIncarnation = to, incs[i]
	n.msgs = append(n.msgs, Envelope{To: to, Msg: m})
}

func (n *Node) sendLocators(m Message) {
	for _, id := range n.cfg.Locators {
		n.send(id, m)
	}
}

func (n *Node) sendNodes(m Message) {
	for _, id := range n.cfg.Nodes {
		if id != n.self {
			n.send(id, m)
		}
	}
}

// ---- membership (Config.LastManStanding) ----

// confQuorum is the grants a membership needs: the configured quorum for
// the configured membership (two_node's 1 of 2 included), a strict
// majority of its members otherwise.
func (n *Node) confQuorum(c Membership) int {
	if c == (Membership{}) {
		return n.quorum
	}
	return c.quorum(n.nloc)
}

// noteConf records locator li's answer and the membership it reported:
// when it answered, since when without a gap of a token timeout, and when
// last in this node's membership or the change under way.
func (n *Node) noteConf(li int, c Membership) {
	la := &n.locAck[li]
	if !la.Seen || n.now-la.LastAck >= n.cfg.TokenTimeout {
		n.locSince[li] = n.now
	}
	la.Seen, la.LastAck, la.Conf = true, n.now, c
	if c == n.st.Conf || n.st.Next != (Membership{}) && c == n.st.Next {
		n.locCurAt[li] = n.now
	}
}

// answering: locator i answered within a token timeout.
func (n *Node) answering(i int) bool {
	return n.locAck[i].Seen && n.now-n.locAck[i].LastAck < n.cfg.TokenTimeout
}

// confSupport is how many members of c that answer report c, or a change
// of it one member away (a change under way), or nothing (a lost state:
// it holds no membership back, as in learnConf's commit). Counted against
// them, an unknown member of a membership of two left every node unable
// to learn it, so they never agreed on one and the unknown locator never
// learnt it either (rule 6): no active although every host was back
// (found by the simulator, seed 17154 of -lms, once it ticked nodes at
// their deadlines: the active removed a member a millisecond after the
// other member's locator lost its state).
func (n *Node) confSupport(c Membership) int {
	k := 0
	for i := range n.nloc {
		if !c.has(n.nloc, i) || !n.answering(i) {
			continue
		}
		if r := n.locAck[i].Conf; r == c || r.Unknown || r.childOf(c, n.nloc) {
			k++
		}
	}
	return k
}

// learnConf moves this node's membership on from what the locators last
// reported: to the newest membership a majority of whose members report it
// (or a change of it under way), never to an older one unless its own has
// lost that majority; then to the change under way as Next, which its
// claims and renewals carry so that the locators still at the old
// membership adopt it (a new holder finishes what a previous one began);
// and, once every member of Next reports it (or counts in none after a
// lost state), to Next. None of this is needed for safety
// (the locators grant only in the membership they adopted, and a node
// counts a majority of the one it claims in); it is how a node that was
// away, or restarted, finds the membership the cluster uses.
func (n *Node) learnConf() {
	nl := n.nloc
	cur := n.st.Conf
	best, found := cur, n.confSupport(cur) >= n.confQuorum(cur)
	for i := range nl {
		x := n.locAck[i].Conf
		if !n.answering(i) || x.Unknown || x == best || x == cur {
			continue
		}
		if n.confSupport(x) >= n.confQuorum(x) && (!found || x.Version > best.Version) {
			best, found = x, true
		}
	}
	old := n.st
	// Never the active's own change, nor for the active at all: it
	// proposed what it counts in, and its change completes only when
	// every member adopted it (below); jumping to it as soon as a
	// majority reports it would leave a member that missed it behind
	// for good (found by the simulator: that member, and then a lost
	// state, left no quorum).
	if found && best != cur && best != n.st.Next && n.role != Active &&
		(best.Version > cur.Version || n.confSupport(cur) < n.confQuorum(cur)) {
		// A member still at the membership best changed is a change
		// under way: carry it as Next from there (and count in the old
		// one, whose locators grant it too) until every member adopted
		// it, or that member would never learn it.
		n.st.Conf, n.st.Next = best, Membership{}
		for i := range nl {
			if p := n.locAck[i].Conf; best.has(nl, i) && n.answering(i) && best.childOf(p, nl) {
				n.st.Conf, n.st.Next = p, best
				break
			}
		}
	}
	conf := n.st.Conf
	if next := n.st.Next; next != (Membership{}) {
		all, at := true, 0
		for i := range nl {
			switch c := n.locAck[i].Conf; {
			case !next.has(nl, i):
			case c == next:
				at++
			case !c.Unknown:
				// An unknown locator (lost state) grants in no
				// membership, and learns only a newer one: it
				// cannot be left behind at the old one.
				all = false
			}
		}
		if n.cfg.Planted.Has(plant.EarlyCommit) {
			all = at >= n.confQuorum(next)
		}
		switch {
		case !next.childOf(conf, nl):
			n.st.Next = Membership{}
		case all:
			// Every member adopted it: only locators outside it are
			// left at older memberships, too few for a majority of
			// any of them (docs/protocol.md), so the next change may
			// follow.
			n.st.Conf, n.st.Next = next, Membership{}
		}
	}
	if n.st.Next == (Membership{}) {
		// A change some members adopted (the previous holder's, or
		// one this node missed): carry it, so that it completes.
		var child Membership
		best := 0
		for i := range nl {
			c := n.locAck[i].Conf
			if !n.st.Conf.has(nl, i) || !n.answering(i) || !c.childOf(n.st.Conf, nl) {
				continue
			}
			k := 0
			for j := range nl {
				if n.answering(j) && n.locAck[j].Conf == c {
					k++
				}
			}
			if k > best {
				child, best = c, k
			}
		}
		n.st.Next = child
	}
	if n.st.Conf != old.Conf || n.st.Next != old.Next {
		n.confChanged(old.Conf, old.Next, "learnt from the locators")
	}
}

// confChanged records a change of the membership or of the change under
// way: persisted (State) before anything counted in it is sent.
func (n *Node) confChanged(oldConf, oldNext Membership, why string) {
	n.dirty = true
	if n.st.Conf != oldConf {
		n.confAt = n.now
		for i := range n.nloc {
			if n.locAck[i].Conf == n.st.Conf {
				n.locCurAt[i] = n.now
			}
		}
	}
	n.events = append(n.events, MembershipChanged{Conf: n.st.Conf, Next: n.st.Next,
		Desc: fmt.Sprintf("%s (was %s): %s", n.fmtConf(), n.fmtConfOf(oldConf, oldNext), why)})
}

func (n *Node) fmtConf() string { return n.fmtConfOf(n.st.Conf, n.st.Next) }

func (n *Node) fmtConfOf(c, next Membership) string {
	s := c.Format(n.cfg.Locators)
	if next != (Membership{}) {
		s += " -> " + next.Format(n.cfg.Locators)
	}
	return s
}

// reconfigure: the active proposes the next membership, one locator more
// or less, when no change is under way. Under Config.LastManStanding it
// removes a member that has not answered in the membership for the window
// while every other member does, down to two members (two need both, as
// three with one gone do: no loss, and it lets a returning locator be
// added back to the two). It adds back a configured locator that is not a
// member once it has answered for the window (LastManStanding, or
// MinLastManStanding when the option is off: the membership grows back to
// every locator after the option is turned off) while every member
// answers in the membership. The change is on disk (State) before the
// renewals carrying it go out, and it is complete only when every member
// of the new membership has adopted it (learnConf).
func (n *Node) reconfigure() {
	next, why, due := n.nextConf()
	if next == (Membership{}) || due > n.now {
		return
	}
	old := n.st.Next
	n.st.Next = next.canon(n.nloc)
	n.confChanged(n.st.Conf, old, "proposed: "+why)
}

// nextConf is the change reconfigure would propose and when it is due
// (its window ends); the zero Membership if none is in view.
func (n *Node) nextConf() (next Membership, why string, due time.Duration) {
	if n.role != Active || n.now >= n.leaseUntil || n.st.Next != (Membership{}) {
		return Membership{}, "", 0
	}
	nl := n.nloc
	conf := n.st.Conf
	current := func(i int) bool { return n.answering(i) && n.locAck[i].Conf == conf }
	missing, nmiss := -1, 0
	for i := range nl {
		if conf.has(nl, i) && !current(i) {
			missing, nmiss = i, nmiss+1
		}
	}
	set := conf.set(nl)
	switch win := n.cfg.LastManStanding; {
	case nmiss == 1 && win > 0 && conf.size(nl) >= 3:
		since := max(n.locCurAt[missing], n.activeSince, n.confAt)
		return Membership{Version: conf.Version + 1, Members: set &^ (1 << missing)},
			fmt.Sprintf("locator %s not answering in the membership for %v while every other member does", n.cfg.Locators[missing], n.now-since),
			since + win
	case nmiss == 0:
		grow := win
		if grow == 0 {
			grow = MinLastManStanding(n.cfg)
		}
		first := -1
		for i := range nl {
			if conf.has(nl, i) || !n.answering(i) {
				continue
			}
			if first < 0 || max(n.locSince[i], n.activeSince) < max(n.locSince[first], n.activeSince) {
				first = i
			}
		}
		if first >= 0 {
			since := max(n.locSince[first], n.activeSince)
			return Membership{Version: conf.Version + 1, Members: set | 1<<first},
				fmt.Sprintf("locator %s answering again for %v", n.cfg.Locators[first], n.now-since),
				since + grow
		}
	}
	return Membership{}, "", 0
}
