package ctlmsg

import (
	"time"

	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/schedwatch"
)

// NodeManagerReport is what the node manager tells the supervisor on every heartbeat,
// and what `vigil status --json` shows under "nodemanager". Keys are stable.
type NodeManagerReport struct {
	// Beat: this report carries only the fields that move with the token
	// and the lease (BeatFields); the rest is as in the last full
	// report. The node manager sends a full report at least every
	// FullReportEvery and whenever its role, epoch, active, health,
	// maintenance or floating IPs changed, and beats in between (four
	// reports a lease are the supervisor's fence heartbeat). The
	// supervisor merges a beat into the last full report.
	Beat bool `json:"beat,omitempty"`
	// BeatFields come in every report, beats included.
	BeatFields
	UnhealthyReasons []string `json:"unhealthy_reasons,omitempty"`
	Incarnation      uint64   `json:"incarnation"`
	// QuorumNeeded is how many of Locators must answer for a lease
	// (protocol.Config.Quorum: a majority, 1 of 2 with two_node; under
	// cluster.last_man_standing, a majority of Membership's members).
	QuorumNeeded int `json:"quorum_needed"`
	// Membership is the set of locators whose majority grants the role,
	// MembershipNext a change of it under way; present with
	// cluster.last_man_standing, or once the membership ever changed
	// (docs/protocol.md, "A quorum that shrinks").
	Membership     *Membership     `json:"membership,omitempty"`
	MembershipNext *Membership     `json:"membership_next,omitempty"`
	Peers          []PeerState     `json:"peers"`
	Locators       []LocatorAnswer `json:"locators"`
	VIPs           []string        `json:"vips_held"`
	// VIPsFailed are the floating IPs this node holds the service for
	// but could not add (the node manager tries again every 500 ms).
	VIPsFailed   []VIPFailure `json:"vips_failed,omitempty"`
	Takeovers    uint64       `json:"takeovers"`
	LastTakeover *Takeover    `json:"last_takeover,omitempty"`
	LateTimers   uint64       `json:"late_ticks"`  // protocol ticks that fired more than a token interval late
	MaxLateMS    float64      `json:"max_late_ms"` // the latest of those
	// SlowPasses counts passes of the node manager's loop that took over
	// a quarter of the lease (each also logged as event=loop_slow).
	SlowPasses uint64 `json:"slow_passes"`
	// Degraded: this control-plane process was not scheduled for longer
	// than control.sched_delay_warn within the last 10 s (Corosync's "not
	// scheduled for X ms"). Shown and logged; it does not by itself hand
	// the role over (see docs/operations.md).
	Degraded          bool     `json:"degraded"`
	DegradedReasons   []string `json:"degraded_reasons,omitempty"`
	SchedLateEpisodes uint64   `json:"sched_late_episodes"`
	SchedMaxLateMS    float64  `json:"sched_max_late_ms"`
	// SchedLate is how late every 10 ms wakeup of this process was.
	SchedLate *schedwatch.HistogramJSON `json:"sched_late_histogram,omitempty"`
	// Timing is how late the protocol tick ran and each locator's
	// check-in round trip, since start, and the lease-share warning
	// (control.lateness_warn_share): what `vigil check --timing` samples.
	Timing    *timingstat.Report `json:"timing,omitempty"`
	Transport transport.Stats    `json:"transport"`
	GARPSent  uint64             `json:"garp_sent"`
	NASent    uint64             `json:"na_sent"`
	// AnnounceUnleased counts announcements of a held floating IP that
	// were due after the lease had ended and so were not sent: the node
	// still held the address past its lease (it drops it on its next
	// input); a count that grows means it was not scheduled in time.
	AnnounceUnleased uint64 `json:"announce_unleased"`
	// Conflicts counts the times another host answered for a floating IP
	// this node held (or was claiming), the successor of a planned
	// handover excepted; LastConflict is the latest, nil if none.
	Conflicts    uint64    `json:"ip_conflicts"`
	LastConflict *Conflict `json:"last_conflict,omitempty"`
	HookFailures uint64    `json:"hook_failures"`
	// PersistErrors counts failed writes of the node's state file since
	// start; PersistFailing: the last one failed, and the node manager
	// sends nothing (claims nothing) until a write succeeds (PersistError
	// says why).
	PersistErrors  uint64 `json:"persist_errors"`
	PersistFailing bool   `json:"persist_failing"`
	PersistError   string `json:"persist_error,omitempty"`
	// Realtime is what control.realtime put in force for this process.
	Realtime realtime.Report `json:"realtime"`
	// StartError is set when the node manager could not start this
	// service (its state file refused, its port taken): Role is
	// RoleNotStarted, it holds nothing of the service and takes no part
	// in it, and it tries again every StartRetryEvery. The process's
	// other services run (NotStarted).
	StartError string `json:"start_error,omitempty"`
	// StartFailingMS is how long it has been failing to start.
	StartFailingMS int64 `json:"start_failing_ms,omitempty"`
	// KernelLease says whether the kernel itself stops serving the
	// floating IPs at the end of the lease (nftables, docs/operations.md
	// "The packet filter"); omitted on a node without VIPs.
	KernelLease *KernelLease `json:"kernel_lease,omitempty"`
}

// BeatFields are what a beat carries (NodeManagerReport.Beat): those
// the supervisor fences on (lease and drain left, the lease length), what
// it releases the role with if the node manager dies, and those that move
// with every token hop. Everything else changes slowly or is a counter,
// and comes with the full reports. One struct, embedded in the report and
// in the beat as sent, so that the two cannot drift apart.
type BeatFields struct {
	// Slot is the service the report is for: its index in the file's
	// services (0: the first, or a cluster without services). One node
	// manager process runs every service of its node and reports for
	// each.
	Slot             int    `json:"slot,omitempty"`
	Self             string `json:"self"`
	Role             string `json:"role"` // active | standby | candidate
	Epoch            uint64 `json:"epoch"`
	Active           string `json:"active"` // "" if none known
	LeaseValid       bool   `json:"lease_valid"`
	LeaseRemainingMS int64  `json:"lease_remaining_ms"`
	// LeaseMS is the lease length this process runs with (cluster.timing
	// as it started): the supervisor fences by it, not by a reloaded value.
	LeaseMS      int64   `json:"lease_ms,omitempty"`
	HoldingToken bool    `json:"holding_token"`
	TokenAgeMS   int64   `json:"token_age_ms"`
	RotationMS   float64 `json:"token_rotation_ms"`
	TokenLost    bool    `json:"token_lost"`
	Healthy      bool    `json:"healthy"`
	Maintenance  bool    `json:"maintenance"`
	// DrainingTo is set while this node, after a planned handover, keeps
	// the floating IPs until that node announces them; they go at the
	// latest after DrainRemainingMS (the end of the lease it held), which
	// is also when the supervisor fences a node manager gone silent.
	DrainingTo       string `json:"draining_to,omitempty"`
	DrainRemainingMS int64  `json:"drain_remaining_ms,omitempty"`
	// Succession is set while the node is active: what its supervisor
	// needs to release the role at once if this process dies
	// (protocol.CrashRelease; docs/protocol.md "Crash release"). In beats
	// too: never a full report old.
	Succession *Succession `json:"succession,omitempty"`
}

// Succession is protocol.Succession in a report: the epoch held, the
// healthy standby to hand it to ("" if none), and the incarnation of each
// peer process as this node last heard it.
type Succession struct {
	Epoch    uint64            `json:"epoch"`
	To       string            `json:"to,omitempty"`
	Nodes    map[string]uint64 `json:"node_incarnations"`
	Locators map[string]uint64 `json:"locator_incarnations"`
}

// KernelLease is the state of the kernel lease.
type KernelLease struct {
	// State: enforcing; failing (programming it failed, it is disarmed and
	// the address lifetime is the bound, Reason says why); unavailable
	// (the kernel has no nf_tables, Reason says what failed).
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Applies     uint64 `json:"applies"`
	Failures    uint64 `json:"failures"`
	LastApplyUS int64  `json:"last_apply_us"`
	MaxApplyUS  int64  `json:"max_apply_us"`
	// RefreshFallbacks counts refreshes sent through the nftables library
	// because the hand-built batch failed: enforced all the same, at a
	// higher cost (docs/operations.md, "The packet filter").
	RefreshFallbacks uint64 `json:"refresh_fallbacks"`
}

// Kernel lease states.
const (
	KernelLeaseEnforcing   = "enforcing"
	KernelLeaseFailing     = "failing"
	KernelLeaseUnavailable = "unavailable"
)

// PeerState is a node's summary as last carried by the token.
type PeerState struct {
	ID          string `json:"id"`
	Healthy     bool   `json:"healthy"`
	Maintenance bool   `json:"maintenance"`
	InRing      bool   `json:"in_ring"`
}

// Membership is one version of the set of locators whose majority grants
// the active role (protocol.Membership, with the locators' ids).
type Membership struct {
	Version uint64   `json:"version"`
	Members []string `json:"members"`
	// Unknown: a locator that started without its state file under
	// last_man_standing, and counts in no membership until the active
	// adds it back.
	Unknown bool `json:"unknown,omitempty"`
}

// MembershipOf is m for status, with the locators' ids.
func MembershipOf(m protocol.Membership, locators []string) *Membership {
	return &Membership{Version: m.Version, Members: m.IDs(locators), Unknown: m.Unknown}
}

// LocatorAnswer is a locator's last answer to this node.
type LocatorAnswer struct {
	ID    string `json:"id"`
	Seen  bool   `json:"seen"`
	AgeMS int64  `json:"age_ms"`
}

// Conflict is the latest time another host answered for one of our
// floating IPs.
type Conflict struct {
	VIP   string `json:"vip"`
	MAC   string `json:"mac"`
	AgeMS int64  `json:"age_ms"`
}

// VIPFailure is a floating IP that could not be added, and why.
type VIPFailure struct {
	VIP   string `json:"vip"`
	Error string `json:"error"`
}

// Takeover is how long the last takeover took: from the protocol's decision
// (this node became active) to the floating IPs added and first announced.
type Takeover struct {
	Epoch       uint64  `json:"epoch"`
	AddedMS     float64 `json:"added_ms"`
	AnnouncedMS float64 `json:"announced_ms"`
}

// LocatorReport is what the locator tells the supervisor, and what `vigil status
// --json` shows under "locator". Keys are stable. One locator process serves
// every service of its host and sends a report for each.
type LocatorReport struct {
	// Slot is the service the report is for: its index in the file's
	// services (0: the first, or a cluster without services).
	Slot             int    `json:"slot,omitempty"`
	Self             string `json:"self"`
	Incarnation      uint64 `json:"incarnation"`
	Epoch            uint64 `json:"epoch"`
	Holder           string `json:"holder"`
	LeaseValid       bool   `json:"lease_valid"`
	LeaseRemainingMS int64  `json:"lease_remaining_ms"`
	GrantInMS        int64  `json:"grant_in_ms"`
	Quarantined      bool   `json:"quarantined"`
	// Membership is the one this locator grants in (as the node
	// manager's report; present under the same conditions).
	Membership    *Membership     `json:"membership,omitempty"`
	Nodes         []NodeCheckin   `json:"nodes"`
	Transport     transport.Stats `json:"transport"`
	PersistErrors uint64          `json:"persist_errors"`
	// PersistFailing: the last write of the state file failed; the
	// locator answers nothing until a write succeeds (PersistError says
	// why).
	PersistFailing bool   `json:"persist_failing"`
	PersistError   string `json:"persist_error,omitempty"`
	Listen         string `json:"listen"`
	// Degraded: not scheduled for longer than control.sched_delay_warn
	// within the last 10 s.
	Degraded          bool    `json:"degraded"`
	SchedLateEpisodes uint64  `json:"sched_late_episodes"`
	SchedMaxLateMS    float64 `json:"sched_max_late_ms"`
	// SchedLate is how late every 10 ms wakeup of this process was.
	SchedLate *schedwatch.HistogramJSON `json:"sched_late_histogram,omitempty"`
	// Timing is how late the locator's protocol tick ran since start,
	// and its lease-share warning (no round trips: it answers).
	Timing *timingstat.Report `json:"timing,omitempty"`
	// Realtime is what control.realtime put in force for this process.
	Realtime realtime.Report `json:"realtime"`
	// StartError is set when the locator could not start this service's
	// core (its state file refused, its port taken): it answers no node
	// for it, and tries again every StartRetryEvery. Only Slot, Self and
	// StartFailingMS are set beside it.
	StartError     string `json:"start_error,omitempty"`
	StartFailingMS int64  `json:"start_failing_ms,omitempty"`
}

// NodeCheckin is one node's last check-in here.
type NodeCheckin struct {
	ID          string `json:"id"`
	Seen        bool   `json:"seen"`
	AgeMS       int64  `json:"age_ms"`
	Epoch       uint64 `json:"epoch"`
	Healthy     bool   `json:"healthy"`
	Maintenance bool   `json:"maintenance"`
	TokenSeq    uint64 `json:"token_seq"`
}

// RoleNotStarted is the role a node manager reports for a service it could
// not start (NodeManagerReport.StartError).
const RoleNotStarted = "not_started"

// StartRetryEvery is how often the node manager and the locator try again
// to start a service that could not start: soon enough that mending its
// state file is all an operator has to do, seldom enough that a cause
// that lasts costs nothing.
const StartRetryEvery = 5 * time.Second

// NotStarted reports whether r is of a service its node manager could not
// start.
func (r *NodeManagerReport) NotStarted() bool { return r != nil && r.StartError != "" }

// FullReportEvery is how often the node manager and the locator send a
// full report at least; the node manager's reports between are beats
// (NodeManagerReport.Beat). What a full report adds is for status and
// metrics (counters, histograms, peers), which nobody reads faster; every
// change the supervisor acts on is sent at once.
const FullReportEvery = time.Second

// beatWire is a beat as sent: the BeatFields only, under the keys
// NodeManagerReport gives them, so that it decodes as one. Sent as a
// NodeManagerReport, a beat carried every other field too, as zeros (750
// bytes), and decoding those four times a lease was a fifth of an idle
// supervisor's CPU.
type beatWire struct {
	Beat bool `json:"beat"`
	BeatFields
}

// MergeBeat is last (a full report) with beat's fields, as a full report;
// beat itself when there is no full report yet.
func MergeBeat(last, beat *NodeManagerReport) *NodeManagerReport {
	if last == nil || !beat.Beat {
		return beat
	}
	m := *last
	m.BeatFields, m.Beat = beat.BeatFields, false
	return &m
}
