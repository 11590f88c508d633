// Package nodemanager is `vigil nodemanager`: it drives the protocol core
// with CLOCK_BOOTTIME time and authenticated datagrams, turns the node's
// health (from the supervisor) and its VIP interfaces' state into the
// protocol's health input, holds the floating IPs only while its own lease
// is valid, runs the transition hooks, and heartbeats to the supervisor. It
// runs in control/nodemanager on hosts with role node.
package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/execshim"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/schedwatch"
)

// StateFile is the node's persisted state, in runtime.state_dir.
const StateFile = "node.state"

// extendEvery is how often an active node refreshes its floating IPs'
// kernel lifetime; the lifetime (netfloat.DefaultLifetime, 2 s) survives
// several missed refreshes, and the lease timer drops the addresses long
// before the kernel would.
const extendEvery = 500 * time.Millisecond

// A floating IP that the node holding the service has failed to add for
// vipUnfitAfter, its interface up (a link down or IPv6 turned off are
// reasons of their own), makes the node unhealthy for the service, so that
// a standby that can hold all of it takes it over: the kernel refused the
// address for a reason of this host's (netlink, memory, an MTU too small
// for IPv4), and callers of that address reach nobody meanwhile. Not at
// the first failure: a retry 500 ms later mends a passing one without a
// move. The node stays unhealthy for the service for vipUnfitHold after
// the last failure, holding it or not, as it cannot try again without
// holding it: otherwise two nodes that both fail would hand the service
// to each other as fast as handovers go. Each new episode for the same
// address doubles the hold, up to vipUnfitHoldMax: a failback to a node
// whose kernel still refuses leaves the address unserved for about a
// second (until that node is unfit and hands the service back), and must
// not come back every five minutes for good. A later add that succeeds
// ends the hold at once and forgets the episodes; so does a reload that
// drops the address.
const (
	vipUnfitAfter   = time.Second
	vipUnfitHold    = 5 * time.Minute
	vipUnfitHoldMax = time.Hour
)

// unfitHold is the hold of the nth episode of one address (n ≥ 1), the
// first base long.
func unfitHold(base time.Duration, n int) time.Duration {
	h := base
	for i := 1; i < n && h < vipUnfitHoldMax; i++ {
		h *= 2
	}
	return min(h, vipUnfitHoldMax)
}

// vipFailure is a floating IP that could not be added: the last error,
// and since when it has failed with its interface up.
type vipFailure struct {
	vip   netfloat.VIP
	err   string
	since time.Duration
}

// vipUnfit is a floating IP failure held against this node until until,
// for hold after its last failure.
type vipUnfit struct {
	err         string
	hold, until time.Duration
}

type manager struct {
	cfg   *config.Config
	pcfg  protocol.Config
	log   *slog.Logger
	slot  int         // the service its reports name (ctlmsg.BeatFields.Slot)
	clk   clock.Clock // every timing decision: the lease's clock, tickers, timers
	node  *protocol.Node
	tr    transport.Endpoint
	sup   *ipc.Conn
	holds *holds // sockets for the supervisor to keep open; nil in tests
	vips  []netfloat.VIP
	hooks *hookRunner
	// The roles hooks were last told of (VIGIL_ROLE, VIGIL_PREVIOUS_ROLE).
	hookRole, hookPrevRole string

	// The floating IPs (reload.go, seams.go): float is opened with the
	// first VIP, rebuilt by a reload that brings a new interface while
	// nothing is held; host makes it and reads link state.
	host        vipHost
	float       floatIPs
	floatIfaces map[string]bool // interfaces float reports link events for
	watchStale  bool            // a VIP interface float does not know yet
	netEvents   chan netfloat.Event
	watchCtx    context.Context
	watchCancel context.CancelFunc
	watchDone   chan struct{}

	statePath string
	state     stateWriter // node.state (statefile.Writer: episodes of failed writes)
	send      func(protocol.Envelope) error
	held      bool // the floating IPs are on the interface
	// handoverUntil: this node took the role in a planned handover and
	// the old active may still hold the addresses, silent, until then (its
	// drain, drain.go): its ARP answers are no conflict.
	handoverUntil time.Duration
	conflicts     uint64
	lastConflict  *conflict
	drain         *drain // after a planned handover: kept, silent, until the successor announces (drain.go)
	// gapClaim: this node took the role in a handover with
	// announce.handover_gap set, and adds and announces its addresses at
	// gapClaim.at (drain.go).
	gapClaim *gapClaim
	lastExt  time.Duration
	// vipFail: the floating IPs this node is entitled to but could not
	// add (interface missing, netlink refused), with the last error. They
	// are tried again every extendEvery; only a new or changed error is
	// logged, and status warns of them.
	vipFail map[string]vipFailure
	// vipUnfit: floating IPs that could not be added for vipUnfitAfter with
	// their interface up, and until when that makes this node unhealthy
	// for the service (checkVIPFit); vipCheck: it may have changed since
	// health was last read.
	vipUnfit map[string]vipUnfit
	vipCheck bool
	// vipEpisodes: how many times each address made this node unfit
	// since it was last added (unfitHold); unfitBase: the first hold,
	// vipUnfitHold (tests shorten it).
	vipEpisodes map[string]int
	unfitBase   time.Duration

	supHealthy bool
	supReasons []string // the supervisor's last word, as sent
	supKnown   bool     // the supervisor has sent its word at least once
	reasons    []string // why this node is unhealthy now (derived in updateHealth)
	linkDown   map[string]bool
	// v6Off: interfaces carrying an IPv6 floating IP that cannot hold one
	// (disable_ipv6), with why; read every ipv6CheckEvery (no netlink
	// event tells of a sysctl change), at lastV6Check.
	v6Off       map[string]string
	lastV6Check time.Duration
	healthy     bool
	// faultArmed: the node has been healthy, by the supervisor's word,
	// since on_fault last ran; becoming unhealthy runs on_fault again. A
	// node manager that starts while the node is unhealthy (applications
	// still starting, a previous incarnation's fault) runs none.
	faultArmed bool

	watch *schedwatch.Monitor // "not scheduled for X ms", for status and warnings
	rt    realtime.Report

	takeovers    uint64
	lastTakeover *ctlmsg.Takeover
	lateTimers   uint64
	maxLate      time.Duration
	inLate       bool
	// timing: every tick's lateness and each check-in's round trip, for
	// `vigil check --timing` and the lease-share warning.
	timing *timingstat.Recorder

	fo failoverTracker // for the event=failover line (failover.go)

	// The loop (serve): its protocol tick, armed for tickAt (nextTick),
	// and when it last ticked and reported.
	tick                                   clock.Ticks
	tickAt, lastTick, lastPass, lastReport time.Duration
	// The last full report (the others are beats): when, and what it said.
	fullSent bool
	lastFull time.Duration
	lastView reportView
	// Reports skipped in a row because the supervisor was not reading.
	reportsSkipped uint64
	// The current pass of the loop, and how many took over a quarter of
	// the lease (checkPass).
	pass       passWatch
	slowPasses uint64
}

// Run serves the services in slots (indexes into cfg.Services; every
// service of the node, in one process, unless an older supervisor runs a
// process per service) until ctx ends or the supervisor's channel closes.
// Each service has a manager of its own: its protocol node, port, state
// file, floating IPs, kernel lease, hooks and loop, exactly as when each
// had a process. They share the process, its realtime settings, its
// scheduling watch and its channel to the supervisor, which files each
// report by its slot and names the slot of each message it sends. A
// service that cannot start (its state file refused, its port taken) does
// not end the process under a supervisor that takes such reports
// (ctlmsg.EnvLeaveOut): the others run, and it is tried again (runService;
// docs/protocol.md, "One node manager process").
func Run(ctx context.Context, cfg *config.Config, slots []int, log *slog.Logger) error {
	key, err := config.ReadKeyFile(cfg.Cluster.KeyFile)
	if err != nil {
		return err
	}
	// A supervisor from before one process ran every service
	// (ctlmsg.EnvAllServices unset) files reports by process, and reads no
	// slot in a beat frame.
	bySlot := os.Getenv(ctlmsg.EnvAllServices) != "" || os.Getenv(ipc.EnvFD) == ""
	leaveOut := os.Getenv(ctlmsg.EnvLeaveOut) != "" || os.Getenv(ipc.EnvFD) == ""
	sh := &shared{cfg: cfg, key: key, clk: clock.Real{}, log: log, bySlot: bySlot, leaveOut: leaveOut}
	sh.rt = realtime.ApplyAndLog(realtime.Settings{Realtime: cfg.Control.Realtime}, log)
	sh.holds = &holds{log: log}
	if sh.sup, err = ipc.FromEnv(); err != nil && !errors.Is(err, ipc.ErrNoChannel) {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inbox := make(map[int]chan *ctlmsg.Msg, len(slots))
	for _, slot := range slots {
		inbox[slot] = make(chan *ctlmsg.Msg, 16)
	}
	if sh.sup != nil {
		defer sh.sup.Close()
		go sh.readSupervisor(cancel, inbox)
	}
	sh.running = make([]atomic.Pointer[manager], cfg.ServiceCount())
	if sh.watch, err = schedwatch.New(schedwatch.Config{Threshold: cfg.Control.SchedDelayWarn, Logger: log, Each: sh.watchPasses}); err != nil {
		return err
	}
	go func() { _ = sh.watch.Run(ctx) }()
	errs := make(chan error, len(slots))
	for _, slot := range slots {
		go func() { errs <- sh.runService(ctx, slot, inbox[slot]) }()
	}
	// The first error ends every service: each hands over what it holds
	// (an orderly stop), and the process exits.
	var first error
	for range slots {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// shared is what the services' managers of one process share.
type shared struct {
	cfg   *config.Config
	key   []byte
	clk   clock.Clock
	log   *slog.Logger // the process's; each manager's names its service
	rt    realtime.Report
	sup   *ipc.Conn
	holds *holds
	watch *schedwatch.Monitor
	// leaveOut: a service that cannot start is left out and tried again,
	// not the end of the process (ctlmsg.EnvLeaveOut).
	leaveOut bool
	// bySlot: the supervisor files reports by slot (ctlmsg.EnvAllServices),
	// so each carries its service's.
	bySlot bool
	// running is each slot's manager once it runs its loop, for the
	// scheduling watch's stuck-pass check.
	running []atomic.Pointer[manager]
}

// readSupervisor hands each message of the supervisor to the service it
// names (ctlmsg.Msg.Slot). The channel closing means the supervisor is
// gone: a control plane never runs unsupervised.
func (sh *shared) readSupervisor(cancel context.CancelFunc, inbox map[int]chan *ctlmsg.Msg) {
	for {
		msg, err := sh.sup.Recv()
		if err != nil {
			sh.log.Warn("supervisor channel closed; exiting", "event", "supervisor_gone")
			cancel()
			return
		}
		ch, ok := inbox[msg.Slot]
		if !ok {
			err := fmt.Errorf("this node manager does not run service %d", msg.Slot)
			sh.log.Warn("message for a service this node manager does not run", "event", "ipc_error", "type", msg.Type, "err", err)
			if msg.Type == ctlmsg.TypeCommand || msg.Type == ctlmsg.TypeConfig {
				_ = sh.sup.Send(ctlmsg.Reply(msg.ID, err), time.Second)
			}
			continue
		}
		ch <- msg
	}
}

// watchPasses is the scheduling watch's check of every running manager's
// loop (manager.watchPass).
func (sh *shared) watchPasses() {
	for i := range sh.running {
		if m := sh.running[i].Load(); m != nil {
			m.watchPass()
		}
	}
}

// runService runs the manager of the service in slot until ctx ends; sup
// is its share of the supervisor's messages. A service that cannot start
// (its state file refused, its port taken) does not end the process, which
// runs the node's other services (with sh.leaveOut; without, its error
// does): it holds nothing of that service and
// takes no part in it, says so to the supervisor (ctlmsg.RoleNotStarted),
// and tries again every ctlmsg.StartRetryEvery, so that mending the cause
// is all it takes (docs/operations.md, "A service that cannot start").
func (sh *shared) runService(ctx context.Context, slot int, sup <-chan *ctlmsg.Msg) error {
	var failing *startFailure
	var carried []*ctlmsg.Msg
	for {
		left, err := sh.serveService(ctx, slot, sup, carried, func(log *slog.Logger) {
			if failing != nil {
				log.Info("service started after failing to", "event", "service_start_recovered",
					"failed_ms", (sh.clk.Now() - failing.since).Milliseconds(), "attempts", failing.attempts)
			}
		})
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !sh.leaveOut {
			return err // a supervisor from before: it restarts the process
		}
		if failing == nil {
			failing = &startFailure{since: sh.clk.Now()}
		}
		failing.attempts++
		if msg := err.Error(); msg != failing.err {
			failing.err = msg
			sh.serviceLog(slot).Error("service not started: this node holds none of it and takes no part in it, and tries again every "+ctlmsg.StartRetryEvery.String()+"; the node's other services run",
				"event", "service_start_failed", "err", msg, "attempts", failing.attempts)
		}
		// What came during the failed try's hold-off: answered, or kept
		// for the next.
		for _, msg := range left {
			carried = sh.whileNotStarted(slot, msg, failing, carried)
		}
		var ok bool
		if carried, ok = sh.awaitRetry(ctx, slot, sup, failing, carried); !ok {
			return nil
		}
	}
}

// startFailure is a service that could not start: since when (the
// process's clock), the last error and how many tries.
type startFailure struct {
	since    time.Duration
	err      string
	attempts int
}

// serviceLog is the process's logger, naming the service in slot when the
// file has more than one: the first's too, so that journalctl
// SERVICE=NAME finds all of one service.
func (sh *shared) serviceLog(slot int) *slog.Logger {
	if sh.cfg.ServiceCount() > 1 && slot < len(sh.cfg.Services) {
		return sh.log.With("service", sh.cfg.Services[slot].Name)
	}
	return sh.log
}

// awaitRetry waits out ctlmsg.StartRetryEvery for a service that did not
// start, reporting it as not started, and answers what the supervisor
// sends it meanwhile. It returns what the next start must apply (the
// latest health and reload, faults to run on_fault for), false if ctx
// ended.
func (sh *shared) awaitRetry(ctx context.Context, slot int, sup <-chan *ctlmsg.Msg, f *startFailure, carried []*ctlmsg.Msg) ([]*ctlmsg.Msg, bool) {
	sh.reportNotStarted(slot, f)
	retry := sh.clk.NewTimer(ctlmsg.StartRetryEvery)
	defer retry.Stop()
	every := sh.clk.NewTicker(ctlmsg.FullReportEvery)
	defer every.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case <-retry.C():
			return carried, true
		case <-every.C():
			sh.reportNotStarted(slot, f)
		case msg := <-sup:
			carried = sh.whileNotStarted(slot, msg, f, carried)
		}
	}
}

// whileNotStarted answers a supervisor message for a service that is not
// started, and adds to carried what its start must apply.
func (sh *shared) whileNotStarted(slot int, msg *ctlmsg.Msg, f *startFailure, carried []*ctlmsg.Msg) []*ctlmsg.Msg {
	keep := func(m *ctlmsg.Msg) []*ctlmsg.Msg {
		// Only the latest of a kind counts.
		out := slices.DeleteFunc(carried, func(c *ctlmsg.Msg) bool { return c.Type == m.Type })
		return append(out, m)
	}
	var err error
	switch msg.Type {
	case ctlmsg.TypeHealth:
		return keep(msg)
	case ctlmsg.TypeFault:
		// on_fault runs once the service starts.
		return append(carried, msg)
	case ctlmsg.TypeConfig:
		// Applied at the start, answered now: the kept copy's reply goes
		// nowhere.
		c := *msg
		c.ID = 0
		carried = keep(&c)
		err = fmt.Errorf("service not started on this node (%s): it starts with these floating IPs and hooks", f.err)
	case ctlmsg.TypeCommand:
		err = fmt.Errorf("service not started on this node: %s", f.err)
		if msg.Cmd == ctlmsg.CmdMaintenance && (msg.Arg == "on" || msg.Arg == "off") {
			// It holds nothing now; written, maintenance is in force from
			// its start (loadMaintenance), as for a node manager not
			// running.
			err = nil
			if sc, cerr := sh.cfg.ForService(slot); cerr != nil {
				err = cerr
			} else if err = SaveMaintenance(sc, msg.Arg == "on", sh.clk.Wall()); err == nil {
				sh.serviceLog(slot).Info("maintenance "+msg.Arg+" for a service not started: in force once it starts", "event", "maintenance", "on", msg.Arg == "on", "persisted", true)
			}
		}
	default:
		err = fmt.Errorf("unknown message type %q", msg.Type)
	}
	if sh.sup != nil {
		reply := ctlmsg.Reply(msg.ID, err)
		reply.Slot = sh.reportSlot(slot)
		_ = sh.sup.Send(reply, time.Second)
	}
	return carried
}

// reportSlot is the slot the supervisor files slot's reports under: none
// (0) for one from before a process ran every service.
func (sh *shared) reportSlot(slot int) int {
	if sh.bySlot {
		return slot
	}
	return 0
}

// reportNotStarted tells the supervisor that the service in slot is not
// started, and why. It holds no lease, so the supervisor sets no fence
// deadline for it.
func (sh *shared) reportNotStarted(slot int, f *startFailure) {
	if sh.sup == nil {
		return
	}
	why := "not started: " + f.err
	if sh.cfg.ServiceCount() > 1 && slot < len(sh.cfg.Services) {
		why = "service " + sh.cfg.Services[slot].Name + " " + why
	}
	r := &ctlmsg.NodeManagerReport{
		BeatFields:       ctlmsg.BeatFields{Slot: sh.reportSlot(slot), Self: sh.cfg.Cluster.Node, Role: ctlmsg.RoleNotStarted},
		UnhealthyReasons: []string{why},
		Realtime:         sh.rt,
		StartError:       f.err,
		StartFailingMS:   (sh.clk.Now() - f.since).Milliseconds(),
	}
	msg, err := ctlmsg.NodeManagerReportMsg(r)
	if err != nil {
		sh.log.Error("cannot encode the report", "event", "ipc_error", "err", err)
		return
	}
	// Never wait: the other services' loops share the channel.
	_ = sh.sup.TrySend(msg)
}

// serveService starts the manager of the service in slot and runs it until
// ctx ends (nil), or returns why it could not start, with what the
// supervisor sent during its hold-off (its health as a message) when it
// failed after that. carried are messages the supervisor sent while it was
// not started; started is called once it is, with its logger.
func (sh *shared) serveService(ctx context.Context, slot int, sup <-chan *ctlmsg.Msg, carried []*ctlmsg.Msg, started func(*slog.Logger)) ([]*ctlmsg.Msg, error) {
	cfg, err := sh.cfg.ForService(slot)
	if err != nil {
		return nil, err
	}
	log := sh.serviceLog(slot)
	host := &netlinkHost{cfg: cfg, log: log, clk: sh.clk}
	if os.Getenv(ipc.EnvFD) != "" {
		prefix := ""
		if slot > 0 {
			prefix = "service " + strconv.Itoa(slot) + " "
		}
		host.keepOpen = func(key string, fds []int) { sh.holds.keep(prefix+key, fds) } // a supervisor to hold them
	}
	m, err := newManager(cfg, log, sh.clk, host)
	defer m.closeFloat()
	if err != nil {
		return nil, err
	}
	m.rt, m.holds, m.sup, m.watch = sh.rt, sh.holds, sh.sup, sh.watch
	m.slot = sh.reportSlot(slot)

	owner := statefile.Owner{Kind: "node", Cluster: cfg.Cluster.Name, ID: cfg.Cluster.Node}
	m.state = &statefile.Writer{Path: m.statePath, Owner: owner, What: "node state", Log: log}
	st, err := loadState(m.statePath, owner, m.clk.Wall(), log)
	if err != nil {
		return nil, err
	}
	// A supervisor that runs a process per service names its one group 0.
	if m.hooks.cgroup, err = execshim.HooksCgroupFromEnv(sh.reportSlot(slot)); err != nil {
		log.Warn("hooks run in the node manager's cgroup, charged to the control plane", "event", "hooks_cgroup_error", "err", err)
	} else if m.hooks.cgroup == nil && m.sup != nil {
		log.Warn("hooks run in the node manager's cgroup, charged to the control plane: the supervisor has no hooks cgroup (see its log)", "event", "hooks_cgroup_error")
	} else if m.hooks.cgroup != nil {
		log.Info("hooks run in their own cgroup", "event", "hooks_cgroup", "dirs", m.hooks.cgroup)
	}

	// A node manager that starts again after a crash must not race the
	// standby for the role its dead incarnation held: the locators would
	// let the recorded holder straight back in. Staying silent for one
	// lease plus the drift margin lets that lease run out everywhere, so a
	// crashed active's role goes to the healthy standby, as it would after
	// any other fault of the active. At a cold start this costs a quarter
	// of a second.
	holdoff := m.pcfg.Lease + m.pcfg.DriftMargin
	log.Info("node manager waiting one lease before joining", "event", "holdoff", "ms", holdoff.Milliseconds())
	var early []*ctlmsg.Msg
	for _, msg := range carried {
		if msg.Type == ctlmsg.TypeHealth && msg.Healthy != nil {
			// Before it first speaks, as holdOff does.
			m.supHealthy, m.supReasons, m.supKnown = *msg.Healthy, msg.Reasons, true
			continue
		}
		early = append(early, msg)
	}
	more, ok := m.holdOff(ctx, holdoff, sup)
	if !ok {
		return nil, nil
	}
	early = append(early, more...)
	// A failure from here leaves what the hold-off took in (its health
	// too) to the next try.
	left := func() []*ctlmsg.Msg {
		var out []*ctlmsg.Msg
		if m.supKnown {
			out = append(out, ctlmsg.Health(m.supHealthy, m.supReasons))
		}
		return append(out, more...)
	}
	tr, err := transport.Open(cfg, m.pcfg, sh.key, false, log)
	if err != nil {
		return left(), err
	}
	defer tr.Close()
	if err := m.join(st, tr); err != nil {
		return left(), err
	}
	// The watch, like the transport below, outlives ctx: during an orderly
	// stop the successor's announcements end the drain (drain.go).
	watchCtx, watchStop := context.WithCancel(context.Background())
	defer watchStop()
	m.watchCtx = watchCtx
	if m.float != nil {
		m.startWatch()
	}
	go m.hooks.run(ctx)
	// The transport outlives ctx: an orderly stop hands the role over
	// (shutdown) through the same socket, and only then is it closed.
	trCtx, trStop := context.WithCancel(context.Background())
	defer trStop()
	in := make(chan transport.Inbound, 256)
	go m.tr.Run(trCtx, in)

	m.start()
	started(log)
	for _, msg := range early {
		m.onSupervisor(msg)
	}
	sh.running[slot].Store(m)
	defer sh.running[slot].Store(nil)
	m.serve(ctx, in, sup)
	return nil, nil
}

// newManager is a node manager for cfg with its floating IPs (none held:
// a previous incarnation's are removed) and their links' state; it has no
// protocol node yet (join). On error, closeFloat releases what it opened.
func newManager(cfg *config.Config, log *slog.Logger, clk clock.Clock, host vipHost) (*manager, error) {
	m := &manager{
		cfg: cfg, log: log, pcfg: transport.ProtocolConfig(cfg), clk: clk, host: host,
		statePath:  filepath.Join(cfg.Runtime.StateDir, StateFile),
		supHealthy: true, linkDown: map[string]bool{}, v6Off: map[string]string{}, unfitBase: vipUnfitHold,
		hooks:     newHookRunner(log, clk),
		netEvents: make(chan netfloat.Event, 64),
		fo:        failoverTracker{self: cfg.Cluster.Node},
	}
	m.timing = timingstat.NewRecorder(&timingstat.Warn{Process: "node manager", Share: cfg.Control.LatenessWarnShare, Lease: m.pcfg.Lease, Log: log}, m.pcfg.Locators)
	for _, v := range cfg.VIPs {
		fv, err := parseVIP(v.Address, v.Interface)
		if err != nil {
			return m, err
		}
		m.vips = append(m.vips, fv)
	}
	if len(m.vips) > 0 {
		ifaces := vipInterfaces(m.vips)
		if err := m.openFloat(ifaces); err != nil {
			return m, err
		}
		// A previous incarnation may have died holding the addresses: this
		// one holds no lease yet, so it holds no address either.
		removed, err := m.float.Reconcile(nil)
		if err != nil {
			return m, fmt.Errorf("nodemanager: remove stale floating IPs: %w", err)
		}
		for _, v := range removed {
			log.Warn("removed a floating IP left by a previous run", "event", "vip_stale_removed", "vip", v.String())
		}
		m.refreshLinks(ifaces)
	}
	return m, nil
}

// join creates the protocol node from the persisted state, after the
// hold-off, applies a persisted maintenance and takes the port.
func (m *manager) join(st protocol.NodeState, tr transport.Endpoint) error {
	node, err := protocol.NewNode(m.pcfg, st, m.clk.Now())
	if err != nil {
		return err
	}
	m.node = node
	m.loadMaintenance()
	m.tr, m.send = tr, tr.Send
	return nil
}

// start feeds the node its health and writes its first state, then arms
// the protocol tick (nextTick).
func (m *manager) start() {
	now := m.clk.Now()
	m.updateHealth(now)
	if !m.healthy {
		// updateHealth logs changes only, and a node manager starts
		// unhealthy: say why it starts so (a VIP interface missing or
		// down, applications not up yet), or the journal never does.
		m.log.Warn("node unhealthy", "event", "node_health", "healthy", false, "reasons", fmt.Sprint(m.reasons))
	}
	// The first incarnation goes to disk before any datagram carries it; a
	// failed write sends nothing and is retried on every tick.
	m.flush()
	m.log.Info("node manager started", "event", "nodemanager_start", "listen", m.tr.Addr().String(), "incarnation", m.node.Status().Incarnation, "vips", len(m.vips))
	m.lastTick = m.clk.Now()
	m.lastPass = m.lastTick
	m.tickAt = m.lastTick + m.tickPeriod()
	m.tick = m.clk.NewTimer(m.tickPeriod())
	m.armTick(m.lastTick)
}

// tickPeriod is the longest the loop goes without a pass: the protocol
// takes a longer gap between its inputs for a stall of its own.
func (m *manager) tickPeriod() time.Duration { return m.pcfg.TokenInterval }

// nextTick is when the loop next has something to do without an input:
// the protocol's next deadline (Node.NextDeadline), the driver's own (a
// drain's addresses, the handover gap, the end of the lease it holds
// the addresses under), and at the latest a token interval after the
// last pass. Ticking only then, rather than every quarter token
// interval, is what keeps an idle node manager cheap; the timers act as
// precisely as before (the simulator's Options.Twin checks that the
// protocol acts as it would ticked finely). The report, due every
// quarter lease, is a deadline of its own: riding on the passes there
// were (up to half a token interval late) cost 3 of 10 noisy-neighbour
// runs a supervisor fence, the quarter-interval tick none.
func (m *manager) nextTick() time.Duration {
	at := min(m.node.NextDeadline(), m.lastPass+m.tickPeriod(), m.lastReport+m.pcfg.Lease/4)
	if m.held && m.drain == nil {
		at = min(at, m.node.LeaseUntil()) // enforceLease
	}
	if d := m.drain; d != nil {
		at = min(at, d.until)
		for _, x := range d.left {
			at = min(at, x.until)
		}
	}
	if g := m.gapClaim; g != nil {
		at = min(at, g.at)
	}
	if at <= m.lastTick {
		// Due already and the last tick did not act on it: never spin;
		// look again at the old pace.
		at = m.lastTick + m.tickPeriod()/4
	}
	return at
}

// armTick re-arms the tick for nextTick, if that moved; now is the end
// of the pass.
func (m *manager) armTick(now time.Duration) {
	m.lastPass = now
	at := m.nextTick()
	if at == m.tickAt {
		return
	}
	m.tickAt = at
	m.tick.Reset(max(at-now, 0))
}

// serve is the loop: one input at a time, then afterInput. Each input has
// its own handler, which a driver test calls the same way.
func (m *manager) serve(ctx context.Context, in <-chan transport.Inbound, sup <-chan *ctlmsg.Msg) {
	defer m.tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.shutdown(in)
			return
		case x := <-in:
			m.onInput(stepDatagram, func() { m.onInbound(x) })
		case <-m.tick.C():
			m.onInput(stepTick, m.onTick)
		case msg := <-sup:
			m.onInput(stepSupervisor, func() {
				m.fo.local(m.clk.Now())
				m.onSupervisor(msg)
			})
		case ev := <-m.netEvents:
			m.onInput(stepNetEvent, func() {
				m.fo.local(m.clk.Now())
				m.onNetEvent(ev)
			})
		}
	}
}

// onInput is one pass of the loop: input's handler, then afterInput,
// timed (checkPass).
func (m *manager) onInput(input passStep, handle func()) {
	m.pass.begin(input, m.clk.Mono())
	handle()
	m.pass.step(input, m.clk.Mono())
	now := m.afterInput()
	m.checkPass()
	m.armTick(now)
}

// passStep names an input or a step of a pass, for the loop_slow and
// loop_stuck lines (a number, so that marking one allocates nothing).
type passStep uint8

const (
	stepNone passStep = iota
	stepDatagram
	stepTick
	stepSupervisor
	stepNetEvent
	stepSyncLease
	stepPersist
	stepEvents
	stepSend
	stepDrainLease
	stepRebuildFloat
	stepReport
)

var passStepNames = [...]string{
	stepNone: "none", stepDatagram: "datagram", stepTick: "tick", stepSupervisor: "supervisor",
	stepNetEvent: "net_event", stepSyncLease: "sync_lease", stepPersist: "persist", stepEvents: "events",
	stepSend: "send", stepDrainLease: "drain_and_lease", stepRebuildFloat: "rebuild_float", stepReport: "report",
}

func (s passStep) String() string { return passStepNames[s] }

// passWatch times one pass of the loop (an input and afterInput) and
// its slowest step. Nothing in a pass should wait: a pass that takes a
// good part of the lease is what loses a lease on a host that is not
// itself stalled, so it is logged with the step to blame; one that does
// not end is reported while it lasts (watchPass, from another goroutine:
// the fence may kill the process before the pass ends).
type passWatch struct {
	start, last time.Duration
	input, slow passStep
	slowFor     time.Duration
	// For watchPass: the running pass's start on Mono (0 between passes), its
	// input and last finished step, and the start already reported.
	busy, warned atomic.Int64
	busyInput    atomic.Uint32
	done         atomic.Uint32
}

func (w *passWatch) begin(input passStep, now time.Duration) {
	w.start, w.last, w.input, w.slow, w.slowFor = now, now, input, stepNone, 0
	w.busyInput.Store(uint32(input))
	w.done.Store(uint32(stepNone))
	w.busy.Store(int64(now))
}

// step ends the step what at now.
func (w *passWatch) step(what passStep, now time.Duration) {
	if d := now - w.last; d > w.slowFor {
		w.slow, w.slowFor = what, d
	}
	w.last = now
	w.done.Store(uint32(what))
}

// checkPass ends the pass and logs it if it took more than a quarter of
// the lease. Passes are timed on Mono: a step timed on Now cost a system
// call per step.
func (m *manager) checkPass() {
	m.pass.busy.Store(0)
	if took := m.clk.Mono() - m.pass.start; took > m.pcfg.Lease/4 {
		m.slowPasses++
		m.log.Warn("node manager loop held up", "event", "loop_slow", "input", m.pass.input.String(), "took_ms", took.Milliseconds(),
			"step", m.pass.slow.String(), "step_ms", m.pass.slowFor.Milliseconds())
	}
}

// watchPass runs on the late-timer monitor's goroutine after each of its
// wakeups: a pass of the loop running for over a quarter of the lease is
// logged once, while it lasts, with the step it is in (the one after
// after_step).
func (m *manager) watchPass() {
	start := m.pass.busy.Load()
	if start == 0 || m.pass.warned.Load() == start {
		return
	}
	age := m.clk.Mono() - time.Duration(start)
	if age <= m.pcfg.Lease/4 {
		return
	}
	m.pass.warned.Store(start)
	m.log.Warn("node manager loop stuck in a pass", "event", "loop_stuck", "input", passStep(m.pass.busyInput.Load()).String(),
		"after_step", passStep(m.pass.done.Load()).String(), "for_ms", age.Milliseconds())
}

// onInbound steps an accepted datagram into the protocol.
func (m *manager) onInbound(in transport.Inbound) {
	m.fo.input(in)
	if in.Msg.Type == protocol.MsgAck {
		m.timing.Acked(in.Msg.From, in.Msg.Ack.Round, in.At)
	}
	if err := m.node.Step(in.At, in.Msg); err != nil {
		m.log.Debug("message rejected", "type", in.Msg.Type.String(), "from", in.Msg.From, "err", err)
	}
}

// onTick is the protocol tick; one that comes more than a token interval
// after it was due is told to the protocol first (checkLate).
func (m *manager) onTick() {
	now := m.clk.Now()
	m.fo.local(now)
	late := now - m.tickAt
	m.timing.Late(now, late)
	m.checkLate(now, late)
	m.lastTick = now
	m.node.Tick(now)
}

// afterInput carries out what the input decided: the protocol's Ready,
// then the local deadlines (drain, handover gap, the own lease) read now,
// and the report when due (four per lease: each is the heartbeat the
// supervisor fences on, so one or two may be late without a fence). It
// returns the time it went by, flush's, which the tick is armed from:
// older by the sends and the report (tens of µs; a standby's address
// rebuild more) than the pass's end, so the tick comes that much later,
// against millisecond deadlines and the drift margin. Each read of Now is
// a system call.
func (m *manager) afterInput() (now time.Duration) {
	now = m.flush()
	m.fo.observe(m.node.Status().Active)
	m.checkDrain(now)
	m.checkGapClaim(now)
	m.enforceLease(now)
	if len(m.vipFail) > 0 || len(m.vipUnfit) > 0 || m.vipCheck {
		m.checkVIPFit(now)
	}
	m.pass.step(stepDrainLease, m.clk.Mono())
	if m.watchStale && !m.held {
		m.rebuildFloat(now)
		m.pass.step(stepRebuildFloat, m.clk.Mono())
	}
	if now-m.lastV6Check >= ipv6CheckEvery {
		if m.refreshIPv6(now) {
			m.updateHealth(now)
		}
	}
	if now-m.lastReport >= m.pcfg.Lease/4 {
		m.report(now)
		m.lastReport = now
		m.pass.step(stepReport, m.clk.Mono())
	}
	return now
}

// holdOff waits d (the restart hold-off) while taking in the supervisor's
// word on the node's health, so that the health this node manager starts
// with is the latest: what happened while it was not in the cluster yet
// (applications still starting) is no transition of its own and runs no
// on_fault. Other messages are returned, to be handled once the node
// exists. It returns false if ctx ended.
func (m *manager) holdOff(ctx context.Context, d time.Duration, sup <-chan *ctlmsg.Msg) ([]*ctlmsg.Msg, bool) {
	t := m.clk.NewTimer(d)
	defer t.Stop()
	var early []*ctlmsg.Msg
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case <-t.C():
			return early, true
		case msg := <-sup:
			if msg.Type == ctlmsg.TypeHealth && msg.Healthy != nil {
				m.supHealthy, m.supReasons, m.supKnown = *msg.Healthy, msg.Reasons, true
				continue
			}
			early = append(early, msg)
		}
	}
}

// checkLate is Corosync's "not scheduled for X ms": a tick that fires late
// means this process did not run; the protocol must not mistake its own
// stall for a lost token, so it is told.
func (m *manager) checkLate(now, late time.Duration) {
	threshold := m.pcfg.TokenInterval
	if late <= threshold {
		m.inLate = false
		return
	}
	m.lateTimers++
	if late > m.maxLate {
		m.maxLate = late
	}
	if !m.inLate {
		// schedwatch logs the warning operators see; this is the
		// protocol's own input.
		m.log.Debug("protocol tick late; re-checking with the locators", "event", "late_tick", "late_ms", late.Milliseconds())
	}
	m.inLate = true
	m.node.Late(now, late)
}

func (m *manager) onSupervisor(msg *ctlmsg.Msg) {
	now := m.clk.Now()
	var err error
	var seen *protocol.NodeStatus // a switchover's: the role when it came
	switch msg.Type {
	case ctlmsg.TypeHealth:
		if msg.Healthy != nil {
			m.supHealthy, m.supReasons, m.supKnown = *msg.Healthy, msg.Reasons, true
			m.updateHealth(now)
		}
		return
	case ctlmsg.TypeFault:
		// The previous node manager was fenced while it held the role:
		// it lost the role without handing it over and could not say so.
		epoch := msg.Epoch
		reason := strings.Join(msg.Reasons, "; ")
		m.log.Warn("the previous node manager was fenced while active; running on_fault", "event", "fenced_fault", "epoch", epoch, "reason", reason)
		m.fault(reason, epoch)
		return
	case ctlmsg.TypeConfig:
		err = m.applyConfig(now, msg.Config)
		if err != nil {
			m.log.Error("reloaded floating IPs and hooks not applied", "event", "reload_error", "err", err)
		}
	case ctlmsg.TypeCommand:
		switch msg.Cmd {
		case ctlmsg.CmdSwitchover:
			st := m.node.Status()
			seen = &st
			err = m.node.Switchover(now, msg.Arg)
			if err == nil {
				m.log.Info("switchover requested", "event", "switchover", "to", msg.Arg)
			}
		case ctlmsg.CmdMaintenance:
			switch msg.Arg {
			case "on", "off":
				err = m.setMaintenance(msg.Arg == "on")
			default:
				err = fmt.Errorf("maintenance takes on or off, not %q", msg.Arg)
			}
		default:
			err = fmt.Errorf("unknown command %q", msg.Cmd)
		}
	default:
		err = fmt.Errorf("unknown message type %q", msg.Type)
	}
	if m.sup != nil {
		reply := ctlmsg.Reply(msg.ID, err)
		if seen != nil {
			reply = ctlmsg.SwitchoverReply(msg.ID, seen.Epoch, seen.Active, err)
		}
		reply.Slot = m.slot
		if m.sup.TrySend(reply) != nil {
			// The supervisor waits for this answer, so it reads soon;
			// the loop does not wait for that.
			go func() { _ = m.sup.Send(reply, time.Second) }()
		}
	}
}

func (m *manager) onNetEvent(ev netfloat.Event) {
	now := m.clk.Now()
	switch ev.Kind {
	case netfloat.EventLinkDown:
		if !m.usesInterface(ev.Interface) {
			return // carried a VIP that a reload removed
		}
		if !m.linkDown[ev.Interface] {
			m.log.Warn("VIP interface down", "event", "link_down", "interface", ev.Interface)
		}
		m.linkDown[ev.Interface] = true
		m.updateHealth(now)
	case netfloat.EventLinkUp:
		if !m.usesInterface(ev.Interface) {
			return
		}
		if m.linkDown[ev.Interface] {
			m.log.Info("VIP interface up", "event", "link_up", "interface", ev.Interface)
		}
		delete(m.linkDown, ev.Interface)
		m.refreshIPv6(now) // an interface made anew has the default disable_ipv6
		m.updateHealth(now)
	case netfloat.EventAddrRemoved:
		// Someone removed an address we hold under a valid lease: put it
		// back, or clients lose the service for no reason.
		// The lease read now, not when the event was queued: a node
		// manager resuming from a stop may hold an expired one.
		if m.held && m.node.ActiveAt(m.clk.Now()) && m.hasVIP(ev.VIP) {
			m.log.Warn("floating IP removed by someone else; adding it back", "event", "vip_readded", "vip", ev.VIP.String())
			if _, err := m.float.Claim(context.Background(), ev.VIP); err != nil {
				m.log.Error("cannot re-add floating IP", "event", "vip_error", "vip", ev.VIP.String(), "err", err)
			}
		}
	case netfloat.EventConflict:
		if m.drain != nil {
			m.drainAnnounced(ev.VIP, now)
			return
		}
		if !m.held {
			return // reported while we held it, released since
		}
		if now < m.handoverUntil {
			m.log.Info("the previous active still answers for a floating IP during the handover; announcing again", "event", "handover_overlap", "vip", ev.VIP.String(), "mac", ev.MAC.String())
		} else {
			m.noteConflict(ev.VIP, ev.MAC, now)
			m.log.Warn("another host answers for a floating IP we hold; announcing again", "event", "vip_conflict", "vip", ev.VIP.String(), "mac", ev.MAC.String())
		}
		if err := m.float.Announce(ev.VIP); errors.Is(err, netfloat.ErrNoLease) {
			// Resumed after the lease ended: it releases at its next
			// check and must not speak for the address meanwhile.
			m.log.Warn("not announcing again: the lease is over", "event", "announce_unleased", "vip", ev.VIP.String())
		}
	}
}

// updateHealth feeds the protocol this node's health: critical
// applications up and healthy (the supervisor's word) and every VIP
// interface up.
func (m *manager) updateHealth(now time.Duration) {
	var reasons []string
	if !m.supHealthy {
		reasons = append(reasons, m.supReasons...)
		if len(m.supReasons) == 0 {
			reasons = append(reasons, "applications unhealthy")
		}
	}
	for ifn := range m.linkDown {
		reasons = append(reasons, "interface "+ifn+" down")
	}
	for ifn, why := range m.v6Off {
		if !m.linkDown[ifn] {
			reasons = append(reasons, "interface "+ifn+": "+why)
		}
	}
	for key, u := range m.vipUnfit {
		reasons = append(reasons, "floating IP "+key+" could not be added: "+u.err)
	}
	slices.Sort(reasons)
	h := len(reasons) == 0
	if h != m.healthy {
		if h {
			m.log.Info("node healthy", "event", "node_health", "healthy", true)
		} else {
			m.log.Warn("node unhealthy", "event", "node_health", "healthy", false, "reasons", fmt.Sprint(reasons))
		}
	}
	m.healthy = h
	m.reasons = reasons
	// on_fault is queued before the protocol hears of it, so that it runs
	// before the on_standby of the handover an unhealthy active makes.
	known := m.sup == nil || m.supKnown
	switch {
	case h && known:
		m.faultArmed = true
	case !h && m.faultArmed:
		m.faultArmed = false
		m.fault("unhealthy: "+strings.Join(reasons, "; "), m.node.Status().Epoch)
	}
	m.node.SetHealth(now, h)
}

// fault runs on_fault: this node became unhealthy, or lost the active role
// without handing it over. reason is in the hook's VIGIL_REASON.
func (m *manager) fault(reason string, epoch uint64) {
	m.hooks.enqueue("fault", m.cfg.Hooks.OnFault, m.hookEnv("fault", epoch, reason), m.cfg.Hooks.Timeout)
}

// syncLease gives the floating IP manager the lease deadline its
// announcements are checked against at the moment of sending: the own
// lease while active, none otherwise (a draining old active keeps the
// addresses but never announces them).
func (m *manager) syncLease() {
	if m.float == nil || m.node == nil {
		return
	}
	m.float.SetLeaseDeadline(m.node.LeaseUntil())
}

// flush carries out the protocol's Ready: persist, act, send. A failed
// write leaves the state dirty in the core (no Persisted, so the next flush,
// at the latest the next tick, writes it again) and sends none of the
// messages: a claim whose epoch is not on disk could be reused after a
// restart, and a node that cannot persist does not claim. The events are
// acted on all the same: they are local, and giving up the role (dropping
// the addresses) must never wait for a disk. statefile.Writer logs one
// persist_error per episode and persist_recovered at its end.
//
// It returns Now as read after the write (the time the rest of the pass
// goes by).
func (m *manager) flush() time.Duration {
	rd := m.node.Ready()
	written := true
	// Before the events: BecameActive claims (and announces) under the
	// new deadline, BecameStandby's release finds announcements stopped.
	m.syncLease()
	m.pass.step(stepSyncLease, m.clk.Mono())
	if rd.State != nil {
		if err := m.state.Save(rd.State); err != nil {
			written = false
		} else {
			m.node.Persisted(*rd.State)
		}
		m.pass.step(stepPersist, m.clk.Mono())
	}
	for _, ev := range rd.Events {
		m.onEvent(ev)
	}
	if len(rd.Events) > 0 {
		m.pass.step(stepEvents, m.clk.Mono())
	}
	sent := m.clk.Now()
	if !written {
		return sent
	}
	// Read after the write: the rounds count from here, not from before
	// a slow fsync (Node.Sent).
	m.node.Sent(sent)
	for _, e := range rd.Messages {
		if e.Msg.Type == protocol.MsgCheckIn {
			m.timing.Sent(e.To, e.Msg.CheckIn.Round, sent)
		}
		if err := m.send(e); err != nil {
			m.log.Debug("send failed", "err", err)
		}
	}
	if len(rd.Messages) > 0 {
		m.pass.step(stepSend, m.clk.Mono())
	}
	return sent
}

// loadState reads the node's state file. No file: a first start or a
// lost state directory, said in the log (event=state_new), and an
// incarnation from the clock so that the peers, which remember the
// previous life's, accept this one (statefile.FreshIncarnation). The epoch
// it claimed before is learnt back from the locators' answers before it
// claims (a claim below a locator's epoch is refused with that epoch).
func loadState(path string, owner statefile.Owner, wall time.Time, log *slog.Logger) (protocol.NodeState, error) {
	var st protocol.NodeState
	res, err := statefile.Load(path, owner, &st)
	if err != nil {
		return st, err
	}
	switch res {
	case statefile.LoadedLegacy:
		log.Info("node state file in the previous format (no checksum); rewritten now", "event", "state_upgraded", "path", path)
	case statefile.Missing:
		inc, err := statefile.FreshIncarnation(wall)
		if err != nil {
			return st, err
		}
		st.Incarnation = inc - 1 // NewNode counts this start
		log.Warn("no node state file: a first start, or runtime.state_dir was lost; starting at an incarnation from the clock so that the peers accept it",
			"event", "state_new", "path", path, "incarnation", inc)
	}
	return st, nil
}

func (m *manager) onEvent(ev protocol.Event) {
	now := m.clk.Now()
	st := m.node.Status()
	switch e := ev.(type) {
	case protocol.BecameActive:
		m.log.Info("became active", "event", "role", "role", "active", "epoch", e.Epoch, "lease_ms", (e.LeaseUntil - now).Milliseconds())
		decided := m.fo.decidedAt(now)
		m.handoverUntil = 0
		if c := m.fo.pending; c != nil && c.reason == reasonSwitchover {
			// The old active's lease, at most, is what it may keep them.
			m.handoverUntil = now + m.pcfg.Lease + m.pcfg.DriftMargin
			if gap := m.cfg.Announce.HandoverGap; gap > 0 && m.float != nil {
				m.gapClaim = &gapClaim{at: now + gap, epoch: e.Epoch, decided: decided}
				m.log.Info("handover: the floating IPs are announced after the handover gap", "event", "handover_gap", "epoch", e.Epoch, "gap_ms", gap.Milliseconds())
				return
			}
		}
		m.activate(e.Epoch, decided)
	case protocol.LeaseExtended:
		if m.held && m.float != nil && now-m.lastExt >= extendEvery {
			notHeld, err := m.float.ExtendAll(m.vips)
			if err != nil {
				m.log.Warn("cannot extend floating IP lifetime", "event", "vip_error", "err", err)
			}
			if len(notHeld) > 0 {
				// Their claim failed (or a reload's did): this node is
				// entitled to them, so try again (claimAll logs).
				m.claimAll(notHeld)
			}
			m.lastExt = now
		}
	case protocol.BecameStandby:
		m.gapClaim = nil
		if e.Planned {
			m.startDrain(e.To, e.LeaseUntil, now)
		} else {
			m.release("standby: " + e.Reason)
		}
		m.log.Info("became standby", "event", "role", "role", "standby", "epoch", e.Epoch, "reason", e.Reason)
		m.hooks.enqueue("standby", m.cfg.Hooks.OnStandby, m.hookEnv("standby", e.Epoch, e.Reason), m.cfg.Hooks.Timeout)
		if !e.Handover() {
			// The role was lost, not given: its lease ran out (no quorum
			// renewed it) or another node holds a newer epoch.
			m.fault("lost the active role: "+e.Reason, e.Epoch)
		}
	case protocol.BecameCandidate:
		m.fo.becameCandidate(e.Cause)
		m.log.Info("claiming the active role", "event", "role", "role", "candidate", "epoch", e.Epoch, "reason", claimReason(e.Cause))
	case protocol.ClaimAbandoned:
		m.log.Info("claim abandoned", "event", "claim_abandoned", "reason", e.Reason)
	case protocol.TokenLost:
		m.log.Warn("token lost", "event", "token_lost", "age_ms", e.Age.Milliseconds(), "active", st.Active)
	case protocol.TokenRegenerated:
		m.log.Info("token regenerated", "event", "token_regenerated", "epoch", e.Epoch)
	case protocol.SwitchoverRefused:
		// The requester's CLI only sees the role stay; this is the why.
		m.log.Warn("switchover request refused", "event", "switchover_refused", "from", e.From, "to", e.To, "reason", e.Reason)
	case protocol.MembershipChanged:
		next := ""
		if e.Next != (protocol.Membership{}) {
			next = e.Next.Format(m.pcfg.Locators)
		}
		m.log.Info("membership of the locators changed", "event", "membership", "membership", e.Conf.Format(m.pcfg.Locators),
			"next", next, "quorum", st.Quorum, "detail", e.Desc)
	}
}

// hookEnv is a hook's whole environment but PATH (docs/configuration.md,
// hooks): nothing of the node manager's own is passed on. An active or
// standby event moves VIGIL_ROLE; a fault leaves it (the role it was
// raised in, or the standby a lost role ended in).
func (m *manager) hookEnv(event string, epoch uint64, reason string) []string {
	if event != "fault" {
		m.hookPrevRole, m.hookRole = m.hookRole, event
	}
	role, prev := m.hookRole, m.hookPrevRole
	if role == "" {
		role = "none"
	}
	if prev == "" {
		prev = "none"
	}
	svc, ok := m.cfg.Service()
	if !ok {
		svc.Name = config.ImplicitService // a Config made without parsing
	}
	return []string{"VIGIL_EVENT=" + event, "VIGIL_ROLE=" + role, "VIGIL_PREVIOUS_ROLE=" + prev,
		"VIGIL_NODE=" + m.cfg.Cluster.Node, "VIGIL_CLUSTER=" + m.cfg.ClusterName(), "VIGIL_SERVICE=" + svc.Name,
		"VIGIL_EPOCH=" + strconv.FormatUint(epoch, 10), "VIGIL_REASON=" + reason}
}

// activate claims the floating IPs, records the takeover and runs the
// on_active hooks.
func (m *manager) activate(epoch uint64, decided time.Duration) {
	t := m.claim(epoch, decided)
	m.fo.becameActive(m.log, epoch, t, m.clk.Now()-decided)
	m.hooks.enqueue("active", m.cfg.Hooks.OnActive, m.hookEnv("active", epoch, ""), m.cfg.Hooks.Timeout)
}

// claim adds and announces every floating IP. decided is when the protocol
// decided (the input that made this node active arrived).
func (m *manager) claim(epoch uint64, decided time.Duration) *ctlmsg.Takeover {
	t := &ctlmsg.Takeover{Epoch: epoch}
	m.drain = nil // the role came back during a drain: Claim re-announces
	if m.float == nil {
		m.held = true
		return t
	}
	// The claim's own durations count from its start.
	base := float64(m.clk.Now()-decided) / 1e6
	added, announced := m.claimAll(m.vips)
	if added > 0 {
		t.AddedMS = float64(added)/1e6 + base
		t.AnnouncedMS = float64(announced)/1e6 + base
	}
	m.held, m.lastExt = true, m.clk.Now()
	m.takeovers++
	m.lastTakeover = t
	if n := len(m.vipFail); n > 0 {
		m.log.Warn("floating IPs held, some not added", "event", "takeover", "epoch", epoch, "added_ms", fmt.Sprintf("%.2f", t.AddedMS), "announced_ms", fmt.Sprintf("%.2f", t.AnnouncedMS),
			"held", len(m.vips)-n, "failed", n)
		return t
	}
	m.log.Info("floating IPs held", "event", "takeover", "epoch", epoch, "added_ms", fmt.Sprintf("%.2f", t.AddedMS), "announced_ms", fmt.Sprintf("%.2f", t.AnnouncedMS))
	return t
}

// claimAll adds and announces vips in one step and logs what went wrong.
// It returns when the last address claimed was added and announced
// (0 if none was), counted from its start.
func (m *manager) claimAll(vips []netfloat.VIP) (added, announced time.Duration) {
	reps, err := m.float.ClaimAll(context.Background(), vips)
	failed := false
	for i, rep := range reps {
		v := vips[i]
		if rep.Err != nil {
			failed = true
			m.claimFailed(v, rep.Err)
			continue
		}
		m.claimed(v, rep)
		added, announced = max(added, rep.AddedAfter), max(announced, rep.AnnouncedAfter)
	}
	if err != nil && !failed {
		// Held, but a first announcement failed; the burst goes on.
		m.log.Warn("cannot announce floating IPs", "event", "vip_error", "err", err)
	}
	return added, announced
}

// claimOne adds and announces one floating IP and logs what went wrong.
func (m *manager) claimOne(v netfloat.VIP) (netfloat.ClaimReport, error) {
	rep, err := m.float.Claim(context.Background(), v)
	switch {
	case err != nil && rep.AddedAfter > 0 && !errors.Is(err, netfloat.ErrClosed):
		// Held, but its first announcement failed; the burst goes on.
		// Not a failed add: that would make the node unfit for the
		// service (checkVIPFit) for an address it has.
		m.log.Warn("cannot announce floating IP", "event", "vip_error", "vip", v.String(), "err", err)
	case err != nil:
		m.claimFailed(v, err)
		return rep, err
	}
	m.claimed(v, rep)
	return rep, nil
}

// claimed records a successful claim of v and reports a conflict it saw.
func (m *manager) claimed(v netfloat.VIP, rep netfloat.ClaimReport) {
	m.clearVIPFailure(v)
	// A successful claim opened the interface's port: float now reports
	// its link events too.
	m.floatIfaces[v.Interface] = true
	switch now := m.clk.Now(); {
	case rep.Conflict == nil:
	case now < m.handoverUntil:
		m.log.Info("the previous active still answered for the floating IP; expected in a handover", "event", "handover_overlap", "vip", v.String(), "mac", rep.Conflict.String())
	default:
		m.noteConflict(v, rep.Conflict, now)
		m.log.Warn("another host still answered for the floating IP; claimed it under our lease", "event", "vip_conflict", "vip", v.String(), "mac", rep.Conflict.String())
	}
}

// claimFailed logs that v could not be added, once for each new error:
// the claim is retried every extendEvery, and an interface that does not
// exist would otherwise write two errors a second for as long as it
// lacks.
func (m *manager) claimFailed(v netfloat.VIP, err error) {
	key, text := v.String(), err.Error()
	if m.vipFail == nil {
		m.vipFail = map[string]vipFailure{}
	}
	prev, ok := m.vipFail[key]
	if !ok || prev.err != text {
		m.log.Error("cannot add floating IP; trying again every 500ms", "event", "vip_error", "vip", key, "err", err)
	} else {
		m.log.Debug("still cannot add floating IP", "vip", key, "err", err)
	}
	since := m.clk.Now()
	if ok {
		since = prev.since
	}
	m.vipFail[key] = vipFailure{vip: v, err: text, since: since}
}

// failsForItsInterface says whether v's interface is down or missing, or
// cannot hold v for having IPv6 off: reasons of their own for the node's
// health, which end when that does.
func (m *manager) failsForItsInterface(v netfloat.VIP) bool {
	return m.linkDown[v.Interface] || (v.Prefix.Addr().Is6() && m.v6Off[v.Interface] != "")
}

// clearVIPFailure notes that v is on the interface now.
func (m *manager) clearVIPFailure(v netfloat.VIP) {
	key := v.String()
	if _, ok := m.vipFail[key]; ok {
		delete(m.vipFail, key)
		m.log.Info("floating IP added after failing", "event", "vip_added", "vip", key)
	}
	if _, ok := m.vipUnfit[key]; ok {
		delete(m.vipUnfit, key)
		m.vipCheck = true
	}
	delete(m.vipEpisodes, key)
}

// checkVIPFit holds against this node the floating IPs it has failed to
// add for vipUnfitAfter with their interface up, and lets go of those
// whose hold is over; either change rereads the node's health.
func (m *manager) checkVIPFit(now time.Duration) {
	changed := m.vipCheck
	m.vipCheck = false
	refreshed := false
	for key, f := range m.vipFail {
		own := m.failsForItsInterface(f.vip)
		if !own && now-f.since >= vipUnfitAfter && f.vip.Prefix.Addr().Is6() && !refreshed {
			// IPv6 turned off is read once a second, maybe not yet.
			refreshed = true
			changed = m.refreshIPv6(now) || changed
			own = m.failsForItsInterface(f.vip)
		}
		if own {
			// Its own reason already; the time counts once that is over.
			f.since = now
			m.vipFail[key] = f
			continue
		}
		if now-f.since < vipUnfitAfter {
			continue
		}
		if m.vipUnfit == nil {
			m.vipUnfit, m.vipEpisodes = map[string]vipUnfit{}, map[string]int{}
		}
		u, ok := m.vipUnfit[key]
		if !ok {
			changed = true
			m.vipEpisodes[key]++
			u.hold = unfitHold(m.unfitBase, m.vipEpisodes[key])
			m.log.Error("floating IP still not added with its interface up; this node is unhealthy for the service until "+u.hold.String()+" after its last failure, so that a standby that can hold all of it takes it",
				"event", "vip_unfit", "vip", key, "failing_ms", (now - f.since).Milliseconds(), "hold_s", int(u.hold.Seconds()), "episode", m.vipEpisodes[key], "err", f.err)
		}
		u.err, u.until = f.err, now+u.hold
		m.vipUnfit[key] = u
	}
	for key, u := range m.vipUnfit {
		if now >= u.until {
			delete(m.vipUnfit, key)
			changed = true
			m.log.Info("floating IP failure no longer held against this node", "event", "vip_fit", "vip", key)
		}
	}
	if changed {
		m.updateHealth(now)
	}
}

func (m *manager) release(why string) {
	m.vipFail = nil // nothing is owed once nothing is held
	if !m.held {
		return
	}
	m.held, m.drain = false, nil
	if m.float == nil {
		return
	}
	if err := m.float.ReleaseAll(m.vips); err != nil {
		m.log.Error("cannot remove floating IPs", "event", "vip_error", "err", err)
	}
	m.log.Info("floating IPs released", "event", "release", "reason", why)
}

// enforceLease drops the floating IPs the moment the own lease is over,
// whether or not the protocol said BecameStandby yet.
func (m *manager) enforceLease(now time.Duration) {
	if m.held && m.drain == nil && !m.node.ActiveAt(now) {
		m.release("lease expired")
		m.log.Warn("lease expired while holding the floating IPs", "event", "lease_expired")
	}
}

// shutdown is an orderly stop (SIGTERM: systemctl stop or restart, vigil
// restart nodemanager, the supervisor's shutdown; or the supervisor gone).
// An active node hands the role over while its socket is still open (Run
// closes the transport only after this returns): as in every planned
// handover it gives the role up first (its floating IPs drain as in a
// switchover, nodemanager/drain.go), then sends release to the locators and
// transfer to the standby (docs/protocol.md), and then follows the protocol for at most one token timeout, until the
// successor is seen active. Without a handover the standby would wait for
// the lease to run out.
func (m *manager) shutdown(in <-chan transport.Inbound) {
	now := m.clk.Now()
	handed := false
	if m.node.Role() == protocol.Active {
		if err := m.node.Switchover(now, ""); err != nil {
			m.log.Warn("no standby to hand the active role to; stopping without a handover", "event", "switchover", "reason", "shutdown", "err", err)
		} else {
			handed = true
			m.log.Info("handing the active role over before stopping", "event", "switchover", "reason", "shutdown")
		}
	}
	// Claim nothing while stopping: the token may come back naming no
	// active, and a stopping node must not take the role back.
	m.node.SetMaintenance(now, true)
	m.flush()
	successor, waited := "", time.Duration(0)
	if handed {
		successor, waited = m.awaitSuccessor(in)
		m.finishDrain()
	}
	m.release("shutdown")
	m.log.Info("node manager stopped", "event", "nodemanager_stop", "handed_over", handed, "successor", successor, "waited_ms", waited.Milliseconds())
}

// awaitSuccessor keeps stepping the protocol after a handover until
// another node is seen active and this node no longer holds the token (so
// the ring does not lose it with this process), or one token timeout has
// passed. It returns the successor ("" if none was seen) and the time it
// waited. A lost transfer is covered meanwhile: the token carries the
// handover to the successor too.
func (m *manager) awaitSuccessor(in <-chan transport.Inbound) (string, time.Duration) {
	began := m.clk.Now()
	limit := m.clk.NewTimer(m.pcfg.TokenTimeout)
	defer limit.Stop()
	tick := m.clk.NewTicker(m.pcfg.TokenInterval / 4) // short-lived: the fine pace is simplest
	defer tick.Stop()
	for {
		st := m.node.Status()
		if st.Active != "" && st.Active != st.Self && !st.HoldingToken {
			return st.Active, m.clk.Now() - began
		}
		select {
		case <-limit.C():
			m.log.Warn("no successor seen active before stopping; it may still take over", "event", "switchover", "reason", "shutdown", "waited_ms", m.pcfg.TokenTimeout.Milliseconds())
			return "", m.clk.Now() - began
		case msg := <-in:
			if err := m.node.Step(msg.At, msg.Msg); err != nil {
				m.log.Debug("message rejected", "type", msg.Msg.Type.String(), "from", msg.Msg.From, "err", err)
			}
		case <-tick.C():
			m.node.Tick(m.clk.Now())
		case ev := <-m.netEvents:
			m.onNetEvent(ev) // the successor's announcements end the drain
		}
		m.flush()
		m.checkDrain(m.clk.Now())
	}
}

func (m *manager) report(now time.Duration) {
	if m.sup == nil {
		return
	}
	st := m.node.Status()
	bf := ctlmsg.BeatFields{
		Slot: m.slot, Self: st.Self, Role: st.Role.String(), Epoch: st.Epoch, Active: st.Active,
		LeaseMS:    m.pcfg.Lease.Milliseconds(),
		LeaseValid: st.LeaseValid, HoldingToken: st.HoldingToken,
		TokenAgeMS: st.TokenAge.Milliseconds(), RotationMS: float64(st.LastRotation) / 1e6,
		TokenLost: st.TokenLost, Healthy: m.healthy, Maintenance: st.Maintenance,
	}
	if st.LeaseValid {
		bf.LeaseRemainingMS = (st.LeaseUntil - now).Milliseconds()
	}
	if m.drain != nil {
		bf.DrainingTo = m.drain.to
		bf.DrainRemainingMS = max(0, (m.drain.until - now).Milliseconds())
	}
	// In beats too: the supervisor releases the role with the latest.
	if sc, ok := m.node.Succession(now); ok {
		bf.Succession = &ctlmsg.Succession{Epoch: sc.Epoch, To: sc.To, Nodes: sc.Nodes, Locators: sc.Locators}
	}
	// Between full reports, a beat: the lease fields only (a full report
	// encoded four times a lease was a tenth of an idle node manager's
	// CPU, and its decoding a quarter of the supervisor's; a full report
	// every 250 ms still a fifth of what was left of the supervisor's).
	// The kernel lease's state is in the view: the supervisor leaves a
	// stalled node manager alive only while its last report said
	// "enforcing" (supervisor.leaveToKernel), so a change is sent at once.
	kl := m.kernelLeaseReport()
	view := reportView{role: bf.Role, epoch: bf.Epoch, active: bf.Active, healthy: m.healthy,
		maintenance: st.Maintenance, held: m.held, draining: m.drain != nil, reasons: strings.Join(m.reasons, "; "),
		vipFail: len(m.vipFail), conf: st.Conf, next: st.Next}
	if kl != nil {
		view.kernelLease = kl.State
	}
	if m.fullSent && now-m.lastFull < ctlmsg.FullReportEvery && view == m.lastView {
		m.sendReport(&ctlmsg.NodeManagerReport{Beat: true, BeatFields: bf})
		return
	}
	r := ctlmsg.NodeManagerReport{
		BeatFields:       bf,
		UnhealthyReasons: m.reasons, Incarnation: st.Incarnation, QuorumNeeded: st.Quorum,
		Takeovers: m.takeovers, LastTakeover: m.lastTakeover,
		LateTimers: m.lateTimers, MaxLateMS: float64(m.maxLate) / 1e6, SlowPasses: m.slowPasses,
		HookFailures: m.hooks.failures.Load(), VIPs: []string{},
	}
	m.fullSent, m.lastFull, m.lastView = true, now, view
	m.rt.Refresh() // the supervisor may have made us SCHED_RR since start
	r.Transport, r.Realtime = m.tr.Stats(), m.rt
	for _, p := range st.Peers {
		pr := ctlmsg.PeerState{ID: p.ID, Healthy: p.Healthy, Maintenance: p.Maintenance, InRing: p.InRing}
		if p.ID == st.Self {
			// The token's summary of this node may be a rotation old; its
			// own view is current.
			pr.Healthy, pr.Maintenance = m.healthy, st.Maintenance
		}
		r.Peers = append(r.Peers, pr)
	}
	if m.pcfg.LastManStanding > 0 || st.Conf != (protocol.Membership{}) || st.Next != (protocol.Membership{}) {
		r.Membership = ctlmsg.MembershipOf(st.Conf, m.pcfg.Locators)
		if st.Next != (protocol.Membership{}) {
			r.MembershipNext = ctlmsg.MembershipOf(st.Next, m.pcfg.Locators)
		}
	}
	for _, l := range st.Locators {
		lr := ctlmsg.LocatorAnswer{ID: l.ID, Seen: l.Seen}
		if l.Seen {
			lr.AgeMS = (now - l.LastAck).Milliseconds()
		}
		r.Locators = append(r.Locators, lr)
	}
	switch {
	case m.drain != nil:
		for _, v := range m.vips {
			if _, ok := m.drain.left[v.String()]; ok {
				r.VIPs = append(r.VIPs, v.String())
			}
		}
	case m.held:
		for _, v := range m.vips {
			if f, failed := m.vipFail[v.String()]; failed {
				r.VIPsFailed = append(r.VIPsFailed, ctlmsg.VIPFailure{VIP: v.String(), Error: f.err})
				continue
			}
			r.VIPs = append(r.VIPs, v.String())
		}
	}
	if m.watch != nil {
		ws := m.watch.Snapshot()
		r.Degraded, r.DegradedReasons = ws.Degraded, ws.Reasons
		r.SchedLateEpisodes, r.SchedMaxLateMS = ws.Episodes, float64(ws.MaxLate)/1e6
		h := ws.Histogram.JSON()
		r.SchedLate = &h
	}
	r.Timing = m.timing.Report(now)
	r.KernelLease = kl
	if m.float != nil {
		s := m.float.Stats()
		r.GARPSent, r.NASent, r.AnnounceUnleased = s.GARPSent, s.NASent, s.Unleased
	}
	r.Conflicts = m.conflicts
	r.PersistFailing, r.PersistErrors, r.PersistError = m.state.Status()
	if c := m.lastConflict; c != nil {
		r.LastConflict = &ctlmsg.Conflict{VIP: c.vip, MAC: c.mac, AgeMS: (now - c.at).Milliseconds()}
	}
	m.sendReport(&r)
}

// reportView is what, when it changes, makes the next report a full one.
type reportView struct {
	role, active, reasons, kernelLease   string
	epoch                                uint64
	healthy, maintenance, held, draining bool
	vipFail                              int // floating IPs that could not be added
	conf, next                           protocol.Membership
}

func (m *manager) sendReport(r *ctlmsg.NodeManagerReport) {
	msg, err := ctlmsg.NodeManagerReportMsg(r)
	if err != nil {
		m.log.Error("cannot encode the report", "event", "ipc_error", "err", err)
		return
	}
	if m.holds != nil && m.sup != nil {
		m.holds.flush(m.sup)
	}
	// Never wait for the supervisor: it runs without realtime priority,
	// and this loop holds the lease. A report it has no room for is
	// skipped; the next one is full, so nothing it said is lost.
	err = m.sup.TrySend(msg)
	switch {
	case err == nil:
		if m.reportsSkipped > 0 {
			m.log.Info("supervisor reads reports again", "event", "report_resumed", "skipped", m.reportsSkipped)
			m.reportsSkipped = 0
		}
	case errors.Is(err, ipc.ErrWouldBlock):
		if m.reportsSkipped == 0 {
			m.log.Warn("supervisor not reading reports (starved?); skipping them rather than waiting", "event", "report_skipped")
		}
		m.reportsSkipped++
		m.fullSent = false
	default:
		m.log.Debug("cannot report to the supervisor", "err", err)
		m.fullSent = false
	}
}

type conflict struct {
	vip, mac string
	at       time.Duration
}

// noteConflict records another host answering for v (the vip_conflict
// warning of vigil status, vigil_ip_conflicts_total).
func (m *manager) noteConflict(v netfloat.VIP, mac net.HardwareAddr, now time.Duration) {
	m.conflicts++
	m.lastConflict = &conflict{vip: v.String(), mac: mac.String(), at: now}
}
