package health

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// sipChecker sends a SIP OPTIONS over UDP and judges the final response.
//
// Verdict, kept deliberately simple: any final response with a code below 500
// other than 408 is healthy, because a SIP server that answers 404 or 405 to
// OPTIONS is alive and parsing SIP. 408, 5xx and 6xx are unhealthy
// ("SIP 503 Service Unavailable"); an ICMP port unreachable is unhealthy at
// once ("connection refused"); no final response within the timeout is
// "timed out after X". Provisional (1xx) responses and datagrams that do not
// parse or do not belong to the transaction are ignored.
type sipChecker struct {
	target  sipTarget
	timeout time.Duration
	cseq    atomic.Uint32 // increases with every check, as a UA's CSeq would
}

func newSIPChecker(uri string, timeout time.Duration) (*sipChecker, error) {
	t, err := parseSIPTarget(uri)
	if err != nil {
		return nil, err
	}
	return &sipChecker{target: t, timeout: timeout}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (getrandom)
	return hex.EncodeToString(b)
}

func (c *sipChecker) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	deadline, _ := cctx.Deadline()

	// A connected socket from an ephemeral port: the kernel filters datagrams
	// from other sources and reports ICMP port unreachable as ECONNREFUSED.
	var d net.Dialer
	conn, err := d.DialContext(cctx, "udp", c.target.addr())
	if err != nil {
		return dialError(ctx, c.timeout, err)
	}
	defer conn.Close()
	// Cancellation of ctx interrupts a blocked read.
	stop := context.AfterFunc(cctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("sip %s: unexpected local address %v", c.target.addr(), conn.LocalAddr())
	}
	local := netipAddrPortUnmap(ua.AddrPort())
	req := &sipRequest{
		target:  c.target,
		local:   local.String(),
		branch:  "z9hG4bK" + randomHex(8),
		callID:  randomHex(12),
		fromTag: randomHex(4),
		cseq:    c.cseq.Add(1),
	}
	msg := req.build()
	if _, err := conn.Write(msg); err != nil {
		return c.ioError(ctx, err)
	}

	// One retransmission at half the timeout, same branch (RFC 3261 17.1.2.2
	// style, squeezed into the check's budget).
	retransAt := start.Add(c.timeout / 2)
	retransmitted := false
	buf := make([]byte, 65535)
	for {
		if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		rd := deadline
		if !retransmitted && retransAt.Before(rd) {
			rd = retransAt
		}
		if err := conn.SetReadDeadline(rd); err != nil {
			return fmt.Errorf("sip %s: %w", c.target.addr(), err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if perr := ctx.Err(); perr != nil && !errors.Is(perr, context.DeadlineExceeded) {
					return perr
				}
				if !retransmitted && time.Now().Before(deadline) {
					retransmitted = true
					if _, err := conn.Write(msg); err != nil {
						return c.ioError(ctx, err)
					}
					continue
				}
				return timedOut(c.timeout)
			}
			return c.ioError(ctx, err)
		}
		resp, err := parseSIPResponse(buf[:n])
		if err != nil || !req.matches(resp) || resp.code < 200 {
			continue
		}
		if resp.code < 500 && resp.code != 408 {
			return nil
		}
		return failf(ErrUnhealthy, "%s", strings.TrimSpace(fmt.Sprintf("SIP %d %s", resp.code, resp.reason)))
	}
}

func (c *sipChecker) ioError(ctx context.Context, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return failf(ErrRefused, "connection refused")
	}
	if perr := ctx.Err(); perr != nil {
		return perr
	}
	return fmt.Errorf("sip %s: %w", c.target.addr(), err)
}
