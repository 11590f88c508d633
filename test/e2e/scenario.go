package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Scenario names, as in summary lines.
const (
	ScenarioKill = "kill"
	// ScenarioNMCrash SIGKILLs only the process that holds the active's
	// role (Vigil's node manager) on a host that lives on: its supervisor
	// knows for certain it died (NodeManagerKiller).
	ScenarioNMCrash     = "nmcrash"
	ScenarioLinkdown    = "linkdown"
	ScenarioStall       = "stall"
	ScenarioAppfail     = "appfail"
	ScenarioNoisy       = "noisy"
	ScenarioSwitchover  = "switchover"
	ScenarioWitnesskill = "witnesskill"
	ScenarioFreeze      = "freeze"
	// ScenarioFlood floods the active's cluster ports with random UDP
	// from host x, which is no peer; ScenarioFloodSpoof with forged Vigil
	// heads (wrong MAC, and the cluster tag a forger without the key can
	// write) from x spoofing the standby's address and port;
	// ScenarioFloodTagged the same with the cluster's real tag, as an
	// eavesdropper on the cluster network could. Nothing failed: any move
	// is false.
	ScenarioFlood       = "flood"
	ScenarioFloodSpoof  = "floodspoof"
	ScenarioFloodTagged = "floodtagged"
	// ScenarioFailback: the role starts on the node the service prefers,
	// a switchover moves it away, and the failback brings it back (two
	// planned moves). Only for a system with a failback (Failbacker);
	// not in Scenarios, so run it by name.
	ScenarioFailback = "failback"
)

// Failbacker is a System that moves the role back to a preferred node.
type Failbacker interface {
	// Preferred is the node the role fails back to; ok is false when the
	// system runs without a failback.
	Preferred() (node string, ok bool)
}

// Scenarios is every scenario, in the order the benchmark runs them.
var Scenarios = []string{ScenarioKill, ScenarioNMCrash, ScenarioLinkdown, ScenarioStall, ScenarioFreeze, ScenarioAppfail, ScenarioNoisy, ScenarioSwitchover, ScenarioWitnesskill, ScenarioFlood, ScenarioFloodSpoof, ScenarioFloodTagged}

// ExpectsFailover says whether the scenario calls for the role to move:
// in noisy, witnesskill and the floods nothing failed, so any move is a
// false failover.
func ExpectsFailover(scenario string) bool {
	switch scenario {
	case ScenarioNoisy, ScenarioWitnesskill, ScenarioFlood, ScenarioFloodSpoof, ScenarioFloodTagged:
		return false
	}
	return true
}

// isFlood says whether the scenario is one of the floods.
func isFlood(scenario string) bool {
	return scenario == ScenarioFlood || scenario == ScenarioFloodSpoof || scenario == ScenarioFloodTagged
}

// RunOptions shape one run.
type RunOptions struct {
	Rate      int           // calls per second, default 50
	Before    time.Duration // traffic before the fault, default 1 s
	After     time.Duration // traffic after the fault has been injected, default 4 s
	Stall     time.Duration // how long stall stops the process, default 2 s
	FreezeFor time.Duration // how long freeze stops every process of the system, default 3 s
	Noise     time.Duration // how long noisy's neighbour runs, default 60 s
	Flood     time.Duration // how long the floods last, default 60 s
	// FloodRate paces the floods (datagrams/s); 0: as fast as one
	// sending thread can.
	FloodRate int
	Linkdown  time.Duration // how long linkdown keeps the link down, default After
	// ProbeEvery is the outage prober's interval, default 2 ms.
	ProbeEvery time.Duration
	// BeforeFault, if set, runs just before the fault is injected, with
	// the active node (the demo shows `vigil status` here).
	BeforeFault func(active string)
	// OnFault, if set, runs right after the fault is injected, with the
	// node that was active (the e2e tests scrape /metrics from here).
	OnFault func(active string)
	// Freeze, if set, is read for the machine's worst freeze during the
	// traffic window (Result.FreezeMax).
	Freeze *FreezeProbe
	// AtEnd, if set, runs after the measurement, before the system is
	// stopped (to read its status).
	AtEnd func(r Result)
}

func (o RunOptions) withDefaults() RunOptions {
	if o.Rate == 0 {
		o.Rate = 50
	}
	if o.Before == 0 {
		o.Before = time.Second
	}
	if o.After == 0 {
		o.After = 4 * time.Second
	}
	if o.Stall == 0 {
		o.Stall = 2 * time.Second
	}
	if o.FreezeFor == 0 {
		o.FreezeFor = 3 * time.Second
	}
	if o.Noise == 0 {
		o.Noise = 60 * time.Second
	}
	if o.Flood == 0 {
		o.Flood = 60 * time.Second
	}
	if o.Linkdown == 0 {
		o.Linkdown = o.After
	}
	if o.ProbeEvery == 0 {
		o.ProbeEvery = 2 * time.Millisecond
	}
	return o
}

// Result is one run of one scenario.
type Result struct {
	System, Scenario string
	From             string // the active before the fault
	FaultAt          time.Time
	Final            string // the sole holder at the end ("" if none)
	Moves            int    // times the floating IP changed hands
	Retakes          int    // times its holder took it back after a gap (Ownership.Retakes)
	FalseFailover    bool   // it moved although nothing failed
	Outage           Outage
	Calls            Calls
	Dual             time.Duration // both nodes held the floating IP
	DualAtEnd        bool          // ... and still did when the run ended
	Ownership        Ownership
	Took             time.Duration // the whole run
	// FreezeMax is the freeze probe's worst lateness during the traffic
	// window (0 without RunOptions.Freeze): the machine's own floor.
	FreezeMax time.Duration
	// Flood is what the flood scenarios' sender managed (zero otherwise).
	Flood FloodResult
	// Lost is every failed call followed through the SIP traces, and
	// LostErr why that could not be done.
	Lost    []LostCall
	LostErr error
}

// Straddled counts the lost calls whose dialog straddled the move.
func (r Result) Straddled() int {
	n := 0
	for _, l := range r.Lost {
		if l.Straddled() {
			n++
		}
	}
	return n
}

// LostLines describes each lost call, one line each.
func (r Result) LostLines() []string {
	var out []string
	for _, l := range r.Lost {
		kind := "not_straddled"
		if l.Straddled() {
			kind = "straddled"
		}
		out = append(out, fmt.Sprintf("lost_call call_id=%s %s nodes=%s story=%q", l.CallID, kind, strings.Join(l.Nodes, "+"), l.Story))
	}
	if r.LostErr != nil {
		out = append(out, fmt.Sprintf("lost_call trace_error=%q", r.LostErr.Error()))
	}
	return out
}

// Line is the run as one key=value line.
func (r Result) Line() string {
	return fmt.Sprintf("%s scenario=%s from=%s to=%s moves=%d retakes=%d outage_ms=%.1f calls=%d failed_calls=%d unfinished_calls=%d retrans_calls=%d retransmissions=%d dual_ms=%.1f dual_at_end=%v false_failover=%v freeze_max_ms=%.1f",
		r.System, r.Scenario, r.From, r.Final, r.Moves, r.Retakes, ms(r.Outage.Longest), r.Calls.Placed, r.Calls.Failed, r.Calls.Unfinished,
		r.Calls.RetransCalls, r.Calls.Retransmissions, ms(r.Dual), r.DualAtEnd, r.FalseFailover, ms(r.FreezeMax)) + r.lostFields() + r.floodFields()
}

// lostFields says how many lost calls the SIP traces show straddling the
// move, when calls were lost.
func (r Result) lostFields() string {
	if r.Calls.Failed == 0 {
		return ""
	}
	return fmt.Sprintf(" lost_traced=%d lost_straddled=%d", len(r.Lost), r.Straddled())
}

func (r Result) floodFields() string {
	if r.Flood.Sent == 0 {
		return ""
	}
	return fmt.Sprintf(" flood_sent=%d flood_pps=%.0f", r.Flood.Sent, r.Flood.Rate())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Run starts sys, places calls, injects the scenario's fault on the active
// node, and measures; it stops sys before returning. A run that cannot be
// carried out (the system did not start, a fault could not be injected) is
// an error; how the system coped is the Result.
func Run(t TB, n *Net, sys System, scenario string, o RunOptions) (Result, error) {
	t.Helper()
	o = o.withDefaults()
	start := time.Now()
	r := Result{System: sys.Label(), Scenario: scenario}
	if err := sys.Start(); err != nil {
		return r, err
	}
	defer func() { _ = sys.Stop() }()
	r.From = n.Holder()
	if r.From == "" {
		return r, errorf("no sole holder after start")
	}
	if scenario == ScenarioFailback {
		// The run starts on the preferred node: whoever won the first
		// claim, the failback brings the role there.
		fb, ok := sys.(Failbacker)
		if !ok {
			return r, ErrNotApplicable
		}
		pref, ok := fb.Preferred()
		if !ok {
			return r, ErrNotApplicable
		}
		if err := n.waitHolder(pref, 30*time.Second); err != nil {
			return r, err
		}
		r.From = pref
	}
	// Settle: the SIP server on the active answers before traffic starts.
	if err := n.waitSIP(t, 10*time.Second); err != nil {
		return r, err
	}

	window := o.Before + o.After
	if scenario == ScenarioNoisy && o.Noise+2*time.Second > o.After {
		window = o.Before + o.Noise + 2*time.Second
	}
	if isFlood(scenario) && o.Flood+2*time.Second > o.After {
		window = o.Before + o.Flood + 2*time.Second
	}
	if o.Freeze != nil {
		o.Freeze.TakeMax()
	}
	own := n.Probe(time.Millisecond)
	outage := n.ProbeSIP(t, o.ProbeEvery)
	capture, capErr := n.startSIPCapture()
	if capErr == nil {
		defer capture.Stop()
	}
	calls := n.StartCalls(t, o.Rate, int(window.Seconds()*float64(o.Rate)), 8*time.Second)
	// Before sys.Stop: a run that returns early (ErrNotApplicable, a
	// fault not injected) leaves no SIPp holding the client's SIP port for
	// the next run.
	defer calls.Stop()
	time.Sleep(o.Before)

	if o.BeforeFault != nil {
		o.BeforeFault(r.From)
	}
	faultAt := time.Now()
	r.FaultAt = faultAt
	var ferr error
	var flood *Flood
	switch scenario {
	case ScenarioKill:
		ferr = sys.Kill(r.From)
	case ScenarioNMCrash:
		if k, ok := sys.(NodeManagerKiller); ok {
			ferr = k.KillNodeManager(r.From)
		} else {
			ferr = ErrNotApplicable
		}
	case ScenarioLinkdown:
		ferr = n.Hosts[r.From].SetPort(false)
	case ScenarioStall:
		ferr = sys.Stall(r.From, o.Stall)
	case ScenarioFreeze:
		ferr = sys.Freeze(r.From, o.FreezeFor)
	case ScenarioAppfail:
		ferr = sys.FailApp(r.From)
	case ScenarioNoisy:
		ferr = sys.Noise(r.From, o.Noise)
	case ScenarioSwitchover:
		ferr = sys.Switchover(r.From)
	case ScenarioWitnesskill:
		ferr = sys.KillWitness()
	case ScenarioFailback:
		ferr = sys.Switchover(r.From)
	case ScenarioFlood, ScenarioFloodSpoof, ScenarioFloodTagged:
		flood, ferr = startFlood(n, sys, scenario, r.From, o.Flood, o.FloodRate)
	default:
		ferr = errorf("unknown scenario %q", scenario)
	}
	if ferr == nil && o.OnFault != nil {
		o.OnFault(r.From)
	}
	if ferr != nil {
		own.Stop()
		outage.Stop(0)
		if ferr == ErrNotApplicable {
			return r, ErrNotApplicable
		}
		return r, fmt.Errorf("inject %s on %s: %w", scenario, r.From, ferr)
	}
	if scenario == ScenarioLinkdown {
		time.Sleep(time.Until(faultAt.Add(o.Linkdown)))
		if err := n.Hosts[r.From].SetPort(true); err != nil {
			own.Stop()
			outage.Stop(0)
			return r, err
		}
	}
	if flood != nil {
		// Before the calls are waited for: the flood ends on its own.
		r.Flood, _ = flood.Wait()
	}
	callsRes, cerr := calls.Wait(time.Until(start.Add(window)) + 15*time.Second)
	if o.Freeze != nil {
		r.FreezeMax = o.Freeze.TakeMax()
	}
	r.Outage = outage.Stop(300 * time.Millisecond)
	r.Ownership = own.Stop()
	if cerr != nil {
		return r, cerr
	}
	r.Calls = callsRes
	if callsRes.Failed > 0 {
		if capErr != nil {
			r.LostErr = capErr
		} else {
			captured, err := capture.Stop()
			r.Lost, r.LostErr = explainLost(calls.Trace(), captured)
			if err != nil {
				r.LostErr = errors.Join(r.LostErr, err)
			}
		}
	}
	r.Final, r.Moves, r.Retakes = r.Ownership.Final, r.Ownership.Moves, r.Ownership.Retakes
	r.Dual, r.DualAtEnd = r.Ownership.Dual, r.Ownership.DualAtEnd
	r.FalseFailover = !ExpectsFailover(scenario) && r.Moves > 0
	if o.AtEnd != nil {
		o.AtEnd(r)
	}
	_ = sys.Heal()
	r.Took = time.Since(start)
	return r, nil
}

// startFlood floods the active's cluster ports from the attacker host x:
// as itself (flood) or spoofing the standby's node manager address
// (floodspoof; floodtagged with the cluster tag).
func startFlood(n *Net, sys System, scenario, active string, d time.Duration, rate int) (*Flood, error) {
	fl, ok := sys.(Flooder)
	if !ok {
		return nil, ErrNotApplicable
	}
	spec := FloodSpec{Host: "x", Src: netip.AddrPortFrom(n.Hosts["x"].Addr.Addr(), 0), Targets: fl.ClusterPorts(active), D: d, Rate: rate}
	if scenario == ScenarioFloodSpoof || scenario == ScenarioFloodTagged {
		standby := Other(active)
		for _, p := range fl.ClusterPorts(standby) {
			spec.Src = p // the standby's node manager address and port
			break
		}
		spec.Forge, spec.Cluster, spec.From, spec.To = true, fl.ClusterName(), standby, active
		if scenario == ScenarioFloodTagged {
			spec.Tag = fl.ClusterTag()
		}
	}
	return n.StartFlood(spec)
}

// waitHolder waits until id is the sole holder of the floating IP.
func (n *Net) waitHolder(id string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if n.Holder() == id {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errorf("%s does not hold the floating IP within %v (holder %q)", id, within, n.Holder())
}

// waitSIP waits until an OPTIONS to the floating IP is answered.
func (n *Net) waitSIP(t TB, within time.Duration) error {
	p := n.ProbeSIP(t, 20*time.Millisecond)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		p.mu.Lock()
		ok := len(p.answered) > 0
		p.mu.Unlock()
		if ok {
			p.Stop(0)
			return nil
		}
	}
	p.Stop(0)
	return errorf("the SIP server on %s does not answer within %v", VIP, within)
}

// Describe is a multi-line account of a run for failure messages.
func (r Result) Describe() string {
	var b strings.Builder
	b.WriteString(r.Line())
	b.WriteString("\nownership changes:")
	for _, c := range r.Ownership.Changes {
		h := c.Holder
		if h == "" {
			h = "none"
		}
		fmt.Fprintf(&b, " %s@%s", h, c.At.Format("15:04:05.000"))
	}
	if !r.Outage.LongestStart.IsZero() {
		fmt.Fprintf(&b, "\nlongest outage began %s", r.Outage.LongestStart.Format("15:04:05.000"))
	}
	for _, l := range r.LostLines() {
		b.WriteString("\n" + l)
	}
	return b.String()
}

// NodeManagerKiller is a System whose role is kept by one process that a
// supervisor on the same host watches (Vigil's node manager): nmcrash
// SIGKILLs only that process. keepalived has no such split (its one
// daemon is the whole system: kill), so nmcrash does not apply to it.
type NodeManagerKiller interface {
	KillNodeManager(host string) error
}
