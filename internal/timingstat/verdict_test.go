package timingstat

import (
	"strings"
	"testing"
	"time"
)

const ms1 = time.Millisecond

func TestJudge(t *testing.T) {
	newDefaults := Timing{TokenInterval: 10 * ms1, TokenTimeout: 50 * ms1, Lease: 60 * ms1, DriftMargin: 15 * ms1}
	for _, tc := range []struct {
		name     string
		t        Timing
		m        Measured
		ok       bool
		failing  []string // fields whose rule fails
		shortest Timing
	}{
		{
			// lease 26 = 20 + 2(2+1); token_timeout 30 = max(30, 20 + 2(2+3));
			// drift margin: the reaction 2×2 ms (a tick at the lease's
			// end) is sooner than the kernel lease's ε 6 ms (2 ms + a 4
			// ms jiffy); the shortest D: (0.0202·26 + 4)/(1 − 0.0202) =
			// 4.62 → 5 ms.
			name: "enough margin",
			t:    newDefaults,
			m: Measured{Late: 2 * ms1, RTT: []time.Duration{ms1 / 2, ms1, 3 * ms1}, Nodes: 2, Quorum: 2,
				KernelLease: true, Jiffy: 4 * ms1},
			ok:       true,
			shortest: Timing{10 * ms1, 30 * ms1, 26 * ms1, 5 * ms1},
		},
		{
			// 20 ms of lateness: lease 62 = 20 + 2(20+1) > 60; token
			// timeout 62 > 50; no kernel lease, so the drift margin
			// must cover 40 ms of reaction: (0.0202·62 + 40)/(1 − 0.0202)
			// = 42.1 → 43 ms.
			name:     "too little margin",
			t:        newDefaults,
			m:        Measured{Late: 20 * ms1, RTT: []time.Duration{ms1, ms1}, Nodes: 2, Quorum: 2},
			failing:  []string{"lease", "token_timeout", "drift_margin"},
			shortest: Timing{10 * ms1, 62 * ms1, 62 * ms1, 43 * ms1},
		},
		{
			// Only the drift margin falls short: 10 ms late without a
			// kernel lease needs 20 ms of reaction plus the drift
			// (4.4 ms at L=200, D=20; 1.3 ms at the shortest L=62:
			// (0.0202·62 + 20)/(1 − 0.0202) = 21.7 → 22 ms).
			name:     "drift margin alone too short",
			t:        Timing{TokenInterval: 20 * ms1, TokenTimeout: 150 * ms1, Lease: 200 * ms1, DriftMargin: 20 * ms1},
			m:        Measured{Late: 10 * ms1, RTT: []time.Duration{ms1, ms1, ms1}, Nodes: 2, Quorum: 2},
			failing:  []string{"drift_margin"},
			shortest: Timing{20 * ms1, 62 * ms1, 62 * ms1, 22 * ms1},
		},
		{
			// The reaction (60 ms) makes D ≥ the lease the
			// renewals need (63 ms): the lease grows to D + 1 ms.
			name:     "drift margin lengthens the lease",
			t:        Timing{TokenInterval: ms1, TokenTimeout: 100 * ms1, Lease: 200 * ms1, DriftMargin: 100 * ms1},
			m:        Measured{Late: 30 * ms1, RTT: []time.Duration{100 * time.Microsecond}, Nodes: 1, Quorum: 1},
			ok:       true,
			shortest: Timing{ms1, 62 * ms1, 64 * ms1, 63 * ms1},
		},
		{
			// The lease waits for the second fastest of three locators
			// (2 ms), the token timeout for the slowest (40 ms); the
			// reaction 2 ms is sooner than ε (6 ms):
			// (0.0202·26 + 2)/(1 − 0.0202) = 2.6 → 3 ms.
			name:     "quorum round trip, not the slowest",
			t:        newDefaults,
			m:        Measured{Late: ms1, RTT: []time.Duration{40 * ms1, ms1, 2 * ms1}, Nodes: 2, Quorum: 2, KernelLease: true, Jiffy: 4 * ms1},
			failing:  []string{"token_timeout"},
			shortest: Timing{10 * ms1, 102 * ms1, 26 * ms1, 3 * ms1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(tc.t, tc.m)
			if v.Unknown {
				t.Fatalf("unknown: %s", v.Reason)
			}
			var failing []string
			for _, r := range v.Rules {
				if !r.OK {
					failing = append(failing, r.Field)
				}
				if r.OK != (r.Have >= r.Need) {
					t.Errorf("%s: have %v need %v but OK=%v", r.Field, r.Have, r.Need, r.OK)
				}
			}
			if v.OK != tc.ok || strings.Join(failing, ",") != strings.Join(tc.failing, ",") {
				t.Errorf("OK=%v failing %v, want OK=%v failing %v; rules %+v", v.OK, failing, tc.ok, tc.failing, v.Rules)
			}
			if v.Shortest != tc.shortest {
				t.Errorf("shortest %s\n          want %s", v.Shortest.YAML(), tc.shortest.YAML())
			}
			// The shortest timing passes its own judgement.
			if again := Judge(v.Shortest, tc.m); !again.OK {
				t.Errorf("the shortest timing fails its own rules: %+v", again.Rules)
			}
		})
	}
}

func TestJudgeWithoutQuorum(t *testing.T) {
	v := Judge(Timing{10 * ms1, 50 * ms1, 60 * ms1, 15 * ms1},
		Measured{RTT: []time.Duration{-1, ms1, -1}, Nodes: 2, Quorum: 2})
	if !v.Unknown || v.OK || !strings.Contains(v.Reason, "only 1 of 3 locators answered") {
		t.Errorf("got %+v, want unknown: 1 of 3 answered", v)
	}
}

func TestTimingYAML(t *testing.T) {
	got := Timing{10 * ms1, 50 * ms1, 60 * ms1, 15 * ms1}.YAML()
	if want := "timing: {token_interval: 10ms, token_timeout: 50ms, lease: 60ms, drift_margin: 15ms}"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
}
