package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
)

// execRunner is the test Runner: os/exec with the context killing the child.
// It records the pids it started so a test can check they are gone.
type execRunner struct {
	mu   sync.Mutex
	pids []int
}

func (r *execRunner) Run(ctx context.Context, argv []string) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	r.mu.Lock()
	r.pids = append(r.pids, cmd.Process.Pid)
	r.mu.Unlock()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

func mustChecker(t *testing.T, h *config.Health, run Runner) Checker {
	t.Helper()
	c, err := NewChecker(h, run)
	if err != nil {
		t.Fatalf("NewChecker(%+v): %v", h, err)
	}
	return c
}

func TestExecCheck(t *testing.T) {
	run := &execRunner{}
	h := &config.Health{Kind: config.HealthExec, Exec: []string{"/bin/true"}, Timeout: 2 * time.Second}
	if err := mustChecker(t, h, run).Check(context.Background()); err != nil {
		t.Fatalf("/bin/true: %v", err)
	}
	h.Exec = []string{"/bin/false"}
	err := mustChecker(t, h, run).Check(context.Background())
	if err == nil || err.Error() != "exit status 1" || !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("/bin/false: %v", err)
	}
	h.Exec = []string{"/bin/sh", "-c", "exit 7"}
	if err := mustChecker(t, h, run).Check(context.Background()); err == nil || err.Error() != "exit status 7" {
		t.Fatalf("exit 7: %v", err)
	}
	h.Exec = []string{"/nonexistent/vigil-check"}
	if err := mustChecker(t, h, run).Check(context.Background()); err == nil || !strings.Contains(err.Error(), "/nonexistent/vigil-check") {
		t.Fatalf("missing command: %v", err)
	}
}

func TestExecTimeoutKills(t *testing.T) {
	run := &execRunner{}
	h := &config.Health{Kind: config.HealthExec, Exec: []string{"sleep", "5"}, Timeout: 300 * time.Millisecond}
	start := time.Now()
	err := mustChecker(t, h, run).Check(context.Background())
	el := time.Since(start)
	if err == nil || err.Error() != "timed out after 300ms" || !errors.Is(err, ErrTimeout) {
		t.Fatalf("sleep 5: %v", err)
	}
	if el < 250*time.Millisecond || el > 3*time.Second {
		t.Fatalf("check took %v, want about 300ms", el)
	}
	if len(run.pids) != 1 {
		t.Fatalf("pids %v", run.pids)
	}
	// Reaped by the Runner, so the pid must no longer exist (not even as a zombie).
	if err := syscall.Kill(run.pids[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("sleep (pid %d) still there after the check: kill 0 = %v", run.pids[0], err)
	}
}

func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	h := &config.Health{Kind: config.HealthTCP, TCP: ln.Addr().String(), Timeout: 2 * time.Second}
	c := mustChecker(t, h, nil)
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("listening: %v", err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("listener never saw the connection")
	}
	_ = ln.Close()
	err = c.Check(context.Background())
	if err == nil || err.Error() != "connection refused" || !errors.Is(err, ErrRefused) {
		t.Fatalf("closed port: %v", err)
	}
}

func TestHTTPCheck(t *testing.T) {
	hang := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(strings.Repeat("x", 100000))) })
	mux.HandleFunc("/503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	var loops atomic.Int32
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		loops.Add(1)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	var ua string
	var uaMu sync.Mutex
	mux.HandleFunc("/ua", func(w http.ResponseWriter, r *http.Request) {
		uaMu.Lock()
		ua = r.UserAgent()
		uaMu.Unlock()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { close(hang); srv.Close() })

	check := func(path string) error {
		h := &config.Health{Kind: config.HealthHTTP, HTTP: srv.URL + path, Timeout: 300 * time.Millisecond}
		return mustChecker(t, h, nil).Check(context.Background())
	}
	for _, p := range []string{"/ok", "/redirect", "/loop", "/ua"} {
		if err := check(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if n := loops.Load(); n != 1+maxRedirects {
		t.Errorf("redirect loop: %d requests, want %d", n, 1+maxRedirects)
	}
	uaMu.Lock()
	if ua != "vigil" {
		t.Errorf("User-Agent %q", ua)
	}
	uaMu.Unlock()
	if err := check("/503"); err == nil || err.Error() != "HTTP 503" || !errors.Is(err, ErrUnhealthy) {
		t.Errorf("/503: %v", err)
	}
	if err := check("/404"); err == nil || err.Error() != "HTTP 404" {
		t.Errorf("/404: %v", err)
	}
	start := time.Now()
	err := check("/hang")
	if err == nil || err.Error() != "timed out after 300ms" || !errors.Is(err, ErrTimeout) {
		t.Errorf("/hang: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("/hang took %v", el)
	}
	closed := freeTCPPort(t)
	h := &config.Health{Kind: config.HealthHTTP, HTTP: "http://127.0.0.1:" + closed + "/", Timeout: time.Second}
	if err := mustChecker(t, h, nil).Check(context.Background()); !errors.Is(err, ErrRefused) {
		t.Errorf("closed port: %v", err)
	}
}

// TestChecksDoNotLeakFDs runs many checks of every socket kind and compares
// the process's open fds before and after.
func TestChecksDoNotLeakFDs(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	checkers := []Checker{
		mustChecker(t, &config.Health{Kind: config.HealthHTTP, HTTP: srv.URL, Timeout: time.Second}, nil),
		mustChecker(t, &config.Health{Kind: config.HealthTCP, TCP: ln.Addr().String(), Timeout: time.Second}, nil),
		mustChecker(t, &config.Health{Kind: config.HealthSIPOptions, SIP: "sip:127.0.0.1:" + freeUDPPort(t), Timeout: time.Second}, nil),
	}
	for _, c := range checkers { // warm up lazily opened fds (epoll etc.)
		_ = c.Check(context.Background())
	}
	before := countFDs(t)
	for range 50 {
		for _, c := range checkers {
			_ = c.Check(context.Background())
		}
	}
	// The server side of closed connections may take a moment to go.
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := countFDs(t)
		if after <= before+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open fds grew from %d to %d over 150 checks", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// freeTCPPort returns a port that was free a moment ago (nothing listens on it).
func freeTCPPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close()
	return port
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	_ = pc.Close()
	return port
}

func TestNewCheckerRejects(t *testing.T) {
	for _, h := range []*config.Health{
		nil,
		{Kind: "ping"},
		{Kind: config.HealthExec},
		{Kind: config.HealthTCP, TCP: "127.0.0.1"},
		{Kind: config.HealthHTTP, HTTP: "ftp://x/"},
		{Kind: config.HealthHTTP, HTTP: "http:///nohost"},
		{Kind: config.HealthSIPOptions, SIP: "127.0.0.1:5060"},
	} {
		if _, err := NewChecker(h, &execRunner{}); !errors.Is(err, ErrConfig) {
			t.Errorf("NewChecker(%+v) = %v, want ErrConfig", h, err)
		}
	}
	if _, err := NewChecker(&config.Health{Kind: config.HealthExec, Exec: []string{"/bin/true"}}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("exec without Runner: %v", err)
	}
}
