package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"
)

func TestFieldName(t *testing.T) {
	for key, want := range map[string]string{
		"process":               "PROCESS",
		"event":                 "EVENT",
		"last_exit":             "LAST_EXIT",
		"health.error":          "HEALTH_ERROR",
		"Err":                   "ERR",
		"message":               "VIGIL_MESSAGE",
		"priority":              "VIGIL_PRIORITY",
		"syslog_pid":            "VIGIL_SYSLOG_PID",
		"code_line":             "VIGIL_CODE_LINE",
		"_pid":                  "PID",
		"9lives":                "LIVES",
		"__":                    "VIGIL_",
		"späť":                  "SP__",
		strings.Repeat("k", 80): strings.Repeat("K", 64),
	} {
		if got := FieldName(key); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestPriority(t *testing.T) {
	for l, want := range map[slog.Level]sdjournal.Priority{
		slog.LevelDebug - 4: sdjournal.PriDebug,
		slog.LevelDebug:     sdjournal.PriDebug,
		slog.LevelInfo - 1:  sdjournal.PriInfo,
		slog.LevelInfo:      sdjournal.PriInfo,
		slog.LevelInfo + 1:  sdjournal.PriWarning,
		slog.LevelWarn:      sdjournal.PriWarning,
		slog.LevelError:     sdjournal.PriErr,
		slog.LevelError + 4: sdjournal.PriErr,
	} {
		if got := Priority(l); got != want {
			t.Errorf("Priority(%v) = %d, want %d", l, got, want)
		}
	}
}

type entry struct {
	msg    string
	pri    sdjournal.Priority
	fields map[string]string
}

func TestHandlerEntries(t *testing.T) {
	var got []entry
	h := New(Options{Level: slog.LevelDebug, Send: func(m string, p sdjournal.Priority, f map[string]string) error {
		got = append(got, entry{m, p, f})
		return nil
	}})
	log := slog.New(h).With("node", "a")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	log.Warn("process exited", "event", "exit", "process", "kamailio", "code", 1, "ran", 1500*time.Millisecond, "at", at)
	log.WithGroup("health").Info("check failed", "process", "rtpengine", slog.Group("sip", "target", "sip:127.0.0.1"), "err", errors.New("timeout\nafter 300ms"))
	log.Debug("tick", "message", "shadow", "", "dropped", "empty", "")

	want := []entry{
		{`process exited node=a event=exit process=kamailio code=1 ran=1.5s at=2026-01-02T03:04:05Z`, sdjournal.PriWarning, map[string]string{
			"SYSLOG_IDENTIFIER": "vigil", "NODE": "a", "EVENT": "exit", "PROCESS": "kamailio",
			"CODE": "1", "RAN": "1.5s", "AT": "2026-01-02T03:04:05Z",
		}},
		{`check failed node=a health.process=rtpengine health.sip.target=sip:127.0.0.1 health.err="timeout\nafter 300ms"`, sdjournal.PriInfo, map[string]string{
			"SYSLOG_IDENTIFIER": "vigil", "NODE": "a", "HEALTH_PROCESS": "rtpengine",
			"HEALTH_SIP_TARGET": "sip:127.0.0.1", "HEALTH_ERR": "timeout\nafter 300ms",
		}},
		{`tick node=a message=shadow empty=""`, sdjournal.PriDebug, map[string]string{
			"SYSLOG_IDENTIFIER": "vigil", "NODE": "a", "VIGIL_MESSAGE": "shadow", "EMPTY": "",
		}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].msg != want[i].msg || got[i].pri != want[i].pri || !equal(got[i].fields, want[i].fields) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestHandlerLevel(t *testing.T) {
	n := 0
	log := slog.New(New(Options{Send: func(string, sdjournal.Priority, map[string]string) error { n++; return nil }}))
	log.Debug("hidden")
	log.Info("shown")
	if n != 1 {
		t.Errorf("default level: %d entries sent, want 1 (info only)", n)
	}
	if New(Options{}).Enabled(context.Background(), slog.LevelDebug) {
		t.Error("default handler enabled for debug")
	}
}

func TestHandlerSendError(t *testing.T) {
	errBoom := errors.New("boom")
	h := New(Options{Send: func(string, sdjournal.Priority, map[string]string) error { return errBoom }})
	if err := h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "x", 0)); !errors.Is(err, errBoom) {
		t.Errorf("Handle error = %v, want %v", err, errBoom)
	}
}

// TestNativeSocket sends through go-systemd's real sender to a unixgram
// socket standing in for journald: the library's path is fixed, so a
// thread of this test gets a private mount namespace with a tmpfs on
// /run/systemd and binds its own socket at /run/systemd/journal/socket.
// It parses the datagrams with the native protocol's rules.
func TestNativeSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a private mount namespace stands in for /run/systemd/journal")
	}
	type result struct {
		dgrams [][]byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		// This thread's mount namespace is changed for good: it stays
		// locked, so the runtime ends it when the goroutine returns.
		runtime.LockOSThread()
		var res result
		defer func() { done <- res }()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			res.err = err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			res.err = err
			return
		}
		if err := os.MkdirAll("/run/systemd", 0o755); err != nil && !os.IsExist(err) {
			res.err = err
			return
		}
		if err := unix.Mount("tmpfs", "/run/systemd", "tmpfs", 0, "mode=0755"); err != nil {
			res.err = err
			return
		}
		sock := filepath.Join("/run/systemd/journal", "socket")
		if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
			res.err = err
			return
		}
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			res.err = err
			return
		}
		defer conn.Close()
		if !Available() {
			res.err = errors.New("Available() = false with a socket bound at " + sock)
			return
		}
		log := slog.New(New(Options{Identifier: "vigil-test"}))
		log.Info("process started", "event", "start", "process", "kamailio", "pid", 913)
		log.Error("two\nlines", "event", "fatal_error")
		for range 2 {
			buf := make([]byte, 65536)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				res.err = err
				return
			}
			res.dgrams = append(res.dgrams, buf[:n])
		}
	}()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	want := []map[string]string{
		{"MESSAGE": "process started event=start process=kamailio pid=913", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "vigil-test", "EVENT": "start", "PROCESS": "kamailio", "PID": "913"},
		{"MESSAGE": "two\nlines event=fatal_error", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "vigil-test", "EVENT": "fatal_error"},
	}
	for i, d := range res.dgrams {
		got, err := parseNative(d)
		if err != nil {
			t.Fatalf("datagram %d %q: %v", i, d, err)
		}
		if !equal(got, want[i]) {
			t.Errorf("datagram %d:\n got %q\nwant %q", i, got, want[i])
		}
	}
}

// parseNative decodes journald's native protocol: KEY=value\n, or KEY\n,
// a little-endian 64-bit length, the value and \n for values with newlines.
func parseNative(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, errors.New("field without newline")
		}
		line := string(b[:nl])
		b = b[nl+1:]
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
			continue
		}
		if len(b) < 8 {
			return nil, errors.New("short binary field " + line)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return nil, errors.New("bad binary field " + line)
		}
		out[line] = string(b[:n])
		b = b[n+1:]
	}
	return out, nil
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
