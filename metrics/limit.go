package metrics

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// serverLimits bound what clients of /metrics can make the supervisor
// hold: without them 2,000 idle keep-alive connections cost it 2,000 file
// descriptors and 62 MiB.
type serverLimits struct {
	// maxConns caps open connections. A new one past the cap closes the
	// connection idle the longest (or never used) instead of waiting, so a
	// flood of idle connections cannot lock a scraper out; if every one
	// is serving a request, the new one is closed.
	maxConns int
	// idle closes a keep-alive connection with no next request; longer
	// than Prometheus's usual scrape intervals, so a scraper keeps its.
	idle time.Duration
	// readHeader, read and write bound one request: its header, the whole
	// request, and the response (longer than Handler's own timeout).
	readHeader, read, write time.Duration
	maxHeaderBytes          int
}

// defaultLimits are what Serve uses. A handful of Prometheus servers and an
// operator's curl need a few connections; 16 leaves room for more.
var defaultLimits = serverLimits{
	maxConns:       16,
	idle:           90 * time.Second,
	readHeader:     5 * time.Second,
	read:           10 * time.Second,
	write:          DefaultSnapshotTimeout + 10*time.Second,
	maxHeaderBytes: 16 << 10,
}

// apply sets the limits on srv, whose listener is wrapped by l.
func (lim serverLimits) apply(srv *http.Server, l *limitListener) {
	srv.ReadHeaderTimeout = lim.readHeader
	srv.ReadTimeout = lim.read
	srv.WriteTimeout = lim.write
	srv.IdleTimeout = lim.idle
	srv.MaxHeaderBytes = lim.maxHeaderBytes
	srv.ConnState = l.connState
}

// limitListener caps the open connections of one http.Server; the server's
// ConnState hook tells it which are serving a request and so must not be
// closed to make room.
type limitListener struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[*limitConn]struct{}
	seq   uint64 // orders connections by when they last became idle
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
	busy bool   // serving a request (http.StateActive); guarded by l.mu
	idle uint64 // l.seq when it was accepted or last became idle
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, max: max, conns: map[*limitConn]struct{}{}}
}

// Accept returns the next connection, first closing the longest-idle one
// when at the cap; a connection that finds every slot busy is closed and
// Accept waits for the next.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitConn{Conn: c, l: l}
		victim, ok := l.admit(lc)
		if victim != nil {
			victim.Close()
		}
		if ok {
			return lc, nil
		}
		c.Close()
	}
}

func (l *limitListener) admit(lc *limitConn) (victim *limitConn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		for c := range l.conns {
			if !c.busy && (victim == nil || c.idle < victim.idle) {
				victim = c
			}
		}
		if victim == nil {
			return nil, false
		}
		// Forget it now so that the slot is free before its Close runs.
		delete(l.conns, victim)
	}
	l.seq++
	lc.idle = l.seq
	l.conns[lc] = struct{}{}
	return victim, true
}

// connState is the http.Server's ConnState hook.
func (l *limitListener) connState(c net.Conn, s http.ConnState) {
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateActive:
		lc.busy = true
	case http.StateIdle:
		lc.busy = false
		l.seq++
		lc.idle = l.seq
	case http.StateHijacked, http.StateClosed:
		delete(l.conns, lc)
	}
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
