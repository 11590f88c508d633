package nodemanager

import (
	"log/slog"
	"math"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
)

// Reasons of the event=failover line: why this node claimed the role. The
// protocol names the cause of every candidacy (protocol.ClaimCause).
const (
	// reasonTokenLost: the token stopped and the locators confirmed that no
	// active renews its lease (the active died, stalled or was cut off).
	reasonTokenLost = "token_lost"
	// reasonSwitchover: the active handed the role to this node (vigil
	// switchover, maintenance on the active, or the active unhealthy).
	reasonSwitchover = "switchover"
	// reasonNoActive: the token said no node is active (the active gave
	// the role up without handing it over, e.g. it lost its locators).
	reasonNoActive = "no_active"
	// reasonLeaseLost: this node was the active, lost the role without
	// handing it over (its lease ran out: renewals not answered in time,
	// or its own timers late under load) and took it again; from names
	// itself. In a one-node cluster, the only way the role is re-taken.
	reasonLeaseLost = "lease_lost"
	// reasonCrashRelease: the active's node manager died and its
	// supervisor released the role to this node after removing the
	// floating IPs (docs/protocol.md, "Crash release"): no handover gap.
	reasonCrashRelease = "crash_release"
	// reasonUnknown: a BecameActive without a candidacy; the protocol
	// never does that.
	reasonUnknown = "unknown"
)

// claimReason is the failover reason of a protocol cause.
func claimReason(c protocol.ClaimCause) string {
	switch c {
	case protocol.CauseTokenLost:
		return reasonTokenLost
	case protocol.CauseHandover:
		return reasonSwitchover
	case protocol.CauseNoActive:
		return reasonNoActive
	case protocol.CauseLeaseLost:
		return reasonLeaseLost
	case protocol.CauseCrashRelease:
		return reasonCrashRelease
	}
	return reasonUnknown
}

// failoverTracker derives the event=failover line of a node that becomes
// active: from whom, why, and how long from the decision to the floating
// IPs announced. It reads only the node manager's inputs and the protocol's
// events and status, so the IO-free core stays as it is.
type failoverTracker struct {
	self string
	// lastActive is the last node this node knew to be active (itself
	// included), "" if it never knew one since it started.
	lastActive string
	// inputAt is when that input arrived: a claim is decided by the
	// locators' grant, at the moment its datagram was received.
	inputAt time.Duration
	// pending is the candidacy in progress: who was active and why this
	// node claimed, both as of when it started claiming (a handover clears
	// the protocol's idea of the active before the claim starts).
	pending *candidacy
}

type candidacy struct{ from, reason string }

// input notes a datagram about to be stepped into the protocol.
func (f *failoverTracker) input(in transport.Inbound) { f.inputAt = in.At }

// local notes an input that is not a datagram.
func (f *failoverTracker) local(now time.Duration) { f.inputAt = now }

// observe records the active as the protocol knows it after an input.
func (f *failoverTracker) observe(active string) {
	if active != "" {
		f.lastActive = active
	}
}

// becameCandidate starts a candidacy for the protocol's cause.
func (f *failoverTracker) becameCandidate(cause protocol.ClaimCause) {
	f.pending = &candidacy{from: f.lastActive, reason: claimReason(cause)}
}

// decidedAt is when the input that made this node active arrived.
func (f *failoverTracker) decidedAt(now time.Duration) time.Duration {
	if f.inputAt <= 0 || f.inputAt > now {
		return now
	}
	return f.inputAt
}

// becameActive logs the one event=failover line of this transition. took
// is from the decision to every floating IP added and first announced
// (t.AnnouncedMS), or to the claim's end when there is none to announce.
func (f *failoverTracker) becameActive(log *slog.Logger, epoch uint64, t *ctlmsg.Takeover, elapsed time.Duration) {
	c := f.pending
	f.pending = nil
	if c == nil {
		c = &candidacy{from: f.lastActive, reason: reasonUnknown}
	}
	from := c.from
	if from == "" {
		from = "none"
	}
	took := float64(elapsed) / 1e6
	if t != nil && t.AnnouncedMS > 0 {
		took = t.AnnouncedMS
	}
	log.Info("active role taken over", "event", "failover", "from", from, "to", f.self, "epoch", epoch,
		"reason", c.reason, "took_ms", math.Round(took*100)/100)
	f.lastActive = f.self
}
