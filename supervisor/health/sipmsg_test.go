package health

import (
	"errors"
	"strings"
	"testing"
)

// crlf turns a readable multi-line literal into wire form.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

const okResponse = `SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKabc;rport=40000;received=127.0.0.1
From: <sip:vigil@127.0.0.1:40000>;tag=1234
To: <sip:127.0.0.1:5060>;tag=99
Call-ID: deadbeef
CSeq: 7 OPTIONS
Content-Length: 0

`

func TestParseSIPResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		code    int
		reason  string
		callID  string
		cseq    uint32
		method  string
		branch  string
		wantErr bool
	}{
		{name: "crlf", in: crlf(okResponse), code: 200, reason: "OK", callID: "deadbeef", cseq: 7, method: "OPTIONS", branch: "z9hG4bKabc"},
		{name: "bare lf", in: okResponse, code: 200, reason: "OK", callID: "deadbeef", cseq: 7, method: "OPTIONS", branch: "z9hG4bKabc"},
		{name: "compact forms", in: crlf("SIP/2.0 503 Service Unavailable\nv: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx\ni: abc@host\nCSeq: 1 OPTIONS\nl: 0\n\n"),
			code: 503, reason: "Service Unavailable", callID: "abc@host", cseq: 1, method: "OPTIONS", branch: "z9hG4bKx"},
		{name: "case-insensitive names", in: crlf("SIP/2.0 404 Not Found\nVIA: SIP/2.0/UDP h;BRANCH=z9hG4bKy\nCALL-id: q\ncseq: 2 OPTIONS\n\n"),
			code: 404, reason: "Not Found", callID: "q", cseq: 2, method: "OPTIONS", branch: "z9hG4bKy"},
		{name: "folded headers", in: crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP h\n  ;branch=z9hG4bKf\nCall-ID:\n\tfolded\nCSeq: 3\n OPTIONS\n\n"),
			code: 200, reason: "OK", callID: "folded", cseq: 3, method: "OPTIONS", branch: "z9hG4bKf"},
		{name: "several vias, top one counts", in: crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP a;branch=z9hG4bKtop, SIP/2.0/UDP b;branch=z9hG4bKlow\nVia: SIP/2.0/UDP c;branch=z9hG4bKthird\ni: x\nCSeq: 1 OPTIONS\n\n"),
			code: 200, reason: "OK", callID: "x", cseq: 1, method: "OPTIONS", branch: "z9hG4bKtop"},
		{name: "spaces in sent-protocol and around colon", in: crlf("SIP/2.0 200 OK\nVia : SIP / 2.0 / UDP h:5060 ; branch = z9hG4bKs\ni: x\nCSeq: 1 OPTIONS\n\n"),
			code: 200, reason: "OK", callID: "x", cseq: 1, method: "OPTIONS", branch: "z9hG4bKs"},
		{name: "provisional", in: crlf("SIP/2.0 100 Trying\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\n\n"),
			code: 100, reason: "Trying", callID: "x", cseq: 1, method: "OPTIONS", branch: "z9hG4bK1"},
		{name: "empty reason phrase", in: crlf("SIP/2.0 200 \nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\n\n"),
			code: 200, reason: "", callID: "x", cseq: 1, method: "OPTIONS", branch: "z9hG4bK1"},
		{name: "keepalive crlf before", in: "\r\n\r\n" + crlf(okResponse), code: 200, reason: "OK", callID: "deadbeef", cseq: 7, method: "OPTIONS", branch: "z9hG4bKabc"},
		{name: "body within content-length", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\nContent-Length: 4\n\nv=0\n"),
			code: 200, reason: "OK", callID: "x", cseq: 1, method: "OPTIONS", branch: "z9hG4bK1"},

		{name: "request, not response", in: crlf("OPTIONS sip:a SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "wrong version", in: strings.Replace(crlf(okResponse), "SIP/2.0 200", "SIP/3.0 200", 1), wantErr: true},
		{name: "no space after version", in: strings.Replace(crlf(okResponse), "SIP/2.0 200", "SIP/2.0200", 1), wantErr: true},
		{name: "two-digit code", in: strings.Replace(crlf(okResponse), "200 OK", "20 OK", 1), wantErr: true},
		{name: "four-digit code", in: strings.Replace(crlf(okResponse), "200 OK", "2000 OK", 1), wantErr: true},
		{name: "code out of range", in: strings.Replace(crlf(okResponse), "200 OK", "700 Huh", 1), wantErr: true},
		{name: "no reason separator", in: strings.Replace(crlf(okResponse), "200 OK", "200", 1), wantErr: true},
		{name: "control char in reason", in: strings.Replace(crlf(okResponse), "200 OK", "200 O\x01K", 1), wantErr: true},
		{name: "no end of headers", in: strings.TrimSuffix(crlf(okResponse), "\r\n"), wantErr: true},
		{name: "no call-id", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "two call-ids", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: a\nCall-ID: b\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "no via", in: crlf("SIP/2.0 200 OK\ni: x\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "via without branch", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;rport\ni: x\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "via without sent-by", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "bad cseq", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: one OPTIONS\n\n"), wantErr: true},
		{name: "cseq without method", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1\n\n"), wantErr: true},
		{name: "header without colon", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\nGarbage\n\n"), wantErr: true},
		{name: "continuation first", in: crlf("SIP/2.0 200 OK\n v: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\n\n"), wantErr: true},
		{name: "truncated body", in: crlf("SIP/2.0 200 OK\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: x\nCSeq: 1 OPTIONS\nl: 100\n\nv=0\n"), wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseSIPResponse([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", r)
				}
				if !errors.Is(err, errSIPParse) {
					t.Fatalf("error %v does not wrap errSIPParse", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if r.code != tc.code || r.reason != tc.reason || r.callID != tc.callID || r.cseq != tc.cseq ||
				r.cseqMethod != tc.method || r.branch != tc.branch {
				t.Fatalf("got code=%d reason=%q callID=%q cseq=%d %q branch=%q", r.code, r.reason, r.callID, r.cseq, r.cseqMethod, r.branch)
			}
		})
	}
}

func TestParseSIPTarget(t *testing.T) {
	tests := []struct {
		in, uri, addr string
		wantErr       bool
	}{
		{in: "sip:127.0.0.1", uri: "sip:127.0.0.1", addr: "127.0.0.1:5060"},
		{in: "sip:127.0.0.1:5070", uri: "sip:127.0.0.1:5070", addr: "127.0.0.1:5070"},
		{in: "SIP:example.net", uri: "sip:example.net", addr: "example.net:5060"},
		{in: "sip:[2001:db8::1]:5060", uri: "sip:[2001:db8::1]:5060", addr: "[2001:db8::1]:5060"},
		{in: "sip:[2001:db8::1]", uri: "sip:[2001:db8::1]", addr: "[2001:db8::1]:5060"},
		{in: "sip:ping@127.0.0.1:5080;transport=udp", uri: "sip:ping@127.0.0.1:5080", addr: "127.0.0.1:5080"},
		{in: "sip:127.0.0.1;lr", uri: "sip:127.0.0.1", addr: "127.0.0.1:5060"},
		{in: "sips:127.0.0.1", wantErr: true},
		{in: "sip:127.0.0.1;transport=tcp", wantErr: true},
		{in: "127.0.0.1:5060", wantErr: true},
		{in: "sip:", wantErr: true},
		{in: "sip:127.0.0.1:", wantErr: true},
		{in: "sip:127.0.0.1:0", wantErr: true},
		{in: "sip:127.0.0.1:65536", wantErr: true},
		{in: "sip:127.0.0.1:50x", wantErr: true},
		{in: "sip:2001:db8::1", wantErr: true},
		{in: "sip:[2001:db8::1", wantErr: true},
		{in: "sip:[192.0.2.1]:5060", wantErr: true},
		{in: "sip:[2001:db8::1]x", wantErr: true},
		{in: "sip:@127.0.0.1", wantErr: true},
		{in: "sip:bad host", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseSIPTarget(tc.in)
		if tc.wantErr {
			if err == nil || !errors.Is(err, ErrConfig) {
				t.Errorf("parseSIPTarget(%q) = %+v, %v; want an ErrConfig error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got.uri != tc.uri || got.addr() != tc.addr {
			t.Errorf("parseSIPTarget(%q) = uri %q addr %q err %v; want %q %q", tc.in, got.uri, got.addr(), err, tc.uri, tc.addr)
		}
	}
}

// TestBuildParsesBack checks the request against RFC 3261's mandatory
// headers and makes sure a response built by echoing them matches.
func TestBuildParsesBack(t *testing.T) {
	for _, tgt := range []string{"sip:127.0.0.1:5060", "sip:[2001:db8::1]:5060"} {
		target, err := parseSIPTarget(tgt)
		if err != nil {
			t.Fatal(err)
		}
		local := "127.0.0.1:40000"
		if strings.Contains(tgt, "[") {
			local = "[2001:db8::2]:40000"
		}
		req := &sipRequest{target: target, local: local, branch: "z9hG4bK0011", callID: "c0ffee", fromTag: "t1", cseq: 42}
		wire := string(req.build())
		want := []string{
			"OPTIONS " + tgt + " SIP/2.0\r\n",
			"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK0011;rport\r\n",
			"Max-Forwards: 70\r\n",
			"From: <sip:vigil@" + local + ">;tag=t1\r\n",
			"To: <" + tgt + ">\r\n",
			"Call-ID: c0ffee\r\n",
			"CSeq: 42 OPTIONS\r\n",
			"Contact: <sip:vigil@" + local + ">\r\n",
			"Accept: application/sdp\r\n",
			"User-Agent: vigil\r\n",
			"Content-Length: 0\r\n\r\n",
		}
		if !strings.HasPrefix(wire, want[0]) || !strings.HasSuffix(wire, want[len(want)-1]) {
			t.Fatalf("request line or end wrong:\n%s", wire)
		}
		if strings.Join(want, "") != wire {
			t.Fatalf("request:\n%q\nwant:\n%q", wire, strings.Join(want, ""))
		}
		// A UAS answers by copying Via, From, To, Call-ID and CSeq.
		var resp strings.Builder
		resp.WriteString("SIP/2.0 200 OK\r\n")
		for _, l := range strings.Split(wire, "\r\n")[1:] {
			if strings.HasPrefix(l, "Via:") || strings.HasPrefix(l, "From:") || strings.HasPrefix(l, "To:") ||
				strings.HasPrefix(l, "Call-ID:") || strings.HasPrefix(l, "CSeq:") {
				resp.WriteString(l + "\r\n")
			}
		}
		resp.WriteString("Content-Length: 0\r\n\r\n")
		r, err := parseSIPResponse([]byte(resp.String()))
		if err != nil {
			t.Fatalf("parse echoed response: %v", err)
		}
		if !req.matches(r) {
			t.Fatalf("echoed response %+v does not match request", r)
		}
		for _, mutate := range []func(*sipResponse){
			func(r *sipResponse) { r.branch = "z9hG4bKother" },
			func(r *sipResponse) { r.callID = "other" },
			func(r *sipResponse) { r.cseq++ },
			func(r *sipResponse) { r.cseqMethod = "INVITE" },
		} {
			c := *r
			mutate(&c)
			if req.matches(&c) {
				t.Fatalf("mismatching response %+v matched", c)
			}
		}
	}
}

func FuzzParseSIPResponse(f *testing.F) {
	f.Add([]byte(crlf(okResponse)))
	f.Add([]byte(okResponse))
	f.Add([]byte(crlf("SIP/2.0 503 Service Unavailable\nv: SIP/2.0/UDP h;branch=z9hG4bKx\ni: a\nCSeq: 1\n OPTIONS\nl: 3\n\nabc")))
	f.Add([]byte("SIP/2.0 100 \r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseSIPResponse(data)
		if err != nil {
			if r != nil || !errors.Is(err, errSIPParse) {
				t.Fatalf("error %v with response %v", err, r)
			}
			return
		}
		if r.code < 100 || r.code > 699 {
			t.Fatalf("accepted code %d", r.code)
		}
		if r.callID == "" || r.branch == "" || r.cseqMethod == "" {
			t.Fatalf("accepted response without identity: %+v", r)
		}
		if strings.ContainsAny(r.reason, "\r\n") {
			t.Fatalf("reason %q holds a line break", r.reason)
		}
	})
}
