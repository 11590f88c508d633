package protocol

import "testing"

// The measured defect: a locator whose disk is full granted b epoch 3 in
// memory, could not write it, and answered the grant on the next Ready
// (its State was gone) while the disk still said epoch 1, holder a. A
// failed write must leave the state to be written in every Ready until the
// caller reports it persisted.
func TestLocatorStateStaysDirtyAfterFailedWrite(t *testing.T) {
	l := newTestLocator(t, LocatorState{}, 1000*ms)
	if _, persist := ask(t, l, 1000*ms, claimMsg("a", 1, 1)); !persist {
		t.Fatal("grant of epoch 1 not persisted")
	}
	later := 1000*ms + l.cfg.Lease + l.cfg.DriftMargin + ms
	if err := l.Step(later, addressed(l, claimMsg("b", 3, 2))); err != nil {
		t.Fatal(err)
	}
	rd := l.Ready()
	if rd.State == nil || rd.State.Holder != "b" || rd.State.Epoch != 3 {
		t.Fatalf("grant to b not offered for persisting: %+v", rd.State)
	}
	// The write fails: the caller drops the messages and does not call
	// Persisted. b asks again.
	if err := l.Step(later+20*ms, addressed(l, claimMsg("b", 3, 3))); err != nil {
		t.Fatal(err)
	}
	rd = l.Ready()
	if rd.State == nil || *rd.State != (LocatorState{Incarnation: 1, Epoch: 3, Holder: "b"}) {
		t.Fatalf("after a failed write the grant must still be offered for persisting, got %+v", rd.State)
	}
	if len(rd.Messages) != 1 || !rd.Messages[0].Msg.Ack.Granted {
		t.Fatalf("want the renewed answer held for sending, got %+v", rd.Messages)
	}
	// Reporting an older state persisted does not clear a newer one.
	l.Persisted(LocatorState{Incarnation: 1, Epoch: 1, Holder: "a"})
	if rd = l.Ready(); rd.State == nil {
		t.Fatal("persisting an older state cleared the newer one")
	}
	l.Persisted(*rd.State)
	if rd = l.Ready(); rd.State != nil {
		t.Fatalf("state offered again after it was persisted: %+v", rd.State)
	}
}

// addressed stamps m with l's incarnation, as a node that has heard from
// the locator does (a datagram for an earlier incarnation is stale).
func addressed(l *Locator, m Message) Message {
	m.ToIncarnation = l.st.Incarnation
	return m
}

// A node whose claim cannot be written keeps offering the state, sends
// nothing (the harness drops the messages of a failed write, as the node
// manager does) and claims once the write succeeds, never with an epoch
// that is not on disk (the harness checks).
func TestNodeStateStaysDirtyAfterFailedWrite(t *testing.T) {
	h := newHarness(t, "a", NodeState{Incarnation: 2, MaxEpoch: 5})
	h.ready()
	var probes []Message
	for i := 0; i < 40 && len(probes) == 0; i++ {
		_, probes = checkIns(h.tick(5 * ms))
	}
	if len(probes) != 3 {
		t.Fatal("no probe after the token timeout")
	}
	h.failWrites = true
	claimed := false
	for _, loc := range []string{"a", "b", "w"} {
		rd := h.ack(loc, probes[0].CheckIn.Round, false, h.st.MaxEpoch, "", 0)
		claimed = claimed || hasEvent(rd, "BecameCandidate")
	}
	offered := 0
	for i := 0; i < 40; i++ {
		rd := h.tick(5 * ms)
		if rd.State != nil && rd.State.MaxEpoch > h.st.MaxEpoch {
			offered++
		}
		if i > 0 && rd.State == nil && h.n.Role() == Candidate {
			t.Fatalf("tick %d: a candidate's unwritten claim epoch is no longer offered for persisting (persisted max %d)", i, h.st.MaxEpoch)
		}
	}
	if !claimed || offered == 0 {
		t.Fatalf("no claim was attempted (candidate %v, offered %d)", claimed, offered)
	}
	if h.st.MaxEpoch != 5 {
		t.Fatalf("persisted max epoch moved to %d while writes failed", h.st.MaxEpoch)
	}
	// The disk is back: the next Ready writes the state and claims.
	h.failWrites = false
	sent := false
	for i := 0; i < 40 && !sent; i++ {
		claims, _ := checkIns(h.tick(5 * ms))
		sent = len(claims) > 0 && claims[0].CheckIn.Claim
	}
	if !sent || h.st.MaxEpoch <= 5 {
		t.Fatalf("no claim after the disk came back (sent %v, persisted max %d)", sent, h.st.MaxEpoch)
	}
}
