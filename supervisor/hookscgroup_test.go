package supervisor

import (
	"strings"
	"testing"

	"github.com/vigil-project/vigil/config"
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
