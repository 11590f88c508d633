package timingstat

import "time"

// pendingPerPeer bounds the check-ins remembered per locator while their
// answer is awaited: a locator that stops answering costs no memory.
const pendingPerPeer = 16

// Report is a process's timing figures as it reports them to the
// supervisor (ctlmsg: "timing"), all since the process started.
type Report struct {
	// Late: how late each protocol tick ran (the process's loop: what
	// delays every renewal, check-in and answer it sends).
	Late HistJSON `json:"late"`
	// RTT: the node manager's check-in → ack round trip per locator, in
	// configuration order; none in a locator's report.
	RTT []PeerRTT `json:"rtt,omitempty"`
	WarnState
}

// PeerRTT is the round trip to one locator.
type PeerRTT struct {
	ID  string   `json:"id"`
	RTT HistJSON `json:"rtt"`
}

type sent struct {
	round uint64
	at    time.Duration
}

type peer struct {
	id      string
	rtt     Hist
	pending []sent
}

// Recorder keeps one process's figures. The process's loop owns it (not
// safe for concurrent use); time is the loop's clock. A nil Recorder
// records nothing and reports nil (drivers built without one, in tests).
type Recorder struct {
	late  Hist
	peers []*peer
	warn  *Warn
}

// NewRecorder records lateness, warning through w (nil: no warning), and
// the round trip to each of locators (none for a locator).
func NewRecorder(w *Warn, locators []string) *Recorder {
	r := &Recorder{warn: w}
	for _, id := range locators {
		r.peers = append(r.peers, &peer{id: id})
	}
	return r
}

// Late records a tick that ran late by late at now.
func (r *Recorder) Late(now, late time.Duration) {
	if r == nil {
		return
	}
	late = max(late, 0)
	r.late.Add(late)
	if r.warn != nil {
		r.warn.Observe(now, late)
	}
}

func (r *Recorder) peer(id string) *peer {
	for _, p := range r.peers {
		if p.id == id {
			return p
		}
	}
	return nil
}

// Sent notes a check-in of round to locator id at at. A check-in sent again
// in the same round (to a restarted locator) restarts its clock.
func (r *Recorder) Sent(id string, round uint64, at time.Duration) {
	if r == nil {
		return
	}
	p := r.peer(id)
	if p == nil {
		return
	}
	for i := range p.pending {
		if p.pending[i].round == round {
			p.pending[i].at = at
			return
		}
	}
	if len(p.pending) == pendingPerPeer {
		p.pending = p.pending[1:]
	}
	p.pending = append(p.pending, sent{round, at})
}

// Acked notes locator id's answer to round, received at at: one round
// trip, counted once per check-in.
func (r *Recorder) Acked(id string, round uint64, at time.Duration) {
	if r == nil {
		return
	}
	p := r.peer(id)
	if p == nil {
		return
	}
	for i, s := range p.pending {
		if s.round == round {
			p.rtt.Add(at - s.at)
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			return
		}
	}
}

// Report returns the figures at now.
func (r *Recorder) Report(now time.Duration) *Report {
	if r == nil {
		return nil
	}
	rep := &Report{Late: r.late.JSON()}
	if r.warn != nil {
		rep.WarnState = r.warn.State(now)
	}
	for _, p := range r.peers {
		rep.RTT = append(rep.RTT, PeerRTT{ID: p.id, RTT: p.rtt.JSON()})
	}
	return rep
}
