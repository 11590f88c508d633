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
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/procstat"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/supervisor/health"
)

// Options are the supervisor's inputs besides the config file.
type Options struct {
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

	// hooks is the node manager's hooks group (cgroup.HooksGroup), nil on
	// a witness or when it could not be created (hooksErr says why: the
	// hooks then run in the node manager's group).
	hooks    *cgroup.Group
	hooksErr string

	events chan func()
	procs  []*proc // applications, in config order
	ctrl   []*proc // the control plane: locator, node manager
	rnd    *rand.Rand
	exe    string // the vigil binary the control plane runs

	pending map[uint64]chan error // commands forwarded to the control plane
	nextID  uint64
	fences  uint64
	float   fencer

	notInForce []string // guarantees the host refused, "group: setting"

	// Blocking work runs off the loop, its result posted back as an event
	// (a fence for a stalled node manager must never wait in the queue
	// behind it). Seams: tests make them slow.
	killGroup   func(*cgroup.Group) error                   // kill what a run left in its group (polls up to 5 s)
	removeGroup func(*cgroup.Group) error                   // delete a group, killing what it holds
	lookupCreds func(*config.Process) (*credentials, error) // NSS user and group lookups
	deleting    map[string]chan struct{}                    // groups being deleted, by name under control/ or apps/

	started    time.Time
	reloads    uint64
	stopping   bool
	healthy    bool
	appHealthy bool
}

type proc struct {
	cfg   config.Process
	group *cgroup.Group
	log   *slog.Logger

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
	control string // "locator" or "nodemanager"; "" for applications
	conn    *ipc.Conn
	// The last report: nmReport from a node manager, locReport from a
	// locator (nil until the process reports after its start).
	nmReport   *ctlmsg.NodeManagerReport
	locReport  *ctlmsg.LocatorReport
	lastBeat   time.Time
	fencing    bool
	fenceAt    time.Duration // node manager: when it must have reported again (CLOCK_BOOTTIME)
	fenceTimer clock.Stopper // fires at fenceAt
	// fenced: the node manager was SIGKILLed by a fence; its floating IPs
	// are removed once it is confirmed dead (or after fenceKillWait).
	fenced *pendingFence
	// fault: the node manager was fenced while it held the floating IPs;
	// its successor is told at start, and runs hooks.on_fault for it.
	fault *ctlmsg.Msg

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
	return &Supervisor{
		opts:    opts,
		clock:   opts.Clock,
		log:     opts.Logger,
		cfg:     cfg,
		reaper:  NewReaper(opts.Logger),
		events:  make(chan func(), 256),
		rnd:     rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))),
		notify:  newNotifier(opts.Logger),
		pending: make(map[uint64]chan error),

		killGroup:   killLeftovers,
		removeGroup: func(g *cgroup.Group) error { return g.Delete() },
		lookupCreds: lookupCredentials,
		deleting:    map[string]chan struct{}{},
	}
}

// killLeftovers kills whatever a run left in g. It may block for seconds.
func killLeftovers(g *cgroup.Group) error {
	if g == nil {
		return nil
	}
	if procs, err := g.Procs(); err != nil || len(procs) == 0 {
		return nil
	}
	return g.Kill()
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
	// processes is logged and dropped (signals.go).
	strayCtx, stopStray := context.WithCancel(context.Background())
	defer stopStray()
	CatchStraySignals(syscall.SIGHUP).Serve(strayCtx, s.log, os.Stderr)

	if err := s.setupCgroups(); err != nil {
		return err
	}
	ctl, err := s.listenControl()
	if err != nil {
		s.destroyCgroups()
		return err
	}
	defer ctl.Close()
	if s.float, err = newFencer(s.cfg, s.log); err != nil {
		s.log.Warn("cannot watch floating IPs for fencing", "event", "fence_error", "err", err)
	}

	// The supervisor is the last thing the OOM killer may take: without it
	// nothing restarts or fences. Applications are reset to 0 at spawn.
	realtime.ApplyAndLog(realtime.Settings{OOMScoreAdj: realtime.DefaultOOMScoreAdj}, s.log)
	s.exe = resolveExe(s.opts.Exe)
	for _, pc := range s.controlProcesses() {
		p := s.newProc(pc)
		p.control = pc.Name
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
	go watchPressure(wdCtx, s.ctrlGroup, s.log)

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
			s.destroyCgroups()
			// Every child has exited: Vigil's packet filter tables
			// (the node manager's kernel lease, lease_*, and whatever
			// else of Vigil's is in them) go with it. Never another
			// table; none there is no error.
			if err := netfloat.DeleteTables(-1); err != nil {
				s.log.Warn("cannot remove Vigil's nftables tables", "event", "nft_cleanup_error", "err", err)
			}
			s.log.Info("supervisor stopped", "event", "stopped")
			return nil
		}
	}
}

func (s *Supervisor) setupCgroups() error {
	cg, err := cgroup.Open(cgroup.Options{Subtree: s.cfg.Runtime.Cgroup, Logger: s.log})
	if err != nil {
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	s.cg = cg
	if s.sup, err = cg.Group("control/supervisor"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	// On v2 a process may not sit in a group whose controllers are enabled
	// for its children, so the supervisor lives in a leaf of its own.
	if err := cg.MoveSelf("control/supervisor"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: move into control/supervisor: %w", err)
	}
	if s.apps, err = cg.Group("apps"); err != nil {
		s.destroyCgroups()
		return fmt.Errorf("supervisor: cgroup tree: %w", err)
	}
	if s.cfg.Cluster.Role == config.RoleNode {
		s.setupHooksGroup()
	}
	s.applyGroupResources()
	return nil
}

// setupHooksGroup creates the group the node manager's transition hooks
// run in: hooks/, a sibling of control/ and apps/. Not below control/: a
// CPU- or memory-heavy hook must not be charged to the control plane's
// reservation (its cpu weight, memory.min, realtime budget) nor hit its
// limits. Not below apps/: the applications' limits (apps.memory_max,
// pids_max, cpu_max) are sized for them, and a hook that repairs a stuck
// application must still run when they are exhausted; apps/<name> is the
// applications' namespace too. A new v1 group has cpu.rt_runtime_us 0 (no
// realtime budget) and the default cpu weight, which is what a hook gets.
// Without it hooks still run, in the node manager's group: said loudly.
func (s *Supervisor) setupHooksGroup() {
	g, err := s.cg.Group(cgroup.HooksGroup)
	if err != nil {
		s.hooks, s.hooksErr = nil, err.Error()
		s.log.Warn("cannot create the hooks cgroup; hooks run in the node manager's cgroup, charged to the control plane",
			"event", "hooks_cgroup_error", "err", err)
		return
	}
	s.hooks, s.hooksErr = g, ""
}

// applyGroupResources writes the control/ and apps/ values of the config.
// What the host cannot do is logged once, not fatal.
func (s *Supervisor) applyGroupResources() {
	s.notInForce = nil
	ctrl, err := s.cg.Group("control")
	if err == nil {
		s.ctrlGroup = ctrl
		var na []string
		na, err = ctrl.Apply(cgroup.Resources{CPUWeight: s.cfg.Control.CPUWeight, IOWeight: s.cfg.Control.IOWeight, CPUs: s.cfg.Control.CPUs, MemoryMin: s.cfg.Control.MemoryMin})
		for _, n := range na {
			s.notInForce = append(s.notInForce, "control: "+n)
			s.log.Info("control group setting not in force on this host", "event", "cgroup_degraded", "group", "control", "setting", n)
		}
	}
	if err != nil {
		s.log.Warn("cannot apply control group resources", "event", "cgroup_error", "group", "control", "err", err)
	}
	appsRes := cgroup.Resources{CPUWeight: s.cfg.Apps.CPUWeight, IOWeight: s.cfg.Apps.IOWeight, CPUMax: s.cfg.Apps.CPUMax, MemoryMax: s.cfg.Apps.MemoryMax, PidsMax: s.cfg.Apps.PidsMax}
	if s.cfg.Control.CPUs != "" {
		// Reserved cpus are the control plane's alone: the applications
		// get every other online cpu.
		cpus, err := appsCPUs(s.cfg.Control.CPUs)
		if err != nil {
			s.notInForce = append(s.notInForce, "apps: cpuset: "+err.Error())
			s.log.Warn("cannot keep applications off the reserved cpus", "event", "cgroup_degraded", "err", err)
		} else {
			appsRes.CPUs = cpus
		}
	}
	na, err := s.apps.Apply(appsRes)
	for _, n := range na {
		s.notInForce = append(s.notInForce, "apps: "+n)
		s.log.Info("apps group setting not in force on this host", "event", "cgroup_degraded", "group", "apps", "setting", n)
	}
	if err != nil {
		s.log.Warn("cannot apply apps group resources", "event", "cgroup_error", "group", "apps", "err", err)
	}
	if s.hooksErr != "" {
		s.notInForce = append(s.notInForce, "hooks: no hooks cgroup, hooks run in the node manager's: "+s.hooksErr)
	}
	if s.hooks != nil && appsRes.CPUs != "" {
		// The reserved cpus are the control plane's alone, hooks' too.
		if _, err := s.hooks.Apply(cgroup.Resources{CPUs: appsRes.CPUs}); err != nil {
			s.notInForce = append(s.notInForce, "hooks: cpuset: "+err.Error())
			s.log.Warn("cannot keep hooks off the reserved cpus", "event", "cgroup_error", "group", cgroup.HooksGroup, "err", err)
		}
	}
}

func (s *Supervisor) destroyCgroups() {
	if s.cg == nil {
		return
	}
	// Leave control/supervisor so that the whole tree can go. Under systemd
	// on v2 the kernel refuses, and systemd removes the leaf after we exit.
	if err := s.cg.MoveSelfHome(); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, cgroup.ErrNotSupported) {
			level = slog.LevelDebug
		}
		s.log.Log(context.Background(), level, "supervisor stays in control/supervisor", "event", "cgroup_leftover", "err", err)
	}
	if err := s.cg.Destroy(); err != nil {
		s.log.Error("cannot remove cgroup tree", "event", "cgroup_error", "err", err)
	}
}

func (s *Supervisor) newProc(pc config.Process) *proc {
	return &proc{cfg: pc, state: StateStopped, log: s.log.With("process", pc.Name)}
}

// start spawns p into its cgroup. Failures to spawn count like a failed run.
func (s *Supervisor) start(p *proc) {
	if s.stopping {
		return
	}
	p.gen++
	gen := p.gen
	p.timer = nil
	p.daemonized = false
	p.fencing = false // a fence or start-up kill is of the run before
	parent := "apps/"
	if p.control != "" {
		parent = "control/"
	}
	if ch, ok := s.deleting[parent+p.cfg.Name]; ok && p.group == nil {
		// Its group from before (a reload removed it) is still being
		// deleted off the loop: start once it is gone.
		s.startAfter(p, gen, ch)
		return
	}
	if (p.cfg.User != "" || p.cfg.Group != "") && p.creds == nil {
		// NSS (LDAP, sssd) may hang: resolve off the loop, spawn after.
		s.resolveThenStart(p, gen)
		return
	}
	if p.group == nil {
		g, err := s.cg.Group(parent + p.cfg.Name)
		if err != nil {
			s.spawnFailed(p, fmt.Errorf("cgroup: %w", err))
			return
		}
		p.group = g
	}
	res := s.processResources(p)
	if _, err := p.group.Apply(res); err != nil && p.control != "" && res.RTRuntimeUs != 0 {
		s.rtBudgetFailed(p, gen, err)
	} else if err != nil {
		p.log.Warn("cannot apply process cgroup resources", "event", "cgroup_error", "err", err)
	} else if p.rtDegraded != "" {
		// The budget is there before the new run starts: it makes itself
		// SCHED_RR.
		s.rtRestored(p, "budget applied at restart")
	}
	pid, done, err := s.spawn(p)
	p.creds = nil // looked up again for the next start
	if err != nil {
		s.spawnFailed(p, err)
		return
	}
	now := time.Now()
	p.state, p.pid, p.startedAt, p.spawnErr = StateRunning, pid, now, ""
	p.nextStart = time.Time{}
	if !p.restartFrom.IsZero() {
		// Exit seen by the reaper -> new child placed and released.
		p.restartLat = now.Sub(p.restartFrom)
		p.restartFrom = time.Time{}
		p.log.Info("process restarted", "event", "start", "pid", pid, "cgroup", p.group.Path(), "restarts", p.restarts, "latency_us", p.restartLat.Microseconds())
	} else {
		p.log.Info("process started", "event", "start", "pid", pid, "cgroup", p.group.Path(), "restarts", p.restarts)
	}
	go func() {
		ex := <-done
		s.post(func() { s.onExit(p, gen, ex) })
	}()
	if p.conn != nil {
		p.nmReport, p.locReport, p.lastBeat = nil, nil, time.Time{}
		go s.readChannel(p, gen, p.conn)
		s.clock.AfterFunc(startupTimeout, func() { s.post(func() { s.checkStartup(p, gen) }) })
	}
	s.startHealth(p, gen)
	s.updateHealth()
	if p.control == ctlNodeManager {
		s.pushHealth()
		s.pushFault(p)
	}
}

// waitingToStart parks p in backoff (no restart timer) while its start
// waits for work off the loop.
func (s *Supervisor) waitingToStart(p *proc) {
	p.state = StateBackoff
	p.nextStart = time.Time{}
	s.updateHealth()
}

// startAfter starts p once ch closes, unless it was stopped or started
// meanwhile.
func (s *Supervisor) startAfter(p *proc, gen uint64, ch <-chan struct{}) {
	s.waitingToStart(p)
	go func() {
		<-ch
		s.post(func() {
			if p.gen == gen && p.state == StateBackoff {
				s.start(p)
			}
		})
	}()
}

// credentialsTimeout bounds a user or group lookup; one that does not
// answer fails the start like an unknown user (and is retried with backoff).
const credentialsTimeout = 10 * time.Second

// resolveThenStart looks p's user and group up off the loop and starts p
// with them (or fails the start) back on the loop.
func (s *Supervisor) resolveThenStart(p *proc, gen uint64) {
	s.waitingToStart(p)
	pc := p.cfg
	lookup := s.lookupCreds
	go func() {
		type result struct {
			c   *credentials
			err error
		}
		res := make(chan result, 1)
		go func() {
			c, err := lookup(&pc)
			res <- result{c, err}
		}()
		var r result
		select {
		case r = <-res:
		case <-time.After(credentialsTimeout):
			r.err = fmt.Errorf("supervisor: process %s: user/group lookup did not answer within %v", pc.Name, credentialsTimeout)
		}
		s.post(func() {
			if p.gen != gen || p.state != StateBackoff {
				return // stopped or started again meanwhile
			}
			if r.err != nil {
				s.spawnFailed(p, r.err)
				return
			}
			p.creds = r.c
			s.start(p)
		})
	}()
}

func (s *Supervisor) spawnFailed(p *proc, err error) {
	p.spawnErr = err.Error()
	p.log.Error("cannot start process", "event", "spawn_failed", "err", err)
	p.startedAt = time.Now()
	s.ended(p, Exit{Code: 127, At: time.Now()})
}

// onExit handles the exit of p's main process.
func (s *Supervisor) onExit(p *proc, gen uint64, ex Exit) {
	if gen != p.gen || p.state != StateRunning {
		return // an older run, or a stop in progress that owns the outcome
	}
	p.pid = 0
	if ex.Success() {
		if pop, _ := p.group.Populated(); pop {
			// It forked and its parent left (a classic daemon). Its life is
			// its cgroup: keep it running and watch the group instead.
			p.daemonized = true
			p.log.Info("process daemonized; tracking its cgroup", "event", "daemonized")
			s.watchDaemon(p, gen)
			return
		}
	}
	s.ended(p, ex)
}

// watchDaemon polls the cgroup of a daemonized process. cgroup v1 has no
// "populated" notification for non-root users of release_agent, so a cheap
// poll is the portable way.
func (s *Supervisor) watchDaemon(p *proc, gen uint64) {
	// The group is captured here: p belongs to the loop, and a stop sets
	// p.group to nil while this goroutine sleeps.
	g := p.group
	go func() {
		for {
			time.Sleep(250 * time.Millisecond)
			pop, err := g.Populated()
			if err == nil && pop {
				alive := make(chan bool, 1)
				s.post(func() { alive <- gen == p.gen && p.state == StateRunning })
				if <-alive {
					continue
				}
				return
			}
			s.post(func() {
				if gen == p.gen && p.state == StateRunning {
					s.ended(p, Exit{Code: 0, At: time.Now()})
				}
			})
			return
		}
	}()
}

// ended decides what happens after a run of p is over. Every caller is an
// end the supervisor did not ask for (stops bump gen and never get here), so
// a planned restart that ends this way is over: it counts again.
func (s *Supervisor) ended(p *proc, ex Exit) {
	s.stopHealth(p)
	s.endRestartGrace(p, "exited")
	if p.fenced != nil {
		// The fenced node manager is dead (reaped): nothing of it can
		// add an address back any more.
		s.finishFence(p, "confirmed dead")
	}
	if p.control != "" {
		p.setConn(nil)
		if p.fenceTimer != nil {
			p.fenceTimer.Stop()
			p.fenceTimer = nil
		}
		if p.control == ctlNodeManager {
			for id, ch := range s.pending {
				ch <- errors.New("the node manager exited before answering")
				delete(s.pending, id)
			}
		}
	}
	p.lastExit = &ex
	p.lastRan = ex.At.Sub(p.startedAt)
	p.pid = 0
	level := slog.LevelWarn
	if ex.Success() {
		level = slog.LevelInfo
	}
	p.log.Log(context.Background(), level, "process exited", "event", "exit", "pid", ex.Pid, "status", ex.String(), "ran", p.lastRan.Round(time.Millisecond).String())
	// Whatever the main process left behind in its group goes with it, so a
	// restart never runs beside a stray of the previous run. The kill may
	// poll for seconds (a task in uninterruptible sleep): off the loop, the
	// restart decision comes back as an event.
	p.state = StateBackoff
	p.nextStart = time.Time{}
	s.updateHealth()
	gen, g, kill := p.gen, p.group, s.killGroup
	// A node manager's hooks die with it: one it started (an on_active
	// after it was fenced, say) must not act for a node manager that is
	// gone, and killing them before the restart decision keeps the kill
	// clear of the hooks its successor runs.
	var hooks *cgroup.Group
	if p.control == ctlNodeManager {
		hooks = s.hooks
	}
	go func() {
		err := kill(g)
		var orphans []int
		var herr error
		if hooks != nil {
			if orphans, _ = hooks.Procs(); len(orphans) > 0 {
				herr = kill(hooks)
			}
		}
		s.post(func() {
			if err != nil {
				p.log.Warn("cannot kill leftovers of process", "event", "kill_failed", "err", err)
			}
			if len(orphans) > 0 {
				attrs := []any{"event", "hook_orphans_killed", "pids", orphans}
				if herr != nil {
					attrs = append(attrs, "err", herr)
				}
				p.log.Warn("the node manager exited: its hooks still running were killed", attrs...)
			}
			if p.gen != gen || p.state != StateBackoff || !p.nextStart.IsZero() {
				return // stopped, or started again, meanwhile
			}
			s.restartAfter(p, ex)
		})
	}()
}

// restartAfter applies the restart policy to a run of p that ended (its
// leftovers are gone).
func (s *Supervisor) restartAfter(p *proc, ex Exit) {
	restart := p.cfg.Restart == config.RestartAlways || (p.cfg.Restart == config.RestartOnFailure && !ex.Success())
	if !restart || s.stopping {
		p.state = StateExited
		s.updateHealth()
		return
	}
	if p.lastRan >= p.cfg.Backoff.Stable {
		p.failures = 0
	}
	p.failures++
	if p.cfg.Backoff.FatalAfter > 0 && p.failures > p.cfg.Backoff.FatalAfter {
		p.state = StateFatal
		p.log.Error("process failed too often; not restarting until 'vigil restart' or a reload", "event", "fatal", "failures", p.failures-1)
		s.updateHealth()
		return
	}
	delay := restartDelay(p.cfg.Backoff, p.failures, s.rnd)
	p.state = StateBackoff
	p.restarts++
	s.updateHealth()
	if delay == 0 {
		p.nextStart = time.Time{}
		p.restartFrom = ex.At
		s.start(p)
		return
	}
	p.nextStart = s.clock.Wall().Add(delay)
	p.log.Info("restarting after backoff", "event", "backoff", "delay", delay.Round(time.Millisecond).String(), "failures", p.failures)
	gen := p.gen
	p.timer = s.clock.AfterFunc(delay, func() {
		s.post(func() {
			if gen == p.gen && p.state == StateBackoff {
				p.nextStart = time.Time{}
				s.start(p)
			}
		})
	})
}

// stop stops p (stop signal to its whole cgroup, SIGKILL after stop_timeout)
// without blocking the loop; then runs in the loop once it is stopped.
func (s *Supervisor) stop(p *proc, reason string, then func()) {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	s.stopHealth(p)
	p.gen++ // exits of the run being stopped are not failures
	if p.state == StateStopping {
		// A stop is already running; chain after it.
		prev := p.gen
		go func() {
			for {
				time.Sleep(20 * time.Millisecond)
				ok := make(chan bool, 1)
				s.post(func() { ok <- p.state != StateStopping || p.gen != prev })
				if <-ok {
					s.post(then)
					return
				}
			}
		}()
		return
	}
	p.state = StateStopping
	p.log.Info("stopping process", "event", "stop", "reason", reason, "pid", p.pid)
	sig := signalNumber(p.cfg.StopSignal)
	timeout := p.cfg.StopTimeout
	g := p.group
	go func() {
		var killed bool
		if g != nil {
			killed = stopGroup(g, sig, timeout)
		}
		s.post(func() {
			p.state, p.pid, p.daemonized = StateStopped, 0, false
			if killed {
				p.log.Warn("process did not stop in time; killed", "event", "stop_timeout", "timeout", timeout.String())
			}
			p.log.Info("process stopped", "event", "stopped")
			s.updateHealth()
			if then != nil {
				then()
			}
		})
	}()
}

// stopGroup sends sig to every process of g, waits up to timeout for the group
// to empty and kills what is left. It reports whether it had to kill.
func stopGroup(g *cgroup.Group, sig syscall.Signal, timeout time.Duration) bool {
	if pop, err := g.Populated(); err == nil && !pop {
		return false
	}
	_ = g.Signal(sig)
	// Stopped processes never see SIGTERM; SIGCONT lets them handle it.
	_ = g.Signal(syscall.SIGCONT)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if pop, err := g.Populated(); err == nil && !pop {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = g.Kill()
	return true
}

func (s *Supervisor) beginShutdown(reason string, done chan struct{}) {
	if s.stopping {
		return
	}
	s.stopping = true
	s.notify.stopping()
	s.log.Info("supervisor stopping", "event", "shutdown", "reason", reason)
	// The node manager goes first, so an active node hands its role and its
	// floating IPs over while the applications still serve; then the
	// applications in reverse start order (what started last may depend on
	// what started first); the locator last, so the cluster keeps its
	// quorum for the handover.
	var order []*proc
	if nm := s.controlProc(ctlNodeManager); nm != nil {
		order = append(order, nm)
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		order = append(order, s.procs[i])
	}
	if l := s.controlProc(ctlLocator); l != nil {
		order = append(order, l)
	}
	var next func(i int)
	next = func(i int) {
		if i == len(order) {
			close(done)
			return
		}
		p := order[i]
		s.stop(p, "shutdown", func() {
			p.setConn(nil)
			s.deleteGroup(p, func() { next(i + 1) })
		})
	}
	next(0)
}

// deleteGroup removes p's group off the loop (a kill inside may poll for
// seconds) and runs then, if any, back on the loop when it is gone.
func (s *Supervisor) deleteGroup(p *proc, then func()) {
	g := p.group
	if g == nil {
		if then != nil {
			then()
		}
		return
	}
	p.group = nil
	key := "apps/" + p.cfg.Name
	if p.control != "" {
		key = "control/" + p.cfg.Name
	}
	done := make(chan struct{})
	s.deleting[key] = done
	remove := s.removeGroup
	go func() {
		err := remove(g)
		s.post(func() {
			if s.deleting[key] == done {
				delete(s.deleting, key)
			}
			close(done)
			if err != nil {
				p.log.Warn("cannot remove process cgroup", "event", "cgroup_error", "err", err)
			}
			if then != nil {
				then()
			}
		})
	}()
}

// Reload re-reads the config file and applies it in place: removed processes
// stop, added ones start, changed ones restart, unchanged ones keep running
// (a FATAL one is given a fresh start). An invalid file changes nothing.
func (s *Supervisor) reload() (*ReloadResult, error) {
	cfg, err := config.Load(s.opts.ConfigPath)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				s.log.Error("reload refused: invalid config", "event", "reload_refused", "err", e.Error())
			}
		} else {
			s.log.Error("reload refused", "event", "reload_refused", "err", err)
		}
		return nil, &invalidConfigError{err}
	}
	if s.stopping {
		return nil, errors.New("supervisor is stopping")
	}
	s.reloads++
	old := make(map[string]*proc, len(s.procs))
	for _, p := range s.procs {
		old[p.cfg.Name] = p
	}
	var next []*proc
	var added, changed, removed, kept []string
	for _, pc := range cfg.Processes {
		p, ok := old[pc.Name]
		delete(old, pc.Name)
		switch {
		case !ok:
			p = s.newProc(pc)
			added = append(added, pc.Name)
			s.start(p)
		case !reflect.DeepEqual(p.cfg, pc):
			changed = append(changed, pc.Name)
			// Judged by the configuration it was running with.
			wasUp := p.upForHealth()
			p.cfg = pc
			p.failures = 0
			if wasUp {
				s.beginRestartGrace(p, "reload")
			}
			pp := p
			s.stop(p, "reload: changed", func() { pp.restarts = 0; s.start(pp) })
		case p.state == StateFatal || p.state == StateExited:
			kept = append(kept, pc.Name)
			p.failures = 0
			s.start(p)
		default:
			kept = append(kept, pc.Name)
		}
		next = append(next, p)
	}
	for name, p := range old {
		removed = append(removed, name)
		p.clearRestartGrace() // it no longer counts at all
		pp := p
		s.stop(p, "reload: removed", func() { s.deleteGroup(pp, nil) })
	}
	s.procs = next
	keys := restartOnlyKeys(s.cfg, cfg)
	if len(keys) > 0 {
		// Restarting the locator or node manager here would move the
		// active role because of a reload; every host must agree on the
		// cluster anyway. The supervisor keeps what is in force (status
		// shows it; the fence follows the node manager's own lease).
		s.log.Warn("changed settings not applied by a reload: restart vigil on this host for them to take effect (for cluster settings, on every host, one at a time)",
			"event", "reload_deferred", "keys", strings.Join(keys, ","))
		cfg.Cluster, cfg.Runtime, cfg.Log = s.cfg.Cluster, s.cfg.Runtime, s.cfg.Log
	}
	vipsChanged := !reflect.DeepEqual(s.cfg.VIPs, cfg.VIPs)
	pushCP := vipsChanged || !reflect.DeepEqual(s.cfg.Hooks, cfg.Hooks)
	if vipsChanged && s.float == nil && len(cfg.VIPs) > 0 {
		// The first VIP of a host that started without: the fence must be
		// able to remove it.
		if s.float, err = newFencer(cfg, s.log); err != nil {
			s.log.Error("cannot fence the reloaded floating IPs", "event", "fence_error", "err", err)
		}
	}
	s.cfg = cfg
	if pushCP {
		// In place, without restarting the node manager.
		s.pushConfig(cfg)
	}
	s.applyGroupResources()
	s.updateHealth()
	s.log.Info("config reloaded", "event", "reload", "added", strings.Join(added, ","), "changed", strings.Join(changed, ","), "removed", strings.Join(removed, ","), "unchanged", strings.Join(kept, ","))
	slices.Sort(removed) // from a map
	return &ReloadResult{Config: s.opts.ConfigPath, Added: added, Changed: changed, Removed: removed, Unchanged: kept, Deferred: keys}, nil
}

// restartProcess is `vigil restart NAME`: stop (if running) and start again,
// clearing FATAL and the backoff.
func (s *Supervisor) restartProcess(name string) error {
	for _, p := range append(append([]*proc{}, s.procs...), s.ctrl...) {
		if p.cfg.Name != name {
			continue
		}
		if s.stopping {
			return errors.New("supervisor is stopping")
		}
		p.failures = 0
		// An operator restart is as planned as a reload's, and gets the
		// same grace: restarting the SIP server on the active must not
		// move the role any more than reloading its config does. An
		// operator who wants the role elsewhere first says so with
		// `vigil switchover`. A process that was down (FATAL, crashing)
		// is not excused: the node was unhealthy already.
		if p.upForHealth() {
			s.beginRestartGrace(p, "operator restart")
		}
		s.stop(p, "operator restart", func() { s.start(p) })
		return nil
	}
	return fmt.Errorf("no process named %q", name)
}

func (s *Supervisor) startHealth(p *proc, gen uint64) {
	if p.cfg.Health == nil {
		return
	}
	chk, err := health.NewChecker(p.cfg.Health, runner{s.reaper})
	if err != nil {
		p.log.Error("invalid health check", "event", "health_error", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.monCancel = cancel
	hlog := p.log.With("check", string(p.cfg.Health.Kind))
	p.monitor = health.NewMonitor(p.cfg.Health, chk, func(st health.Status) {
		s.post(func() {
			if gen != p.gen {
				return
			}
			p.health = st
			if st.State == health.State("unhealthy") {
				p.log.Warn("health check failing", "event", "health", "health", string(st.State), "err", st.LastError)
			} else {
				p.log.Info("health changed", "event", "health", "health", string(st.State))
			}
			s.updateHealth()
		})
	}, hlog)
	p.health = p.monitor.Status()
	go p.monitor.Run(ctx)
}

func (s *Supervisor) stopHealth(p *proc) {
	if p.monCancel != nil {
		p.monCancel()
		p.monCancel = nil
	}
	p.monitor = nil
	p.health = health.Status{}
}

// updateHealth recomputes the node's health from its critical processes and
// tells systemd when the summary changes.
func (s *Supervisor) updateHealth() {
	s.settleRestartGraces()
	reasons := s.unhealthyReasons()
	healthy := len(reasons) == 0
	if healthy != s.healthy && !s.stopping {
		if healthy {
			s.log.Info("node healthy", "event", "node_health", "healthy", true)
		} else {
			s.log.Warn("node unhealthy", "event", "node_health", "healthy", false, "reasons", strings.Join(reasons, "; "))
		}
	}
	appHealthy := len(s.appUnhealthyReasons()) == 0
	if appHealthy != s.appHealthy {
		s.appHealthy = appHealthy
		s.pushHealth()
	}
	s.healthy = healthy
	s.notify.status(s.statusLine())
}

// unhealthyReasons is why this host is unhealthy: a critical application or
// a control-plane process is down or failing.
func (s *Supervisor) unhealthyReasons() []string {
	r := s.appUnhealthyReasons()
	for _, p := range s.ctrl {
		if p.state != StateRunning {
			r = append(r, p.cfg.Name+" "+string(p.state))
		}
	}
	return r
}

// appUnhealthyReasons covers the critical applications only: what the node
// manager weighs when it decides whether this node may be active.
func (s *Supervisor) appUnhealthyReasons() []string {
	var r []string
	for _, p := range s.procs {
		if !p.cfg.Critical || !p.graceUntil.IsZero() {
			continue
		}
		switch {
		case p.state != StateRunning:
			r = append(r, p.cfg.Name+" "+string(p.state))
		case p.cfg.Health != nil && p.health.State != health.State("healthy"):
			st := string(p.health.State)
			if st == "" {
				st = "starting"
			}
			r = append(r, p.cfg.Name+" health "+st)
		}
	}
	return r
}

// startAllowance is how long a restarted process may take to be running
// again, health check aside: spawning is milliseconds, but a host under the
// load Vigil is built for may be slow, and 10 s is also what the defaults
// call a stable run (backoff.stable) and a clean stop (stop_timeout).
const startAllowance = 10 * time.Second

// restartGrace is how long a planned restart of a process configured as pc
// may keep it from serving before it counts against the node's health: its
// stop (at most stop_timeout, then it is killed), the start allowance and,
// with a health check, the check's own start-up time: grace (the operator's
// word for how long the process takes to come up) plus rise checks.
func restartGrace(pc config.Process) time.Duration {
	d := pc.StopTimeout + startAllowance
	if h := pc.Health; h != nil {
		interval, rise := h.Interval, h.Rise
		if interval <= 0 {
			interval = time.Second
		}
		if rise <= 0 {
			rise = 2
		}
		d += h.Grace + time.Duration(rise)*interval
	}
	return d
}

// upForHealth says whether p counts as up (running and, with a check,
// healthy) or is down only because of a planned restart already excused.
func (p *proc) upForHealth() bool {
	if !p.graceUntil.IsZero() {
		return true
	}
	return p.state == StateRunning && (p.cfg.Health == nil || p.health.State == health.StateHealthy)
}

// beginRestartGrace excuses the planned restart of p, which the caller is
// about to stop and start again, from the node's health for restartGrace:
// without it a reload on the active node would hand the role over (the node
// is unhealthy for the moment the process is down) although a reload never
// moves it. The grace ends early when the process is back (running and
// healthy), when its run ends unplanned (a crash, a failed spawn) or when
// its health check says unhealthy: a broken new configuration still fails
// over, and only the restart itself is excused. At the deadline it counts
// again whatever its state. Only applications: the control plane is never
// excused.
func (s *Supervisor) beginRestartGrace(p *proc, reason string) {
	if p.control != "" {
		return
	}
	if p.graceTimer != nil {
		p.graceTimer.Stop()
	}
	d := restartGrace(p.cfg)
	until := s.clock.Wall().Add(d)
	p.graceUntil, p.graceReason = until, reason
	p.graceTimer = s.clock.AfterFunc(d, func() {
		s.post(func() {
			if p.graceUntil.Equal(until) {
				s.endRestartGrace(p, "deadline")
				s.updateHealth()
			}
		})
	})
	if p.cfg.Critical {
		p.log.Info("planned restart does not count against node health until the process is back", "event", "restart_grace", "reason", reason, "grace", d.String())
	}
}

// endRestartGrace closes p's grace, if any; outcome is why (back, exited,
// unhealthy, deadline).
func (s *Supervisor) endRestartGrace(p *proc, outcome string) {
	reason, had := p.clearRestartGrace()
	if !had || !p.cfg.Critical {
		return
	}
	level := slog.LevelInfo
	msg := "planned restart complete"
	if outcome != "back" {
		level = slog.LevelWarn
		msg = "planned restart did not bring the process back; it counts against node health again"
	}
	p.log.Log(context.Background(), level, msg, "event", "restart_grace_end", "reason", reason, "outcome", outcome)
}

// clearRestartGrace drops p's grace and its timer; it returns the grace's
// reason and whether there was one.
func (p *proc) clearRestartGrace() (string, bool) {
	if p.graceUntil.IsZero() {
		return "", false
	}
	if p.graceTimer != nil {
		p.graceTimer.Stop()
		p.graceTimer = nil
	}
	reason := p.graceReason
	p.graceUntil, p.graceReason = time.Time{}, ""
	return reason, true
}

// settleRestartGraces ends the grace of every process whose planned restart
// has a verdict: back (running and, with a check, healthy) or failing its
// new health check.
func (s *Supervisor) settleRestartGraces() {
	for _, p := range s.procs {
		if p.graceUntil.IsZero() || p.state != StateRunning {
			continue
		}
		switch {
		case p.cfg.Health == nil || p.health.State == health.StateHealthy:
			s.endRestartGrace(p, "back")
		case p.health.State == health.StateUnhealthy:
			s.endRestartGrace(p, "unhealthy")
		}
	}
}

func (s *Supervisor) statusLine() string {
	running := 0
	for _, p := range s.procs {
		if p.state == StateRunning {
			running++
		}
	}
	h := "healthy"
	if !s.healthy {
		h = "unhealthy"
	}
	return fmt.Sprintf("%d/%d processes running, node %s", running, len(s.procs), h)
}

// snapshot builds the status; it runs in the loop.
func (s *Supervisor) snapshot() Status {
	st := Status{
		Version: s.opts.Version,
		Cluster: s.cfg.Cluster.Name,
		Node:    s.cfg.Cluster.Node,
		Role:    string(s.cfg.Cluster.Role),
		Healthy: s.healthy,
		Supervisor: SupervisorState{
			PID:        os.Getpid(),
			StartedAt:  s.started,
			Config:     s.opts.ConfigPath,
			CgroupMode: s.cg.Mode().String(),
			Cgroup:     s.sup.Path(),
			Reloads:    s.reloads,
			Orphans:    s.reaper.Orphans(),
			RSSBytes:   selfRSS(),
		},
		Unhealthy: s.unhealthyReasons(),
		Processes: make([]ProcessStatus, 0, len(s.procs)),
	}
	st.Supervisor.Fences = s.fences
	for _, v := range s.cfg.VIPs {
		st.FloatingIPs = append(st.FloatingIPs, FloatingIP{Address: v.Address, Interface: v.Interface})
	}
	st.Groups = s.groupStatus()
	st.NotInForce = slices.Clone(s.notInForce)
	for _, p := range s.ctrl {
		if p.rtDegraded != "" {
			st.NotInForce = append(st.NotInForce, "control/"+p.cfg.Name+": realtime budget, control plane unprotected (not SCHED_RR), retrying: "+p.rtDegraded)
		}
		st.ControlPlane = append(st.ControlPlane, s.procStatus(p))
		switch p.control {
		case ctlNodeManager:
			st.NodeManager = p.nmReport
		case ctlLocator:
			st.Locator = p.locReport
		}
	}
	for _, p := range s.procs {
		st.Processes = append(st.Processes, s.procStatus(p))
	}
	st.Summarize() // last: it reads everything above
	return st
}

func (s *Supervisor) procStatus(p *proc) ProcessStatus {
	{
		ps := ProcessStatus{
			Name: p.cfg.Name, State: p.state, PID: p.pid, Daemonized: p.daemonized,
			Critical: p.cfg.Critical, Restarts: p.restarts, SpawnError: p.spawnErr,
			FailureCount: p.failures, RestartUsec: p.restartLat.Microseconds(),
			Health: "none",
		}
		if p.group != nil {
			ps.Cgroup = p.group.Path()
		}
		if p.state == StateRunning || p.state == StateStopping {
			t := p.startedAt
			ps.StartedAt = &t
		}
		if !p.nextStart.IsZero() {
			t := p.nextStart
			ps.NextStart = &t
		}
		if p.lastExit != nil {
			ps.LastExit = &ExitInfo{Code: p.lastExit.Code, At: p.lastExit.At, Ran: p.lastRan.Round(time.Millisecond).String()}
			if p.lastExit.Signal != 0 {
				ps.LastExit.Signal = signalName(p.lastExit.Signal)
			}
		}
		if p.cfg.Health != nil {
			ps.Health = string(p.health.State)
			if ps.Health == "" {
				ps.Health = "starting"
			}
			ps.HealthError = p.health.LastError
		}
		if p.control != "" && !p.lastBeat.IsZero() {
			t := p.lastBeat
			ps.LastReport = &t
		}
		if p.control != "" && p.pid > 0 {
			if smp, err := procstat.ReadProcess(p.pid); err == nil {
				ps.SchedWaitMS = float64(smp.Total.WaitNs) / 1e6
				ps.SchedRunMS = float64(smp.Total.RunNs) / 1e6
			}
		}
		return ps
	}
}

// runner adapts the reaper to health.Runner.
type runner struct{ r *Reaper }

func (r runner) Run(ctx context.Context, argv []string) (int, error) {
	return r.r.RunCommand(ctx, argv)
}
