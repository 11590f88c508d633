package nodemanager

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/testtool"
	"github.com/vigil-project/vigil/protocol"
)

// fullDisk is testtool.FullDisk.
func fullDisk(t *testing.T) (dir string, fill, free func()) {
	t.Helper()
	return testtool.FullDisk(t)
}

// A node manager whose state_dir is full does not claim: the claim's
// epoch cannot be written, so the claim is not sent (nor anything else
// while the state is not on disk), the write is retried on every tick with
// one persist_error line, and the claim goes out once space is freed, with
// an epoch that is on disk.
func TestNodeManagerFullDiskDoesNotClaim(t *testing.T) {
	dir, fill, free := fullDisk(t)
	m := testManager(t, false)
	// The driver's clock and the times the test ticks the core with must
	// be one clock: flush dates what it sends from it (Node.Sent).
	clk := clock.NewFake(time.Second)
	m.clk = clk
	var logBuf bytes.Buffer
	m.log = slog.New(slog.NewJSONHandler(&logBuf, nil))
	path := filepath.Join(dir, StateFile)
	owner := statefile.Owner{Kind: "node", Cluster: "edge", ID: "a"}
	m.state = &statefile.Writer{Path: path, Owner: owner, What: "node state", Log: m.log}
	var sent []protocol.Envelope
	m.send = func(e protocol.Envelope) error { sent = append(sent, e); return nil }
	onDisk := func() protocol.NodeState {
		t.Helper()
		var st protocol.NodeState
		if res, err := statefile.Load(path, owner, &st); res != statefile.Loaded || err != nil {
			t.Fatalf("state file: %v %v", res, err)
		}
		return st
	}
	claims := func() (n int, maxEpoch uint64) {
		for _, e := range sent {
			if e.Msg.Type == protocol.MsgCheckIn && e.Msg.CheckIn.Claim {
				n++
				maxEpoch = max(maxEpoch, e.Msg.CheckIn.Epoch)
			}
		}
		return n, maxEpoch
	}
	m.flush()
	if st := onDisk(); st.Incarnation != 1 || len(sent) == 0 {
		t.Fatalf("first flush: disk %+v, sent %d", st, len(sent))
	}

	// Disk full. The token never comes: the node probes the locators
	// (nothing to persist for that), hears of no active and claims.
	fill()
	now, seq := time.Second, uint64(0)
	answered := map[uint64]bool{}
	candidate := false
	for i := 0; i < 400; i++ {
		now += 5 * time.Millisecond
		clk.AdvanceTo(now)
		m.node.Tick(now)
		m.flush()
		for _, e := range sent {
			c := e.Msg.CheckIn
			if e.Msg.Type != protocol.MsgCheckIn || c.Claim || c.Round == 0 || answered[c.Round] {
				continue
			}
			answered[c.Round] = true
			for _, loc := range m.pcfg.Locators {
				seq++
				_ = m.node.Step(now, protocol.Message{Type: protocol.MsgAck, From: loc, ClusterID: protocol.ClusterID("edge"),
					Incarnation: 1, Seq: seq, Ack: protocol.Ack{Round: c.Round}})
			}
			m.flush()
		}
		candidate = candidate || m.node.Role() == protocol.Candidate
	}
	if !candidate {
		t.Fatalf("the node never became a candidate; sent %d messages", len(sent))
	}
	if n, _ := claims(); n != 0 {
		t.Fatalf("%d claims sent while the state could not be written", n)
	}
	if st := onDisk(); st.MaxEpoch != 0 {
		t.Fatalf("disk changed while full: %+v", st)
	}
	if n := strings.Count(logBuf.String(), `"event":"persist_error"`); n != 1 {
		t.Fatalf("want one persist_error line per episode, got %d", n)
	}
	// The claim's state is retried on every tick, not only at the next
	// claim: the core still holds it as not persisted.
	_, before, _ := m.state.Status()
	now += 5 * time.Millisecond
	clk.AdvanceTo(now)
	m.node.Tick(now)
	m.flush()
	if failing, errs, _ := m.state.Status(); !failing || errs != before+1 {
		t.Fatalf("writer status after one more tick: failing %v, errors %d then %d", failing, before, errs)
	}
	// Events are acted on while the write fails: they are local (here the
	// candidacy's log line; a BecameStandby's release of the addresses).
	if !strings.Contains(logBuf.String(), `"role":"candidate"`) {
		t.Fatal("the candidacy event was dropped with the unwritten state")
	}

	free()
	for i := 0; i < 100; i++ {
		if n, _ := claims(); n > 0 {
			break
		}
		now += 5 * time.Millisecond
		clk.AdvanceTo(now)
		m.node.Tick(now)
		m.flush()
	}
	n, e := claims()
	if n == 0 {
		t.Fatal("no claim after space was freed")
	}
	if st := onDisk(); st.MaxEpoch < e {
		t.Fatalf("claim of epoch %d sent with %d on disk", e, st.MaxEpoch)
	}
	if !strings.Contains(logBuf.String(), `"event":"persist_recovered"`) {
		t.Fatal("no persist_recovered line")
	}
}
