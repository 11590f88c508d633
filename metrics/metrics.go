package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/schedwatch"
	"github.com/vigil-project/vigil/supervisor"
)

// Source returns a fresh status snapshot; the supervisor passes a function
// that asks its main loop.
type Source func(ctx context.Context) (*supervisor.Status, error)

// Roles are the values of vigil_role's role label; every one is emitted on
// every scrape (1 for the current role, 0 for the others) so a graph of a
// role never has gaps.
var roles = [...]string{"active", "standby", "candidate", "witness"}

// processStates are the values of vigil_process_state's state label, all
// emitted (0 or 1) so that an alert on "fatal" has a series to watch.
var processStates = [...]supervisor.State{
	supervisor.StateRunning, supervisor.StateBackoff, supervisor.StateExited,
	supervisor.StateFatal, supervisor.StateStopping, supervisor.StateStopped,
}

// alwaysDropReasons are datagram drop reasons emitted at 0 before the first
// drop: rate() and increase() see nothing of a counter's first value, so
// an alert on authentication failures would miss the first burst.
var alwaysDropReasons = []string{"auth"}

// healthStates are the values of vigil_process_health's state label.
var healthStates = [...]string{"healthy", "unhealthy", "starting", "none"}

// Process group labels: applications and the control plane.
const (
	groupApps    = "apps"
	groupControl = "control"
)

// Help texts of metrics emitted from more than one place (a name's help
// must be the same on every series).
const (
	helpReportPresent = "1 when the control-plane process has reported to the supervisor."
	helpMlocked       = "1 when the control-plane process's memory is locked (control.realtime)."
	helpScrapeError   = "1 when the status snapshot for this scrape failed."
	helpBuildInfo     = "Always 1; the version label is the running vigil's."
	helpNodeInfo      = "Always 1; the labels are this host's cluster name and node id (join on instance, job)."
	helpFloatingIP    = "1 when this node holds the floating IP, 0 when not; one series per configured address."
	helpNotStarted    = "1 while this host's node manager or locator could not start the service (its state file refused, its port taken): it takes no part in it, and tries again every 5 s; journalctl -u vigil EVENT=service_start_failed."
	helpRole          = "1 for this host's current role in the service (active, standby, candidate, witness), 0 for the others; all 0 while unknown; a witness has only role=\"witness\"."
)

// DefaultSnapshotTimeout bounds how long one scrape waits for the Source.
const DefaultSnapshotTimeout = 5 * time.Second

// takeoverBuckets are the histogram bounds of the takeover times, in
// seconds: a healthy takeover is tens of milliseconds, a starved one seconds.
var takeoverBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Option changes a collector's defaults.
type Option func(*collector)

// WithVersion sets vigil_build_info's version label, which is also what the
// collector emits when the snapshot fails. Without it the version is the
// last snapshot's, or the binary's module version before the first one.
func WithVersion(v string) Option { return func(c *collector) { c.version = v } }

// WithTimeout bounds how long one scrape waits for the Source (default
// DefaultSnapshotTimeout).
func WithTimeout(d time.Duration) Option {
	return func(c *collector) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// NewCollector returns a prometheus.Collector that takes one snapshot from
// src on every scrape and emits the metrics listed in doc.go as const
// metrics. It is unchecked (Describe sends nothing) because the label values
// come from the status; the names are fixed.
func NewCollector(src Source, opts ...Option) prometheus.Collector {
	c := &collector{src: src, timeout: DefaultSnapshotTimeout}
	for _, o := range opts {
		o(c)
	}
	c.takeovers = map[string]*takeoverHists{}
	return c
}

type collector struct {
	src     Source
	timeout time.Duration
	version string // fixed by WithVersion; "" = follow the status

	mu          sync.Mutex
	lastVersion string
	// lastCluster and lastNode are the last snapshot's, so that
	// vigil_node_info, which alerts join on for the cluster label, is
	// there when a snapshot fails too (vigil_scrape_error's alert).
	lastCluster, lastNode string
	// takeovers are the takeover histograms, by service.
	takeovers map[string]*takeoverHists
}

// takeoverHists are built from a service's node manager's last_takeover,
// observed once per new epoch: takeovers are far rarer than scrapes, so
// one can only be missed if two happen within one scrape interval.
type takeoverHists struct {
	epoch            uint64
	seen             bool
	added, announced *hist
}

// Describe sends nothing: an unchecked collector, see NewCollector.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

// Collect takes one snapshot and emits everything derived from it.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.src(ctx)
	if err == nil && st == nil {
		err = errors.New("metrics: source returned no status")
	}
	e := &emitter{ch: ch, seen: map[string]bool{}}
	if err != nil {
		e.gauge("vigil_scrape_error", helpScrapeError, 1)
		e.gauge("vigil_build_info", helpBuildInfo, 1, "version", c.versionFor(nil))
		if cluster, node := c.nodeInfo(nil); node != "" {
			e.gauge("vigil_node_info", helpNodeInfo, 1, "cluster", cluster, "node", node)
		}
		return
	}
	e.gauge("vigil_scrape_error", helpScrapeError, 0)
	e.gauge("vigil_build_info", helpBuildInfo, 1, "version", c.versionFor(st))
	c.collectStatus(e, st)
}

func (c *collector) versionFor(st *supervisor.Status) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st != nil && st.Version != "" {
		c.lastVersion = st.Version
	}
	switch {
	case c.version != "":
		return c.version
	case c.lastVersion != "":
		return c.lastVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// nodeInfo remembers st's cluster and node and returns the last ones seen.
func (c *collector) nodeInfo(st *supervisor.Status) (cluster, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st != nil && st.Node != "" {
		c.lastCluster, c.lastNode = st.Cluster, st.Node
	}
	return c.lastCluster, c.lastNode
}

// serviceNamesOf are the names of st's services, one per node manager and
// locator pair; a status without services (from a source that does not
// fill them) is one service with no name, whose series carry no service
// label.
func serviceNamesOf(st *supervisor.Status) []string {
	if len(st.Services) == 0 {
		return []string{""}
	}
	names := make([]string, len(st.Services))
	for i, s := range st.Services {
		names[i] = s.Name
	}
	return names
}

func (c *collector) collectStatus(e *emitter, st *supervisor.Status) {
	// Each service has a node manager and a locator of its own: their
	// series carry its name (service), so that every alert and panel
	// sees every service, not only the first.
	names := serviceNamesOf(st)
	for i, svc := range names {
		nm, loc := st.Report(i), st.LocatorReport(i)
		e.gauge("vigil_report_present", helpReportPresent, b2f(nm != nil), "process", "nodemanager", "service", svc)
		e.gauge("vigil_report_present", helpReportPresent, b2f(loc != nil), "process", "locator", "service", svc)
		e.gauge("vigil_service_not_started", helpNotStarted, b2f(loc != nil && loc.StartError != ""), "process", "locator", "service", svc)
		if st.Role != "witness" {
			e.gauge("vigil_service_not_started", helpNotStarted, b2f(nm.NotStarted()), "process", "nodemanager", "service", svc)
		}
		if st.Role == "witness" {
			// Only the role it has: a witness without a services list
			// does not know its one service's name, and its 0 for
			// role="active" would make a service of its own ("") that no
			// node holds, and an alert on it.
			e.gauge("vigil_role", helpRole, 1, "role", "witness", "service", svc)
			continue
		}
		role := ""
		if nm != nil {
			role = nm.Role
		}
		for _, r := range roles {
			e.gauge("vigil_role", helpRole, b2f(r == role), "role", r, "service", svc)
		}
	}

	// Supervisor and host.
	if cluster, node := c.nodeInfo(st); node != "" {
		// The one series that carries the cluster: alerts and dashboards
		// join on it (... * on(instance, job) group_left(cluster, node)
		// vigil_node_info), so a cluster label is never renamed to
		// exported_cluster where the scrape config sets its own.
		e.gauge("vigil_node_info", helpNodeInfo, 1, "cluster", cluster, "node", node)
	}
	e.gauge("vigil_node_healthy", "1 when this node is healthy: critical processes up, health checks passing, floating IPs' interfaces up.", b2f(st.Healthy))
	e.counter("vigil_fences_total", "Times the supervisor fenced a control-plane process whose heartbeat stopped.", float64(st.Supervisor.Fences))
	e.counter("vigil_fences_held_total", "Times the node manager was silent past its lease and left to the kernel lease instead of fenced.", float64(st.Supervisor.FencesHeld))
	e.counter("vigil_reloads_total", "Configuration reloads applied since the supervisor started.", float64(st.Supervisor.Reloads))
	e.counter("vigil_orphans_reaped_total", "Orphaned processes the supervisor reaped as subreaper.", float64(st.Supervisor.Orphans))
	e.gauge("vigil_supervisor_rss_bytes", "Resident memory of the supervisor process.", float64(st.Supervisor.RSSBytes))
	if !st.Supervisor.StartedAt.IsZero() {
		e.gauge("vigil_supervisor_start_time_seconds", "Unix time the supervisor started.", float64(st.Supervisor.StartedAt.UnixNano())/1e9)
	}
	e.gauge("vigil_guarantees_not_in_force", "Resource guarantees this host could not apply (see vigil status).", float64(len(st.NotInForce)))

	reports := st.Reports() // one per name: serviceNamesOf counts alike
	collectFloatingIPs(e, st.FloatingIPs, reports)
	collectServices(e, st.Services, reports)
	for i, svc := range names {
		collectQuorum(e, svc, st.QuorumOf(i))
		c.collectNodeManager(e, svc, reports[i])
		c.collectLocator(e, svc, st.LocatorReport(i))
	}
	collectProcesses(e, groupApps, st.Processes)
	collectProcesses(e, groupControl, st.ControlPlane)
	collectGroups(e, st.Groups)
}

func (c *collector) collectNodeManager(e *emitter, svc string, r *ctlmsg.NodeManagerReport) {
	if r == nil {
		return
	}
	e.gauge("vigil_epoch", "The cluster epoch as this node manager knows it; it increases on every change of active node.", float64(r.Epoch), "service", svc)
	e.gauge("vigil_lease_valid", "1 while this node holds a valid lease from a locator quorum.", b2f(r.LeaseValid), "service", svc)
	e.gauge("vigil_lease_remaining_seconds", "Time left on this node's lease.", ms(r.LeaseRemainingMS), "service", svc)
	e.gauge("vigil_token_held", "1 while this node holds the token.", b2f(r.HoldingToken), "service", svc)
	e.gauge("vigil_token_age_seconds", "Time since this node last saw the token.", ms(r.TokenAgeMS), "service", svc)
	e.gauge("vigil_token_rotation_seconds", "Duration of the token's last full rotation.", r.RotationMS/1e3, "service", svc)
	e.gauge("vigil_token_lost", "1 while the node manager considers the token lost.", b2f(r.TokenLost), "service", svc)
	e.gauge("vigil_maintenance", "1 while this node is in maintenance (will not take the active role).", b2f(r.Maintenance), "service", svc)
	if m := r.Membership; m != nil {
		e.gauge("vigil_membership_version", "Version of the locators' membership (cluster.last_man_standing): it grows with every change.", float64(m.Version), "service", svc)
		e.gauge("vigil_membership_locators", "Locators in the membership whose majority grants the role (cluster.last_man_standing).", float64(len(m.Members)), "service", svc)
	}
	e.counter("vigil_takeovers_total", "Times this node took the active role since its node manager started.", float64(r.Takeovers), "service", svc)
	if t := r.LastTakeover; t != nil {
		e.gauge("vigil_last_takeover_added_seconds", "Last takeover: from the decision to the floating IPs added.", t.AddedMS/1e3, "service", svc)
		e.gauge("vigil_last_takeover_announced_seconds", "Last takeover: from the decision to the first GARP/NA sent.", t.AnnouncedMS/1e3, "service", svc)
	}
	added, announced := c.observeTakeover(svc, r.LastTakeover)
	e.histogram("vigil_takeover_added_seconds", "Takeovers seen by this collector: decision to floating IPs added.", added, "service", svc)
	e.histogram("vigil_takeover_announced_seconds", "Takeovers seen by this collector: decision to first announcement.", announced, "service", svc)

	e.gauge("vigil_floating_ips_held", "Number of floating IPs this node holds.", float64(len(r.VIPs)), "service", svc)
	if k := r.KernelLease; k != nil {
		e.gauge("vigil_kernel_lease_enforced", "1 when the kernel itself stops serving the floating IPs at the end of the lease (nftables).", b2f(k.State == ctlmsg.KernelLeaseEnforcing), "service", svc)
		e.counter("vigil_kernel_lease_failures_total", "Failed attempts to program the kernel lease (each disarms it until the next success).", float64(k.Failures), "service", svc)
		e.counter("vigil_kernel_lease_refresh_fallbacks_total", "Kernel lease refreshes sent through the nftables library because the hand-built batch failed.", float64(k.RefreshFallbacks), "service", svc)
		e.gauge("vigil_kernel_lease_max_apply_seconds", "Longest kernel lease refresh transaction since the node manager started.", float64(k.MaxApplyUS)/1e6, "service", svc)
	}
	e.counter("vigil_garp_sent_total", "Gratuitous ARP packets sent for floating IPv4 addresses.", float64(r.GARPSent), "service", svc)
	e.counter("vigil_na_sent_total", "Unsolicited neighbour advertisements sent for floating IPv6 addresses.", float64(r.NASent), "service", svc)
	e.counter("vigil_announcements_unleased_total", "Announcements of a held floating IP not sent because they were due after the lease had ended (the node manager was late to drop the address).", float64(r.AnnounceUnleased), "service", svc)
	e.counter("vigil_ip_conflicts_total", "Times another host answered for a floating IP this node holds.", float64(r.Conflicts), "service", svc)
	e.counter("vigil_hook_failures_total", "Role-change hooks that failed or timed out.", float64(r.HookFailures), "service", svc)
	e.counter("vigil_late_ticks_total", "Protocol ticks that fired more than a token interval late.", float64(r.LateTimers), "service", svc)
	e.gauge("vigil_late_tick_max_seconds", "The latest protocol tick since the node manager started.", r.MaxLateMS/1e3, "service", svc)
	e.counter("vigil_loop_slow_total", "Passes of the node manager's loop that took over a quarter of the lease (event=loop_slow names the step).", float64(r.SlowPasses), "service", svc)

	for _, p := range r.Peers {
		e.gauge("vigil_peer_healthy", "1 when the node reported itself healthy on the token.", b2f(p.Healthy), "node", p.ID, "service", svc)
		e.gauge("vigil_peer_maintenance", "1 when the node is in maintenance, as carried by the token.", b2f(p.Maintenance), "node", p.ID, "service", svc)
		e.gauge("vigil_peer_in_ring", "1 when the node is in the token ring.", b2f(p.InRing), "node", p.ID, "service", svc)
	}
	for _, l := range r.Locators {
		e.gauge("vigil_node_locator_seen", "1 when the locator has answered this node.", b2f(l.Seen), "locator", l.ID, "service", svc)
		if l.Seen {
			e.gauge("vigil_node_locator_ack_age_seconds", "Time since the locator last answered this node's check-in.", ms(l.AgeMS), "locator", l.ID, "service", svc)
		}
	}
	collectControlProcess(e, "nodemanager", svc, controlReport{r.Degraded, r.SchedLateEpisodes, r.SchedMaxLateMS, r.SchedLate, r.Timing, r.Transport, r.Realtime.Mlocked})
}

// observeTakeover adds service svc's last takeover t (nil: none yet) to
// its histograms unless already seen, and returns them.
func (c *collector) observeTakeover(svc string, t *ctlmsg.Takeover) (added, announced histSnapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.takeovers[svc]
	if h == nil {
		h = &takeoverHists{added: newHist(takeoverBuckets), announced: newHist(takeoverBuckets)}
		c.takeovers[svc] = h
	}
	if t != nil && (!h.seen || t.Epoch != h.epoch) {
		h.seen, h.epoch = true, t.Epoch
		h.added.observe(t.AddedMS / 1e3)
		h.announced.observe(t.AnnouncedMS / 1e3)
	}
	return h.added.snapshot(), h.announced.snapshot()
}

func (c *collector) collectLocator(e *emitter, svc string, r *ctlmsg.LocatorReport) {
	if r == nil {
		return
	}
	e.gauge("vigil_locator_epoch", "The highest epoch this host's locator has granted or seen.", float64(r.Epoch), "service", svc)
	e.gauge("vigil_locator_lease_remaining_seconds", "Time left on the lease this locator granted to the holder.", ms(r.LeaseRemainingMS), "service", svc)
	e.gauge("vigil_locator_quarantined", "1 while the locator is quarantined after a restart (grants nothing).", b2f(r.Quarantined), "service", svc)
	e.counter("vigil_locator_persist_errors_total", "Failed writes of the locator's state file.", float64(r.PersistErrors), "service", svc)
	for _, n := range r.Nodes {
		e.gauge("vigil_locator_node_seen", "1 when the node has checked in at this host's locator.", b2f(n.Seen), "node", n.ID, "service", svc)
		if n.Seen {
			e.gauge("vigil_locator_checkin_age_seconds", "Time since the node last checked in at this host's locator.", ms(n.AgeMS), "node", n.ID, "service", svc)
		}
	}
	collectControlProcess(e, "locator", svc, controlReport{r.Degraded, r.SchedLateEpisodes, r.SchedMaxLateMS, r.SchedLate, r.Timing, r.Transport, r.Realtime.Mlocked})
}

// controlReport is what a node manager's and a locator's reports both say
// of their process.
type controlReport struct {
	degraded  bool
	episodes  uint64
	maxLateMS float64
	late      *schedwatch.HistogramJSON
	timing    *timingstat.Report
	transport transport.Stats
	mlocked   bool
}

// collectControlProcess exports a control-plane process's scheduling,
// timing, transport and memory lock (process = nodemanager | locator).
func collectControlProcess(e *emitter, proc, svc string, r controlReport) {
	collectControl(e, proc, svc, r.degraded, r.episodes, r.maxLateMS)
	collectLateness(e, proc, svc, r.late)
	collectTiming(e, proc, svc, r.timing)
	collectTransport(e, proc, svc, r.transport)
	e.gauge("vigil_control_mlocked", helpMlocked, b2f(r.mlocked), "process", proc, "service", svc)
}

// collectServices emits every configured service with 1 while this node
// holds it (its node manager is active with a valid lease), else 0, so
// that "held by no node" is a sum of zeros by service.
func collectServices(e *emitter, svcs []supervisor.ServiceStatus, reports []*ctlmsg.NodeManagerReport) {
	for i, s := range svcs {
		var nm *ctlmsg.NodeManagerReport
		if i < len(reports) {
			nm = reports[i]
		}
		held := nm != nil && nm.Role == "active" && nm.LeaseValid
		e.gauge("vigil_service_held", "1 while this node holds the service (active, with a valid lease).", b2f(held), "service", s.Name)
	}
}

// collectFloatingIPs emits every configured floating IP with 0 or 1, so
// that "held by no node" is a sum of zeros and not an absent series. The
// vip label is the bare address and interface its interface: nodes of one
// cluster may name their interfaces differently, and alerts sum by vip.
// Without a node manager report nothing is known to be held (after a fence
// the supervisor removes the addresses): all 0. An address held but no
// longer configured (a reload removing it) is emitted with 1.
func collectFloatingIPs(e *emitter, configured []supervisor.FloatingIP, reports []*ctlmsg.NodeManagerReport) {
	type key struct{ addr, iface string }
	held := map[key]bool{}
	var order []key
	for _, nm := range reports {
		if nm == nil {
			continue
		}
		for _, v := range nm.VIPs {
			// vips_held entries are netfloat.VIP strings: prefix@interface.
			prefix, iface, _ := strings.Cut(v, "@")
			k := key{vipAddr(prefix), iface}
			held[k] = true
			order = append(order, k)
		}
	}
	done := map[key]bool{}
	for _, v := range configured {
		k := key{vipAddr(v.Address), v.Interface}
		e.gauge("vigil_floating_ip_held", helpFloatingIP, b2f(held[k]), "vip", k.addr, "interface", k.iface, "service", v.Service)
		done[k] = true
	}
	for _, k := range order {
		if !done[k] {
			// No longer configured: no service names it any more.
			e.gauge("vigil_floating_ip_held", helpFloatingIP, 1, "vip", k.addr, "interface", k.iface, "service", "")
		}
	}
}

// vipAddr is the address of a floating IP's CIDR (192.0.2.10/24 ->
// 192.0.2.10), IPv4-mapped IPv6 unmapped as the node manager does; what
// does not parse is kept as it is.
func vipAddr(cidr string) string {
	if p, err := netip.ParsePrefix(cidr); err == nil {
		return p.Addr().Unmap().String()
	}
	if a, err := netip.ParseAddr(cidr); err == nil {
		return a.Unmap().String()
	}
	return cidr
}

// collectQuorum exports a service's quorum (this node's locators that
// answered within a lease against the majority a lease needs). Absent
// without a node manager report, as in vigil status.
func collectQuorum(e *emitter, svc string, q *supervisor.Quorum) {
	if q == nil {
		return
	}
	e.gauge("vigil_quorum_ok", "1 when enough locators answered this node within the last lease to grant it one (quorum.ok in vigil status).", b2f(q.OK), "service", svc)
	e.gauge("vigil_quorum_locators", "Locators whose majority grants the role: every locator, or the membership's with last_man_standing.", float64(q.Locators), "service", svc)
	e.gauge("vigil_quorum_locators_answered", "Locators that answered this node's check-ins within the last lease.", float64(q.Answered), "service", svc)
	e.gauge("vigil_quorum_locators_needed", "Locators a lease needs (a majority of the membership; 1 of 2 with two_node).", float64(q.Needed), "service", svc)
}

func collectControl(e *emitter, proc, svc string, degraded bool, episodes uint64, maxLateMS float64) {
	e.gauge("vigil_control_degraded", "1 while the control-plane process was not scheduled for longer than control.sched_delay_warn within the last 10 s.", b2f(degraded), "process", proc, "service", svc)
	e.counter("vigil_sched_late_episodes_total", "Episodes of the control-plane process not being scheduled in time (each logged once).", float64(episodes), "process", proc, "service", svc)
	e.gauge("vigil_sched_max_late_seconds", "The longest the control-plane process waited past a timer since it started.", maxLateMS/1e3, "process", proc, "service", svc)
}

// collectTiming exports the lease-share warning (control.lateness_warn_share)
// and the recent worst lateness it is judged on. The round trips and the
// full histograms are left to `vigil check --timing`, which reads them
// from status: as histograms here they would be a series per bucket.
func collectTiming(e *emitter, proc, svc string, t *timingstat.Report) {
	if t == nil {
		return
	}
	e.gauge("vigil_timing_margin_warning", "1 while the control-plane process ran later than control.lateness_warn_share of the lease within the last 10 s.", b2f(t.Warning), "process", proc, "service", svc)
	e.counter("vigil_timing_margin_episodes_total", "Episodes of the control-plane process running later than control.lateness_warn_share of the lease (each logged once, event=timing_margin).", float64(t.Episodes), "process", proc, "service", svc)
	e.gauge("vigil_control_late_recent_max_seconds", "The latest the control-plane process's protocol tick ran within the last 10 s.", t.RecentMaxLateMS/1e3, "process", proc, "service", svc)
	e.gauge("vigil_timing_margin_warn_seconds", "The lateness that warns: control.lateness_warn_share × the lease (0: the warning is off).", t.WarnMS/1e3, "process", proc, "service", svc)
}

// collectLateness exports how late each of the process's 10 ms wakeups
// fired: the "not scheduled for X ms" measure as a distribution.
func collectLateness(e *emitter, proc, svc string, h *schedwatch.HistogramJSON) {
	if h == nil || len(h.BoundsSeconds) != len(h.Counts) {
		return
	}
	b := make(map[float64]uint64, len(h.Counts))
	for i, le := range h.BoundsSeconds {
		b[le] = h.Counts[i]
	}
	e.histogram("vigil_sched_late_seconds", "How late the control-plane process's 10 ms timer fired, per wakeup (Corosync's \"not scheduled for X ms\").",
		histSnapshot{count: h.Count, sum: h.SumSeconds, buckets: b}, "process", proc, "service", svc)
}

func collectTransport(e *emitter, proc, svc string, t transport.Stats) {
	dropped := t.Dropped
	e.counter("vigil_datagrams_received_total", "Protocol datagrams received.", float64(t.Received), "process", proc, "service", svc)
	e.counter("vigil_datagrams_sent_total", "Protocol datagrams sent.", float64(t.Sent), "process", proc, "service", svc)
	e.counter("vigil_datagrams_send_errors_total", "Protocol datagrams the kernel refused to send.", float64(t.SendErrors), "process", proc, "service", svc)
	if t.KernelFilter != "" {
		e.gauge("vigil_cluster_filter_active", "1 while the kernel (nftables) drops datagrams to this process's cluster port from non-peers; 0 when it could not be installed (userspace checks only) or is off (loopback cluster).",
			b2f(t.KernelFilter == "nftables"), "process", proc, "service", svc)
	}
	reasons := slices.Clone(alwaysDropReasons)
	for k := range dropped {
		if !slices.Contains(reasons, k) {
			reasons = append(reasons, k)
		}
	}
	slices.Sort(reasons)
	for _, k := range reasons {
		e.counter("vigil_datagrams_dropped_total", "Protocol datagrams dropped, by reason (kernel_filter = non-peer source dropped by the kernel, kernel_tag = from a peer address without the cluster tag, dropped by the kernel, stranger, source, auth = failed authentication, replay, overflow, short, ...).", float64(dropped[k]), "process", proc, "reason", k, "service", svc)
	}
}

func collectProcesses(e *emitter, group string, ps []supervisor.ProcessStatus) {
	for _, p := range ps {
		e.gauge("vigil_process_up", "1 while the process (or, once it daemonized, its cgroup) is running.", b2f(p.State == supervisor.StateRunning), "process", p.Name, "group", group)
		for _, s := range processStates {
			e.gauge("vigil_process_state", "1 for the process's current state (running, backoff, exited, fatal, stopping, stopped).", b2f(s == p.State), "process", p.Name, "group", group, "state", string(s))
		}
		e.counter("vigil_process_restarts_total", "Times the supervisor restarted the process.", float64(p.Restarts), "process", p.Name, "group", group)
		e.gauge("vigil_process_consecutive_failures", "Failures in a row; reset once the process stays up.", float64(p.FailureCount), "process", p.Name, "group", group)
		h := p.Health
		if !slices.Contains(healthStates[:], h) {
			h = "none"
		}
		for _, s := range healthStates {
			e.gauge("vigil_process_health", "1 for the process's current health-check state (healthy, unhealthy, starting, none).", b2f(s == h), "process", p.Name, "group", group, "state", s)
		}
		if p.StartedAt != nil && p.State == supervisor.StateRunning {
			e.gauge("vigil_process_start_time_seconds", "Unix time the running process started.", float64(p.StartedAt.UnixNano())/1e9, "process", p.Name, "group", group)
		}
		if p.RestartUsec > 0 {
			e.gauge("vigil_process_last_restart_latency_seconds", "Last restart: from the exit seen to the new process started.", float64(p.RestartUsec)/1e6, "process", p.Name, "group", group)
		}
		if p.LastReport != nil && !p.LastReport.IsZero() {
			e.gauge("vigil_control_last_report_time_seconds", "Unix time of the control-plane process's last heartbeat to the supervisor.", float64(p.LastReport.UnixNano())/1e9, "process", p.Name)
		}
		// Run-queue wait growing faster than run time is the control plane
		// being starved before any timer is late; absent when unread.
		if group == groupControl && (p.SchedWaitMS > 0 || p.SchedRunMS > 0) {
			e.counter("vigil_control_sched_wait_seconds_total", "Time the control-plane process's threads spent runnable but waiting for a CPU, since it started (/proc/PID/task/*/schedstat).", p.SchedWaitMS/1e3, "process", p.Name)
			e.counter("vigil_control_sched_run_seconds_total", "Time the control-plane process's threads spent running on a CPU, since it started.", p.SchedRunMS/1e3, "process", p.Name)
		}
	}
}

func collectGroups(e *emitter, gs []supervisor.GroupStatus) {
	for _, g := range gs {
		e.gauge("vigil_cgroup_read_error", "1 when reading the cgroup's statistics failed (see vigil status).", b2f(g.Error != ""), "group", g.Group)
		// A failed read leaves the values zero; emitting them would look
		// like a counter reset, so they are left out until a read works.
		if g.Error == "" || g.CPUUsageUsec != 0 || g.MemoryCurrent != 0 || g.PidsCurrent != 0 {
			e.counter("vigil_cgroup_cpu_usage_seconds_total", "CPU time used by the cgroup's tasks.", float64(g.CPUUsageUsec)/1e6, "group", g.Group)
			e.counter("vigil_cgroup_cpu_throttled_seconds_total", "Time the cgroup's tasks were throttled by its CPU quota.", float64(g.ThrottledUsec)/1e6, "group", g.Group)
			e.counter("vigil_cgroup_cpu_throttled_periods_total", "CPU quota periods in which the cgroup was throttled.", float64(g.NrThrottled), "group", g.Group)
			e.gauge("vigil_cgroup_memory_bytes", "Memory charged to the cgroup.", float64(g.MemoryCurrent), "group", g.Group)
			e.counter("vigil_cgroup_oom_kills_total", "Tasks of the cgroup killed by the OOM killer.", float64(g.OOMKills), "group", g.Group)
			e.gauge("vigil_cgroup_pids", "Tasks in the cgroup.", float64(g.PidsCurrent), "group", g.Group)
			if g.MemoryMax > 0 {
				e.gauge("vigil_cgroup_memory_max_bytes", "The cgroup's memory limit (absent = no limit).", float64(g.MemoryMax), "group", g.Group)
			}
		}
		if g.RTBudgetUsec > 0 {
			e.gauge("vigil_cgroup_rt_budget_seconds", "Realtime time the cgroup's tasks may use on each CPU per second (cpu.rt_runtime_us; absent: no per-group budget in force).", float64(g.RTBudgetUsec)/1e6, "group", g.Group)
			if g.RTPeakShare != nil {
				e.gauge("vigil_cgroup_rt_budget_peak_ratio", "Largest share of its realtime budget the cgroup used on one CPU within a second, over the last 10 s; at 1 the kernel stops it on that CPU until the second ends.", *g.RTPeakShare, "group", g.Group)
			}
			e.counter("vigil_cgroup_rt_budget_high_total", "Episodes in which the cgroup used over half its realtime budget on one CPU within a second (event=rt_budget_high), since the supervisor started.", float64(g.RTHighEpisodes), "group", g.Group)
		}
		for _, p := range []struct {
			res string
			v   *float64
		}{{"cpu", g.CPUPressure}, {"memory", g.MemPressure}, {"io", g.IOPressure}} {
			if p.v == nil {
				continue
			}
			scope := g.PressureScope
			if scope == "" {
				scope = "unknown"
			}
			e.gauge("vigil_cgroup_pressure_some_avg10_ratio", "PSI 'some' avg10 as a ratio (0..1); scope=host on cgroup v1, which has no per-group PSI.", *p.v/100, "group", g.Group, "resource", p.res, "scope", scope)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func ms(v int64) float64 { return float64(v) / 1e3 }

// emitter sends const metrics, building each name's Desc once per scrape
// and dropping a repeated series (a status with two entries of one name)
// instead of failing the whole scrape.
type emitter struct {
	ch    chan<- prometheus.Metric
	descs map[string]*prometheus.Desc
	help  map[string]string
	seen  map[string]bool
}

func (e *emitter) desc(name, help string, labels []string) *prometheus.Desc {
	if e.descs == nil {
		e.descs, e.help = map[string]*prometheus.Desc{}, map[string]string{}
	}
	if d, ok := e.descs[name]; ok {
		return d
	}
	keys := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		keys = append(keys, labels[i])
	}
	d := prometheus.NewDesc(name, help, keys, nil)
	e.descs[name] = d
	return d
}

func (e *emitter) send(name, help string, vt prometheus.ValueType, v float64, labels []string) {
	key := name + "\xff" + strings.Join(labels, "\xff")
	if e.seen[key] {
		return
	}
	e.seen[key] = true
	vals := make([]string, 0, len(labels)/2)
	for i := 1; i < len(labels); i += 2 {
		vals = append(vals, labels[i])
	}
	m, err := prometheus.NewConstMetric(e.desc(name, help, labels), vt, v, vals...)
	if err != nil {
		// Invalid label values (not UTF-8) come from the status; a bad
		// series is reported as an invalid metric, not a crash.
		e.ch <- prometheus.NewInvalidMetric(e.desc(name, help, labels), err)
		return
	}
	e.ch <- m
}

func (e *emitter) gauge(name, help string, v float64, labels ...string) {
	e.send(name, help, prometheus.GaugeValue, v, labels)
}

func (e *emitter) counter(name, help string, v float64, labels ...string) {
	e.send(name, help, prometheus.CounterValue, v, labels)
}

func (e *emitter) histogram(name, help string, h histSnapshot, labels ...string) {
	vals := make([]string, 0, len(labels)/2)
	for i := 1; i < len(labels); i += 2 {
		vals = append(vals, labels[i])
	}
	m, err := prometheus.NewConstHistogram(e.desc(name, help, labels), h.count, h.sum, h.buckets, vals...)
	if err != nil {
		e.ch <- prometheus.NewInvalidMetric(e.desc(name, help, labels), err)
		return
	}
	e.ch <- m
}

// hist is a cumulative histogram the collector fills itself.
type hist struct {
	bounds []float64
	counts []uint64 // counts[i]: observations <= bounds[i]
	count  uint64
	sum    float64
}

type histSnapshot struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64
}

func newHist(bounds []float64) *hist {
	return &hist{bounds: bounds, counts: make([]uint64, len(bounds))}
}

func (h *hist) observe(v float64) {
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.count++
	h.sum += v
}

func (h *hist) snapshot() histSnapshot {
	b := make(map[float64]uint64, len(h.bounds))
	for i, u := range h.bounds {
		b[u] = h.counts[i]
	}
	return histSnapshot{count: h.count, sum: h.sum, buckets: b}
}

// Handler serves reg in the Prometheus text format. A series that fails is
// left out rather than failing the scrape; at most a few scrapes run at
// once, so a stuck Source cannot pile up requests.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             DefaultSnapshotTimeout + 5*time.Second,
	})
}

// Serve serves c on http://listen/metrics until ctx ends, then shuts the
// listener down and returns nil. listen "" means no listener: it returns nil
// at once. Errors (address in use, ...) name the address.
func Serve(ctx context.Context, listen string, c prometheus.Collector, log *slog.Logger) error {
	if listen == "" {
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", listen, err)
	}
	return serveOn(ctx, ln, c, log)
}

func serveOn(ctx context.Context, ln net.Listener, c prometheus.Collector, log *slog.Logger) error {
	return serveWith(ctx, ln, c, log, defaultLimits)
}

// serveWith is serveOn with the connection limits given (tests shorten
// them).
func serveWith(ctx context.Context, ln net.Listener, c prometheus.Collector, log *slog.Logger, lim serverLimits) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := ln.Addr().String()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		ln.Close()
		return fmt.Errorf("metrics: register collector for %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(reg))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "vigil: metrics at /metrics")
	})
	srv := &http.Server{
		Handler:  mux,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ll := newLimitListener(ln, lim.maxConns)
	lim.apply(srv, ll)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ll) }()
	log.Info("metrics listening", "event", "metrics_listen", "addr", addr)
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// A scrape still running past the grace period: close it hard.
		srv.Close()
	}
	<-errc
	log.Info("metrics stopped", "event", "metrics_stop", "addr", addr)
	return nil
}
