package supervisor

import (
	"slices"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/execshim"
)

// The hooks group's directories never reach an application's environment.
func TestHooksCgroupEnvNotForApplications(t *testing.T) {
	for slot := range 3 {
		entry, err := execshim.HooksCgroupEntry(slot, []string{"/sys/fs/cgroup/memory/vigil/hooks"})
		if err != nil {
			t.Fatal(err)
		}
		k, v, _ := strings.Cut(entry, "=")
		t.Setenv(k, v)
	}
	for _, kv := range processEnv(&config.Process{Name: "app"}, "{}") {
		if strings.HasPrefix(kv, execshim.HooksCgroupEnv) {
			t.Errorf("an application's environment has %s", kv)
		}
	}
}

// What the supervisor tells its control-plane processes (one process for
// every service, leave out one that cannot start) is theirs: a supervisor
// run under another (a test, a nested vigil) does not pass it to its
// applications, which would then include a vigil of their own.
func TestControlPlaneEnvNotForApplications(t *testing.T) {
	t.Setenv(ctlmsg.EnvAllServices, "1")
	t.Setenv(ctlmsg.EnvLeaveOut, "1")
	for _, kv := range processEnv(&config.Process{Name: "app"}, "{}") {
		if strings.HasPrefix(kv, ctlmsg.EnvAllServices+"=") || strings.HasPrefix(kv, ctlmsg.EnvLeaveOut+"=") {
			t.Errorf("an application's environment has %s", kv)
		}
	}
	s := &Supervisor{cfg: &config.Config{}}
	s.cfg.Cluster.Role = config.RoleNode
	for _, spec := range s.controlProcesses() {
		if !slices.Contains(spec.cfg.Env, ctlmsg.EnvLeaveOut+"=1") || !slices.Contains(spec.cfg.Env, ctlmsg.EnvAllServices+"=1") {
			t.Errorf("%v's environment %q lacks %s=1 or %s=1", spec.kind, spec.cfg.Env, ctlmsg.EnvLeaveOut, ctlmsg.EnvAllServices)
		}
	}
}
