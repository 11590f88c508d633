package supervisor

import (
	"testing"

	"github.com/vigil-project/vigil/cgroup"
)

func TestAppsCPUsExcludesReserved(t *testing.T) {
	got, err := appsCPUs("0")
	if err != nil {
		t.Skipf("host has one cpu or no sysfs: %v", err)
	}
	set, _ := cgroup.ParseCPUs(got)
	if set[0] || len(set) == 0 {
		t.Fatalf("apps cpus %q include the reserved cpu 0 or are empty", got)
	}
}
