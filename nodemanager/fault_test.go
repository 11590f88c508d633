package nodemanager

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
)

// testManager is a node manager without sockets or netlink: enough for the
// health and event paths that decide which hooks run. withSup gives it a
// supervisor channel (whose word it then waits for).
func testManager(t *testing.T, withSup bool) *manager {
	t.Helper()
	cfg := &config.Config{}
	cfg.Cluster.Name, cfg.Cluster.Node = "edge", "a"
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "127.0.0.1:1"}, {ID: "b", Address: "127.0.0.1:3"}}
	cfg.Hooks = config.Hooks{
		OnActive: [][]string{{"/bin/true", "active"}}, OnStandby: [][]string{{"/bin/true", "standby"}},
		OnFault: [][]string{{"/bin/true", "fault"}}, Timeout: time.Second,
	}
	log := slog.New(slog.DiscardHandler)
	pcfg := transport.ProtocolConfig(cfg)
	node, err := protocol.NewNode(pcfg, protocol.NodeState{}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	vip, err := parseVIP("192.0.2.100/24", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	m := &manager{
		cfg: cfg, pcfg: pcfg, log: log, node: node, hooks: newHookRunner(log, clock.Real{}), clk: clock.Real{},
		vips: []netfloat.VIP{vip}, supHealthy: true, linkDown: map[string]bool{},
	}
	if withSup {
		c, f, err := ipc.Pair()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); f.Close() })
		m.sup = c
	}
	m.updateHealth(time.Second) // as Run does before its loop
	return m
}

// queued drains the hook queue: "event:command" per job, and the env of
// the fault jobs.
func queued(m *manager) (jobs []string, faultEnv [][]string) {
	for {
		select {
		case j := <-m.hooks.queue:
			jobs = append(jobs, j.event+":"+strings.Join(j.argv[1:], " "))
			if j.event == "fault" {
				faultEnv = append(faultEnv, j.env)
			}
		default:
			return jobs, faultEnv
		}
	}
}

func health(m *manager, ok bool, reasons ...string) {
	m.onSupervisor(&ctlmsg.Msg{Type: ctlmsg.TypeHealth, Healthy: &ok, Reasons: reasons})
}

func envValue(env []string, key string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v
		}
	}
	return ""
}

// on_fault runs once each time the node turns unhealthy after having been
// healthy by the supervisor's word: not while applications are still
// starting when the node manager starts, not again while it stays
// unhealthy for more reasons, and again after it recovered.
func TestFaultHookOnHealth(t *testing.T) {
	m := testManager(t, true)
	health(m, false, "kamailio health starting")
	if jobs, _ := queued(m); len(jobs) != 0 {
		t.Fatalf("a node that starts unhealthy ran %v", jobs)
	}
	health(m, true)
	health(m, false, "kamailio exited")
	jobs, env := queued(m)
	if !slices.Equal(jobs, []string{"fault:fault"}) {
		t.Fatalf("critical application down: hooks %v, want on_fault", jobs)
	}
	if envValue(env[0], "VIGIL_EVENT") != "fault" || envValue(env[0], "VIGIL_NODE") != "a" ||
		!strings.Contains(envValue(env[0], "VIGIL_REASON"), "kamailio exited") {
		t.Errorf("fault hook env %q", env[0])
	}
	// Still unhealthy, for one more reason: the same fault.
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkDown, Interface: "eth0"})
	health(m, false, "kamailio backoff")
	if jobs, _ := queued(m); len(jobs) != 0 {
		t.Fatalf("a node that stayed unhealthy ran %v", jobs)
	}
	// Recovered, then its VIP interface goes down: a new fault.
	health(m, true)
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkUp, Interface: "eth0"})
	if jobs, _ := queued(m); len(jobs) != 0 {
		t.Fatalf("recovery ran %v", jobs)
	}
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkDown, Interface: "eth0"})
	jobs, env = queued(m)
	if !slices.Equal(jobs, []string{"fault:fault"}) || envValue(env[0], "VIGIL_REASON") != "unhealthy: interface eth0 down" {
		t.Fatalf("VIP interface down: hooks %v env %q", jobs, env)
	}
	// A link event on an interface no VIP uses is not this node's fault.
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkUp, Interface: "eth0"})
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkDown, Interface: "eth9"})
	if jobs, _ := queued(m); len(jobs) != 0 {
		t.Fatalf("an unrelated interface ran %v", jobs)
	}
}

// Without a supervisor channel (a node manager run by hand) its own view
// is all there is: healthy from the start, so the first fault counts.
func TestFaultHookWithoutSupervisor(t *testing.T) {
	m := testManager(t, false)
	m.onNetEvent(netfloat.Event{Kind: netfloat.EventLinkDown, Interface: "eth0"})
	if jobs, _ := queued(m); !slices.Equal(jobs, []string{"fault:fault"}) {
		t.Fatalf("hooks %v, want on_fault", jobs)
	}
}

// Losing the active role is a fault (after on_standby); handing it over is
// not.
func TestFaultHookOnLostRole(t *testing.T) {
	m := testManager(t, true)
	health(m, true)
	queued(m)
	m.onEvent(protocol.BecameStandby{Epoch: 7, Reason: "lease expired"})
	jobs, env := queued(m)
	if !slices.Equal(jobs, []string{"standby:standby", "fault:fault"}) {
		t.Fatalf("lease lost: hooks %v", jobs)
	}
	if envValue(env[0], "VIGIL_REASON") != "lost the active role: lease expired" || envValue(env[0], "VIGIL_EPOCH") != "7" {
		t.Errorf("fault env %q", env[0])
	}
	m.onEvent(protocol.BecameStandby{Epoch: 8, Reason: `handover to "b": switchover`, To: "b"})
	if jobs, _ := queued(m); !slices.Equal(jobs, []string{"standby:standby"}) {
		t.Fatalf("handover: hooks %v, want only on_standby", jobs)
	}
}

// An unhealthy active's on_fault runs before the on_standby of the
// handover that its health causes.
func TestFaultHookBeforeHandover(t *testing.T) {
	m := testManager(t, true)
	health(m, true)
	queued(m)
	m.onEvent(protocol.BecameActive{Epoch: 3})
	health(m, false, "kamailio exited")
	m.onEvent(protocol.BecameStandby{Epoch: 3, Reason: `handover to "b": unhealthy`, To: "b"})
	if jobs, _ := queued(m); !slices.Equal(jobs, []string{"active:active", "fault:fault", "standby:standby"}) {
		t.Fatalf("hooks in order %v", jobs)
	}
}

// The fault hook runs like the others: environment, event=hook log line.
func TestFaultHookRuns(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	var buf bytes.Buffer
	h := newHookRunner(slog.New(slog.NewJSONHandler(&buf, nil)), clock.Real{})
	h.runOne(context.Background(), hookJob{
		event: "fault", timeout: 5 * time.Second,
		argv: []string{"/bin/sh", "-c", `echo "$VIGIL_EVENT $VIGIL_REASON" > ` + out},
		env:  []string{"VIGIL_EVENT=fault", "VIGIL_REASON=unhealthy: interface eth0 down"},
	})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("fault hook did not run: %v; log %s", err, buf.String())
	}
	if got := strings.TrimSpace(string(b)); got != "fault unhealthy: interface eth0 down" {
		t.Errorf("hook saw %q", got)
	}
	if !strings.Contains(buf.String(), `"event":"hook"`) || !strings.Contains(buf.String(), `"hook":"fault"`) {
		t.Errorf("no event=hook line: %s", buf.String())
	}
}

// What the supervisor said during the restart hold-off (the node healthy
// before its applications started, then starting, then healthy) is taken
// in as the starting point, not as transitions: no on_fault for it. Other
// messages wait for the node.
func TestHoldOffTakesInHealth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		words []bool
		armed bool
	}{
		{"healthy at the end", []bool{true, false, true}, true},
		{"still starting", []bool{true, false}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManager(t, true)
			m.supKnown, m.faultArmed = false, false
			sup := make(chan *ctlmsg.Msg, 8)
			for _, ok := range tc.words {
				sup <- &ctlmsg.Msg{Type: ctlmsg.TypeHealth, Healthy: &ok, Reasons: []string{"sip health starting"}}
			}
			sup <- &ctlmsg.Msg{Type: ctlmsg.TypeCommand, Cmd: ctlmsg.CmdSwitchover}
			early, ok := m.holdOff(context.Background(), 50*time.Millisecond, sup)
			if !ok || len(early) != 1 || early[0].Cmd != "switchover" {
				t.Fatalf("holdOff returned %v %v", early, ok)
			}
			m.updateHealth(2 * time.Second) // as Run does once the node exists
			if jobs, _ := queued(m); len(jobs) != 0 {
				t.Fatalf("the hold-off's health history ran %v", jobs)
			}
			if m.faultArmed != tc.armed {
				t.Fatalf("armed %v, want %v", m.faultArmed, tc.armed)
			}
			health(m, true)
			health(m, false, "sip exited")
			if jobs, _ := queued(m); !slices.Equal(jobs, []string{"fault:fault"}) {
				t.Fatalf("a fault after the start ran %v", jobs)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := testManager(t, true).holdOff(ctx, time.Hour, nil); ok {
		t.Error("holdOff did not end with its context")
	}
}
