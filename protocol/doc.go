// Package protocol is the IO-free core of Vigil's failover protocol: the
// token that circulates between the nodes, the check-ins at the locators,
// and the active role as a lease granted by a quorum of locators and
// numbered by an epoch. docs/protocol.md explains the design, the safety
// argument and the timing formulas.
//
// Like etcd's raft package, the core never reads a clock, a socket, a file
// or a random source. Two state machines are driven by their callers:
//
//   - Node, one per host with role node, driven by `vigil nodemanager`;
//   - Locator, one per host (nodes and witnesses), driven by `vigil locator`.
//
// Both take time as a time.Duration since an arbitrary origin of a
// monotonic clock that keeps counting through suspend (CLOCK_BOOTTIME).
// The loop of a caller is:
//
//	n, err := protocol.NewNode(cfg, loadState(), now())
//	for {
//		select {
//		case <-timer.C:               // at n.NextDeadline(), at the latest a TokenInterval after the last call
//			n.Tick(now())
//		case b := <-datagrams:        // for this host's node (not Type.ForLocator)
//			m, err := protocol.Decode(key, b)      // authenticate
//			err = filter.Accept(m)                 // cluster, peer, replay
//			err = n.Step(now(), m)                 // now read after recvmsg
//		}
//		rd := n.Ready()
//		act(rd.Events)                             // floating IPs, hooks, metrics
//		if rd.State != nil {
//			if persist(rd.State) != nil {          // write + fsync FIRST
//				continue                           // send nothing; State comes again
//			}
//			n.Persisted(*rd.State)
//		}
//		for _, e := range rd.Messages { send(e.To, protocol.Encode(key, e.Msg)) }
//	}
//
// Ownership rules:
//   - Ready.State / LocatorReady.State must be persisted with fsync before
//     any message of the same Ready is sent: a claim carries an epoch that
//     must never be reused after a crash, and a locator's answer promises a
//     grant that must survive its restart. A write that fails sends none
//     of that Ready's messages (the protocol takes them for lost datagrams)
//     and is not reported with Persisted: State stays dirty and comes
//     again in every Ready until a write succeeds.
//   - The floating IPs may be held only while Node.ActiveAt(now) is true.
//     Arm a timer at NodeStatus.LeaseUntil (updated by BecameActive and
//     LeaseExtended) and drop the addresses when it fires, even if no
//     BecameStandby was emitted yet (the node manager may be late). One
//     exception: after a BecameStandby with Planned set, the addresses may
//     stay, no longer announced, until the successor has announced them,
//     and never past that event's LeaseUntil. Whether they still take
//     packets meanwhile (make-before-break) or refuse them
//     (break-before-make, announce.handover_gap) is the driver's choice.
//   - A starting node manager removes any floating IP a previous
//     incarnation left before sending its first messages.
//   - The receiver authenticates with Decode and rejects replays with one
//     ReplayFilter per process; only then Step. Errors from Decode, Accept
//     and Step mean "drop and count", never "stop".
//   - Node and Locator are not safe for concurrent use: one goroutine owns
//     each.
//
// The simulator, package protocol/sim, runs the real core over a simulated
// network and clocks, and replays the scenario transcripts of its
// testdata; the command test/sim runs it over many seeds. No production
// binary imports it.
package protocol
