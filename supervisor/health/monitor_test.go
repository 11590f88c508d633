package health

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
)

// scriptedChecker returns the scripted results in order. Before returning
// result i it reports the monitor's Status as it stood after check i-1, so the
// test sees each step's state without a hook in the monitor.
type scriptedChecker struct {
	m       *Monitor
	results []error
	clock   *fakeClock
	at      []time.Duration // elapsed time of each check, for grace
	snaps   chan Status
	i       int
}

func (s *scriptedChecker) Check(ctx context.Context) error {
	s.snaps <- s.m.Status()
	if s.i >= len(s.results) {
		<-ctx.Done() // script over: wait for the test to stop Run
		return ctx.Err()
	}
	if s.at != nil {
		s.clock.set(s.at[s.i])
	}
	err := s.results[s.i]
	s.i++
	return err
}

type fakeClock struct {
	mu    sync.Mutex
	start time.Time
	t     time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.start.Add(d)
}

var errScripted = errors.New("scripted failure")

func TestMonitorTransitions(t *testing.T) {
	const (
		o = true  // success
		x = false // failure
	)
	const (
		S = StateStarting
		H = StateHealthy
		U = StateUnhealthy
	)
	tests := []struct {
		name       string
		rise, fall int
		grace      time.Duration
		results    []bool
		at         []time.Duration // elapsed since Run for each check; nil = all at 0 with no grace
		states     []State         // state after each check
	}{
		{name: "rise", rise: 2, fall: 3, results: []bool{o, o, o}, states: []State{S, H, H}},
		{name: "fall from starting", rise: 2, fall: 3, results: []bool{x, x, x, x}, states: []State{S, S, U, U}},
		{name: "interrupted rise", rise: 2, fall: 3, results: []bool{o, x, o, o}, states: []State{S, S, S, H}},
		{name: "healthy survives fall-1 failures", rise: 2, fall: 3,
			results: []bool{o, o, x, x, o, x, x, x}, states: []State{S, H, H, H, H, H, H, U}},
		{name: "unhealthy needs rise successes", rise: 2, fall: 3,
			results: []bool{x, x, x, o, x, o, o}, states: []State{S, S, U, U, U, U, H}},
		{name: "rise 1 fall 1 flaps", rise: 1, fall: 1,
			results: []bool{o, x, o, x}, states: []State{H, U, H, U}},
		{name: "rise 3", rise: 3, fall: 1, results: []bool{o, o, o}, states: []State{S, S, H}},
		{name: "zero rise and fall mean defaults", rise: 0, fall: 0,
			results: []bool{o, o, x, x, x}, states: []State{S, H, H, H, U}},
		{name: "failures in grace not counted", rise: 2, fall: 2, grace: 10 * time.Second,
			results: []bool{x, x, x, x, x},
			at:      []time.Duration{0, time.Second, 9 * time.Second, 10 * time.Second, 11 * time.Second},
			states:  []State{S, S, S, S, U}},
		{name: "successes count in grace", rise: 2, fall: 2, grace: 10 * time.Second,
			results: []bool{o, o, x, x},
			at:      []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			states:  []State{S, H, H, H}},
		{name: "grace failure breaks a rise", rise: 2, fall: 2, grace: 10 * time.Second,
			results: []bool{o, x, o, o},
			at:      []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			states:  []State{S, S, S, H}},
		{name: "healthy then failures after grace", rise: 1, fall: 2, grace: 5 * time.Second,
			results: []bool{o, x, x, x, x},
			at:      []time.Duration{0, 4 * time.Second, 4 * time.Second, 6 * time.Second, 7 * time.Second},
			states:  []State{H, H, H, H, U}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{start: time.Unix(1_000_000, 0)}
			clock.set(0)
			ticks := make(chan time.Time)
			var changes []State
			h := &config.Health{Kind: config.HealthTCP, Interval: time.Hour, Timeout: time.Minute,
				Rise: tc.rise, Fall: tc.fall, Grace: tc.grace}
			sc := &scriptedChecker{clock: clock, at: tc.at, snaps: make(chan Status)}
			for _, r := range tc.results {
				if r {
					sc.results = append(sc.results, nil)
				} else {
					sc.results = append(sc.results, errScripted)
				}
			}
			m := NewMonitor(h, sc, func(s Status) { changes = append(changes, s.State) }, nil)
			m.now = clock.now
			m.newTicker = func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} }
			sc.m = m

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()

			if s := <-sc.snaps; s.State != StateStarting || s.Checks != 0 {
				t.Fatalf("before the first check: %+v", s)
			}
			var got []State
			var last Status
			// Check i+1 reports the status left by check i; the first check
			// runs at once, each later one on a tick.
			for range tc.results {
				ticks <- time.Time{}
				last = <-sc.snaps
				got = append(got, last.State)
			}
			cancel()
			<-done

			if !slices.Equal(got, tc.states) {
				t.Fatalf("states %v, want %v", got, tc.states)
			}
			var wantChanges []State
			prev := StateStarting
			for _, s := range tc.states {
				if s != prev {
					wantChanges = append(wantChanges, s)
					prev = s
				}
			}
			if !slices.Equal(changes, wantChanges) {
				t.Fatalf("onChange saw %v, want %v", changes, wantChanges)
			}
			var fails uint64
			for _, r := range tc.results {
				if !r {
					fails++
				}
			}
			if last.Checks != uint64(len(tc.results)) || last.Failures != fails {
				t.Fatalf("Checks=%d Failures=%d, want %d %d", last.Checks, last.Failures, len(tc.results), fails)
			}
			if tc.results[len(tc.results)-1] {
				if last.LastError != "" || last.ConsecutiveOK == 0 || last.ConsecutiveFail != 0 {
					t.Fatalf("after a success: %+v", last)
				}
			} else if last.LastError != errScripted.Error() || last.ConsecutiveOK != 0 {
				t.Fatalf("after a failure: %+v", last)
			}
			if !last.LastCheck.Equal(clock.now()) {
				t.Fatalf("LastCheck %v, want %v", last.LastCheck, clock.now())
			}
			// A check cut short by shutdown is not counted.
			if s := m.Status(); s.Checks != last.Checks {
				t.Fatalf("shutdown check counted: %+v", s)
			}
		})
	}
}

// TestMonitorRealTime runs a Monitor with the real clock and a real TCP
// check: healthy while a listener accepts, unhealthy once it is closed.
func TestMonitorRealTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	h := &config.Health{Kind: config.HealthTCP, TCP: ln.Addr().String(),
		Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 2, Fall: 2}
	c, err := NewChecker(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan Status, 10)
	m := NewMonitor(h, c, func(s Status) { changes <- s }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	start := time.Now()
	s := waitChange(t, changes, 5*time.Second)
	if s.State != StateHealthy || s.ConsecutiveOK != 2 {
		t.Fatalf("first change: %+v", s)
	}
	// Two checks 50ms apart: never before one interval.
	if el := time.Since(start); el < 40*time.Millisecond {
		t.Fatalf("healthy after %v, before a second check could run", el)
	}
	if got := m.Status(); got.State != StateHealthy {
		t.Fatalf("Status() = %+v", got)
	}

	_ = ln.Close()
	s = waitChange(t, changes, 5*time.Second)
	if s.State != StateUnhealthy || s.ConsecutiveFail != 2 || s.LastError != "connection refused" {
		t.Fatalf("second change: %+v", s)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func waitChange(t *testing.T, ch <-chan Status, d time.Duration) Status {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(d):
		t.Fatalf("no state change within %v", d)
		return Status{}
	}
}

// blockingChecker waits for its context, as a hung check would. A non-nil
// entered is closed when the first check begins.
type blockingChecker struct{ entered chan struct{} }

func (b blockingChecker) Check(ctx context.Context) error {
	if b.entered != nil {
		select {
		case <-b.entered:
		default:
			close(b.entered)
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestMonitorAppliesTimeout: the monitor bounds each check by Timeout, and
// Run returns promptly when cancelled in the middle of a check.
func TestMonitorAppliesTimeout(t *testing.T) {
	h := &config.Health{Kind: config.HealthTCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 2}
	changes := make(chan Status, 10)
	m := NewMonitor(h, blockingChecker{}, func(s Status) { changes <- s }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	s := waitChange(t, changes, 5*time.Second)
	if s.State != StateUnhealthy || s.LastError != context.DeadlineExceeded.Error() || s.Checks != 2 {
		t.Fatalf("hung checker: %+v", s)
	}
	// Two checks, each cut at 50ms, one interval apart.
	if el := time.Since(start); el < 140*time.Millisecond {
		t.Fatalf("unhealthy after %v, faster than two timed-out checks allow", el)
	}

	h.Timeout, h.Interval = time.Hour, 2*time.Hour
	entered := make(chan struct{})
	m2 := NewMonitor(h, blockingChecker{entered: entered}, nil, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { m2.Run(ctx2); close(done2) }()
	select {
	case <-entered: // cancel in the middle of a check
	case <-time.After(5 * time.Second):
		t.Fatal("the first check never began")
	}
	cancel2()
	select {
	case <-done2:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when cancelled during a check")
	}
	if s := m2.Status(); s.Checks != 0 || s.State != StateStarting {
		t.Fatalf("check cut by shutdown was counted: %+v", s)
	}
}
