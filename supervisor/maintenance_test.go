package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/nodemanager"
)

// `vigil maintenance on` while the node manager is not running (a
// restart's backoff, FATAL): each service's file is written for its next
// start, so that it does not come back eligible for any service. Before,
// the command failed and left the node in service.
func TestMaintenanceForANodeManagerNotRunning(t *testing.T) {
	cfg := releaseConfig(t)
	cfg.Services = []config.Service{{Name: "voice"}, {Name: "data"}}
	s := &Supervisor{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	p := &proc{state: StateBackoff, control: ctlNodeManager}
	p.cfg.Name = ctlNodeManager
	p.resetServices(len(cfg.Services))
	s.ctrl = append(s.ctrl, p)
	ask := func(arg string) error {
		select {
		case a := <-s.forward(Request{Cmd: "maintenance", Name: arg}):
			return a.err
		case <-time.After(10 * time.Second):
			t.Fatal("no answer")
			return nil
		}
	}
	for _, arg := range []string{"on", "off"} {
		if err := ask(arg); err != nil {
			t.Fatalf("maintenance %s: %v", arg, err)
		}
		for slot := range cfg.Services {
			sc := s.serviceConfig(slot)
			on, _, err := nodemanager.LoadMaintenance(sc)
			if err != nil || on != (arg == "on") {
				t.Errorf("maintenance %s: service %s reads %v, %v from %s", arg, cfg.Services[slot].Name, on, err, sc.Runtime.StateDir)
			}
			if !strings.HasSuffix(sc.Runtime.StateDir, "service-"+cfg.Services[slot].Name) {
				t.Errorf("state dir %s is not the service's", sc.Runtime.StateDir)
			}
		}
	}
	// A file that cannot be written is an error naming the node manager.
	if err := os.WriteFile(filepath.Join(cfg.Runtime.StateDir, "blocker"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.cfg.Runtime.StateDir = filepath.Join(cfg.Runtime.StateDir, "blocker")
	if err := ask("on"); err == nil || !strings.Contains(err.Error(), "the nodemanager is not running, and its maintenance could not be written") {
		t.Errorf("unwritable state dir: %v", err)
	}
	if err := ask("maybe"); err == nil || !strings.Contains(err.Error(), `not "maybe"`) {
		t.Errorf("a bad argument: %v", err)
	}
}
