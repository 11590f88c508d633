package nodemanager

import "github.com/vigil-project/vigil/internal/ctlmsg"

// The report types live in internal/ctlmsg, shared with the supervisor and
// the CLI; these names keep the driver's code short.
type (
	Report            = ctlmsg.NodeManagerReport
	KernelLeaseReport = ctlmsg.KernelLease
	PeerReport        = ctlmsg.PeerState
	LocatorReport     = ctlmsg.LocatorAnswer
	ConflictReport    = ctlmsg.Conflict
	Takeover          = ctlmsg.Takeover
)

// Kernel lease states.
const (
	KernelLeaseEnforcing   = ctlmsg.KernelLeaseEnforcing
	KernelLeaseFailing     = ctlmsg.KernelLeaseFailing
	KernelLeaseUnavailable = ctlmsg.KernelLeaseUnavailable
)
