// Package client talks to a running `vigil supervise` over its control
// socket: one JSON request, one JSON answer (supervisor.Request and
// supervisor.Response). The CLI, the tests and the benchmarks use it; the
// daemon itself never does.
package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// Call sends one request to the daemon listening on path and returns its
// answer; an answer that is not OK is also an error, with its text.
func Call(path string, req supervisor.Request) (*supervisor.Response, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon on %s)", supervisor.ErrNotRunning, path)
		}
		return nil, fmt.Errorf("vigil: connect %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// A daemon that refuses the peer answers before reading the request
	// and closes: the send may then fail (EPIPE) with the answer, which
	// says why, already waiting to be read.
	sendErr := json.NewEncoder(c).Encode(req)
	var resp supervisor.Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		if sendErr != nil {
			return nil, fmt.Errorf("vigil: send to %s: %w", path, sendErr)
		}
		return nil, fmt.Errorf("vigil: read from %s: %w", path, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
