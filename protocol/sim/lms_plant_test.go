package sim

import (
	"testing"
)

// runScript runs scenario commands and returns the violations found.
func runScript(t *testing.T, lines []string) []string {
	t.Helper()
	sc := &scenario{t: t}
	for _, l := range lines {
		if _, err := sc.exec(l); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	return sc.w.res.Violations
}

// The membership rules of last_man_standing, each shown necessary: the
// same script is safe with the core as it is, and two nodes hold the role
// at once with the rule planted away. The random schedules rarely cut
// exactly the links these need, so the scripts do.
func TestLastManStandingRulesAreNeeded(t *testing.T) {
	for _, tc := range []struct {
		name, plant string
		script      []string
	}{
		{
			// Locators that grant in any membership: after e and then d
			// were removed ({a,b,c}, quorum 2), e comes back with the
			// membership it left with (all five, quorum 3), cut off from
			// a and b; c, cut off from a, lets a's lease lapse. a keeps
			// 2 of {a,b,c}; e gathers c, d and e, 3 of five.
			name: "any-conf", plant: "any-conf",
			script: []string{
				"await one-active a within 400ms",
				"run 200ms",
				"crash e", "crash-locator e",
				"await conf a v1{a,b,c,d} within 800ms",
				"run 100ms",
				"crash d", "crash-locator d",
				"await conf a v2{a,b,c} within 800ms",
				"run 100ms",
				"partition a c", "partition a d", "partition a e", "partition b d", "partition b e",
				"restart-locator d", "restart-locator e", "restart e",
				"run 800ms",
			},
		},
		{
			// A change taken as complete once a majority adopted it: d
			// misses the removal of e (a's datagrams to d are lost from
			// just before it), c misses the next one (the removal of
			// d), and e comes back cut off from a and b. a holds the
			// role in {a,b,c} with b; e counts in the membership it left
			// with, five, and c (one change behind), d (two) and e
			// itself are three. With the rule, the first change waits
			// for d and no second one is made; a, left with 2 of 5 once
			// c is cut off too, loses its lease before e is granted.
			name: "early-commit", plant: "early-commit",
			script: []string{
				"await one-active a within 400ms",
				"run 200ms",
				"crash e", "crash-locator e",
				"run 385ms",
				"partition a->d",
				"run 400ms",
				"partition a->c",
				"run 100ms",
				"partition a e", "partition b e",
				"restart-locator e", "restart e",
				"run 800ms",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := "cluster nodes=a,b,c,d,e locators=a,b,c,d,e last_man_standing=400ms"
			if v := runScript(t, append([]string{head}, tc.script...)); len(v) > 0 {
				t.Fatalf("without the planted bug: %v", v)
			}
			v := runScript(t, append([]string{head + " plant=" + tc.plant, "allow violations"}, tc.script...))
			if len(v) == 0 {
				t.Fatalf("with %s planted: no violation", tc.plant)
			}
			t.Logf("with %s planted: %s", tc.plant, v[0])
		})
	}
}
