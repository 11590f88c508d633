package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// serveLimited runs the real server (serveWith, what Serve runs) with lim
// on a loopback port and returns its address.
func serveLimited(t *testing.T, src Source, lim serverLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveWith(ctx, ln, NewCollector(src), nil, lim) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serveWith: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serveWith did not stop within 10s")
		}
	})
	return ln.Addr().String()
}

// serverConnFDs counts this process's open file descriptors that are the
// server's side of a TCP connection to addr (a 127.0.0.1 port): what the
// supervisor holds per client.
func serverConnFDs(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	local := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ... inode (field 9); 0A = LISTEN.
		if len(f) > 9 && f[1] == local && f[3] != "0A" {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && inodes[l] {
			n++
		}
	}
	return n
}

// dialScrape connects, scrapes /metrics once with keep-alive and then
// watches the connection for the server closing it.
func dialScrape(t *testing.T, addr string, closed chan<- struct{}) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: vigil\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("scrape on a new connection: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	resp.Body.Close()
	c.SetReadDeadline(time.Time{})
	go watchClose(br, closed)
	return c
}

// watchClose signals closed when the peer closes (or resets) the
// connection; the client never sends again, so any read returning is that.
func watchClose(r io.Reader, closed chan<- struct{}) {
	var b [1]byte
	for {
		if _, err := r.Read(b[:]); err != nil {
			closed <- struct{}{}
			return
		}
	}
}

func waitClosed(t *testing.T, closed <-chan struct{}, n int, what string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case <-closed:
		case <-deadline:
			t.Fatalf("%s: the server closed %d connections within 30s, want %d", what, i, n)
		}
	}
}

// TestMetricsConnectionCap floods the real server with the production
// limits: cap+10 idle keep-alive connections, then 2*cap connections that
// never send a byte. The server must hold at most cap (counted as its own
// open sockets), close the rest, and still answer a scrape.
func TestMetricsConnectionCap(t *testing.T) {
	lim := defaultLimits
	addr := serveLimited(t, staticSource(defaultFixture().status(t)), lim)
	closed := make(chan struct{}, 4*lim.maxConns)

	extra := 10
	for range lim.maxConns + extra {
		dialScrape(t, addr, closed)
	}
	waitClosed(t, closed, extra, "idle keep-alive flood")
	if n := serverConnFDs(t, addr); n > lim.maxConns {
		t.Fatalf("server holds %d connections, cap %d", n, lim.maxConns)
	}

	for range 2 * lim.maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go watchClose(c, closed)
	}
	// Each silent one closes the oldest idle one; the last cap stay (until
	// the header timeout).
	waitClosed(t, closed, 2*lim.maxConns, "silent flood")
	n := serverConnFDs(t, addr)
	if n > lim.maxConns {
		t.Fatalf("server holds %d connections, cap %d", n, lim.maxConns)
	}
	t.Logf("after %d connections the server holds %d (cap %d)", 3*lim.maxConns+extra, n, lim.maxConns)

	// Still answering while flooded.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape while flooded: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "vigil_build_info") {
		t.Fatalf("scrape while flooded: %s\n%.300s", resp.Status, body)
	}
	if n := serverConnFDs(t, addr); n > lim.maxConns {
		t.Fatalf("after the scrape the server holds %d connections, cap %d", n, lim.maxConns)
	}
}

// TestMetricsIdleTimeout: an idle keep-alive connection is closed by the
// server after the idle timeout (shortened here), not kept forever.
func TestMetricsIdleTimeout(t *testing.T) {
	lim := defaultLimits
	lim.idle = 300 * time.Millisecond
	if defaultLimits.idle <= 0 || defaultLimits.idle > 5*time.Minute {
		t.Fatalf("default idle timeout %v: want a bound of minutes at most", defaultLimits.idle)
	}
	addr := serveLimited(t, staticSource(defaultFixture().status(t)), lim)
	closed := make(chan struct{}, 1)
	dialScrape(t, addr, closed)
	start := time.Now()
	waitClosed(t, closed, 1, "idle keep-alive connection")
	if d := time.Since(start); d < lim.idle/2 {
		t.Fatalf("closed after %v, before the idle timeout %v", d, lim.idle)
	}
	if n := serverConnFDs(t, addr); n != 0 {
		t.Fatalf("server still holds %d connections", n)
	}
}

// TestMetricsHeaderLimit: a request header over the limit is refused with
// 431 instead of being buffered (net/http's default allows 1 MiB).
func TestMetricsHeaderLimit(t *testing.T) {
	addr := serveLimited(t, staticSource(defaultFixture().status(t)), defaultLimits)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		// The server may answer and close before the whole header is
		// written; the write's error is not the point.
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: vigil\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", 128<<10))
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to an oversized header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: %s, want 431", resp.Status)
	}
}

// TestMetricsAllBusyRefusesNew: with every slot serving a request (here a
// stuck snapshot), a new connection is closed at once rather than queued.
func TestMetricsAllBusyRefusesNew(t *testing.T) {
	entered, release := make(chan struct{}, 8), make(chan struct{})
	st := &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node"}
	lim := defaultLimits
	lim.maxConns = 2
	addr := serveLimited(t, func(ctx context.Context) (*supervisor.Status, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return st, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, lim)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	results := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := client.Get("http://" + addr + "/metrics")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = errors.New(resp.Status)
				}
			}
			results <- err
		}()
	}
	for range 2 {
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the two scrapes did not reach the source within 30s")
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: vigil\r\n\r\n")
	var b [1]byte
	_, err = c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a connection past the cap, all slots busy, was kept waiting instead of closed")
	}
	if err == nil {
		t.Fatal("a connection past the cap, all slots busy, was answered")
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("a scrape holding a slot failed: %v", err)
		}
	}
}
