package e2e

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTrace writes SIPp short-message lines: "S|R call-id cseq start-line".
func writeTrace(t *testing.T, path string, lines ...string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		f := strings.SplitN(l, "|", 4)
		b.WriteString("2026-12-04\t02:44:54.681449\t1796352294.681449\t" + f[0] + "\t" + f[1] + "\tCSeq:" + f[2] + "\t" + f[3] + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	invite = "INVITE sip:service@192.0.2.100:5060 SIP/2.0"
	ack    = "ACK sip:service@192.0.2.100:5060 SIP/2.0"
	bye    = "BYE sip:service@192.0.2.100:5060 SIP/2.0"
)

// The shape of the calls bench-failover lost on 2026-12-04: INVITE and
// 200 OK through the old active a, the ACK and every BYE to the new active
// b, whose server had dropped the orphan ACK's call and so never answered
// the BYE.
func TestExplainLostStraddled(t *testing.T) {
	uac := filepath.Join(t.TempDir(), "uac")
	writeTrace(t, uac,
		"S|1-1@c|1 INVITE|"+invite,
		"R|1-1@c|1 INVITE|SIP/2.0 100 Trying",
		"R|1-1@c|1 INVITE|SIP/2.0 200 OK",
		"S|1-1@c|1 ACK|"+ack,
		"S|1-1@c|2 BYE|"+bye,
		"S|1-1@c|2 BYE|"+bye,
		// A call that succeeded through b alone.
		"S|2-1@c|1 INVITE|"+invite,
		"R|2-1@c|1 INVITE|SIP/2.0 200 OK",
		"S|2-1@c|1 ACK|"+ack,
		"S|2-1@c|2 BYE|"+bye,
		"R|2-1@c|2 BYE|SIP/2.0 200 OK",
		// A call whose INVITE was sent and never answered, and one the
		// capture missed.
		"S|3-1@c|1 INVITE|"+invite,
		"S|4-1@c|1 INVITE|"+invite,
	)
	captured := map[string][]capturedMsg{
		"1-1@c": {
			{out: true, peer: "a", cseq: "1 INVITE", line: invite},
			{peer: "a", cseq: "1 INVITE", line: "SIP/2.0 100 Trying"},
			{peer: "a", cseq: "1 INVITE", line: "SIP/2.0 200 OK"},
			{out: true, peer: "b", cseq: "1 ACK", line: ack},
			{out: true, peer: "b", cseq: "2 BYE", line: bye},
			{out: true, peer: "b", cseq: "2 BYE", line: bye},
		},
		"2-1@c": {{out: true, peer: "b", cseq: "1 INVITE", line: invite}},
		"3-1@c": {{out: true, peer: "a", cseq: "1 INVITE", line: invite}},
	}
	lost, err := explainLost(uac, captured)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 3 {
		t.Fatalf("lost %d calls, want 3 (1-1, 3-1, 4-1): %+v", len(lost), lost)
	}
	l := lost[0]
	if l.CallID != "1-1@c" || !l.Straddled() || strings.Join(l.Nodes, ",") != "a,b" {
		t.Errorf("call 1-1: %+v, want straddled over a then b", l)
	}
	if want := "INVITE→a 100←a 200←a ACK→b BYE→b BYE→b"; l.Story != want {
		t.Errorf("call 1-1 story %q, want %q", l.Story, want)
	}
	if l := lost[1]; l.CallID != "3-1@c" || l.Straddled() || l.Story != "INVITE→a" {
		t.Errorf("call 3-1: %+v, want an unanswered INVITE that straddled nothing", l)
	}
	if l := lost[2]; l.CallID != "4-1@c" || l.Straddled() || l.Story != "not captured" {
		t.Errorf("call 4-1: %+v, want not captured", l)
	}
	r := Result{Calls: Calls{Failed: 3}, Lost: lost}
	if r.Straddled() != 1 || !strings.Contains(r.Line(), "lost_traced=3 lost_straddled=1") {
		t.Errorf("Straddled() = %d, line %q", r.Straddled(), r.Line())
	}
}

// parseSIPFrame takes the Call-ID, CSeq and start line of a SIP datagram
// to or from port 5060, and nothing else.
func TestParseSIPFrame(t *testing.T) {
	frame := func(sport, dport uint16, payload string) []byte {
		ip := make([]byte, 20+8+len(payload))
		ip[0], ip[9] = 0x45, 17
		binary.BigEndian.PutUint16(ip[20:], sport)
		binary.BigEndian.PutUint16(ip[22:], dport)
		copy(ip[28:], payload)
		return ip
	}
	msg := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.50:5060\r\nCall-ID: 7-42@192.0.2.50\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
	cid, m, ok := parseSIPFrame(frame(5060, 5060, msg))
	if !ok || cid != "7-42@192.0.2.50" || m.cseq != "2 BYE" || m.line != "SIP/2.0 200 OK" {
		t.Errorf("parsed %q %+v %v", cid, m, ok)
	}
	if _, _, ok := parseSIPFrame(frame(5060, 5060, strings.Replace(msg, "Call-ID", "i", 1))); !ok {
		t.Error("compact Call-ID header (i:) not parsed")
	}
	if _, _, ok := parseSIPFrame(frame(4000, 4001, msg)); ok {
		t.Error("a datagram on other ports parsed as SIP")
	}
	if _, _, ok := parseSIPFrame(frame(5060, 5060, "garbage")); ok {
		t.Error("garbage parsed as SIP")
	}
	if _, _, ok := parseSIPFrame([]byte{0x45}); ok {
		t.Error("a truncated packet parsed")
	}
}
