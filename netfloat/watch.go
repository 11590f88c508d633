package netfloat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventReady is sent once, when Watch's subscriptions are live: nothing
	// that happens afterwards is missed.
	EventReady EventKind = iota + 1
	// EventAddrRemoved: a held VIP's address disappeared without Release
	// (deleted by someone else, expired, or flushed: IPv6 VIPs are flushed
	// when their interface is set administratively down).
	// The VIP is no longer held; Claim it again if still entitled.
	EventAddrRemoved
	// EventLinkDown / EventLinkUp: an interface that carries or carried a
	// VIP, or is in Options.Interfaces, lost or regained its carrier
	// (IFF_UP and IFF_RUNNING), or was deleted.
	EventLinkDown
	EventLinkUp
	// EventConflict: another MAC announced or answered for a held VIP (an
	// ARP frame with it as sender address, or an NA with it as target).
	EventConflict
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventAddrRemoved:
		return "addr-removed"
	case EventLinkDown:
		return "link-down"
	case EventLinkUp:
		return "link-up"
	case EventConflict:
		return "conflict"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one observation of Watch. VIP is set for AddrRemoved and
// Conflict, Interface for all but Ready, MAC for Conflict.
type Event struct {
	Kind      EventKind
	VIP       VIP
	Interface string
	MAC       net.HardwareAddr
}

// Watch reports address, link and conflict events of the Manager's namespace
// on events until ctx is done (it then returns nil) or a netlink
// subscription fails (an error: the caller should treat its view as stale
// and restart Watch). Only one Watch may run at a time. Events are sent
// blocking; a consumer that lags loses conflict events only (counted in
// Stats.EventsDropped).
func (m *Manager) Watch(ctx context.Context, events chan<- Event) error {
	sink := make(chan Event, 64)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.sink != nil {
		m.mu.Unlock()
		return ErrWatching
	}
	m.sink = sink
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.sink = nil
		m.mu.Unlock()
	}()

	done := make(chan struct{})
	addrs := make(chan netlink.AddrUpdate, 256)
	links := make(chan netlink.LinkUpdate, 256)
	subErr := make(chan error, 2)
	onErr := func(err error) {
		select {
		case subErr <- err:
		default:
		}
	}
	var nsp = &m.ns
	if !m.ns.IsOpen() {
		nsp = nil
	}
	// Closing done makes the library close its sockets and, after a last
	// pending send, its channels; drain them so its goroutines end.
	defer func() {
		close(done)
		go func() {
			for range addrs {
			}
		}()
		go func() {
			for range links {
			}
		}()
	}()
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: nsp, ErrorCallback: onErr, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(addrs)
		close(links)
		return fmt.Errorf("netfloat: subscribe to addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: nsp, ErrorCallback: onErr, ListExisting: true, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(links)
		return fmt.Errorf("netfloat: subscribe to links: %w", err)
	}

	emit := func(e Event) bool {
		select {
		case events <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !emit(Event{Kind: EventReady}) {
		return nil
	}
	up := map[int]bool{} // last seen state by ifindex; unknown counts as up
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-sink:
			if !emit(e) {
				return nil
			}
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("netfloat: address subscription ended: %w", errors.Join(drainErr(subErr), errSubscriptionEnded))
			}
			if u.NewAddr {
				continue
			}
			if e, ok := m.addrRemoved(u); ok && !emit(e) {
				return nil
			}
		case u, ok := <-links:
			if !ok {
				return fmt.Errorf("netfloat: link subscription ended: %w", errors.Join(drainErr(subErr), errSubscriptionEnded))
			}
			attrs := u.Attrs()
			if attrs == nil {
				continue
			}
			now := u.Header.Type != unix.RTM_DELLINK &&
				u.Flags&unix.IFF_UP != 0 && u.Flags&unix.IFF_RUNNING != 0
			was, known := up[attrs.Index]
			if !known {
				was = true
			}
			if u.Header.Type == unix.RTM_DELLINK {
				delete(up, attrs.Index)
			} else {
				up[attrs.Index] = now
			}
			m.mu.Lock()
			interesting := m.ifaces[attrs.Name]
			m.mu.Unlock()
			if now == was || !interesting {
				continue
			}
			kind := EventLinkUp
			if !now {
				kind = EventLinkDown
			}
			m.log.Info("vip interface "+kind.String(), "interface", attrs.Name)
			if !emit(Event{Kind: kind, Interface: attrs.Name}) {
				return nil
			}
		}
	}
}

var errSubscriptionEnded = errors.New("subscription closed")

func drainErr(c chan error) error {
	select {
	case err := <-c:
		return err
	default:
		return nil
	}
}

// addrRemoved turns an RTM_DELADDR into an event if it removed a held VIP.
// The deletion is checked against a fresh dump, because a notification can
// be stale: Release then Claim of the same VIP must not report the old
// deletion as the loss of the new address.
func (m *Manager) addrRemoved(u netlink.AddrUpdate) (Event, bool) {
	a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	if !ok {
		return Event{}, false
	}
	a = a.Unmap()
	var h *holding
	m.mu.Lock()
	for _, x := range m.held {
		if x.index == u.LinkIndex && x.vip.Prefix.Addr() == a {
			h = x
		}
	}
	m.mu.Unlock()
	if h == nil {
		return Event{}, false
	}
	present, err := m.present(h.index, a)
	if err != nil {
		m.log.Warn("vip removal check failed", "vip", h.vip.String(), "err", err)
	}
	if present {
		return Event{}, false
	}
	m.mu.Lock()
	if m.held[h.vip.key()] == h {
		delete(m.held, h.vip.key())
		h.cancel()
	} else {
		h = nil // released or re-claimed meanwhile
	}
	m.mu.Unlock()
	if h == nil {
		return Event{}, false
	}
	m.log.Warn("vip removed from outside", "vip", h.vip.String())
	return Event{Kind: EventAddrRemoved, VIP: h.vip, Interface: h.vip.Interface}, true
}

func (m *Manager) present(index int, a netip.Addr) (bool, error) {
	addrs, err := m.addrDump()
	if err != nil {
		return false, err
	}
	for _, k := range addrs {
		if k.Index == index && k.Prefix.Addr() == a {
			return true, nil
		}
	}
	return false, nil
}
