package protocol

import (
	"fmt"
	"time"
)

// Role is a node's part in the cluster.
type Role uint8

const (
	// Standby: not active; follows the token and is ready to take over.
	Standby Role = iota
	// Candidate: claiming the active role from the locators; holds nothing.
	Candidate
	// Active: holds a lease granted by a quorum of locators. The floating
	// IPs may be held only while Node.ActiveAt(now) is true.
	Active
)

func (r Role) String() string {
	switch r {
	case Standby:
		return "standby"
	case Candidate:
		return "candidate"
	case Active:
		return "active"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Event is something the node manager acts on or logs: one of
// BecameActive, BecameStandby, BecameCandidate, ClaimAbandoned,
// LeaseExtended, TokenLost, TokenRegenerated, SwitchoverRefused,
// MembershipChanged.
type Event interface{ String() string }

// BecameActive: add the floating IPs (valid lifetime up to LeaseUntil),
// announce them, run on_active hooks. LeaseUntil is on the node's clock.
type BecameActive struct {
	Epoch      uint64
	LeaseUntil time.Duration
}

// BecameStandby: remove the floating IPs (the lease may be already over),
// run on_standby hooks. Emitted only by a node that was Active.
// To is the node it gave the role to (switchover, maintenance, stop,
// unhealthy: Handover() is true); "" when it lost the role (its lease ran
// out, or another node holds a newer epoch), which is a fault.
//
// Planned marks a handover that was asked for (switchover, maintenance,
// an orderly stop) rather than forced by ill health. Only then may the
// caller keep the floating IPs, silent, until To has announced them, and
// never past LeaseUntil, the end of the lease it held (docs/protocol.md;
// the node manager's drain, nodemanager/drain.go); otherwise it removes
// them now.
type BecameStandby struct {
	Epoch      uint64
	Reason     string
	To         string
	Planned    bool
	LeaseUntil time.Duration
}

// Handover says the role was given to another node, not lost.
func (e BecameStandby) Handover() bool { return e.To != "" }

// BecameCandidate: the node started claiming the active role, and why.
type BecameCandidate struct {
	Epoch uint64
	Cause ClaimCause
}

// ClaimCause is why a node started claiming the active role. Every path
// into Candidate names one, so that a takeover is always explained.
type ClaimCause uint8

const (
	// CauseTokenLost: the token stopped and no quorum of locators holds a
	// live lease for an active (the active died, stalled or was cut off).
	CauseTokenLost ClaimCause = iota + 1
	// CauseHandover: the active handed the role to this node.
	CauseHandover
	// CauseNoActive: the token names no active: another node gave the
	// role up without handing it over.
	CauseNoActive
	// CauseLeaseLost: this node was the active of the token's epoch and
	// lost the role without handing it over (its lease ran out: renewals
	// unanswered in time, or its own timers late), and claims it again. In
	// a one-node cluster this is the only way the role is ever re-taken.
	CauseLeaseLost
	// CauseCrashRelease: the active's node manager died and its host's
	// supervisor, having removed the floating IPs, handed the role to this
	// node in the dead node manager's name (CrashRelease). Told apart from
	// a planned handover by the sender's incarnation: the transfer comes
	// from a newer incarnation of the active than the one this node knew.
	// Nothing of the old host serves any more, so there is nothing to
	// leave a gap for.
	CauseCrashRelease
)

func (c ClaimCause) String() string {
	switch c {
	case CauseTokenLost:
		return "token_lost"
	case CauseHandover:
		return "handover"
	case CauseNoActive:
		return "no_active"
	case CauseLeaseLost:
		return "lease_lost"
	case CauseCrashRelease:
		return "crash_release"
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// ClaimAbandoned: a candidate went back to standby without the role (an
// active is alive, maintenance, or it became ineligible).
type ClaimAbandoned struct{ Reason string }

// LeaseExtended: the active's lease now ends at Until (node clock); extend
// the floating IPs' lifetime and the timer that removes them.
type LeaseExtended struct{ Until time.Duration }

// TokenLost: the token was not seen for Age ≥ TokenTimeout and the
// locators confirmed no live active (or this node is the active).
type TokenLost struct{ Age time.Duration }

// TokenRegenerated: the active created a new token in a new Epoch after a
// quorum of locators accepted it.
type TokenRegenerated struct{ Epoch uint64 }

func (e BecameActive) String() string {
	return fmt.Sprintf("BecameActive epoch=%d lease_until=%v", e.Epoch, e.LeaseUntil)
}
func (e BecameStandby) String() string {
	return fmt.Sprintf("BecameStandby epoch=%d reason=%q", e.Epoch, e.Reason)
}
func (e BecameCandidate) String() string {
	return fmt.Sprintf("BecameCandidate epoch=%d cause=%s", e.Epoch, e.Cause)
}
func (e ClaimAbandoned) String() string   { return fmt.Sprintf("ClaimAbandoned reason=%q", e.Reason) }
func (e LeaseExtended) String() string    { return fmt.Sprintf("LeaseExtended until=%v", e.Until) }
func (e TokenLost) String() string        { return fmt.Sprintf("TokenLost age=%v", e.Age) }
func (e TokenRegenerated) String() string { return fmt.Sprintf("TokenRegenerated epoch=%d", e.Epoch) }

// MembershipChanged: the membership this node counts its quorum in
// (Conf), or the change of it under way (Next, zero: none), changed:
// proposed by this active, or learnt from the locators' answers
// (Config.LastManStanding). Desc says what and why, with the locators'
// names, for the log.
type MembershipChanged struct {
	Conf, Next Membership
	Desc       string
}

func (e MembershipChanged) String() string { return "MembershipChanged " + e.Desc }

// SwitchoverRefused: the active did not carry out a switchover request
// forwarded by From (To: the node it named, "" for any): it was made in
// another term or too long ago (lost, then replayed), or the target is
// unfit. The requester only sees the role stay; Reason is for the log.
type SwitchoverRefused struct{ From, To, Reason string }

func (e SwitchoverRefused) String() string {
	return fmt.Sprintf("SwitchoverRefused from=%s to=%q reason=%q", e.From, e.To, e.Reason)
}

// Ready is what a Node asks its caller to do, in this order:
//  1. if State is non-nil, persist it (write + fsync) — messages below may
//     carry an epoch that must never be reused after a crash — and on
//     success call Node.Persisted(*State);
//  2. act on Events (floating IPs, hooks, metrics), whether or not the
//     write succeeded: they are local, and dropping the role must never
//     wait for a disk;
//  3. only if State was nil or written: encode and send Messages, each to
//     the host in Envelope.To. After a failed write drop them all (to the
//     protocol, lost datagrams); State stays in every Ready until a write
//     succeeds, so the next Ready retries it.
type Ready struct {
	State    *NodeState
	Messages []Envelope
	Events   []Event
}
