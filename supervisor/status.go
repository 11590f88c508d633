package supervisor

import (
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// State is a supervised process's lifecycle state. The strings are part of
// the stable JSON of `vigil status --json`.
type State string

const (
	StateRunning  State = "running"  // its main process, or (after it daemonized) its cgroup, is alive
	StateBackoff  State = "backoff"  // exited; waiting to be restarted
	StateExited   State = "exited"   // exited and its restart policy says not to restart
	StateFatal    State = "fatal"    // failed too often in a row; waits for `vigil restart` or a reload
	StateStopping State = "stopping" // being stopped (stop signal sent, waiting for its cgroup to empty)
	StateStopped  State = "stopped"  // stopped by the supervisor (shutdown, reload, restart)
)

// Status is the supervisor's answer to `vigil status --json`. Keys are stable
// and documented in docs/operations.md; add, never rename.
type Status struct {
	Version    string          `json:"version"`
	Cluster    string          `json:"cluster"`
	Node       string          `json:"node"`
	Role       string          `json:"role"`
	Healthy    bool            `json:"healthy"`
	Unhealthy  []string        `json:"unhealthy_reasons,omitempty"`
	Supervisor SupervisorState `json:"supervisor"`
	// ControlPlane are the locator and node manager processes.
	ControlPlane []ProcessStatus `json:"control_plane"`
	// NodeManager and Locator are those processes' own last reports
	// (see docs/operations.md), absent while they have not reported and
	// while they are not running (a dead process's report is not current).
	NodeManager *ctlmsg.NodeManagerReport `json:"nodemanager,omitempty"`
	Locator     *ctlmsg.LocatorReport     `json:"locator,omitempty"`
	Processes   []ProcessStatus           `json:"processes"`
	// Groups are the cgroups' usage and pressure; NotInForce lists the
	// guarantees this host could not apply (e.g. memory.min on cgroup v1).
	Groups     []GroupStatus `json:"cgroups"`
	NotInForce []string      `json:"not_in_force,omitempty"`
	// Quorum and Warnings are derived from the fields above by Summarize,
	// which `vigil status` calls on what the daemon sent, so that the
	// screen and --json say the same. Quorum is absent without a node
	// manager report (a witness, or the first lease after a start).
	Quorum   *Quorum   `json:"quorum,omitempty"`
	Warnings []Warning `json:"warnings"`

	// FloatingIPs are the configured floating IPs (of every service), held
	// or not; none on a witness. The node manager's vips_held says which
	// it holds.
	FloatingIPs []FloatingIP `json:"floating_ips,omitempty"`
	// Services are the configured services (the services: entries, or
	// "default" made from vips:); on a witness the ones it lists by name.
	Services []ServiceStatus `json:"services,omitempty"`
}

// FloatingIP is one configured floating IP, as in the configuration.
type FloatingIP struct {
	Address   string `json:"address"` // CIDR, e.g. 192.0.2.10/24
	Interface string `json:"interface"`
	Service   string `json:"service"`
}

// ServiceStatus is one service: its configuration, and its holder as this
// node knows it.
type ServiceStatus struct {
	Name string `json:"name"`
	// Prefer is every node, most preferred first: the order in which a
	// standby takes the service over (prefer:, then the other nodes).
	Prefer   []string `json:"prefer"`
	Failback string   `json:"failback"` // "off", or how long a more preferred node must be fit
	// Processes are the processes the service needs (its processes:, or
	// the critical ones).
	Processes []string `json:"processes,omitempty"`
	// Holder is the active node as the service's node manager last
	// reported it (a witness's locator, or the locator where the node
	// manager could not start the service), "" if none is known (or no
	// report yet); Summarize sets it.
	Holder string `json:"holder"`
	// NodeManager and Locator are the last reports of the service's own
	// node manager and locator, for services after the first (the first
	// service's are Status.NodeManager and Status.Locator).
	NodeManager *ctlmsg.NodeManagerReport `json:"nodemanager,omitempty"`
	Locator     *ctlmsg.LocatorReport     `json:"locator,omitempty"`
}

// Report is the last report of the node manager of service i of st: the
// host's for the first, the service's own for the others.
func (st *Status) Report(i int) *ctlmsg.NodeManagerReport {
	if i == 0 {
		return st.NodeManager
	}
	if i < len(st.Services) {
		return st.Services[i].NodeManager
	}
	return nil
}

// Reports are the last node-manager reports of st's services, in order,
// nil where there is none; at least one, the first service's.
func (st *Status) Reports() []*ctlmsg.NodeManagerReport {
	out := make([]*ctlmsg.NodeManagerReport, max(len(st.Services), 1))
	for i := range out {
		out[i] = st.Report(i)
	}
	return out
}

// LocatorReport is the last report of the locator of service i of st: the
// host's for the first, the service's own for the others.
func (st *Status) LocatorReport(i int) *ctlmsg.LocatorReport {
	if i == 0 {
		return st.Locator
	}
	if i < len(st.Services) {
		return st.Services[i].Locator
	}
	return nil
}

// QuorumOf is service i's node manager's view of its locators: Quorum
// (which Summarize fills) for the first, counted from the service's own
// report for the others; nil without a report naming locators.
func (st *Status) QuorumOf(i int) *Quorum {
	if i == 0 && st.Quorum != nil {
		return st.Quorum
	}
	if r := st.Report(i); r != nil && len(r.Locators) > 0 {
		return quorumOf(r)
	}
	return nil
}

// Quorum is this node's view of its locators: a lease needs Needed of
// them, and Answered did answer its check-ins within the last lease.
type Quorum struct {
	Locators int  `json:"locators"`
	Answered int  `json:"answered"`
	Needed   int  `json:"needed"`
	OK       bool `json:"ok"`
}

// Warning is one thing an operator should not miss. Kind is stable (most
// are the name of the log event that tells the story, for journalctl
// EVENT=...); Message is for people and may change.
type Warning struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// SupervisorState describes the supervisor process itself.
type SupervisorState struct {
	PID        int       `json:"pid"`
	StartedAt  time.Time `json:"started_at"`
	Config     string    `json:"config"`
	CgroupMode string    `json:"cgroup_mode"`
	Cgroup     string    `json:"cgroup"`
	Reloads    uint64    `json:"reloads"`
	Orphans    uint64    `json:"orphans_reaped"`
	RSSBytes   uint64    `json:"rss_bytes"`
	Fences     uint64    `json:"fences"`
	// FencesHeld counts node managers silent past their lease that were
	// left to the kernel lease instead of killed (event=fence_held).
	FencesHeld uint64 `json:"fences_held"`
}

// ProcessStatus is one supervised process.
type ProcessStatus struct {
	Name         string     `json:"name"`
	State        State      `json:"state"`
	PID          int        `json:"pid"`
	Daemonized   bool       `json:"daemonized,omitempty"`
	Critical     bool       `json:"critical"` // the service needs it: in its processes:, or critical: without that list; every control-plane process
	Restarts     int        `json:"restarts"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	LastExit     *ExitInfo  `json:"last_exit,omitempty"`
	NextStart    *time.Time `json:"next_start,omitempty"`
	Health       string     `json:"health"` // none | starting | healthy | unhealthy
	HealthError  string     `json:"health_error,omitempty"`
	Cgroup       string     `json:"cgroup"`
	RestartUsec  int64      `json:"last_restart_latency_us,omitempty"`
	SpawnError   string     `json:"spawn_error,omitempty"`
	FailureCount int        `json:"consecutive_failures"`
	LastReport   *time.Time `json:"last_report,omitempty"` // control plane: last heartbeat
	// Control plane: total time its threads spent runnable but waiting for
	// a cpu, and running, since it started (/proc/PID/task/*/schedstat).
	// Wait growing fast is starvation in the making.
	SchedWaitMS float64 `json:"sched_wait_ms,omitempty"`
	SchedRunMS  float64 `json:"sched_run_ms,omitempty"`
}

// ExitInfo is how a process last ended.
type ExitInfo struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	At     time.Time `json:"at"`
	Ran    string    `json:"ran"`
}
