package nodemanager

import (
	"time"

	"github.com/vigil-project/vigil/netfloat"
)

// drain is the old active's half of a planned handover (switchover,
// maintenance, an orderly stop). The protocol has already given the role
// away; the floating IPs stay on this host, no longer announced. With
// announce.handover_gap (the default) the kernel refuses every packet to
// them from now on (netfloat Refuse): break-before-make, the successor
// announces them after the gap (gapClaim), and what the client sends in
// between is retransmitted to the successor whole instead of splitting a
// SIP dialog between the nodes; the addresses stay only for answers
// already on their way out. With handover_gap 0 they are still served
// (netfloat Quiet): make-before-break, so that a client whose ARP or
// neighbour entry still points here is served until the successor's
// announcement reaches it.
// The successor is seen announcing an address (a gratuitous ARP or NA from
// another MAC, netfloat's EventConflict), or active in the token (it
// announces before it passes the token on); the address then stays for
// drainLinger more, so that requests already on their way here, and the
// answers to them, are not lost; then it goes. Every address goes at the
// latest when the lease this node held ends: never past what the locators
// granted it.
type drain struct {
	to      string
	started time.Duration
	until   time.Duration // the end of the lease this node held
	left    map[string]*drainVIP
}

type drainVIP struct {
	vip   netfloat.VIP
	until time.Duration // when it goes
	seen  bool          // the successor was seen announcing it
}

// drainLinger is how long an address stays after its successor announced
// it: a LAN round trip plus the time a SIP server takes to answer a request
// that arrived just before (packets in flight to the old MAC, responses
// being sent from the address).
const drainLinger = 20 * time.Millisecond

// startDrain begins a drain after a planned handover to `to`, bounded by
// leaseUntil. With nothing to keep it releases at once.
func (m *manager) startDrain(to string, leaseUntil, now time.Duration) {
	m.vipFail = nil // what could not be added is not owed any more
	if !m.held || m.float == nil || len(m.vips) == 0 || leaseUntil <= now {
		m.release("handover to " + to)
		return
	}
	d := &drain{to: to, started: now, until: leaseUntil, left: map[string]*drainVIP{}}
	gap := m.cfg.Announce.HandoverGap > 0
	var kept []netfloat.VIP // the held ones: one whose claim failed has nothing to keep
	if !gap {
		kept, _ = m.float.QuietAll(m.vips) // its only error: an invalid VIP, which config refuses
	} else {
		var err error
		if kept, err = m.float.RefuseAll(m.vips); err != nil {
			// Break-before-make needs the kernel to refuse what still
			// comes here; without it the addresses go now.
			m.log.Warn("cannot refuse packets to the floating IPs in the kernel; removing them now", "event", "drain", "to", to, "err", err)
			m.release("handover to " + to + " (handover_gap, no kernel lease)")
			return
		}
	}
	for _, v := range kept {
		d.left[v.String()] = &drainVIP{vip: v, until: leaseUntil}
	}
	if len(d.left) == 0 {
		m.release("handover to " + to)
		return
	}
	m.drain = d
	m.log.Info("keeping the floating IPs until the successor announces them", "event", "drain",
		"to", to, "vips", len(d.left), "max_ms", (leaseUntil - now).Milliseconds(), "refusing", gap)
	// The fence deadline moves to the drain's end at once (see report).
	m.report(now)
}

// drainAnnounced: the successor announced v; it goes after drainLinger.
func (m *manager) drainAnnounced(v netfloat.VIP, now time.Duration) {
	if x, ok := m.drain.left[v.String()]; ok && !x.seen {
		x.seen = true
		x.until = min(x.until, now+drainLinger)
	}
}

// checkDrain removes the addresses whose time has come, all of them once
// the successor is seen active.
func (m *manager) checkDrain(now time.Duration) {
	d := m.drain
	if d == nil {
		return
	}
	if st := m.node.Status(); st.Active != "" && st.Active != st.Self {
		for _, x := range d.left {
			x.until = min(x.until, now+drainLinger)
		}
	}
	var due []*drainVIP
	for k, x := range d.left {
		if now >= x.until {
			delete(d.left, k)
			due = append(due, x)
		}
	}
	if len(due) > 0 {
		vips := make([]netfloat.VIP, len(due))
		for i, x := range due {
			vips[i] = x.vip
		}
		if err := m.float.ReleaseAll(vips); err != nil {
			m.log.Error("cannot remove floating IPs", "event", "vip_error", "err", err)
		}
	}
	for _, x := range due {
		reason := "successor_announced"
		if !x.seen {
			reason = "successor_active"
		}
		if now >= d.until {
			reason = "lease_end"
			m.log.Warn("successor not seen announcing a floating IP before our lease ended; removed it", "event", "drain_timeout", "to", d.to, "vip", x.vip.String())
		}
		m.log.Info("floating IP handed over", "event", "release", "vip", x.vip.String(), "to", d.to,
			"reason", reason, "overlap_ms", msf(now-d.started))
	}
	if len(d.left) == 0 {
		m.drain, m.held = nil, false
	}
}

// gapClaim is the successor's half of a break-before-make handover
// (announce.handover_gap): it holds the role but adds and announces the
// floating IPs only at `at`, while the old active already refuses packets
// to them (Refuse). For the length of the gap nobody answers; a request
// sent then is retransmitted by its client, and reaches the new active
// whole, instead of a dialog split between the two.
type gapClaim struct {
	at      time.Duration
	epoch   uint64
	decided time.Duration
}

// checkGapClaim claims the floating IPs when the gap is over, if this
// node still holds the role of that epoch.
func (m *manager) checkGapClaim(now time.Duration) {
	g := m.gapClaim
	if g == nil || now < g.at {
		return
	}
	m.gapClaim = nil
	if st := m.node.Status(); st.Active != st.Self || st.Epoch != g.epoch || !st.LeaseValid {
		return
	}
	m.activate(g.epoch, g.decided)
}

// finishDrain, at an orderly stop, waits for the addresses whose successor
// is known to go after their linger; the rest go now (see shutdown).
func (m *manager) finishDrain() {
	d := m.drain
	if d == nil {
		return
	}
	var last time.Duration
	for _, x := range d.left {
		if x.until < d.until {
			last = max(last, x.until)
		}
	}
	if wait := last - m.clk.Now(); wait > 0 {
		t := m.clk.NewTimer(wait)
		<-t.C()
		t.Stop()
	}
	m.checkDrain(m.clk.Now())
}

// msf is a duration in milliseconds, rounded to 0.01 ms for the logs.
func msf(d time.Duration) float64 { return float64(d.Microseconds()/10) / 100 }
