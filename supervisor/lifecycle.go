package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
)

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
	p.fenceHeld = false
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
		if p.control != "" {
			s.rtWatch.add("control/"+p.cfg.Name, &groupRT{g: g})
		}
	}
	res := s.processResources(p)
	if _, err := s.applyResources(p.group, &p.applied, p.log, res); err != nil && p.control != "" && res.RTRuntimeUs != 0 {
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
		p.locReports, p.lastBeat, p.reportBad = nil, time.Time{}, false
		if p.control == ctlNodeManager {
			p.resetServices(s.cfg.ServiceCount())
		}
		go s.readChannel(p, gen, p.conn)
		s.clock.AfterFunc(startupTimeout, func() { s.post(func() { s.checkStartup(p, gen) }) })
	}
	s.startHealth(p, gen)
	s.updateHealth()
	if p.control == ctlNodeManager {
		s.pushHealthTo(p)
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
	// A node manager reaped without a fence (a crash, a kill, a panic):
	// its host gives up at once every service it was active for
	// (release.go), before the restart. A fenced one's leases have ended
	// anyway.
	var releases []*crashRelease
	if p.control == ctlNodeManager && p.fenced == nil && !s.stopping {
		for slot := range p.nms {
			sv := &p.nms[slot]
			age := s.clock.Wall().Sub(sv.lastBeat)
			release, why := s.crashReleaseFor(slot, sv.report, age)
			if release != nil {
				sv.fault = ctlmsg.Fault(release.epoch, "node manager died while active")
				releases = append(releases, release)
			} else if why != "" {
				// Said so, so that a failover that waited for the lease can be
				// told from a release that failed.
				p.log.Warn("node manager died while active; no release, the standby claims on its own: "+why,
					"event", "crash_release_skipped", "service", s.serviceName(slot), "lease_remaining_ms", sv.report.LeaseRemainingMS, "report_age_ms", age.Milliseconds())
			}
		}
	}
	if p.fenced != nil {
		// The fenced node manager is dead (reaped): nothing of it can
		// add an address back any more.
		s.finishFence(p, "confirmed dead")
	}
	if p.control != "" {
		p.setConn(nil)
		if p.fenceAlarm != nil {
			p.fenceAlarm.Stop()
			p.fenceAlarm, p.fenceArmed = nil, false
		}
		if p.control == ctlNodeManager {
			for id, ch := range s.pending {
				ch <- answer{err: errors.New("the node manager exited before answering")}
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
	// handled_after_ms: from the reaper's wait4 to here (the loop's
	// lateness), which decides whether a crash release still can be made.
	p.log.Log(context.Background(), level, "process exited", "event", "exit", "pid", ex.Pid, "status", ex.String(), "ran", p.lastRan.Round(time.Millisecond).String(),
		"handled_after_ms", time.Since(ex.At).Milliseconds())
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
	var hooks []*cgroup.Group
	if p.control == ctlNodeManager {
		for slot := range s.cfg.ServiceCount() {
			if g := s.hooksGroup(slot); g != nil {
				hooks = append(hooks, g)
			}
		}
	}
	go func() {
		// Each service's release at once: they share nothing (their own
		// addresses, kernel lease sets, state file and datagrams).
		var wg sync.WaitGroup
		for _, release := range releases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := release.run(); err != nil {
					release.log.Error("node manager died while active; cannot release the role at once, the lease runs out", "event", "crash_release_failed", "err", err)
				}
			}()
		}
		wg.Wait()
		err := kill(g)
		var orphans []int
		var herr error
		for _, hg := range hooks {
			if o, _ := hg.Procs(); len(o) > 0 {
				orphans = append(orphans, o...)
				if e := kill(hg); e != nil {
					herr = e
				}
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
	if nm := s.nodeManager(); nm != nil {
		order = append(order, nm)
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		order = append(order, s.procs[i])
	}
	for _, p := range s.ctrl {
		if p.control == ctlLocator {
			order = append(order, p)
		}
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

// credentialsTimeout bounds a user or group lookup; one that does not
// answer fails the start like an unknown user (and is retried with backoff).
const credentialsTimeout = 10 * time.Second
