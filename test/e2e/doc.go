// Package e2e is Vigil's end-to-end failover harness: a switch namespace with
// a bridge, two nodes (a, b), a witness (w), a client (c) and an attacker (x,
// the flood scenarios' sender) on 192.0.2.0/24, a SIP server (SIPp) on each
// node bound to the floating IP 192.0.2.100, SIPp placing calls from the
// client, a client-side prober that measures the outage as a caller sees it,
// a 1 ms prober of who holds the address, and a capture of the SIP traffic
// on the client's link that follows every lost call to the node each of its
// messages went to (siptrace.go).
//
// The same scenarios (kill, linkdown, stall, freeze, appfail, noisy, switchover,
// witnesskill, flood, floodspoof) run against any System: Vigil (vigil.go)
// or keepalived (keepalived.go), so bench/failover can put the two side by
// side in the same namespaces and the same run. The tests in this directory
// run each scenario once against Vigil; `make bench-failover` runs them many
// times against both.
//
// Everything needs root (namespaces, cgroups); New skips a test otherwise.
package e2e
