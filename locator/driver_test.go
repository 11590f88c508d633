package locator

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/transport/transporttest"
	"github.com/vigil-project/vigil/protocol"
)

// Unit tests of the locator's driver (start, onInbound, onTick: what Run's
// loop calls) on a fake clock and the in-memory network, with nodes a and b
// played by the test.

var errDiskFull = errors.New("write locator.state: no space left on device")

// fakeWriter is stateWriter: a disk that fails while full is set.
type fakeWriter struct {
	full     bool
	attempts int
	errs     uint64
	saved    []protocol.LocatorState
}

func (w *fakeWriter) Save(v any) error {
	w.attempts++
	if w.full {
		w.errs++
		return errDiskFull
	}
	w.saved = append(w.saved, *v.(*protocol.LocatorState))
	return nil
}

func (w *fakeWriter) Status() (bool, uint64, string) {
	if w.full {
		return true, w.errs, errDiskFull.Error()
	}
	return false, w.errs, ""
}

func (w *fakeWriter) last() protocol.LocatorState {
	if len(w.saved) == 0 {
		return protocol.LocatorState{}
	}
	return w.saved[len(w.saved)-1]
}

type locHarness struct {
	t     *testing.T
	clk   *clock.Fake
	net   *transporttest.Network
	d     *driver
	tick  clock.Ticks // Run's tick
	w     *fakeWriter
	nodes map[string]*transporttest.Endpoint
	seq   map[string]uint64
	pcfg  protocol.Config
}

func newLocHarness(t *testing.T, full bool) *locHarness {
	t.Helper()
	clk := clock.NewFake(time.Hour)
	n, err := transporttest.New(clk, bytes.Repeat([]byte{9}, protocol.KeySize), 0)
	if err != nil {
		t.Fatal(err)
	}
	pcfg := protocol.Config{Cluster: "t", Self: "w", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"},
		TokenInterval: protocol.DefaultTokenInterval, TokenTimeout: protocol.DefaultTokenTimeout,
		Lease: protocol.DefaultLease, DriftMargin: protocol.DefaultDriftMargin}
	w := &fakeWriter{full: full}
	log := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))
	d, err := start(pcfg, protocol.LocatorState{}, false, clk, n.Endpoint(transporttest.Addr{Host: "w", Locator: true}), w, log)
	if err != nil {
		t.Fatal(err)
	}
	tick := clk.NewTicker(d.interval)
	t.Cleanup(tick.Stop)
	return &locHarness{t: t, clk: clk, net: n, d: d, w: w, pcfg: pcfg, seq: map[string]uint64{}, tick: tick,
		nodes: map[string]*transporttest.Endpoint{"a": n.Endpoint(transporttest.Addr{Host: "a"}), "b": n.Endpoint(transporttest.Addr{Host: "b"})}}
}

// claim sends a claim (or the holder's renewal) of epoch from node.
func (h *locHarness) claim(node string, epoch uint64) {
	h.seq[node]++
	s := h.seq[node]
	m := protocol.Message{Type: protocol.MsgCheckIn, From: node, ClusterID: protocol.ClusterID("t"), Incarnation: 1, Seq: s,
		To: "w", ToIncarnation: 1, CheckIn: protocol.CheckIn{Round: s, Claim: true, Epoch: epoch, Healthy: true}}
	if err := h.nodes[node].Send(protocol.Envelope{To: "w", Msg: m}); err != nil {
		h.t.Fatal(err)
	}
}

// step moves the clock by d; the locator takes its tick and what arrived,
// as Run's loop does.
func (h *locHarness) step(d time.Duration) {
	h.clk.Advance(d)
	h.net.Deliver()
	select {
	case <-h.tick.C():
		h.d.onTick()
	default:
	}
	ep := h.net.Endpoint(transporttest.Addr{Host: "w", Locator: true})
	for {
		in, ok := ep.Recv()
		if !ok {
			return
		}
		h.d.onInbound(in)
	}
}

// acks is what node received since the last call.
func (h *locHarness) acks(node string) []protocol.Ack {
	h.net.Deliver()
	var out []protocol.Ack
	for {
		in, ok := h.nodes[node].Recv()
		if !ok {
			return out
		}
		out = append(out, in.Msg.Ack)
	}
}

// (e) A grant is written before it is answered; a renewal by the holder
// extends the lease without a write; another node's claim is refused while
// the lease runs and granted once it is over.
func TestLocatorDriverGrantAndRenewal(t *testing.T) {
	h := newLocHarness(t, false)
	if h.w.last() != (protocol.LocatorState{Incarnation: 1}) {
		t.Fatalf("the first incarnation is not written at start: %+v", h.w.saved)
	}
	h.claim("a", 1)
	h.step(time.Millisecond)
	if got := h.acks("a"); len(got) != 1 || !got[0].Granted || got[0].Holder != "a" || got[0].Epoch != 1 {
		t.Fatalf("a's claim answered %+v", got)
	}
	if h.w.last() != (protocol.LocatorState{Incarnation: 1, Epoch: 1, Holder: "a"}) {
		t.Fatalf("the grant is not on disk: %+v", h.w.saved)
	}
	writes := h.w.attempts

	// Renewals every half lease keep a's lease and write nothing.
	for range 6 {
		h.step(h.pcfg.Lease / 2)
		h.claim("a", 1)
		h.step(time.Millisecond)
		if got := h.acks("a"); len(got) != 1 || !got[0].Granted {
			t.Fatalf("a's renewal answered %+v", got)
		}
		// The lease counts from the arrival (sent 1 ms ago, zero latency),
		// or from the locator's own clock if its tick read it later.
		if st := h.d.l.Status(); !st.LeaseValid || st.LeaseUntil < h.clk.Now()-time.Millisecond+h.pcfg.Lease || st.LeaseUntil > h.clk.Now()+h.pcfg.Lease {
			t.Fatalf("renewal at %v: lease %+v", h.clk.Now(), st)
		}
		h.claim("b", 2)
		h.step(time.Millisecond)
		if got := h.acks("b"); len(got) != 1 || got[0].Granted || got[0].Holder != "a" {
			t.Fatalf("b's claim during a's lease answered %+v", got)
		}
	}
	if h.w.attempts != writes {
		t.Fatalf("%d writes for renewals and refusals, want none", h.w.attempts-writes)
	}

	// a stops renewing: b's claim is granted once a's lease and the drift
	// margin are over, not before.
	until := h.d.l.Status().LeaseUntil
	for h.clk.Now() < until+h.pcfg.DriftMargin-5*time.Millisecond {
		h.claim("b", 2)
		h.step(5 * time.Millisecond)
		for _, a := range h.acks("b") {
			if a.Granted {
				t.Fatalf("b granted at %v, a's lease ran until %v (+ drift %v)", h.clk.Now(), until, h.pcfg.DriftMargin)
			}
		}
	}
	granted := false
	for i := 0; i < 20 && !granted; i++ {
		h.step(5 * time.Millisecond)
		h.claim("b", 2)
		h.step(time.Millisecond)
		for _, a := range h.acks("b") {
			granted = granted || (a.Granted && a.Holder == "b")
		}
	}
	if !granted || h.w.last() != (protocol.LocatorState{Incarnation: 1, Epoch: 2, Holder: "b"}) {
		t.Fatalf("b not granted after a's lease: granted %v, disk %+v", granted, h.w.last())
	}
}

// (e) While the state cannot be written the locator answers nothing (not
// even refusals: a promise not on disk could be broken by a restart), the
// state stays dirty and is written again on every tick; once a write
// succeeds it answers again, with what is on disk.
func TestLocatorDriverPersistFailure(t *testing.T) {
	h := newLocHarness(t, true)
	sent := func() uint64 { return h.net.Endpoint(transporttest.Addr{Host: "w", Locator: true}).Stats().Sent }
	for range 10 {
		h.claim("a", 1)
		h.step(h.d.interval)
	}
	if got := h.acks("a"); len(got) != 0 || sent() != 0 {
		t.Fatalf("answered %+v (%d sent) with no state on disk", got, sent())
	}
	// Ten ticks and ten check-ins, each a flush with the dirty state.
	if h.w.attempts < 20 || len(h.w.saved) != 0 {
		t.Fatalf("%d write attempts, %d saved; want every tick and check-in to retry", h.w.attempts, len(h.w.saved))
	}
	h.w.full = false
	h.step(h.d.interval) // the tick retries
	if h.w.last() != (protocol.LocatorState{Incarnation: 1, Epoch: 1, Holder: "a"}) {
		t.Fatalf("after the disk was freed: %+v", h.w.saved)
	}
	h.claim("a", 1)
	h.step(time.Millisecond)
	if got := h.acks("a"); len(got) != 1 || !got[0].Granted || got[0].Epoch != 1 {
		t.Fatalf("after the write a's claim is answered %+v", got)
	}

	// A new grant whose write fails is not answered either; the one before
	// stays what the locator says.
	h.w.full = true
	until := h.d.l.Status().LeaseUntil
	h.clk.AdvanceTo(until + h.pcfg.DriftMargin + time.Millisecond)
	for range 5 {
		h.claim("b", 2)
		h.step(h.d.interval)
	}
	if got := h.acks("b"); len(got) != 0 {
		t.Fatalf("b's grant answered before it was on disk: %+v", got)
	}
	if h.w.last().Holder != "a" {
		t.Fatalf("disk changed while full: %+v", h.w.last())
	}
	h.w.full = false
	h.step(h.d.interval)
	h.claim("b", 2)
	h.step(time.Millisecond)
	if got := h.acks("b"); len(got) != 1 || !got[0].Granted || got[0].Holder != "b" || h.w.last().Holder != "b" {
		t.Fatalf("after the write b's claim is answered %+v, disk %+v", got, h.w.last())
	}
}
