package nodemanager

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
)

type foLine struct {
	Event  string  `json:"event"`
	From   string  `json:"from"`
	To     string  `json:"to"`
	Epoch  uint64  `json:"epoch"`
	Reason string  `json:"reason"`
	TookMS float64 `json:"took_ms"`
}

func failoverLines(t *testing.T, b *bytes.Buffer) []foLine {
	t.Helper()
	var out []foLine
	for _, l := range bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var f foLine
		if err := json.Unmarshal(l, &f); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if f.Event == "failover" {
			out = append(out, f)
		}
	}
	return out
}

// The failover line names who was active before, why this node claimed
// (the protocol's cause of the candidacy), and how long from the decision
// to the addresses announced.
func TestFailoverTrackerReasons(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	f := failoverTracker{self: "b"}
	token := func(active, handover string) transport.Inbound {
		return transport.Inbound{At: time.Second, Msg: protocol.Message{Type: protocol.MsgToken, From: "a", Token: protocol.Token{Active: active, Handover: handover}}}
	}

	// Cold start: nobody active was ever known, the token never came.
	f.local(time.Second)
	f.becameCandidate(protocol.CauseTokenLost)
	f.becameActive(log, 1, &ctlmsg.Takeover{AnnouncedMS: 1.234}, time.Millisecond)
	f.observe("b")

	// a active (seen in its tokens), then its token stops.
	f.observe("a")
	f.input(token("a", ""))
	f.observe("a")
	f.local(2 * time.Second)
	f.becameCandidate(protocol.CauseTokenLost)
	f.observe("a") // the protocol still names the dead active
	f.becameActive(log, 2, &ctlmsg.Takeover{AnnouncedMS: 7.5}, time.Millisecond)

	// Handover: the transfer clears the protocol's active before the claim.
	f.observe("a")
	f.input(transport.Inbound{At: 3 * time.Second, Msg: protocol.Message{Type: protocol.MsgTransfer, From: "a", Transfer: protocol.Transfer{Epoch: 2, To: "b"}}})
	f.becameCandidate(protocol.CauseHandover)
	f.becameActive(log, 3, nil, 3*time.Millisecond)

	// The token names no active and no handover target.
	f.observe("a")
	f.input(token("", ""))
	f.becameCandidate(protocol.CauseNoActive)
	f.becameActive(log, 4, &ctlmsg.Takeover{}, 2*time.Millisecond)

	// This node's own lease lapsed (a late tick, say) and it re-claims
	// from the token it holds, on a tick: no datagram says why (the
	// reason=unknown of issue 11).
	f.local(5 * time.Second)
	f.becameCandidate(protocol.CauseLeaseLost)
	f.becameActive(log, 5, &ctlmsg.Takeover{AnnouncedMS: 2}, time.Millisecond)

	got := failoverLines(t, &buf)
	want := []foLine{
		{"failover", "none", "b", 1, reasonTokenLost, 1.23},
		{"failover", "a", "b", 2, reasonTokenLost, 7.5},
		{"failover", "a", "b", 3, reasonSwitchover, 3},
		{"failover", "a", "b", 4, reasonNoActive, 2},
		{"failover", "b", "b", 5, reasonLeaseLost, 2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d failover lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// Every cause the protocol can name has a known reason.
	for c := protocol.CauseTokenLost; c <= protocol.CauseLeaseLost; c++ {
		if r := claimReason(c); r == reasonUnknown {
			t.Errorf("cause %v has no failover reason", c)
		}
	}
}

// The decision time is the arrival of the input that made the node active,
// never in the future and never unset.
func TestFailoverDecidedAt(t *testing.T) {
	f := failoverTracker{self: "b"}
	if got := f.decidedAt(5 * time.Second); got != 5*time.Second {
		t.Errorf("no input yet: %v", got)
	}
	f.input(transport.Inbound{At: 4 * time.Second, Msg: protocol.Message{Type: protocol.MsgAck}})
	if got := f.decidedAt(5 * time.Second); got != 4*time.Second {
		t.Errorf("ack at 4s: %v", got)
	}
	if got := f.decidedAt(3 * time.Second); got != 3*time.Second {
		t.Errorf("input after now: %v", got)
	}
}
