package supervise

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// lmsWindow is cluster.last_man_standing in TestLastManStanding: above
// the minimum for testTiming (2 × (400 + 600 + 50) ms = 2.1 s).
const lmsWindow = 3 * time.Second

// membersOf is the membership node id's node manager counts in now, with
// its version ("" and 0 without a report).
func (s *nodeSet) membersOf(id string) (string, uint64) {
	r := s.nodes[id].status().NodeManager
	if r == nil || r.Membership == nil {
		return "", 0
	}
	return strings.Join(r.Membership.Members, ","), r.Membership.Version
}

// last_man_standing on four nodes (four locators, quorum 3). A standby's
// host dies: once it has been silent for the window, the active leaves it
// out of the membership (3 members, quorum 2), `vigil status` says so.
// Then the active's host dies too: two of the four locators are left,
// which without the option is no quorum, and the floating IP moves to one
// of the two survivors. The dead hosts come back and, each after
// answering for the window, are added back one at a time, until the
// membership is all four again. At no sampled moment do two live hosts
// hold the address.
func TestLastManStanding(t *testing.T) {
	needRoot(t)
	ids := []string{"a", "b", "c", "d"}
	s := newNodeSetWith(t, "lms", ids, func(string) string { return vipsYAML(testVIP) }, "  last_man_standing: "+lmsWindow.String()+"\n")
	first := s.waitHolder("one host holds the VIP", "", 30*time.Second)
	s.waitKnown(first)
	if m, v := s.membersOf(first); m != "a,b,c,d" || v != 0 {
		t.Fatalf("membership %q v%d at start, want a,b,c,d v0", m, v)
	}

	// A standby's host dies: after the window, three members.
	victim := ""
	for _, id := range ids {
		if id != first {
			victim = id
			break
		}
	}
	s.kill(victim)
	killedAt := time.Now()
	want := strings.Join(slices.DeleteFunc(slices.Clone(ids), func(x string) bool { return x == victim }), ",")
	s.nodes[first].waitFor("the membership without "+victim, lmsWindow+20*time.Second, func() bool {
		m, _ := s.membersOf(first)
		return m == want
	})
	// The window counts from its last answer, a moment before the kill
	// returned: a generous margin, for the check is that it waited at all.
	if d := time.Since(killedAt); d < lmsWindow-500*time.Millisecond {
		t.Errorf("the membership shrank %v after %s died, before the window (%v)", d, victim, lmsWindow)
	}
	st := s.nodes[first].status()
	if !slices.ContainsFunc(st.Warnings, func(w supervisor.Warning) bool {
		return w.Kind == "membership_shrunk" && strings.Contains(w.Message, victim+" left out")
	}) {
		t.Errorf("no membership_shrunk warning naming %s: %+v", victim, st.Warnings)
	}
	if out, _ := s.nodes[first].vigil("status", "--socket", s.nodes[first].socket); !strings.Contains(out, "membership v1 "+want) {
		t.Errorf("vigil status does not show the membership v1 %s:\n%s", want, out)
	}
	if !strings.Contains(s.nodes[first].log.String(), `"event":"membership"`) {
		t.Errorf("no event=membership line on the active")
	}

	// Every survivor knows the membership before the active dies (a
	// node that does not yet would claim in the old one and wait).
	for _, id := range ids {
		if id == victim || id == first {
			continue
		}
		s.nodes[id].waitFor(id+" knows the membership", 10*time.Second, func() bool {
			m, _ := s.membersOf(id)
			return m == want
		})
	}

	// The active's host dies: 2 of the 4 locators are left, 2 of the 3
	// members, and the VIP moves.
	s.kill(first)
	second := s.waitHolder("the VIP moved after "+first+" died, with two locators of four", "", 20*time.Second)
	t.Logf("%s died, then the active %s: the VIP moved to %s with the membership %s", victim, first, second, want)

	// Both come back: victim is added back after answering for the
	// window (first, if it was out of the membership by then, too).
	s.revive(victim)
	s.revive(first)
	s.nodes[second].waitFor("the membership is every locator again", 3*lmsWindow+30*time.Second, func() bool {
		m, _ := s.membersOf(second)
		return m == "a,b,c,d"
	})
	_, v := s.membersOf(second)
	t.Logf("membership a,b,c,d again at version %d", v)
	if v < 2 {
		// Removed and added back: two changes at least (more if the
		// dead active was left out before it came back).
		t.Errorf("membership version %d, want at least 2 (%s removed, then added back)", v, victim)
	}
	s.checkSafe(victim, first)
}
