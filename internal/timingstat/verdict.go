package timingstat

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// The verdict's constants (docs/operations.md, "Calibrating the timing").
const (
	// SafetyFactor multiplies every measured figure: a window of 30 s has
	// not seen the worst minute of a month.
	SafetyFactor = 2
	// AssumedDrift is the clock-rate drift ρ the drift margin must cover
	// (docs/protocol.md, "Safety": 2ρ(L+D)/(1−ρ)); real clocks drift by
	// parts per million, 1 % is the figure the safety argument is quoted at.
	AssumedDrift = 0.01
	// KernelLeaseSlack is the kernel lease's ε less one jiffy: a refresh
	// that returns more than 2 ms after its clock reading is sent again
	// (docs/protocol.md, "The kernel lease's margin ε").
	KernelLeaseSlack = 2 * time.Millisecond
	// DefaultJiffy is the jiffy assumed when the kernel's HZ is unknown:
	// HZ=100, the coarsest.
	DefaultJiffy = 10 * time.Millisecond
)

// Timing is cluster.timing.
type Timing struct {
	TokenInterval, TokenTimeout, Lease, DriftMargin time.Duration
}

// YAML is t as a line to paste under cluster: in vigil.yaml.
func (t Timing) YAML() string {
	return fmt.Sprintf("timing: {token_interval: %v, token_timeout: %v, lease: %v, drift_margin: %v}",
		t.TokenInterval, t.TokenTimeout, t.Lease, t.DriftMargin)
}

// Measured is what the verdict is made from: the worst figures of the
// measuring window.
type Measured struct {
	// Late is the worst lateness of this host's node manager's loop (on a
	// witness, its locator's).
	Late time.Duration
	// RTT is the worst check-in → ack round trip to each locator; a
	// negative value: that locator never answered.
	RTT []time.Duration
	// Nodes is the number of nodes (the token visits each); Quorum the
	// locators a lease needs.
	Nodes, Quorum int
	// KernelLease: the kernel stops serving the floating IPs at the end
	// of the lease by itself (nftables, enforcing); Jiffy is the kernel's
	// tick (0: DefaultJiffy).
	KernelLease bool
	Jiffy       time.Duration
}

// QuorumRTT is the round trip a renewal waits for: the Quorum-th fastest
// of the locators' worst round trips. ok is false when fewer than Quorum
// locators answered.
func (m Measured) QuorumRTT() (time.Duration, bool) {
	var got []time.Duration
	for _, r := range m.RTT {
		if r >= 0 {
			got = append(got, r)
		}
	}
	if m.Quorum < 1 || len(got) < m.Quorum {
		return 0, false
	}
	slices.Sort(got)
	return got[m.Quorum-1], true
}

// WorstRTT is the slowest answering locator's worst round trip (a token
// hop to that host takes about half of it).
func (m Measured) WorstRTT() time.Duration {
	var w time.Duration
	for _, r := range m.RTT {
		w = max(w, r)
	}
	return w
}

// Epsilon is the kernel lease's ε: how long after the lease's end the
// kernel may still serve the floating IPs.
func (m Measured) Epsilon() time.Duration {
	j := m.Jiffy
	if j <= 0 {
		j = DefaultJiffy
	}
	return KernelLeaseSlack + j
}

// Rule is one requirement on the configured timing.
type Rule struct {
	Field string        // token_timeout, lease or drift_margin
	Have  time.Duration // configured
	Need  time.Duration // the least the measurement allows
	OK    bool
	Why   string // the formula with the figures put in
}

// Verdict is the judgement of a timing against a measurement.
type Verdict struct {
	Rules []Rule
	// OK: every rule holds. Unknown (with Reason): the measurement cannot
	// judge it (fewer locators answered than a lease needs).
	OK      bool
	Unknown bool
	Reason  string
	// Shortest is the shortest timing every rule allows, token_interval
	// kept as configured, each value rounded up to the millisecond.
	Shortest Timing
}

// needs are the three requirements for a lease L and drift margin D (the
// drift margin's depends on both through the drift).
type needs struct {
	lease, tokenTimeout, reaction time.Duration
	rq, rAll                      time.Duration
	leaseWhy, ttWhy, reactionWhy  string
}

func (m Measured) needs(ti time.Duration, rq time.Duration) needs {
	k := time.Duration(SafetyFactor)
	n := needs{rq: rq, rAll: m.WorstRTT()}
	// The active renews every token interval; its lease from a renewal
	// sent at s lasts until s+L, and the renewal is answered a round trip
	// later, sent as late as the loop runs. One renewal may be lost.
	n.lease = 2*ti + k*(m.Late+rq)
	n.leaseWhy = fmt.Sprintf("2×token_interval + %d×(lateness %v + quorum round trip %v)", SafetyFactor, round(m.Late), round(rq))
	// The token comes back after a hold of token_interval at each node
	// and a hop to each; a late loop delays it by its lateness.
	nodes := max(m.Nodes, 1)
	n.tokenTimeout = max(3*ti, time.Duration(nodes)*ti+k*(m.Late+n.rAll))
	n.ttWhy = fmt.Sprintf("max(3×token_interval, %d×token_interval + %d×(lateness %v + worst round trip %v))", nodes, SafetyFactor, round(m.Late), round(n.rAll))
	// The node manager drops the addresses on a tick armed for the
	// lease's end, as late as its loop runs; the kernel lease stops
	// serving them ε after the end whatever the node manager does, so the
	// earlier of the two bounds the overlap.
	n.reaction = k * m.Late
	n.reactionWhy = fmt.Sprintf("node manager reaction (its tick at the lease's end) %d×lateness %v = %v", SafetyFactor, round(m.Late), round(n.reaction))
	if m.KernelLease && m.Epsilon() < n.reaction {
		n.reaction = m.Epsilon()
		n.reactionWhy = fmt.Sprintf("kernel lease ε %v (before the node manager's reaction)", m.Epsilon())
	}
	return n
}

// driftNeed is the part of the drift margin the drift takes for L and D:
// 2ρ(L+D)/(1−ρ).
func driftNeed(l, d time.Duration) time.Duration {
	return time.Duration(math.Ceil(2 * AssumedDrift * float64(l+d) / (1 - AssumedDrift)))
}

// marginFor is the least drift margin for lease l and reaction r: D with
// D ≥ 2ρ(l+D)/(1−ρ) + r.
func marginFor(l, r time.Duration) time.Duration {
	a := 2 * AssumedDrift / (1 - AssumedDrift)
	return time.Duration(math.Ceil((a*float64(l) + float64(r)) / (1 - a)))
}

// Judge judges t against m.
func Judge(t Timing, m Measured) Verdict {
	rq, ok := m.QuorumRTT()
	if !ok {
		return Verdict{Unknown: true, Reason: fmt.Sprintf("only %d of %d locators answered a check-in while measuring; a lease needs %d", answered(m.RTT), len(m.RTT), m.Quorum)}
	}
	n := m.needs(t.TokenInterval, rq)
	dNeed := driftNeed(t.Lease, t.DriftMargin) + n.reaction
	v := Verdict{Rules: []Rule{
		{Field: "lease", Have: t.Lease, Need: n.lease, Why: n.leaseWhy},
		{Field: "token_timeout", Have: t.TokenTimeout, Need: n.tokenTimeout, Why: n.ttWhy},
		{Field: "drift_margin", Have: t.DriftMargin, Need: dNeed,
			Why: fmt.Sprintf("drift 2ρ(L+D)/(1−ρ) at ρ=%g%% %v + %s", AssumedDrift*100, round(driftNeed(t.Lease, t.DriftMargin)), n.reactionWhy)},
	}, OK: true}
	for i := range v.Rules {
		r := &v.Rules[i]
		r.OK = r.Have >= r.Need
		v.OK = v.OK && r.OK
	}
	v.Shortest = shortest(t.TokenInterval, n)
	return v
}

// shortest is the shortest timing with token interval ti that meets n.
func shortest(ti time.Duration, n needs) Timing {
	s := Timing{TokenInterval: ti, TokenTimeout: ceilMS(n.tokenTimeout), Lease: ceilMS(max(n.lease, 2*ti))}
	for range 4 {
		s.DriftMargin = ceilMS(max(marginFor(s.Lease, n.reaction), time.Millisecond))
		if s.DriftMargin < s.Lease {
			break
		}
		s.Lease = s.DriftMargin + time.Millisecond // the protocol wants D < L
	}
	return s
}

func answered(rtt []time.Duration) int {
	n := 0
	for _, r := range rtt {
		if r >= 0 {
			n++
		}
	}
	return n
}

func ceilMS(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1) / time.Millisecond * time.Millisecond
}

// round shortens d for a formula: 10 µs resolution.
func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
