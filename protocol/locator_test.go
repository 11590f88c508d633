package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

// The unit tests' lease and drift margin (testCfg).
const (
	testLease = 200 * ms
	testDrift = 25 * ms
)

// testCfg pins the timing the unit tests' hand-computed instants were
// written for (the defaults before issue 14); the defaults themselves are
// checked in TestConfigValidate and exercised by the simulator.
func testCfg(self string) Config {
	return Config{Cluster: "t", Self: self, Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"},
		TokenInterval: 20 * ms, TokenTimeout: 150 * ms, Lease: testLease, DriftMargin: testDrift}
}

func claimMsg(from string, epoch uint64, round uint64) Message {
	return Message{Type: MsgCheckIn, From: from, ClusterID: ClusterID("t"), Incarnation: 1, Seq: round,
		CheckIn: CheckIn{Round: round, Claim: true, Epoch: epoch, Healthy: true}}
}

// ask sends one claim and returns the Ack and whether state had to be persisted.
func ask(t *testing.T, l *Locator, now time.Duration, m Message) (Ack, bool) {
	t.Helper()
	if m.ToIncarnation == 0 {
		m.ToIncarnation = l.st.Incarnation // the node has heard from this locator
	}
	if err := l.Step(now, m); err != nil {
		t.Fatal(err)
	}
	rd := l.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].To != m.From || rd.Messages[0].Msg.Type != MsgAck {
		t.Fatalf("want one ack to %s, got %+v", m.From, rd.Messages)
	}
	a := rd.Messages[0].Msg.Ack
	if rd.State != nil {
		l.Persisted(*rd.State)
	}
	if a.Round != m.CheckIn.Round {
		t.Fatalf("ack round %d, want %d", a.Round, m.CheckIn.Round)
	}
	return a, rd.State != nil
}

func newTestLocator(t *testing.T, st LocatorState, now time.Duration) *Locator {
	t.Helper()
	l, err := NewLocator(testCfg("w"), st, now)
	if err != nil {
		t.Fatal(err)
	}
	rd := l.Ready()
	if rd.State == nil || rd.State.Incarnation != st.Incarnation+1 {
		t.Fatalf("first Ready must persist the new incarnation, got %+v", rd.State)
	}
	l.Persisted(*rd.State)
	return l
}

func TestLocatorGrantsAndWaits(t *testing.T) {
	cfg := testCfg("w")
	l := newTestLocator(t, LocatorState{}, 1000*ms)
	a, persist := ask(t, l, 1000*ms, claimMsg("a", 1, 1))
	if !a.Granted || a.Holder != "a" || a.Epoch != 1 || !persist {
		t.Fatalf("first claim on a fresh locator: %+v persist=%v", a, persist)
	}
	// Renewal by the holder: granted, nothing to persist.
	a, persist = ask(t, l, 1100*ms, claimMsg("a", 1, 2))
	if !a.Granted || persist || a.GrantIn != cfg.Lease+cfg.DriftMargin {
		t.Fatalf("renewal: %+v persist=%v", a, persist)
	}
	// Another node: refused until lease + drift margin after the last
	// renewal as received here (1100ms + 200 + 25).
	a, _ = ask(t, l, 1324*ms, claimMsg("b", 2, 3))
	if a.Granted || a.Holder != "a" || a.GrantIn != time.Millisecond {
		t.Fatalf("claim 1ns..1ms before expiry+margin: %+v", a)
	}
	// Same epoch as the holder's: never, even after expiry.
	a, _ = ask(t, l, 1400*ms, claimMsg("b", 1, 4))
	if a.Granted {
		t.Fatalf("a second holder for epoch 1: %+v", a)
	}
	a, persist = ask(t, l, 1400*ms, claimMsg("b", 2, 5))
	if !a.Granted || a.Holder != "b" || a.Epoch != 2 || !persist {
		t.Fatalf("claim after expiry: %+v persist=%v", a, persist)
	}
	// The old holder's late renewal of epoch 1 is refused.
	if a, _ = ask(t, l, 1401*ms, claimMsg("a", 1, 6)); a.Granted {
		t.Fatalf("stale renewal granted: %+v", a)
	}
	// The holder moves itself to a newer epoch without waiting.
	if a, persist = ask(t, l, 1402*ms, claimMsg("b", 5, 7)); !a.Granted || a.Epoch != 5 || !persist {
		t.Fatalf("same holder, new epoch: %+v", a)
	}
	// ... and may still renew the older one it is active in.
	if a, _ = ask(t, l, 1403*ms, claimMsg("b", 2, 8)); !a.Granted || a.Epoch != 5 {
		t.Fatalf("holder renewing an older epoch: %+v", a)
	}
	s := l.Status()
	if s.Holder != "b" || s.Epoch != 5 || !s.LeaseValid || s.LeaseUntil != 1603*ms || s.Nodes[1].At != 1403*ms {
		t.Fatalf("status %+v", s)
	}
}

func TestLocatorProbeAndRelease(t *testing.T) {
	l := newTestLocator(t, LocatorState{}, 0)
	ask(t, l, 10*ms, claimMsg("a", 1, 1))
	probe := claimMsg("b", 0, 2)
	probe.CheckIn.Claim = false
	a, persist := ask(t, l, 20*ms, probe)
	if a.Granted || a.Holder != "a" || a.GrantIn != 215*ms || persist {
		t.Fatalf("probe: %+v", a)
	}
	// A release by someone else, or of another epoch, changes nothing.
	_ = l.Step(30*ms, Message{Type: MsgRelease, From: "b", ClusterID: ClusterID("t"), ToIncarnation: l.st.Incarnation, Release: Release{Epoch: 1}})
	_ = l.Step(30*ms, Message{Type: MsgRelease, From: "a", ClusterID: ClusterID("t"), ToIncarnation: l.st.Incarnation, Release: Release{Epoch: 7}})
	if a, _ = ask(t, l, 40*ms, claimMsg("b", 2, 3)); a.Granted {
		t.Fatalf("granted during a lease: %+v", a)
	}
	// The holder releases: the next claim is granted at once.
	// (Sent after its claim: a release older than the holder's newest
	// claim or renewal frees nothing, release_test.go.)
	if err := l.Step(50*ms, Message{Type: MsgRelease, From: "a", ClusterID: ClusterID("t"), Incarnation: 1, Seq: 2, ToIncarnation: l.st.Incarnation, Release: Release{Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	if a, _ = ask(t, l, 51*ms, claimMsg("b", 2, 4)); !a.Granted || a.Holder != "b" {
		t.Fatalf("after release: %+v", a)
	}
}

// A restarted locator knows whom it granted (persisted before answering)
// but not when it last renewed: it waits a full lease + margin.
func TestLocatorRestartQuarantine(t *testing.T) {
	st := LocatorState{Incarnation: 4, Epoch: 7, Holder: "a"}
	l := newTestLocator(t, st, 5000*ms)
	if !l.Status().Quarantined {
		t.Fatal("not quarantined after a restart with a holder")
	}
	if a, _ := ask(t, l, 5050*ms, claimMsg("b", 8, 1)); a.Granted || a.GrantIn != 175*time.Millisecond {
		t.Fatalf("granted another holder during quarantine: %+v", a)
	}
	if a, _ := ask(t, l, 5100*ms, claimMsg("a", 7, 2)); !a.Granted {
		t.Fatalf("the persisted holder's renewal: %+v", a)
	}
	// That renewal protects a's lease until 5100+225.
	if a, _ := ask(t, l, 5300*ms, claimMsg("b", 8, 3)); a.Granted {
		t.Fatalf("granted during the renewed lease: %+v", a)
	}
	if a, _ := ask(t, l, 5325*ms, claimMsg("b", 8, 4)); !a.Granted {
		t.Fatalf("not granted after lease+margin: %+v", a)
	}
	// Epochs are never reused after a restart either.
	l2 := newTestLocator(t, LocatorState{Incarnation: 5, Epoch: 8, Holder: "b"}, 9000*ms)
	if a, _ := ask(t, l2, 9500*ms, claimMsg("a", 8, 1)); a.Granted {
		t.Fatalf("epoch 8 granted twice: %+v", a)
	}
	// A fresh locator (nothing persisted) has nothing to protect.
	l3 := newTestLocator(t, LocatorState{}, 0)
	if l3.Status().Quarantined {
		t.Fatal("fresh locator quarantined")
	}
}

func TestLocatorRejects(t *testing.T) {
	l := newTestLocator(t, LocatorState{}, 0)
	m := claimMsg("a", 1, 1)
	m.ClusterID = ClusterID("other")
	if err := l.Step(0, m); !errors.Is(err, ErrCluster) {
		t.Fatalf("other cluster: %v", err)
	}
	m = claimMsg("w", 1, 1) // a witness is not a node
	if err := l.Step(0, m); !errors.Is(err, ErrPeer) {
		t.Fatalf("witness claiming: %v", err)
	}
	m = claimMsg("a", 1, 1)
	m.Type = MsgToken
	if err := l.Step(0, m); !errors.Is(err, ErrType) {
		t.Fatalf("token to a locator: %v", err)
	}
	if rd := l.Ready(); len(rd.Messages) != 0 || rd.State != nil {
		t.Fatalf("rejected input changed something: %+v", rd)
	}
	if _, err := NewLocator(testCfg("zz"), LocatorState{}, 0); !errors.Is(err, ErrConfig) {
		t.Fatalf("self not a locator: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := testCfg("a")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if q := good.Quorum(); q != 2 {
		t.Fatalf("quorum of 3 = %d", q)
	}
	two := good
	two.Locators, two.TwoNode = []string{"a", "b"}, true
	if two.Quorum() != 1 || two.Validate() != nil {
		t.Fatal("two_node: quorum 1 of 2")
	}
	if md := good.MaxDrift(); md < 0.058 || md > 0.059 {
		t.Fatalf("MaxDrift %v", md)
	}
	// The defaults: D/(2L+D) = 15/135 covers 11% drift.
	def := Config{Cluster: "t", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"}}
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if md := def.MaxDrift(); md < 0.11 || md > 0.112 {
		t.Fatalf("MaxDrift at the defaults %v", md)
	}
	for name, mut := range map[string]func(*Config){
		"no cluster":        func(c *Config) { c.Cluster = "" },
		"dup node":          func(c *Config) { c.Nodes = []string{"a", "a"} },
		"no locators":       func(c *Config) { c.Locators = nil },
		"two_node with 3":   func(c *Config) { c.TwoNode = true },
		"timeout too short": func(c *Config) { c.TokenTimeout = 2 * c.TokenInterval },
		"lease too short":   func(c *Config) { c.Lease = c.TokenInterval },
		"negative margin":   func(c *Config) { c.DriftMargin = -1 },
		"too many":          func(c *Config) { c.Nodes = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"} },
		"too many locators": func(c *Config) { c.Locators = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"} },
		"interval too short": func(c *Config) {
			c.TokenInterval, c.TokenTimeout, c.Lease, c.DriftMargin = MinTokenInterval-1, time.Second, time.Second, time.Millisecond
		},
		"margin as long as the lease": func(c *Config) { c.DriftMargin = c.Lease },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Problems lists every broken rule, each naming the field at fault and the
// fields it was compared with: config validation reports them at those keys.
func TestConfigProblems(t *testing.T) {
	c := testCfg("a")
	c.Nodes = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}
	c.TokenInterval, c.TokenTimeout, c.Lease, c.DriftMargin = 100*time.Millisecond, 200*time.Millisecond, 150*time.Millisecond, 150*time.Millisecond
	var got []string
	for _, p := range c.Problems() {
		got = append(got, fmt.Sprintf("%s%v: %s", p.Field, p.Also, p.Msg))
		if !errors.Is(p, ErrConfig) {
			t.Errorf("%v is not ErrConfig", p)
		}
	}
	want := []string{
		"nodes[]: need 1..8 nodes (the wire format's limit), have 9",
		"token_timeout[token_interval]: token_timeout 200ms must be at least 3 × token_interval 100ms (300ms)",
		"lease[token_interval]: lease 150ms must be at least 2 × token_interval 100ms (200ms)",
		"drift_margin[lease]: drift_margin 150ms must be shorter than lease 150ms",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := c.Validate(); err == nil || err.Error() != c.Problems()[0].Error() {
		t.Errorf("Validate = %v, want the first problem", err)
	}
	if ps := testCfg("a").Problems(); ps != nil {
		t.Errorf("a valid config has problems: %v", ps)
	}
}

// A renewal delivered late (or replayed after the datagram was lost on its
// first way) is not newer than the last one accepted from the holder: it
// is refused and extends nothing. Before, a locator extended the holder's
// lease from the receive time of any renewal, so late renewals delayed the
// failover by a lease each.
func TestLocatorLateRenewalExtendsNothing(t *testing.T) {
	l := newTestLocator(t, LocatorState{}, 0)
	if a, _ := ask(t, l, 10*ms, claimMsg("a", 1, 1)); !a.Granted {
		t.Fatalf("claim: %+v", a)
	}
	if a, _ := ask(t, l, 50*ms, claimMsg("a", 1, 3)); !a.Granted {
		t.Fatalf("renewal: %+v", a)
	}
	// Sequence 2 was sent before 3 and arrives 100 ms later.
	if a, _ := ask(t, l, 150*ms, claimMsg("a", 1, 2)); a.Granted {
		t.Fatalf("late renewal granted: %+v", a)
	}
	if s := l.Status(); s.LeaseUntil != 50*ms+testLease || s.StaleRenewals != 1 {
		t.Fatalf("lease stretched by a late renewal: until %v (want %v), stale renewals %d", s.LeaseUntil, 50*ms+testLease, s.StaleRenewals)
	}
	// b may take over when the lease from sequence 3 ends.
	if a, _ := ask(t, l, 50*ms+testLease+testDrift, claimMsg("b", 2, 1)); !a.Granted {
		t.Fatalf("b refused after a's last real renewal ran out: %+v", a)
	}
}

// What a restarted receiver guarantees: it acts only on datagrams stamped
// with its own current incarnation (ToIncarnation), i.e. sent after the
// sender heard from this incarnation. Nothing sent before the restart —
// from any incarnation of the sender, in particular an older one than the
// receiver had seen — is acted on, although the receiver remembers no
// sender: a check-in is answered with a Stale refusal (so the node learns
// the new incarnation) and neither recorded nor granted.
func TestRestartedLocatorActsOnNothingSentBefore(t *testing.T) {
	l := newTestLocator(t, LocatorState{Incarnation: 4, Epoch: 7, Holder: "a"}, 5000*ms)
	// a's renewal from its older incarnation 2, sent to this locator's
	// incarnation 4 (before the restart), replayed now; and one a sent
	// before it had heard from any locator (ToIncarnation 0).
	for _, to := range []uint64{4, 0} {
		old := claimMsg("a", 7, 1)
		old.Incarnation, old.ToIncarnation = 2, to
		if err := l.Step(5010*ms, old); !errors.Is(err, ErrStale) || !errors.Is(err, ErrReplay) {
			t.Fatalf("old renewal (to incarnation %d): %v", to, err)
		}
		rd := l.Ready()
		if len(rd.Messages) != 1 {
			t.Fatalf("want one answer, got %+v", rd.Messages)
		}
		ack := rd.Messages[0].Msg
		if ack.Ack.Granted || !ack.Ack.Stale || ack.Incarnation != 5 || ack.ToIncarnation != 2 || ack.To != "a" {
			t.Fatalf("answer to a stale check-in: %+v", ack)
		}
	}
	if s := l.Status(); s.LeaseUntil != 0 || s.Nodes[0].Seen || s.Stale != 2 {
		t.Fatalf("a stale datagram was acted on: %+v", s)
	}
	// The same renewal addressed to this incarnation is a real one.
	fresh := claimMsg("a", 7, 2)
	fresh.Incarnation, fresh.ToIncarnation = 3, 5
	if a, _ := ask(t, l, 5020*ms, fresh); !a.Granted {
		t.Fatalf("fresh renewal: %+v", a)
	}
	// A release sent before the restart does not lift the quarantine.
	rel := Message{Type: MsgRelease, From: "a", ClusterID: ClusterID("t"), Incarnation: 3, Seq: 3, To: "w", ToIncarnation: 4, Release: Release{Epoch: 7}}
	if err := l.Step(5030*ms, rel); !errors.Is(err, ErrStale) || !l.Status().LeaseValid {
		t.Fatalf("stale release acted on: %v %+v", err, l.Status())
	}
}
