package protocol

import (
	"errors"
	"fmt"
	"time"
)

// Protocol timing defaults (SPEC.md "timing"). They are chosen so that a
// crashed active is replaced in well under SIP timer T1 (500 ms): see
// docs/protocol.md for the formulas.
const (
	DefaultTokenInterval = 20 * time.Millisecond
	DefaultTokenTimeout  = 150 * time.Millisecond
	DefaultLease         = 200 * time.Millisecond
	DefaultDriftMargin   = 25 * time.Millisecond
)

// Limits of the wire format.
const (
	MaxIDLen  = 64 // bytes in a node, locator or cluster id
	MaxPeers  = 8  // nodes, and separately locators, in one cluster (keeps a token in one datagram)
	keyLength = 32 // cluster key, bytes
)

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
}

// ErrConfig is returned (wrapped) for an invalid Config.
var ErrConfig = errors.New("protocol: invalid config")

// withDefaults fills zero timings with the defaults.
func (c Config) withDefaults() Config {
	if c.TokenInterval == 0 {
		c.TokenInterval = DefaultTokenInterval
	}
	if c.TokenTimeout == 0 {
		c.TokenTimeout = DefaultTokenTimeout
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
// applied to zero timings).
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Cluster == "" || len(c.Cluster) > MaxIDLen {
		return fmt.Errorf("%w: cluster name %q must be 1..%d bytes", ErrConfig, c.Cluster, MaxIDLen)
	}
	if err := checkIDs("nodes", c.Nodes); err != nil {
		return err
	}
	if err := checkIDs("locators", c.Locators); err != nil {
		return err
	}
	if c.TwoNode && len(c.Locators) != 2 {
		return fmt.Errorf("%w: two_node needs exactly 2 locators, have %d", ErrConfig, len(c.Locators))
	}
	if c.TokenInterval <= 0 || c.TokenTimeout < 3*c.TokenInterval {
		return fmt.Errorf("%w: token_timeout %v must be at least 3 token_interval (%v)", ErrConfig, c.TokenTimeout, c.TokenInterval)
	}
	if c.Lease < 2*c.TokenInterval {
		return fmt.Errorf("%w: lease %v must be at least 2 token_interval (%v)", ErrConfig, c.Lease, c.TokenInterval)
	}
	if c.DriftMargin <= 0 {
		return fmt.Errorf("%w: drift_margin %v must be positive", ErrConfig, c.DriftMargin)
	}
	return nil
}

func checkIDs(what string, ids []string) error {
	if len(ids) == 0 || len(ids) > MaxPeers {
		return fmt.Errorf("%w: %s: need 1..%d entries, have %d", ErrConfig, what, MaxPeers, len(ids))
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || len(id) > MaxIDLen {
			return fmt.Errorf("%w: %s: id %q must be 1..%d bytes", ErrConfig, what, id, MaxIDLen)
		}
		if seen[id] {
			return fmt.Errorf("%w: %s: duplicate id %q", ErrConfig, what, id)
		}
		seen[id] = true
	}
	return nil
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
// ρ ≤ D / (2L + D). With the defaults (L=200ms, D=25ms) that is 5.9%.
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
// claim is retried a quarter interval after that, staggered by ring
// position; a few more intervals cover claim rounds lost to a split vote.
func (c Config) RecoveryBound(maxDelay time.Duration) time.Duration {
	c = c.withDefaults()
	b := c.TokenTimeout + c.Lease + c.DriftMargin + time.Duration(len(c.Nodes)+8)*c.TokenInterval + 4*maxDelay
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
