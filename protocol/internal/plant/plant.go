// Package plant names the bugs the simulator (protocol/sim) plants in the
// protocol core to show that its checks find them: a safety check that
// never fires proves nothing (TestSimulatorFindsPlantedBugs).
//
// It is internal to protocol/: only the core and the simulator can name a
// bug, and a Set's field is unexported, so the zero Set, which plants
// nothing, is the only one any other package (a production binary
// included) can hold. protocol.Config.Planted carries it.
package plant

// Bug is one planted defect of the core. The simulator plants others
// (failed writes counted as written, no kernel lease) in its own model of
// the host; only the ones that change the core's decisions live here.
type Bug uint8

const (
	// IgnoreDrift: a locator grants the role DriftMargin early (it waits
	// out the holder's lease on its own clock only).
	IgnoreDrift Bug = 1 << iota
	// NoWait: a locator grants a new holder without waiting out the old
	// holder's lease.
	NoWait
	// RenewOnlyWithToken: the active renews its lease only when the token
	// passes (the incident's design), so lost tokens cost it the role.
	RenewOnlyWithToken
	// AnyConf: memberships are not enforced: a locator grants in
	// whatever membership a check-in names, and a node counts a grant
	// whatever membership the locator answered in.
	AnyConf
	// EarlyCommit: a node takes a change of the membership as complete
	// once a majority of its members adopted it, not every one.
	EarlyCommit
)

// Set is the bugs planted in one process. The zero value plants none.
type Set struct{ bugs Bug }

// Of plants the given bugs.
func Of(bugs ...Bug) Set {
	var s Set
	for _, b := range bugs {
		s.bugs |= b
	}
	return s
}

// Has says whether b is planted.
func (s Set) Has(b Bug) bool { return s.bugs&b != 0 }
