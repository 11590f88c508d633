package netfloat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/pktfilter"
)

// Vigil's own nftables tables. The node manager owns every chain and set
// named lease_* in them; other parts of Vigil add their own (cluster_*),
// so the tables are created without NLM_F_EXCL and never flushed or deleted
// as a whole except by DeleteTables (the supervisor's orderly stop, the
// package's removal). The operator's tables are never read or written.
const (
	TableName = pktfilter.Table // `table arp vigil` and `table inet vigil`, shared with the cluster-port filter

	setVIPs4     = "lease_vips4"     // configured VIPs (arp and inet): the rules apply to these only
	setVIPs6     = "lease_vips6"     // inet
	setAnnounce4 = "lease_announce4" // arp: may answer ARP for the address while the lease lives
	setAnnounce6 = "lease_announce6" // inet: may send neighbour advertisements for it while the lease lives
	setAccept4   = "lease_accept4"   // inet: may receive packets to it while the lease lives
	setAccept6   = "lease_accept6"
	setAlive     = "lease_alive"  // arp and inet: one element, aliveKey, whose timeout is the lease left
	setDrain4    = "lease_drain4" // inet: may receive packets to it until the element's own timeout (a drain)
	setDrain6    = "lease_drain6"
	chainOut     = "lease_out"
	chainIn      = "lease_in"
)

// aliveKey is the one element of the lease_alive sets. The announce and
// accept sets say which addresses the lease covers and change only when
// that does; the lease's end is this one element's timeout, so a refresh
// is a transaction of one element whatever the number of addresses (with
// a timeout per address, 256 addresses cost 2 ms of the node manager's
// CPU per refresh, then one at every renewal, every 10 ms).
var aliveKey = []byte{127, 86, 73, 76} // any constant: 127.'V'.'I'.'L'

// fullEvery is how often Apply reprograms every set even when only the
// lease's end moved: it heals elements someone removed.
const fullEvery = time.Second

// ErrKernelLeaseUnavailable: the kernel (or the process's privileges)
// offers no nf_tables; the kernel lease is off and the address lifetime is
// the only bound after the node manager's own.
var ErrKernelLeaseUnavailable = errors.New("netfloat: kernel lease unavailable (nf_tables)")

// NFTLease is the KernelLease in nftables: sets of the addresses the
// lease covers, gated by one lease_alive element whose timeout is the time
// left on the lease (drains carry their own), consulted by rules that drop
// what a host without the lease would send or receive for a configured
// VIP: ARP whose sender is the VIP (table arp vigil, output), neighbour
// advertisements for it and solicitations from it, and inbound packets to
// it (table inet vigil, output and prerouting). Expired elements are absent
// to the kernel's lookups, so the kernel stops serving at the end of the
// lease with no process running.
type NFTLease struct {
	clock func() time.Duration
	nsFd  int
	slot  int // the service's slot: its objects' names (SlotName)

	mu      sync.Mutex
	conn    *nftables.Conn
	refresh *aliveRefresh // the refresh's own socket and message; nil until the first

	arp, inet                          *nftables.Table
	arpVIPs4, arpAnnounce4, arpAlive   *nftables.Set
	vips4, vips6, announce6, inetAlive *nftables.Set
	accept4, accept6, drain4, drain6   *nftables.Set
	arpOut, inetOut, inetIn            *nftables.Chain
	guardSets, leaseSets, allOwnedSet  []*nftables.Set
	keepOpen                           func(key string, fds []int) // KeepSocketOpen

	// last is what the last full transaction programmed (nil: nothing
	// known, the next Apply is full), lastFull when.
	last     *leaseSets
	lastFull time.Duration

	// fallbacks counts refreshes the hand-built batch could not carry
	// (sent through the library instead), fallbackErr the last one's why.
	fallbacks   uint64
	fallbackErr string
}

// leaseSets is a LeaseState as the sets hold it.
type leaseSets struct {
	guard, announce, accept []netip.Addr   // sorted
	drain                   []LeaseElement // sorted; each with its own deadline
	until                   time.Duration  // the lease's end: aliveKey's deadline
}

func (a *leaseSets) sameMembers(b *leaseSets) bool {
	return b != nil && slices.Equal(a.guard, b.guard) && slices.Equal(a.announce, b.announce) &&
		slices.Equal(a.accept, b.accept) && slices.Equal(a.drain, b.drain)
}

// setsOf splits st: the lease's end is the latest announce deadline (the
// Manager gives every announced address the same one); an accepted
// address that is also announced, with that deadline, is covered by the
// lease; any other accepted address (a drain: Quiet) keeps its own
// deadline in the drain sets.
func setsOf(st LeaseState) *leaseSets {
	ls := &leaseSets{}
	ann := map[netip.Addr]bool{}
	for _, e := range st.Announce {
		ls.until = max(ls.until, e.Until)
	}
	for _, e := range st.Announce {
		if e.Until == ls.until {
			ann[e.Addr] = true
			ls.announce = append(ls.announce, e.Addr)
		}
	}
	for _, e := range st.Accept {
		if ann[e.Addr] && e.Until == ls.until {
			ls.accept = append(ls.accept, e.Addr)
		} else {
			ls.drain = append(ls.drain, e)
		}
	}
	ls.guard = slices.Clone(st.Guarded)
	for _, s := range [][]netip.Addr{ls.guard, ls.announce, ls.accept} {
		slices.SortFunc(s, netip.Addr.Compare)
	}
	ls.guard = slices.Compact(ls.guard)
	ls.announce = slices.Compact(ls.announce)
	ls.accept = slices.Compact(ls.accept)
	slices.SortFunc(ls.drain, func(a, b LeaseElement) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Until - b.Until)
	})
	return ls
}

// NewNFTLease creates (or takes over) Vigil's lease_* chains and sets in
// the network namespace nsFd (-1: the caller's) and empties its sets: a new
// owner holds no lease yet. clock is the lease's clock (CLOCK_BOOTTIME); the
// deadlines given to Apply are on it. An error wrapping
// ErrKernelLeaseUnavailable means the kernel (or the privileges) offers no
// nf_tables: the caller keeps today's behaviour and says so.
func NewNFTLease(nsFd int, clock func() time.Duration, opts ...NFTLeaseOption) (*NFTLease, error) {
	if clock == nil {
		return nil, fmt.Errorf("%w: NFTLease needs the lease's clock", ErrInvalidOptions)
	}
	l := &NFTLease{clock: clock, nsFd: nsFd}
	for _, o := range opts {
		o(l)
	}
	l.define()
	if err := l.setup(); err != nil {
		l.Close()
		return nil, fmt.Errorf("%w: %w", ErrKernelLeaseUnavailable, err)
	}
	return l, nil
}

func (l *NFTLease) define() {
	l.arp = &nftables.Table{Name: TableName, Family: nftables.TableFamilyARP}
	l.inet = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	set := func(t *nftables.Table, name string, key nftables.SetDatatype, timeout bool) *nftables.Set {
		return &nftables.Set{Table: t, Name: SlotName(name, l.slot), KeyType: key, HasTimeout: timeout, KeyByteOrder: binaryutil.BigEndian}
	}
	l.arpVIPs4 = set(l.arp, setVIPs4, nftables.TypeIPAddr, false)
	// The announce and accept sets keep the timeout flag they had when
	// each element carried the lease's end (a set is not re-created with
	// other flags on an upgrade); their elements now have none.
	l.arpAnnounce4 = set(l.arp, setAnnounce4, nftables.TypeIPAddr, true)
	l.arpAlive = set(l.arp, setAlive, nftables.TypeIPAddr, true)
	l.vips4 = set(l.inet, setVIPs4, nftables.TypeIPAddr, false)
	l.vips6 = set(l.inet, setVIPs6, nftables.TypeIP6Addr, false)
	l.announce6 = set(l.inet, setAnnounce6, nftables.TypeIP6Addr, true)
	l.accept4 = set(l.inet, setAccept4, nftables.TypeIPAddr, true)
	l.accept6 = set(l.inet, setAccept6, nftables.TypeIP6Addr, true)
	l.inetAlive = set(l.inet, setAlive, nftables.TypeIPAddr, true)
	l.drain4 = set(l.inet, setDrain4, nftables.TypeIPAddr, true)
	l.drain6 = set(l.inet, setDrain6, nftables.TypeIP6Addr, true)
	l.guardSets = []*nftables.Set{l.arpVIPs4, l.vips4, l.vips6}
	l.leaseSets = []*nftables.Set{l.arpAnnounce4, l.announce6, l.accept4, l.accept6, l.arpAlive, l.inetAlive, l.drain4, l.drain6}
	l.allOwnedSet = append(append([]*nftables.Set{}, l.guardSets...), l.leaseSets...)
	filter := nftables.ChainTypeFilter
	l.arpOut = &nftables.Chain{Table: l.arp, Name: SlotName(chainOut, l.slot), Type: filter,
		Hooknum: nftables.ChainHookRef(1 /* NF_ARP_OUT */), Priority: nftables.ChainPriorityFilter}
	// Raw priority: before conntrack, so a dropped packet costs nothing more.
	l.inetOut = &nftables.Chain{Table: l.inet, Name: SlotName(chainOut, l.slot), Type: filter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw}
	l.inetIn = &nftables.Chain{Table: l.inet, Name: SlotName(chainIn, l.slot), Type: filter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw}
}

// NFTLeaseOption configures NewNFTLease.
type NFTLeaseOption func(*NFTLease)

// LeaseSlot makes the lease the one of the service in slot (0, the
// default: the first service's, named as before services existed): its
// sets and chains are named for it (SlotName), so that the services of a
// host each have a lease of their own in Vigil's tables.
func LeaseSlot(slot int) NFTLeaseOption { return func(l *NFTLease) { l.slot = slot } }

// KeepSocketOpen gives f a duplicate of the lease's netlink socket each
// time it is dialled (key "nftables"), as Options.KeepOpen does with the
// packet sockets: closing an nftables socket waits for nf_tables' destroy
// work, and with it an RCU grace period after a recent commit, which a
// node manager's exit should not.
func KeepSocketOpen(f func(key string, fds []int)) NFTLeaseOption {
	return func(l *NFTLease) { l.keepOpen = f }
}

func (l *NFTLease) dial() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if l.nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(l.nsFd))
	}
	if l.keepOpen != nil {
		opts = append(opts, nftables.WithSockOptions(func(c *netlink.Conn) error {
			if fds, err := dupFDs(c); err == nil {
				l.keepOpen("nftables", fds)
			}
			return nil // without it the close waits, as before: not an error
		}))
	}
	return nftables.New(opts...)
}

// connLocked returns the lasting connection, dialling it if a failure
// closed it.
func (l *NFTLease) connLocked() (*nftables.Conn, error) {
	if l.conn != nil {
		return l.conn, nil
	}
	c, err := l.dial()
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	l.conn = c
	return c, nil
}

// flushLocked sends the batch; a failed batch drops the socket (its state
// after an error, ENOBUFS say, is not worth trusting) for a fresh one next.
func (l *NFTLease) flushLocked(c *nftables.Conn) error {
	if err := c.Flush(); err != nil {
		_ = c.CloseLasting()
		l.conn = nil
		return err
	}
	return nil
}

// setup is one transaction: tables (no EXCL: shared), our sets (emptied)
// and chains (their rules replaced).
func (l *NFTLease) setup() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, err := l.connLocked()
	if err != nil {
		return err
	}
	c.AddTable(l.arp)
	c.AddTable(l.inet)
	for _, s := range l.allOwnedSet {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
		c.FlushSet(s)
	}
	for _, ch := range []*nftables.Chain{l.arpOut, l.inetOut, l.inetIn} {
		c.AddChain(ch)
		c.FlushChain(ch)
	}
	for _, r := range l.rules() {
		c.AddRule(r)
	}
	if err := l.flushLocked(c); err != nil {
		return fmt.Errorf("create Vigil's lease chains and sets: %w", err)
	}
	return nil
}

// Rule building blocks.
func load(base expr.PayloadBase, off, n uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
}
func eq(b ...byte) expr.Any  { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }
func neq(b ...byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b} }
func meta(k expr.MetaKey) expr.Any {
	return &expr.Meta{Key: k, Register: 1}
}

// guarded: the address in register 1 is a configured VIP (in guard), in
// none of the sets of not, and, when alive is set, the lease's one element
// (aliveKey in alive, looked up from register 2) has expired; then count
// and drop. Each lease rule comes in two: dropped unless the address is
// covered, dropped unless the lease lives.
func guarded(guard, alive *nftables.Set, not ...*nftables.Set) []expr.Any {
	out := []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: guard.Name, SetID: guard.ID}}
	for _, s := range not {
		out = append(out, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true})
	}
	if alive != nil {
		out = append(out,
			&expr.Immediate{Register: 2, Data: aliveKey},
			&expr.Lookup{SourceRegister: 2, SetName: alive.Name, SetID: alive.ID, Invert: true})
	}
	return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

func (l *NFTLease) rules() []*nftables.Rule {
	nh, th := expr.PayloadBaseNetworkHeader, expr.PayloadBaseTransportHeader
	icmp6 := func(typ byte) []expr.Any {
		return []expr.Any{
			meta(expr.MetaKeyNFPROTO), eq(unix.NFPROTO_IPV6),
			meta(expr.MetaKeyL4PROTO), eq(unix.IPPROTO_ICMPV6),
			load(th, 0, 1), eq(typ),
		}
	}
	notLoopback := []expr.Any{meta(expr.MetaKeyIIFTYPE), neq(binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)...)}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	var rules []*nftables.Rule
	// twice: the rule that drops what the lease does not cover, and the
	// one that drops what it covers once it has ended.
	twice := func(t *nftables.Table, ch *nftables.Chain, match []expr.Any, guard, cover, alive *nftables.Set, drain ...*nftables.Set) {
		rules = append(rules,
			&nftables.Rule{Table: t, Chain: ch, Exprs: cat(match, guarded(guard, nil, append([]*nftables.Set{cover}, drain...)...))},
			&nftables.Rule{Table: t, Chain: ch, Exprs: cat(match, guarded(guard, alive, drain...))})
	}
	// ARP requests and replies whose sender IP is a VIP without a live
	// lease: the kernel's answers to "who has VIP" and its own resolutions
	// from the VIP (both teach the LAN our MAC for it). Ethernet/IPv4 ARP
	// only (hlen 6, plen 4: sender IP at 14).
	twice(l.arp, l.arpOut, []expr.Any{load(nh, 4, 2), eq(6, 4), load(nh, 14, 4)}, l.arpVIPs4, l.arpAnnounce4, l.arpAlive)
	// Neighbour advertisements whose target is such a VIP (bytes 8..24 of
	// the ICMPv6 message).
	twice(l.inet, l.inetOut, cat(icmp6(136), []expr.Any{load(th, 8, 16)}), l.vips6, l.announce6, l.inetAlive)
	// Neighbour solicitations sent from it (they update the LAN's entry
	// for the VIP, like an ARP request from it).
	twice(l.inet, l.inetOut, cat(icmp6(135), []expr.Any{load(nh, 8, 16)}), l.vips6, l.announce6, l.inetAlive)
	// Packets from the network to such a VIP; a draining one (Quiet) is
	// accepted until its own deadline.
	twice(l.inet, l.inetIn, cat(notLoopback, []expr.Any{meta(expr.MetaKeyNFPROTO), eq(unix.NFPROTO_IPV4), load(nh, 16, 4)}),
		l.vips4, l.accept4, l.inetAlive, l.drain4)
	twice(l.inet, l.inetIn, cat(notLoopback, []expr.Any{meta(expr.MetaKeyNFPROTO), eq(unix.NFPROTO_IPV6), load(nh, 24, 16)}),
		l.vips6, l.accept6, l.inetAlive, l.drain6)
	return rules
}

// Apply implements KernelLease in one transaction. The announce and
// accept sets say which addresses the lease covers, without timeouts; the
// lease's end is the timeout of the one aliveKey element; a drain (an
// accepted address not announced, Quiet) is an element with its own
// timeout in the drain sets. When only the lease's end moved since the
// last full transaction (a renewal), the transaction re-adds the aliveKey
// element alone, whatever the number of addresses; otherwise, and at least
// every fullEvery, it empties every set and fills them all. A timeout is
// the time left until its deadline read from the lease clock right before
// the call, truncated to the millisecond (the kernel takes milliseconds
// and rounds them down to jiffies); an element with less than
// MinElementTimeout left is left out. Emptying and re-adding in one
// transaction also refreshes timeouts on kernels that do not update the
// timeout of an element added again (before 6.10).
//
// The kernel counts a timeout from when it processes the transaction, not
// from the clock reading: a thread stopped between the two would program
// an element that outlives the lease by the stop. So when the transaction
// returns more than ApplyLagLimit after the reading, it is sent again at
// once with a fresh reading (which, the deadline being nearer or past,
// shortens or drops the elements): an element then never outlives its
// deadline by more than ApplyLagLimit plus a jiffy, except for the
// microseconds of a resend.
func (l *NFTLease) Apply(st LeaseState) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := setsOf(st)
	for range 3 {
		start, err := l.applyLocked(ls)
		if err != nil {
			return err
		}
		if l.clock()-start <= ApplyLagLimit {
			return nil
		}
	}
	return nil
}

// MinElementTimeout is the shortest timeout an element is given; with
// less left it is not put in at all (the host stops serving a few
// milliseconds early). A zero timeout means "never expires", and kernels
// without the fix "netfilter: nf_tables: elements with timeout below
// CONFIG_HZ never expire" (upstream e0c47281723f, in 6.10 and the stable
// trees of 2024-10) turned any timeout under one jiffy into that: 10 ms is
// one jiffy at HZ=100, the coarsest common tick.
const MinElementTimeout = 10 * time.Millisecond

// ApplyLagLimit is the longest an NFTLease transaction may take from its
// clock reading to its return before it is sent again (see Apply).
const ApplyLagLimit = 2 * time.Millisecond

// applyLocked sends one transaction and returns its clock reading.
func (l *NFTLease) applyLocked(ls *leaseSets) (time.Duration, error) {
	c, err := l.connLocked()
	if err != nil {
		l.last = nil
		return 0, err
	}
	now := l.clock()
	left := func(until time.Duration) (time.Duration, bool) {
		d := (until - now).Truncate(time.Millisecond)
		return d, d >= MinElementTimeout
	}
	add := func(s *nftables.Set, es []nftables.SetElement) error {
		if len(es) == 0 {
			return nil
		}
		if err := c.SetAddElements(s, es); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
		return nil
	}
	full := !ls.sameMembers(l.last) || now-l.lastFull >= fullEvery
	if full {
		split := func(as []netip.Addr) (v4, v6 []nftables.SetElement) {
			for _, a := range as {
				if a.Is4() {
					v4 = append(v4, nftables.SetElement{Key: a.AsSlice()})
				} else {
					v6 = append(v6, nftables.SetElement{Key: a.AsSlice()})
				}
			}
			return v4, v6
		}
		g4, g6 := split(ls.guard)
		n4, n6 := split(ls.announce)
		c4, c6 := split(ls.accept)
		var d4, d6 []nftables.SetElement
		for _, e := range ls.drain {
			if t, ok := left(e.Until); ok {
				el := nftables.SetElement{Key: e.Addr.AsSlice(), Timeout: t}
				if e.Addr.Is4() {
					d4 = append(d4, el)
				} else {
					d6 = append(d6, el)
				}
			}
		}
		for _, s := range l.allOwnedSet {
			c.FlushSet(s)
		}
		for _, x := range []struct {
			s  *nftables.Set
			es []nftables.SetElement
		}{{l.arpVIPs4, g4}, {l.vips4, g4}, {l.vips6, g6}, {l.arpAnnounce4, n4}, {l.announce6, n6},
			{l.accept4, c4}, {l.accept6, c6}, {l.drain4, d4}, {l.drain6, d6}} {
			if err := add(x.s, x.es); err != nil {
				l.last = nil
				return 0, err
			}
		}
	} else {
		if t, ok := left(ls.until); ok && len(ls.announce)+len(ls.accept) > 0 && l.refreshLocked(t) {
			return now, nil
		}
		c.FlushSet(l.arpAlive)
		c.FlushSet(l.inetAlive)
	}
	if t, ok := left(ls.until); ok && len(ls.announce)+len(ls.accept) > 0 {
		for _, s := range []*nftables.Set{l.arpAlive, l.inetAlive} {
			if err := add(s, []nftables.SetElement{{Key: aliveKey, Timeout: t}}); err != nil {
				l.last = nil
				return 0, err
			}
		}
	}
	if err := l.flushLocked(c); err != nil {
		l.last = nil
		return 0, fmt.Errorf("program the kernel lease: %w", err)
	}
	if full {
		l.last, l.lastFull = ls, now
	}
	return now, nil
}

// refreshLocked gives aliveKey the timeout t through the hand-built
// transaction (aliveRefresh), opening its socket first if needed; false
// when that failed, and the caller sends the same through the library
// (which reports the kernel's error, if it is the kernel's).
func (l *NFTLease) refreshLocked(t time.Duration) bool {
	if l.refresh == nil {
		r, err := newAliveRefresh(l.nsFd, l.arpAlive, l.inetAlive)
		if err != nil {
			l.fallbacks, l.fallbackErr = l.fallbacks+1, err.Error()
			return false
		}
		if l.keepOpen != nil {
			if fd, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
				l.keepOpen("nftables refresh", []int{fd})
			}
		}
		l.refresh = r
	}
	if err := l.refresh.send(t); err != nil {
		l.refresh.close()
		l.refresh = nil
		l.fallbacks, l.fallbackErr = l.fallbacks+1, err.Error()
		return false
	}
	return true
}

// RefreshFallbacks is how many refreshes the hand-built batch could not
// carry, so that the library sent them (at its cost: the kernel refused
// the batch, or its socket failed), and the last one's error. On a kernel
// that takes the batch it stays 0 but for a set someone removed.
func (l *NFTLease) RefreshFallbacks() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fallbacks, l.fallbackErr
}

// Disarm implements KernelLease: empties every set, the configured VIPs
// too, so that the rules match nothing and the host behaves as without
// the kernel lease (the fallback when programming it failed).
func (l *NFTLease) Disarm() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, err := l.connLocked()
	if err != nil {
		return err
	}
	l.last = nil
	for _, s := range l.allOwnedSet {
		c.FlushSet(s)
	}
	if err := l.flushLocked(c); err != nil {
		return fmt.Errorf("disarm the kernel lease: %w", err)
	}
	return nil
}

// Close closes the netlink socket. The chains and sets stay: elements
// expire by themselves, and an orderly stop removes the tables
// (DeleteTables).
func (l *NFTLease) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh.close()
	l.refresh = nil
	if l.conn == nil {
		return nil
	}
	err := l.conn.CloseLasting()
	l.conn = nil
	return err
}

// DeleteTables removes Vigil's tables (table arp vigil and table inet
// vigil, with everything in them) from the network namespace nsFd (-1:
// the caller's): the supervisor's orderly stop, after its children have
// exited. A table that does not exist, or a kernel without nf_tables, is
// no error. Other tables are never touched.
func DeleteTables(nsFd int) error {
	var opts []nftables.ConnOption
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	var errs []error
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyARP, nftables.TableFamilyINet} {
		// One transaction per table: a missing one must not keep the
		// other.
		c.DelTable(&nftables.Table{Name: TableName, Family: fam})
		if err := c.Flush(); err != nil && !absent(err) {
			errs = append(errs, fmt.Errorf("delete nftables table %s: %w", TableName, err))
		}
	}
	return errors.Join(errs...)
}

// RevokeLease empties the lease sets (announce, accept) of Vigil's tables in
// the network namespace nsFd (-1: the caller's), keeping the configured
// VIPs: from then on the host's kernel refuses to serve every configured
// floating IP (no ARP or neighbour answer for it, nothing accepted to it)
// whatever addresses are still configured. For the supervisor, once the
// node manager that owned the sets is dead (reaped): a live owner would
// put its elements back at its next refresh. Tables or sets that do not
// exist (no kernel lease was ever programmed), or a kernel without
// nf_tables, are no error: there is nothing to revoke.
func RevokeLease(nsFd, slot int) error {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		if absent(err) {
			return nil // no nf_tables in this kernel: nothing was programmed
		}
		return fmt.Errorf("nftables: %w", err)
	}
	// Closing an nftables socket waits in the kernel (netlink_release,
	// nf_tables' destroy work) for an RCU grace period after the commit
	// just made: 10-30 ms with the kernel's default RCU, measured on the
	// crash release's path. The commit is in force when Flush returns;
	// the caller's release must not wait for the close.
	defer func() { go c.CloseLasting() }()
	l := NFTLease{slot: slot}
	l.define()
	// Only sets that exist, in one transaction: a transaction with an
	// error (a missing set) is aborted, and the abort waits for a grace
	// period as well (nf_tables_abort).
	present := map[string]bool{}
	var errs []error
	for _, t := range []*nftables.Table{l.arp, l.inet} {
		// GetSets of a missing table fails with an error that does not
		// unwrap to ENOENT: ask which tables exist first.
		tables, err := c.ListTablesOfFamily(t.Family)
		if err != nil {
			if !absent(err) {
				errs = append(errs, fmt.Errorf("revoke the kernel lease: list %s tables: %w", familyName(t.Family), err))
			}
			continue
		}
		if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
			continue
		}
		sets, err := c.GetSets(t)
		if err != nil {
			if !absent(err) {
				errs = append(errs, fmt.Errorf("revoke the kernel lease: list sets of %s %s: %w", familyName(t.Family), t.Name, err))
			}
			continue
		}
		for _, s := range sets {
			present[familyName(t.Family)+" "+s.Name] = true
		}
	}
	n := 0
	for _, s := range l.leaseSets {
		if present[familyName(s.Table.Family)+" "+s.Name] {
			c.FlushSet(s)
			n++
		}
	}
	if n > 0 {
		if err := c.Flush(); err != nil && !absent(err) {
			errs = append(errs, fmt.Errorf("revoke the kernel lease: flush %d sets: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// absent is an nftables error that means there is nothing there: no such
// table or set, or no nf_tables (or family) in this kernel.
func absent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT)
}

// LeaseChecker reads the kernel lease of one network namespace for the
// supervisor, over one lasting netlink socket: closing an nftables socket
// takes the namespace's commit lock in the kernel, which on a starved host
// can wait a long time (see "The packet filter" in docs/operations.md), and
// the check runs exactly then. Not safe for concurrent use.
type LeaseChecker struct {
	nsFd int
	slot int
	conn *nftables.Conn
}

// NewLeaseChecker returns a checker of the lease of the service in slot
// in the namespace nsFd (-1: the caller's); it connects at its first
// check.
func NewLeaseChecker(nsFd, slot int) *LeaseChecker { return &LeaseChecker{nsFd: nsFd, slot: slot} }

// Close closes its socket.
func (lc *LeaseChecker) Close() error {
	if lc.conn == nil {
		return nil
	}
	err := lc.conn.CloseLasting()
	lc.conn = nil
	return err
}

// Enforces reports whether the kernel lease stops every address in vips
// from being served by itself, with no process running: Vigil's lease
// rules are in place, every address is in the guard sets (not disarmed,
// NFTLease.Disarm), and every lease element expires, within `within` from
// now. nil means it does; an error says what is missing. For the
// supervisor, deciding whether a silent node manager must be killed at the
// end of its lease or may be left to the kernel (docs/protocol.md,
// "Safety"). It changes nothing.
func (lc *LeaseChecker) Enforces(vips []netip.Addr, within time.Duration) error {
	if lc.conn == nil {
		opts := []nftables.ConnOption{nftables.AsLasting()}
		if lc.nsFd >= 0 {
			opts = append(opts, nftables.WithNetNSFd(lc.nsFd))
		}
		c, err := nftables.New(opts...)
		if err != nil {
			return fmt.Errorf("kernel lease: nftables: %w", err)
		}
		lc.conn = c
	}
	ioErr, err := kernelLeaseEnforces(lc.conn, lc.slot, vips, within)
	if ioErr {
		// A socket in an unknown state after a failed dump is not worth
		// keeping; the next check dials afresh.
		_ = lc.Close()
	}
	return err
}

// kernelLeaseEnforces is Enforces on c; ioErr says err is the socket's,
// not a verdict.
func kernelLeaseEnforces(c *nftables.Conn, slot int, vips []netip.Addr, within time.Duration) (ioErr bool, err error) {
	l := NFTLease{slot: slot}
	l.define()
	for _, x := range []struct {
		ch   *nftables.Chain
		want int
	}{{l.arpOut, 2}, {l.inetOut, 4}, {l.inetIn, 4}} {
		rs, err := c.GetRules(x.ch.Table, x.ch)
		if err != nil {
			return !errors.Is(err, unix.ENOENT), fmt.Errorf("kernel lease: rules of %s: %w", chainName(x.ch), err)
		}
		if len(rs) < x.want {
			return false, fmt.Errorf("kernel lease: %s has %d rules, want %d", chainName(x.ch), len(rs), x.want)
		}
	}
	guarded := func(s *nftables.Set) (map[netip.Addr]bool, error) {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("kernel lease: set %s: %w", setName(s), err)
		}
		m := make(map[netip.Addr]bool, len(els))
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				m[a] = true
			}
		}
		return m, nil
	}
	for _, s := range l.guardSets {
		m, err := guarded(s)
		if err != nil {
			return !errors.Is(err, unix.ENOENT), err
		}
		for _, a := range vips {
			if a.Is4() == (s != l.vips6) && !m[a.Unmap()] {
				return false, fmt.Errorf("kernel lease: %s not in set %s (disarmed)", a, setName(s))
			}
		}
	}
	for _, s := range l.leaseSets {
		els, err := c.GetSetElements(s)
		if err != nil {
			return !errors.Is(err, unix.ENOENT), fmt.Errorf("kernel lease: set %s: %w", setName(s), err)
		}
		// The announce and accept sets only say which addresses the
		// lease covers (its end is the lease_alive element's); every
		// other element must expire by itself.
		covers := s == l.arpAnnounce4 || s == l.announce6 || s == l.accept4 || s == l.accept6
		for _, e := range els {
			a, _ := netip.AddrFromSlice(e.Key)
			if e.Timeout == 0 && covers {
				continue
			}
			if e.Timeout == 0 {
				return false, fmt.Errorf("kernel lease: %s in set %s never expires", a, setName(s))
			}
			if e.Expires > within {
				return false, fmt.Errorf("kernel lease: %s in set %s for %v more, past %v", a, setName(s), e.Expires, within)
			}
		}
	}
	return false, nil
}

func chainName(ch *nftables.Chain) string {
	return fmt.Sprintf("%s %s chain %s", familyName(ch.Table.Family), ch.Table.Name, ch.Name)
}

func setName(s *nftables.Set) string {
	return fmt.Sprintf("%s %s %s", familyName(s.Table.Family), s.Table.Name, s.Name)
}

func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyARP {
		return "arp"
	}
	return "inet"
}
