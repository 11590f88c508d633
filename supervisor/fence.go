package supervisor

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/netfloat"
)

// fencer removes the floating IPs of one service that Vigil added on this
// host (recognised by the service's address mark, netfloat.SlotProtocol),
// whoever added them.
type fencer interface {
	Reconcile(held []netfloat.VIP) ([]netfloat.VIP, error)
}

// newFencer returns the fencer of the service cfg is narrowed to
// (config.Config.ForService), nil when it has no floating IPs.
func newFencer(cfg *config.Config, log *slog.Logger) (fencer, error) {
	if len(cfg.VIPs) == 0 {
		return nil, nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE) // route only: XFRM and netfilter sockets need modules a host may lack
	if err != nil {
		return nil, fmt.Errorf("supervisor: netlink: %w", err)
	}
	ifaces := make([]string, 0, len(cfg.VIPs))
	for _, v := range cfg.VIPs {
		ifaces = append(ifaces, v.Interface)
	}
	m, err := netfloat.New(h, netns.None(), netfloat.Options{Interfaces: ifaces, Logger: log,
		Protocol: netfloat.SlotProtocol(cfg.Slot), Label: netfloat.SlotLabel(cfg.Slot)})
	if err != nil {
		h.Close()
		return nil, err
	}
	return m, nil
}

// openFencers opens a fencer for each service of cfg that has floating IPs
// and none yet (at start, and for a reload that adds the first ones).
func (s *Supervisor) openFencers(cfg *config.Config) {
	if cfg.Cluster.Role != config.RoleNode {
		return
	}
	for slot := range cfg.ServiceCount() {
		for len(s.floats) <= slot {
			s.floats = append(s.floats, nil)
		}
		sc, err := cfg.ForService(slot)
		if err != nil || s.floats[slot] != nil || len(sc.VIPs) == 0 {
			continue
		}
		if s.floats[slot], err = newFencer(sc, s.log); err != nil {
			s.log.Error("cannot watch floating IPs for fencing", "event", "fence_error", "service", sc.Services[0].Name, "err", err)
		}
	}
}

// fencer is the fencer of the service in slot, nil if none.
func (s *Supervisor) fencer(slot int) fencer {
	if slot < len(s.floats) {
		return s.floats[slot]
	}
	return nil
}

// serviceConfig is the configuration in force narrowed to the service in
// slot (what its node manager and locator run with).
func (s *Supervisor) serviceConfig(slot int) *config.Config {
	if c, err := s.cfg.ForService(slot); err == nil {
		return c
	}
	return s.cfg
}

func (s *Supervisor) fenceVIPs(slot int) ([]string, error) {
	f := s.fencer(slot)
	if f == nil {
		return nil, nil
	}
	removed, err := f.Reconcile(nil)
	out := make([]string, 0, len(removed))
	for _, v := range removed {
		out = append(out, v.String())
	}
	return out, err
}
