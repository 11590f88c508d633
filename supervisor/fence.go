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

// fencer removes the floating IPs Vigil added on this host (recognised by
// their address protocol mark), whoever added them.
type fencer interface {
	Reconcile(held []netfloat.VIP) ([]netfloat.VIP, error)
}

// newFencer returns nil when the host has no floating IPs to fence.
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
	m, err := netfloat.New(h, netns.None(), netfloat.Options{Interfaces: ifaces, Logger: log})
	if err != nil {
		h.Close()
		return nil, err
	}
	return m, nil
}

func (s *Supervisor) fenceVIPs() ([]string, error) {
	if s.float == nil {
		return nil, nil
	}
	removed, err := s.float.Reconcile(nil)
	out := make([]string, 0, len(removed))
	for _, v := range removed {
		out = append(out, v.String())
	}
	return out, err
}
