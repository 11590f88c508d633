package supervisor

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/supervisor/health"
)

// graceSupervisor is a supervisor with only what the health bookkeeping
// needs: no cgroups, no control plane (so nothing is pushed anywhere).
func graceSupervisor(procs ...*proc) *Supervisor {
	log := slog.New(slog.DiscardHandler)
	s := &Supervisor{log: log, clock: &recordingClock{Fake: clock.NewFake(time.Hour)}, notify: newNotifier(log), events: make(chan func(), 16), procs: procs}
	s.updateHealth()
	return s
}

// recordingClock is a fake clock that also keeps every AfterFunc's
// function, so that a test can run a timer's function after it was
// stopped: a timer that fired just as it was stopped.
type recordingClock struct {
	*clock.Fake
	fns []func()
}

func (c *recordingClock) AfterFunc(d time.Duration, fn func()) clock.Stopper {
	c.fns = append(c.fns, fn)
	return c.Fake.AfterFunc(d, fn)
}

func critical(name string, h *config.Health) *proc {
	log := slog.New(slog.DiscardHandler)
	return &proc{
		cfg:   config.Process{Name: name, Critical: true, StopTimeout: 2 * time.Second, Health: h},
		state: StateRunning, pid: 100, log: log,
	}
}

// runPosted runs the next closure posted to the loop, or fails.
func runPosted(t *testing.T, s *Supervisor) {
	t.Helper()
	select {
	case fn := <-s.events:
		fn()
	case <-time.After(5 * time.Second):
		t.Fatal("nothing was posted to the loop")
	}
}

func TestRestartGraceDuration(t *testing.T) {
	for _, tc := range []struct {
		name string
		pc   config.Process
		want time.Duration
	}{
		{"no check", config.Process{StopTimeout: 10 * time.Second}, 20 * time.Second},
		{"check", config.Process{StopTimeout: 2 * time.Second, Health: &config.Health{Interval: 500 * time.Millisecond, Rise: 3}}, 13500 * time.Millisecond},
		{"check with grace", config.Process{StopTimeout: time.Second, Health: &config.Health{Interval: time.Second, Rise: 2, Grace: 30 * time.Second}}, 43 * time.Second},
		{"check without timing", config.Process{StopTimeout: time.Second, Health: &config.Health{}}, 13 * time.Second},
	} {
		if got := restartGrace(tc.pc); got != tc.want {
			t.Errorf("%s: restartGrace = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A planned restart of a critical process without a check is excused while
// it stops and is down, and the grace ends as soon as it runs again.
func TestRestartGraceUntilRunning(t *testing.T) {
	p := critical("sip", nil)
	s := graceSupervisor(p)
	if !slices.Equal(s.appHealthy, []bool{true}) {
		t.Fatalf("a running critical process: app unhealthy: %v", s.appUnhealthyReasons())
	}
	if !p.upForHealth() {
		t.Fatal("a running process without a check does not count as up")
	}
	s.beginRestartGrace(p, "reload")
	if p.graceUntil.IsZero() || p.graceTimer == nil {
		t.Fatal("no grace armed")
	}
	if left := p.graceUntil.Sub(s.clock.Wall()); left != 12*time.Second {
		t.Errorf("grace ends in %v, want stop_timeout 2s + 10s", left)
	}
	for _, st := range []State{StateStopping, StateStopped} {
		p.state, p.pid = st, 0
		s.updateHealth()
		if r := s.appUnhealthyReasons(); len(r) != 0 || !slices.Equal(s.appHealthy, []bool{true}) || !s.healthy {
			t.Fatalf("%s during a planned restart counts against health: %v", st, r)
		}
	}
	p.state, p.pid = StateRunning, 101
	s.updateHealth()
	if !p.graceUntil.IsZero() || p.graceTimer != nil {
		t.Error("grace still open after the process runs again")
	}
	// From now on it counts as usual.
	p.state = StateBackoff
	s.updateHealth()
	if slices.Equal(s.appHealthy, []bool{true}) || len(s.appUnhealthyReasons()) != 1 {
		t.Errorf("a crash after the restart is excused: appHealthy=%v reasons=%v", s.appHealthy, s.appUnhealthyReasons())
	}
}

// With a check, the grace lasts until the check says healthy; an unhealthy
// verdict ends it at once (a broken new config still fails over).
func TestRestartGraceUntilHealthy(t *testing.T) {
	h := &config.Health{Kind: config.HealthExec, Interval: time.Second, Rise: 2}
	for _, verdict := range []health.State{health.StateHealthy, health.StateUnhealthy} {
		p := critical("sip", h)
		p.health.State = health.StateHealthy
		s := graceSupervisor(p)
		if !slices.Equal(s.appHealthy, []bool{true}) || !p.upForHealth() {
			t.Fatalf("a healthy process: appHealthy=%v up=%v", s.appHealthy, p.upForHealth())
		}
		s.beginRestartGrace(p, "operator restart")
		p.state, p.health = StateStopping, health.Status{}
		s.updateHealth()
		p.state, p.health.State = StateRunning, health.StateStarting
		s.updateHealth()
		if p.graceUntil.IsZero() || !slices.Equal(s.appHealthy, []bool{true}) {
			t.Fatalf("%s: a restarted process whose check is still starting counts against health: %v", verdict, s.appUnhealthyReasons())
		}
		p.health.State = verdict
		s.updateHealth()
		if !p.graceUntil.IsZero() {
			t.Errorf("%s: grace still open after the check's verdict", verdict)
		}
		if want := verdict == health.StateHealthy; slices.Equal(s.appHealthy, []bool{true}) != want {
			t.Errorf("%s: appHealthy=%v, want %v (reasons %v)", verdict, s.appHealthy, want, s.appUnhealthyReasons())
		}
	}
}

// A process that does not come back before the deadline counts again, and
// a stale deadline (of a grace since renewed) changes nothing.
func TestRestartGraceDeadline(t *testing.T) {
	p := critical("sip", nil)
	s := graceSupervisor(p)
	clk := s.clock.(*recordingClock)
	s.beginRestartGrace(p, "reload")
	d := restartGrace(p.cfg)
	clk.Advance(time.Second) // the renewed grace ends a second later
	s.beginRestartGrace(p, "reload")
	p.state, p.pid = StateStopping, 0
	s.updateHealth()

	clk.fns[0]() // the first grace's timer fires (as if it had raced its Stop)
	runPosted(t, s)
	if p.graceUntil.IsZero() || !slices.Equal(s.appHealthy, []bool{true}) {
		t.Fatal("a stale deadline ended the renewed grace")
	}
	clk.Advance(d - time.Second) // the first grace's end: stopped, nothing fires
	select {
	case <-s.events:
		t.Fatal("the stopped first grace's timer fired")
	default:
	}
	clk.Advance(time.Second - time.Millisecond)
	select {
	case <-s.events:
		t.Fatal("the renewed grace ended a millisecond early")
	default:
	}
	clk.Advance(time.Millisecond) // the renewed grace's deadline
	runPosted(t, s)
	if !p.graceUntil.IsZero() {
		t.Error("grace still open after its deadline")
	}
	if slices.Equal(s.appHealthy, []bool{true}) || s.healthy {
		t.Errorf("a critical process still stopping after the deadline is excused: %v", s.appUnhealthyReasons())
	}
}

// `vigil restart` excuses a process that was up, not one that was already
// down (the node was unhealthy before the operator acted), and never the
// control plane.
func TestOperatorRestartGrace(t *testing.T) {
	up := critical("up", nil)
	fatal := critical("fatal", nil)
	fatal.state, fatal.pid = StateFatal, 0
	unhealthy := critical("unhealthy", &config.Health{Kind: config.HealthExec})
	unhealthy.health.State = health.StateUnhealthy
	nm := critical(ctlNodeManager, nil)
	nm.control = ctlNodeManager
	s := graceSupervisor(up, fatal, unhealthy)
	s.ctrl = []*proc{nm}
	for _, p := range []*proc{up, fatal, unhealthy, nm} {
		if err := s.restartProcess(p.cfg.Name); err != nil {
			t.Fatalf("restart %s: %v", p.cfg.Name, err)
		}
		if p.state != StateStopping {
			t.Errorf("%s: state %s after restart, want stopping", p.cfg.Name, p.state)
		}
		if got, want := !p.graceUntil.IsZero(), p == up; got != want {
			t.Errorf("%s: excused=%v, want %v", p.cfg.Name, got, want)
		}
		p.clearRestartGrace()
	}
}
