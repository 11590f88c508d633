package e2e

import (
	"net/netip"
	"time"
)

// ActiveActiveOptions configure RunActiveActive.
type ActiveActiveOptions struct {
	// Rate (calls/s) and Calls, per service; 25 and 250 if zero.
	Rate, Calls int
	// Before is how long calls flow to both services before the kill
	// (3 s if zero), so that dialogs are in flight when a dies.
	Before time.Duration
	// BeforeFault, if set, runs once each service is on its node and
	// calls flow to both, just before the kill.
	BeforeFault func()
	// AtEnd, if set, runs once b holds both services' addresses.
	AtEnd func()
}

func (o ActiveActiveOptions) withDefaults() ActiveActiveOptions {
	if o.Rate == 0 {
		o.Rate = 25
	}
	if o.Calls == 0 {
		o.Calls = 250
	}
	if o.Before == 0 {
		o.Before = 3 * time.Second
	}
	return o
}

// ActiveActiveResult is what the callers of each service saw.
type ActiveActiveResult struct {
	Moved  Calls // calls to sip (VIP), which moved from a to b
	Stayed Calls // calls to sip2 (VIP2), on b throughout
	// Took is from the kill until b held both addresses (sampled every
	// 20 ms).
	Took time.Duration
}

// RunActiveActive is the active/active pair's failure, the run of
// TestE2EActiveActive and of `make demo DEMOFLAGS=-scenario=activeactive`.
// v must run with SecondService and be started. It puts sip on a and sip2
// on b (whoever came up first holds both: without failback nothing moves
// them, so `vigil switchover` does), places calls to both addresses, kills
// every process of Vigil and the SIP servers on a, waits until b holds
// both, and returns each service's calls.
func RunActiveActive(t TB, n *Net, v *Vigil, o ActiveActiveOptions) (ActiveActiveResult, error) {
	o = o.withDefaults()
	var res ActiveActiveResult
	holds := func(id, vip string) bool { return n.Hosts[id].HasAddr(netip.MustParseAddr(vip)) }
	waitFor := func(what string, within time.Duration, cond func() bool) error {
		for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				return errorf("timed out after %v waiting for %s\n--- a:\n%s\n--- b:\n%s", within, what, tail(v.Log("a"), 3000), tail(v.Log("b"), 3000))
			}
		}
		return nil
	}
	for _, p := range []struct{ svc, vip, to string }{{"sip", VIP, "a"}, {"sip2", VIP2, "b"}} {
		// Asked again until it holds: a switchover is refused while the
		// token has not yet shown the target fit (it just started).
		for deadline := time.Now().Add(30 * time.Second); !holds(p.to, p.vip); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				return res, errorf("%s not on %s after 30 s of switchovers\n--- a:\n%s\n--- b:\n%s", p.svc, p.to, tail(v.Log("a"), 3000), tail(v.Log("b"), 3000))
			}
			_ = n.Command("a", v.opts.Bin, "switchover", p.svc, "--to", p.to, "--socket", v.Socket("a")).Run()
		}
	}
	if err := waitFor("sip on a alone and sip2 on b alone", 30*time.Second, func() bool {
		return holds("a", VIP) && !holds("b", VIP) && holds("b", VIP2) && !holds("a", VIP2)
	}); err != nil {
		return res, err
	}
	if err := n.waitSIP(t, 10*time.Second); err != nil {
		return res, err
	}
	// A call unanswered for 8 s fails: far past any move.
	c1 := n.StartCallsTo(t, VIP, SIPPort, o.Rate, o.Calls, 8*time.Second)
	c2 := n.StartCallsTo(t, VIP2, SIPPort+2, o.Rate, o.Calls, 8*time.Second)
	time.Sleep(o.Before) // calls in flight to both when a dies
	if o.BeforeFault != nil {
		o.BeforeFault()
	}
	// Nothing has failed yet: a service that moved while the calls flowed
	// is a move without a failure, and the results below would name the
	// wrong service as moved.
	if !holds("a", VIP) || holds("b", VIP) || !holds("b", VIP2) || holds("a", VIP2) {
		return res, errorf("a service moved before the kill, with nothing failed (sip %s on a %v, on b %v; sip2 %s on a %v, on b %v)\n--- a:\n%s\n--- b:\n%s",
			VIP, holds("a", VIP), holds("b", VIP), VIP2, holds("a", VIP2), holds("b", VIP2), tail(v.Log("a"), 3000), tail(v.Log("b"), 3000))
	}
	killed := time.Now()
	if err := v.Kill("a"); err != nil {
		return res, err
	}
	if err := waitFor("both services on b", 30*time.Second, func() bool { return holds("b", VIP) && holds("b", VIP2) }); err != nil {
		return res, err
	}
	res.Took = time.Since(killed)
	if o.AtEnd != nil {
		o.AtEnd()
	}
	var err1, err2 error
	res.Moved, err1 = c1.Wait(60 * time.Second)
	res.Stayed, err2 = c2.Wait(60 * time.Second)
	if err1 != nil {
		return res, err1
	}
	return res, err2
}
