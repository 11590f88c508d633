package protocol

import (
	"errors"
	"fmt"
	"time"

	"github.com/vigil-project/vigil/protocol/internal/plant"
)

// Protocol timing defaults (SPEC.md "timing"). They are chosen so that a
// dead active host or link costs callers under 100 ms (≈ L + D), which a
// control plane in its reserved cgroup with SCHED_RR keeps under load:
// see docs/protocol.md ("Defaults and why") for the formulas.
const (
	DefaultTokenInterval = 10 * time.Millisecond
	DefaultTokenTimeout  = 50 * time.Millisecond
	DefaultLease         = 60 * time.Millisecond
	DefaultDriftMargin   = 15 * time.Millisecond
)

// Limits of the wire format.
const (
	MaxIDLen = 64 // bytes in a node, locator or cluster id
	MaxPeers = 8  // nodes, and separately locators, in one cluster (keeps a token in one datagram)
	KeySize  = 32 // cluster key, bytes
)

// MinTokenInterval is the shortest token_interval Validate accepts. The node
// manager ticks every token_interval/4 (a zero tick period panics) and
// Linux timers are not much finer than a millisecond anyway.
const MinTokenInterval = time.Millisecond

// Config is what both the Node and the Locator need to know about the
// cluster. All hosts of a cluster must use the same Nodes, Locators and
// timings; Self differs per host.
type Config struct {
	// Cluster is the cluster name; its hash is carried in every datagram so
	// that two clusters sharing a key and a network never mix.
	Cluster string
	// Self is this host's id. For NewNode it must be in Nodes; for
	// NewLocator it must be in Locators.
	Self string
	// Nodes are the hosts that may hold the active role, in ring order: the
	// token travels in this order.
	Nodes []string
	// Locators are the hosts running a locator (every node plus each
	// witness). The active role needs a grant from a majority of them.
	Locators []string
	// TwoNode lets one of two locators grant the role on its own (no
	// witness). Like corosync's two_node it is UNSAFE under a network
	// partition: both sides may become active. Opt-in only.
	TwoNode bool

	TokenInterval time.Duration // how long a node holds the token before passing it on
	TokenTimeout  time.Duration // no token for this long: the token is lost and regenerated
	Lease         time.Duration // how long a granted active role lasts without renewal
	DriftMargin   time.Duration // locator's extra wait; covers clock-rate drift (see MaxDrift)

	// Failback, when > 0, moves the active role back to a node earlier in
	// Nodes (more preferred) once the token has shown that node in the
	// ring, healthy and out of maintenance, for this long without a break:
	// a planned handover, like a switchover. 0 (the default): the role
	// stays where it is until its holder fails (keepalived's nopreempt).
	Failback time.Duration

	// LastManStanding, when > 0, lets the membership of locators whose
	// majority grants the role shrink and grow (Membership): the active
	// removes a locator that has not answered it for this long while
	// every other member answers, one at a time, and adds one back that
	// has answered for this long. Each change is adopted by every
	// remaining member before the next, so no two majorities that can
	// count at once are disjoint: it gives up no safety. 0 (the default):
	// every locator is a member, always. Needs 4 locators or more.
	LastManStanding time.Duration

	// Planted is for the simulator's tests only (protocol/sim): defects
	// planted in the core to show that the simulator finds them. Its type
	// is internal to protocol/, so no other package can make a non-zero
	// one; the zero value, in every production config, plants nothing.
	Planted plant.Set `json:"-"`
}

// ErrConfig is returned (wrapped) for an invalid Config.
var ErrConfig = errors.New("protocol: invalid config")

// ConfigError is one rule a Config breaks. It is the single statement of
// the protocol's rules on timings and peers: config validation (`vigil
// check`, start-up, reload) reports these, so that nothing it accepts is
// refused when a node manager or locator starts.
type ConfigError struct {
	// Field is the value at fault, by its name in the configuration file:
	// cluster, nodes, locators, two_node, token_interval, token_timeout,
	// lease or drift_margin.
	Field string
	// Also names the other fields the rule compares Field with, so a caller
	// can point at one of them when Field was left at its default.
	Also []string
	Msg  string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%v: %s: %s", ErrConfig, e.Field, e.Msg) }

// Unwrap makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Unwrap() error { return ErrConfig }

// MinTokenTimeout is the shortest token timeout Validate accepts for a
// ring of n nodes at token interval i: n × i. After a node passes the
// token on, it is away while each of the n−1 others holds it, an interval
// at least; shorter than that and one interval more, every node takes the
// token for lost once a rotation and the active regenerates it in a new
// epoch each time. The default (DefaultTokenTimeoutFor) leaves more.
func MinTokenTimeout(n int, i time.Duration) time.Duration {
	return time.Duration(max(n, 1)) * i
}

// DefaultTokenTimeoutFor is the token timeout of a ring of n nodes at
// token interval i when none is configured: DefaultTokenTimeout, or, for a
// ring that needs more, (n−1) × 1½ × i + i rounded up to a millisecond:
// each of the others holds the token up to half an interval longer than
// an interval when its driver ticks late (the simulator's ticks every
// 5 ms), and one interval covers the hops. At the default interval that is
// 55 ms for four nodes, 70 for five, 115 for eight. Like corosync's token,
// which grows with the node count (token_coefficient). For one to three
// nodes it is under DefaultTokenTimeout; for one or two it is also under
// 3 × i, the rule a token_interval set alone is checked by.
func DefaultTokenTimeoutFor(n int, i time.Duration) time.Duration {
	if n < 3 {
		return DefaultTokenTimeout
	}
	ring := time.Duration(max(n-1, 0))*i*3/2 + i
	return max(DefaultTokenTimeout, (ring + time.Millisecond - 1).Truncate(time.Millisecond))
}

// withDefaults fills zero timings with the defaults.
func (c Config) withDefaults() Config {
	if c.TokenInterval == 0 {
		c.TokenInterval = DefaultTokenInterval
	}
	if c.TokenTimeout == 0 {
		c.TokenTimeout = DefaultTokenTimeoutFor(len(c.Nodes), c.TokenInterval)
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.DriftMargin == 0 {
		c.DriftMargin = DefaultDriftMargin
	}
	return c
}

// Validate checks the cluster description and timings (after defaults are
// applied to zero timings) and returns the first problem, a *ConfigError.
func (c Config) Validate() error {
	if ps := c.Problems(); len(ps) > 0 {
		return ps[0]
	}
	return nil
}

// Problems returns every rule c breaks (after defaults are applied to zero
// timings), nil when it is valid.
func (c Config) Problems() []*ConfigError {
	c = c.withDefaults()
	var out []*ConfigError
	bad := func(field string, also []string, format string, args ...any) {
		out = append(out, &ConfigError{Field: field, Also: also, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Cluster == "" || len(c.Cluster) > MaxIDLen {
		bad("cluster", nil, "cluster name %q must be 1..%d bytes", c.Cluster, MaxIDLen)
	}
	for _, l := range []struct {
		what string
		ids  []string
	}{{"nodes", c.Nodes}, {"locators", c.Locators}} {
		if msg := checkIDs(l.what, l.ids); msg != "" {
			bad(l.what, nil, "%s", msg)
		}
	}
	if c.TwoNode && len(c.Locators) != 2 {
		bad("two_node", []string{"locators"}, "two_node needs exactly 2 locators, have %d", len(c.Locators))
	}
	ti := []string{"token_interval"}
	if c.TokenInterval < MinTokenInterval {
		bad("token_interval", nil, "%v is shorter than the minimum, %v", c.TokenInterval, MinTokenInterval)
	}
	// A token must be allowed to be a couple of hops late before it is
	// declared lost, and a lease must span more than one renewal (a node
	// renews every token_interval).
	if c.TokenTimeout < 3*c.TokenInterval {
		bad("token_timeout", ti, "token_timeout %v must be at least 3 × token_interval %v (%v)", c.TokenTimeout, c.TokenInterval, 3*c.TokenInterval)
	}
	if m := MinTokenTimeout(len(c.Nodes), c.TokenInterval); c.TokenTimeout >= 3*c.TokenInterval && c.TokenTimeout < m {
		bad("token_timeout", []string{"token_interval", "nodes"}, "token_timeout %v is too short for a ring of %d nodes: after passing the token on, a node waits while each of the %d others holds it for token_interval %v at least; at least %v, %v by default (docs/protocol.md, \"Larger clusters\")",
			c.TokenTimeout, len(c.Nodes), len(c.Nodes)-1, c.TokenInterval, m, DefaultTokenTimeoutFor(len(c.Nodes), c.TokenInterval))
	}
	if c.Lease < 2*c.TokenInterval {
		bad("lease", ti, "lease %v must be at least 2 × token_interval %v (%v)", c.Lease, c.TokenInterval, 2*c.TokenInterval)
	}
	// A margin as long as the lease would more than double every failover
	// to cover a drift (over 1/3, see MaxDrift) no clock has.
	switch {
	case c.DriftMargin <= 0:
		bad("drift_margin", nil, "drift_margin %v must be positive", c.DriftMargin)
	case c.DriftMargin >= c.Lease:
		bad("drift_margin", []string{"lease"}, "drift_margin %v must be shorter than lease %v", c.DriftMargin, c.Lease)
	}
	if c.LastManStanding < 0 {
		bad("last_man_standing", nil, "last_man_standing %v must be 0 (off) or positive", c.LastManStanding)
	}
	if c.LastManStanding > 0 {
		if n := len(c.Locators); n < 4 {
			bad("last_man_standing", []string{"locators"}, "last_man_standing needs at least 4 locators (nodes and witnesses), have %d: with 3, the membership it would shrink to, 2, still needs both, so a second failure takes the role away as before", n)
		}
		if c.TwoNode {
			bad("last_man_standing", []string{"two_node"}, "last_man_standing and two_node do not go together")
		}
		if m := MinLastManStanding(c); c.LastManStanding < m {
			bad("last_man_standing", []string{"token_timeout", "lease", "drift_margin"}, "last_man_standing %v is shorter than the minimum, %v (2 × (token_timeout + lease + drift_margin)): a locator would leave the membership over a failover's silence", c.LastManStanding, m)
		}
	}
	// A failback sooner than a token timeout would move the role back
	// to a node the ring has not yet seen pass the token once or twice.
	if c.Failback < 0 || (c.Failback > 0 && c.Failback < c.TokenTimeout) {
		bad("failback", []string{"token_timeout"}, "failback %v must be 0 (off) or at least token_timeout %v", c.Failback, c.TokenTimeout)
	}
	return out
}

// checkIDs describes what is wrong with a list of ids, or returns "".
func checkIDs(what string, ids []string) string {
	if len(ids) == 0 || len(ids) > MaxPeers {
		return fmt.Sprintf("need 1..%d %s (the wire format's limit), have %d", MaxPeers, what, len(ids))
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || len(id) > MaxIDLen {
			return fmt.Sprintf("id %q must be 1..%d bytes", id, MaxIDLen)
		}
		if seen[id] {
			return fmt.Sprintf("duplicate id %q", id)
		}
		seen[id] = true
	}
	return ""
}

// MinLastManStanding is the shortest LastManStanding window Validate
// accepts for c's timings (after defaults): twice the longest silence a
// failover causes (token timeout, lease and drift margin).
func MinLastManStanding(c Config) time.Duration {
	c = c.withDefaults()
	return 2 * (c.TokenTimeout + c.Lease + c.DriftMargin)
}

// Quorum is the number of locator grants the active role needs: a strict
// majority, or 1 of 2 with TwoNode.
func (c Config) Quorum() int {
	if c.TwoNode && len(c.Locators) == 2 {
		return 1
	}
	return len(c.Locators)/2 + 1
}

// MaxDrift is the largest clock-rate drift ρ (as a fraction, 0.01 = 1%)
// between any two hosts that the configured DriftMargin covers:
// ρ ≤ D / (2L + D). With the defaults (L=60ms, D=15ms) that is 11%.
// See docs/protocol.md, "Safety".
func (c Config) MaxDrift() float64 {
	c = c.withDefaults()
	return float64(c.DriftMargin) / float64(2*c.Lease+c.DriftMargin)
}

// RecoveryBound is the longest time, after every fault has healed, until
// exactly one node is active again, assuming clock drift ≤ MaxDrift and
// message delays ≤ maxDelay. Derivation in docs/protocol.md ("Failover
// time"): a standby notices the silence (token timeout, plus a probe round
// trip), the locators let the last lease they recorded run out (lease +
// drift margin after the last renewal, which is before the heal), and the
// claim goes out a quarter interval after that, staggered by preference
// (claimStagger: at most (N-1)·TI/2); a few more intervals cover claim
// rounds lost to a split vote.
// A candidate whose claims went unanswered during the fault may have backed
// off for up to MaxClaimBackoff just before the heal, which adds to it.
func (c Config) RecoveryBound(maxDelay time.Duration) time.Duration {
	c = c.withDefaults()
	b := c.TokenTimeout + c.Lease + c.DriftMargin + time.Duration(len(c.Nodes)+8)*c.TokenInterval + 4*maxDelay + c.MaxClaimBackoff()
	return b + b/20 // clock drift
}

func indexOf(ids []string, id string) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}
