package protocol

import (
	"testing"
	"time"
)

// failbackHarness is node b of testCfg, active, with failback after fb:
// node a, earlier in Nodes, is the preferred one.
func failbackHarness(t *testing.T, fb time.Duration) *nodeHarness {
	t.Helper()
	cfg := testCfg("b")
	cfg.Failback = fb
	h := newHarnessCfg(t, cfg, NodeState{})
	h.ready()
	h.becomeActive(time.Millisecond)
	return h
}

// run advances the active b by d in steps of a token interval: each step
// the token comes back from a showing a as given, and every renewal is
// granted by a and w. It returns the first BecameStandby, if any, and the
// Ready that carried it.
func (h *nodeHarness) runWithA(d time.Duration, a NodeHealth) (*BecameStandby, Ready) {
	h.t.Helper()
	step := testCfg("b").TokenInterval
	for end := h.now + d; h.now < end; {
		h.now += step
		h.seq++
		tok := Token{Epoch: h.n.Status().Epoch, Seq: h.seq, Active: "b",
			Nodes: []NodeHealth{a, {ID: "b", Healthy: true, InRing: true}}}
		if err := h.n.Step(h.now, Message{Type: MsgToken, From: "a", ClusterID: ClusterID("t"), Incarnation: 1, Seq: h.seq,
			ToIncarnation: h.n.st.Incarnation, Token: tok}); err != nil {
			h.t.Fatal(err)
		}
		h.n.Tick(h.now)
		rd := h.ready()
		for _, e := range rd.Events {
			if bs, ok := e.(BecameStandby); ok {
				return &bs, rd
			}
		}
		claims, _ := checkIns(rd)
		for _, c := range claims {
			if c.CheckIn.Epoch == h.n.Status().Epoch {
				h.ack("a", c.CheckIn.Round, true, c.CheckIn.Epoch, "b", 0)
				h.ack("w", c.CheckIn.Round, true, c.CheckIn.Epoch, "b", 0)
				break
			}
		}
		if !h.n.ActiveAt(h.now) {
			h.t.Fatalf("b lost its lease at %v while renewing", h.now)
		}
	}
	return nil, Ready{}
}

var fitA = NodeHealth{ID: "a", Healthy: true, InRing: true}

// With failback, the active hands the role to the more preferred node once
// the token has shown it fit for the failback time, and not before; the
// handover is planned and goes to that node.
func TestNodeFailsBackToPreferredNode(t *testing.T) {
	const fb = 300 * ms
	h := failbackHarness(t, fb)
	start := h.now
	if bs, _ := h.runWithA(fb-3*testCfg("b").TokenInterval, fitA); bs != nil {
		t.Fatalf("handed over after %v, before failback %v: %+v", h.now-start, fb, *bs)
	}
	bs, rd := h.runWithA(fb, fitA)
	if bs == nil {
		t.Fatalf("still active %v after a became fit, failback %v", h.now-start, fb)
	}
	if !bs.Planned || bs.To != "a" || bs.Reason != `handover to "a": failback` {
		t.Fatalf("failback: %+v, want a planned handover to a", *bs)
	}
	if waited := h.now - start; waited < fb {
		t.Fatalf("handed over %v after a became fit, want at least %v", waited, fb)
	}
	transfer := false
	for _, e := range rd.Messages {
		transfer = transfer || (e.Msg.Type == MsgTransfer && e.To == "a")
	}
	if !transfer {
		t.Fatalf("failback sent no transfer to a: %v", rd.Messages)
	}
}

// A token that shows the preferred node unhealthy, in maintenance or out of
// the ring starts its wait over.
func TestNodeFailbackWaitRestartsOnABreak(t *testing.T) {
	const fb = 300 * ms
	for _, brk := range []NodeHealth{
		{ID: "a", Healthy: false, InRing: true},
		{ID: "a", Healthy: true, InRing: true, Maintenance: true},
		{ID: "a", Healthy: true, InRing: false},
	} {
		h := failbackHarness(t, fb)
		if bs, _ := h.runWithA(fb-60*ms, fitA); bs != nil {
			t.Fatalf("handed over early: %+v", *bs)
		}
		if bs, _ := h.runWithA(testCfg("b").TokenInterval, brk); bs != nil {
			t.Fatalf("handed over to %+v: %+v", brk, *bs)
		}
		resumed := h.now
		if bs, _ := h.runWithA(fb-3*testCfg("b").TokenInterval, fitA); bs != nil {
			t.Fatalf("after a break (%+v): handed over %v after a was fit again, want %v", brk, h.now-resumed, fb)
		}
		if bs, _ := h.runWithA(fb, fitA); bs == nil || bs.To != "a" {
			t.Fatalf("after a break (%+v): no failback once a was fit for %v", brk, fb)
		}
	}
}

// Without failback (the default) the role stays where it is; and the most
// preferred node never hands over to a less preferred one for failback.
func TestNodeNoFailback(t *testing.T) {
	h := failbackHarness(t, 0)
	if bs, _ := h.runWithA(2*time.Second, fitA); bs != nil {
		t.Fatalf("failback off: handed over: %+v", *bs)
	}

	cfg := testCfg("a")
	cfg.Failback = testCfg("a").TokenTimeout
	a := newHarnessCfg(t, cfg, NodeState{})
	a.ready()
	a.becomeActive(time.Millisecond)
	for i := 0; i < 100; i++ {
		a.now += cfg.TokenInterval
		a.seq++
		if err := a.n.Step(a.now, Message{Type: MsgToken, From: "b", ClusterID: ClusterID("t"), Incarnation: 1, Seq: a.seq,
			ToIncarnation: a.n.st.Incarnation, Token: Token{Epoch: a.n.Status().Epoch, Seq: a.seq, Active: "a",
				Nodes: []NodeHealth{{ID: "a", Healthy: true, InRing: true}, {ID: "b", Healthy: true, InRing: true}}}}); err != nil {
			t.Fatal(err)
		}
		rd := a.ready()
		if hasEvent(rd, "BecameStandby") {
			t.Fatalf("the most preferred node handed over: %v", rd.Events)
		}
		claims, _ := checkIns(rd)
		for _, c := range claims {
			a.ack("b", c.CheckIn.Round, true, c.CheckIn.Epoch, "a", 0)
			a.ack("w", c.CheckIn.Round, true, c.CheckIn.Epoch, "a", 0)
			break
		}
	}
}

func TestConfigFailbackRule(t *testing.T) {
	cfg := testCfg("a")
	for _, c := range []struct {
		fb time.Duration
		ok bool
	}{{0, true}, {cfg.TokenTimeout, true}, {time.Minute, true}, {-time.Second, false}, {cfg.TokenTimeout - 1, false}} {
		cfg.Failback = c.fb
		err := cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("failback %v: %v, want ok=%v", c.fb, err, c.ok)
		}
	}
}

// A node that becomes active by a switchover waits the failback time from
// then, even if the preferred node had been fit for longer: the switchover
// is not undone at once.
func TestNodeFailbackWaitsFromBecomingActive(t *testing.T) {
	const fb = 300 * ms
	cfg := testCfg("b")
	cfg.Failback = fb
	h := newHarnessCfg(t, cfg, NodeState{})
	h.ready()
	// b, a standby, sees a active and fit for twice the failback time.
	for end := h.now + 2*fb; h.now < end; {
		h.now += cfg.TokenInterval
		h.seq++
		if err := h.n.Step(h.now, Message{Type: MsgToken, From: "a", ClusterID: ClusterID("t"), Incarnation: 1, Seq: h.seq, ToIncarnation: h.n.st.Incarnation,
			Token: Token{Epoch: 1, Seq: h.seq, Active: "a", Nodes: []NodeHealth{fitA, {ID: "b", Healthy: true, InRing: true}}}}); err != nil {
			t.Fatal(err)
		}
		h.ready()
	}
	// a switches over to b.
	h.seq++
	if err := h.n.Step(h.now, Message{Type: MsgTransfer, From: "a", ClusterID: ClusterID("t"), Incarnation: 1, Seq: h.seq, ToIncarnation: h.n.st.Incarnation,
		Transfer: Transfer{Epoch: 1, To: "b"}}); err != nil {
		t.Fatal(err)
	}
	var claims []Message
	for i := 0; i < 20 && len(claims) == 0; i++ {
		claims, _ = checkIns(h.tick(time.Millisecond))
	}
	if len(claims) == 0 {
		t.Fatal("b does not claim after the transfer")
	}
	c := claims[0].CheckIn
	h.ack("a", c.Round, true, c.Epoch, "b", 0)
	if rd := h.ack("w", c.Round, true, c.Epoch, "b", 0); !hasEvent(rd, "BecameActive") {
		t.Fatalf("b not active after a quorum of grants: %v", rd.Events)
	}
	active := h.now
	if bs, _ := h.runWithA(fb-3*cfg.TokenInterval, fitA); bs != nil {
		t.Fatalf("b handed back %v after the switchover made it active, before the failback time %v: %+v", h.now-active, fb, *bs)
	}
	if bs, _ := h.runWithA(fb, fitA); bs == nil || bs.To != "a" {
		t.Fatalf("no failback to a %v after b became active", h.now-active)
	}
}
