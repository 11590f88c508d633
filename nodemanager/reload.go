package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/netfloat"
)

// A reload (SIGHUP to the supervisor) sends the node manager the new vips:
// and hooks: (ipc "config"). They are applied in place, without a restart:
// a restart would cost the hold-off and, on the active, the role. An active
// node adds and announces only the added addresses and removes only the
// removed ones; an address in both lists is not touched (no removal, no
// re-add, no gap in its lifetime). A standby only updates its list. The
// role never changes because of a reload.

func parseVIP(address, iface string) (netfloat.VIP, error) {
	p, err := netip.ParsePrefix(address)
	if err != nil {
		return netfloat.VIP{}, fmt.Errorf("nodemanager: vip %q: %w", address, err)
	}
	if iface == "" {
		return netfloat.VIP{}, fmt.Errorf("nodemanager: vip %q: no interface", address)
	}
	return netfloat.VIP{Prefix: p, Interface: iface}, nil
}

// vipKey is what makes two VIPs the same address for a reload: the address
// on the interface (netfloat's identity too). A new prefix length for the
// same key is a change, claimed in place.
type vipKey struct {
	addr  netip.Addr
	iface string
}

func keyOf(v netfloat.VIP) vipKey { return vipKey{v.Prefix.Addr().Unmap(), v.Interface} }

// vipPlan is what a reload does to the floating IPs.
type vipPlan struct {
	claim   []netfloat.VIP // added, or the same address with a new prefix length
	release []netfloat.VIP // removed
	kept    []netfloat.VIP // identical: not touched
}

func diffVIPs(old, next []netfloat.VIP) vipPlan {
	var p vipPlan
	had := make(map[vipKey]netfloat.VIP, len(old))
	for _, v := range old {
		had[keyOf(v)] = v
	}
	want := make(map[vipKey]bool, len(next))
	for _, v := range next {
		k := keyOf(v)
		want[k] = true
		if o, ok := had[k]; ok && o.Prefix == v.Prefix {
			p.kept = append(p.kept, v)
		} else {
			p.claim = append(p.claim, v)
		}
	}
	for _, v := range old {
		if !want[keyOf(v)] {
			p.release = append(p.release, v)
		}
	}
	return p
}

func vipInterfaces(vips []netfloat.VIP) []string {
	var out []string
	for _, v := range vips {
		if !slices.Contains(out, v.Interface) {
			out = append(out, v.Interface)
		}
	}
	return out
}

func vipStrings(vips []netfloat.VIP) string {
	s := make([]string, len(vips))
	for i, v := range vips {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

func (m *manager) usesInterface(ifn string) bool {
	return slices.ContainsFunc(m.vips, func(v netfloat.VIP) bool { return v.Interface == ifn })
}

func (m *manager) hasVIP(v netfloat.VIP) bool {
	return slices.ContainsFunc(m.vips, func(x netfloat.VIP) bool { return keyOf(x) == keyOf(v) })
}

// keepVIPs deletes from byVIP every address not in vips.
func keepVIPs[V any](byVIP map[string]V, vips []netfloat.VIP) {
	for key := range byVIP {
		if !slices.ContainsFunc(vips, func(v netfloat.VIP) bool { return v.String() == key }) {
			delete(byVIP, key)
		}
	}
}

// applyConfig applies a reload's floating IPs and hooks.
func (m *manager) applyConfig(now time.Duration, c *ctlmsg.Config) error {
	if c == nil {
		return errors.New("config message without a config")
	}
	next := make([]netfloat.VIP, 0, len(c.VIPs))
	for _, v := range c.VIPs {
		fv, err := parseVIP(v.Address, v.Interface)
		if err != nil {
			return err
		}
		next = append(next, fv)
	}
	hooks := config.Hooks{OnActive: c.Hooks.OnActive, OnStandby: c.Hooks.OnStandby, OnFault: c.Hooks.OnFault, Timeout: c.Hooks.Timeout}
	if hooks.Timeout <= 0 {
		return fmt.Errorf("hooks timeout %v is not positive", hooks.Timeout)
	}
	if len(next) > 0 && m.float == nil {
		// The first VIP of a node that started without any.
		if err := m.openFloat(vipInterfaces(next)); err != nil {
			return err
		}
		m.startWatch()
	}

	if !reflect.DeepEqual(m.cfg.Hooks, hooks) {
		m.cfg.Hooks = hooks
		m.log.Info("hooks reloaded", "event", "hooks_reloaded", "on_active", len(hooks.OnActive), "on_standby", len(hooks.OnStandby), "on_fault", len(hooks.OnFault), "timeout_ms", hooks.Timeout.Milliseconds())
	}

	plan := diffVIPs(m.vips, next)
	oldIfaces := vipInterfaces(m.vips)
	// The list changes first, so that nothing below (an address event,
	// the lease timer) acts on the old one.
	m.vips = next
	// What an address that is gone failed is forgotten (health is
	// reread below).
	keepVIPs(m.vipFail, next)
	keepVIPs(m.vipUnfit, next)
	keepVIPs(m.vipEpisodes, next)
	m.cfg.VIPs = m.cfg.VIPs[:0]
	for _, v := range c.VIPs {
		m.cfg.VIPs = append(m.cfg.VIPs, config.VIP{Address: v.Address, Interface: v.Interface})
	}
	var errs []error
	// Claim before release: an address that moves to another interface of
	// this host is never absent from both.
	for _, v := range plan.claim {
		if !m.held || m.drain != nil {
			continue // not active, or handing over
		}
		if _, err := m.claimOne(v); err != nil {
			errs = append(errs, fmt.Errorf("add %s: %w", v, err))
			continue
		}
		m.log.Info("floating IP added by reload", "event", "vip_added", "vip", v.String())
	}
	for _, v := range plan.release {
		if !m.held || m.float == nil {
			continue
		}
		if m.drain != nil {
			delete(m.drain.left, v.String())
		}
		if err := m.float.ReleaseAll([]netfloat.VIP{v}); err != nil {
			m.log.Error("cannot remove floating IP", "event", "vip_error", "vip", v.String(), "err", err)
			errs = append(errs, fmt.Errorf("remove %s: %w", v, err))
			continue
		}
		m.log.Info("floating IP removed by reload", "event", "vip_removed", "vip", v.String())
	}
	if m.held {
		m.lastExt = 0 // extend the new set's lifetimes at the next renewal
	}
	if m.float != nil {
		_ = m.float.Guard(next) // a failure is logged by float and shown in status
	}

	// Link state: forget interfaces no VIP uses, look at new ones now (as
	// at start), and have float watch them.
	for ifn := range m.linkDown {
		if !m.usesInterface(ifn) {
			delete(m.linkDown, ifn)
		}
	}
	var added []string
	for _, ifn := range vipInterfaces(next) {
		if !slices.Contains(oldIfaces, ifn) {
			added = append(added, ifn)
		}
		if !m.floatIfaces[ifn] {
			m.watchStale = true
		}
	}
	m.refreshLinks(added)
	m.updateHealth(now)
	if len(plan.claim) > 0 || len(plan.release) > 0 {
		m.log.Info("floating IPs reloaded", "event", "vips_reloaded", "role", m.node.Role().String(), "held", m.held,
			"added", vipStrings(plan.claim), "removed", vipStrings(plan.release), "unchanged", vipStrings(plan.kept))
	}
	return errors.Join(errs...)
}

// refreshLinks reads the state of the given VIP interfaces now, and
// whether every interface with an IPv6 floating IP can hold one.
func (m *manager) refreshLinks(ifaces []string) {
	m.refreshIPv6(m.clk.Now())
	if m.float == nil {
		return
	}
	for _, ifn := range ifaces {
		if up, err := m.host.linkUp(ifn); err != nil || !up {
			m.linkDown[ifn] = true
		} else {
			delete(m.linkDown, ifn)
		}
	}
}

// ipv6CheckEvery is how often refreshIPv6 runs from the loop: a sysctl
// change comes with no netlink event. One small file read per interface
// with an IPv6 floating IP.
const ipv6CheckEvery = time.Second

// refreshIPv6 reads whether each interface that carries an IPv6 floating
// IP can hold one, logs what changed, and reports whether anything did.
// An interface with IPv6 disabled makes the node unhealthy (updateHealth),
// like a link that is down: the kernel refuses the address there, so an
// active would serve its service without it. Unlike a failed add, this is
// known on a standby too, so the service goes to a node that can hold it
// and never comes back to this one until it can.
func (m *manager) refreshIPv6(now time.Duration) bool {
	m.lastV6Check = now
	if m.host == nil {
		return false
	}
	changed := false
	seen := map[string]bool{}
	for _, v := range m.vips {
		ifn := v.Interface
		if !v.Prefix.Addr().Is6() || seen[ifn] {
			continue
		}
		seen[ifn] = true
		why := ""
		if err := m.host.ipv6Disabled(ifn); err != nil {
			why = err.Error()
		}
		switch old, had := m.v6Off[ifn]; {
		case why != "" && why != old:
			m.log.Warn("a floating IP's interface cannot hold IPv6 addresses; the node is unhealthy until it can", "event", "ipv6_disabled", "interface", ifn, "err", why)
			m.v6Off[ifn] = why
			changed = true
		case why == "" && had:
			m.log.Info("IPv6 enabled again on a floating IP's interface", "event", "ipv6_enabled", "interface", ifn)
			delete(m.v6Off, ifn)
			changed = true
		}
	}
	for ifn := range m.v6Off {
		if !seen[ifn] {
			delete(m.v6Off, ifn) // no IPv6 floating IP on it since a reload
			changed = true
		}
	}
	return changed
}

// openFloat creates the floating IP manager watching ifaces.
func (m *manager) openFloat(ifaces []string) error {
	f, err := m.host.newFloat(ifaces)
	if err != nil {
		return err
	}
	m.float = f
	m.syncLease()
	// A failure is logged by float and shown in status (kernel_lease).
	_ = f.Guard(m.vips)
	m.floatIfaces = map[string]bool{}
	for _, ifn := range ifaces {
		m.floatIfaces[ifn] = true
	}
	return nil
}

// startWatch runs float's address, link and conflict watch until
// stopWatch or the end of Run. Before Run's loop starts it does nothing:
// Run starts it then.
func (m *manager) startWatch() {
	if m.watchCtx == nil || m.float == nil {
		return
	}
	ctx, cancel := context.WithCancel(m.watchCtx)
	done := make(chan struct{})
	m.watchCancel, m.watchDone = cancel, done
	f := m.float
	go func() {
		defer close(done)
		if err := f.Watch(ctx, m.netEvents); err != nil {
			m.log.Error("cannot watch floating IPs and links", "event", "watch_error", "err", err)
		}
	}()
}

func (m *manager) stopWatch() {
	if m.watchCancel == nil {
		return
	}
	m.watchCancel()
	<-m.watchDone
	m.watchCancel, m.watchDone = nil, nil
	// What the old watch reported is about the old manager; the new one
	// lists every link again.
	for {
		select {
		case <-m.netEvents:
		default:
			return
		}
	}
}

// rebuildFloat replaces the floating IP manager by one that watches every
// current VIP interface. netfloat learns interfaces only when created or
// when a VIP is claimed on them, so a reload that brings a new interface
// while nothing is held rebuilds it; the active does it when it releases.
// Only called while nothing is held: a fresh manager holds nothing.
func (m *manager) rebuildFloat(now time.Duration) {
	m.watchStale = false
	ifaces := vipInterfaces(m.vips)
	old := m.float
	if err := m.openFloat(ifaces); err != nil {
		m.float = old
		m.log.Error("cannot watch the reloaded VIP interfaces; their link state is read again only at a restart", "event", "watch_error", "err", err)
		return
	}
	if old != nil {
		m.stopWatch()
		_ = old.Close()
	}
	m.startWatch()
	m.refreshLinks(ifaces)
	m.updateHealth(now)
	m.log.Debug("floating IP watch rebuilt", "interfaces", strings.Join(ifaces, ","))
}

// kernelLeaseReport is the kernel lease for status; nil without VIPs.
func (m *manager) kernelLeaseReport() *ctlmsg.KernelLease {
	if m.host == nil {
		return nil
	}
	switch have, err := m.host.kernelLease(); {
	case err != nil:
		return &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseUnavailable, Reason: err.Error()}
	case !have || m.float == nil:
		return nil
	}
	s := m.float.KernelLeaseStats()
	r := &ctlmsg.KernelLease{State: ctlmsg.KernelLeaseEnforcing, Applies: s.Applies, Failures: s.Failures,
		LastApplyUS: s.LastApply.Microseconds(), MaxApplyUS: s.MaxApply.Microseconds(), RefreshFallbacks: s.RefreshFallbacks}
	if s.Failing {
		r.State, r.Reason = ctlmsg.KernelLeaseFailing, s.LastError
	}
	return r
}

func (m *manager) closeFloat() {
	m.stopWatch()
	if m.float != nil {
		_ = m.float.Close()
	}
	if m.host != nil {
		m.host.close()
	}
}
