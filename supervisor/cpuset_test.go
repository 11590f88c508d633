package supervisor

import "testing"

func TestCPUListRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"0", "0"}, {"0-3", "0-3"}, {"0,2-4,7", "0,2-4,7"}, {"3,1,2", "1-3"}, {"0-1,1-2\n", "0-2"},
	} {
		set, err := expandCPUs(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := formatCPUs(set, 16); got != tc.out {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.out)
		}
	}
	for _, bad := range []string{"a", "3-1", "1-x"} {
		if _, err := expandCPUs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAppsCPUsExcludesReserved(t *testing.T) {
	got, err := appsCPUs("0")
	if err != nil {
		t.Skipf("host has one cpu or no sysfs: %v", err)
	}
	set, _ := expandCPUs(got)
	if set[0] || len(set) == 0 {
		t.Fatalf("apps cpus %q include the reserved cpu 0 or are empty", got)
	}
}
