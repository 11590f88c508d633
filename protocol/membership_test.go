package protocol

import (
	"testing"
	"time"
)

// lmsCfg: three nodes and a witness, last_man_standing on.
func lmsCfg(self string) Config {
	return Config{Cluster: "t", Self: self, Nodes: []string{"a", "b", "c"}, Locators: []string{"a", "b", "c", "w"},
		TokenInterval: 20 * ms, TokenTimeout: 150 * ms, Lease: testLease, DriftMargin: testDrift, LastManStanding: time.Second}
}

func newLMSLocator(t *testing.T, self string, st LocatorState, lost bool) *Locator {
	t.Helper()
	l, err := NewLocator(lmsCfg(self), st, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lost {
		l.AssumeLostState()
	}
	rd := l.Ready()
	l.Persisted(*rd.State)
	return l
}

func lmsClaim(from string, epoch, seq uint64, conf, next Membership) Message {
	m := claimMsg(from, epoch, seq)
	m.CheckIn.Conf, m.CheckIn.Next = conf, next
	return m
}

func lmsCheckIn(from string, seq uint64, conf, next Membership) Message {
	m := lmsClaim(from, 0, seq, conf, next)
	m.CheckIn.Claim = false
	return m
}

var (
	all4   = Membership{}                            // a,b,c,w, version 0
	noW    = Membership{Version: 1, Members: 0b0111} // a,b,c
	noWC   = Membership{Version: 2, Members: 0b0011} // a,b
	withW2 = Membership{Version: 2, Members: 0b1111} // a,b,c,w again
)

// A locator grants only in the membership it adopted (or one proposing
// it), and says which it has; a membership two versions away is refused.
func TestLocatorGrantsOnlyInItsMembership(t *testing.T) {
	l := newLMSLocator(t, "b", LocatorState{Conf: noW}, false)
	if a, _ := ask(t, l, 2*time.Second, lmsClaim("a", 1, 1, all4, Membership{})); a.Granted || a.Conf != noW {
		t.Errorf("a claim in v0 granted=%v conf=%+v, want refused and v1", a.Granted, a.Conf)
	}
	if a, _ := ask(t, l, 2*time.Second, lmsClaim("a", 2, 2, all4, noW)); !a.Granted {
		t.Errorf("a claim in v0 proposing v1 (this locator's) refused")
	}
	if a, _ := ask(t, l, 2*time.Second, lmsClaim("a", 2, 3, noWC, Membership{})); a.Granted {
		t.Errorf("a renewal in v2 granted by a locator at v1")
	}
	if a, _ := ask(t, l, 2*time.Second, lmsClaim("a", 2, 4, noW, Membership{})); !a.Granted {
		t.Errorf("a renewal in v1 refused")
	}
}

// A change is adopted, persisted before the answer, only from the holder
// the locator protects, in a renewal it grants; a candidate's claim
// proposing one is granted (in the old membership) but not adopted.
func TestLocatorAdoptsOnlyFromItsHolder(t *testing.T) {
	l := newLMSLocator(t, "b", LocatorState{}, false)
	if a, _ := ask(t, l, 2*time.Second, lmsClaim("a", 1, 1, all4, noW)); !a.Granted || a.Conf != all4 {
		t.Fatalf("a's first claim: granted=%v conf=%+v, want granted in v0 (not adopted from a claim that made a the holder)", a.Granted, a.Conf)
	}
	a, wrote := ask(t, l, 2*time.Second+5*ms, lmsClaim("a", 1, 2, all4, noW))
	if !a.Granted || a.Conf != noW || !wrote || l.st.Conf != noW {
		t.Fatalf("the holder's renewal proposing v1: granted=%v conf=%+v persisted=%v, want adopted", a.Granted, a.Conf, wrote)
	}
	// Another node's claim proposing a change is not adopted.
	l2 := newLMSLocator(t, "b", LocatorState{Conf: noW}, false)
	ask(t, l2, 2*time.Second, lmsClaim("a", 1, 1, noW, Membership{}))
	if a, _ := ask(t, l2, 2*time.Second+5*ms, lmsClaim("c", 5, 1, noW, noWC)); a.Granted || a.Conf != noW {
		t.Errorf("c's claim while a holds: granted=%v conf=%+v, want refused, v1 kept", a.Granted, a.Conf)
	}
	// A member does not take a change from a claim as a locator left
	// out would take its adding back: only from its holder.
	l3 := newLMSLocator(t, "b", LocatorState{}, false)
	ask(t, l3, 2*time.Second, lmsClaim("a", 1, 1, all4, Membership{}))
	if a, _ := ask(t, l3, 2*time.Second+5*ms, lmsClaim("c", 5, 1, all4, noW)); a.Conf != all4 {
		t.Errorf("a member took c's change from a claim: conf %+v", a.Conf)
	}
	// Once the lease lapsed, c's claim is granted, in v0, and c is the
	// holder only from then: its next renewal may carry the change.
	free := 2*time.Second + testLease + testDrift + 10*ms
	if a, _ := ask(t, l3, free, lmsClaim("c", 5, 2, all4, noW)); !a.Granted || a.Conf != all4 {
		t.Errorf("c's claim after a's lease: granted=%v conf=%+v, want granted in v0", a.Granted, a.Conf)
	}
	if a, _ := ask(t, l3, free+ms, lmsClaim("c", 5, 3, all4, noW)); !a.Granted || a.Conf != noW {
		t.Errorf("c's renewal as the holder: granted=%v conf=%+v, want the change adopted", a.Granted, a.Conf)
	}
}

// A locator outside the membership adopts a change that adds it back from
// any claim; one that lost its state (unknown) too, and grants nothing
// before. Without last_man_standing a lost state keeps the configured
// membership.
func TestLocatorAddedBack(t *testing.T) {
	w := newLMSLocator(t, "w", LocatorState{Epoch: 1, Holder: "a"}, true)
	if w.st.Conf != (Membership{Unknown: true}) {
		t.Fatalf("lost state under last_man_standing: conf %+v, want unknown", w.st.Conf)
	}
	later := time.Second + testLease + testDrift + ms
	if a, _ := ask(t, w, later, lmsClaim("a", 2, 1, noW, Membership{})); a.Granted || !a.Conf.Unknown {
		t.Errorf("an unknown locator granted, or did not say it is unknown: %+v", a)
	}
	if a, _ := ask(t, w, later, lmsClaim("a", 2, 2, noW, withW2)); !a.Granted || a.Conf != withW2 {
		t.Errorf("the add-back: granted=%v conf=%+v, want adopted and granted", a.Granted, a.Conf)
	}
	// A change that does not add it teaches it nothing.
	w2 := newLMSLocator(t, "w", LocatorState{}, true)
	if a, _ := ask(t, w2, later, lmsClaim("a", 2, 1, noW, noWC)); a.Granted || !a.Conf.Unknown {
		t.Errorf("a change without w: %+v", a)
	}
	cfg := lmsCfg("w")
	cfg.LastManStanding = 0
	off, err := NewLocator(cfg, LocatorState{}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	off.AssumeLostState()
	if off.st.Conf != (Membership{}) {
		t.Errorf("without last_man_standing a lost state gave conf %+v", off.st.Conf)
	}
}

// A locator that lost its state takes the membership every node checks in
// from, lately, with no change under way: on a new cluster the configured
// one; one node that knows another membership (or a change), or one not
// heard from lately, is enough to keep it unknown.
func TestLocatorFirstStart(t *testing.T) {
	l := newLMSLocator(t, "w", LocatorState{}, true)
	for i, n := range []string{"a", "b"} {
		ask(t, l, 2*time.Second, lmsCheckIn(n, uint64(i+1), all4, Membership{}))
	}
	if !l.st.Conf.Unknown {
		t.Fatalf("configured membership taken before c checked in")
	}
	ask(t, l, 2*time.Second, lmsCheckIn("c", 1, all4, Membership{}))
	if l.st.Conf != (Membership{}) {
		t.Errorf("every node checked in from v0: conf %+v, want the configured one", l.st.Conf)
	}
	l2 := newLMSLocator(t, "w", LocatorState{}, true)
	ask(t, l2, 2*time.Second, lmsCheckIn("a", 1, all4, Membership{}))
	ask(t, l2, 2*time.Second, lmsCheckIn("b", 1, all4, noW)) // b proposed, or learnt, a change
	ask(t, l2, 2*time.Second, lmsCheckIn("c", 1, all4, Membership{}))
	if !l2.st.Conf.Unknown {
		t.Errorf("a node knowing a change, yet conf %+v", l2.st.Conf)
	}
	// After changes: every node checks in from v1, lately: v1 it is. A
	// node heard from longer than a token timeout ago does not count.
	l3 := newLMSLocator(t, "w", LocatorState{}, true)
	ask(t, l3, 2*time.Second, lmsCheckIn("a", 1, noW, Membership{}))
	ask(t, l3, 2*time.Second, lmsCheckIn("b", 1, noW, Membership{}))
	ask(t, l3, 2*time.Second+200*ms, lmsCheckIn("c", 1, noW, Membership{}))
	if !l3.st.Conf.Unknown {
		t.Errorf("learnt %+v from check-ins 200 ms apart (token timeout 150 ms)", l3.st.Conf)
	}
	ask(t, l3, 2*time.Second+210*ms, lmsCheckIn("a", 2, noW, Membership{}))
	ask(t, l3, 2*time.Second+220*ms, lmsCheckIn("b", 2, noW, Membership{}))
	if l3.st.Conf != noW {
		t.Errorf("every node checking in from v1, lately: conf %+v, want v1", l3.st.Conf)
	}
}

// The membership's arithmetic: canonical form, members, a majority, and
// the one-member changes a holder may propose.
func TestMembershipArithmetic(t *testing.T) {
	if (Membership{Members: 0b1111}).canon(4) != (Membership{}) {
		t.Errorf("v0 with every locator is not the zero value")
	}
	if q := noW.quorum(4); q != 2 {
		t.Errorf("quorum of 3 members: %d", q)
	}
	if q := (Membership{}).quorum(5); q != 3 {
		t.Errorf("quorum of the configured 5: %d", q)
	}
	for _, c := range []struct {
		child, parent Membership
		want          bool
	}{
		{noW, all4, true},
		{withW2, noW, true},
		{noWC, noW, true},
		{noWC, all4, false}, // two versions, two members
		{Membership{Version: 1, Members: 0b0011}, all4, false}, // two members at once
		{Membership{Unknown: true}, all4, false},
	} {
		if got := c.child.childOf(c.parent, 4); got != c.want {
			t.Errorf("%s childOf %s = %v", c.child.Format([]string{"a", "b", "c", "w"}), c.parent.Format([]string{"a", "b", "c", "w"}), got)
		}
	}
	if s := noW.Format([]string{"a", "b", "c", "w"}); s != "v1{a,b,c}" {
		t.Errorf("Format %q", s)
	}
}

// A node learns a membership one of whose members lost its state: the
// unknown member counts for it, as it holds no membership back in the
// commit either. Here v2 = {b, w} removed a (after c earlier), b's
// locator lost its state, a's (removed) and w adopted v2, and c's
// (removed before) is still at v1. Counted against v2, b left it one
// report short of a majority: the nodes never agreed on a membership, so
// b's locator never learnt one (rule 6) and, with every host back, no
// node could hold the role (the simulator, seed 17154 of -lms).
func TestNodeLearnsAMembershipWithAnUnknownMember(t *testing.T) {
	v1 := Membership{Version: 1, Members: 0b1011} // a, b, w
	v2 := Membership{Version: 2, Members: 0b1010} // b, w
	h := newHarnessCfg(t, lmsCfg("c"), NodeState{})
	h.ready()
	for _, a := range []struct {
		loc  string
		conf Membership
	}{{"a", v2}, {"b", Membership{Unknown: true}}, {"c", v1}, {"w", v2}} {
		h.seq++
		if err := h.n.Step(h.now, Message{Type: MsgAck, From: a.loc, ClusterID: ClusterID("t"), Incarnation: 1, Seq: h.seq, ToIncarnation: h.n.st.Incarnation,
			Ack: Ack{Round: 99, Epoch: 14, Holder: "a", Conf: a.conf}}); err != nil {
			t.Fatal(err)
		}
		h.ready()
	}
	if st := h.n.st; st.Conf != v2 || st.Next != (Membership{}) {
		t.Fatalf("node c learnt %s, want %s with no change under way", h.n.fmtConf(), v2.Format(h.n.cfg.Locators))
	}
}
