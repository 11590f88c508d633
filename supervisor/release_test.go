package supervisor

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/nodemanager"
	"github.com/vigil-project/vigil/protocol"
)

type recFencer struct{ steps *[]string }

func (f recFencer) Reconcile([]netfloat.VIP) ([]netfloat.VIP, error) {
	*f.steps = append(*f.steps, "remove")
	return nil, nil
}

func releaseConfig(t *testing.T) *config.Config {
	dir := t.TempDir()
	kf := filepath.Join(dir, "cluster.key")
	if err := config.WriteKeyFile(kf); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.Cluster.Name, cfg.Cluster.Node, cfg.Cluster.Role, cfg.Cluster.KeyFile = "c", "a", config.RoleNode, kf
	cfg.Cluster.Nodes = []config.Peer{{ID: "a", Address: "127.0.0.1:7400"}, {ID: "b", Address: "127.0.0.1:7500"}}
	cfg.Cluster.Witnesses = []config.Peer{{ID: "w", Address: "127.0.0.1:7600"}}
	cfg.Runtime.StateDir = dir
	return cfg
}

// TestCrashReleaseOrder: the host stops serving (kernel lease, then
// addresses) before the next incarnation is persisted, which is before
// anything is sent; what is sent carries the persisted incarnation. A
// step that fails stops everything after it.
func TestCrashReleaseOrder(t *testing.T) {
	cfg := releaseConfig(t)
	path := filepath.Join(cfg.Runtime.StateDir, nodemanager.StateFile)
	owner := statefile.Owner{Kind: "node", Cluster: "c", ID: "a"}
	if err := statefile.Save(path, owner, protocol.NodeState{Incarnation: 41, MaxEpoch: 3}); err != nil {
		t.Fatal(err)
	}
	s := &Supervisor{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	r := &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "active", LeaseValid: true, LeaseRemainingMS: 100,
		Succession: &ctlmsg.Succession{Epoch: 3, To: "b", Nodes: map[string]uint64{"b": 7}, Locators: map[string]uint64{"a": 1, "b": 2, "w": 3}}}}
	if c, _ := s.crashReleaseFor(0, r, 150*time.Millisecond); c != nil {
		t.Fatal("a release for a lease that has run out")
	}
	if c, _ := s.crashReleaseFor(0, &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby"}}, 0); c != nil {
		t.Fatal("a release for a standby")
	}
	// Every active that gets no release is said to, with why; a standby
	// is not.
	noSucc := *r
	noSucc.Succession = nil
	noLease := *r
	noLease.LeaseValid = false
	for _, c := range []struct {
		r    *ctlmsg.NodeManagerReport
		want string
	}{
		{r, "run out"}, {&noSucc, "no succession"}, {&noLease, "no valid lease"},
		{&ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby"}}, ""}, {nil, ""},
	} {
		rel, got := s.crashReleaseFor(0, c.r, 150*time.Millisecond)
		if rel != nil {
			t.Fatalf("a release for %+v", c.r)
		}
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("skipped reason %q, want one with %q", got, c.want)
		}
	}
	for _, failRevoke := range []bool{false, true} {
		var steps []string
		c, _ := s.crashReleaseFor(0, r, 10*time.Millisecond)
		if c == nil {
			t.Fatal("no release for an active with lease left")
		}
		c.float = recFencer{&steps}
		c.revoke = func() error {
			steps = append(steps, "revoke")
			if failRevoke {
				return errors.New("netlink said no")
			}
			return nil
		}
		var sent []protocol.Envelope
		c.send = func(_ []byte, msgs []protocol.Envelope) error {
			var st protocol.NodeState
			if _, err := statefile.Load(path, owner, &st); err != nil {
				t.Fatal(err)
			}
			for _, e := range msgs {
				if e.Msg.Incarnation != st.Incarnation {
					t.Fatalf("sent incarnation %d, persisted %d", e.Msg.Incarnation, st.Incarnation)
				}
			}
			steps = append(steps, "send")
			sent = msgs
			return nil
		}
		err := c.run()
		if failRevoke {
			if err == nil || len(steps) != 1 || sent != nil {
				t.Fatalf("revoke failed: err %v, steps %v", err, steps)
			}
			continue
		}
		if err != nil || len(steps) != 3 || steps[0] != "revoke" || steps[1] != "remove" || steps[2] != "send" {
			t.Fatalf("err %v, steps %v", err, steps)
		}
		if len(sent) != 4 || sent[0].Msg.Incarnation != 42 {
			t.Fatalf("sent %+v", sent)
		}
	}
}
