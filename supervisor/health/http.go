package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

const (
	// maxRedirects is how many redirects a check follows; the response to the
	// next one is taken as the answer (a 3xx, which counts as healthy).
	maxRedirects = 3
	// maxDrain bounds how much of a body is read before closing it.
	maxDrain = 64 << 10
)

// httpChecker is healthy on a 2xx or 3xx answer to a GET.
type httpChecker struct {
	url     string
	timeout time.Duration
	client  *http.Client
}

func newHTTPChecker(rawURL string, timeout time.Duration) (*httpChecker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: http %q: %w", ErrConfig, rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: http %q: want an http:// or https:// URL with a host", ErrConfig, rawURL)
	}
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		// No proxy from the environment: a health check talks to the
		// process on this host, never through whatever HTTP_PROXY says.
		Proxy:       nil,
		DialContext: dialer.DialContext,
		// One connection per check, closed with the response: an idle
		// keep-alive pool would hold fds (and the target's slots) between
		// checks for nothing.
		DisableKeepAlives:     true,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	return &httpChecker{url: rawURL, timeout: timeout, client: client}, nil
}

func (c *httpChecker) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, c.url, nil)
	if err != nil {
		return fmt.Errorf("http %s: %w", c.url, err)
	}
	req.Header.Set("User-Agent", "vigil")
	resp, err := c.client.Do(req)
	if err != nil {
		return httpError(ctx, c.timeout, err)
	}
	// Drain a bounded amount so the server sees a complete exchange, then close.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return nil
	}
	return failf(ErrUnhealthy, "HTTP %d", resp.StatusCode)
}

func httpError(parent context.Context, timeout time.Duration, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return timedOut(timeout)
		}
		err = ue.Err
	}
	return dialError(parent, timeout, err)
}
