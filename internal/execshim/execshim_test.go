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
	for slot, name := range []string{HooksCgroupEnv, HooksCgroupEnv + "_1", HooksCgroupEnv + "_2"} {
		entry, err := HooksCgroupEntry(slot, dirs)
		if err != nil {
			t.Fatal(err)
		}
		k, v, _ := strings.Cut(entry, "=")
		if k != name {
			t.Fatalf("slot %d: entry %q", slot, entry)
		}
		t.Setenv(k, v)
		got, err := HooksCgroupFromEnv(slot)
		if err != nil || !slices.Equal(got, dirs) {
			t.Errorf("HooksCgroupFromEnv(%d) = %q, %v; want %q", slot, got, err, dirs)
		}
	}
	// Each slot reads its own variable only.
	t.Setenv(HooksCgroupEnv+"_1", `["/sys/fs/cgroup/memory/vigil/hooks-data"]`)
	if got, _ := HooksCgroupFromEnv(0); !slices.Equal(got, dirs) {
		t.Errorf("slot 0 read %q", got)
	}
	for _, bad := range []string{"/sys/fs/cgroup/hooks", `["relative/hooks"]`, `{}`} {
		t.Setenv(HooksCgroupEnv, bad)
		if got, err := HooksCgroupFromEnv(0); err == nil {
			t.Errorf("%s=%q read as %q", HooksCgroupEnv, bad, got)
		}
	}
	t.Setenv(HooksCgroupEnv, "")
	if got, err := HooksCgroupFromEnv(0); got != nil || err != nil {
		t.Errorf("empty: %q, %v", got, err)
	}
	if got, err := HooksCgroupFromEnv(3); got != nil || err != nil {
		t.Errorf("unset: %q, %v", got, err)
	}
}
