package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ipc"
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

// controlProcesses are the built-in control-plane processes of this host.
func (s *Supervisor) controlProcesses() []config.Process {
	names := []string{ctlLocator}
	if s.cfg.Cluster.Role == config.RoleNode {
		names = append(names, ctlNodeManager)
	}
	out := make([]config.Process, 0, len(names))
	for _, n := range names {
		out = append(out, config.Process{
			Name:        n,
			Command:     []string{s.exe, n, "-c", s.opts.ConfigPath},
			Env:         []string{fmt.Sprintf("%s=%d", ipc.EnvFD, ipc.ChildFD)},
			Dir:         "/",
			Restart:     config.RestartAlways,
			Critical:    true,
			StopSignal:  "SIGTERM",
			StopTimeout: 5 * time.Second,
			// Back off a little so a crash loop does not eat the CPU the
			// rest of the control plane needs, but never give up.
			Backoff: config.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Stable: 5 * time.Second},
		})
	}
	return out
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

func (p *proc) setConn(c *ipc.Conn) {
	if p.conn != nil {
		p.conn.Close()
	}
	p.conn = c
}

// readChannel delivers a control-plane process's messages to the loop until
// its end closes.
func (s *Supervisor) readChannel(p *proc, gen uint64, c *ipc.Conn) {
	for {
		m, err := c.Recv()
		if err != nil {
			return
		}
		s.post(func() {
			if gen != p.gen {
				return
			}
			s.onChannel(p, m)
		})
	}
}

func (s *Supervisor) onChannel(p *proc, m *ipc.Msg) {
	switch m.Type {
	case "report":
		p.report = m.Report
		p.lastBeat = time.Now()
	case "reply":
		if ch, ok := s.pending[m.ID]; ok {
			delete(s.pending, m.ID)
			if m.Error != "" {
				ch <- errors.New(m.Error)
			} else {
				ch <- nil
			}
		}
	default:
		p.log.Warn("unexpected message from control-plane process", "event", "ipc_error", "type", m.Type)
	}
}

// pushHealth tells the node manager the node's health as the supervisor sees
// it: critical applications up and passing their checks.
func (s *Supervisor) pushHealth() {
	nm := s.controlProc(ctlNodeManager)
	if nm == nil || nm.conn == nil || nm.state != StateRunning {
		return
	}
	healthy := len(s.appUnhealthyReasons()) == 0
	if err := nm.conn.Send(&ipc.Msg{Type: "health", Healthy: &healthy, Reasons: s.appUnhealthyReasons()}, sendTimeout); err != nil {
		nm.log.Warn("cannot send health to the node manager", "event", "ipc_error", "err", err)
	}
}

func (s *Supervisor) controlProc(name string) *proc {
	for _, p := range s.ctrl {
		if p.cfg.Name == name {
			return p
		}
	}
	return nil
}

// command forwards an operator command (switchover, maintenance) to a
// control-plane process and returns its answer on a channel.
func (s *Supervisor) command(target, cmd, arg string) <-chan error {
	res := make(chan error, 1)
	p := s.controlProc(target)
	if p == nil || p.conn == nil || p.state != StateRunning {
		res <- fmt.Errorf("the %s is not running on this host", target)
		return res
	}
	s.nextID++
	id := s.nextID
	s.pending[id] = res
	if err := p.conn.Send(&ipc.Msg{Type: "command", ID: id, Cmd: cmd, Arg: arg}, sendTimeout); err != nil {
		delete(s.pending, id)
		res <- err
	}
	return res
}

// fenceLoop checks the node manager's heartbeat every lease/4. A node
// manager that is stopped, starved or wedged cannot drop the floating IPs
// when its lease runs out, so the supervisor does it for it and restarts it.
func (s *Supervisor) fenceLoop(stop <-chan struct{}) {
	lease := s.cfg.Cluster.Timing.Lease
	every := lease / 4
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			// If this goroutine itself was late (the whole host stalled),
			// heartbeats are stale because nobody ran: look again at the
			// next tick, after the node manager had its chance to report.
			late := now.Sub(last) > every+lease/2
			last = now
			if late {
				continue
			}
			s.post(s.checkFence)
		}
	}
}

func (s *Supervisor) checkFence() {
	nm := s.controlProc(ctlNodeManager)
	if nm == nil || nm.state != StateRunning || s.stopping || nm.fencing {
		return
	}
	lease := s.cfg.Cluster.Timing.Lease
	if nm.lastBeat.IsZero() {
		// Not reported yet: it holds no lease and no address (it removes
		// stale ones before it speaks), so there is nothing to fence. A
		// loaded host may take long to start it; only a start that never
		// completes is restarted.
		if age := time.Since(nm.startedAt); age > startupTimeout {
			nm.fencing = true
			nm.log.Error("node manager did not report within the start-up timeout; restarting it", "event", "startup_timeout", "after_ms", age.Milliseconds())
			s.killControl(nm)
		}
		return
	}
	age := time.Since(nm.lastBeat)
	if age <= lease {
		return
	}
	nm.fencing = true
	s.fences++
	nm.log.Error("node manager heartbeat older than the lease: removing floating IPs and restarting it",
		"event", "fence", "heartbeat_age_ms", age.Milliseconds(), "lease_ms", lease.Milliseconds(), "pid", nm.pid)
	removed, err := s.fenceVIPs()
	if err != nil {
		nm.log.Error("fence: cannot remove floating IPs", "event", "fence_error", "err", err)
	}
	for _, v := range removed {
		nm.log.Warn("fence: floating IP removed", "event", "fence_vip", "vip", v)
	}
	s.killControl(nm)
}

// startupTimeout bounds how long a control-plane process may take to send
// its first report.
const startupTimeout = 10 * time.Second

// killControl kills a control-plane process's group off the loop; its exit
// restarts it.
func (s *Supervisor) killControl(p *proc) {
	g, gen := p.group, p.gen
	go func() {
		// SIGKILL reaches a stopped process too.
		if err := g.Kill(); err != nil {
			p.log.Error("cannot kill control-plane process", "event", "fence_error", "err", err)
		}
		s.post(func() {
			if p.gen == gen {
				p.fencing = false
			}
		})
	}()
}

// ControlReport is what `vigil status` shows of a control-plane process: its
// own last report, passed through as it sent it.
type ControlReport = json.RawMessage
