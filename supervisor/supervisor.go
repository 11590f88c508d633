// Package supervisor is `vigil supervise`: it builds Vigil's cgroup tree,
// starts the configured processes each in its own cgroup, restarts them with
// backoff, owns every wait(), runs their health checks, answers the control
// socket and talks to systemd.
//
// All state lives in one goroutine (the main loop). Other goroutines (the
// reaper, timers, health monitors, the control socket) post closures to it;
// nothing else touches a process's state. A responsive loop is what the
// systemd watchdog is fed from.
package supervisor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/procsig"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/supervisor/health"
)

// Options are the supervisor's inputs besides the config file.
type Options struct {
	// ConfigPath is the configuration file, absolute: the locator and
	// node manager are started in / and given this path, and reload reads
	// it again.
	ConfigPath string
	Version    string
	Logger     *slog.Logger
	// Exe is the binary re-executed as the shim; default /proc/self/exe.
	Exe string
	// Clock is what every timing decision of the supervisor runs on (the
	// fence, restart backoff, restart grace, start-up timeout); nil is
	// clock.Real{}, whose Now is CLOCK_BOOTTIME, the lease's clock. Tests
	// give a clock.Fake.
	Clock clock.Clock
}

// Supervisor is one running `vigil supervise`.
type Supervisor struct {
	opts      Options
	clock     clock.Clock
	log       *slog.Logger
	cfg       *config.Config
	reaper    *Reaper
	cg        *cgroup.Manager
	apps      *cgroup.Group
	sup       *cgroup.Group // control/supervisor, where this process lives
	ctrlGroup *cgroup.Group // control/
	notify    *notifier

	// hooks are the node managers' hooks groups, by slot (cgroup.HooksGroup
	// for the first service, hooks-<service> for the others: a node
	// manager's death kills what is left of its hooks, not another's);
	// none on a witness, nil where one could not be created (hooksErr says
	// why: the hooks then run in the node manager's group).
	hooks        []*cgroup.Group
	hooksApplied []cgroup.Resources
	hooksErr     string

	events chan func()
	procs  []*proc // applications, in config order
	ctrl   []*proc // the control plane: locator, node manager
	// rtWatch watches the control plane's use of its realtime budget (v1
	// kernels with CONFIG_RT_GROUP_SCHED); nil elsewhere.
	rtWatch *rtBudgetWatch
	rnd     *rand.Rand
	exe     string // the vigil binary the control plane runs

	pending map[uint64]chan answer // commands forwarded to the control plane
	nextID  uint64
	fences  uint64
	// floats removes the floating IPs of each service (by slot) for a
	// fence or a crash release; nil where a service has none.
	floats []fencer
	// owner is this host's claim on the floating IPs of its network
	// namespace (netfloat.OwnNamespace), held while it has any.
	owner *netfloat.Owner
	// fencesHeld counts fences left to the kernel lease (checkFence).
	fencesHeld uint64

	notInForce []string // guarantees the host refused, "group: setting"
	// What applyGroupResources last asked of control/, apps/ and hooks/,
	// so that a reload resets what it dropped (applyResources).
	ctrlApplied, appsApplied cgroup.Resources

	// Blocking work runs off the loop, its result posted back as an event
	// (a fence for a stalled node manager must never wait in the queue
	// behind it). Seams: tests make them slow.
	killGroup   func(*cgroup.Group) error                   // kill what a run left in its group (polls up to 5 s)
	removeGroup func(*cgroup.Group) error                   // delete a group, killing what it holds
	lookupCreds func(*config.Process) (*credentials, error) // NSS user and group lookups
	// leaseEnforces: does the host's kernel lease stop serving vips by
	// itself within the given time (netfloat.LeaseChecker, one lasting socket)?
	leaseEnforces func(slot int, vips []netip.Addr, within time.Duration) error
	leaseCheckers map[int]*netfloat.LeaseChecker // behind leaseEnforces, by slot; closed when Run ends
	deleting      map[string]chan struct{}       // groups being deleted, by name under control/ or apps/

	started    time.Time
	reloads    uint64
	stopping   bool
	healthy    bool
	appHealthy []bool // what each service's node manager was last told (updateHealth)
}

type proc struct {
	cfg     config.Process
	group   *cgroup.Group
	applied cgroup.Resources // last written to group (applyResources)
	// held are files a control-plane process passed to be kept open
	// until it is gone (ctlmsg.TypeHold), by its key.
	held map[string][]*os.File
	log  *slog.Logger

	state       State
	pid         int
	daemonized  bool
	gen         uint64 // bumped at every start; events of older runs are ignored
	startedAt   time.Time
	restarts    int
	failures    int // consecutive rapid failures
	lastExit    *Exit
	lastRan     time.Duration
	nextStart   time.Time
	timer       clock.Stopper
	spawnErr    string
	restartLat  time.Duration
	restartFrom time.Time // exit time of the run an immediate restart replaces

	monitor   *health.Monitor
	monCancel context.CancelFunc
	health    health.Status

	// A planned restart (reload, `vigil restart`) of a process that was up
	// does not count against the node's health until graceUntil, or until
	// it is back or has failed on its own (see beginRestartGrace).
	graceUntil  time.Time
	graceReason string
	graceTimer  clock.Stopper

	// Control-plane processes only.
	control string // "locator" or "nodemanager"; "" for applications; each serves every service
	conn    *ipc.Conn
	// handled counts the messages of conn the loop has acted on; fewer
	// than conn.Received() means one was read and waits in the loop's
	// queue (checkFence).
	handled uint64
	// The last reports, one for each service by its slot: nms from the
	// node manager (with what the fence needs of each), locReports from
	// the locator (nil until the process reports for the service after
	// its start).
	nms        []nmService
	locReports []*ctlmsg.LocatorReport
	reportBad  bool      // the last report did not decode (logged once)
	lastBeat   time.Time // the last report of any service
	fencing    bool
	// fenceAt: node manager, the earliest of its services' fenceAt, or
	// while fenceHeld the end of the hold (CLOCK_BOOTTIME).
	fenceAt time.Duration
	// fenceAlarm is this run's fence timer, set for fenceTimerAt <=
	// fenceAt while fenceArmed (setFenceTimer); nil until the first
	// report, and again after the exit.
	fenceAlarm   clock.Alarm
	fenceArmed   bool
	fenceTimerAt time.Duration
	// fenceHeld: silent past its lease, but left to the kernel lease
	// since fenceHeldAt, silent for fenceHeldAge then; killed if still
	// silent at fenceAt.
	fenceHeld    bool
	fenceHeldAt  time.Duration
	fenceHeldAge time.Duration
	// fenced: the node manager was SIGKILLed by a fence; its floating IPs
	// are removed once it is confirmed dead (or after fenceKillWait).
	fenced *pendingFence

	// rtDegraded: why the realtime budget of its group (and so SCHED_RR)
	// is not in force, "" when it is or realtime is off; rtBackoff is the
	// next retry's delay.
	rtDegraded string
	rtBackoff  time.Duration

	// creds: the user and group resolved off the loop for the next spawn.
	creds *credentials
}

// New validates nothing by itself: cfg must come from config.Load.
func New(cfg *config.Config, opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Exe == "" {
		opts.Exe = "/proc/self/exe"
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	// One socket per service, kept: the fence checks the kernel lease on a
	// starved host.
	lcs := map[int]*netfloat.LeaseChecker{}
	enforces := func(slot int, vips []netip.Addr, within time.Duration) error {
		lc := lcs[slot]
		if lc == nil {
			lc = netfloat.NewLeaseChecker(-1, slot)
			lcs[slot] = lc
		}
		return lc.Enforces(vips, within)
	}
	return &Supervisor{
		opts:    opts,
		clock:   opts.Clock,
		log:     opts.Logger,
		cfg:     cfg,
		reaper:  NewReaper(opts.Logger),
		events:  make(chan func(), 256),
		rnd:     rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))),
		notify:  newNotifier(opts.Logger),
		pending: make(map[uint64]chan answer),

		killGroup:     killLeftovers,
		removeGroup:   func(g *cgroup.Group) error { return g.Delete() },
		lookupCreds:   lookupCredentials,
		leaseEnforces: enforces,
		leaseCheckers: lcs,
		deleting:      map[string]chan struct{}{},
	}
}

// post hands fn to the main loop. It never blocks the caller for long: the
// queue is large and the loop does no blocking work.
func (s *Supervisor) post(fn func()) { s.events <- fn }

// Run starts everything and blocks until a SIGTERM/SIGINT (or ctx) has
// stopped every process and removed the cgroup tree.
func (s *Supervisor) Run(ctx context.Context) error {
	s.started = time.Now()
	if os.Getpid() != 1 {
		// Orphans of our children (daemons that double-fork) are re-parented
		// to us, not to init, so the reaper sees them and status stays true.
		if err := unixPrctlSubreaper(); err != nil {
			s.log.Warn("cannot become child subreaper; orphans go to init", "err", err)
		}
	}
	reapCtx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go s.reaper.Run(reapCtx)

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// SIGHUP reloads; every other signal an operator may send to "vigil"
	// processes is logged and dropped (internal/procsig).
	strayCtx, stopStray := context.WithCancel(context.Background())
	defer stopStray()
	procsig.CatchStraySignals(syscall.SIGHUP).Serve(strayCtx, s.log, os.Stderr)

	// Before the cgroup tree: setting it up kills what a previous run
	// left in it, which is a running instance's if this is a second one.
	if err := s.refuseSecondInstance(); err != nil {
		return err
	}
	defer func() { s.owner.Close() }() // a reload may have claimed it
	if err := s.setupCgroups(); err != nil {
		return err
	}
	ctl, err := s.listenControl()
	if err != nil {
		s.destroyCgroups()
		return err
	}
	defer ctl.Close()
	defer func() {
		for _, lc := range s.leaseCheckers {
			lc.Close()
		}
	}()
	s.openFencers(s.cfg)

	// The supervisor is the last thing the OOM killer may take: without it
	// nothing restarts or fences. Applications are reset to 0 at spawn.
	realtime.ApplyAndLog(realtime.Settings{OOMScoreAdj: realtime.DefaultOOMScoreAdj}, s.log)
	s.exe = resolveExe(s.opts.Exe)
	if s.cg != nil && s.cg.Mode() != cgroup.ModeV2 {
		// Each control group is added to the watch when it is created
		// (lifecycle.go); polling starts with the loop, below.
		s.rtWatch = newRTBudgetWatch(s.log)
	}
	for _, c := range s.controlProcesses() {
		p := s.newProc(c.cfg)
		p.control = c.kind
		s.ctrl = append(s.ctrl, p)
		s.start(p)
	}

	for _, pc := range s.cfg.Processes {
		p := s.newProc(pc)
		s.procs = append(s.procs, p)
		s.start(p)
	}
	s.updateHealth()
	s.notify.ready(s.statusLine())
	s.log.Info("supervisor ready", "event", "ready", "processes", len(s.procs), "cgroup", s.cg.Describe(), "pid", os.Getpid())

	wdCtx, stopWD := context.WithCancel(context.Background())
	defer stopWD()
	go s.notify.watchdog(wdCtx, s.events)
	go watchPressure(wdCtx, s.ctrlGroup, s.cg != nil && s.cg.Mode() == cgroup.ModeV2, s.log)
	// The realtime-budget watch keeps the control groups' files open: it
	// is stopped, and its files closed, before the groups are removed.
	rtCtx, stopRT := context.WithCancel(wdCtx)
	rtDone := make(chan struct{})
	if s.rtWatch != nil {
		go func() { watchRTBudget(rtCtx, s.rtWatch); close(rtDone) }()
	} else {
		close(rtDone)
	}

	done := make(chan struct{})
	for {
		select {
		case fn := <-s.events:
			fn()
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				_, _ = s.reload()
			default:
				s.beginShutdown(sig.String(), done)
			}
		case <-ctx.Done():
			s.beginShutdown("context done", done)
		case <-done:
			stopRT()
			<-rtDone
			s.destroyCgroups()
			// Every child has exited: Vigil's packet filter tables
			// (the node manager's kernel lease, lease_*, and whatever
			// else of Vigil's is in them) go with it. Never another
			// table; none there is no error. Not while another Vigil
			// holds floating IPs here: they are its kernel lease.
			if s.owner == nil && netfloat.NamespaceOwned() {
				s.log.Info("another vigil holds floating IPs in this network namespace: its nftables tables are left", "event", "nft_cleanup_skipped")
			} else if err := netfloat.DeleteTables(-1); err != nil {
				s.log.Warn("cannot remove Vigil's nftables tables", "event", "nft_cleanup_error", "err", err)
			}
			s.log.Info("supervisor stopped", "event", "stopped")
			return nil
		}
	}
}
