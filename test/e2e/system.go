package e2e

import "time"

// System is a failover system under test, running on hosts a and b (and
// the witness w when it has one) of a Net. Its SIP server on each node is
// the command WriteUAS gives, bound to VIP:5060.
type System interface {
	// Label names the system and its setting in summary lines:
	// "system=vigil" or "system=keepalived advert_ms=100".
	Label() string
	// Start starts the system on every host and returns once one node
	// holds the floating IP. Start after Stop starts afresh.
	Start() error
	// Stop ends every process the system started, on every host, and
	// removes the floating IP wherever it is left.
	Stop() error
	// Kill SIGKILLs every process of the system on host, its SIP server
	// included: a crash of the whole service.
	Kill(host string) error
	// Stall stops the process that keeps host's role (SIGSTOP) for d and
	// then continues it (SIGCONT). It returns after d.
	Stall(host string, d time.Duration) error
	// Freeze stops every process of the system on host (SIGSTOP) except
	// its applications, the SIP server keeps running, for d, then
	// continues them. It returns after d.
	Freeze(host string, d time.Duration) error
	// FailApp kills host's SIP server and makes every restart of it fail
	// until Heal.
	FailApp(host string) error
	// Heal undoes FailApp on every host.
	Heal() error
	// Switchover moves the active role off host, the way an operator of
	// the system plans one.
	Switchover(host string) error
	// KillWitness SIGKILLs the witness; ErrNotApplicable if there is none.
	KillWitness() error
	// Noise runs the noisy neighbour (Noise.Args) for d next to host's
	// applications, as that system's operator would run it, and returns
	// at once; the neighbour ends by itself after d.
	Noise(host string, d time.Duration) error
}
