package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// tcpChecker is healthy when a TCP connection to addr completes.
type tcpChecker struct {
	addr    string
	timeout time.Duration
}

func newTCPChecker(addr string, timeout time.Duration) (*tcpChecker, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("%w: tcp %q: want host:port", ErrConfig, addr)
	}
	return &tcpChecker{addr: addr, timeout: timeout}, nil
}

func (c *tcpChecker) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(cctx, "tcp", c.addr)
	if err != nil {
		return dialError(ctx, c.timeout, err)
	}
	// Only the handshake matters; closing at once keeps no fd per check.
	_ = conn.Close()
	return nil
}

// dialError turns a dial/IO error into the brief form a status shows.
func dialError(parent context.Context, timeout time.Duration, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return failf(ErrRefused, "connection refused")
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return timedOut(timeout)
	}
	if perr := parent.Err(); perr != nil {
		return perr
	}
	// Strip net.OpError's "dial tcp 127.0.0.1:1:" prefix: the address is
	// already known to whoever reads the check's status.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
