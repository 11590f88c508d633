package transport

import (
	"context"
	"net/netip"

	"github.com/vigil-project/vigil/protocol"
)

// Endpoint is what a driver (the node manager, the locator) needs of its
// port: send a protocol message to a peer's node manager or locator,
// receive authenticated messages, counters for its report. *Transport is
// the UDP one; internal/transport/transporttest has an in-memory network
// for unit tests of the drivers (drop, delay, duplicate, partition).
type Endpoint interface {
	// Send encodes and sends e.Msg to e.To's node manager or locator, by
	// message type.
	Send(e protocol.Envelope) error
	// Run delivers accepted messages to out until ctx ends; sending goes
	// on working until Close.
	Run(ctx context.Context, out chan<- Inbound)
	Stats() Stats
	Addr() netip.AddrPort
	Close() error
}

var _ Endpoint = (*Transport)(nil)
