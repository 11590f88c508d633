package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/netfloat"
)

// The control socket speaks one JSON request and one JSON response per
// connection. Only root (or the daemon's own uid) may send every command;
// members of runtime.control_group may ask for status (controlaccess.go).
//
// Every input is bounded, since a stuck or hostile client must cost the
// daemon neither memory nor descriptors: a request is at most
// MaxRequestBytes, it must arrive within RequestTimeout of the connection,
// and at most MaxControlConns connections are served at once (the next one
// is answered with an error and closed).

// Request is a control-socket request.
type Request struct {
	Cmd  string `json:"cmd"`            // status | restart | reload | switchover | maintenance
	Name string `json:"name,omitempty"` // restart: the process; switchover: the target node ("" = any); maintenance: on|off
	// Service: switchover: the service to move ("": the only one; with
	// several, required).
	Service string `json:"service,omitempty"`
}

// Response is a control-socket response.
type Response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// ConfigErrors: a reload refused because the file is invalid, one
	// FILE:LINE:COL: KEY: MSG per problem; nothing was changed.
	ConfigErrors []string `json:"config_errors,omitempty"`
	// Reload: what an applied reload did.
	Reload *ReloadResult `json:"reload,omitempty"`
	// Switchover: the role as the node manager saw it when it took the
	// request (absent from a node manager of an earlier build, or before
	// any epoch).
	Switchover *SwitchoverSeen `json:"switchover,omitempty"`
}

// SwitchoverSeen is the active role when a switchover request was taken:
// the move to wait for is one to a later epoch.
type SwitchoverSeen struct {
	Epoch  uint64 `json:"epoch"`
	Active string `json:"active,omitempty"`
}

// ReloadResult is what an applied reload did, process names by outcome.
// The stops and starts it decided run on in the background.
type ReloadResult struct {
	Config    string   `json:"config"`
	Added     []string `json:"added,omitempty"`
	Changed   []string `json:"changed,omitempty"`
	Removed   []string `json:"removed,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	// Deferred are changed settings a reload does not apply (they need a
	// restart of vigil), as in the reload_deferred log line.
	Deferred []string `json:"deferred,omitempty"`
}

// ErrNotRunning means nothing listens on the control socket.
var ErrNotRunning = errors.New("supervisor: vigil is not running")

// ErrInvalidConfig wraps why a reload refused the configuration file.
var ErrInvalidConfig = errors.New("invalid configuration")

// Bounds of the control socket. Requests are tiny JSON objects: a few
// KiB is plenty. Sixteen connections at once is more than any operator or
// scraper makes, and few enough that idle ones cannot exhaust descriptors.
const (
	MaxRequestBytes = 4 << 10
	MaxControlConns = 16
	// RequestTimeout: a connection that has not sent its whole request by
	// then is answered with an error and closed.
	RequestTimeout = 5 * time.Second
)

// loopTimeout bounds how long a request waits for the main loop; a loop that
// does not answer is itself news worth reporting.
const loopTimeout = 2 * time.Second

// commandTimeout bounds a switchover or maintenance command: long enough for
// a handover through the locators, short enough for an operator to wait.
const commandTimeout = 5 * time.Second

// refuseRunning fails when a running instance answers on the control
// socket at path.
func refuseRunning(path string) error {
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("supervisor: %s: another vigil is running", path)
	}
	return nil
}

// refuseSecondInstance fails when another Vigil runs with this control
// socket, or, on a node with floating IPs, holds floating IPs in this
// network namespace; otherwise it claims the namespace (s.owner). Two
// instances there would undo each other: the kernel lease's nftables
// tables and the address mark that a starting node manager and the fence
// clear are the namespace's, not an instance's.
func (s *Supervisor) refuseSecondInstance() error {
	if err := refuseRunning(s.cfg.Runtime.ControlSocket); err != nil {
		return err
	}
	return s.ownNamespace(s.cfg)
}

// ownNamespace claims this network namespace's floating IPs when cfg has
// some and they are not claimed yet.
func (s *Supervisor) ownNamespace(cfg *config.Config) error {
	if s.owner != nil || cfg.Cluster.Role != config.RoleNode || len(cfg.VIPs) == 0 {
		return nil
	}
	o, err := netfloat.OwnNamespace()
	if err != nil {
		return fmt.Errorf("supervisor: %w: one vigil per host (network namespace) may hold floating IPs, its kernel lease and address mark are the namespace's (docs/operations.md, \"One vigil per host\")", err)
	}
	s.owner = o
	return nil
}

func (s *Supervisor) listenControl() (*net.UnixListener, error) {
	path := s.cfg.Runtime.ControlSocket
	_, statErr := os.Stat(filepath.Dir(path))
	createdDir := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: control socket directory: %w", err)
	}
	// A socket file left by a crash would make bind fail; one that answers
	// belongs to a running instance, which we must not steal from.
	if err := refuseRunning(path); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket %s: %w", path, err)
	}
	acc := lookupControlAccess(s.cfg.Runtime.ControlGroup, s.log)
	if err := acc.share(path, createdDir, s.log); err != nil {
		l.Close()
		return nil, err
	}
	go s.serveControl(l, acc)
	return l, nil
}

func (s *Supervisor) serveControl(l *net.UnixListener, acc controlAccess) {
	slots := make(chan struct{}, MaxControlConns)
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return // closed at shutdown
		}
		select {
		case slots <- struct{}{}:
			go func() {
				defer func() { <-slots }()
				s.handleControl(c, acc)
			}()
		default:
			// Answered right here: a fresh connection's send buffer is
			// empty, so this small write does not block the accept loop.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_ = json.NewEncoder(c).Encode(Response{Error: fmt.Sprintf("too many control connections (%d open); try again", MaxControlConns)})
			c.Close()
		}
	}
}

// errRequestTooLarge is what a request over MaxRequestBytes is refused with.
var errRequestTooLarge = fmt.Errorf("request larger than %d bytes", MaxRequestBytes)

// limitedReader reads at most n bytes, then fails with errRequestTooLarge
// (io.LimitReader would say EOF, which reads as a truncated request).
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errRequestTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func (s *Supervisor) handleControl(c *net.UnixConn, acc controlAccess) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(RequestTimeout))
	enc := json.NewEncoder(c)
	peer, err := acc.check(c)
	if err != nil {
		_ = enc.Encode(Response{Error: err.Error()})
		return
	}
	var req Request
	if err := json.NewDecoder(&limitedReader{r: c, n: MaxRequestBytes}).Decode(&req); err != nil {
		switch {
		case errors.Is(err, errRequestTooLarge):
			err = errRequestTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = fmt.Errorf("no complete request within %v", RequestTimeout)
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_ = enc.Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	if err := allow(peer, req.Cmd); err != nil {
		_ = enc.Encode(Response{Error: err.Error()})
		return
	}
	// The request is in: the answer may take as long as the slowest
	// command (a switchover through the locators).
	_ = c.SetDeadline(time.Now().Add(loopTimeout + commandTimeout + time.Second))
	resp := make(chan Response, 1)
	var fn func()
	switch req.Cmd {
	case "status":
		fn = func() { st := s.snapshot(); resp <- Response{OK: true, Status: &st} }
	case "restart":
		fn = func() {
			if err := s.restartProcess(req.Name); err != nil {
				resp <- Response{Error: err.Error()}
				return
			}
			resp <- Response{OK: true}
		}
	case "reload":
		fn = func() {
			res, err := s.reload()
			if err != nil {
				resp <- reloadRefused(err)
				return
			}
			resp <- Response{OK: true, Reload: res}
		}
	case "switchover", "maintenance":
		// Forwarded to the node manager; its answer arrives later, so the
		// loop hands back a channel instead of blocking on it.
		fwd := make(chan (<-chan answer), 1)
		select {
		case s.events <- func() { fwd <- s.forward(req) }:
		case <-time.After(loopTimeout):
			_ = enc.Encode(Response{Error: "supervisor main loop is not responding"})
			return
		}
		select {
		case res := <-fwd:
			select {
			case a := <-res:
				if a.err != nil {
					_ = enc.Encode(Response{Error: a.err.Error()})
					return
				}
				r := Response{OK: true}
				if req.Cmd == "switchover" && a.reply != nil && a.reply.Epoch != 0 {
					r.Switchover = &SwitchoverSeen{Epoch: a.reply.Epoch, Active: a.reply.Active}
				}
				_ = enc.Encode(r)
			case <-time.After(commandTimeout):
				_ = enc.Encode(Response{Error: "the node manager did not answer in time"})
			}
		case <-time.After(loopTimeout):
			_ = enc.Encode(Response{Error: "supervisor main loop is not responding"})
		}
		return
	default:
		_ = enc.Encode(Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
		return
	}
	select {
	case s.events <- fn:
	case <-time.After(loopTimeout):
		_ = enc.Encode(Response{Error: "supervisor main loop is not responding"})
		return
	}
	select {
	case r := <-resp:
		_ = enc.Encode(r)
	case <-time.After(loopTimeout):
		_ = enc.Encode(Response{Error: "supervisor main loop is not responding"})
	}
}

// invalidConfigError is a reload refused because of the file.
type invalidConfigError struct{ err error }

func (e *invalidConfigError) Error() string   { return "invalid configuration: " + e.err.Error() }
func (e *invalidConfigError) Unwrap() []error { return []error{ErrInvalidConfig, e.err} }

// reloadRefused is the answer to a reload that changed nothing: with the
// configuration's errors one per entry when the file was at fault.
func reloadRefused(err error) Response {
	r := Response{Error: "reload refused: " + err.Error()}
	var inv *invalidConfigError
	if !errors.As(err, &inv) {
		return r
	}
	var errs config.Errors
	if errors.As(inv.err, &errs) {
		for _, e := range errs {
			r.ConfigErrors = append(r.ConfigErrors, e.Error())
		}
		r.Error = fmt.Sprintf("reload refused: the configuration has %d error(s); nothing changed", len(errs))
		return r
	}
	// Unreadable (missing, permissions): as invalid as a bad key.
	r.ConfigErrors = []string{inv.err.Error()}
	return r
}

// Snapshot returns the current status, taken by the main loop; it is what
// the metrics endpoint scrapes. It fails when the loop does not answer
// within ctx, which is itself worth a scrape error.
func (s *Supervisor) Snapshot(ctx context.Context) (*Status, error) {
	res := make(chan Status, 1)
	select {
	case s.events <- func() { res <- s.snapshot() }:
	case <-ctx.Done():
		return nil, fmt.Errorf("supervisor: main loop not accepting work: %w", ctx.Err())
	}
	select {
	case st := <-res:
		return &st, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("supervisor: main loop did not answer: %w", ctx.Err())
	}
}
