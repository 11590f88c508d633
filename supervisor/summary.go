package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/protocol"
)

// Summarize fills Quorum and Warnings from the rest of st, and adds the
// node managers' health to Healthy (foldNodeManagerHealth). It only reads
// st (no clock, no files), so a golden test pins what an operator sees.
func (st *Status) Summarize() {
	st.Quorum = nil
	if nm := st.NodeManager; nm != nil && len(nm.Locators) > 0 {
		st.Quorum = quorumOf(nm)
	}
	st.foldNodeManagerHealth()
	st.Warnings = st.warnings(st.NodeManager, st.Locator)
	for i := range st.Services {
		st.Services[i].Holder = ""
		switch r, loc := st.Report(i), st.LocatorReport(i); {
		case r != nil && !r.NotStarted():
			st.Services[i].Holder = r.Active
		case loc != nil: // a witness, or a node manager that could not start it: the locator's holder
			st.Services[i].Holder = loc.Holder
		}
	}
}

// foldNodeManagerHealth makes st.Healthy the node's health as its node
// managers weigh it: the supervisor's covers the processes, and a node
// manager adds its floating IPs' interfaces (down, or missing on this
// host), which make the node unfit for the service as much as a dead
// application does. Idempotent: the CLI summarizes a summarized status
// again.
func (st *Status) foldNodeManagerHealth() {
	for i, r := range st.Reports() {
		if r == nil || r.Healthy {
			continue
		}
		st.Healthy = false
		reasons := r.UnhealthyReasons
		if len(reasons) == 0 {
			name := "the service"
			if i < len(st.Services) {
				name = "service " + st.Services[i].Name
			}
			reasons = []string{"unhealthy for " + name + " (its node manager says)"}
		}
		for _, why := range reasons {
			if !slices.Contains(st.Unhealthy, why) {
				st.Unhealthy = append(st.Unhealthy, why)
			}
		}
	}
}

// quorumOf counts the locators that answered within one lease: the
// active renews its lease with every token hop (a check-in at every
// locator), so a locator silent for a lease would not have counted
// towards the last renewal.
func quorumOf(nm *ctlmsg.NodeManagerReport) *Quorum {
	lease := nm.LeaseMS
	if lease <= 0 {
		lease = protocol.DefaultLease.Milliseconds() // a report older than lease_ms
	}
	q := &Quorum{Locators: len(nm.Locators), Needed: nm.QuorumNeeded}
	member := func(string) bool { return true }
	if m := nm.Membership; m != nil {
		// Only the members of the membership count (last_man_standing).
		q.Locators = len(m.Members)
		member = func(id string) bool { return slices.Contains(m.Members, id) }
	}
	if q.Needed <= 0 {
		q.Needed = q.Locators/2 + 1 // a report older than quorum_needed
	}
	for _, l := range nm.Locators {
		if l.Seen && l.AgeMS <= lease && member(l.ID) {
			q.Answered++
		}
	}
	q.OK = q.Answered >= q.Needed
	return q
}

// membershipWarnings: under last_man_standing, the locators left out of
// the membership (the cluster runs on fewer), and this host's locator
// counting in none after a lost state directory.
func membershipWarnings(add func(kind, format string, args ...any), prefix string, nm *ctlmsg.NodeManagerReport, loc *ctlmsg.LocatorReport) {
	if nm != nil && nm.Membership != nil && !nm.Membership.Unknown {
		var out []string
		for _, l := range nm.Locators {
			if !slices.Contains(nm.Membership.Members, l.ID) {
				out = append(out, l.ID)
			}
		}
		if len(out) > 0 {
			add("membership_shrunk", "%sthe locators' membership is v%d %s (last_man_standing): %s left out, a lease needs %d of %d; a locator is added back once it has answered for the window (journalctl -u vigil EVENT=membership)",
				prefix, nm.Membership.Version, strings.Join(nm.Membership.Members, ","), strings.Join(out, ","), nm.QuorumNeeded, len(nm.Membership.Members))
		}
	}
	if loc != nil && loc.Membership != nil && loc.Membership.Unknown {
		add("membership_unknown", "%sthis host's locator started without its state file under last_man_standing: it grants nothing until it learns the membership from every node, or the active adds it back (docs/operations.md, \"A locator's state directory lost\")", prefix)
	}
}

// conflictWarnFor is how long the vip_conflict warning stays after the
// last time another host answered for our address: long enough to be seen
// on the next look, short enough that a fixed cause stops warning.
const conflictWarnFor = 10 * time.Minute

// warnings are what an on-call engineer should not miss: no quorum, a
// starved control plane, another host answering for our address, fences,
// processes given up on, guarantees not in force.
func (st *Status) warnings(nm *ctlmsg.NodeManagerReport, loc *ctlmsg.LocatorReport) []Warning {
	out := []Warning{}
	add := func(kind, format string, args ...any) {
		out = append(out, Warning{Kind: kind, Message: fmt.Sprintf(format, args...)})
	}
	for i := range max(1, len(st.Services)) {
		prefix, it := "", "the service"
		if len(st.Services) > 1 {
			prefix, it = "service "+st.Services[i].Name+": ", "it"
		}
		if r := st.Report(i); r.NotStarted() {
			add("service_not_started", "%snode manager could not start %s, so this node holds none of it and takes no part in it; tried again every %s (journalctl -u vigil EVENT=service_start_failed): %s",
				prefix, it, ctlmsg.StartRetryEvery, r.StartError)
		}
		if l := st.LocatorReport(i); l != nil && l.StartError != "" {
			add("service_not_started", "%sthis host's locator could not start %s, so it answers no node for it (one vote fewer towards its quorum); tried again every %s (journalctl -u vigil EVENT=service_start_failed): %s",
				prefix, it, ctlmsg.StartRetryEvery, l.StartError)
		}
	}
	if q := st.Quorum; q != nil && !q.OK {
		add("no_quorum", "no quorum: %d of %d locators answered within the lease, %d needed; this node can neither take nor keep the active role%s",
			q.Answered, q.Locators, q.Needed, foreignHint(nm, loc))
	}
	membershipWarnings(add, "", nm, loc)
	if nm != nil && nm.Degraded {
		add("late_timer", "node manager not scheduled in time (worst %.0f ms; %s)", nm.SchedMaxLateMS, strings.Join(nm.DegradedReasons, ", "))
	}
	if loc != nil && loc.Degraded {
		add("late_timer", "locator not scheduled in time (worst %.0f ms)", loc.SchedMaxLateMS)
	}
	if nm != nil && nm.Timing != nil && nm.Timing.Warning {
		add("timing_margin", "node manager ran %.0f ms late within the last 10 s: more than the %.0f ms (control.lateness_warn_share of the lease) it may; the timing has too little margin for this host (vigil check --timing; journalctl -u vigil EVENT=timing_margin)",
			nm.Timing.RecentMaxLateMS, nm.Timing.WarnMS)
	}
	if loc != nil && loc.Timing != nil && loc.Timing.Warning {
		add("timing_margin", "locator ran %.0f ms late within the last 10 s: more than the %.0f ms (control.lateness_warn_share of the lease) it may (vigil check --timing; journalctl -u vigil EVENT=timing_margin)",
			loc.Timing.RecentMaxLateMS, loc.Timing.WarnMS)
	}
	if nm != nil && nm.PersistFailing {
		add("persist_failing", "node manager cannot write its state file, so it sends nothing and claims nothing until it can (free space in runtime.state_dir; journalctl -u vigil EVENT=persist_error): %s", nm.PersistError)
	}
	if loc != nil && loc.PersistFailing {
		add("persist_failing", "locator cannot write its state file, so it answers no node until it can (free space in runtime.state_dir; journalctl -u vigil EVENT=persist_error): %s", loc.PersistError)
	}
	if nm != nil {
		vipFailures(add, "", nm)
	}
	if nm != nil && nm.KernelLease != nil && nm.KernelLease.State != ctlmsg.KernelLeaseEnforcing {
		add("kernel_lease", "the kernel does not enforce the lease on the floating IPs (%s: %s): a frozen or killed Vigil leaves them served until their address lifetime ends (journalctl -u vigil EVENT=kernel_lease_error EVENT=kernel_lease_unavailable)",
			nm.KernelLease.State, nm.KernelLease.Reason)
	}
	// The services after the first: what makes one of them unsafe or
	// unable to move, with its name (the host-wide warnings above and
	// below are said once).
	for i := 1; i < len(st.Services); i++ {
		r, name := st.Report(i), st.Services[i].Name
		if r == nil {
			continue
		}
		if q := st.QuorumOf(i); q != nil && !q.OK {
			add("no_quorum", "service %s: no quorum: %d of %d locators answered within the lease, %d needed; this node can neither take nor keep it%s",
				name, q.Answered, q.Locators, q.Needed, foreignHint(r, st.LocatorReport(i)))
		}
		membershipWarnings(add, "service "+name+": ", r, st.LocatorReport(i))
		vipFailures(add, "service "+name+": ", r)
		if r.PersistFailing {
			add("persist_failing", "service %s: node manager cannot write its state file, so it sends nothing and claims nothing until it can: %s", name, r.PersistError)
		}
		if r.KernelLease != nil && r.KernelLease.State != ctlmsg.KernelLeaseEnforcing {
			add("kernel_lease", "service %s: the kernel does not enforce the lease on its floating IPs (%s: %s)", name, r.KernelLease.State, r.KernelLease.Reason)
		}
		if c := lastConflict(r); c != nil && c.AgeMS < conflictWarnFor.Milliseconds() {
			add("vip_conflict", "service %s: another host (%s) answered for our floating IP %s %s ago", name, c.MAC, c.VIP,
				(time.Duration(c.AgeMS) * time.Millisecond).Round(time.Second))
		}
	}
	out = append(out, pressureWarnings(st.Groups)...)
	out = append(out, rtBudgetWarnings(st.Groups)...)
	if c := lastConflict(nm); c != nil && c.AgeMS < conflictWarnFor.Milliseconds() {
		age := (time.Duration(c.AgeMS) * time.Millisecond).Round(time.Second)
		add("vip_conflict", "another host (%s) answered for our floating IP %s %s ago, %s since the node manager started (journalctl -u vigil EVENT=vip_conflict)",
			c.MAC, c.VIP, age, times(nm.Conflicts))
	}
	if st.Supervisor.Fences > 0 {
		add("fence", "node manager fenced %s since start (journalctl -u vigil EVENT=fence)", times(st.Supervisor.Fences))
	}
	if st.Supervisor.FencesHeld > 0 {
		add("fence_held", "node manager silent past its lease %s since start, left to the kernel lease (journalctl -u vigil EVENT=fence_held)", times(st.Supervisor.FencesHeld))
	}
	for _, p := range append(append([]ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		if p.State == StateFatal {
			add("fatal", "%s gave up after repeated failures: vigil restart %s", p.Name, p.Name)
		}
	}
	if nm != nil && nm.HookFailures > 0 {
		add("hook_failure", "%d hook runs failed (journalctl -u vigil EVENT=hook)", nm.HookFailures)
	}
	var nmRT, locRT []string
	if nm != nil {
		nmRT = nm.Realtime.Degraded
	}
	if loc != nil {
		locRT = loc.Realtime.Degraded
	}
	// The two processes usually meet the same refusal (same host, same
	// capabilities): one line for both keeps the screen short.
	for _, d := range nmRT {
		who := "node manager"
		if slices.Contains(locRT, d) {
			who = "node manager, locator"
		}
		add("realtime_degraded", "%s: %s", who, d)
	}
	for _, d := range locRT {
		if !slices.Contains(nmRT, d) {
			add("realtime_degraded", "locator: %s", d)
		}
	}
	for _, n := range st.NotInForce {
		add("not_in_force", "not in force: %s", n)
	}
	for _, g := range st.Groups {
		if g.Error != "" {
			add("cgroup_error", "cgroup %s: %s", g.Group, g.Error)
		}
	}
	return out
}

// vipFailures warns of each floating IP the node manager holds the service
// for but could not add: callers of that address reach nobody.
func vipFailures(add func(kind, format string, args ...any), prefix string, r *ctlmsg.NodeManagerReport) {
	for _, f := range r.VIPsFailed {
		add("vip_error", "%sfloating IP %s is not on this host, which holds its service: %s; tried again every 500ms (journalctl -u vigil EVENT=vip_error)",
			prefix, f.VIP, f.Error)
	}
}

// foreignHint says why a node without a quorum may hear nobody: datagrams
// from its peers' addresses that carry another cluster's tag, which the
// kernel filter (kernel_tag) or the receiver (cluster) dropped, at the
// service's node manager or its locator. The locator's count matters: an
// active elsewhere renews with every locator all the time, but sends to
// this node manager only when it counts it in its ring, which a host of
// another cluster never joins. Counted since each process started, it is
// said only with no quorum.
func foreignHint(r *ctlmsg.NodeManagerReport, loc *ctlmsg.LocatorReport) string {
	var n uint64
	if r != nil {
		n += r.Transport.Dropped["kernel_tag"] + r.Transport.Dropped["cluster"]
	}
	if loc != nil {
		n += loc.Transport.Dropped["kernel_tag"] + loc.Transport.Dropped["cluster"]
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d datagrams from the peers' addresses were another cluster's (dropped as kernel_tag or cluster): compare cluster.name, the key and, with several services, the services' names and order on every host", n)
}

func times(n uint64) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// lastConflict is nm's last conflict, nil without a report or a conflict.
func lastConflict(nm *ctlmsg.NodeManagerReport) *ctlmsg.Conflict {
	if nm == nil {
		return nil
	}
	return nm.LastConflict
}
