package supervisor

import (
	"strings"
	"testing"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/execshim"
)

// The hooks group's directories never reach an application's environment.
func TestHooksCgroupEnvNotForApplications(t *testing.T) {
	entry, err := execshim.HooksCgroupEntry([]string{"/sys/fs/cgroup/memory/vigil/hooks"})
	if err != nil {
		t.Fatal(err)
	}
	_, v, _ := strings.Cut(entry, "=")
	t.Setenv(execshim.HooksCgroupEnv, v)
	for _, kv := range processEnv(&config.Process{Name: "app"}, "{}") {
		if strings.HasPrefix(kv, execshim.HooksCgroupEnv+"=") {
			t.Errorf("an application's environment has %s", kv)
		}
	}
}
