package e2e

import (
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

// The shape of the calls bench-failover lost on 2026-12-04: INVITE and
// 200 OK through the old active a, the ACK and every BYE to the new active
// b, whose server had dropped the orphan ACK's call and so never answered
// the BYE.
func TestExplainLostStraddled(t *testing.T) {
	dir := t.TempDir()
	uac, a, b := filepath.Join(dir, "uac"), filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeTrace(t, uac,
		"S|1-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0",
		"R|1-1@c|1 INVITE|SIP/2.0 100 Trying",
		"R|1-1@c|1 INVITE|SIP/2.0 200 OK",
		"S|1-1@c|1 ACK|ACK sip:service@192.0.2.100:5060 SIP/2.0",
		"S|1-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		"S|1-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		// A call that succeeded through b alone.
		"S|2-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0",
		"R|2-1@c|1 INVITE|SIP/2.0 200 OK",
		"S|2-1@c|1 ACK|ACK sip:service@192.0.2.100:5060 SIP/2.0",
		"S|2-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		"R|2-1@c|2 BYE|SIP/2.0 200 OK",
		// A call whose INVITE reached no one.
		"S|3-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0",
	)
	writeTrace(t, a,
		"R|1-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0",
		"S|1-1@c|1 INVITE|SIP/2.0 100 Trying",
		"S|1-1@c|1 INVITE|SIP/2.0 200 OK",
		"S|1-1@c|1 INVITE|SIP/2.0 200 OK",
	)
	writeTrace(t, b,
		"R|1-1@c|1 ACK|ACK sip:service@192.0.2.100:5060 SIP/2.0",
		"R|1-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		"R|1-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		"R|2-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0",
		"S|2-1@c|1 INVITE|SIP/2.0 200 OK",
		"R|2-1@c|1 ACK|ACK sip:service@192.0.2.100:5060 SIP/2.0",
		"R|2-1@c|2 BYE|BYE sip:service@192.0.2.100:5060 SIP/2.0",
		"S|2-1@c|2 BYE|SIP/2.0 200 OK",
	)
	lost, err := explainLost(uac, map[string]string{"a": a, "b": b})
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 2 {
		t.Fatalf("lost %d calls, want 2 (1-1 and 3-1): %+v", len(lost), lost)
	}
	l := lost[0]
	if l.CallID != "1-1@c" || !l.Straddled() || strings.Join(l.Nodes, ",") != "a,b" {
		t.Errorf("call 1-1: %+v, want straddled over a then b", l)
	}
	if want := "INVITE→a 100←a 200←a ACK→b BYE→b BYE→b"; l.Story != want {
		t.Errorf("call 1-1 story %q, want %q", l.Story, want)
	}
	if l := lost[1]; l.CallID != "3-1@c" || l.Straddled() || l.Story != "INVITE→none" {
		t.Errorf("call 3-1: %+v, want a lost INVITE that straddled nothing", l)
	}
	r := Result{Calls: Calls{Failed: 2}, Lost: lost}
	if r.Straddled() != 1 || !strings.Contains(r.Line(), "lost_traced=2 lost_straddled=1") {
		t.Errorf("Straddled() = %d, line %q", r.Straddled(), r.Line())
	}
}

// A server that never ran has no trace: its calls are simply not there.
func TestExplainLostMissingTrace(t *testing.T) {
	dir := t.TempDir()
	uac := filepath.Join(dir, "uac")
	writeTrace(t, uac, "S|1-1@c|1 INVITE|INVITE sip:service@192.0.2.100:5060 SIP/2.0")
	lost, err := explainLost(uac, map[string]string{"a": filepath.Join(dir, "none")})
	if err != nil || len(lost) != 1 || lost[0].Story != "INVITE→none" {
		t.Fatalf("lost %+v, err %v", lost, err)
	}
}
