package protocol

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestCrashReleaseConstruction: a new incarnation, persisted first; one
// release per locator and epoch (the held one and a higher claimed one),
// and a transfer to the successor, each numbered per destination from 1
// and stamped with the destination's incarnation from the succession.
func TestCrashReleaseConstruction(t *testing.T) {
	cfg := testCfg("a")
	s := Succession{Epoch: 6, To: "b", Nodes: map[string]uint64{"b": 3}, Locators: map[string]uint64{"a": 2, "b": 4, "w": 9}}
	st, msgs, err := CrashRelease(cfg, NodeState{Incarnation: 5, MaxEpoch: 7}, s)
	if err != nil {
		t.Fatal(err)
	}
	if st != (NodeState{Incarnation: 6, MaxEpoch: 7}) {
		t.Fatalf("state %+v, want incarnation 6, max epoch 7 kept", st)
	}
	type key struct {
		to  string
		typ MsgType
		seq uint64
	}
	got := map[key]Message{}
	for _, e := range msgs {
		if e.To != e.Msg.To || e.Msg.From != "a" || e.Msg.Incarnation != 6 || e.Msg.ClusterID != ClusterID("t") || e.Msg.Epoch != 7 {
			t.Fatalf("header %+v", e.Msg)
		}
		got[key{e.To, e.Msg.Type, e.Msg.Seq}] = e.Msg
	}
	if len(msgs) != 7 {
		t.Fatalf("%d messages, want 6 releases and 1 transfer: %+v", len(msgs), msgs)
	}
	for _, l := range []string{"a", "b", "w"} {
		for seq, epoch := range map[uint64]uint64{1: 6, 2: 7} {
			m, ok := got[key{l, MsgRelease, seq}]
			if !ok || m.Release.Epoch != epoch || m.ToIncarnation != s.Locators[l] {
				t.Fatalf("release %d to %s: %+v (present %v)", seq, l, m, ok)
			}
		}
	}
	if m := got[key{"b", MsgTransfer, 1}]; m.Transfer != (Transfer{Epoch: 7, To: "b"}) || m.ToIncarnation != 3 {
		t.Fatalf("transfer %+v", m)
	}

	// No successor: only the locators; no epoch: nothing to release.
	s.To = ""
	if _, msgs, _ := CrashRelease(cfg, NodeState{Incarnation: 5, MaxEpoch: 6}, s); len(msgs) != 3 {
		t.Fatalf("without a successor: %d messages, want one release per locator", len(msgs))
	}
	if _, _, err := CrashRelease(cfg, NodeState{Incarnation: 5}, Succession{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no epoch: err %v", err)
	}
	if _, _, err := CrashRelease(testCfg("w"), NodeState{Incarnation: 5}, Succession{Epoch: 1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("a witness has no role to release: err %v", err)
	}
}

// TestNodeSuccession: only an active node has one; it names the healthy
// standby and the incarnations it heard.
func TestNodeSuccession(t *testing.T) {
	h := newHarness(t, "a", NodeState{})
	if _, ok := h.n.Succession(h.now); ok {
		t.Fatal("a standby has a succession")
	}
	h.becomeActive(ms)
	s, ok := h.n.Succession(h.now)
	if !ok || s.Epoch != h.n.epoch || s.Locators["a"] != 1 || s.Locators["w"] != 1 || len(s.Nodes) != 1 {
		t.Fatalf("succession %+v ok=%v", s, ok)
	}
	if s.To != "" {
		t.Fatalf("no standby seen in the ring, yet To=%q", s.To)
	}
	if _, ok := h.n.Succession(h.now + time.Hour); ok {
		t.Fatal("a succession after the lease ended")
	}
}

// crashWorld is a locator w whose holder a (incarnation 1) renews epoch 1.
func crashWorld(t *testing.T) (*Locator, time.Duration) {
	l := newTestLocator(t, LocatorState{}, 1000*ms)
	if a, _ := ask(t, l, 1000*ms, claimMsg("a", 1, 1)); !a.Granted {
		t.Fatal("claim refused")
	}
	if a, _ := ask(t, l, 1010*ms, claimMsg("a", 1, 2)); !a.Granted {
		t.Fatal("renewal refused")
	}
	return l, 1010 * ms
}

func release(t *testing.T, l *Locator, epoch uint64) Message {
	t.Helper()
	_, msgs, err := CrashRelease(testCfg("a"), NodeState{Incarnation: 1, MaxEpoch: epoch},
		Succession{Epoch: epoch, Locators: map[string]uint64{"w": l.st.Incarnation}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range msgs {
		if e.To == "w" {
			return e.Msg
		}
	}
	t.Fatal("no release for w")
	return Message{}
}

// TestLocatorCrashRelease: the release frees the lease at once, the
// standby is granted without waiting, and a renewal of the dead
// incarnation still in flight extends nothing afterwards.
func TestLocatorCrashRelease(t *testing.T) {
	l, now := crashWorld(t)
	if err := l.Step(now+ms, release(t, l, 1)); err != nil {
		t.Fatal(err)
	}
	if g := l.Status().GrantIn; g != 0 {
		t.Fatalf("grant-in %v after the release, want 0", g)
	}
	// The dead incarnation's renewal, sent before it died, arrives late:
	// a higher sequence than any accepted, but older than the release.
	late := claimMsg("a", 1, 3)
	if a, _ := ask(t, l, now+2*ms, late); a.Granted || l.Status().GrantIn != 0 {
		t.Fatalf("late renewal of the dead incarnation: %+v, grant-in %v", a, l.Status().GrantIn)
	}
	b := claimMsg("b", 2, 1)
	if a, _ := ask(t, l, now+3*ms, b); !a.Granted || a.Holder != "b" {
		t.Fatalf("standby's claim after the release: %+v", a)
	}
}

// TestLocatorCrashReleaseRefused: a release that is not from the holder,
// names another epoch, is addressed to another incarnation of the
// locator, or is older than the holder's newest claim frees nothing.
func TestLocatorCrashReleaseRefused(t *testing.T) {
	full := testCfg("w").Lease + testCfg("w").DriftMargin
	for _, tc := range []struct {
		name string
		edit func(l *Locator, m *Message)
		err  error
	}{
		{"wrong epoch", func(_ *Locator, m *Message) { m.Release.Epoch = 2 }, nil},
		{"older epoch", func(_ *Locator, m *Message) { m.Release.Epoch = 0 }, nil},
		{"not the holder", func(_ *Locator, m *Message) { m.From = "b" }, nil},
		{"stale incarnation of the locator", func(l *Locator, m *Message) { m.ToIncarnation = l.st.Incarnation - 1 }, ErrStale},
		{"older than the holder's newest claim", func(_ *Locator, m *Message) { m.Incarnation = 1; m.Seq = 1 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, now := crashWorld(t)
			m := release(t, l, 1)
			tc.edit(l, &m)
			err := l.Step(now+ms, m)
			if tc.err != nil && !errors.Is(err, tc.err) || tc.err == nil && err != nil {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if g := l.Status().GrantIn; g < full-2*ms {
				t.Fatalf("grant-in %v after a refused release, want the full %v", g, full)
			}
			if a, _ := ask(t, l, now+2*ms, claimMsg("b", 2, 1)); a.Granted {
				t.Fatalf("standby granted after a refused release: %+v", a)
			}
		})
	}
}

// TestCrashReleaseReplayedOrForged: on the wire, a copy of the release is
// refused by the replay window, one made without the key by the MAC, and a
// copy of an earlier incarnation's release after the node's next
// incarnation claimed frees nothing (the replay window, and the locator's
// own order check behind it).
func TestCrashReleaseReplayedOrForged(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	l, now := crashWorld(t)
	f := NewReplayFilter(testCfg("w"))
	rel := release(t, l, 1)
	b, err := Encode(key, rel)
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(b []byte) error {
		m, err := Decode(key, b)
		if err != nil {
			return err
		}
		if err := f.Accept(m); err != nil {
			return err
		}
		return l.Step(now+ms, m)
	}
	forged, _ := Encode(bytes.Repeat([]byte{8}, KeySize), rel)
	if err := deliver(forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("forged release: %v", err)
	}
	if l.Status().GrantIn == 0 {
		t.Fatal("a forged release freed the lease")
	}
	if err := deliver(b); err != nil {
		t.Fatal(err)
	}
	if err := deliver(b); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed release: %v", err)
	}
	// The node's next incarnation (3) claims epoch 2 and is granted; the
	// release of incarnation 2 delivered again, past the filter (a locator
	// restarted meanwhile, say), must not free it.
	next := claimMsg("a", 2, 1)
	next.Incarnation = 3
	if a, _ := ask(t, l, now+5*ms, next); !a.Granted {
		t.Fatalf("the next incarnation's claim: %+v", a)
	}
	old := rel
	old.Release.Epoch = 2
	if err := l.Step(now+6*ms, old); err != nil {
		t.Fatal(err)
	}
	if l.Status().GrantIn == 0 {
		t.Fatal("an older incarnation's release freed the newer incarnation's lease")
	}
}

// TestStandbyClaimsOnCrashTransfer: the successor claims at once on a
// transfer stamped with its incarnation; one stamped for an earlier
// incarnation of it (a replay, or sent before it restarted) is not acted on.
func TestStandbyClaimsOnCrashTransfer(t *testing.T) {
	for _, stale := range []bool{false, true} {
		h := newHarness(t, "b", NodeState{Incarnation: 4, MaxEpoch: 3})
		h.ready()
		inc := h.n.st.Incarnation
		if stale {
			inc--
		}
		_, msgs, err := CrashRelease(testCfg("a"), NodeState{Incarnation: 8, MaxEpoch: 3},
			Succession{Epoch: 3, To: "b", Nodes: map[string]uint64{"b": inc}})
		if err != nil {
			t.Fatal(err)
		}
		var tr Message
		for _, e := range msgs {
			if e.Msg.Type == MsgTransfer {
				tr = e.Msg
			}
		}
		h.now += ms
		err = h.n.Step(h.now, tr)
		rd := h.ready()
		claims, _ := checkIns(rd)
		if stale {
			if !errors.Is(err, ErrStale) || h.n.Role() != Standby || len(claims) != 0 {
				t.Fatalf("stale transfer: err %v role %v claims %d", err, h.n.Role(), len(claims))
			}
			continue
		}
		if err != nil || h.n.Role() != Candidate || !hasEvent(rd, "BecameCandidate") {
			t.Fatalf("transfer: err %v role %v events %v", err, h.n.Role(), rd.Events)
		}
		if len(claims) == 0 {
			claims, _ = checkIns(h.tick(ms))
		}
		if len(claims) != 3 || claims[0].CheckIn.Epoch != 4 {
			t.Fatalf("want a claim of epoch 4 at every locator, got %+v", claims)
		}
	}
}

// TestCrashTransferCause: a transfer from a newer incarnation of the
// active than the one that passed the token is a crash release (no
// handover gap on the successor); one from the same incarnation is a
// planned handover.
func TestCrashTransferCause(t *testing.T) {
	for _, crash := range []bool{false, true} {
		h := newHarness(t, "b", NodeState{Incarnation: 4, MaxEpoch: 3})
		h.ready()
		h.now += ms
		tok := Message{Type: MsgToken, From: "a", ClusterID: ClusterID("t"), Incarnation: 8, Seq: 1, ToIncarnation: h.n.st.Incarnation,
			Token: Token{Epoch: 3, Seq: 1, Active: "a", Nodes: []NodeHealth{{ID: "a", Healthy: true, InRing: true}, {ID: "b", Healthy: true, InRing: true}}}}
		if err := h.n.Step(h.now, tok); err != nil {
			t.Fatal(err)
		}
		h.ready()
		inc, seq := uint64(8), uint64(2)
		if crash {
			inc, seq = 9, 1
		}
		h.now += ms
		tr := Message{Type: MsgTransfer, From: "a", ClusterID: ClusterID("t"), Incarnation: inc, Seq: seq, ToIncarnation: h.n.st.Incarnation,
			Epoch: 3, Transfer: Transfer{Epoch: 3, To: "b"}}
		if err := h.n.Step(h.now, tr); err != nil {
			t.Fatal(err)
		}
		want := CauseHandover
		if crash {
			want = CauseCrashRelease
		}
		var got []ClaimCause
		for _, e := range h.ready().Events {
			if c, ok := e.(BecameCandidate); ok {
				got = append(got, c.Cause)
			}
		}
		if len(got) != 1 || got[0] != want {
			t.Fatalf("crash=%v: candidacies %v, want one with cause %v", crash, got, want)
		}
	}
}
