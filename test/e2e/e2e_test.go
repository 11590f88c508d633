package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/vigilbin"
	"github.com/vigil-project/vigil/supervisor"
)

var vigilBin string

func TestMain(m *testing.M) {
	vigilbin.Main(m, &vigilBin)
}

// needTools skips without root; without sipp or stress-ng it fails under
// CI (which installs them) and skips elsewhere.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (network namespaces, cgroups)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("e2e: %s missing (make deps installs it)", tool)
			}
			t.Skipf("e2e: %s missing: make deps", tool)
		}
	}
}

// testTiming is generous protocol timing: on a loaded CI machine scheduling
// noise must not turn into failovers. The product's defaults are what
// bench/failover measures.
const testTiming = "{token_interval: 30ms, token_timeout: 400ms, lease: 600ms, drift_margin: 50ms}"

func newVigil(t *testing.T) (*Net, *Vigil) {
	t.Helper()
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true})
	start := time.Now()
	// A failed run says why from the nodes' own logs (roles, fences, lost
	// tokens and leases, late timers): a CI failure must be explainable
	// from its output alone. Registered last, it runs before the cluster
	// and its logs are removed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the nodes' account of this test:\n%s", v.Explain(start))
		}
	})
	return n, v
}

func run(t *testing.T, n *Net, v *Vigil, scenario string, o RunOptions) Result {
	t.Helper()
	r, err := Run(t, n, v, scenario, o)
	if err != nil {
		t.Fatalf("%s: %v\n--- a:\n%s\n--- b:\n%s", scenario, err, tail(v.Log("a"), 4000), tail(v.Log("b"), 4000))
	}
	t.Log(r.Describe())
	return r
}

// checkCalls: every call completed. Retransmissions are allowed (the
// outage lasts longer than SIP's T1 at the test timing), failures not.
func checkCalls(t *testing.T, r Result) {
	t.Helper()
	checkCallsAllowing(t, r, 0, "")
}

// checkCallsAllowing is checkCalls where up to allowed failed calls have a
// known cause (why), logged when they occur; an unfinished call still fails.
func checkCallsAllowing(t *testing.T, r Result, allowed int, why string) {
	t.Helper()
	if r.Calls.Placed == 0 {
		t.Fatalf("no calls placed: %s", r.Line())
	}
	if r.Calls.Failed > allowed || r.Calls.Unfinished > 0 {
		t.Errorf("failed SIP calls: %s", r.Line())
	} else if r.Calls.Failed > 0 {
		t.Logf("%d call(s) lost, %s: %s", r.Calls.Failed, why, r.Line())
	}
}

// checkLostStraddled allows up to max lost calls, each of which the SIP
// traces show straddling the move (its requests reached both nodes).
func checkLostStraddled(t *testing.T, r Result, max int) {
	t.Helper()
	if r.Calls.Placed == 0 {
		t.Fatalf("no calls placed: %s", r.Line())
	}
	if r.Calls.Failed == 0 && r.Calls.Unfinished == 0 {
		return
	}
	if r.Calls.Unfinished > 0 || r.Calls.Failed > max || r.LostErr != nil ||
		len(r.Lost) != r.Calls.Failed || r.Straddled() != len(r.Lost) {
		t.Errorf("failed SIP calls not all explained by a dialog straddling the move: %s", r.Describe())
		return
	}
	t.Logf("%d call(s) lost, each a dialog straddling the move:\n%s", r.Calls.Failed, strings.Join(r.LostLines(), "\n"))
}

// checkLostInMove is for a move forced by a failure (kill, stall, link
// down, freeze): a call whose INVITE the failing node had answered with
// 100 Trying cannot complete on the other one (the client no longer
// retransmits the INVITE, and its CANCEL meets a server that never saw
// it): lost without shared dialog state, with keepalived as with Vigil
// (docs/operations.md, "Which calls a move can break"). Up to 2 such calls
// are allowed, each shown straddling the move by the capture; any other
// failed or unfinished call fails the test.
func checkLostInMove(t *testing.T, r Result) {
	t.Helper()
	checkLostStraddled(t, r, 2)
}

func checkMoved(t *testing.T, r Result) {
	t.Helper()
	if r.Moves < 1 || r.Final != Other(r.From) {
		t.Errorf("the floating IP did not move from %s to %s: %s", r.From, Other(r.From), r.Describe())
	}
}

func checkStayed(t *testing.T, r Result) {
	t.Helper()
	if r.Moves != 0 || r.Final != r.From {
		t.Errorf("false failover: %s", r.Describe())
	}
	if r.Outage.Longest > time.Second {
		t.Errorf("a %v outage although nothing failed: %s", r.Outage.Longest, r.Describe())
	}
}

func checkNoDual(t *testing.T, r Result) {
	t.Helper()
	if r.Dual > 0 || r.DualAtEnd {
		t.Errorf("both nodes held %s for %v: %s", VIP, r.Dual, r.Describe())
	}
}

// kill: everything in Vigil's tree on the active is SIGKILLed, the SIP
// server goes on running. The standby takes over; the dead host keeps the
// address until its lifetime ends (nothing is left to remove it), but its
// kernel stops answering for it when its lease ends (the kernel lease,
// issue 12 item 1), before the locators let the standby take over. So the
// two never serve the address together beyond the drift margin, measured
// two ways: the ownership probe (address and live lease element) and real
// ARP requests from the witness host (which MACs answer). Before the kernel
// lease both answered for 0.5-1.6 s (measured, 10 runs), until the address
// lifetime ended; with it, 0 ms in 20 runs.
func TestE2EKill(t *testing.T) {
	n, v := newVigil(t)
	arps := watchARP(t, n, "w", 2*time.Millisecond)
	r := run(t, n, v, ScenarioKill, RunOptions{After: 5 * time.Second, AtEnd: func(r Result) {
		// What the dead host's kernel refused after its lease ended.
		arp, in, ok := n.LeaseDrops(r.From)
		t.Logf("kernel lease drops on the killed host %s: arp=%d inbound=%d (tables: %v)", r.From, arp, in, ok)
	}})
	ans := arps.result()
	checkMoved(t, r)
	checkLostInMove(t, r)
	if r.DualAtEnd {
		t.Errorf("both still serve %s at the end: %s", VIP, r.Describe())
	}
	old, nw := n.Hosts[r.From].MAC, n.Hosts[Other(r.From)].MAC
	arpDual := arpOverlap(ans, old, nw)
	t.Logf("dual serving after kill: probe %v, ARP %v (old %s answered %d times, new %s %d times)",
		r.Dual, arpDual, old, ans[old.String()].n, nw, ans[nw.String()].n)
	if ans[old.String()].n == 0 || ans[nw.String()].n == 0 {
		t.Fatalf("ARP watch saw no answer from the old (%d) or the new (%d) holder", ans[old.String()].n, ans[nw.String()].n)
	}
	// testTiming's drift margin, 50 ms, plus as much again for a loaded
	// machine (the probes sample every 1-2 ms).
	const bound = 100 * time.Millisecond
	if r.Dual > bound || arpDual > bound {
		t.Errorf("after kill both served %s for %v (probe) / %v (ARP), want <= %v: %s", VIP, r.Dual, arpDual, bound, r.Describe())
	}
}

// killvigil: every Vigil process on the active (supervisor, locator, node
// manager) is SIGKILLed while its SIP server goes on running, ready to
// answer on the floating IP: Vigil dead on a live host. The host's kernel
// stops answering ARP for the address and refuses packets to it at the end
// of the lease, so the standby's takeover never meets a second server
// (issue 12 item 1); before, the dead host answered ARP, and its SIP
// server took calls, until the address lifetime ended.
func TestE2EKillVigilAppRunning(t *testing.T) {
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true, KillSparesApps: true})
	arps := watchARP(t, n, "w", 2*time.Millisecond)
	sipAlive := false
	r := run(t, n, v, ScenarioKill, RunOptions{After: 5 * time.Second, OnFault: func(from string) {
		pids, err := treePids(filepath.Join(v.host[from].subtree, "apps", "sip"))
		sipAlive = err == nil && len(pids) > 0
	}, AtEnd: func(r Result) {
		arp, in, ok := n.LeaseDrops(r.From)
		t.Logf("kernel lease drops on %s (Vigil dead, SIP server running): arp=%d inbound=%d (tables: %v)", r.From, arp, in, ok)
	}})
	ans := arps.result()
	if !sipAlive {
		t.Errorf("the SIP server on %s did not survive the kill of Vigil: the scenario did not happen", r.From)
	}
	checkMoved(t, r)
	// The dead host's SIP server took calls until its lease ended; a call
	// set up there whose later messages (ACK, BYE) come after that is
	// lost: no other host knows its dialog, and the old one may no longer
	// take them. At most the calls set up in one lease (50/s × 600 ms);
	// an unfinished call still fails.
	checkCallsAllowing(t, r, 30, "dialogs on the dead host's SIP server straddling its lease end (no shared dialog state)")
	old, nw := n.Hosts[r.From].MAC, n.Hosts[Other(r.From)].MAC
	arpDual := arpOverlap(ans, old, nw)
	t.Logf("dual serving after killing Vigil (SIP server running): probe %v, ARP %v (old answered %d times, new %d)",
		r.Dual, arpDual, ans[old.String()].n, ans[nw.String()].n)
	const bound = 100 * time.Millisecond // drift margin 50 ms + as much slack
	if r.Dual > bound || arpDual > bound || r.DualAtEnd {
		t.Errorf("both served %s for %v (probe) / %v (ARP), at end %v; want <= %v: %s", VIP, r.Dual, arpDual, r.DualAtEnd, bound, r.Describe())
	}
}

// linkdown: the active's link goes down for 3 s; the standby takes over and
// the old active, cut off, gives the address up (its lease expires).
func TestE2ELinkdown(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioLinkdown, RunOptions{After: 5 * time.Second, Linkdown: 3 * time.Second})
	checkMoved(t, r)
	checkLostInMove(t, r)
}

// stall: the incident. The active's node manager is stopped for 2 s. Its
// host's kernel lease stops serving the address when the lease ends, so
// its supervisor leaves it alive (fence_held: killing it would add nothing)
// and kills it only if it stays silent for the hold (3 s at this timing);
// the standby takes over, and the two never serve the address together.
func TestE2EStall(t *testing.T) {
	n, v := newVigil(t)
	fences, held := -1, -1
	r := run(t, n, v, ScenarioStall, RunOptions{After: 4 * time.Second, AtEnd: func(r Result) {
		if st, err := v.Status(r.From); err == nil {
			fences, held = int(st.Supervisor.Fences), int(st.Supervisor.FencesHeld)
		} else {
			t.Errorf("status of %s: %v", r.From, err)
		}
	}})
	checkMoved(t, r)
	checkLostInMove(t, r)
	checkNoDual(t, r)
	t.Logf("on the stalled host %s: fences=%d fences_held=%d", r.From, fences, held)
	if held < 1 {
		t.Errorf("the stalled node manager on %s was not left to the kernel lease (fences=%d fences_held=%d)", r.From, fences, held)
	}
}

// freeze: every Vigil process on the active (supervisor, locator, node
// manager) is stopped for 3 s while its SIP server keeps running. Nothing
// on that host can remove the floating IP, so the kernel lease must stop
// it serving when the lease ends: the standby takes over, the two never
// serve together longer than the drift margin (testTiming's 50 ms, plus
// the probe's own sampling), and when the frozen processes continue the
// role does not come back (one move, no flap).
func TestE2EFreeze(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioFreeze, RunOptions{After: 6 * time.Second})
	checkMoved(t, r)
	if r.Moves != 1 {
		t.Errorf("freeze: the floating IP moved %d times, want once (no flap on resume): %s", r.Moves, r.Describe())
	}
	checkLostInMove(t, r)
	if r.DualAtEnd || r.Dual > 50*time.Millisecond+20*time.Millisecond {
		t.Errorf("freeze: both hosts served %s for %v (at end: %v), want at most the drift margin: %s", VIP, r.Dual, r.DualAtEnd, r.Describe())
	}
	t.Logf("freeze: %s", r.Line())
}

// appfail: the active's critical SIP server is killed and every restart
// fails: the node turns unhealthy and hands the role over.
func TestE2EAppfail(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioAppfail, RunOptions{After: 5 * time.Second})
	checkMoved(t, r)
	// The SIP server itself is killed: a call whose dialog was on it at
	// that instant cannot complete (no shared dialog state), whatever the
	// failover does. One such call is tolerated and logged (seen once in
	// CI); more, or an unfinished call, fail.
	checkCallsAllowing(t, r, 1, "with the killed SIP server")
	checkNoDual(t, r)
}

// switchover at the default announce.handover_gap (30ms): break-before-
// make. The old active refuses packets to the address at once, the new one
// announces it after the gap: the client sees about the gap without an
// answer (within the 100 ms bound), and no dialog is split between
// the nodes, so no call is lost (a lost call that the trace shows
// straddling the move is still tolerated, as below, rather than flaking on
// a stalled host).
func TestE2ESwitchover(t *testing.T) {
	n, v := newVigil(t)
	testSwitchover(t, n, v, true)
}

// switchover with announce.handover_gap 0s: make-before-break. Both hosts
// hold the address for a short overlap, the old one silent (no ARP answer)
// but still taking packets until the new one has announced it, then
// drainLinger: never past the old active's lease. No outage; a call whose
// dialog straddles the move can be lost (docs/operations.md).
func TestE2ESwitchoverMakeBeforeBreak(t *testing.T) {
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true, HandoverGap: "0s"})
	testSwitchover(t, n, v, false)
}

// testSwitchover runs one switchover. refusing: the old active refused
// packets to the address from the handover on (handover_gap), and its
// kernel counted those the client sent it in the gap; otherwise it took
// them.
func testSwitchover(t *testing.T, n *Net, v *Vigil, refusing bool) {
	t.Helper()
	r := run(t, n, v, ScenarioSwitchover, RunOptions{After: 3 * time.Second, AtEnd: func(r Result) {
		// The new active never refused traffic for its own address: its
		// kernel lease was in force and refreshed while it held the role.
		to := Other(r.From)
		arp, in, ok := n.LeaseDrops(to)
		oa, oi, _ := n.LeaseDrops(r.From)
		t.Logf("kernel lease drops: new active %s arp=%d inbound=%d (tables: %v); old active %s arp=%d inbound=%d", to, arp, in, ok, r.From, oa, oi)
		if !ok || arp+in > 0 {
			t.Errorf("the new active %s: kernel lease tables %v, drops arp=%d inbound=%d, want tables and no drop", to, ok, arp, in)
		}
		// The client probes every 2 ms and keeps sending to the old MAC
		// until the new active announces: with the gap, the old active's
		// kernel refused those; without, it took them.
		if refusing && oi == 0 {
			t.Errorf("handover gap: the old active %s refused no packet to the address (drops arp=%d inbound=%d)", r.From, oa, oi)
		}
		if !refusing && oi > 0 {
			t.Errorf("make-before-break: the old active %s refused %d packets to the address while it drained", r.From, oi)
		}
	}})
	checkMoved(t, r)
	// A call whose dialog straddles the move can be lost: its INVITE
	// answered by the old active, its ACK sent after the client learnt
	// the new MAC, reaching the new active, which has no such dialog (no
	// shared dialog state; docs/operations.md). Such calls are tolerated,
	// up to three, when the trace on the client's link shows each one
	// straddling the move; any other lost call, or an unfinished one,
	// fails the test.
	checkLostStraddled(t, r, 3)
	if r.Outage.Longest > 100*time.Millisecond {
		t.Errorf("planned switchover: %v without an answer, want <= 100 ms", r.Outage.Longest)
	}
	if r.DualAtEnd || r.Dual > 600*time.Millisecond { // testTiming's lease
		t.Errorf("planned switchover: both held the address %v (at end: %v), want at most the old lease", r.Dual, r.DualAtEnd)
	}
	// An orderly stop removes Vigil's packet filter tables.
	if err := v.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	for _, id := range []string{"a", "b"} {
		if _, _, ok := n.LeaseDrops(id); ok {
			t.Errorf("%s: Vigil's nftables tables are still there after an orderly stop; its log ends:\n%s", id, tail(v.Log(id), 1500))
		}
	}
}

// failback: the service prefers a and fails back after 1 s. A switchover
// moves it to b; once a has been fit for 1 s, b hands it back. Both moves
// are planned handovers at the default handover gap: the callers see about
// the gap without an answer, twice, and no call is lost but one whose
// dialog straddles a move (as in a switchover).
func TestE2EFailback(t *testing.T) {
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true, Failback: "1s"})
	r := run(t, n, v, ScenarioFailback, RunOptions{After: 4 * time.Second})
	if r.From != Preferred || r.Final != Preferred || r.Moves != 2 {
		t.Errorf("want a switchover from %s and a failback to it (2 moves): %s", Preferred, r.Describe())
	}
	if !strings.Contains(v.Log(Other(Preferred)), `handover to \"a\": failback`) {
		t.Errorf("%s logged no failback handover to %s", Other(Preferred), Preferred)
	}
	checkLostStraddled(t, r, 3)
	if r.Outage.Longest > 100*time.Millisecond {
		t.Errorf("planned moves: %v without an answer, want <= 100 ms", r.Outage.Longest)
	}
	if r.DualAtEnd || r.Dual > 600*time.Millisecond { // testTiming's lease
		t.Errorf("planned moves: both held the address %v (at end: %v), want at most the old lease", r.Dual, r.DualAtEnd)
	}
}

// witnesskill: nothing may change.
func TestE2EWitnesskill(t *testing.T) {
	n, v := newVigil(t)
	r := run(t, n, v, ScenarioWitnesskill, RunOptions{After: 3 * time.Second})
	checkStayed(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
}

// noisy: a noisy neighbour in the active's apps group (CPU hogs at nice
// -10, a memory hog reclaiming in its group, an fsync writer) for 10 s in
// the short form (60 s in the benchmark): no failover, no failed call.
func TestE2ENoisy(t *testing.T) {
	n, v := newVigil(t)
	noise := 10 * time.Second
	if testing.Short() {
		noise = 5 * time.Second
	}
	r := run(t, n, v, ScenarioNoisy, RunOptions{Noise: noise})
	checkStayed(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
}

// flood, floodspoof and floodtagged: the active's cluster ports (node manager and
// locator) are flooded for 5 s (short) or 10 s at the highest rate one
// sending thread reaches (the benchmark: 60 s), from host x, which is no
// peer (random UDP), or from x spoofing the standby's address and port
// with forged Vigil heads (without the key, so without the cluster tag).
// Nothing may change: no move, no fence, no outage, no new epoch; the
// drops are counted where the operator reads them.
//
// floodtagged is floodspoof with the cluster tag an eavesdropper on the
// cluster network reads off the datagrams: the kernel lets it through,
// the forged heads reach the standby's lane and cost a read and an HMAC
// each. At the tests' timing that is still no move, no fence and no
// outage, but a lost token may make the active renew its role in a new
// epoch (at most two allowed), holding the address throughout. At the
// product's default timing it does move the role (docs/operations.md).
func TestE2EFlood(t *testing.T)       { testFlood(t, ScenarioFlood) }
func TestE2EFloodSpoof(t *testing.T)  { testFlood(t, ScenarioFloodSpoof) }
func TestE2EFloodTagged(t *testing.T) { testFlood(t, ScenarioFloodTagged) }

func testFlood(t *testing.T, scenario string) {
	n, v := newVigil(t)
	d := 10 * time.Second
	if testing.Short() {
		d = 5 * time.Second
	}
	var before, after ctlmsg.NodeManagerReport
	var fences uint64
	var loc ctlmsg.LocatorReport
	report := func(id string, into *ctlmsg.NodeManagerReport) *supervisor.Status {
		st, err := v.Status(id)
		if err != nil {
			t.Errorf("status of %s: %v", id, err)
			return nil
		}
		if st.NodeManager == nil {
			t.Errorf("no node manager report from %s", id)
		} else {
			*into = *st.NodeManager
		}
		return st
	}
	r := run(t, n, v, scenario, RunOptions{Flood: d,
		BeforeFault: func(active string) { report(active, &before) },
		AtEnd: func(r Result) {
			if st := report(r.From, &after); st != nil {
				fences = st.Supervisor.Fences
				if st.Locator == nil {
					t.Errorf("no locator report from %s", r.From)
				} else {
					loc = *st.Locator
				}
			}
		}})
	t.Logf("%s: one sender reached %.0f datagrams/s (%d in %v)", scenario, r.Flood.Rate(), r.Flood.Sent, r.Flood.Took.Round(time.Millisecond))
	t.Logf("node manager drops %v by source %v; locator drops %v by source %v; kernel filter %q",
		after.Transport.Dropped, after.Transport.DroppedBySource, loc.Transport.Dropped, loc.Transport.DroppedBySource, after.Transport.KernelFilter)
	checkStayed(t, r)
	checkCalls(t, r)
	checkNoDual(t, r)
	if r.Flood.Sent == 0 {
		t.Fatalf("the flood sent nothing")
	}
	if fences != 0 {
		t.Errorf("the active's node manager was fenced %d times under the flood", fences)
	}
	// flood and floodspoof are dropped in the kernel, before any socket:
	// the protocol does not notice them, no new epoch. floodtagged shares
	// the standby's lane: when the reader falls behind, some of the
	// standby's own datagrams are lost with the forged ones (overflow),
	// and a lost token may make the active renew its role in a new epoch.
	maxEpochs := uint64(0)
	if scenario == ScenarioFloodTagged {
		maxEpochs = 2
	}
	if after.Role != "active" || after.Epoch < before.Epoch || after.Epoch-before.Epoch > maxEpochs {
		t.Errorf("epoch %d -> %d (at most %d new allowed), role %q at the end: the flood moved the protocol", before.Epoch, after.Epoch, maxEpochs, after.Role)
	} else if after.Epoch != before.Epoch {
		t.Logf("%s: the active renewed its role in %d new epoch(s) (the standby's lane overflowed), holding the address throughout", scenario, after.Epoch-before.Epoch)
	}
	// The flood's kernel work (softirq, charged to whichever CPU takes
	// it) shares this machine's cores with the SIP server: gaps of up to
	// ~90 ms were measured on a loaded 2-core machine under the non-peer
	// flood. floodtagged wakes the readers too: gaps of 170-500 ms were
	// measured, and checkStayed's 1 s bounds it. A failover, or the
	// outage of a fence, lasts at least a lease (600 ms at testTiming).
	if scenario != ScenarioFloodTagged && r.Outage.Longest > 300*time.Millisecond {
		t.Errorf("a %v outage under the flood", r.Outage.Longest)
	}
	switch scenario {
	case ScenarioFlood:
		// The client is no peer: the kernel drops it all before the socket.
		if after.Transport.Dropped["kernel_filter"] == 0 || loc.Transport.Dropped["kernel_filter"] == 0 {
			t.Errorf("no kernel_filter drops counted: node manager %v, locator %v", after.Transport.Dropped, loc.Transport.Dropped)
		}
	case ScenarioFloodSpoof:
		// From the standby's address, with a head whose cluster tag a
		// forger without the key cannot write: dropped by the kernel too.
		if after.Transport.Dropped["kernel_tag"] == 0 || loc.Transport.Dropped["kernel_tag"] == 0 || after.Transport.Dropped["auth"] != 0 {
			t.Errorf("forged datagrams not dropped in the kernel as kernel_tag: node manager %v, locator %v", after.Transport.Dropped, loc.Transport.Dropped)
		}
	case ScenarioFloodTagged:
		// With the tag: past the kernel, dropped at the MAC, by source.
		src := n.Hosts[Other(r.From)].Addr.Addr().String()
		if after.Transport.Dropped["auth"] == 0 || after.Transport.DroppedBySource[src] == 0 || loc.Transport.Dropped["auth"] == 0 {
			t.Errorf("forged datagrams from %s not counted as auth: node manager %v %v, locator %v", src, after.Transport.Dropped, after.Transport.DroppedBySource, loc.Transport.Dropped)
		}
	}
}

// nmcrash: only the active's node manager is SIGKILLed; its supervisor
// removes the address and releases the role (crash release): the standby
// takes over, never beside it, and the crashed host says it released.
func TestE2ENMCrash(t *testing.T) {
	n, v := newVigil(t)
	released := false
	r := run(t, n, v, ScenarioNMCrash, RunOptions{After: 3 * time.Second, BeforeFault: func(active string) {
		// The supervisor holds the node manager's packet sockets and its
		// nftables socket, so that the exit does not wait to release
		// them (ctlmsg.TypeHold): two packet sockets for eth0.
		pkt, nl, err := v.HeldSockets(active)
		if err != nil || pkt < 2 || nl < 1 {
			t.Errorf("the supervisor of %s holds %d packet and %d netlink sockets of its node manager (%v), want 2 and 1", active, pkt, nl, err)
		}
	}, AtEnd: func(r Result) {
		released = strings.Contains(v.Log(r.From), "event=crash_release ")
	}})
	checkMoved(t, r)
	checkNoDual(t, r)
	if !released {
		t.Errorf("no event=crash_release on the crashed host %s", r.From)
	}
	t.Logf("nmcrash: %s", r.Describe())
}

// An active/active pair with SIP calls to both services' addresses: sip on
// a, sip2 on b, each the other's standby. a dies: sip moves to b, its
// callers retransmitting across the outage as with one service (and losing
// as many straddling dialogs), and the calls to sip2, which b held all
// along, neither fail nor wait.
func TestE2EActiveActive(t *testing.T) {
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true, SecondService: true})
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v.Stop() }()
	res, err := RunActiveActive(t, n, v, ActiveActiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := res.Moved, res.Stayed
	t.Logf("both services on b %v after the kill", res.Took.Round(time.Millisecond))
	t.Logf("calls to sip (moved from a to b): %+v", r1)
	t.Logf("calls to sip2 (on b throughout): %+v", r2)
	if r1.Placed == 0 || r2.Placed == 0 {
		t.Fatalf("no calls placed: %+v %+v", r1, r2)
	}
	// As for one service (TestE2EKill, checkLostInMove): a call whose
	// INVITE a answered and whose BYE reached b, which keeps no dialog
	// state of a's, fails; at most two straddle the move.
	if r1.Failed > 2 || r1.Unfinished > 0 {
		t.Errorf("calls to the service that moved failed: %+v", r1)
	} else if r1.Failed > 0 {
		t.Logf("%d call(s) to the service that moved lost, as a kill loses the dialogs straddling it", r1.Failed)
	}
	if r2.Failed > 0 || r2.Unfinished > 0 || r2.RetransCalls > 0 {
		t.Errorf("calls to the service on the surviving node failed or waited: %+v", r2)
	}
	if r1.RetransCalls == 0 {
		t.Logf("no call to the moved service waited past T1: the kill fell between calls")
	}
}
