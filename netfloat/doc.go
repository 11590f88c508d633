// Package netfloat holds Vigil's floating IPs: it adds them with netlink,
// announces them (gratuitous ARP, IPv6 unsolicited Neighbor Advertisement),
// probes for another holder, removes them, and watches for them being lost.
//
// A Manager acts in one network namespace through a *netlink.Handle for that
// namespace; its packet sockets are opened in the namespace on a locked OS
// thread, so a Manager never touches the namespace of the calling process
// unless told to (netns.None()).
//
// # Lifetimes
//
// Every VIP is added with a finite valid and preferred lifetime
// (Options.Lifetime, default 2 s) that the lease holder restarts with Extend.
// If the node manager and the supervisor both die, the kernel removes the
// address by itself. Kernel lifetimes count whole seconds and the expiry
// timer is rounded up, so an unextended VIP disappears between Lifetime and
// Lifetime+1 s after its last Extend.
//
// # The kernel lease
//
// With Options.KernelLease (NFTLease in production) the host's kernel
// itself stops serving a VIP when the lease ends, whether or not any
// process runs: nftables sets in Vigil's own tables (table arp vigil,
// table inet vigil; objects named lease_*) hold, per VIP, an "announce"
// element (the host may answer ARP/NDP for it) and an "accept" element
// (it may receive packets to it), and one lease_alive element whose
// timeout is the time left on the lease; rules drop ARP replies and
// requests from, neighbour advertisements for, and inbound packets to a
// configured VIP (Guard) without both. Claim puts the VIP in before the
// address is added, SetLeaseDeadline refreshes the alive element in the
// background (once half of what the kernel was last given has run out,
// not at every renewal, with one hand-built batch: nftrefresh.go), Quiet
// removes only the announce element, Release
// both. Elements never outlive their
// deadline by more than ApplyLagLimit (plus the kernel's jiffy rounding,
// which is down), see docs/protocol.md "Crash timeline". DeleteTables
// removes both tables (the supervisor's orderly stop).
//
// # Marking our addresses
//
// Each VIP carries IFA_PROTO = Options.Protocol (Linux >= 6.1; `ip -d addr`
// prints it as "proto 0x56"), for IPv4 and IPv6 alike, and IPv4 VIPs also the
// label "<ifname>:vigil" when that fits in 15 characters. Reconcile removes
// only addresses with one of these marks. On kernels older than 6.1 IFA_PROTO
// is silently ignored: Reconcile then recognises IPv4 VIPs by their label
// only and cannot recognise IPv6 VIPs left by a previous run (their lifetime
// still removes them within seconds).
//
// # IPv6 and DAD
//
// IPv6 VIPs are added with IFA_F_NODAD: the lease decides who holds a VIP,
// and Duplicate Address Detection would keep the address tentative (unusable,
// and unannounceable) for about a second (net.ipv6.conf.*.dad_transmits ×
// retrans_time). Options.ProbeWindow sends a DAD-style solicitation instead,
// only to report another holder.
//
// # What receivers do with the announcements (Linux, checked on 6.18)
//
//   - IPv4: a neighbour that already has an entry for the VIP takes the new
//     MAC from either gratuitous form at once, regardless of
//     net.ipv4.neigh.*.locktime (the kernel's arp_is_garp override). A
//     neighbour without an entry ignores it unless net.ipv4.conf.*.arp_accept
//     is set; it resolves the VIP normally when it next needs it. The reply
//     form must carry target MAC = sender MAC to count as gratuitous on Linux;
//     both forms are sent because other stacks honour only one or the other.
//   - IPv6: an unsolicited NA with the Override flag replaces the MAC of an
//     existing neighbour entry (state STALE) with the defaults. It is dropped
//     if net.ipv6.conf.<if>.drop_unsolicited_na = 1 on the receiver, and it
//     creates no entry where none exists unless the receiver is a router with
//     accept_untracked_na (Linux >= 5.19/6.0) set. Operators need no sysctl
//     on the peers and gateways for failover, but must not set
//     drop_unsolicited_na on them. The NA is sent from the VIP itself to
//     ff02::1 with hop limit 255, like keepalived's.
//
// # Operator notes
//
//   - An IPv4 VIP in a subnet the interface already has becomes a secondary
//     address; if the operator removes the primary, the kernel also flushes
//     the secondaries unless net.ipv4.conf.<if>.promote_secondaries = 1 (Watch
//     then reports EventAddrRemoved). Conversely, a VIP that is the primary of
//     its subnet takes the interface's other addresses of that subnet with it
//     when it is released, unless promote_secondaries is set: set it.
//   - IPv6 VIPs are flushed when their interface is set administratively
//     down, even with net.ipv6.conf.<if>.keep_addr_on_down = 1 (it keeps only
//     addresses with an infinite lifetime); Watch reports EventAddrRemoved.
//     IPv4 VIPs survive it, and a carrier loss removes neither. Claim again on
//     EventLinkUp.
//   - Announcements and probes need CAP_NET_RAW, addresses CAP_NET_ADMIN.
package netfloat
