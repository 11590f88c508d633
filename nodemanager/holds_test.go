package nodemanager

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// keep may run before the channel exists; flush hands over what is
// pending, the latest per key, and closes this process's duplicates.
func TestHoldsFlushLatestPerKey(t *testing.T) {
	parent, child := supervisorChannel(t)

	pipe := func() (*os.File, int) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		d, err := unix.Dup(int(w.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		return r, d
	}
	h := &holds{log: slog.New(slog.DiscardHandler)}
	oldR, oldW := pipe()
	newR, newW := pipe()
	h.keep("port eth0", []int{oldW})
	h.keep("port eth0", []int{newW}) // an interface re-created before the first report
	b := make([]byte, 1)
	if n, err := oldR.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("the superseded duplicate is still open: %d %v", n, err)
	}
	h.flush(child)
	m, files, err := parent.RecvFiles()
	if err != nil || m.Type != ctlmsg.TypeHold || m.Hold != "port eth0" || len(files) != 1 {
		t.Fatalf("supervisor got %+v with %d files (%v)", m, len(files), err)
	}
	if len(h.pending) != 0 {
		t.Fatalf("still pending after a flush: %v", h.pending)
	}
	// The node manager's duplicate is closed: the supervisor's file is
	// the pipe's only writer now.
	files[0].Close()
	if n, err := newR.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("after the supervisor's close: %d %v, want EOF (a duplicate leaked)", n, err)
	}
}
