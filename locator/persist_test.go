package locator

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/testtool"
	"github.com/vigil-project/vigil/protocol"
)

const ms = time.Millisecond

// fullDisk is testtool.FullDisk.
func fullDisk(t *testing.T) (dir string, fill, free func()) {
	t.Helper()
	return testtool.FullDisk(t)
}

// claim is a check-in from a node that has heard from this locator (w, incarnation 1).
func claim(from string, epoch, round uint64) protocol.Message {
	return protocol.Message{Type: protocol.MsgCheckIn, From: from, ClusterID: protocol.ClusterID("t"), Incarnation: 1, Seq: round, To: "w", ToIncarnation: 1,
		CheckIn: protocol.CheckIn{Round: round, Claim: true, Epoch: epoch, Healthy: true}}
}

// The measured defect, on a real full filesystem: the witness's locator
// could not write b's grant and answered it anyway 21 ms later. Now
// nothing is sent while the write fails, the write is retried on every
// flush with one warning per episode, and the grant is answered once it is
// on disk.
func TestLocatorFullDiskAnswersNothingUntilPersisted(t *testing.T) {
	dir, fill, free := fullDisk(t)
	cfg := protocol.Config{Cluster: "t", Self: "w", Nodes: []string{"a", "b"}, Locators: []string{"a", "b", "w"}}
	l, err := protocol.NewLocator(cfg, protocol.LocatorState{}, 1000*ms)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	var sent []protocol.Envelope
	path := filepath.Join(dir, StateFile)
	owner := statefile.Owner{Kind: "locator", Cluster: "t", ID: "w"}
	d := &driver{l: l, log: log, send: func(e protocol.Envelope) error { sent = append(sent, e); return nil },
		w: &statefile.Writer{Path: path, Owner: owner, What: "locator state", Log: log}}
	onDisk := func() protocol.LocatorState {
		t.Helper()
		var st protocol.LocatorState
		if res, err := statefile.Load(path, owner, &st); res != statefile.Loaded || err != nil {
			t.Fatalf("state file: %v %v", res, err)
		}
		return st
	}
	step := func(now time.Duration, m protocol.Message) {
		t.Helper()
		if err := l.Step(now, m); err != nil {
			t.Fatal(err)
		}
		d.flush()
	}
	d.flush()
	step(1000*ms, claim("a", 1, 1))
	if len(sent) != 1 || !sent[0].Msg.Ack.Granted || onDisk() != (protocol.LocatorState{Incarnation: 1, Epoch: 1, Holder: "a"}) {
		t.Fatalf("grant to a: sent %+v, disk %+v", sent, onDisk())
	}
	sent = nil

	fill()
	// a's lease is over; b claims epoch 3, and asks again and again.
	now := 1000*ms + l.Status().GrantIn + 10*ms
	for i := uint64(0); i < 10; i++ {
		step(now, claim("b", 3, 2+i))
		l.Tick(now + 5*ms)
		d.flush()
		now += 20 * ms
	}
	if len(sent) != 0 {
		t.Fatalf("answered %d times while the grant could not be written: %+v", len(sent), sent[0].Msg.Ack)
	}
	if st := onDisk(); st.Holder != "a" || st.Epoch != 1 {
		t.Fatalf("disk changed while full: %+v", st)
	}
	if failing, errs, _ := d.w.Status(); !failing || errs < 10 {
		t.Fatalf("writer status: failing %v, errors %d", failing, errs)
	}
	if n := strings.Count(logBuf.String(), `"event":"persist_error"`); n != 1 {
		t.Fatalf("want one persist_error line per episode, got %d:\n%s", n, logBuf.String())
	}

	free()
	l.Tick(now)
	d.flush() // the retry of a tick
	if st := onDisk(); st != (protocol.LocatorState{Incarnation: 1, Epoch: 3, Holder: "b"}) {
		t.Fatalf("after space was freed the grant is not on disk: %+v", st)
	}
	step(now+5*ms, claim("b", 3, 50))
	if len(sent) != 1 || !sent[0].Msg.Ack.Granted || sent[0].Msg.Ack.Holder != "b" {
		t.Fatalf("after the write b's claim is answered: %+v", sent)
	}
	if !strings.Contains(logBuf.String(), `"event":"persist_recovered"`) {
		t.Fatalf("no persist_recovered line:\n%s", logBuf.String())
	}
	if failing, _, _ := d.w.Status(); failing {
		t.Fatal("writer still failing after a successful write")
	}
}
