package supervise

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// readResponse reads one response from c, or the error that ended the
// connection.
func readResponse(c net.Conn, within time.Duration) (supervisor.Response, error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	var r supervisor.Response
	err := json.NewDecoder(c).Decode(&r)
	return r, err
}

// The control socket's inputs are bounded (issue 11): one streamed request
// took the supervisor to 1.6 GiB, and nothing capped connections. A request
// over the size limit is refused after the limit, not buffered; connections
// beyond the cap are answered with an error at once; an idle connection is
// closed; and the daemon answers status throughout.
func TestControlSocketBounds(t *testing.T) {
	d := newDaemon(t, "")
	d.start()
	rss0 := d.status().Supervisor.RSSBytes

	// A request that never ends: the daemon must stop reading it (our
	// writes fail) long before 64 MiB, and say why.
	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	chunk := []byte(`{"cmd":"` + strings.Repeat("a", 64<<10))
	written := 0
	for written < 64<<20 {
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			break
		}
		chunk = []byte(strings.Repeat("a", 64<<10))
	}
	if written >= 64<<20 {
		t.Errorf("the daemon read a %d MiB request without refusing it", written>>20)
	}
	if r, err := readResponse(c, 5*time.Second); err == nil && !strings.Contains(r.Error, "larger than") {
		t.Errorf("the refusal does not say the request is too large: %+v", r)
	}
	c.Close()
	st := d.status()
	if grow := int64(st.Supervisor.RSSBytes) - int64(rss0); grow > 16<<20 {
		t.Errorf("the supervisor grew by %d MiB reading one request", grow>>20)
	}

	// MaxControlConns idle connections hold every slot; the next one is
	// answered with an error at once, not queued.
	dial := func() net.Conn {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	idle := make([]net.Conn, supervisor.MaxControlConns)
	dialed := make([]time.Time, len(idle))
	for i := range idle {
		idle[i], dialed[i] = dial(), time.Now()
	}
	// A slot is freed just after its answer is written: one of ours may
	// have been refused while the status call above still held its slot.
	// Such a connection is answered at once; dial it again.
	for again := true; again; {
		again = false
		for i, c := range idle {
			if r, err := readResponse(c, 50*time.Millisecond); err == nil {
				if !strings.Contains(r.Error, "too many control connections") {
					t.Fatalf("an idle connection was answered %+v", r)
				}
				c.Close()
				idle[i], dialed[i], again = dial(), time.Now(), true
			}
		}
	}
	var refused supervisor.Response
	c, err = net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	refused, err = readResponse(c, 2*time.Second)
	c.Close()
	if err != nil || refused.OK || !strings.Contains(refused.Error, "too many control connections") {
		t.Errorf("connection %d of %d: %+v, %v; want refused at once", supervisor.MaxControlConns+1, supervisor.MaxControlConns, refused, err)
	}

	// The idle ones are answered and closed after RequestTimeout.
	for i, c := range idle {
		r, err := readResponse(c, supervisor.RequestTimeout+10*time.Second)
		if err != nil {
			t.Errorf("idle connection %d: %v, want an answer and close", i, err)
		} else if !strings.Contains(r.Error, "no complete request") {
			t.Errorf("idle connection %d answered %+v", i, r)
		}
		if held := time.Since(dialed[i]); held < supervisor.RequestTimeout-time.Second {
			t.Errorf("idle connection %d closed after %v, before the %v timeout", i, held, supervisor.RequestTimeout)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("idle connection %d not closed: %v", i, err)
		}
		c.Close()
	}

	// Slots are free again.
	if _, err := client.Call(d.socket, supervisor.Request{Cmd: "status"}); err != nil {
		t.Errorf("status after the idle connections closed: %v", err)
	}
	d.stop(15 * time.Second)
}
