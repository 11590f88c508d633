package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
)

// needSipp returns sipp's path. sipp comes from Debian's sip-tester package;
// CI installs it, so there a missing sipp is a failure, not a skip.
func needSipp(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("sipp not found (CI=%s): install Debian package sip-tester", os.Getenv("CI"))
	}
	t.Skip("sipp not found: apt-get install sip-tester (this is a failure when CI is set)")
	return ""
}

// startSipp runs sipp as a UAS with the given testdata scenario on
// 127.0.0.1 and a free port, and returns the port. It is killed by pid and
// waited for at cleanup.
func startSipp(t *testing.T, scenario string) string {
	t.Helper()
	sipp := needSipp(t)
	sf, err := filepath.Abs(filepath.Join("testdata", scenario))
	if err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	var out bytes.Buffer
	cmd := exec.Command(sipp, "-sf", sf, "-i", "127.0.0.1", "-p", port, "-nostdin", "-timeout", "120s")
	cmd.Dir = t.TempDir() // sipp may write log files into its working directory
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sipp: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sipp output (tail):\n%s", tail(out.String(), 2000))
		}
	})
	return port
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// checkOnceReady checks until the target stops refusing (sipp is up), then
// returns the first answer that is not a refusal.
func checkOnceReady(t *testing.T, c Checker) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Check(context.Background())
		if !errors.Is(err, ErrRefused) {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("target still refusing after 10s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sipHealth(target string, timeout time.Duration) *config.Health {
	return &config.Health{Kind: config.HealthSIPOptions, SIP: target, Timeout: timeout}
}

func TestSIPOptionsSipp200(t *testing.T) {
	port := startSipp(t, "sipp_options_200.xml")
	c := mustChecker(t, sipHealth("sip:127.0.0.1:"+port, 2*time.Second), nil)
	if err := checkOnceReady(t, c); err != nil {
		t.Fatalf("sipp answering 200: %v", err)
	}
	for i := range 5 {
		if err := c.Check(context.Background()); err != nil {
			t.Fatalf("check %d: %v", i+2, err)
		}
	}
}

func TestSIPOptionsSipp503(t *testing.T) {
	port := startSipp(t, "sipp_options_503.xml")
	c := mustChecker(t, sipHealth("sip:127.0.0.1:"+port, 2*time.Second), nil)
	err := checkOnceReady(t, c)
	if err == nil || err.Error() != "SIP 503 Service Unavailable" || !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("sipp answering 503: %v", err)
	}
}

// TestSIPOptionsSippMonitor drives a real-time Monitor against sipp.
func TestSIPOptionsSippMonitor(t *testing.T) {
	port := startSipp(t, "sipp_options_200.xml")
	h := sipHealth("sip:127.0.0.1:"+port, 200*time.Millisecond)
	h.Interval, h.Rise, h.Fall = 250*time.Millisecond, 2, 2
	c := mustChecker(t, h, nil)
	if err := checkOnceReady(t, c); err != nil {
		t.Fatalf("sipp: %v", err)
	}
	changes := make(chan Status, 10)
	m := NewMonitor(h, c, func(s Status) { changes <- s }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if s := waitChange(t, changes, 10*time.Second); s.State != StateHealthy {
		t.Fatalf("monitor: %+v", s)
	}
}

func TestSIPOptionsRefused(t *testing.T) {
	c := mustChecker(t, sipHealth("sip:127.0.0.1:"+freeUDPPort(t), 3*time.Second), nil)
	start := time.Now()
	err := c.Check(context.Background())
	if err == nil || err.Error() != "connection refused" || !errors.Is(err, ErrRefused) {
		t.Fatalf("nothing listening: %v", err)
	}
	// "At once": well before the retransmission at 1.5s, let alone the timeout.
	if el := time.Since(start); el > 1400*time.Millisecond {
		t.Fatalf("refusal took %v", el)
	}
}

// silentUDP is a socket that records what it gets and never answers.
func silentUDP(t *testing.T, network, addr string) (*net.UDPConn, <-chan []byte) {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP(network, la)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				close(got)
				return
			}
			got <- bytes.Clone(buf[:n])
		}
	}()
	return pc, got
}

func TestSIPOptionsTimeoutRetransmits(t *testing.T) {
	pc, got := silentUDP(t, "udp4", "127.0.0.1:0")
	c := mustChecker(t, sipHealth("sip:"+pc.LocalAddr().String(), 400*time.Millisecond), nil)
	start := time.Now()
	err := c.Check(context.Background())
	el := time.Since(start)
	if err == nil || err.Error() != "timed out after 400ms" || !errors.Is(err, ErrTimeout) {
		t.Fatalf("silent target: %v", err)
	}
	if el < 350*time.Millisecond || el > 3*time.Second {
		t.Fatalf("timed out after %v, want about 400ms", el)
	}
	recv := func() []byte {
		select {
		case b := <-got:
			return b
		case <-time.After(2 * time.Second):
			t.Fatal("target did not receive the request and its retransmission")
			return nil
		}
	}
	first, second := recv(), recv()
	if !bytes.Equal(first, second) {
		t.Fatalf("retransmission differs:\n%s\n---\n%s", first, second)
	}
	select {
	case third := <-got:
		t.Fatalf("more than one retransmission: %s", third)
	case <-time.After(100 * time.Millisecond):
	}
}

// reqHeader returns the value of the first header named name in req.
func reqHeader(req, name string) string {
	for _, l := range strings.Split(req, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// answer builds a response to req the way a UAS does (RFC 3261 8.2.6.2).
func answer(req, status string) []byte {
	return fmt.Appendf(nil, "SIP/2.0 %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s;tag=uas\r\nCall-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n",
		status, reqHeader(req, "Via"), reqHeader(req, "From"), reqHeader(req, "To"), reqHeader(req, "Call-ID"), reqHeader(req, "CSeq"))
}

// responder is a Go UAS on a real UDP socket whose reply to each request is
// scripted; it records the requests and their source addresses.
type responder struct {
	pc    *net.UDPConn
	mu    sync.Mutex
	reqs  []string
	froms []string
}

func startResponder(t *testing.T, network, addr string, reply func(n int, req string) [][]byte) *responder {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP(network, la)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	r := &responder{pc: pc}
	done := make(chan struct{})
	t.Cleanup(func() { _ = pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for n := 0; ; n++ {
			k, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := string(buf[:k])
			r.mu.Lock()
			r.reqs = append(r.reqs, req)
			r.froms = append(r.froms, from.String())
			r.mu.Unlock()
			for _, d := range reply(n, req) {
				_, _ = pc.WriteToUDP(d, from)
			}
		}
	}()
	return r
}

func (r *responder) requests() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...), append([]string(nil), r.froms...)
}

// TestSIPOptionsVerdicts answers each check with noise first (garbage, other
// transactions' 503s, a 100 Trying) and then the final response under test.
func TestSIPOptionsVerdicts(t *testing.T) {
	tests := []struct {
		status string
		want   string // "" = healthy
	}{
		{"200 OK", ""},
		{"404 Not Found", ""},
		{"405 Method Not Allowed", ""},
		{"486 Busy Here", ""},
		{"408 Request Timeout", "SIP 408 Request Timeout"},
		{"500 Server Internal Error", "SIP 500 Server Internal Error"},
		{"503 Service Unavailable", "SIP 503 Service Unavailable"},
		{"603 Decline", "SIP 603 Decline"},
	}
	for _, tc := range tests {
		t.Run(tc.status, func(t *testing.T) {
			r := startResponder(t, "udp4", "127.0.0.1:0", func(_ int, req string) [][]byte {
				noise := func(old, repl string) []byte {
					return bytes.Replace(answer(req, "503 Service Unavailable"), []byte(old), []byte(repl), 1)
				}
				cseq := reqHeader(req, "CSeq")
				return [][]byte{
					[]byte("not sip at all"),
					noise("Call-ID: ", "Call-ID: other"),
					noise("branch=z9hG4bK", "branch=z9hG4bKother"),
					noise("CSeq: "+cseq, "CSeq: 99999 OPTIONS"),
					noise("CSeq: "+cseq, "CSeq: "+strings.Replace(cseq, "OPTIONS", "INVITE", 1)),
					answer(req, "100 Trying"),
					answer(req, "180 Ringing"),
					answer(req, tc.status),
				}
			})
			c := mustChecker(t, sipHealth("sip:"+r.pc.LocalAddr().String(), 2*time.Second), nil)
			err := c.Check(context.Background())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("%s: %v, want healthy", tc.status, err)
			case tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrUnhealthy)):
				t.Fatalf("%s: %v, want %q", tc.status, err, tc.want)
			}
		})
	}
}

// TestSIPOptionsRequest checks what goes on the wire: a correct Via sent-by
// (the address the request really came from), a fresh branch and Call-ID per
// check and an increasing CSeq.
func TestSIPOptionsRequest(t *testing.T) {
	for _, tc := range []struct{ network, listen, targetFmt string }{
		{"udp4", "127.0.0.1:0", "sip:%s"},
		{"udp6", "[::1]:0", "sip:%s"},
		{"udp4", "127.0.0.1:0", "sip:health@%s;transport=udp"},
	} {
		t.Run(tc.network+"/"+tc.targetFmt, func(t *testing.T) {
			r := startResponder(t, tc.network, tc.listen, func(_ int, req string) [][]byte {
				return [][]byte{answer(req, "200 OK")}
			})
			addr := r.pc.LocalAddr().String()
			target := fmt.Sprintf(tc.targetFmt, addr)
			c := mustChecker(t, sipHealth(target, 2*time.Second), nil)
			for i := range 3 {
				if err := c.Check(context.Background()); err != nil {
					t.Fatalf("check %d: %v", i, err)
				}
			}
			reqs, froms := r.requests()
			if len(reqs) != 3 {
				t.Fatalf("got %d requests", len(reqs))
			}
			uri, _, _ := strings.Cut(target, ";")
			seen := map[string]bool{}
			for i, req := range reqs {
				if want := "OPTIONS " + uri + " SIP/2.0\r\n"; !strings.HasPrefix(req, want) {
					t.Fatalf("request line of %q, want %q", req, want)
				}
				via := reqHeader(req, "Via")
				wantVia := "SIP/2.0/UDP " + froms[i] + ";branch=z9hG4bK"
				if !strings.HasPrefix(via, wantVia) || !strings.HasSuffix(via, ";rport") {
					t.Fatalf("Via %q, want %q...;rport", via, wantVia)
				}
				if got, want := reqHeader(req, "CSeq"), fmt.Sprintf("%d OPTIONS", i+1); got != want {
					t.Fatalf("CSeq %q, want %q", got, want)
				}
				for _, h := range []string{"Max-Forwards", "From", "To", "Call-ID", "Contact", "Accept", "User-Agent", "Content-Length"} {
					if reqHeader(req, h) == "" {
						t.Fatalf("request without %s:\n%s", h, req)
					}
				}
				if !strings.Contains(reqHeader(req, "From"), ";tag=") {
					t.Fatalf("From without tag: %s", reqHeader(req, "From"))
				}
				for _, id := range []string{via, reqHeader(req, "Call-ID")} {
					if seen[id] {
						t.Fatalf("%q reused across checks", id)
					}
					seen[id] = true
				}
			}
		})
	}
}

// TestSIPOptionsAnsweredAfterRetransmit drops the first copy of each request:
// the retransmission must get the check its answer.
func TestSIPOptionsAnsweredAfterRetransmit(t *testing.T) {
	r := startResponder(t, "udp4", "127.0.0.1:0", func(n int, req string) [][]byte {
		if n%2 == 0 {
			return nil
		}
		return [][]byte{answer(req, "200 OK")}
	})
	c := mustChecker(t, sipHealth("sip:"+r.pc.LocalAddr().String(), time.Second), nil)
	start := time.Now()
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("answered retransmission: %v", err)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("healthy after %v, before the retransmission at 500ms", el)
	}
	reqs, _ := r.requests()
	if len(reqs) != 2 || reqs[0] != reqs[1] {
		t.Fatalf("want one request and its identical retransmission, got %d", len(reqs))
	}
}

func TestSIPOptionsCancel(t *testing.T) {
	pc, _ := silentUDP(t, "udp4", "127.0.0.1:0")
	c := mustChecker(t, sipHealth("sip:"+pc.LocalAddr().String(), 5*time.Second), nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := c.Check(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled check: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancel took %v to end the check", el)
	}
}
