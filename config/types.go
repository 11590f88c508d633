// Package config defines Vigil's configuration: the YAML schema of SPEC.md, its
// documented defaults, and strict validation whose errors name file, line and key.
package config

import "time"

// Config is one parsed and validated vigil.yaml. Every field has been
// defaulted; callers never see zero values that mean "unset".
type Config struct {
	// Source is the file the config was read from ("" when parsed from bytes).
	Source string

	Cluster Cluster
	// VIPs is every floating IP of the cluster's services, in file order
	// (the top-level vips: when the file has no services:); narrowed to a
	// service (ForService), that service's.
	VIPs []VIP
	// Services is, on a node, its services: those of services: (up to
	// netfloat.MaxSlots), or the implicit one made from the top-level
	// vips: (ImplicitService). On a witness, the services' names only (nil
	// when the file lists none). See Service, ServiceCount, ForService.
	Services []Service
	// Slot is the service this configuration was narrowed to
	// (ForService): its index in the file's services. 0 as loaded.
	Slot      int
	Announce  Announce
	Control   ControlGroup
	Apps      AppsGroup
	Processes []Process
	Hooks     Hooks
	Metrics   Metrics
	Runtime   Runtime
	Log       Log
}

// Role is what this host does in the cluster.
type Role string

const (
	RoleNode    Role = "node"    // may hold the active role and the floating IPs
	RoleWitness Role = "witness" // runs only the supervisor and a locator
)

// Cluster describes the peers and the protocol timing.
type Cluster struct {
	Name      string // required
	Node      string // this host's id; required, must be in Nodes or Witnesses
	Role      Role   // default node
	KeyFile   string // default /etc/vigil/cluster.key
	Listen    string // host:port, default the address of this node's entry
	Nodes     []Peer
	Witnesses []Peer
	TwoNode   bool // opt-in, unsafe under partition
	// LastManStanding: the window after which the active drops a silent
	// locator from the membership (and adds a returning one back); 0:
	// off, the default (protocol.Config.LastManStanding).
	LastManStanding time.Duration
	Timing          Timing
}

// Peer is one node or witness.
type Peer struct {
	ID      string
	Address string // host:port, validated with net.SplitHostPort + netip
}

// Timing holds the protocol intervals.
type Timing struct {
	TokenInterval time.Duration // default 10ms
	TokenTimeout  time.Duration // default 50ms
	Lease         time.Duration // default 60ms
	DriftMargin   time.Duration // default 15ms
}

// VIP is one floating address.
type VIP struct {
	Address   string // CIDR, v4 or v6, e.g. 192.0.2.100/24; required
	Interface string // required
}

// Service is a group of floating IPs held by one node at a time.
type Service struct {
	Name      string        // [a-zA-Z0-9_.-]+, unique; "default" for the implicit one
	VIPs      []VIP         // at least one in a configured service; the top-level vips: in the implicit one
	Processes []string      // names from processes:; nil: every critical process (today's node health)
	Prefer    []string      // node ids, most preferred first; nil: cluster.nodes order
	Failback  time.Duration // 0: off
	Implicit  bool          // made from the top-level vips: (no services: key)
}

// ImplicitService is the name of the service a file without services:
// has: its top-level vips: are that service's floating IPs.
const ImplicitService = "default"

// Announce configures how the active node announces its floating IPs:
// gratuitous ARP (request and reply form) for IPv4, an unsolicited
// neighbor advertisement with the override flag for IPv6.
type Announce struct {
	Count    int           // announcements per takeover, 1..100, default 3
	Interval time.Duration // between them, default 100ms
	// Refresh re-announces every held address this often after the
	// takeover burst (for switches that age ARP entries out or need
	// periodic GARP); 0, the default, turns it off.
	Refresh time.Duration
	// Probe, when > 0, sends an ARP probe / DAD solicitation before each
	// claim and listens this long for another host still answering for the
	// address (logged and counted as event=vip_conflict; the claim goes
	// ahead, the lease decides). The node manager waits for it, per
	// address, so keep it short. Default 0: off; while active, the watch
	// reports any host answering for a held address anyway.
	Probe time.Duration
	// HandoverGap, when > 0, makes a planned handover (switchover,
	// maintenance, an orderly stop) break-before-make: the old active
	// refuses new packets to its floating IPs at once (kernel lease), the
	// new one adds and announces them this long after it got the role.
	// Dialogs are then not split between the nodes: a request in the gap
	// is retransmitted by the client to the new active. 0: make-before-
	// break (the old active keeps taking packets until the new one
	// announced). At most 1s. Default DefaultHandoverGap.
	HandoverGap time.Duration
}

// DefaultHandoverGap is announce.handover_gap's default: longer than the
// time between a call's INVITE and its ACK on a busy host (measured up to
// 16 ms), so that no dialog is split by a switchover; the client sees
// that long without an answer (docs/operations.md, switchover).
const DefaultHandoverGap = 30 * time.Millisecond

// ControlGroup are the control plane's guarantees.
type ControlGroup struct {
	CPUWeight uint64 // 1..10000, default 10000 (v1: mapped to cpu.shares)
	IOWeight  uint64 // 1..10000, default 1000: v2 io.weight (the locator's fsyncs); v1: not used
	CPUs      string // cpuset list, "" = none reserved; validated as a cpu list
	MemoryMin int64  // bytes, default 64Mi
	Realtime  bool   // default true
	// RTBudget is the realtime CPU time each realtime control-plane group
	// (locator, node manager) may use per second, on kernels with
	// CONFIG_RT_GROUP_SCHED (cgroup v1 cpu.rt_runtime_us). Default 300ms.
	RTBudget time.Duration
	// SchedDelayWarn is the control-plane scheduling delay that logs a
	// warning and marks the node degraded. Default 50ms.
	SchedDelayWarn time.Duration
	// LatenessWarnShare is the share of the lease (0..1) the control
	// plane's lateness may eat before it warns (status, log, metric).
	// Default 0.25; 0 turns the warning off.
	LatenessWarnShare float64
}

// AppsGroup are the limits applied to the supervised applications as a whole.
type AppsGroup struct {
	CPUWeight uint64 // 1..10000, default 100
	IOWeight  uint64 // 1..10000, default 100: v2 io.weight; v1: not used
	CPUMax    string // "" or a percentage of one cpu, e.g. "150%"
	MemoryMax int64  // bytes, 0 = unlimited
	PidsMax   int64  // 0 = unlimited
}

// RestartPolicy says when a process that exited is started again.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Process is one supervised application.
type Process struct {
	Name        string            // required, unique, [a-zA-Z0-9_.-]+ (it names a cgroup)
	Command     []string          // required, Command[0] absolute or found in PATH at check time
	Env         []string          // KEY=VALUE, from a YAML mapping, sorted by key
	Dir         string            // working directory, default "/"
	User        string            // default "" = supervisor's user
	Group       string            // default "" = the user's primary group
	Rlimits     map[string]uint64 // keys: nofile, nproc, core, memlock, stack; "unlimited" is Unlimited; nil when none set
	Restart     RestartPolicy     // default always
	Critical    bool              // default false
	StopSignal  string            // canonical name (SIGTERM, SIGHUP, ...), default SIGTERM
	StopTimeout time.Duration     // default 10s
	Backoff     Backoff
	MemoryMax   int64   // per-process memory.max, 0 = unlimited
	PidsMax     int64   // per-process pids.max, 0 = unlimited
	CPUWeight   uint64  // per-process weight inside apps/, 0 = kernel default
	Health      *Health // nil = no health check
}

// Backoff controls restarts after failures.
type Backoff struct {
	Initial    time.Duration // delay of the second restart; the first is immediate. Default 100ms
	Max        time.Duration // cap, default 30s
	Stable     time.Duration // a run this long resets the backoff, default 10s
	FatalAfter int           // rapid failures before FATAL, default 10
}

// HealthKind names the check a Health runs.
type HealthKind string

const (
	HealthExec       HealthKind = "exec"
	HealthTCP        HealthKind = "tcp"
	HealthHTTP       HealthKind = "http"
	HealthSIPOptions HealthKind = "sip_options"
)

// Health is a periodic check of a process. Exactly one kind is configured.
type Health struct {
	Kind     HealthKind
	Exec     []string      // exec: argv; healthy when it exits 0
	TCP      string        // tcp: host:port; healthy when a connection opens
	HTTP     string        // http: URL; healthy on a 2xx/3xx
	SIP      string        // sip_options target URI, e.g. sip:127.0.0.1:5060; healthy on any final response < 500 except 408
	Interval time.Duration // default 1s
	Timeout  time.Duration // default 300ms, must be < Interval
	Rise     int           // default 2
	Fall     int           // default 3
	// Grace is how long after a start failures are not counted. Default 0.
	Grace time.Duration
}

// Hooks are commands run on role transitions.
type Hooks struct {
	OnActive  [][]string
	OnStandby [][]string
	OnFault   [][]string
	Timeout   time.Duration // default 10s
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string // "" = no listener; default 127.0.0.1:9720
}

// Runtime holds every path the daemon writes, so several instances can share a machine.
type Runtime struct {
	ControlSocket string // default /run/vigil/control.sock
	// ControlGroup is the group whose members may read the control
	// socket's status (nothing else): default "vigil", the packages'
	// group; "" or a group that does not exist means root only.
	ControlGroup string
	StateDir     string // default /var/lib/vigil
	// Cgroup is the name of Vigil's subtree inside the cgroup it was started in.
	// "" (the default) puts control/ and apps/ directly in that cgroup, which is
	// what systemd's Delegate=yes expects; when Vigil was started in a
	// hierarchy's root cgroup, "vigil" is used instead so the root is never written.
	Cgroup string
}

// Log configures the supervisor's logging.
type Log struct {
	Level  string // debug|info|warn|error, default info
	Format string // text|json, default text
}
