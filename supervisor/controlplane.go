package supervisor

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/execshim"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/nodemanager"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/realtime"
)

// The control plane: `vigil locator` in control/locator on every host and
// `vigil nodemanager` in control/nodemanager on hosts with role node. The
// supervisor starts them through the same shim as applications, keeps them
// running whatever happens (they never go FATAL: the incident this product
// exists for was a control plane that needed a manual restart), talks to
// them over an ipc channel, and fences a node manager whose heartbeat stops.

const (
	ctlLocator     = "locator"
	ctlNodeManager = "nodemanager"
)

// sendTimeout bounds a send to a control-plane process: one that does not
// read its channel must not stall the supervisor's loop.
const sendTimeout = 50 * time.Millisecond

// controlSpec is a control-plane process to run: its kind (ctlLocator,
// ctlNodeManager), which is also its name.
type controlSpec struct {
	cfg  config.Process
	kind string
}

// controlProcesses are the built-in control-plane processes of this host:
// the locator, and on a node the node manager. Each serves every service
// of the host (ctlmsg.EnvAllServices).
func (s *Supervisor) controlProcesses() []controlSpec {
	specs := []controlSpec{{kind: ctlLocator}}
	if s.cfg.Cluster.Role == config.RoleNode {
		specs = append(specs, controlSpec{kind: ctlNodeManager})
	}
	for i := range specs {
		n := specs[i].kind
		env := append(ipc.Env(), ctlmsg.EnvAllServices+"=1", ctlmsg.EnvLeaveOut+"=1")
		for slot := range s.cfg.ServiceCount() {
			g := s.hooksGroup(slot)
			if n != ctlNodeManager || g == nil {
				continue // only the node manager runs hooks
			}
			e, err := execshim.HooksCgroupEntry(slot, g.HierarchyDirs())
			if err != nil {
				s.log.Warn("hooks run in the node manager's cgroup", "event", "hooks_cgroup_error", "group", s.hooksGroupName(slot), "err", err)
				continue
			}
			env = append(env, e)
		}
		specs[i].cfg = config.Process{
			Name:        n,
			Command:     []string{s.exe, n, "-c", s.opts.ConfigPath},
			Env:         env,
			Dir:         "/",
			Restart:     config.RestartAlways,
			Critical:    true,
			StopSignal:  "SIGTERM",
			StopTimeout: 5 * time.Second,
			// Back off a little so a crash loop does not eat the CPU the
			// rest of the control plane needs, but never give up.
			Backoff: config.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Stable: 5 * time.Second},
		}
	}
	return specs
}

// resolveExe finds the binary the control-plane processes run: the one this
// supervisor runs from.
func resolveExe(exe string) string {
	if exe != "/proc/self/exe" {
		return exe
	}
	if p, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return p
	}
	return exe
}

// setConn sets the channel of p's run, at its start and (nil) at its end.
// What the run asked to be held goes with it.
func (p *proc) setConn(c *ipc.Conn) {
	if p.conn != nil {
		p.conn.Close()
	}
	p.conn = c
	p.handled = 0
	p.releaseHeld()
}

// readChannel delivers a control-plane process's messages to the loop until
// its end closes.
func (s *Supervisor) readChannel(p *proc, gen uint64, c *ipc.Conn) {
	for {
		m, files, err := c.RecvFiles()
		if err != nil {
			return
		}
		s.post(func() {
			if gen != p.gen {
				closeInBackground(files)
				return
			}
			s.onChannel(p, m, files)
		})
	}
}

// closeInBackground closes files off the caller: a packet socket's close
// waits for an RCU grace period.
func closeInBackground(files []*os.File) {
	if len(files) == 0 {
		return
	}
	go func() {
		for _, f := range files {
			f.Close()
		}
	}()
}

// releaseHeld closes what p's run asked to be held (TypeHold): at the
// end of the run, when nothing of it is left to wait for the closes.
func (p *proc) releaseHeld() {
	for k, files := range p.held {
		closeInBackground(files)
		delete(p.held, k)
	}
}

func (s *Supervisor) onChannel(p *proc, m *ctlmsg.Msg, files []*os.File) {
	p.handled++
	if m.Type == ctlmsg.TypeHold {
		// Kept until p is gone (ended), so that p's own exit does not
		// release them (and wait for RCU) on its way to being reaped.
		if p.held == nil {
			p.held = map[string][]*os.File{}
		}
		closeInBackground(p.held[m.Hold])
		p.held[m.Hold] = files
		p.log.Debug("holding sockets for the process", "key", m.Hold, "files", len(files))
		return
	}
	closeInBackground(files) // only a hold carries files
	switch m.Type {
	case ctlmsg.TypeReport:
		// A report that does not decode is still a heartbeat: the process
		// is alive and talking. Its content is kept from the last good one,
		// and the failure is logged once per spell, not at report rate.
		var err error
		switch p.control {
		case ctlNodeManager:
			var r *ctlmsg.NodeManagerReport
			if r, err = m.NodeManagerReport(); err == nil {
				err = s.nodeManagerReport(p, r)
			}
		case ctlLocator:
			var r *ctlmsg.LocatorReport
			if r, err = m.LocatorReport(); err == nil {
				err = p.setLocatorReport(r, s.cfg.ServiceCount())
			}
		}
		if err != nil && !p.reportBad {
			p.log.Warn("control-plane report not understood; keeping the last one", "event", "ipc_error", "err", err)
		}
		p.reportBad = err != nil
		p.lastBeat = s.clock.Wall()
		// The realtime-budget watch reads in the wake-up a report
		// already costs, not in one of its own.
		s.rtWatch.poke()
		if p.control == ctlNodeManager && err != nil {
			// Not its service's, but the process is alive: each service
			// that reported before gets the wait its last report gives.
			for slot := range p.nms {
				if p.nms[slot].fenceAt != 0 {
					p.nms[slot].lastBeat = p.lastBeat
					s.armFence(p, slot)
				}
			}
		}
	case ctlmsg.TypeReply:
		if ch, ok := s.pending[m.ID]; ok {
			delete(s.pending, m.ID)
			a := answer{reply: m}
			if m.Error != "" {
				a.err = errors.New(m.Error)
			}
			ch <- a
		}
	default:
		p.log.Warn("unexpected message from control-plane process", "event", "ipc_error", "type", m.Type)
	}
}

// nmService is what the supervisor keeps of one service's manager in the
// node manager process, which runs every service of the node.
type nmService struct {
	// report is its last report (a beat merged into the last full one);
	// nil until it reports after the process's start.
	report   *ctlmsg.NodeManagerReport
	lastBeat time.Time
	// fenceAt is when it must have reported again (CLOCK_BOOTTIME); 0
	// until its first report.
	fenceAt time.Duration
	// fault: the service's manager was fenced or died while it held the
	// floating IPs; the next run is told at start, and runs
	// hooks.on_fault for it.
	fault *ctlmsg.Msg
}

// resetServices clears what a run of the node manager told of its
// services, for the next run; the faults stay for it to be told.
func (p *proc) resetServices(n int) {
	nms := make([]nmService, n)
	for i := range min(n, len(p.nms)) {
		nms[i].fault = p.nms[i].fault
	}
	p.nms = nms
}

// nodeManagerReport files r under its service (the file's services by
// index) and arms the fence for it.
func (s *Supervisor) nodeManagerReport(p *proc, r *ctlmsg.NodeManagerReport) error {
	if r.Slot < 0 || r.Slot >= len(p.nms) {
		return fmt.Errorf("node manager report for service %d: the file has %d", r.Slot, len(p.nms))
	}
	sv := &p.nms[r.Slot]
	// A beat moves the lease fields of the last full report.
	sv.report = ctlmsg.MergeBeat(sv.report, r)
	sv.lastBeat = s.clock.Wall()
	if r.NotStarted() {
		// It holds no lease and no address: nothing to fence it for.
		// (A service is not started only before it first runs, so no
		// deadline of its own was armed.) A fault is told again to the
		// next run unless this one starts the service.
		sv.fenceAt = 0
		return nil
	}
	sv.fault = nil // handled before its first report (pushFault)
	s.armFence(p, r.Slot)
	return nil
}

// pushHealth tells the node manager the node's health for each service as
// the supervisor sees it: the service's applications up and passing their
// checks.
func (s *Supervisor) pushHealth() {
	if nm := s.nodeManager(); nm != nil {
		s.pushHealthTo(nm)
	}
}

func (s *Supervisor) pushHealthTo(nm *proc) {
	if nm.conn == nil || nm.state != StateRunning {
		return
	}
	for slot := range nm.nms {
		reasons := s.appUnhealthyReasonsFor(slot)
		m := ctlmsg.Health(len(reasons) == 0, reasons)
		m.Slot = slot
		if err := nm.conn.Send(m, sendTimeout); err != nil {
			nm.log.Warn("cannot send health to the node manager", "event", "ipc_error", "service", s.serviceName(slot), "err", err)
		}
	}
}

// nodeManager is this host's node manager process, nil on a witness.
func (s *Supervisor) nodeManager() *proc {
	for _, p := range s.ctrl {
		if p.control == ctlNodeManager {
			return p
		}
	}
	return nil
}

// serviceName names the service in slot for the log: "" for a cluster
// without services.
func (s *Supervisor) serviceName(slot int) string {
	if slot < len(s.cfg.Services) && len(s.cfg.Services) > 1 {
		return s.cfg.Services[slot].Name
	}
	return ""
}

func (s *Supervisor) controlProc(name string) *proc {
	for _, p := range s.ctrl {
		if p.cfg.Name == name {
			return p
		}
	}
	return nil
}

// forward sends an operator command to the node manager, for the
// services it is for: a switchover for its service, maintenance for every
// one (the node refuses every service). The answer is the first error, or
// the first reply.
func (s *Supervisor) forward(req Request) <-chan answer {
	nm := s.nodeManager()
	if nm == nil {
		res := make(chan answer, 1)
		res <- answer{err: fmt.Errorf("the %s is not running on this host", ctlNodeManager)}
		return res
	}
	slots := make([]int, s.cfg.ServiceCount())
	for i := range slots {
		slots[i] = i
	}
	if req.Cmd == "switchover" {
		slot, err := s.serviceSlot(req.Service)
		if err != nil {
			res := make(chan answer, 1)
			res <- answer{err: err}
			return res
		}
		slots = []int{slot}
	}
	all := make([]<-chan answer, 0, len(slots))
	for _, slot := range slots {
		if req.Cmd == ctlmsg.CmdMaintenance && !nm.running() {
			all = append(all, s.maintenanceAtStart(nm, slot, req.Name))
			continue
		}
		m := ctlmsg.Command(req.Cmd, req.Name)
		m.Slot = slot
		all = append(all, s.request(nm.cfg.Name, m))
	}
	if len(all) == 1 {
		return all[0]
	}
	res := make(chan answer, 1)
	go func() {
		var first answer
		for i, c := range all {
			select {
			case a := <-c:
				if i == 0 || (a.err != nil && first.err == nil) {
					first = a
				}
			case <-time.After(commandTimeout):
				if first.err == nil {
					what := "the " + nm.cfg.Name
					if n := s.serviceName(slots[i]); n != "" {
						what += " (service " + n + ")"
					}
					first = answer{err: fmt.Errorf("%s did not answer in time", what)}
				}
			}
		}
		res <- first
	}()
	return res
}

// running says whether p runs and can be asked: its control connection is up.
func (p *proc) running() bool { return p.conn != nil && p.state == StateRunning }

// maintenanceAtStart is `vigil maintenance on|off` for a node manager that
// is not running (in a restart's backoff, FATAL, stopped): its file is
// written for it to read when it starts, so that it does not come back
// eligible for its service while the node's others are in maintenance.
// Nothing else writes that file meanwhile: the node manager writes it only
// on a command, and reads it once it has waited out its hold-off, well
// after it connects (and is running) again.
func (s *Supervisor) maintenanceAtStart(nm *proc, slot int, arg string) <-chan answer {
	res := make(chan answer, 1)
	if arg != "on" && arg != "off" {
		res <- answer{err: fmt.Errorf("maintenance takes on or off, not %q", arg)}
		return res
	}
	if err := nodemanager.SaveMaintenance(s.serviceConfig(slot), arg == "on", time.Now()); err != nil {
		res <- answer{err: fmt.Errorf("the %s is not running, and its maintenance could not be written for its next start: %w", nm.cfg.Name, err)}
		return res
	}
	s.log.Info("maintenance "+arg+" for a node manager that is not running: in force when it starts",
		"event", "maintenance", "on", arg == "on", "process", nm.cfg.Name, "service", s.serviceName(slot), "state", string(nm.state))
	res <- answer{}
	return res
}

// serviceSlot is the slot of the service called name; "" names the only
// one, and is refused when there are several.
func (s *Supervisor) serviceSlot(name string) (int, error) {
	var names []string
	for i, svc := range s.cfg.Services {
		if svc.Name == name {
			return i, nil
		}
		names = append(names, svc.Name)
	}
	switch {
	case name == "" && len(s.cfg.Services) <= 1:
		return 0, nil
	case name == "":
		return 0, fmt.Errorf("this cluster has %d services (%s): name the one to move", len(names), strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("no service %q in this cluster (it has: %s)", name, strings.Join(names, ", "))
}

// answer is a control-plane process's reply to a request: err is its
// Error (or why none came); reply, when one came, the whole message.
type answer struct {
	reply *ctlmsg.Msg
	err   error
}

// request sends m to a control-plane process under a fresh ID and returns
// the answer (its reply) on a channel.
func (s *Supervisor) request(target string, m *ctlmsg.Msg) <-chan answer {
	res := make(chan answer, 1)
	p := s.controlProc(target)
	if p == nil || !p.running() {
		res <- answer{err: fmt.Errorf("the %s is not running on this host", target)}
		return res
	}
	s.nextID++
	m.ID = s.nextID
	s.pending[m.ID] = res
	if err := p.conn.Send(m, sendTimeout); err != nil {
		delete(s.pending, m.ID)
		res <- answer{err: err}
	}
	return res
}

// reloadAnswerTimeout bounds the wait for the node manager to confirm a
// reload: one that just restarted answers after its hold-off.
const reloadAnswerTimeout = 10 * time.Second

// pushConfig sends a reload's floating IPs and hooks to the running node
// manager, which applies them in place (it is not restarted: that would
// move the active role). One that is not running reads the file when it
// starts. The answer is logged when it comes; the loop does not wait.
func (s *Supervisor) pushConfig(cfg *config.Config) {
	nm := s.nodeManager() // none on a witness: no floating IPs, no hooks
	if nm == nil {
		return
	}
	if nm.conn == nil || nm.state != StateRunning {
		nm.log.Info("node manager not running: it reads the reloaded floating IPs and hooks when it starts", "event", "reload_vips")
		return
	}
	for slot := range nm.nms {
		sc, err := cfg.ForService(slot)
		if err != nil {
			continue // a service the reload removed: deferred to a restart
		}
		s.pushConfigTo(nm, slot, sc)
	}
}

// pushConfigTo sends nm the floating IPs of the service in slot, and the
// hooks.
func (s *Supervisor) pushConfigTo(nm *proc, slot int, cfg *config.Config) {
	m := ctlmsg.ConfigMsg(reloadConfig(cfg))
	m.Slot = slot
	log := nm.log
	if n := s.serviceName(slot); n != "" {
		log = log.With("service", n)
	}
	res := s.request(nm.cfg.Name, m)
	go func() {
		select {
		case a := <-res:
			if err := a.err; err != nil {
				// A node manager that exited meanwhile reads the file when
				// it starts again; any other error is its own, logged there.
				log.Warn("node manager did not apply the reloaded floating IPs and hooks", "event", "reload_error", "err", err)
				return
			}
			log.Info("node manager applied the reloaded floating IPs and hooks", "event", "reload_applied")
		case <-time.After(reloadAnswerTimeout):
			log.Warn("node manager has not confirmed the reloaded floating IPs and hooks", "event", "reload_error", "after_ms", reloadAnswerTimeout.Milliseconds())
		}
	}()
}

func reloadConfig(cfg *config.Config) *ctlmsg.Config {
	c := &ctlmsg.Config{
		VIPs: make([]ctlmsg.VIP, 0, len(cfg.VIPs)),
		Hooks: ctlmsg.Hooks{
			OnActive: cfg.Hooks.OnActive, OnStandby: cfg.Hooks.OnStandby, OnFault: cfg.Hooks.OnFault,
			Timeout: cfg.Hooks.Timeout,
		},
	}
	for _, v := range cfg.VIPs {
		c.VIPs = append(c.VIPs, ctlmsg.VIP{Address: v.Address, Interface: v.Interface})
	}
	return c
}

// restartOnlyKeys names the changed settings that a reload does not apply,
// in config order: the cluster (peers, timing, key; every host must agree,
// and the running locator and node manager keep what they started with),
// the listener, paths and logging set up at start, and the control
// plane's own scheduling, which its processes apply when they start.
func restartOnlyKeys(old, next *config.Config) []string {
	var keys []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	o, n := old.Cluster, next.Cluster
	diff("cluster.name", o.Name, n.Name)
	diff("cluster.node", o.Node, n.Node)
	diff("cluster.role", o.Role, n.Role)
	diff("cluster.key_file", o.KeyFile, n.KeyFile)
	diff("cluster.listen", o.Listen, n.Listen)
	diff("cluster.two_node", o.TwoNode, n.TwoNode)
	diff("cluster.last_man_standing", o.LastManStanding, n.LastManStanding)
	diff("cluster.nodes", o.Nodes, n.Nodes)
	diff("cluster.witnesses", o.Witnesses, n.Witnesses)
	diff("cluster.timing.token_interval", o.Timing.TokenInterval, n.Timing.TokenInterval)
	diff("cluster.timing.token_timeout", o.Timing.TokenTimeout, n.Timing.TokenTimeout)
	diff("cluster.timing.lease", o.Timing.Lease, n.Timing.Lease)
	diff("cluster.timing.drift_margin", o.Timing.DriftMargin, n.Timing.DriftMargin)
	// The node manager's protocol takes the service's name (hooks),
	// preference (its ring order) and failback at start; its addresses
	// and processes reload in place.
	// Each service has a node manager and a locator of its own, at ports
	// of its own: adding or removing one restarts them all.
	diff("services", len(old.Services), len(next.Services))
	for i := range min(len(old.Services), len(next.Services)) {
		was, will := old.Services[i], next.Services[i]
		diff(fmt.Sprintf("services[%d].name", i), was.Name, will.Name)
		diff(fmt.Sprintf("services[%d].prefer", i), was.Prefer, will.Prefer)
		diff(fmt.Sprintf("services[%d].failback", i), was.Failback, will.Failback)
	}
	diff("control.realtime", old.Control.Realtime, next.Control.Realtime)
	diff("control.sched_delay_warn", old.Control.SchedDelayWarn, next.Control.SchedDelayWarn)
	diff("control.rt_budget", old.Control.RTBudget, next.Control.RTBudget)
	diff("announce", old.Announce, next.Announce)
	// cmd/vigil opens the metrics listener once, at start.
	diff("metrics.listen", old.Metrics.Listen, next.Metrics.Listen)
	diff("runtime.control_socket", old.Runtime.ControlSocket, next.Runtime.ControlSocket)
	diff("runtime.control_group", old.Runtime.ControlGroup, next.Runtime.ControlGroup)
	diff("runtime.state_dir", old.Runtime.StateDir, next.Runtime.StateDir)
	diff("runtime.cgroup", old.Runtime.Cgroup, next.Runtime.Cgroup)
	diff("log.level", old.Log.Level, next.Log.Level)
	diff("log.format", old.Log.Format, next.Log.Format)
	return keys
}

// armFence (re)sets the fence deadline of the service in slot after its
// report: the end of the lease the report says it holds, or one lease from
// now for a service held by no lease. A node manager that is stopped,
// starved or wedged cannot drop the floating IPs when its lease runs out;
// if no report has pushed the deadline further by then, the supervisor
// does it for it, at the moment the node manager itself would have, before
// any standby can be granted the role (the locators wait a drift margin
// more). The process's deadline is its services' earliest: a process
// with one service silent past its lease (its loop wedged) is fenced
// whole, as one stalled.
func (s *Supervisor) armFence(nm *proc, slot int) {
	sv := &nm.nms[slot]
	now := s.clock.Now()
	sv.fenceAt = now + fenceWait(sv.report, s.nmLease(nm))
	if nm.fenceHeld {
		if _, silent := nm.silentService(now); silent {
			return // the hold goes on for the service still silent
		}
		nm.fenceHeld = false
		held := now - nm.fenceHeldAt
		nm.log.Warn("node manager reported again; it was not killed", "event", "fence_hold_end",
			"silent_ms", (nm.fenceHeldAge + held).Milliseconds(), "held_ms", held.Milliseconds())
	}
	s.setFenceDeadline(nm, nm.earliestFence())
}

// earliestFence is the earliest fence deadline of nm's services that
// reported (0 if none did).
func (nm *proc) earliestFence() time.Duration {
	var at time.Duration
	for _, sv := range nm.nms {
		if sv.fenceAt != 0 && (at == 0 || sv.fenceAt < at) {
			at = sv.fenceAt
		}
	}
	return at
}

// silentService is the service whose deadline passed first, at now, and
// whether any did.
func (nm *proc) silentService(now time.Duration) (int, bool) {
	slot, found := -1, false
	for i, sv := range nm.nms {
		if sv.fenceAt != 0 && sv.fenceAt <= now && (!found || sv.fenceAt < nm.nms[slot].fenceAt) {
			slot, found = i, true
		}
	}
	return slot, found
}

// fenceHoldMax is how long past the fence deadline a silent node manager
// is left to the kernel lease before it is killed anyway: long enough for
// the stalls a loaded host gives a live process (80-300 ms seen under the
// noisy neighbour), short enough that a wedged one is restarted as a
// standby within seconds.
func fenceHoldMax(lease time.Duration) time.Duration {
	return max(time.Second, 5*lease)
}

// leaveToKernel says whether a node manager silent past its lease may be
// left alive: its last report said the kernel lease was enforcing, and the
// kernel, read now, guards every floating IP and has no lease element that
// outlives a lease from now (none may: an element's timeout is what was
// left of a lease when it was put there). Then the host stops serving at
// the end of the lease the node manager really holds, with no process
// running (docs/protocol.md, Safety, step 2: what bounds a dead host's
// serving too), and killing it would add nothing to safety; it would only
// turn a stall into a failover. The error says why not (no kernel lease,
// disarmed, an element that never expires or outlives any lease).
//
// The process runs every service of the node: it is left alive only if
// that holds for each service with floating IPs.
func (s *Supervisor) leaveToKernel(nm *proc) error {
	guarded := 0
	for slot := range nm.nms {
		sc := s.serviceConfig(slot)
		if len(sc.VIPs) == 0 {
			continue
		}
		if err := s.kernelGuards(nm, slot, sc); err != nil {
			if n := s.serviceName(slot); n != "" {
				return fmt.Errorf("service %s: %w", n, err)
			}
			return err
		}
		guarded++
	}
	if guarded == 0 {
		return errors.New("no floating IPs to guard")
	}
	return nil
}

// kernelGuards is leaveToKernel for the service in slot, of configuration
// sc.
func (s *Supervisor) kernelGuards(nm *proc, slot int, sc *config.Config) error {
	r := nm.nms[slot].report
	switch {
	case r == nil || r.KernelLease == nil:
		return errors.New("no kernel lease reported")
	case r.KernelLease.State != ctlmsg.KernelLeaseEnforcing:
		return fmt.Errorf("kernel lease %s", r.KernelLease.State)
	case s.leaseEnforces == nil:
		return errors.New("no floating IPs to guard")
	}
	vips := make([]netip.Addr, 0, len(sc.VIPs))
	for _, v := range sc.VIPs {
		p, err := netip.ParsePrefix(v.Address)
		if err != nil {
			return fmt.Errorf("floating IP %q: %w", v.Address, err)
		}
		vips = append(vips, p.Addr())
	}
	// Not the lease the last report gave: the node manager renews (and
	// refreshes the elements) every token pass, but reports only every
	// quarter lease, so its real lease may end later than reported.
	return s.leaseEnforces(slot, vips, s.nmLease(nm))
}

// fenceWait is how long after a report the node manager may stay silent
// before it is fenced: the rest of its lease, or of the drain after a
// planned handover, or one lease if it holds neither.
func fenceWait(r *ctlmsg.NodeManagerReport, lease time.Duration) time.Duration {
	wait := lease
	if r != nil {
		switch {
		case r.LeaseValid && r.LeaseRemainingMS >= 0:
			wait = time.Duration(r.LeaseRemainingMS) * time.Millisecond
		case r.DrainingTo != "" && r.DrainRemainingMS >= 0:
			// After a planned handover it keeps the addresses until
			// the end of the lease it held, at most (nodemanager/drain.go).
			wait = time.Duration(r.DrainRemainingMS) * time.Millisecond
		}
	}
	// A live node manager reports every lease/4; a lease legitimately
	// running out (no quorum) is dropped by the node manager itself, so
	// never fence sooner than two report intervals after the last report.
	return max(wait, lease/2)
}

// nmLease is the lease the running node manager works with, from its last
// report: a node manager started after a reload that changed
// cluster.timing runs with the new lease, one started before with the old,
// and the fence must match the one that runs.
func (s *Supervisor) nmLease(nm *proc) time.Duration {
	for _, sv := range nm.nms {
		if r := sv.report; r != nil && r.LeaseMS > 0 {
			return time.Duration(r.LeaseMS) * time.Millisecond
		}
	}
	return s.cfg.Cluster.Timing.Lease
}

// setFenceDeadline arms the fence for deadline on CLOCK_BOOTTIME, the
// clock the node manager's lease runs on: a host that was suspended
// must not give a node manager the time it slept.
//
// A timer already armed at or before the new deadline is kept: when it
// fires, fenceFired finds the deadline moved on and arms it for the rest.
// A report pushes the deadline on four times a lease, and a timer per
// report (a timerfd, a goroutine, five system calls) was a third of the
// supervisor's idle CPU at a 60 ms lease; this is one setting per fence
// wait, of one timer per node manager run (clock.Alarm).
func (s *Supervisor) setFenceDeadline(nm *proc, deadline time.Duration) {
	nm.fenceAt = deadline
	if deadline == 0 || nm.fenceArmed && nm.fenceTimerAt <= deadline {
		return
	}
	s.armFenceTimer(nm, max(deadline-s.clock.Now(), 0))
}

// armFenceTimer sets nm's fence timer to fire after wait.
func (s *Supervisor) armFenceTimer(nm *proc, wait time.Duration) {
	if nm.fenceAlarm == nil {
		gen := nm.gen
		nm.fenceAlarm = s.clock.NewAlarm(func() {
			fired := s.clock.Now()
			s.post(func() { s.fenceFired(nm, gen, fired) })
		})
	}
	nm.fenceTimerAt = s.clock.Now() + wait
	nm.fenceArmed = true
	nm.fenceAlarm.Set(wait)
}

// fenceFired runs in the loop when the fence timer fired: at the deadline,
// it checks the fence; before it (newer reports moved the deadline on), it
// sets the timer for the rest.
func (s *Supervisor) fenceFired(nm *proc, gen uint64, fired time.Duration) {
	if nm.gen != gen || nm.fenceAlarm == nil || !nm.fenceArmed {
		return // another run, stopped, or disarmed
	}
	at := nm.fenceTimerAt
	if fired < at {
		// A firing of a setting replaced since. The current one is still
		// set; setting it again for the same instant costs one system
		// call and leaves no way to miss it.
		nm.fenceAlarm.Set(at - fired)
		return
	}
	nm.fenceArmed = false
	deadline := nm.fenceAt
	if deadline > at {
		now := s.clock.Now()
		if rest := deadline - now; rest > 0 {
			s.armFenceTimer(nm, rest)
			return
		}
		// The deadline passed while this was queued: checked as a timer
		// for it that fired now would be.
		fired = now
	}
	s.checkFence(nm, gen, deadline, fired)
}

// pendingFence is a fence between the node manager's SIGKILL and the
// removal of its floating IPs.
type pendingFence struct {
	reports []*ctlmsg.NodeManagerReport // each service's last report: was it active? (nil: none)
	silent  time.Duration               // how long the silent service had been silent
}

// fenceKillWait bounds the wait for a fenced node manager's death before
// its addresses are removed anyway: half the drift margin, which the
// locators add to the lease before granting the role elsewhere.
func (s *Supervisor) fenceKillWait() time.Duration {
	d := s.cfg.Cluster.Timing.DriftMargin
	if d <= 0 {
		d = protocol.DefaultDriftMargin
	}
	return d / 2
}

// checkFence runs when a fence deadline passed without a newer report.
// The node manager is stopped first (SIGKILL) and its floating IPs removed
// only once it is dead: a node manager still running while they go would
// see "floating IP removed by someone else" and add them back under the
// lease it believes it holds.
func (s *Supervisor) checkFence(nm *proc, gen uint64, deadline, fired time.Duration) {
	if nm.gen != gen || nm.state != StateRunning || s.stopping || nm.fencing || nm.fenceAt != deadline {
		return // restarted, stopped, already fenced, or a newer report moved the deadline
	}
	// If the timer itself fired late, this supervisor was not running
	// either (the whole host stalled): the node manager's report may be
	// waiting in the queue. Look again a little later instead of fencing
	// on our own stall.
	lease := s.nmLease(nm)
	if late := fired - deadline; late > lease/4 {
		nm.log.Warn("fence check fired late; re-checking before fencing", "event", "fence_deferred", "late_ms", late.Milliseconds())
		s.deferCheck(nm, fired, lease/4)
		return
	}
	// A report already sent but not yet read: this supervisor's reader is
	// what is late (a loaded host; with a 60 ms lease, tens of ms of
	// supervisor delay were seen to fence a live node manager). Read it
	// first; a stopped or wedged node manager sends none.
	if nm.conn != nil && nm.conn.Pending() {
		nm.log.Warn("fence check found a report waiting; re-checking before fencing", "event", "fence_deferred", "late_ms", (fired - deadline).Milliseconds(), "report_waiting", true)
		s.deferCheck(nm, fired, lease/4)
		return
	}
	// Or read already, and queued behind this check in the loop: the
	// reader and the timer raced, both late on a starved host (a live
	// node manager was fenced so under the noisy neighbour).
	if nm.conn != nil && nm.conn.Received() > nm.handled {
		nm.log.Warn("fence check found a report read but not yet handled; re-checking before fencing", "event", "fence_deferred", "late_ms", (fired - deadline).Milliseconds(), "report_queued", true)
		s.deferCheck(nm, fired, lease/4)
		return
	}
	// The service silent longest says how long the process has been.
	lastBeat, service := nm.lastBeat, ""
	if slot, ok := nm.silentService(fired); ok {
		lastBeat, service = nm.nms[slot].lastBeat, s.serviceName(slot)
	}
	age := s.clock.Wall().Sub(lastBeat)
	// With the kernel lease enforcing, the host stops serving at the
	// lease's end without us: a stalled node manager is left to resume
	// (it steps down and re-checks before it claims anything), and only
	// one still silent after fenceHoldMax is killed, as wedged. Its
	// addresses go now all the same, as they would with the kill: tidy
	// for `ip addr`, and nothing leaves the host from them. A node
	// manager that resumes puts one back only under a lease valid when
	// it looks (nodemanager, EventAddrRemoved): a lease it really holds.
	var kernelWhy error
	if !nm.fenceHeld {
		if kernelWhy = s.leaveToKernel(nm); kernelWhy == nil {
			hold := fenceHoldMax(lease)
			nm.fenceHeld, nm.fenceHeldAt, nm.fenceHeldAge = true, fired, age
			s.fencesHeld++
			nm.log.Warn("node manager silent past its lease; the kernel lease already stops the floating IPs being served, so it is not killed yet",
				"event", "fence_held", "service", service, "heartbeat_age_ms", age.Milliseconds(), "lease_ms", lease.Milliseconds(), "kill_after_ms", hold.Milliseconds(), "pid", nm.pid)
			s.removeAllVIPs(nm, "silent, left alive")
			s.setFenceDeadline(nm, s.clock.Now()+hold)
			return
		}
	}
	nm.fencing = true
	s.fences++
	attrs := []any{"event", "fence", "service", service, "heartbeat_age_ms", age.Milliseconds(), "lease_ms", lease.Milliseconds(), "pid", nm.pid}
	switch {
	case nm.fenceHeld:
		attrs = append(attrs, "held_ms", (fired - nm.fenceHeldAt).Milliseconds())
	case kernelWhy != nil:
		attrs = append(attrs, "kernel_lease", kernelWhy.Error())
	}
	nm.fenceHeld = false
	nm.log.Error("node manager silent past its lease: killing it, then removing floating IPs", attrs...)
	pf := &pendingFence{silent: age}
	for _, sv := range nm.nms {
		pf.reports = append(pf.reports, sv.report)
	}
	nm.fenced = pf
	s.killControl(nm)
	// Its exit (the reaper) removes the addresses (ended); one that does
	// not die in time (stuck in the kernel) loses them anyway, before any
	// locator may grant the role elsewhere. After its pending SIGKILL it
	// never runs user code again.
	wait := s.fenceKillWait()
	s.clock.AfterFunc(wait, func() {
		s.post(func() {
			if nm.fenced == pf {
				nm.log.Error("fenced node manager not confirmed dead; removing floating IPs anyway", "event", "fence_kill_slow", "pid", nm.pid, "after_ms", wait.Milliseconds())
				s.finishFence(nm, "not confirmed dead")
			}
		})
	})
}

// deferCheck looks again wait from now: every service the check fired at
// fired was about (its deadline passed by then) gets that much more, or
// the hold its deadline.
func (s *Supervisor) deferCheck(nm *proc, fired, wait time.Duration) {
	now := s.clock.Now()
	if nm.fenceHeld {
		s.setFenceDeadline(nm, now+wait)
		return
	}
	cutoff := max(fired, nm.fenceAt)
	for i := range nm.nms {
		if sv := &nm.nms[i]; sv.fenceAt != 0 && sv.fenceAt <= cutoff {
			sv.fenceAt = now + wait
		}
	}
	s.setFenceDeadline(nm, nm.earliestFence())
}

// finishFence removes the floating IPs of a fenced node manager and notes
// the fault its successor reports, for each service.
func (s *Supervisor) finishFence(nm *proc, why string) {
	pf := nm.fenced
	if pf == nil {
		return
	}
	nm.fenced = nil
	for slot := range nm.nms {
		var r *ctlmsg.NodeManagerReport
		if slot < len(pf.reports) {
			r = pf.reports[slot]
		}
		if f := fenceFault(r, s.removeVIPs(nm, slot, why), pf.silent); f != nil {
			nm.nms[slot].fault = f
		}
	}
}

// removeAllVIPs is removeVIPs for every service.
func (s *Supervisor) removeAllVIPs(nm *proc, why string) {
	for slot := range nm.nms {
		s.removeVIPs(nm, slot, why)
	}
}

// removeVIPs removes the floating IPs of the service in slot for a fence
// (why: the node manager's state then, for the log) and says whether any
// were there.
func (s *Supervisor) removeVIPs(nm *proc, slot int, why string) bool {
	removed, err := s.fenceVIPs(slot)
	if err != nil {
		nm.log.Error("fence: cannot remove floating IPs", "event", "fence_error", "service", s.serviceName(slot), "err", err)
	}
	for _, v := range removed {
		nm.log.Warn("fence: floating IP removed", "event", "fence_vip", "service", s.serviceName(slot), "vip", v, "node_manager", why)
	}
	return len(removed) > 0
}

// fenceFault is the fault a fence causes, for the next node manager to run
// hooks.on_fault with: when the fenced one was active or still held
// addresses, this node lost the role without handing it over. A fenced
// standby lost nothing (nil).
func fenceFault(r *ctlmsg.NodeManagerReport, removed bool, silent time.Duration) *ctlmsg.Msg {
	var role, drainingTo string
	var epoch uint64
	if r != nil {
		role, drainingTo, epoch = r.Role, r.DrainingTo, r.Epoch
	}
	if role != "active" && drainingTo == "" && !removed {
		return nil
	}
	return ctlmsg.Fault(epoch, fmt.Sprintf("fenced: node manager silent for %d ms, past its lease", silent.Milliseconds()))
}

// pushFault tells a node manager just started, for each service, that its
// predecessor was fenced or died while it held the role (see fenceFault,
// and the crash release).
func (s *Supervisor) pushFault(nm *proc) {
	if nm.conn == nil {
		return
	}
	for slot, sv := range nm.nms {
		if sv.fault == nil {
			continue
		}
		// Kept until the service reports (it handles the message before
		// its first report): one that dies first gets it again at its
		// restart.
		m := *sv.fault
		m.Slot = slot
		if err := nm.conn.Send(&m, sendTimeout); err != nil {
			nm.log.Error("cannot tell the node manager about the fence; told again at its next start", "event", "ipc_error", "service", s.serviceName(slot), "err", err)
		}
	}
}

// checkStartup restarts a control-plane process that never reported (a
// node manager: for every service). Until its first report a service's
// manager holds no lease and no address (it removes stale ones before it
// speaks), so there is nothing to fence; a loaded host may take long to
// start it, so only a start that never completes counts.
func (s *Supervisor) checkStartup(p *proc, gen uint64) {
	if p.gen != gen || p.state != StateRunning || s.stopping || p.fencing {
		return
	}
	var missing []string
	for slot, sv := range p.nms {
		if sv.lastBeat.IsZero() {
			missing = append(missing, s.serviceName(slot))
		}
	}
	if !p.lastBeat.IsZero() && len(missing) == 0 {
		return
	}
	p.fencing = true
	p.log.Error("control-plane process did not report within the start-up timeout; restarting it", "event", "startup_timeout", "after_ms", time.Since(p.startedAt).Milliseconds(), "services_silent", strings.Join(missing, ","))
	s.killControl(p)
}

// startupTimeout bounds how long a control-plane process may take to send
// its first report.
const startupTimeout = 10 * time.Second

// killControl SIGKILLs a control-plane process (a stopped one too); its
// exit restarts it, and ended kills whatever it left in its group first.
// The pid cannot have been reused: the process is our child, not yet
// reaped. (Killing its whole group from here, off the loop, used to race
// the restart: the group kill could also take the new process, and its
// late "done" left the new run marked as fencing, never to be fenced.)
func (s *Supervisor) killControl(p *proc) {
	if p.pid <= 0 {
		return
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Error("cannot kill control-plane process", "event", "fence_error", "pid", p.pid, "err", err)
	}
}

// processResources are the cgroup values of one process's own group.
func (s *Supervisor) processResources(p *proc) cgroup.Resources {
	if p.control != "" {
		var r cgroup.Resources
		if s.cfg.Control.Realtime {
			// control.rt_budget, default 300ms: under SCHED_RR every thread
			// of a Go process is realtime, the runtime's own included; the
			// isolation benchmark measured 25-30 % of a cpu for a 1 kHz
			// ping-pong and saw RT throttling at 10 %. It also caps what a
			// runaway one could take from the host.
			r.RTRuntimeUs = s.cfg.Control.RTBudget.Microseconds()
		}
		return r
	}
	return cgroup.Resources{MemoryMax: p.cfg.MemoryMax, PidsMax: p.cfg.PidsMax, CPUWeight: p.cfg.CPUWeight}
}

// Retry delays of a realtime budget the kernel refused.
const (
	rtRetryInitial = 100 * time.Millisecond
	rtRetryMax     = 5 * time.Second
)

// rtBudgetFailed notes that p's group did not get its realtime budget
// (cpu.rt_runtime_us), so p runs SCHED_OTHER: the control plane is
// unprotected. The usual cause is the budget of a dead run's groups, which
// the kernel keeps counting against the parent until their last task is
// reaped and the group freed; cgroup deletion releases what it can, and
// this retries with backoff until the budget fits, then makes p SCHED_RR
// (rtRetry). One warning per episode; status and
// vigil_guarantees_not_in_force show it meanwhile.
func (s *Supervisor) rtBudgetFailed(p *proc, gen uint64, err error) {
	if p.rtDegraded == "" {
		p.log.Warn("realtime budget not in force: control plane unprotected (SCHED_OTHER) until it is; retrying",
			"event", "realtime_degraded", "reason", err.Error())
		p.rtBackoff = rtRetryInitial
	}
	p.rtDegraded = err.Error()
	delay := p.rtBackoff
	p.rtBackoff = min(2*p.rtBackoff, rtRetryMax)
	s.clock.AfterFunc(delay, func() { s.post(func() { s.rtRetry(p, gen) }) })
}

// rtRetry applies p's realtime budget again and, once it is in force, puts
// every thread of the running p under SCHED_RR from here: p set its own
// policy at start and was refused then. Setting it from outside keeps p
// running (a restart would cost a node manager its lease); p's next report
// reads its policy again (realtime.Report.Refresh).
func (s *Supervisor) rtRetry(p *proc, gen uint64) {
	if p.gen != gen || p.rtDegraded == "" || s.stopping || p.state != StateRunning || p.pid <= 0 {
		return // a new run applies the budget itself at its start
	}
	res := s.processResources(p)
	if res.RTRuntimeUs == 0 {
		s.rtRestored(p, "realtime turned off")
		return
	}
	if _, err := s.applyResources(p.group, &p.applied, p.log, res); err != nil {
		s.rtBudgetFailed(p, gen, err)
		return
	}
	if err := realtime.SetProcessRR(p.pid, 0); err != nil {
		s.rtBudgetFailed(p, gen, fmt.Errorf("budget applied, but SCHED_RR refused: %w", err))
		return
	}
	s.rtRestored(p, "budget applied, process set to SCHED_RR")
}

func (s *Supervisor) rtRestored(p *proc, how string) {
	p.log.Info("realtime budget in force again", "event", "realtime_restored", "how", how, "was", p.rtDegraded)
	p.rtDegraded, p.rtBackoff = "", 0
}
