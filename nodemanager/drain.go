package nodemanager

import (
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/netfloat"
)

// drain is the old active's half of a planned handover (switchover,
// maintenance, an orderly stop): make-before-break. The protocol has
// already given the role away; the floating IPs stay on this host, no
// longer announced, so that a client whose ARP or neighbour entry still
// points here is served until the successor's announcement reaches it.
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
	if !m.held || m.float == nil || len(m.vips) == 0 || leaseUntil <= now {
		m.release("handover to " + to)
		return
	}
	d := &drain{to: to, started: now, until: leaseUntil, left: map[string]*drainVIP{}}
	for _, v := range m.vips {
		if err := m.float.Quiet(v); err != nil {
			// Not held (its claim failed): nothing to keep.
			continue
		}
		d.left[v.String()] = &drainVIP{vip: v, until: leaseUntil}
	}
	if len(d.left) == 0 {
		m.release("handover to " + to)
		return
	}
	m.drain = d
	m.log.Info("keeping the floating IPs until the successor announces them", "event", "drain",
		"to", to, "vips", len(d.left), "max_ms", (leaseUntil - now).Milliseconds())
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
	for k, x := range d.left {
		if now < x.until {
			continue
		}
		delete(d.left, k)
		if err := m.float.Release(x.vip); err != nil {
			m.log.Error("cannot remove floating IP", "event", "vip_error", "vip", x.vip.String(), "err", err)
		}
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
	if wait := last - clock.Boottime(); wait > 0 {
		time.Sleep(wait)
	}
	m.checkDrain(clock.Boottime())
}

// msf is a duration in milliseconds, rounded to 0.01 ms for the logs.
func msf(d time.Duration) float64 { return float64(d.Microseconds()/10) / 100 }
