// Package pktfilter drops, in the kernel, datagrams to a cluster port that
// do not come from a configured peer, or that do but lack the cluster's
// tag (a key-derived value every Vigil datagram carries at a fixed offset:
// protocol.ClusterTag), so that a flood from anywhere else, or from a
// spoofed peer address by a sender without the key, costs the control
// plane no CPU (no wakeup, no read, no MAC).
//
// It uses nftables, in Vigil's own table `table inet vigil`, which other
// parts of Vigil share: this package creates the table if it is missing
// (never exclusively), and owns only the objects named cluster_<name>: one
// base chain on the input hook and two sets of peer addresses per process
// (the node manager and the locator each install their own, so neither
// clobbers the other). It never flushes or deletes the table, nor anything
// it does not own. The rules are
//
//	udp dport P ip saddr != @cluster_<name>_peers4 counter drop
//	udp dport P ip6 saddr != @cluster_<name>_peers6 counter drop
//	udp dport P udp length < 8+MIN counter drop            # with a tag
//	udp dport P @th,96,64 != TAG counter drop              # with a tag
//
// (MIN is protocol.MinDatagram; the tag sits at protocol.TagOffset of
// the UDP payload, i.e. bit 96 of the transport header.)
//
// Install replaces what a previous run of the same process left (a crash
// leaves the filter in place, which is safe: the peers are the same);
// Remove deletes it on an orderly stop. The table itself is removed by
// the supervisor's stop and the package's removal.
package pktfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/protocol"
)

// Table is Vigil's nftables table (family inet).
const Table = "vigil"

// Filter is one process's installed filter.
type Filter struct {
	// mu keeps Remove from closing the namespace fd under a Dropped that
	// polls from another goroutine (a closed fd number may be reused).
	mu         sync.Mutex
	name       string
	port       uint16
	netnsFD    int  // the namespace the filter is in
	ownFD      bool // netnsFD was opened by Install
	table      *nftables.Table
	chain      *nftables.Chain
	set4, set6 *nftables.Set
	// poll is Dropped's connection, kept open (under mu): closing an
	// nf_tables netlink socket takes the namespace's nf_tables commit
	// mutex and waits, holding it, for nf_tables' deferred work on a
	// kworker. A CPU-starved kworker then holds up every nf_tables
	// transaction of the namespace, the kernel lease's renewals included
	// (seen: 88 ms and more under the noisy neighbour). A once-a-second
	// poll that closed its socket each time was such a closer.
	poll *nftables.Conn
}

// Options are optional settings of Install.
type Options struct {
	// NetNSFD, if > 0, is an open network namespace to act in (tests);
	// otherwise the filter goes into the namespace of the calling thread.
	NetNSFD int
	// Tag, if not 0, is the cluster tag (protocol.ClusterTag) every
	// datagram to the port must carry: a datagram from a peer's address
	// that is too short to carry it or carries another is dropped too.
	Tag uint64
}

// Drops are the packets the filter's rules dropped.
type Drops struct {
	// Strangers: from an address that is no configured peer's.
	Strangers uint64
	// Tag: from a peer's address, without the cluster's tag (too short, or
	// another tag: a forger without the key, another cluster, another key,
	// a Vigil of an older wire version).
	Tag uint64
}

// Rule user data: which count a rule's counter adds to.
var (
	udStrangers = []byte("vigil:strangers")
	udTag       = []byte("vigil:tag")
)

var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,24}$`)

// ChainName is the chain a process named name owns.
func ChainName(name string) string { return "cluster_" + name }

// Install puts the filter for UDP port port in place: only the peers'
// addresses may reach it. name ([a-z0-9_], e.g. "nodemanager", "locator")
// tells the processes' objects apart. An error says why the kernel could
// not take it (no nf_tables, no CAP_NET_ADMIN); the caller goes on with
// its userspace checks.
func Install(name string, port uint16, peers []netip.Addr, o Options) (*Filter, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("pktfilter: bad name %q", name)
	}
	f := &Filter{name: name, port: port, netnsFD: o.NetNSFD}
	if f.netnsFD <= 0 {
		// Later calls (Dropped, Remove) may run on another thread: keep
		// the namespace this one is in.
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("pktfilter: own network namespace: %w", err)
		}
		f.netnsFD, f.ownFD = fd, true
	}
	c, err := f.conn()
	if err != nil {
		f.closeFD()
		return nil, err
	}
	// AddTable without NLM_F_EXCL: the table may be there already, with
	// other parts' chains in it; they are left alone.
	f.table = c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: Table})
	policy := nftables.ChainPolicyAccept
	f.chain = c.AddChain(&nftables.Chain{
		Name: ChainName(name), Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	// A previous run's rules go; the chain itself stays (same hook).
	c.FlushChain(f.chain)
	var v4, v6 []nftables.SetElement
	for _, a := range peers {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, nftables.SetElement{Key: a.AsSlice()})
		} else if a.Is6() {
			v6 = append(v6, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	f.set4 = &nftables.Set{Table: f.table, Name: ChainName(name) + "_peers4", KeyType: nftables.TypeIPAddr}
	f.set6 = &nftables.Set{Table: f.table, Name: ChainName(name) + "_peers6", KeyType: nftables.TypeIP6Addr}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{f.set4, v4}, {f.set6, v6}} {
		if err := c.AddSet(s.set, nil); err != nil {
			f.closeFD()
			return nil, fmt.Errorf("pktfilter: set %s: %w", s.set.Name, err)
		}
		c.FlushSet(s.set)
		if len(s.elems) > 0 {
			if err := c.SetAddElements(s.set, s.elems); err != nil {
				f.closeFD()
				return nil, fmt.Errorf("pktfilter: set %s: %w", s.set.Name, err)
			}
		}
	}
	c.AddRule(&nftables.Rule{Table: f.table, Chain: f.chain, Exprs: f.rule(unix.NFPROTO_IPV4, 12, 4, f.set4), UserData: udStrangers})
	c.AddRule(&nftables.Rule{Table: f.table, Chain: f.chain, Exprs: f.rule(unix.NFPROTO_IPV6, 8, 16, f.set6), UserData: udStrangers})
	if o.Tag != 0 {
		c.AddRule(&nftables.Rule{Table: f.table, Chain: f.chain, Exprs: f.shortRule(), UserData: udTag})
		c.AddRule(&nftables.Rule{Table: f.table, Chain: f.chain, Exprs: f.tagRule(o.Tag), UserData: udTag})
	}
	if err := c.Flush(); err != nil {
		f.closeFD()
		return nil, fmt.Errorf("pktfilter: install table inet %s chain %s: %w", Table, f.chain.Name, err)
	}
	return f, nil
}

// rule is `meta nfproto FAM meta l4proto udp udp dport P <saddr> != @set
// counter drop`; the saddr is at off (len bytes) in the network header.
func (f *Filter) rule(fam byte, off, n uint32, set *nftables.Set) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
	}
	return append(append(e, f.udpPort()...),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// udpPort is `meta l4proto udp udp dport P`.
func (f *Filter) udpPort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(f.port)},
	}
}

// shortRule is `udp dport P udp length < 8+MIN counter drop`: a datagram
// too short to be Vigil's. It also keeps tagRule's payload load, which
// would not match a packet shorter than the tag's end, from letting one
// through.
func (f *Filter) shortRule() []expr.Any {
	return append(f.udpPort(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 4, Len: 2},
		// Big-endian bytes compare in numeric order.
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(8 + protocol.MinDatagram))},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// tagRule is `udp dport P @th,96,64 != TAG counter drop`.
func (f *Filter) tagRule(tag uint64) []expr.Any {
	return append(f.udpPort(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8 + protocol.TagOffset, Len: 8},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint64(tag)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

func (f *Filter) closePoll() {
	if f.poll != nil {
		_ = f.poll.CloseLasting()
		f.poll = nil
	}
}

func (f *Filter) closeFD() {
	if f.ownFD && f.netnsFD > 0 {
		_ = unix.Close(f.netnsFD)
		f.netnsFD = -1
	}
}

func (f *Filter) conn() (*nftables.Conn, error) {
	if f.netnsFD <= 0 {
		return nil, errors.New("pktfilter: filter removed")
	}
	c, err := nftables.New(nftables.WithNetNSFd(f.netnsFD))
	if err != nil {
		return nil, fmt.Errorf("pktfilter: netlink: %w", err)
	}
	return c, nil
}

// Dropped is how many packets the filter's rules dropped (IPv4 + IPv6),
// by reason.
func (f *Filter) Dropped() (Drops, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d Drops
	if f.poll == nil {
		if f.netnsFD <= 0 {
			return d, errors.New("pktfilter: filter removed")
		}
		c, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(f.netnsFD))
		if err != nil {
			return d, fmt.Errorf("pktfilter: netlink: %w", err)
		}
		f.poll = c
	}
	rules, err := f.poll.GetRules(f.table, f.chain)
	if err != nil {
		f.closePoll() // dial afresh next time
		return d, fmt.Errorf("pktfilter: read chain %s: %w", f.chain.Name, err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				if string(r.UserData) == string(udTag) {
					d.Tag += ctr.Packets
				} else {
					d.Strangers += ctr.Packets
				}
			}
		}
	}
	return d, nil
}

// Remove deletes the process's chain and sets (not the table, which other
// parts of Vigil share).
func (f *Filter) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closePoll()
	c, err := f.conn()
	if err != nil {
		return err
	}
	defer f.closeFD()
	c.FlushChain(f.chain)
	c.DelChain(f.chain)
	c.DelSet(f.set4)
	c.DelSet(f.set6)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("pktfilter: remove chain %s: %w", f.chain.Name, err)
	}
	return nil
}
