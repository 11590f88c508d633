package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/nodemanager"
	"github.com/vigil-project/vigil/protocol"
)

// crashRelease is the supervisor's answer to the death of an active node
// manager (reaped: a crash, SIGKILL, a panic; not an orderly stop, which
// hands over itself, nor a fence, which acts at the lease's end anyway):
// the host knows for certain that nothing of it serves any more once the
// addresses are gone, so it gives the role up at once instead of letting
// the standby wait out the lease (docs/protocol.md, "Crash release").
type crashRelease struct {
	cfg   *config.Config
	float fencer
	log   *slog.Logger
	succ  protocol.Succession
	epoch uint64
	// revoke empties the kernel lease's sets (netfloat.RevokeLease);
	// replaced in tests.
	revoke func() error
	// send sends the release's datagrams; replaced in tests.
	send func(key []byte, msgs []protocol.Envelope) error
}

// crashReleaseFor returns the release to carry out for a node manager
// that died with report r, received `age` ago: it must have said it was
// active, with lease left now, and named its succession. Without one,
// why says why not if the report said active ("" if it did not: nothing
// to release, nothing to say).
func (s *Supervisor) crashReleaseFor(slot int, r *ctlmsg.NodeManagerReport, age time.Duration) (c *crashRelease, why string) {
	switch {
	case r == nil || r.Role != "active" || s.cfg.Cluster.Role != config.RoleNode:
		return nil, ""
	case !r.LeaseValid:
		return nil, "its last report held no valid lease"
	case r.Succession == nil:
		return nil, "its last report named no succession"
	case time.Duration(r.LeaseRemainingMS)*time.Millisecond <= age:
		return nil, "its last report's lease had run out when the exit was handled"
	}
	sc := r.Succession
	cfg := s.serviceConfig(slot)
	log := s.log.With("process", ctlNodeManager)
	if n := s.serviceName(slot); n != "" {
		log = log.With("service", n)
	}
	return &crashRelease{
		cfg: cfg, float: s.fencer(slot), log: log,
		succ:   protocol.Succession{Epoch: sc.Epoch, To: sc.To, Nodes: sc.Nodes, Locators: sc.Locators},
		epoch:  sc.Epoch,
		revoke: func() error { return netfloat.RevokeLease(-1, slot) },
		send:   sendDatagrams(cfg),
	}, ""
}

// run removes what the host serves, then persists the node's next
// incarnation, then sends the release: in that order, each step only if
// the one before succeeded (a release must never leave while the host may
// still answer for an address; a datagram must never carry an incarnation
// not on disk). Runs off the loop; the node manager is restarted only
// after it returns, so the restarted one starts above the incarnation
// used here. Any failure leaves the lease to run out, as before.
func (c *crashRelease) run() error {
	start := time.Now()
	// Each step's time goes on the log line: a release slower than the
	// few ms it takes on a quiet host says which kernel path waited.
	var steps []any
	step := func(name string) {
		steps = append(steps, name+"_us", time.Since(start).Microseconds())
	}
	if err := c.revoke(); err != nil {
		return fmt.Errorf("revoke the kernel lease: %w", err)
	}
	step("revoked")
	if c.float != nil {
		removed, err := c.float.Reconcile(nil)
		if err != nil {
			return fmt.Errorf("remove the floating IPs: %w", err)
		}
		for _, v := range removed {
			c.log.Warn("crash release: floating IP removed", "event", "fence_vip", "vip", v.String(), "node_manager", "dead while active")
		}
	}
	step("removed")
	pcfg := c.cfg.Protocol()
	path := filepath.Join(c.cfg.Runtime.StateDir, nodemanager.StateFile)
	owner := statefile.Owner{Kind: "node", Cluster: c.cfg.Cluster.Name, ID: c.cfg.Cluster.Node}
	var st protocol.NodeState
	res, err := statefile.Load(path, owner, &st)
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	if res == statefile.Missing {
		return fmt.Errorf("node state %s: missing", path)
	}
	next, msgs, err := protocol.CrashRelease(pcfg, st, c.succ)
	if err != nil {
		return err
	}
	if err := statefile.Save(path, owner, next); err != nil {
		return fmt.Errorf("persist the next incarnation: %w", err)
	}
	step("persisted")
	key, err := config.ReadKeyFile(c.cfg.Cluster.KeyFile)
	if err != nil {
		return err
	}
	if err := c.send(key, msgs); err != nil {
		return err
	}
	step("sent")
	c.log.Warn("node manager died while active: addresses removed, role released", append([]any{"event", "crash_release",
		"epoch", c.epoch, "to", c.succ.To, "incarnation", next.Incarnation, "datagrams", len(msgs), "took_us", time.Since(start).Microseconds()}, steps...)...)
	return nil
}

// sendDatagrams sends protocol datagrams from this host's entry address
// (the source peers check; any port: they check the address only), to
// each peer's node manager port or locator port by type.
func sendDatagrams(cfg *config.Config) func(key []byte, msgs []protocol.Envelope) error {
	return func(key []byte, msgs []protocol.Envelope) error {
		addrs := map[string]netip.AddrPort{}
		var self netip.AddrPort
		for _, p := range append(append([]config.Peer{}, cfg.Cluster.Nodes...), cfg.Cluster.Witnesses...) {
			ap, err := netip.ParseAddrPort(p.Address)
			if err != nil {
				return fmt.Errorf("peer %s address %q: %w", p.ID, p.Address, err)
			}
			addrs[p.ID] = ap
			if p.ID == cfg.Cluster.Node {
				self = ap
			}
		}
		if !self.IsValid() {
			return fmt.Errorf("no address for this node %q", cfg.Cluster.Node)
		}
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(self.Addr(), 0)))
		if err != nil {
			return fmt.Errorf("release socket: %w", err)
		}
		defer conn.Close()
		var errs []error
		sent := 0
		for _, e := range msgs {
			dst, ok := addrs[e.To]
			if !ok {
				errs = append(errs, fmt.Errorf("no address for %q", e.To))
				continue
			}
			if e.Msg.Type.ForLocator() {
				lp, ok := config.LocatorPort(dst.Port())
				if !ok {
					continue
				}
				dst = netip.AddrPortFrom(dst.Addr(), lp)
			}
			b, err := protocol.Encode(key, e.Msg)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			// A peer that is down answers with ICMP: its business, and
			// no reason to skip the others.
			if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
				errs = append(errs, fmt.Errorf("send %s to %s: %w", e.Msg.Type, e.To, err))
				continue
			}
			sent++
		}
		if sent == 0 && len(errs) > 0 {
			return errors.Join(errs...)
		}
		return nil
	}
}
