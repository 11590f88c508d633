package supervisor

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/cgroup"
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

// rtBudgetUs is the realtime CPU budget each realtime control-plane group
// gets per cpu.rt_period_us (1 s by default) on kernels with
// CONFIG_RT_GROUP_SCHED: 30 %. Under SCHED_RR every thread of a Go process
// is realtime, the runtime's own included; the isolation benchmark measured
// 25-30 % of a cpu for a 1 kHz ping-pong and saw RT throttling at 10 %.
// It is also the cap on what a runaway one could take from the host.
const rtBudgetUs = 300_000

// processResources are the cgroup values of one process's own group.
func (s *Supervisor) processResources(p *proc) cgroup.Resources {
	if p.control != "" {
		var r cgroup.Resources
		if s.cfg.Control.Realtime {
			r.RTRuntimeUs = rtBudgetUs
		}
		return r
	}
	return cgroup.Resources{MemoryMax: p.cfg.MemoryMax, PidsMax: p.cfg.PidsMax, CPUWeight: p.cfg.CPUWeight}
}
