package cgroup

import "testing"

func TestCPUListRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"0", "0"}, {"0-3", "0-3"}, {"0,2-4,7", "0,2-4,7"}, {"3,1,2", "1-3"}, {"0-1,1-2\n", "0-2"},
	} {
		set, err := ParseCPUs(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := FormatCPUs(set); got != tc.out {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.out)
		}
	}
	for _, bad := range []string{"a", "3-1", "1-x"} {
		if _, err := ParseCPUs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
