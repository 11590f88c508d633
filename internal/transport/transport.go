// Package transport carries protocol datagrams between hosts over UDP: it
// authenticates and replay-filters what arrives, routes what leaves to the
// node manager or locator of the destination host, and counts every drop by
// reason. Bad datagrams are dropped and counted; they never stop anything.
//
// Ports: a peer's configured address (host:P) is its node manager; its
// locator listens on P+1. A witness runs only the locator, on P+1.
//
// The receive path is built so that garbage cannot starve it (docs/
// operations.md, "Cluster network"): the kernel drops datagrams from any
// source that is not a configured peer before they reach the socket
// (internal/pktfilter, nftables), and from a peer's address unless the
// datagram carries the cluster's key-derived tag (a forger of a peer's
// address without the key); the socket has a large receive buffer;
// one reader goroutine does the cheap checks (source address, size, magic,
// version, claimed sender and destination) before it spends a MAC, and
// hands only authentic, fresh messages to the protocol loop, whose timers
// (token, renewal, report) never wait behind a read.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/pktfilter"
	"github.com/vigil-project/vigil/protocol"
)

// RecvBuffer is the receive buffer the socket asks for: at the ~1 KiB a
// small datagram costs the kernel, room for thousands of datagrams, so a
// burst the reader has not drained yet does not push out a peer's.
const RecvBuffer = 8 << 20

// maxSources bounds the per-source drop counters: a flood from spoofed
// random addresses cannot grow them; the rest is counted as one.
const maxSources = 32

// episodeQuiet is how long without a drop ends a drop episode: one
// warning when drops start, one line with the totals when they stop.
const episodeQuiet = 10 * time.Second

// Inbound is an accepted datagram and when it arrived (CLOCK_BOOTTIME).
type Inbound struct {
	Msg protocol.Message
	At  time.Duration
	// Slot is the service of the Transport that accepted it
	// (config.Config.Slot): the locator serves every service's port from
	// one loop, and one channel.
	Slot int
}

// Transport is one process's UDP port: a catch-all socket, and one
// socket connected to each peer address this process talks to (a lane),
// bound to the same port. The kernel delivers a datagram whose source is
// a lane's peer address and port to that lane, ahead of and apart from the
// catch-all socket: garbage that reaches the catch-all socket (or another
// lane) neither delays a peer's datagrams nor pushes them out of a full
// buffer. Sends go out through the destination's lane.
type Transport struct {
	conn    *net.UDPConn // the catch-all socket
	lanes   map[netip.AddrPort]*net.UDPConn
	key     []byte
	self    string
	tag     uint64 // protocol.ClusterTag
	slot    int    // config.Config.Slot, stamped on each Inbound
	node    map[string]netip.AddrPort
	loc     map[string]netip.AddrPort
	peerIP  map[string]netip.Addr // the configured address of each peer id
	peerIPs map[netip.Addr]bool   // every configured peer address
	fmu     sync.Mutex            // filter: the readers share it
	// emu guards the encoder and its buffer: one keyed hash set up at
	// Open instead of one per datagram sent.
	emu     sync.Mutex
	enc     *protocol.Encoder
	sendBuf []byte
	filter  *protocol.ReplayFilter
	log     *slog.Logger
	// srcOOB, when listen is the unspecified address, is the control
	// message that sends from this host's entry address: peers check the
	// source, and routing could pick another of the host's addresses.
	srcOOB []byte

	// kfilter is nil when not installed (kernelFilter says why); kmu
	// guards it between Close and the counter poller.
	kmu          sync.Mutex
	kfilter      *pktfilter.Filter
	kernelFilter string
	rcvbuf       int

	received, sent, sendErrors atomic.Uint64
	kernelDropped, kernelTag   atomic.Uint64
	sockDropped                atomic.Uint64
	emptyReads                 atomic.Uint64 // reads that found nothing (rawBatch.each)
	mu                         sync.Mutex
	dropped                    map[string]uint64
	bySource                   map[netip.Addr]uint64
	otherSources               uint64
	ep                         episode
	quiet                      time.Duration // episodeQuiet; shorter in tests
}

// episode is a run of drops with no quiet gap of episodeQuiet.
type episode struct {
	active      bool
	start, last time.Time
	count       uint64
	reasons     map[string]uint64
}

// Open binds this host's node manager (locator false: cluster.listen) or
// locator (locator true: cluster.listen's port + 1) socket.
func Open(cfg *config.Config, pcfg protocol.Config, key []byte, locator bool, log *slog.Logger) (*Transport, error) {
	listen, err := netip.ParseAddrPort(cfg.Cluster.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: cluster.listen %q: %w", cfg.Cluster.Listen, err)
	}
	if locator {
		lp, ok := config.LocatorPort(listen.Port())
		if !ok {
			return nil, fmt.Errorf("transport: cluster.listen %s: no locator port after it", listen)
		}
		listen = netip.AddrPortFrom(listen.Addr(), lp)
	}
	t := &Transport{
		key: key, log: log, slot: cfg.Slot,
		node:     map[string]netip.AddrPort{},
		loc:      map[string]netip.AddrPort{},
		self:     pcfg.Self,
		tag:      protocol.ClusterTag(key, pcfg.Cluster),
		peerIP:   map[string]netip.Addr{},
		peerIPs:  map[netip.Addr]bool{},
		filter:   protocol.NewReplayFilter(pcfg),
		dropped:  map[string]uint64{},
		bySource: map[netip.Addr]uint64{},
		quiet:    episodeQuiet,
	}
	for _, p := range append(append([]config.Peer{}, cfg.Cluster.Nodes...), cfg.Cluster.Witnesses...) {
		ap, err := netip.ParseAddrPort(p.Address)
		if err != nil {
			return nil, fmt.Errorf("transport: peer %s address %q: %w", p.ID, p.Address, err)
		}
		lp, ok := config.LocatorPort(ap.Port())
		if !ok {
			return nil, fmt.Errorf("transport: peer %s address %s: no locator port after it", p.ID, ap)
		}
		t.node[p.ID] = ap
		t.loc[p.ID] = netip.AddrPortFrom(ap.Addr(), lp)
		t.peerIP[p.ID] = ap.Addr().Unmap()
		t.peerIPs[ap.Addr().Unmap()] = true
	}
	if t.enc, err = protocol.NewEncoder(key); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	lc := net.ListenConfig{Control: reusePort}
	pc, err := lc.ListenPacket(context.Background(), "udp", listen.String())
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", listen, err)
	}
	t.conn = pc.(*net.UDPConn)
	// The lanes bind the entry address when listen is the wildcard: a
	// connected socket's source is then the address peers check.
	bindIP := listen.Addr()
	if listen.Addr().IsUnspecified() {
		if own, ok := t.node[cfg.Cluster.Node]; ok {
			t.srcOOB = sourceOOB(t.conn, own.Addr())
			bindIP = own.Addr()
		}
	}
	t.rcvbuf = setRecvBuffer(t.conn, RecvBuffer)
	t.openLanes(cfg, locator, netip.AddrPortFrom(bindIP, listen.Port()))
	name := "nodemanager"
	if locator {
		name = "locator"
	}
	if cfg.Slot > 0 {
		name += "_s" + strconv.Itoa(cfg.Slot) // each service's processes have their own filter
	}
	t.installKernelFilter(name, listen)
	return t, nil
}

// laneBuffer is a lane's receive buffer: one peer's traffic, or a flood
// spoofing that peer, which must not take the host's memory 8 MiB a lane.
const laneBuffer = 1 << 20

// openLanes connects one socket per peer address this process hears from:
// the node manager from every locator (P+1) and the other nodes' node
// managers (P), a locator from every node's node manager (P). A lane that
// cannot be opened (no route to the peer yet) is logged and left out: its
// peer's datagrams arrive on the catch-all socket, as they all did before.
func (t *Transport) openLanes(cfg *config.Config, locator bool, bind netip.AddrPort) {
	t.lanes = map[netip.AddrPort]*net.UDPConn{}
	var dsts []netip.AddrPort
	for _, p := range cfg.Cluster.Nodes {
		if locator || p.ID != cfg.Cluster.Node {
			dsts = append(dsts, t.node[p.ID])
		}
	}
	if !locator {
		for _, p := range append(append([]config.Peer{}, cfg.Cluster.Nodes...), cfg.Cluster.Witnesses...) {
			dsts = append(dsts, t.loc[p.ID])
		}
	}
	d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(bind), Control: reusePort}
	for _, dst := range dsts {
		if _, dup := t.lanes[dst]; dup || dst == bind {
			continue
		}
		c, err := d.Dial("udp", dst.String())
		if err != nil {
			t.log.Warn("no separate socket for a peer; its datagrams share the catch-all socket", "event", "lane_error", "peer", dst.String(), "err", err)
			continue
		}
		uc := c.(*net.UDPConn)
		setRecvBuffer(uc, laneBuffer)
		t.lanes[dst] = uc
	}
}

// reusePort lets the catch-all socket and the lanes share the port.
// SO_REUSEPORT, not SO_REUSEADDR: only a process of the same user can
// join, and a program holding the port without it still makes the bind
// fail, as before.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", serr)
	}
	return nil
}

// installKernelFilter drops datagrams to the port from non-peers, and
// from peers' addresses without the cluster tag, in the kernel
// (internal/pktfilter). Without it the userspace checks still drop them,
// each at the cost of a wakeup and a read: said once in the log and in
// Stats.KernelFilter.
func (t *Transport) installKernelFilter(name string, listen netip.AddrPort) {
	loopback := listen.Addr().Unmap().IsLoopback()
	peers := make([]netip.Addr, 0, len(t.peerIPs))
	for a := range t.peerIPs {
		loopback = loopback && a.IsLoopback()
		peers = append(peers, a)
	}
	if loopback {
		// Only this host's own processes can send from loopback, and a
		// filter in the host's ruleset would outlive a test cluster.
		t.kernelFilter = "off: loopback cluster"
		return
	}
	f, err := pktfilter.Install(name, listen.Port(), peers, pktfilter.Options{Tag: t.tag})
	if err != nil {
		t.kernelFilter = "unavailable: " + err.Error()
		t.log.Warn("kernel packet filter unavailable; datagrams from non-peers are dropped in userspace only",
			"event", "kernel_filter_unavailable", "port", listen.Port(), "err", err)
		return
	}
	t.kfilter, t.kernelFilter = f, "nftables"
}

// setRecvBuffer asks for n bytes of receive buffer: SO_RCVBUFFORCE (root,
// CAP_NET_ADMIN) is not capped by net.core.rmem_max; without the
// capability SO_RCVBUF gets what rmem_max allows. It returns what the
// kernel granted (it doubles the request for its bookkeeping).
func setRecvBuffer(c *net.UDPConn, n int) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got
}

// socketDrops is the kernel's count of datagrams the socket lost (receive
// buffer full).
func socketDrops(c *net.UDPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var drops uint64
	ok := false
	_ = rc.Control(func(fd uintptr) {
		var mem [unix.SK_MEMINFO_VARS]uint32
		l := uint32(len(mem) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if errno == 0 && l >= (unix.SK_MEMINFO_DROPS+1)*4 {
			drops, ok = uint64(mem[unix.SK_MEMINFO_DROPS]), true
		}
	})
	return drops, ok
}

// sourceOOB is the control message that sends from src on a socket bound
// to the unspecified address: IPV6_PKTINFO on the dual-stack AF_INET6
// socket Go makes for a wildcard listen (the kernel takes an IPv4-mapped
// source for IPv4 peers; x/net/ipv6 refuses to marshal one, hence by
// hand), IP_PKTINFO on an AF_INET one (IPv6 disabled).
func sourceOOB(c *net.UDPConn, src netip.Addr) []byte {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	domain := 0
	_ = rc.Control(func(fd uintptr) { domain, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) })
	switch {
	case domain == unix.AF_INET6:
		var pi unix.Inet6Pktinfo
		pi.Addr = src.As16()
		return cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), unix.SizeofInet6Pktinfo))
	case domain == unix.AF_INET && src.Unmap().Is4():
		var pi unix.Inet4Pktinfo
		pi.Spec_dst = src.Unmap().As4()
		return cmsg(unix.SOL_IP, unix.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), unix.SizeofInet4Pktinfo))
	}
	return nil
}

func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// Addr is the bound address.
func (t *Transport) Addr() netip.AddrPort { return t.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close closes the socket (Run returns) and removes the kernel filter.
// Only Close closes it: the owner decides when nothing more will be sent.
func (t *Transport) Close() error {
	t.kmu.Lock()
	if t.kfilter != nil {
		if err := t.kfilter.Remove(); err != nil {
			t.log.Warn("cannot remove the kernel packet filter", "event", "kernel_filter_error", "err", err)
		}
		t.kfilter = nil
	}
	t.kmu.Unlock()
	for _, c := range t.lanes {
		_ = c.Close()
	}
	return t.conn.Close()
}

// Run reads datagrams until ctx ends or the socket is closed, delivering
// the accepted ones to out. The receive time is taken right after the read.
//
// Run never closes the socket: when ctx ends it only stops reading, and
// Send keeps working until Close. A node manager that is told to stop
// still has to hand its role over (release to the locators, transfer to
// the standby) after its main context ended; a socket closed under it made
// those sends fail and turned every orderly stop into a lease expiry.
func (t *Transport) Run(ctx context.Context, out chan<- Inbound) {
	// A read deadline in the past wakes the blocked reads without closing
	// anything.
	stop := context.AfterFunc(ctx, func() {
		_ = t.conn.SetReadDeadline(time.Unix(1, 0))
		for _, c := range t.lanes {
			_ = c.SetReadDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	go t.pollKernelCounters(ctx)
	var wg sync.WaitGroup
	for _, c := range t.lanes {
		wg.Add(1)
		go func() { defer wg.Done(); t.read(ctx, c, out) }()
	}
	t.read(ctx, t.conn, out)
	wg.Wait()
}

// read is one socket's reader: checks, MAC, replay, then out.
func (t *Transport) read(ctx context.Context, c *net.UDPConn, out chan<- Inbound) {
	dec, _ := protocol.NewDecoder(t.key) // the key was checked in Open (NewEncoder)
	// recvmmsg: under a flood the queue is never empty, and one system
	// call per batch instead of per datagram is what lets one reader
	// drain it. A buffer one byte longer than the largest datagram: a
	// longer one arrives truncated to it and is refused as too_large.
	batch, err := newRawBatch(c, readBatch, protocol.MaxDatagram+1)
	if err != nil {
		t.drop("read_error", netip.Addr{}, err)
		return
	}
	batch.empty = &t.emptyReads
	var peer netip.Addr // a lane's peer
	if ra, ok := c.RemoteAddr().(*net.UDPAddr); ok {
		peer = ra.AddrPort().Addr().Unmap()
	}
	handle := func(n int) bool {
		at := clock.Boottime()
		refused := 0
		for i := range n {
			src := batch.src(i)
			if !src.IsValid() {
				src = peer
			}
			m, why, err := t.accept(dec, batch.bufs[i][:batch.size(i)], src)
			if err != nil {
				t.drop(why, src, err)
				refused++
				continue
			}
			t.received.Add(1)
			select {
			case out <- Inbound{Msg: m, At: at, Slot: t.slot}:
			case <-ctx.Done():
				return false
			}
		}
		switch {
		case n == readBatch:
			// More are waiting (a flood): let the protocol loop and the
			// timers run between batches. The node manager and the
			// locator run on one P (cmd/vigil, runControlPlane), and a
			// reader that never blocks would hold it for 10 ms at a time.
			runtime.Gosched()
		case refused >= 2 && 2*refused > n:
			// Mostly refused: a flood that this reader keeps up with, a
			// few datagrams per wake-up. Each wake-up costs more than
			// refusing a datagram (tens of µs on a guest), and under
			// realtime the group's budget pays for both: a tagged flood
			// throttled the node manager for 100 ms a second at 30,000
			// a second. Let the queue fill for floodPause so that one
			// wake-up refuses a batch; the peer's own datagrams on this
			// socket wait at most that long.
			time.Sleep(floodPause)
		}
		return ctx.Err() == nil
	}
	for {
		err := batch.each(handle)
		switch {
		case err == nil, ctx.Err() != nil, errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, syscall.ECONNREFUSED):
			// A lane's peer was down when we sent to it (ICMP).
		default:
			t.drop("read_error", netip.Addr{}, err)
		}
	}
}

// readBatch is how many datagrams one read takes at most.
const readBatch = 64

// floodPause is how long a reader waits after a batch that was mostly
// refused, so that the next one is fuller: a thirtieth of the default
// lease, added to a peer's datagrams only during a flood.
const floodPause = 2 * time.Millisecond

// accept runs the checks in order of cost: the source address (a map
// lookup), the head (Peek: size, magic, version, type, claimed sender,
// destination, cluster), and only then the MAC and the replay window.
// A datagram is refused as "source" when it claims a peer whose
// configured address is not where it came from: a stranger forging a
// peer's id, or a peer's address spoofed with another id.
func (t *Transport) accept(dec *protocol.Decoder, b []byte, src netip.Addr) (protocol.Message, string, error) {
	// Sentinel errors, not formatted ones: under a flood this runs for
	// every datagram, and only the first of an episode is logged (with
	// its source).
	if !t.peerIPs[src] {
		return protocol.Message{}, "stranger", errStranger
	}
	h, err := protocol.Peek(b)
	if err != nil {
		return protocol.Message{}, reason(err), err
	}
	want, ok := t.peerIP[h.From]
	switch {
	case !ok:
		return protocol.Message{}, "peer", protocol.ErrPeer
	case want != src:
		return protocol.Message{}, "source", errSource
	case h.Tag != t.tag:
		return protocol.Message{}, "cluster", protocol.ErrCluster
	case h.To != t.self:
		return protocol.Message{}, "destination", protocol.ErrDestination
	}
	m, err := dec.Decode(b)
	if err == nil {
		t.fmu.Lock()
		err = t.filter.Accept(m)
		t.fmu.Unlock()
	}
	if err != nil {
		return protocol.Message{}, reason(err), err
	}
	return m, "", nil
}

var (
	errStranger = errors.New("transport: datagram from an address that is no configured peer's")
	errSource   = errors.New("transport: datagram claiming a peer, from another address than the peer's")
)

// pollKernelCounters reads the kernel's drops (the filter's counter, the
// socket's overflows) once a second, off the reader's and the protocol
// loop's path: a netlink dump must not delay either.
func (t *Transport) pollKernelCounters(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t.kmu.Lock()
		if t.kfilter != nil {
			if d, err := t.kfilter.Dropped(); err == nil {
				t.kernelDropped.Store(d.Strangers)
				t.kernelTag.Store(d.Tag)
			}
		}
		t.kmu.Unlock()
		var drops uint64
		for _, c := range append(slices.Collect(maps.Values(t.lanes)), t.conn) {
			if n, ok := socketDrops(c); ok {
				drops += n
			}
		}
		t.sockDropped.Store(drops)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reason names a drop for metrics and logs.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{protocol.ErrAuth, "auth"}, {protocol.ErrReplay, "replay"}, {protocol.ErrShort, "short"},
		{protocol.ErrMagic, "magic"}, {protocol.ErrVersion, "version"}, {protocol.ErrTooLarge, "too_large"},
		{protocol.ErrType, "type"}, {protocol.ErrMalformed, "malformed"}, {protocol.ErrCluster, "cluster"},
		{protocol.ErrPeer, "peer"}, {protocol.ErrDestination, "destination"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

// drop counts a dropped datagram by reason and source and logs one
// warning when an episode of drops begins; the episode's totals are logged
// when it ends (episodeQuiet without a drop, noticed here or in Stats).
func (t *Transport) drop(why string, src netip.Addr, err error) {
	now := time.Now()
	t.mu.Lock()
	t.dropped[why]++
	if src.IsValid() {
		if _, ok := t.bySource[src]; ok || len(t.bySource) < maxSources {
			t.bySource[src]++
		} else {
			t.otherSources++
		}
	}
	ended := t.endEpisode(now)
	begins := !t.ep.active
	if begins {
		t.ep = episode{active: true, start: now, reasons: map[string]uint64{}}
	}
	t.ep.last = now
	t.ep.count++
	t.ep.reasons[why]++
	t.mu.Unlock()
	t.logEnded(ended)
	if begins {
		t.log.Warn("datagrams dropped", "event", "datagram_dropped", "reason", why, "source", src.String(), "err", err,
			"note", fmt.Sprintf("one line per episode; totals when %v pass without a drop", t.quiet))
	}
}

// endEpisode closes the current episode if it has been quiet long enough
// and returns it (nil otherwise). Called with t.mu held.
func (t *Transport) endEpisode(now time.Time) *episode {
	if !t.ep.active || now.Sub(t.ep.last) < t.quiet {
		return nil
	}
	e := t.ep
	t.ep = episode{}
	return &e
}

func (t *Transport) logEnded(e *episode) {
	if e == nil {
		return
	}
	args := []any{"event", "datagram_drops_ended", "dropped", e.count, "seconds", int(e.last.Sub(e.start).Seconds())}
	reasons := make([]string, 0, len(e.reasons))
	for r := range e.reasons {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		args = append(args, "reason_"+r, e.reasons[r])
	}
	t.log.Info("datagram drops ended", args...)
}

// Send encodes e.Msg and sends it to the node manager or the locator of
// e.To, by message type.
func (t *Transport) Send(e protocol.Envelope) error {
	if e.Msg.To != e.To {
		// The MAC covers Msg.To and the receiver refuses a datagram for
		// another host: a mismatch would be sent only to be dropped.
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: %s for %q addressed to %q", e.Msg.Type, e.To, e.Msg.To)
	}
	dst, ok := t.node[e.To]
	if e.Msg.Type.ForLocator() {
		dst, ok = t.loc[e.To]
	}
	if !ok {
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: no address for %q", e.To)
	}
	t.emu.Lock()
	defer t.emu.Unlock()
	b, err := t.enc.AppendEncode(t.sendBuf[:0], e.Msg)
	if err != nil {
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: encode %s to %s: %w", e.Msg.Type, e.To, err)
	}
	t.sendBuf = b
	if lane := t.lanes[dst]; lane != nil {
		err = rawWrite(lane, b)
	} else if t.srcOOB != nil {
		_, _, err = t.conn.WriteMsgUDPAddrPort(b, t.srcOOB, dst)
	} else {
		_, err = t.conn.WriteToUDPAddrPort(b, dst)
	}
	if err != nil {
		// A peer that is down answers with ICMP; that is its business.
		t.sendErrors.Add(1)
		return fmt.Errorf("transport: send %s to %s (%s): %w", e.Msg.Type, e.To, dst, err)
	}
	t.sent.Add(1)
	return nil
}

// Stats are the transport's counters.
type Stats struct {
	Received   uint64 `json:"received"`
	Sent       uint64 `json:"sent"`
	SendErrors uint64 `json:"send_errors"`
	// Dropped is by reason: stranger (not from a peer's address), source
	// (claims a peer but comes from another address), peer, cluster,
	// destination, short, magic, version, too_large, type, malformed
	// (checked before the MAC), auth, replay (after it); kernel_filter
	// (from a non-peer, dropped by the nftables filter before reaching
	// the socket), kernel_tag (from a peer's address without the cluster
	// tag: a forger without the key, or a peer with another key, cluster
	// name or wire version, dropped there too) and overflow (the socket's
	// receive buffer was full) are the kernel's counts.
	Dropped map[string]uint64 `json:"dropped,omitempty"`
	// DroppedBySource is the drops in userspace by source address, for
	// the first 32 sources seen; the rest are under "other".
	DroppedBySource map[string]uint64 `json:"dropped_by_source,omitempty"`
	// KernelFilter: "nftables" (strangers and untagged datagrams dropped
	// in the kernel), "off:
	// loopback cluster", or "unavailable: why".
	KernelFilter string `json:"kernel_filter,omitempty"`
	// RecvBufferBytes is the socket's receive buffer as the kernel
	// granted it.
	RecvBufferBytes int `json:"recv_buffer_bytes,omitempty"`
}

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	ended := t.endEpisode(time.Now())
	d := make(map[string]uint64, len(t.dropped)+2)
	for k, v := range t.dropped {
		d[k] = v
	}
	var src map[string]uint64
	if len(t.bySource) > 0 {
		src = make(map[string]uint64, len(t.bySource)+1)
		for a, v := range t.bySource {
			src[a.String()] = v
		}
		if t.otherSources > 0 {
			src["other"] = t.otherSources
		}
	}
	t.mu.Unlock()
	t.logEnded(ended)
	if n := t.kernelDropped.Load(); n > 0 {
		d["kernel_filter"] = n
	}
	if n := t.kernelTag.Load(); n > 0 {
		d["kernel_tag"] = n
	}
	if n := t.sockDropped.Load(); n > 0 {
		d["overflow"] = n
	}
	return Stats{Received: t.received.Load(), Sent: t.sent.Load(), SendErrors: t.sendErrors.Load(), Dropped: d,
		DroppedBySource: src, KernelFilter: t.kernelFilter, RecvBufferBytes: t.rcvbuf}
}

// ProtocolConfig is the protocol core's view of a validated config.
func ProtocolConfig(cfg *config.Config) protocol.Config { return cfg.Protocol() }
