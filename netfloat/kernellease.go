package netfloat

import (
	"net/netip"
	"time"
)

// KernelLease is the kernel's copy of the lease: what the host may still
// do for each floating address when no Vigil process runs. NFTLease is the
// real one; tests may fake it.
type KernelLease interface {
	// Apply makes the kernel enforce st, replacing what it enforced
	// before, in one atomic step. A lease element lasts until its
	// deadline (on Options.LeaseClock), read at the moment of the call,
	// never longer.
	Apply(st LeaseState) error
	// Disarm stops all enforcement: the host behaves as without the
	// kernel lease.
	Disarm() error
}

// LeaseState is what the kernel enforces.
type LeaseState struct {
	// Guarded are the addresses the rules apply to: every configured
	// VIP and every held one. Traffic for other addresses is untouched.
	Guarded []netip.Addr
	// Announce: the host may answer ARP / send neighbour advertisements
	// for the address until the deadline.
	Announce []LeaseElement
	// Accept: the host may receive packets to the address until the
	// deadline.
	Accept []LeaseElement
}

// LeaseElement is one address's right until a deadline on the lease clock.
type LeaseElement struct {
	Addr  netip.Addr
	Until time.Duration
}

// KernelLeaseStats say how the kernel lease fares, for status and metrics.
type KernelLeaseStats struct {
	Enabled bool // Options.KernelLease was set
	// Failing: the last Apply failed; the kernel lease is disarmed (or
	// could not even be) and the address lifetime is the bound again.
	Failing   bool
	LastError string
	Applies   uint64 // programming transactions sent
	Failures  uint64 // of which failed
	// LastApply and MaxApply are how long one transaction took.
	LastApply, MaxApply time.Duration
	// RefreshFallbacks counts refreshes that went through the nftables
	// library because the hand-built batch failed (NFTLease).
	RefreshFallbacks uint64
}

// refreshFallbacker is a KernelLease that says how many refreshes it
// could not send its cheap way (NFTLease.RefreshFallbacks).
type refreshFallbacker interface {
	RefreshFallbacks() (uint64, string)
}

// Guard sets the configured VIPs the kernel lease protects (besides every
// held one): for these addresses a host without a live lease element
// answers no ARP/NDP and accepts no packets. Without a KernelLease it does
// nothing.
func (m *Manager) Guard(vips []VIP) error {
	if m.kl == nil {
		return nil
	}
	g := map[netip.Addr]bool{}
	for _, v := range vips {
		nv, err := Normalize(v)
		if err != nil {
			return err
		}
		g[nv.Prefix.Addr()] = true
	}
	m.mu.Lock()
	m.guard = g
	m.mu.Unlock()
	return m.applyKernel()
}

// KernelLeaseStats returns how the kernel lease fares.
func (m *Manager) KernelLeaseStats() KernelLeaseStats {
	if m.kl == nil {
		return KernelLeaseStats{}
	}
	m.klStatsMu.Lock()
	defer m.klStatsMu.Unlock()
	return m.klStats
}

// refresher passes renewals (SetLeaseDeadline) on to the kernel, off the
// caller's path: the protocol never waits for the kernel.
//
// It does so once half of what the kernel was last given has run out
// (klRefreshAt), not at every renewal: a transaction was the node
// manager's largest single cost after its datagrams (docs/protocol.md,
// "Crash timeline"), and a lease is renewed many times over its length
// (every token_interval; a 60 ms lease six times). A timer wakes it at that
// moment and it gives the kernel the latest deadline, so the kernel never
// ends before the lease while this goroutine runs within half a lease of
// its time; a renewal arriving after that moment wakes it too.
//
// Safety does not depend on it: every element's timeout is computed from
// the deadline at the moment of the transaction, so a late or skipped
// refresh only shortens what the kernel grants; it can never reach past
// the lease.
func (m *Manager) refresher() {
	defer m.klWG.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-m.klStop:
			t.Stop()
			return
		case <-m.klKick:
		case <-t.C:
		}
		now := m.opts.LeaseClock()
		if m.leaseUntil.Load() > m.klEnd.Load() && now >= time.Duration(m.klRefreshAt.Load()) && m.busy() {
			_ = m.program()
			now = m.opts.LeaseClock()
		}
		// Armed for the next refresh whoever programmed last (a Claim
		// programs in its caller's goroutine, then kicks).
		if at := time.Duration(m.klRefreshAt.Load()); at > now {
			t.Reset(at - now)
		} else {
			t.Stop()
		}
	}
}

// busy says whether the kernel lease grants anything to renew: a VIP held
// or being claimed.
func (m *Manager) busy() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.held)+len(m.claiming) > 0
}

// kickRefresher wakes the refresher without waiting.
func (m *Manager) kickRefresher() {
	select {
	case m.klKick <- struct{}{}:
	default: // a wake-up is pending: it reads the latest state
	}
}

// leaseStateLocked is what the kernel should enforce now, the lease
// ending at until; m.mu held.
func (m *Manager) leaseStateLocked(until time.Duration) LeaseState {
	guard := map[netip.Addr]bool{}
	announce := map[netip.Addr]time.Duration{}
	accept := map[netip.Addr]time.Duration{}
	grant := func(to map[netip.Addr]time.Duration, a netip.Addr, u time.Duration) {
		if u > to[a] {
			to[a] = u
		}
	}
	for a := range m.guard {
		guard[a] = true
	}
	for k, h := range m.held {
		guard[k.addr] = true
		if h.quiet {
			grant(accept, k.addr, h.acceptUntil)
			continue
		}
		grant(announce, k.addr, until)
		grant(accept, k.addr, until)
	}
	for _, a := range m.claiming {
		guard[a] = true
		grant(announce, a, until)
		grant(accept, a, until)
	}
	var st LeaseState
	for a := range guard {
		st.Guarded = append(st.Guarded, a)
	}
	for a, u := range announce {
		st.Announce = append(st.Announce, LeaseElement{Addr: a, Until: u})
	}
	for a, u := range accept {
		st.Accept = append(st.Accept, LeaseElement{Addr: a, Until: u})
	}
	return st
}

// applyKernel programs the current state into the kernel lease, now, in
// the caller's goroutine, and has the refresher arm its timer for what it
// programmed. A failure is logged once per episode and disarms the kernel
// lease, so the host serves as without it (the address lifetime bounds
// it) until a later apply succeeds.
func (m *Manager) applyKernel() error {
	if m.kl == nil {
		return nil
	}
	err := m.program()
	m.kickRefresher()
	return err
}

// program is applyKernel without waking the refresher (which calls it).
func (m *Manager) program() error {
	m.klMu.Lock()
	defer m.klMu.Unlock()
	until := time.Duration(m.leaseUntil.Load())
	m.mu.Lock()
	st := m.leaseStateLocked(until)
	m.mu.Unlock()
	read := m.opts.LeaseClock()
	start := time.Now()
	err := m.kl.Apply(st)
	took := time.Since(start)
	var derr error
	if err != nil {
		derr = m.kl.Disarm()
		m.klEnd.Store(0)
		m.klRefreshAt.Store(0)
	} else {
		// Half of what this transaction gave, counted from before it:
		// the kernel counts from when it processes it, which is later.
		m.klEnd.Store(int64(until))
		m.klRefreshAt.Store(int64(read + max(until-read, 0)/2))
	}
	m.klStatsMu.Lock()
	defer m.klStatsMu.Unlock()
	s := &m.klStats
	s.Applies++
	s.LastApply = took
	s.MaxApply = max(s.MaxApply, took)
	if f, ok := m.kl.(refreshFallbacker); ok {
		if n, why := f.RefreshFallbacks(); n > s.RefreshFallbacks {
			if s.RefreshFallbacks == 0 {
				// Once: the lease is enforced all the same, at the
				// library's cost, and the count says how often.
				m.log.Warn("the kernel lease's refresh went through the nftables library: the hand-built batch failed", "event", "kernel_lease_refresh_fallback", "err", why)
			}
			s.RefreshFallbacks = n
		}
	}
	if err == nil {
		if s.Failing {
			s.Failing, s.LastError = false, ""
			m.log.Info("kernel lease programmed again", "event", "kernel_lease_recovered")
		}
		return nil
	}
	s.Failures++
	if !s.Failing {
		m.log.Error("cannot program the kernel lease; the floating IPs are served as without it, bounded by their address lifetime",
			"event", "kernel_lease_error", "err", err, "disarm_err", derr)
	}
	s.Failing, s.LastError = true, err.Error()
	return err
}
