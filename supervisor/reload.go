package supervisor

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/vigil-project/vigil/config"
)

// Reload re-reads the config file and applies it in place: removed processes
// stop, added ones start, changed ones restart, unchanged ones keep running
// (a FATAL one is given a fresh start). An invalid file changes nothing.
func (s *Supervisor) reload() (*ReloadResult, error) {
	cfg, err := config.Load(s.opts.ConfigPath)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				s.log.Error("reload refused: invalid config", "event", "reload_refused", "err", e.Error())
			}
		} else {
			s.log.Error("reload refused", "event", "reload_refused", "err", err)
		}
		return nil, &invalidConfigError{err}
	}
	if s.stopping {
		return nil, errors.New("supervisor is stopping")
	}
	if err := movedAddress(s.cfg, cfg); err != nil {
		s.log.Error("reload refused", "event", "reload_refused", "err", err)
		return nil, &invalidConfigError{err}
	}
	// The first floating IP of a host that started without: refused, with
	// nothing changed, if another vigil holds floating IPs here.
	if err := s.ownNamespace(cfg); err != nil {
		s.log.Error("reload refused", "event", "reload_refused", "err", err)
		return nil, err
	}
	s.reloads++
	old := make(map[string]*proc, len(s.procs))
	for _, p := range s.procs {
		old[p.cfg.Name] = p
	}
	var next []*proc
	var added, changed, removed, kept []string
	for _, pc := range cfg.Processes {
		p, ok := old[pc.Name]
		delete(old, pc.Name)
		switch {
		case !ok:
			p = s.newProc(pc)
			added = append(added, pc.Name)
			s.start(p)
		case !reflect.DeepEqual(p.cfg, pc):
			changed = append(changed, pc.Name)
			// Judged by the configuration it was running with.
			wasUp := p.upForHealth()
			p.cfg = pc
			p.failures = 0
			if wasUp {
				s.beginRestartGrace(p, "reload")
			}
			pp := p
			s.stop(p, "reload: changed", func() { pp.restarts = 0; s.start(pp) })
		case p.state == StateFatal || p.state == StateExited:
			kept = append(kept, pc.Name)
			p.failures = 0
			s.start(p)
		default:
			kept = append(kept, pc.Name)
		}
		next = append(next, p)
	}
	for name, p := range old {
		removed = append(removed, name)
		p.clearRestartGrace() // it no longer counts at all
		pp := p
		s.stop(p, "reload: removed", func() { s.deleteGroup(pp, nil) })
	}
	s.procs = next
	keys := restartOnlyKeys(s.cfg, cfg)
	if len(keys) > 0 {
		// Restarting the locator or node manager here would move the
		// active role because of a reload; every host must agree on the
		// cluster anyway. The supervisor keeps what is in force (status
		// shows it; the fence follows the node manager's own lease).
		s.log.Warn("changed settings not applied by a reload: restart vigil on this host for them to take effect (for cluster settings, on every host, one at a time)",
			"event", "reload_deferred", "keys", strings.Join(keys, ","))
		cfg.Cluster, cfg.Runtime, cfg.Log = s.cfg.Cluster, s.cfg.Runtime, s.cfg.Log
		if len(cfg.Services) != len(s.cfg.Services) {
			// The services in force stay, with their addresses and
			// processes, until a restart.
			cfg.Services, cfg.VIPs = s.cfg.Services, s.cfg.VIPs
		}
		for i := range cfg.Services {
			in := s.cfg.Services[i]
			cfg.Services[i].Name, cfg.Services[i].Prefer, cfg.Services[i].Failback = in.Name, in.Prefer, in.Failback
		}
	}
	vipsChanged := !reflect.DeepEqual(s.cfg.VIPs, cfg.VIPs)
	pushCP := vipsChanged || !reflect.DeepEqual(s.cfg.Hooks, cfg.Hooks)
	if vipsChanged {
		// The first VIP of a service that started without: the fence
		// must be able to remove it.
		s.openFencers(cfg)
	}
	s.cfg = cfg
	if pushCP {
		// In place, without restarting the node manager.
		s.pushConfig(cfg)
	}
	s.applyGroupResources()
	s.updateHealth()
	s.log.Info("config reloaded", "event", "reload", "added", strings.Join(added, ","), "changed", strings.Join(changed, ","), "removed", strings.Join(removed, ","), "unchanged", strings.Join(kept, ","))
	slices.Sort(removed) // from a map
	return &ReloadResult{Config: s.opts.ConfigPath, Added: added, Changed: changed, Removed: removed, Unchanged: kept, Deferred: keys}, nil
}

// movedAddress refuses a reload that moves a floating IP from one service
// to another. Every host reloads on its own: a host that reloaded first
// would claim the address for its new service while another still holds
// it for the old one, the same address on two hosts; and on one host the
// two node managers apply it in no set order. Removed in one reload (on
// every host) and added in the next, it is never held twice.
func movedAddress(old, next *config.Config) error {
	if old == nil || len(old.Services) != len(next.Services) {
		return nil // a change of services waits for a restart anyway
	}
	was := map[netip.Addr]string{}
	for _, svc := range old.Services {
		for _, v := range svc.VIPs {
			if p, err := netip.ParsePrefix(v.Address); err == nil {
				was[p.Addr().Unmap()] = svc.Name
			}
		}
	}
	for i, svc := range next.Services {
		// By place: a reload keeps the services in force, names too.
		name := old.Services[i].Name
		for _, v := range svc.VIPs {
			p, err := netip.ParsePrefix(v.Address)
			if err != nil {
				continue
			}
			if from, ok := was[p.Addr().Unmap()]; ok && from != name {
				return fmt.Errorf("floating IP %s moves from service %s to %s in one reload: remove it from %s and reload on every host, then add it to %s and reload again (in one step, a host that reloaded first would claim it for %s while another still holds it for %s)",
					p.Addr(), from, name, from, name, name, from)
			}
		}
	}
	return nil
}
