package execshim

import (
	"slices"
	"strings"
	"testing"
)

// The hooks group's directories reach the node manager intact (paths of
// any shape, v1's several hierarchies), a malformed value is an error, and
// an empty one is no group.
func TestHooksCgroupEnv(t *testing.T) {
	dirs := []string{"/sys/fs/cgroup/cpu,cpuacct/vigil/hooks", "/sys/fs/cgroup/memory/a b:c/vigil/hooks"}
	entry, err := HooksCgroupEntry(dirs)
	if err != nil {
		t.Fatal(err)
	}
	k, v, _ := strings.Cut(entry, "=")
	if k != HooksCgroupEnv {
		t.Fatalf("entry %q", entry)
	}
	t.Setenv(HooksCgroupEnv, v)
	got, err := HooksCgroupFromEnv()
	if err != nil || !slices.Equal(got, dirs) {
		t.Errorf("HooksCgroupFromEnv() = %q, %v; want %q", got, err, dirs)
	}
	for _, bad := range []string{"/sys/fs/cgroup/hooks", `["relative/hooks"]`, `{}`} {
		t.Setenv(HooksCgroupEnv, bad)
		if got, err := HooksCgroupFromEnv(); err == nil {
			t.Errorf("%s=%q read as %q", HooksCgroupEnv, bad, got)
		}
	}
	t.Setenv(HooksCgroupEnv, "")
	if got, err := HooksCgroupFromEnv(); got != nil || err != nil {
		t.Errorf("empty: %q, %v", got, err)
	}
}
