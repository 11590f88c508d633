package nodemanager

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/netfloat"
)

// The node manager's side effects go through narrow interfaces, so that
// its driving logic (Run's loop: ticks, datagrams, the supervisor's
// messages, address events) can be unit-tested without root, sockets or
// sleeps (driver_test.go): the clock (clock.Clock), the port
// (transport.Endpoint), the state file (stateWriter) and the floating IPs
// with the links they sit on (vipHost, floatIPs). Hooks are observable
// already: hookRunner's queue.

// floatIPs is what the node manager does to its floating IPs:
// *netfloat.Manager.
type floatIPs interface {
	Claim(ctx context.Context, v netfloat.VIP) (netfloat.ClaimReport, error)
	// The ...All methods act on many addresses in one step (one kernel
	// lease transaction, batched netlink): a takeover of 256 addresses
	// must not hold up the loop for hundreds of milliseconds.
	ClaimAll(ctx context.Context, vips []netfloat.VIP) ([]netfloat.ClaimReport, error)
	ReleaseAll(vips []netfloat.VIP) error
	ExtendAll(vips []netfloat.VIP) (notHeld []netfloat.VIP, err error)
	QuietAll(vips []netfloat.VIP) ([]netfloat.VIP, error)
	RefuseAll(vips []netfloat.VIP) ([]netfloat.VIP, error)
	Announce(v netfloat.VIP) error
	Reconcile(held []netfloat.VIP) ([]netfloat.VIP, error)
	SetLeaseDeadline(until time.Duration)
	Guard(vips []netfloat.VIP) error
	Watch(ctx context.Context, events chan<- netfloat.Event) error
	Stats() netfloat.Stats
	KernelLeaseStats() netfloat.KernelLeaseStats
	Close() error
}

var _ floatIPs = (*netfloat.Manager)(nil)

// vipHost makes floatIPs and reads the VIP interfaces' link state:
// netlinkHost.
type vipHost interface {
	// newFloat is a floating IP manager for ifaces whose announcements
	// are checked against the lease deadline on the lease's clock.
	newFloat(ifaces []string) (floatIPs, error)
	linkUp(ifn string) (bool, error)
	// ipv6Disabled says why ifn cannot hold an IPv6 address (its
	// disable_ipv6 sysctl, or IPv6 off in the kernel); nil if it can.
	ipv6Disabled(ifn string) error
	// kernelLease says whether the kernel lease is in force for the
	// floating IPs; err, why the kernel offers none.
	kernelLease() (bool, error)
	close()
}

// stateWriter persists node.state: *statefile.Writer.
type stateWriter interface {
	Save(v any) error
	Status() (failing bool, errors uint64, lastErr string)
}

// netlinkHost is the real vipHost: one rtnetlink handle, and the kernel
// lease (nftables) made with the first floating IP manager.
type netlinkHost struct {
	cfg *config.Config // announce: (deferred to a restart, not reloaded)
	log *slog.Logger
	clk clock.Clock
	nl  *netlink.Handle
	// kl is the kernel lease (netfloat.NFTLease); nil with klErr set
	// where the kernel offers none.
	kl    *netfloat.NFTLease
	klErr error
	// keepOpen, if set, is netfloat's KeepOpen: the packet sockets go to
	// the supervisor to hold (holds).
	keepOpen func(key string, fds []int)
}

func (h *netlinkHost) newFloat(ifaces []string) (floatIPs, error) {
	if h.nl == nil {
		nh, err := netlink.NewHandle(unix.NETLINK_ROUTE) // route only: XFRM and netfilter sockets need modules a host may lack
		if err != nil {
			return nil, fmt.Errorf("nodemanager: netlink: %w", err)
		}
		h.nl = nh
	}
	h.openKernelLease()
	a := h.cfg.Announce
	opts := netfloat.Options{
		Interfaces: ifaces, Logger: h.log,
		GARPCount: a.Count, GARPInterval: a.Interval, RefreshInterval: a.Refresh, ProbeWindow: a.Probe,
		// Only a lease holder speaks for an address: every announcement
		// checks the lease deadline (syncLease) on the lease's own clock.
		LeaseClock: h.clk.Now,
		KeepOpen:   h.keepOpen,
		// The service's own mark: its start and fence remove only its
		// addresses (netfloat's slots).
		Protocol: netfloat.SlotProtocol(h.cfg.Slot),
		Label:    netfloat.SlotLabel(h.cfg.Slot),
	}
	if h.kl != nil {
		opts.KernelLease = h.kl
	}
	f, err := netfloat.New(h.nl, netns.None(), opts)
	if err != nil {
		return nil, fmt.Errorf("nodemanager: floating IPs: %w", err)
	}
	return f, nil
}

func (h *netlinkHost) linkUp(name string) (bool, error) {
	if h.nl == nil {
		return false, fmt.Errorf("nodemanager: link %s: no netlink handle", name)
	}
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return false, err
	}
	a := l.Attrs()
	return a.Flags&1 != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown), nil
}

func (h *netlinkHost) ipv6Disabled(ifn string) error {
	// /proc/sys/net is the reading process's network namespace: the node
	// manager runs in the host's (or the test's) namespace.
	return netfloat.IPv6Disabled("/proc/sys", ifn)
}

func (h *netlinkHost) kernelLease() (bool, error) { return h.kl != nil, h.klErr }

// openKernelLease sets up the kernel lease once per process: Vigil's
// lease_* chains and sets in table arp vigil and table inet vigil, emptied
// (this process holds no lease yet). Where the kernel has no nf_tables it
// says so once, in the log and in status, and the floating IPs are held as
// before: the node manager's own lease timer first, the supervisor's fence,
// the address lifetime last.
func (h *netlinkHost) openKernelLease() {
	if h.kl != nil || h.klErr != nil {
		return
	}
	opts := []netfloat.NFTLeaseOption{netfloat.LeaseSlot(h.cfg.Slot)}
	if h.keepOpen != nil {
		opts = append(opts, netfloat.KeepSocketOpen(h.keepOpen))
	}
	kl, err := netfloat.NewNFTLease(-1, h.clk.Now, opts...)
	if err != nil {
		h.klErr = err
		h.log.Warn("the kernel cannot enforce the lease on the floating IPs; a frozen or killed Vigil leaves them served until the address lifetime ends",
			"event", "kernel_lease_unavailable", "err", err)
		return
	}
	h.kl = kl
	h.log.Info("kernel lease in force: table arp vigil, table inet vigil", "event", "kernel_lease")
}

func (h *netlinkHost) close() {
	if h.kl != nil {
		// The elements stay until they expire (they end with the lease);
		// an orderly stop released them already.
		_ = h.kl.Close()
	}
	if h.nl != nil {
		h.nl.Close()
	}
}
