package nodemanager

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
)

// supervisorChannel is the channel a supervisor gives a node manager:
// parent its end, child the node manager's, found as Run finds it (the
// descriptor in ipc.EnvFD); both closed at the end of the test.
func supervisorChannel(t *testing.T) (parent, child *ipc.Conn) {
	t.Helper()
	parent, childF, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Close() })
	fd, err := unix.Dup(int(childF.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	t.Setenv(ipc.EnvFD, strconv.Itoa(fd))
	child, err = ipc.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Close() })
	return parent, child
}

// One process runs every service's manager: each supervisor message goes
// to the service it names, a command for a service the process does not
// run is answered with an error (the supervisor would otherwise wait for
// it), and the channel's end ends every service.
func TestSupervisorMessagesByService(t *testing.T) {
	parent, child := supervisorChannel(t)

	sh := &shared{sup: child, log: slog.New(slog.DiscardHandler)}
	inbox := map[int]chan *ctlmsg.Msg{0: make(chan *ctlmsg.Msg, 4), 1: make(chan *ctlmsg.Msg, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sh.readSupervisor(cancel, inbox)

	send := func(m *ctlmsg.Msg) {
		t.Helper()
		if err := parent.Send(m, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	h := ctlmsg.Health(false, []string{"dataapp down"})
	h.Slot = 1
	send(h)
	c := ctlmsg.Command(ctlmsg.CmdSwitchover, "a")
	c.ID = 7
	send(c) // slot 0
	select {
	case m := <-inbox[1]:
		if m.Type != ctlmsg.TypeHealth || *m.Healthy || m.Reasons[0] != "dataapp down" {
			t.Errorf("service 1 got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("service 1's health never arrived")
	}
	select {
	case m := <-inbox[0]:
		if m.Type != ctlmsg.TypeCommand || m.ID != 7 {
			t.Errorf("service 0 got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("service 0's command never arrived")
	}

	other := ctlmsg.Command(ctlmsg.CmdMaintenance, "on")
	other.ID, other.Slot = 8, 2
	send(other)
	reply, err := parent.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if reply.Type != ctlmsg.TypeReply || reply.ID != 8 || !strings.Contains(reply.Error, "does not run service 2") {
		t.Errorf("a command for a service not run here: %+v", reply)
	}
	if len(inbox[0])+len(inbox[1]) != 0 {
		t.Error("a message for service 2 went to another service")
	}

	parent.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor's end closed and the services were not told to stop")
	}
}

// A service that could not start reports so, and answers what the
// supervisor sends it meanwhile: maintenance is written for its start, a
// switchover is refused, a reload is refused now and kept for its start
// (its reply already sent), and the latest health and every fault are
// kept for its start. Then it tries again.
func TestServiceNotStartedAnswersAndCarries(t *testing.T) {
	parent, child := supervisorChannel(t)

	h := &harness{t: t}
	cfg := h.config("a")
	cfg.Services = []config.Service{{Name: "voice"}, {Name: "data"}}
	clk := clock.NewFake(time.Hour)
	sh := &shared{cfg: cfg, sup: child, log: slog.New(slog.DiscardHandler), clk: clk, bySlot: true}
	f := &startFailure{since: clk.Now() - 3*time.Second, err: "statefile: node.state: checksum mismatch", attempts: 1}

	sup := make(chan *ctlmsg.Msg, 8)
	sick, well := ctlmsg.Health(false, []string{"dataapp down"}), ctlmsg.Health(true, nil)
	reload := ctlmsg.ConfigMsg(&ctlmsg.Config{})
	reload.ID = 5
	maint := ctlmsg.Command(ctlmsg.CmdMaintenance, "on")
	maint.ID = 6
	sw := ctlmsg.Command(ctlmsg.CmdSwitchover, "b")
	sw.ID = 7
	fault := ctlmsg.Fault(3, "fenced: node manager silent")
	// The switchover last: the loop handles the messages in turn, so
	// once its reply comes every other one has been taken in, and the
	// retry below cannot overtake any.
	for _, m := range []*ctlmsg.Msg{sick, reload, maint, well, fault, sw} {
		m.Slot = 1
		sup <- m
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		carried []*ctlmsg.Msg
		ok      bool
	}
	done := make(chan result, 1)
	go func() {
		c, ok := sh.awaitRetry(ctx, 1, sup, f, nil)
		done <- result{c, ok}
	}()

	replies := map[uint64]string{}
	reported := false
	for len(replies) < 3 {
		m, err := parent.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m.Type {
		case ctlmsg.TypeReport:
			r, err := m.NodeManagerReport()
			if err != nil {
				t.Fatal(err)
			}
			if r.Slot != 1 || r.Role != ctlmsg.RoleNotStarted || r.StartError != f.err || r.StartFailingMS != 3000 || r.Healthy ||
				len(r.UnhealthyReasons) != 1 || !strings.Contains(r.UnhealthyReasons[0], "service data not started") {
				t.Errorf("not-started report: %+v", r)
			}
			reported = true
		case ctlmsg.TypeReply:
			if m.Slot != 1 {
				t.Errorf("reply %d for slot %d, want 1", m.ID, m.Slot)
			}
			replies[m.ID] = m.Error
		}
	}
	if !reported {
		t.Error("no not-started report before the replies")
	}
	if e := replies[5]; !strings.Contains(e, "not started") || !strings.Contains(e, "checksum mismatch") {
		t.Errorf("reload's reply: %q, want it refused, naming the cause", e)
	}
	if e := replies[6]; e != "" {
		t.Errorf("maintenance's reply: %q, want none", e)
	}
	if e := replies[7]; !strings.Contains(e, "not started on this node") {
		t.Errorf("switchover's reply: %q, want it refused", e)
	}
	sc, err := cfg.ForService(1)
	if err != nil {
		t.Fatal(err)
	}
	if on, _, err := LoadMaintenance(sc); err != nil || !on {
		t.Errorf("data's maintenance.state: on=%v err=%v, want on", on, err)
	}

	clk.Advance(ctlmsg.StartRetryEvery)
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no retry after StartRetryEvery")
	}
	if !res.ok {
		t.Fatal("awaitRetry gave up with ctx alive")
	}
	var got []string
	for _, m := range res.carried {
		switch {
		case m == well, m == fault:
			got = append(got, string(m.Type))
		case m.Type == ctlmsg.TypeConfig && m.ID == 0 && m.Config == reload.Config:
			got = append(got, "config, its reply sent")
		default:
			t.Errorf("carried %+v", m)
		}
	}
	slices.Sort(got)
	if want := []string{"config, its reply sent", "fault", "health"}; !slices.Equal(got, want) {
		t.Errorf("carried to the start: %q, want %q (the latest health only)", got, want)
	}

	cancel()
	go func() {
		c, ok := sh.awaitRetry(ctx, 1, sup, f, nil)
		done <- result{c, ok}
	}()
	select {
	case res = <-done:
		if res.ok {
			t.Error("awaitRetry went on after ctx ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("awaitRetry did not end with ctx")
	}
}

// A service whose state file is refused: under a supervisor that takes
// not-started reports (shared.leaveOut) it is reported and waited on,
// and the process goes on; under one from before, the error ends it, as
// it did.
func TestServiceThatCannotStart(t *testing.T) {
	parent, child := supervisorChannel(t)

	h := &harness{t: t}
	cfg := h.config("a")
	if err := os.WriteFile(filepath.Join(cfg.Runtime.StateDir, StateFile), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh := &shared{cfg: cfg, sup: child, log: slog.New(slog.DiscardHandler), clk: clock.Real{}, bySlot: true,
		holds: &holds{log: slog.New(slog.DiscardHandler)}, running: make([]atomic.Pointer[manager], 1)}

	err := sh.runService(context.Background(), 0, make(chan *ctlmsg.Msg))
	if err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Fatalf("under a supervisor from before: %v, want the refused state file", err)
	}

	sh.leaveOut = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.runService(ctx, 0, make(chan *ctlmsg.Msg)) }()
	m, err := parent.Recv()
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.NodeManagerReport()
	if err != nil {
		t.Fatal(err)
	}
	if !r.NotStarted() || r.Role != ctlmsg.RoleNotStarted || !strings.Contains(r.StartError, StateFile) {
		t.Errorf("report of the service that could not start: %+v", r)
	}
	select {
	case err := <-done:
		t.Fatalf("runService ended (%v) while the service waits to be tried again", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runService ended with %v when its context did, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runService did not end with its context")
	}
}

// A try that fails after its hold-off (here the bind: the node's address,
// 192.0.2.1, is not this host's) leaves what the supervisor sent during
// the hold-off to the next: the health it had learnt, as a message, and a
// command still to be answered (runService answers it: whileNotStarted).
func TestServiceFailingAfterItsHoldOffKeepsWhatCame(t *testing.T) {
	h := &harness{t: t}
	cfg := h.config("a")
	sh := &shared{cfg: cfg, log: slog.New(slog.DiscardHandler), clk: clock.Real{}, bySlot: true, leaveOut: true,
		holds: &holds{log: slog.New(slog.DiscardHandler)}, running: make([]atomic.Pointer[manager], 1)}
	sup := make(chan *ctlmsg.Msg, 4)
	sw := ctlmsg.Command(ctlmsg.CmdSwitchover, "b")
	sw.ID = 9
	sup <- ctlmsg.Health(false, []string{"voiceapp down"})
	sup <- sw
	left, err := sh.serveService(context.Background(), 0, sup, nil, func(*slog.Logger) { t.Error("the service started") })
	if err == nil {
		t.Fatal("the service started on an address this host does not have")
	}
	var health, cmd bool
	for _, m := range left {
		switch {
		case m.Type == ctlmsg.TypeHealth && m.Healthy != nil && !*m.Healthy && slices.Equal(m.Reasons, []string{"voiceapp down"}):
			health = true
		case m == sw:
			cmd = true
		default:
			t.Errorf("left over: %+v", m)
		}
	}
	if !health || !cmd {
		t.Errorf("left over after %v: health %v, the switchover %v; want both", err, health, cmd)
	}
}
