package statefile

import (
	"fmt"
	"time"
)

// clockSetAfter is a time every correctly set clock is past (2025-01-01):
// an earlier one is a host that booted without its clock set (no RTC, NTP
// not synchronised yet).
var clockSetAfter = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// FreshIncarnation is the incarnation to start from when a process has no
// state file: its state directory was lost, or this is its first start;
// the two cannot be told apart. Peers reject datagrams of an incarnation
// older than the newest they have seen from the process, so counting from
// 1 again would lock a node whose state was lost out of its cluster,
// silently. The wall clock in seconds is above every incarnation a
// previous life of the process used, provided the clock is not set back
// and the process did not restart more than once a second on average (each
// start adds 1 to the persisted incarnation). It fits in 32 bits until
// 2106, which the node's round ids (incarnation<<32 | counter) need.
// A clock that is plainly not set is an error: wait for it (NTP) rather
// than guess.
func FreshIncarnation(now time.Time) (uint64, error) {
	if now.Before(clockSetAfter) {
		return 0, fmt.Errorf("statefile: no state file, and the wall clock (%s) is not set: cannot choose an incarnation above the one a lost state held; set the clock (NTP) and start again",
			now.UTC().Format(time.RFC3339))
	}
	return uint64(now.Unix()), nil
}
