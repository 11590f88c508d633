package protocol

import (
	"fmt"
	"math/bits"
	"strings"
)

// Membership is one version of the set of locators whose majority grants
// the active role. Without Config.LastManStanding there is one, version 0
// with every locator, and nothing of it is on the wire or on disk. With
// it, the active node shrinks the membership, one locator at a time, once
// a locator has been silent for the window while every other one answers,
// and grows it back when the locator has answered again for the window
// (docs/protocol.md, "A quorum that shrinks").
//
// Every locator adopts a membership (persisted) and grants only claims and
// renewals counted in it; a node counts a majority of its members. The
// zero value is version 0 with every configured locator (canonical: any
// membership equal to it is stored as the zero value, so == compares).
type Membership struct {
	Version uint64 `json:",omitzero"`
	// Members: bit i is Config.Locators[i]. 0 at version 0 (with Unknown
	// false) means every locator.
	Members uint8 `json:",omitzero"`
	// Unknown: a locator that started without its state file under
	// last_man_standing. It cannot tell a first start from a lost state
	// directory, and the configured membership may be one the cluster
	// left: it counts in none until it learns the current one.
	Unknown bool `json:",omitzero"`
}

// allMembers is the set of n locators.
func allMembers(n int) uint8 { return uint8(1<<n - 1) }

// canon returns m in its canonical form for a cluster of n locators.
func (m Membership) canon(n int) Membership {
	if !m.Unknown && m.Version == 0 && m.Members == allMembers(n) {
		return Membership{}
	}
	return m
}

// set is m's members for a cluster of n locators (0 when unknown).
func (m Membership) set(n int) uint8 {
	switch {
	case m.Unknown:
		return 0
	case m.Version == 0 && m.Members == 0:
		return allMembers(n)
	}
	return m.Members
}

// has reports whether locator i is a member.
func (m Membership) has(n, i int) bool { return m.set(n)&(1<<i) != 0 }

// size is the number of members.
func (m Membership) size(n int) int { return bits.OnesCount8(m.set(n)) }

// quorum is the grants a membership needs: a strict majority of its
// members (a membership never has fewer than two).
func (m Membership) quorum(n int) int { return m.size(n)/2 + 1 }

// childOf reports whether m is p changed by exactly one member, one
// version later: the only change a holder proposes. The majorities of
// two such memberships always intersect (⌊k/2⌋+1 + ⌊(k±1)/2⌋+1 > k+1 ≥
// the members of both), which is what keeps a change safe while some
// locators have adopted it and others not yet.
func (m Membership) childOf(p Membership, n int) bool {
	if m.Unknown || p.Unknown || m.Version != p.Version+1 {
		return false
	}
	return bits.OnesCount8(m.set(n)^p.set(n)) == 1
}

// Format names m's members, e.g. "v2{a,b,w}", for status and logs.
func (m Membership) Format(locators []string) string {
	if m.Unknown {
		return "unknown"
	}
	return fmt.Sprintf("v%d{%s}", m.Version, strings.Join(m.IDs(locators), ","))
}

// IDs is the ids of m's members, in locators' order (nil if unknown).
func (m Membership) IDs(locators []string) []string {
	if m.Unknown {
		return nil
	}
	var ids []string
	s := m.set(len(locators))
	for i, id := range locators {
		if s&(1<<i) != 0 {
			ids = append(ids, id)
		}
	}
	return ids
}
