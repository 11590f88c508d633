// Command demo is `make demo`: Vigil's main job on one machine. Two nodes and
// a witness, each a `vigil supervise` in its own network namespace, share the
// floating IP 192.0.2.100; each node supervises a SIP server (SIPp) bound to
// it. A client namespace places SIP calls to the floating IP while every
// process of Vigil on the active node is killed with SIGKILL (a crash of the
// whole service); the standby takes over. `vigil status` is shown before
// and after, and the calls' outcome at the end. -scenario activeactive runs
// two services instead, one active on each node, and kills a: both end on
// b, and the calls to the one b held all along go on untouched. Needs root,
// sipp, stress-ng.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/test/e2e"
)

func main() {
	bin := flag.String("vigil", "bin/vigil", "vigil binary")
	scenario := flag.String("scenario", e2e.ScenarioKill, "what happens to the active: kill, linkdown, stall, appfail, switchover; or activeactive (two services, one active on each node, a killed)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (network namespaces, cgroups)")
		os.Exit(2)
	}
	for _, tool := range []string{"sipp", "stress-ng", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %s missing (make deps)\n", tool)
			os.Exit(2)
		}
	}
	r := e2e.NewRunner(os.Stderr)
	if *scenario == activeActive {
		if err := r.Do(func(t e2e.TB) { demoActiveActive(t, *bin) }); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		return
	}
	err := r.Do(func(t e2e.TB) {
		say("building the network: switch, nodes a (192.0.2.11) and b (.12), witness w (.13), client c (.50)")
		n := e2e.NewNet(t)
		v := e2e.NewVigil(t, n, e2e.VigilOptions{Bin: *bin, Realtime: true})
		say(fmt.Sprintf("starting vigil supervise on a, b and w (product default timing: lease %v)", protocol.DefaultLease))
		res, err := e2e.Run(t, n, v, *scenario, e2e.RunOptions{
			Before: 2 * time.Second, After: 4 * time.Second, Linkdown: 2 * time.Second,
			BeforeFault: func(active string) {
				say(fmt.Sprintf("calls are flowing to %s (50 calls/s); %s is active. `vigil status` on %s:", e2e.VIP, active, active))
				status(*bin, v.Socket(active))
				say(fmt.Sprintf("now: %s on %s", describe(*scenario), active))
			},
			AtEnd: func(r e2e.Result) {
				if r.Final == "" {
					say("no node holds the floating IP at the end")
					return
				}
				say(fmt.Sprintf("`vigil status` on %s, the active now:", r.Final))
				status(*bin, v.Socket(r.Final))
			},
		})
		if err != nil {
			t.Fatalf("%v\n--- a:\n%s\n--- b:\n%s", err, v.Log("a"), v.Log("b"))
		}
		say("outcome")
		fmt.Printf("  floating IP: %s -> %s (%d move)\n", res.From, res.Final, res.Moves)
		fmt.Printf("  outage seen by the client: %.0f ms (SIP OPTIONS every 2 ms)\n", float64(res.Outage.Longest)/1e6)
		fmt.Printf("  SIP calls: %d placed, %d completed, %d failed, %d needed a retransmission\n",
			res.Calls.Placed, res.Calls.Successful, res.Calls.Failed+res.Calls.Unfinished, res.Calls.RetransCalls)
		fmt.Printf("  both nodes held the floating IP for %.0f ms", float64(res.Dual)/1e6)
		if *scenario == e2e.ScenarioKill {
			fmt.Print(" (nothing was left alive on the crashed node to remove it: the kernel did, when the address lifetime Vigil keeps renewing ran out)")
		}
		fmt.Println()
		fmt.Println()
		fmt.Println(res.Line())
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// activeActive is the -scenario that runs two services (e2e.RunActiveActive).
const activeActive = "activeactive"

// demoActiveActive is the active/active pair: service sip (192.0.2.100)
// prefers a, sip2 (192.0.2.101) prefers b, each node the other's standby.
func demoActiveActive(t e2e.TB, bin string) {
	say("building the network: switch, nodes a (192.0.2.11) and b (.12), witness w (.13), client c (.50)")
	n := e2e.NewNet(t)
	v := e2e.NewVigil(t, n, e2e.VigilOptions{Bin: bin, Realtime: true, SecondService: true})
	say("starting vigil supervise on a, b and w with two services: sip (" + e2e.VIP + ", prefers a) and sip2 (" + e2e.VIP2 + ", prefers b)")
	if err := v.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	defer func() { _ = v.Stop() }()
	say("whoever came up first holds both (failback is off): `vigil switchover` puts sip on a and sip2 on b")
	res, err := e2e.RunActiveActive(t, n, v, e2e.ActiveActiveOptions{
		BeforeFault: func() {
			say("calls are flowing to both addresses (25 calls/s each); `vigil status` on a:")
			status(bin, v.Socket("a"))
			say("now: SIGKILL of every process on a (Vigil and both SIP servers)")
		},
		AtEnd: func() {
			say("`vigil status` on b, which holds both services now:")
			status(bin, v.Socket("b"))
		},
	})
	if err != nil {
		t.Fatalf("%v", err)
	}
	say("outcome")
	fmt.Printf("  both services on b %.0f ms after the kill\n", float64(res.Took)/1e6)
	for _, c := range []struct {
		what  string
		calls e2e.Calls
	}{{"sip, moved from a to b", res.Moved}, {"sip2, on b throughout", res.Stayed}} {
		fmt.Printf("  SIP calls to %s: %d placed, %d completed, %d failed, %d needed a retransmission\n",
			c.what, c.calls.Placed, c.calls.Successful, c.calls.Failed+c.calls.Unfinished, c.calls.RetransCalls)
	}
	fmt.Println("  (a call to sip that a answered and whose BYE reached b fails: b has none of a's dialogs)")
}

func describe(scenario string) string {
	switch scenario {
	case e2e.ScenarioKill:
		return "SIGKILL of every process in Vigil's cgroup tree (supervisor, locator, node manager, SIP server)"
	case e2e.ScenarioLinkdown:
		return "the network link goes down for 2 s"
	case e2e.ScenarioStall:
		return "the node manager is stopped (SIGSTOP) for 2 s, as a starved control plane would be"
	case e2e.ScenarioAppfail:
		return "the SIP server is killed and fails every restart"
	case e2e.ScenarioSwitchover:
		return "a planned `vigil switchover`"
	}
	return scenario
}

func say(s string) { fmt.Printf("\n== %s\n", s) }

func status(bin, socket string) {
	cmd := exec.Command(bin, "status", "--socket", socket)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	_ = cmd.Run()
}
