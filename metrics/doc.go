// Package metrics exports the supervisor's status as Prometheus metrics.
//
// Wiring (in the supervisor):
//
//	c := metrics.NewCollector(func(ctx context.Context) (*supervisor.Status, error) {
//		return s.Status(ctx) // e.g. a method that asks the main loop for snapshot()
//	}, metrics.WithVersion(version))
//	go func() {
//		if err := metrics.Serve(ctx, cfg.Metrics.Listen, c, log); err != nil {
//			log.Error("metrics", "err", err)
//		}
//	}()
//
// Every scrape takes one status snapshot (supervisor.Status, with the node
// manager's and the locator's own reports inside) and emits const metrics
// from it, so the values are exactly what `vigil status --json` shows at
// that moment. When the snapshot fails only vigil_scrape_error (1) and
// vigil_build_info are emitted.
//
// # Clusters and alerts
//
// Only vigil_node_info carries the cluster name (and the node id); every
// other series is joined to it on the scrape target, so one Prometheus can
// watch many clusters without a cluster label on each series (which a
// scrape config that sets its own would rename to exported_cluster):
//
//	vigil_node_healthy * on(instance, job) group_left(cluster, node) vigil_node_info
//	sum by (cluster, vip) (vigil_floating_ip_held * on(instance, job) group_left(cluster) vigil_node_info)
//
// vigil_floating_ip_held has a series for every configured floating IP on
// every node (a witness has none), 0 or 1, so the second expression is 0
// when no node of the cluster holds the address and 2 when two do; the vip
// label is the bare address because nodes may name the interface
// differently. Without a node manager report every address is 0. After a
// failed snapshot vigil_node_info still comes with the last labels, so the
// scrape-error alert has a cluster. The datagram drop reason "auth" is
// emitted at 0 before the first drop, so rate() sees the first one.
// packaging/prometheus/vigil-rules.yml holds the alerts, written this way;
// its promtool unit test (rules_test.go) feeds them series this collector
// produced.
//
// Names are stable and carry their unit: _seconds, _bytes, _ratio (0..1),
// _total for counters, _info for constant-1 metrics whose labels are the
// value. Labels are bounded by the configuration: process and group names,
// service names, floating IP addresses, node and locator ids, datagram drop
// reasons, this host's cluster name; never PIDs or epochs. Metrics from the
// node manager are absent on a witness and while the node manager has not
// reported; those from the locator likewise (vigil_report_present says
// which).
//
// # Services
//
// Every service has a node manager and a locator of its own on each host,
// so everything they report, and vigil_role and the quorum, carries a
// service label: one series per service (service="default" for a file
// with vips: and no services:). An alert on a role therefore sums by
// (cluster, service), so that a second service with no holder is not
// hidden by the first one's active node:
//
//	sum by (cluster, service) (vigil_role{role="active"} * on(instance, job) group_left(cluster) vigil_node_info) == 0
//
// A witness exports only vigil_role{role="witness"} 1, for each service
// it lists (without a service label when it lists none: it does not know
// the name), so that it adds no service of its own to those sums. The
// supervisor's own series and the processes' and cgroups' are the host's
// and have no service label.
//
// # Metrics
//
// Type: G gauge, C counter, H histogram.
//
//	Name                                           T  Labels                    Meaning
//	---------------------------------------------- -- ------------------------- -------------------------------------------------------------
//	Always
//	vigil_scrape_error                             G                            1 when the status snapshot for this scrape failed
//	vigil_build_info                               G  version                   always 1; the running vigil's version
//
//	Supervisor and this host
//	vigil_report_present                           G  process, service          1 when nodemanager/locator has reported to the supervisor
//	vigil_service_not_started                      G  process, service          1 while nodemanager/locator could not start the service (retried every 5 s)
//	vigil_role                                     G  role, service             1 for the current role (active|standby|candidate|witness); all 0 = unknown or not started; a witness: only role=witness
//	vigil_node_info                                G  cluster, node             always 1; this host's cluster name and node id (join on instance, job)
//	vigil_node_healthy                             G                            1 when this node is healthy (critical processes up, checks passing, VIP interfaces up)
//	vigil_floating_ip_held                         G  vip, interface, service   1 if this node holds the configured floating IP, else 0
//	vigil_quorum_ok                                G  service                   1 when enough locators answered within the last lease (absent without a node manager report)
//	vigil_quorum_locators                          G  service                   locators whose majority grants the role (the membership's with last_man_standing)
//	vigil_quorum_locators_answered                 G  service                   of those, the ones that answered within the last lease
//	vigil_quorum_locators_needed                   G  service                   locators a lease needs (majority of the membership; 1 of 2 with two_node)
//	vigil_membership_version                       G  service                   version of the locators' membership (last_man_standing only)
//	vigil_membership_locators                      G  service                   locators in the membership (last_man_standing only)
//	vigil_fences_total                             C                            control-plane processes fenced because their heartbeat stopped
//	vigil_fences_held_total                        C                            node manager silent past its lease, left to the kernel lease (not killed)
//	vigil_reloads_total                            C                            configuration reloads applied
//	vigil_orphans_reaped_total                     C                            orphans reaped by the supervisor (subreaper)
//	vigil_supervisor_rss_bytes                     G                            resident memory of the supervisor
//	vigil_supervisor_start_time_seconds            G                            Unix time the supervisor started
//	vigil_guarantees_not_in_force                  G                            resource guarantees this host could not apply
//
//	Cluster, as this node manager sees it
//	vigil_epoch                                    G  service                   cluster epoch; increases on every change of active node
//	vigil_lease_valid                              G  service                   1 while this node holds a valid lease
//	vigil_lease_remaining_seconds                  G  service                   time left on this node's lease
//	vigil_token_held                               G  service                   1 while this node holds the token
//	vigil_token_age_seconds                        G  service                   time since this node last saw the token
//	vigil_token_rotation_seconds                   G  service                   duration of the token's last full rotation
//	vigil_token_lost                               G  service                   1 while the token is considered lost
//	vigil_maintenance                              G  service                   1 while this node is in maintenance
//	vigil_takeovers_total                          C  service                   times this node took the active role (since the node manager started)
//	vigil_last_takeover_added_seconds              G  service                   last takeover: decision to floating IPs added
//	vigil_last_takeover_announced_seconds          G  service                   last takeover: decision to first GARP/NA
//	vigil_takeover_added_seconds                   H  service                   takeovers seen by this collector: decision to IPs added
//	vigil_takeover_announced_seconds               H  service                   takeovers seen by this collector: decision to first announcement
//	vigil_floating_ips_held                        G  service                   number of floating IPs held
//	vigil_service_held                             G  service                   1 while this node holds the service (active, lease valid)
//	vigil_kernel_lease_enforced                    G  service                   1 when the kernel stops serving the floating IPs at lease end (nftables); 0 unavailable or failing (nodes with VIPs)
//	vigil_kernel_lease_failures_total              C  service                   failed kernel lease programming transactions
//	vigil_kernel_lease_max_apply_seconds           G  service                   longest kernel lease refresh transaction
//	vigil_kernel_lease_refresh_fallbacks_total     C  service                   refreshes sent through the nftables library: the hand-built batch failed
//	vigil_garp_sent_total                          C  service                   gratuitous ARPs sent
//	vigil_na_sent_total                            C  service                   unsolicited neighbour advertisements sent
//	vigil_announcements_unleased_total             C  service                   announcements not sent: due after the lease ended
//	vigil_ip_conflicts_total                       C  service                   another host answered for a floating IP we hold
//	vigil_hook_failures_total                      C  service                   role-change hooks that failed or timed out
//	vigil_late_ticks_total                         C  service                   protocol ticks more than a token interval late
//	vigil_loop_slow_total                          C  service                   node manager loop passes over a quarter of the lease (event=loop_slow)
//	vigil_late_tick_max_seconds                    G  service                   latest protocol tick since the node manager started
//	vigil_peer_healthy                             G  node, service             1 when the node reported itself healthy on the token
//	vigil_peer_maintenance                         G  node, service             1 when the node is in maintenance
//	vigil_peer_in_ring                             G  node, service             1 when the node is in the token ring
//	vigil_node_locator_seen                        G  locator, service          1 when the locator has answered this node
//	vigil_node_locator_ack_age_seconds             G  locator, service          time since the locator last answered this node (seen only)
//
//	This host's locator
//	vigil_locator_epoch                            G  service                   highest epoch the locator granted or saw
//	vigil_locator_lease_remaining_seconds          G  service                   time left on the lease it granted
//	vigil_locator_quarantined                      G  service                   1 while quarantined after a restart (grants nothing)
//	vigil_locator_persist_errors_total             C  service                   failed writes of the locator's state file
//	vigil_locator_node_seen                        G  node, service             1 when the node has checked in here
//	vigil_locator_checkin_age_seconds              G  node, service             time since the node's last check-in here (seen only)
//
//	Control plane (process = nodemanager | locator)
//	vigil_control_degraded                         G  process, service          1 while not scheduled for > control.sched_delay_warn in the last 10 s
//	vigil_sched_late_episodes_total                C  process, service          episodes of not being scheduled in time (each logged once)
//	vigil_sched_max_late_seconds                   G  process, service          longest wait past a timer since the process started
//	vigil_sched_late_seconds                       H  process, service          how late each 10 ms wakeup fired (the "not scheduled for X ms" distribution)
//	vigil_timing_margin_warning                    G  process, service          1 while a protocol tick ran later than control.lateness_warn_share of the lease in the last 10 s
//	vigil_timing_margin_episodes_total             C  process, service          episodes of that warning (each logged once, event=timing_margin)
//	vigil_control_late_recent_max_seconds          G  process, service          latest protocol tick within the last 10 s
//	vigil_timing_margin_warn_seconds               G  process, service          the lateness that warns (lateness_warn_share × lease; 0 = off)
//	vigil_control_mlocked                          G  process, service          1 when its memory is locked (control.realtime)
//	vigil_control_last_report_time_seconds         G  process                   Unix time of its last heartbeat to the supervisor
//	vigil_control_sched_wait_seconds_total         C  process                   time its threads were runnable but waiting for a CPU (schedstat)
//	vigil_control_sched_run_seconds_total          C  process                   time its threads ran on a CPU (schedstat)
//	vigil_datagrams_received_total                 C  process, service          protocol datagrams received
//	vigil_datagrams_sent_total                     C  process, service          protocol datagrams sent
//	vigil_datagrams_send_errors_total              C  process, service          datagrams the kernel refused to send
//	vigil_datagrams_dropped_total                  C  process, reason, service  datagrams dropped (reason: kernel_filter, kernel_tag, stranger, source, auth, destination, replay, overflow, short, ...)
//	vigil_cluster_filter_active                    G  process, service          1 while the kernel drops non-peers on its cluster port (nftables)
//
//	Supervised processes (group = apps | control)
//	vigil_process_up                               G  process, group            1 while running
//	vigil_process_restarts_total                   C  process, group            restarts by the supervisor
//	vigil_process_consecutive_failures             G  process, group            failures in a row
//	vigil_process_health                           G  process, group, state     1 for the current state (healthy|unhealthy|starting|none)
//	vigil_process_state                            G  process, group, state     1 for the current state (running|backoff|exited|fatal|stopping|stopped)
//	vigil_process_start_time_seconds               G  process, group            Unix time the running process started
//	vigil_process_last_restart_latency_seconds     G  process, group            last restart: exit seen to new process started
//
//	Cgroups (group = control, control/<proc>, apps, apps/<app>)
//	vigil_cgroup_read_error                        G  group                     1 when reading the group's statistics failed
//	vigil_cgroup_cpu_usage_seconds_total           C  group                     CPU time used
//	vigil_cgroup_cpu_throttled_seconds_total       C  group                     time throttled by the CPU quota
//	vigil_cgroup_cpu_throttled_periods_total       C  group                     quota periods in which the group was throttled
//	vigil_cgroup_memory_bytes                      G  group                     memory charged
//	vigil_cgroup_memory_max_bytes                  G  group                     memory limit (absent = no limit)
//	vigil_cgroup_oom_kills_total                   C  group                     tasks killed by the OOM killer
//	vigil_cgroup_pids                              G  group                     tasks in the group
//	vigil_cgroup_pressure_some_avg10_ratio         G  group, resource, scope    PSI "some" avg10 / 100; resource cpu|memory|io; scope group|host
//
// On cgroup v1 there is no per-group PSI: the pressure series carry
// scope="host" and the same value for every group.
//
// The takeover histograms are filled by the collector from the node
// manager's last takeover, once per new epoch; they start empty when the
// supervisor starts and could miss a takeover only if two happen within
// one scrape interval. The per-wakeup lateness histogram of the control
// plane (vigil_sched_late_seconds) is the control-plane process's own,
// cumulative since it started.
//
// Not exported because no report carries the data: a count of token
// rotations and a histogram of rotation times (the node manager reports
// only the last rotation, vigil_token_rotation_seconds), and a count of
// token regenerations. packaging/grafana/vigil-dashboard.json draws the
// rotation time from the gauge, sampled at each scrape.
package metrics
