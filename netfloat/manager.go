package netfloat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sentinel errors callers test with errors.Is.
var (
	ErrInvalidVIP     = errors.New("netfloat: invalid VIP")
	ErrInvalidOptions = errors.New("netfloat: invalid options")
	ErrNotHeld        = errors.New("netfloat: VIP not held")
	// ErrNoLease: with Options.LeaseClock set, an announcement was due
	// after the lease deadline (SetLeaseDeadline) and was not sent.
	ErrNoLease  = errors.New("netfloat: no valid lease: announcement not sent")
	ErrClosed   = errors.New("netfloat: manager closed")
	ErrWatching = errors.New("netfloat: Watch already running")
)

// VIP is one floating address on one interface.
type VIP struct {
	// Prefix is the address with the prefix length of its subnet, e.g.
	// 192.0.2.100/24 or 2001:db8::100/64.
	Prefix    netip.Prefix
	Interface string
}

func (v VIP) String() string {
	if !v.Prefix.IsValid() {
		return ""
	}
	return v.Prefix.String() + "@" + v.Interface
}

type vipKey struct {
	addr  netip.Addr
	iface string
}

func (v VIP) key() vipKey { return vipKey{v.Prefix.Addr(), v.Interface} }

// Defaults of Options.
const (
	DefaultLifetime     = 2 * time.Second
	DefaultGARPCount    = 3
	DefaultGARPInterval = 100 * time.Millisecond
	DefaultLabel        = "vigil"
	DefaultProtocol     = 0x56 // 'V'; any value > 3 (the kernel's own) that no other tool on the host uses
)

// Options configure a Manager. The zero value is usable: every zero field
// takes its documented default.
type Options struct {
	// Lifetime is the valid and preferred lifetime the kernel gets for each
	// VIP; Extend restarts it. If everything that should renew it is dead,
	// the kernel removes the address itself after Lifetime (plus up to 1 s:
	// the kernel counts whole seconds and rounds its expiry timer up).
	// Rounded up to whole seconds. Default 2 s: the lease (200 ms by default)
	// has long expired by then, so this is only the backstop for a host whose
	// node manager and supervisor fence both died; yet with Extend called on
	// lease renewal (at least every Lifetime/4 is advised) it survives several
	// missed renewals, far more than any scheduling stall we tolerate.
	Lifetime time.Duration
	// GARPCount announcements (gratuitous ARP in request and reply form, or
	// one unsolicited NA) are sent per Claim: the first before Claim returns,
	// the others every GARPInterval in the background, in case the first is
	// lost. Default 3 every 100 ms.
	GARPCount    int
	GARPInterval time.Duration
	// RefreshInterval, if > 0, re-announces every held VIP that often after
	// the initial burst (keepalived's garp_master_refresh). Default 0: off.
	RefreshInterval time.Duration
	// ProbeWindow, if > 0, makes Claim probe for another holder of the
	// address (an RFC 5227 ARP probe, or a DAD Neighbor Solicitation) and
	// report one that answers within the window in ClaimReport.Conflict. The
	// probe does not delay the claim: the lease, not the probe, decides who
	// holds a VIP (during a switchover the old active still holds it on
	// purpose), so the address is added and announced at once and only
	// Claim's return waits for the window. Default 0: no probe.
	ProbeWindow time.Duration
	// Label marks our IPv4 addresses with the label "<ifname>:<Label>" (shown
	// by `ip addr`, works on every kernel) when that fits the kernel's 15
	// characters. Default "vigil".
	Label string
	// Protocol is the IFA_PROTO value stored with every VIP (IPv4 and IPv6,
	// Linux >= 6.1, `ip -d addr` shows it as "proto"). Reconcile recognises
	// our addresses by it or by the IPv4 label. Default DefaultProtocol.
	Protocol uint8
	// Interfaces are reported by Watch's link events even before a VIP was
	// claimed on them (a standby wants to know its VIP interface is down).
	Interfaces []string
	// LeaseClock, if set, gates every announcement (GARP, NA, the first
	// of a Claim, the background burst and refreshes, Announce) on the
	// lease: a frame is sent only if LeaseClock() is before the deadline
	// last given to SetLeaseDeadline, read at the moment of sending. Only a
	// lease holder may speak for an address; a cached role is not enough
	// (a node resuming from a stop would announce before it noticed its
	// lease had run out). Give it the lease's own clock (CLOCK_BOOTTIME).
	// Nil: no gate (tools and tests that hold no lease).
	LeaseClock func() time.Duration
	// KernelLease, if set, makes the kernel itself stop serving each
	// held VIP when the lease ends, with no process running (see
	// KernelLease and NFTLease): Claim puts the VIP into it before the
	// address is added, SetLeaseDeadline refreshes it (in the background,
	// never delaying the caller), Quiet stops only its announcements,
	// Release removes it. Guard names the configured VIPs it protects.
	// Needs LeaseClock. A failure to program it is logged once per
	// episode, disarms it (today's behaviour: the address lifetime is the
	// bound) and shows in KernelLeaseStats. Nil: no kernel lease.
	KernelLease KernelLease
	// KeepOpen, if set, gets a duplicate of the packet sockets of each
	// interface when they are opened (key "port <ifname>": a later call
	// with the same key replaces them) and owns it. Closing a packet
	// socket waits for an RCU grace period (10-30 ms with the kernel's
	// default RCU), twice per interface; a process whose exit should not
	// (a node manager, whose crash release waits for its reaping) hands
	// them to one that outlives it. Called with the Manager's lock held:
	// it must not block.
	KeepOpen func(key string, fds []int)
	Logger   *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.KernelLease != nil && o.LeaseClock == nil {
		return o, fmt.Errorf("%w: a kernel lease needs the LeaseClock", ErrInvalidOptions)
	}
	if o.Lifetime < 0 || o.GARPCount < 0 || o.GARPInterval < 0 || o.RefreshInterval < 0 || o.ProbeWindow < 0 {
		return o, fmt.Errorf("%w: negative duration or count", ErrInvalidOptions)
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	o.Lifetime = (o.Lifetime + time.Second - 1).Truncate(time.Second)
	if o.GARPCount == 0 {
		o.GARPCount = DefaultGARPCount
	}
	if o.GARPInterval == 0 {
		o.GARPInterval = DefaultGARPInterval
	}
	if o.Label == "" {
		o.Label = DefaultLabel
	}
	if o.Protocol == 0 {
		o.Protocol = DefaultProtocol
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// ClaimReport says how a Claim went. Durations count from Claim's start.
type ClaimReport struct {
	// Conflict is the MAC address of another holder that answered the
	// probe or announced the address during the probe window; nil if none
	// (or no probe was asked for).
	Conflict       net.HardwareAddr
	AddedAfter     time.Duration // the address was in the kernel
	AnnouncedAfter time.Duration // the first announcement was sent
	// Err (ClaimAll only): this VIP could not be claimed and is not held.
	Err error
}

// Stats are counters since New, for metrics.
type Stats struct {
	GARPSent      uint64 // ARP frames sent: each announcement is a request and a reply
	NASent        uint64 // unsolicited Neighbor Advertisements sent
	ProbesSent    uint64 // ARP probes and DAD solicitations sent
	Conflicts     uint64 // frames from another MAC claiming a held or probed VIP
	EventsDropped uint64 // conflict events lost because Watch's consumer lagged
	Unleased      uint64 // announcements not sent: due after the lease deadline
}

type holding struct {
	vip    VIP
	index  int
	cancel context.CancelFunc
	done   chan struct{} // closed when its announcer has returned
	// quiet (Quiet): no longer announced; the kernel lease keeps
	// accepting packets to it until acceptUntil, answers no ARP/NDP.
	quiet       bool
	acceptUntil time.Duration
}

type probeWaiter struct {
	addr  netip.Addr
	iface string
	c     chan net.HardwareAddr
}

// Manager adds, extends, announces and removes floating IPs in one network
// namespace. Its methods are safe for concurrent use.
type Manager struct {
	h    *netlink.Handle
	ns   netns.NsHandle
	opts Options
	log  *slog.Logger

	nlSock    *nl.NetlinkSocket
	nlSockets map[int]*nl.SocketHandle

	mu       sync.Mutex
	closed   bool
	held     map[vipKey]*holding
	ports    map[string]*port
	probes   map[*probeWaiter]struct{}
	sink     chan Event // non-nil while Watch runs
	ifaces   map[string]bool
	lastWarn map[vipKey]time.Time
	guard    map[netip.Addr]bool   // Guard: configured VIPs the kernel lease protects
	claiming map[vipKey]netip.Addr // Claim under way: in the kernel lease before the address exists

	// The kernel lease (Options.KernelLease). klMu serialises its
	// transactions, each built from the state at its start, so the last
	// one to run carries the latest state.
	kl   KernelLease
	klMu sync.Mutex
	// klStats has its own lock, never held across a transaction: the
	// node manager's loop reads it for every full report, and a
	// transaction can wait in the kernel for as long as a starved kworker
	// (nf_tables' commit mutex); the loop must not wait with it.
	klStatsMu sync.Mutex
	klStats   KernelLeaseStats // under klStatsMu
	klKick    chan struct{}    // SetLeaseDeadline, applyKernel → refresher
	klStop    chan struct{}
	klWG      sync.WaitGroup
	// klEnd is the lease deadline (LeaseClock, ns) the last successful
	// transaction gave the kernel, and klRefreshAt the moment half of what
	// it gave has run out, when the next renewal is passed on (see
	// refresher). Both 0 while nothing is programmed or it failed: then
	// every renewal is passed on.
	klEnd, klRefreshAt atomic.Int64

	wg sync.WaitGroup // announcers and port readers

	garpSent, naSent, probesSent, conflicts, dropped atomic.Uint64
	leaseUntil                                       atomic.Int64 // LeaseClock deadline, ns
	leaseMax                                         atomic.Int64 // the latest deadline ever given, ns
	unleased                                         atomic.Uint64
}

// SetLeaseDeadline sets when the lease that entitles this host to announce
// ends, on Options.LeaseClock; 0 (or any past value) stops announcements
// at once. Without a LeaseClock it has no effect.
//
// With a KernelLease, a later deadline than any before (a renewal) reaches
// the kernel through the background refresher, which gives every held
// VIP's elements the time left until it; the caller never waits for the
// kernel. Not every renewal is passed on: only once half of what the
// kernel was last given has run out (see refresher). An earlier deadline
// (the role given up or lost) changes nothing in the kernel: its elements
// end at the deadline they were given, which the protocol allowed, and
// Quiet and Release remove them sooner.
func (m *Manager) SetLeaseDeadline(until time.Duration) {
	m.leaseUntil.Store(int64(until))
	for {
		prev := m.leaseMax.Load()
		if int64(until) <= prev {
			return
		}
		if m.leaseMax.CompareAndSwap(prev, int64(until)) {
			break
		}
	}
	if m.kl == nil || m.opts.LeaseClock() < time.Duration(m.klRefreshAt.Load()) {
		return // the kernel still has more than half of what it was given: the refresher's timer passes this on
	}
	if m.busy() {
		m.kickRefresher()
	}
}

// leased says whether an announcement may leave now.
func (m *Manager) leased() bool {
	if m.opts.LeaseClock == nil {
		return true
	}
	return m.opts.LeaseClock() < time.Duration(m.leaseUntil.Load())
}

// New returns a Manager acting in the namespace of h. ns must be that same
// namespace: it is where the packet and netlink sockets are opened; pass
// netns.None() for the calling process's own namespace.
func New(h *netlink.Handle, ns netns.NsHandle, opts Options) (*Manager, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil netlink handle", ErrInvalidOptions)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netfloat: netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	if err := errors.Join(sock.SetSendTimeout(&tv), sock.SetReceiveTimeout(&tv), sock.SetExtAck(true)); err != nil {
		sock.Close()
		return nil, fmt.Errorf("netfloat: netlink socket options: %w", err)
	}
	m := &Manager{
		h: h, ns: ns, opts: opts, log: opts.Logger,
		nlSock:    sock,
		nlSockets: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}},
		held:      map[vipKey]*holding{},
		ports:     map[string]*port{},
		probes:    map[*probeWaiter]struct{}{},
		ifaces:    map[string]bool{},
		lastWarn:  map[vipKey]time.Time{},
		guard:     map[netip.Addr]bool{},
		claiming:  map[vipKey]netip.Addr{},
		kl:        opts.KernelLease,
	}
	for _, name := range opts.Interfaces {
		m.ifaces[name] = true
	}
	if m.kl != nil {
		m.klStats.Enabled = true
		m.klKick, m.klStop = make(chan struct{}, 1), make(chan struct{})
		m.klWG.Add(1)
		go m.refresher()
	}
	return m, nil
}

// Close stops announcements and closes the sockets. It leaves the addresses
// in place: call Release first to drop them, or let their lifetime expire.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for _, h := range m.held {
		h.cancel()
	}
	var errs []error
	for _, p := range m.ports {
		errs = append(errs, p.close())
	}
	m.mu.Unlock()
	m.wg.Wait()
	if m.kl != nil {
		close(m.klStop)
		m.klWG.Wait()
	}
	m.nlSock.Close()
	return errors.Join(errs...)
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	return Stats{
		GARPSent:      m.garpSent.Load(),
		NASent:        m.naSent.Load(),
		ProbesSent:    m.probesSent.Load(),
		Conflicts:     m.conflicts.Load(),
		EventsDropped: m.dropped.Load(),
		Unleased:      m.unleased.Load(),
	}
}

// Normalize returns v as the manager holds it (an IPv4-mapped address
// unmapped, its prefix length with it), or an error wrapping ErrInvalidVIP
// when it cannot float.
func Normalize(v VIP) (VIP, error) {
	p, err := NormalizePrefix(v.Prefix)
	if err != nil {
		return v, err
	}
	if v.Interface == "" || len(v.Interface) >= unix.IFNAMSIZ {
		return v, fmt.Errorf("%w: interface %q of %s", ErrInvalidVIP, v.Interface, v.Prefix)
	}
	return VIP{Prefix: p, Interface: v.Interface}, nil
}

// AddressError is a prefix that cannot be a floating address, and why.
type AddressError struct {
	Prefix netip.Prefix
	Reason string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("%v: address %s: %s", ErrInvalidVIP, e.Prefix, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidVIP) true.
func (e *AddressError) Unwrap() error { return ErrInvalidVIP }

// NormalizePrefix is the address half of Normalize: p unmapped, or an
// *AddressError. Configuration validation calls it, so that `vigil check`
// refuses every address a claim would refuse at takeover.
func NormalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	a := p.Addr().Unmap()
	bits := p.Bits()
	if p.Addr().Is4In6() {
		bits -= 96
	}
	n := netip.PrefixFrom(a, bits)
	if why := unfloatable(n); why != "" {
		return p, &AddressError{Prefix: p, Reason: why}
	}
	return n, nil
}

// unfloatable says why p cannot be a floating address, or returns "".
func unfloatable(p netip.Prefix) string {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return "not a valid prefix (an IPv4-mapped address needs a length of at least 96)"
	case a.IsUnspecified():
		return "the unspecified address is no host's address"
	case a.IsLoopback():
		return "a loopback address is local to each host"
	case a.IsMulticast():
		return "a multicast address is no host's address"
	case a.IsLinkLocalUnicast():
		return "a link-local address is not unique beyond one link"
	case p.Bits() == 0:
		return "a /0 prefix would route every destination to the interface"
	}
	if a.Is4() && p.Bits() <= 30 {
		switch a {
		case p.Masked().Addr():
			return fmt.Sprintf("the network address of %s is no host's address", p.Masked())
		case lastAddr(p):
			return fmt.Sprintf("the broadcast address of %s is no host's address", p.Masked())
		}
	}
	return ""
}

// lastAddr is the highest address in IPv4 prefix p (its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// label is the IPv4 label for ifname, or "" when it would not fit IFNAMSIZ.
func (m *Manager) label(ifname string) string {
	l := ifname + ":" + m.opts.Label
	if len(l) >= unix.IFNAMSIZ {
		return ""
	}
	return l
}

func (m *Manager) lifetimeSecs() uint32 { return uint32(m.opts.Lifetime / time.Second) }

// Claim takes v: optionally probes for another holder (Options.ProbeWindow),
// adds the address with the lifetime and our mark, sends the first
// announcement and schedules the rest. Claiming a VIP already held refreshes
// it and announces it again. A conflict does not stop the claim (the lease
// is the arbiter); it is reported.
func (m *Manager) Claim(ctx context.Context, v VIP) (ClaimReport, error) {
	start := time.Now()
	var rep ClaimReport
	v, err := Normalize(v)
	if err != nil {
		return rep, err
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	p, err := m.port(v.Interface)
	if err != nil {
		return rep, err
	}

	var probe *probeWaiter
	if m.opts.ProbeWindow > 0 {
		probe = &probeWaiter{addr: v.Prefix.Addr(), iface: v.Interface, c: make(chan net.HardwareAddr, 1)}
		m.mu.Lock()
		m.probes[probe] = struct{}{}
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			delete(m.probes, probe)
			m.mu.Unlock()
		}()
		if err := p.probe(v.Prefix.Addr()); err != nil {
			return rep, err
		}
		m.probesSent.Add(1)
	}

	m.mu.Lock()
	prev := m.held[v.key()]
	m.mu.Unlock()
	if prev != nil && prev.vip.Prefix != v.Prefix && prev.index == p.index {
		// Same address, new prefix length: remove it first, because an
		// IPv6 replace would keep the old length (IPv4 would add a second
		// address).
		if err := m.addrDel(prev.index, prev.vip.Prefix); err != nil {
			return rep, err
		}
	}
	if m.kl != nil {
		// Allowed to answer for the address before it exists; a
		// failure falls back to today's behaviour (applyKernel).
		m.mu.Lock()
		m.claiming[v.key()] = v.Prefix.Addr()
		m.mu.Unlock()
		_ = m.applyKernel()
	}
	if err := m.addrReplace(p.index, v.Prefix, m.label(v.Interface), m.lifetimeSecs()); err != nil {
		if m.kl != nil {
			m.mu.Lock()
			delete(m.claiming, v.key())
			m.mu.Unlock()
			_ = m.applyKernel()
		}
		return rep, err
	}
	rep.AddedAfter = time.Since(start)

	m.mu.Lock()
	delete(m.claiming, v.key())
	if m.closed {
		m.mu.Unlock()
		return rep, ErrClosed
	}
	old := m.held[v.key()]
	if old != nil {
		old.cancel()
	}
	actx, cancel := context.WithCancel(context.Background())
	h := &holding{vip: v, index: p.index, cancel: cancel, done: make(chan struct{})}
	m.held[v.key()] = h
	m.wg.Add(1)
	m.mu.Unlock()

	err = m.announce(p, v)
	rep.AnnouncedAfter = time.Since(start)
	go m.announcer(actx, v, h.done)
	if err != nil {
		return rep, err
	}
	m.log.Info("vip claimed", "vip", v.String(), "added_us", rep.AddedAfter.Microseconds(),
		"announced_us", rep.AnnouncedAfter.Microseconds())

	if probe != nil {
		t := time.NewTimer(m.opts.ProbeWindow - time.Since(start))
		defer t.Stop()
		select {
		case mac := <-probe.c:
			rep.Conflict = mac
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return rep, nil
}

// announcer sends the rest of the burst, then the periodic refreshes.
func (m *Manager) announcer(ctx context.Context, v VIP, done chan<- struct{}) {
	defer m.wg.Done()
	defer close(done)
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for i := 1; i < m.opts.GARPCount; i++ {
		if !sleep(m.opts.GARPInterval) {
			return
		}
		m.backgroundAnnounce(v)
	}
	for m.opts.RefreshInterval > 0 && sleep(m.opts.RefreshInterval) {
		m.backgroundAnnounce(v)
	}
}

func (m *Manager) backgroundAnnounce(v VIP) {
	err := m.Announce(v)
	switch {
	case err == nil, errors.Is(err, ErrNotHeld):
	case errors.Is(err, ErrNoLease):
		// The holder releases the address when it notices; until then
		// it keeps quiet.
		m.log.Debug("vip announcement skipped: lease over", "vip", v.String())
	default:
		m.log.Warn("vip announcement failed", "vip", v.String(), "err", err)
	}
}

// Announce sends one announcement for a held VIP: a gratuitous ARP request
// and a gratuitous ARP reply (receivers differ in which they honour), or an
// unsolicited Neighbor Advertisement with the Override flag to all-nodes.
func (m *Manager) Announce(v VIP) error {
	v, err := Normalize(v)
	if err != nil {
		return err
	}
	m.mu.Lock()
	_, held := m.held[v.key()]
	m.mu.Unlock()
	if !held {
		// Announcing an address we do not have would draw its traffic
		// into a black hole.
		return fmt.Errorf("%w: %s", ErrNotHeld, v)
	}
	p, err := m.port(v.Interface)
	if err != nil {
		return err
	}
	return m.announce(p, v)
}

func (m *Manager) announce(p *port, v VIP) error {
	a := v.Prefix.Addr()
	if a.Is4() {
		for _, f := range [][]byte{garpRequest(p.mac, a), garpReply(p.mac, a)} {
			// Checked per frame, right before it leaves.
			if !m.leased() {
				m.unleased.Add(1)
				return fmt.Errorf("%w: %s", ErrNoLease, v)
			}
			if err := p.send(p.arp, f); err != nil {
				return fmt.Errorf("netfloat: gratuitous ARP for %s: %w", v, err)
			}
			m.garpSent.Add(1)
		}
		return nil
	}
	if !m.leased() {
		m.unleased.Add(1)
		return fmt.Errorf("%w: %s", ErrNoLease, v)
	}
	if err := p.send(p.nd, unsolicitedNA(p.mac, a)); err != nil {
		return fmt.Errorf("netfloat: unsolicited NA for %s: %w", v, err)
	}
	m.naSent.Add(1)
	return nil
}

// Extend restarts the lifetime of a held VIP (an RTM_NEWADDR replace). It
// re-creates the address if it vanished meanwhile; Watch reports such a
// removal, after which Extend fails with ErrNotHeld until the next Claim.
func (m *Manager) Extend(v VIP) error {
	notHeld, err := m.ExtendAll([]VIP{v})
	if len(notHeld) > 0 {
		return fmt.Errorf("%w: %s", ErrNotHeld, v)
	}
	return err
}

// holdingOf returns the holding of v, ErrNotHeld if there is none.
func (m *Manager) holdingOf(v VIP) (*holding, error) {
	v, err := Normalize(v)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	h := m.held[v.key()]
	m.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotHeld, v)
	}
	return h, nil
}

// Quiet stops announcing a held VIP but keeps the address and keeps
// reporting other MACs that claim it (EventConflict). A node that handed
// the role over keeps serving the address this way until its successor's
// announcement is seen (make-before-break), then calls Release. When Quiet
// returns, its last announcement has gone out. With a
// KernelLease the host also stops answering ARP/NDP for it at once (so no
// client is sent back here), while packets already on their way are still
// accepted until the end of the lease it held.
func (m *Manager) Quiet(v VIP) error {
	if _, err := m.holdingOf(v); err != nil {
		return err
	}
	_, err := m.QuietAll([]VIP{v})
	return err
}

// Refuse is Quiet for a break-before-make handover (config
// announce.handover_gap): the host stops announcing v and, through the
// kernel lease, stops answering ARP/NDP for it and refuses every packet to
// it at once, while the address stays (answers to requests taken before
// still leave from it) until Release. Without an armed kernel lease it
// returns ErrKernelLeaseUnavailable and changes nothing: the caller
// releases the address instead.
func (m *Manager) Refuse(v VIP) error {
	if _, err := m.holdingOf(v); err != nil {
		return err
	}
	_, err := m.RefuseAll([]VIP{v})
	return err
}

// Release stops announcing v and removes the address. An address (or
// interface) that is already gone is not an error.
func (m *Manager) Release(v VIP) error { return m.ReleaseAll([]VIP{v}) }

// Held returns the VIPs this Manager holds, sorted.
func (m *Manager) Held() []VIP {
	m.mu.Lock()
	out := make([]VIP, 0, len(m.held))
	for _, h := range m.held {
		out = append(out, h.vip)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b VIP) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Interface, b.Interface))
	})
	return out
}

// Reconcile removes every address in the namespace that carries our mark
// (IFA_PROTO Options.Protocol, or our IPv4 label) and is not in held, and
// forgets held VIPs not in held. Addresses without our mark are never
// touched. Use it at start-up to clear what a crashed predecessor left.
func (m *Manager) Reconcile(held []VIP) (removed []VIP, err error) {
	keep := map[vipKey]bool{}
	for _, v := range held {
		nv, err := Normalize(v)
		if err != nil {
			return nil, err
		}
		keep[nv.key()] = true
	}
	m.mu.Lock()
	for k, h := range m.held {
		if !keep[k] {
			h.cancel()
			delete(m.held, k)
		}
	}
	m.mu.Unlock()
	_ = m.applyKernel()

	addrs, err := m.addrDump()
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	var errs []error
	var reqs []*nl.NetlinkRequest
	var gone []kaddr
	var stale []VIP
	for _, a := range addrs {
		name, ok := names[a.Index]
		if !ok {
			l, err := m.h.LinkByIndex(a.Index)
			if err != nil {
				continue // link vanished with its addresses
			}
			name = l.Attrs().Name
			names[a.Index] = name
		}
		ours := a.Proto == m.opts.Protocol || (a.Prefix.Addr().Is4() && a.Label != "" && a.Label == m.label(name))
		v := VIP{Prefix: a.Prefix, Interface: name}
		if !ours || keep[v.key()] {
			continue
		}
		reqs = append(reqs, m.addrDelReq(a.Index, a.Prefix))
		gone = append(gone, a)
		stale = append(stale, v)
	}
	// In one batch: a fence or a crash release of hundreds of addresses
	// is not hundreds of round trips.
	for i, err := range m.execBatch(reqs) {
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("netfloat: delete %s from ifindex %d: %w", gone[i].Prefix, gone[i].Index, err))
			continue
		}
		m.log.Info("stale vip removed", "vip", stale[i].String())
		removed = append(removed, stale[i])
	}
	return removed, errors.Join(errs...)
}

// observe handles a frame in which another MAC claims addr on port p.
func (m *Manager) observe(p *port, c claimFrame) {
	k := vipKey{c.Addr, p.name}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.held[k]
	probed := false
	for w := range m.probes {
		if w.addr == c.Addr && w.iface == p.name {
			probed = true
			select {
			case w.c <- c.MAC:
			default:
			}
		}
	}
	if h == nil && !probed {
		return
	}
	m.conflicts.Add(1)
	// Debug: whether a frame is a conflict or the successor of a planned
	// handover announcing is the caller's call, and it logs that.
	if now := time.Now(); now.Sub(m.lastWarn[k]) >= time.Second {
		m.lastWarn[k] = now
		m.log.Debug("vip claimed by another MAC", "addr", c.Addr.String(), "interface", p.name, "mac", c.MAC.String(),
			"frame", c.Form, "held", h != nil)
	}
	if h != nil && m.sink != nil {
		select {
		case m.sink <- Event{Kind: EventConflict, VIP: h.vip, Interface: p.name, MAC: c.MAC}:
		default:
			m.dropped.Add(1)
		}
	}
}
