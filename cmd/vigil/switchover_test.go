package main

import (
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// A switchover taken in epoch 8 with c active (just failed back to c),
// while the status report still said epoch 7, a: the move asked for is the
// one to a in epoch 9, not the failback to c in 10 that follows it.
func TestSwitchedOver(t *testing.T) {
	view := func(epoch uint64, active string) ctlmsg.NodeManagerReport {
		var r ctlmsg.NodeManagerReport
		r.Epoch, r.Active = epoch, active
		return r
	}
	for _, tc := range []struct {
		name       string
		epoch      uint64
		active, to string
		seen       ctlmsg.NodeManagerReport
		want       bool
	}{
		{"target active in a newer epoch", 8, "c", "a", view(9, "a"), true},
		{"a later move elsewhere is not the one asked for", 8, "c", "a", view(10, "c"), false},
		{"even from a stale report, the target is what counts", 7, "a", "a", view(9, "a"), true},
		{"nothing moved yet", 8, "c", "a", view(8, "c"), false},
		{"no active in the newer epoch yet", 8, "c", "", view(9, ""), false},
		{"any other node, no target named", 8, "c", "", view(9, "b"), true},
		{"the same node again, no target named", 8, "c", "", view(10, "c"), false},
	} {
		if got := switchedOver(tc.epoch, tc.active, tc.to, tc.seen); got != tc.want {
			t.Errorf("%s: switchedOver(%d, %q, %q, epoch %d active %q) = %v, want %v",
				tc.name, tc.epoch, tc.active, tc.to, tc.seen.Epoch, tc.seen.Active, got, tc.want)
		}
	}
}

// What a switchover that did not move says: the role on the old active
// in a newer epoch is the target not taking it or a refusal after a
// regenerated token (both named); unchanged is a refusal or a lost
// request.
func TestNotMoved(t *testing.T) {
	view := func(epoch uint64, active string) ctlmsg.NodeManagerReport {
		var r ctlmsg.NodeManagerReport
		r.Epoch, r.Active = epoch, active
		return r
	}
	for _, tc := range []struct {
		name       string
		epoch      uint64
		active, to string
		now        ctlmsg.NodeManagerReport
		want       string
	}{
		{"back on the old active", 8, "a", "b", view(9, "a"), "a holds it again in a newer epoch (9, was 8): either b did not take the handover (a node manager that has just started misses one), or a refused the request (on a: journalctl -u vigil EVENT=switchover_refused)"},
		{"unchanged", 8, "a", "b", view(8, "a"), "active is a (epoch 8); on the active: journalctl -u vigil EVENT=switchover_refused"},
		{"no target named", 8, "a", "", view(9, "a"), "active is a (epoch 9)"},
		{"no active now", 8, "a", "b", view(9, ""), "active is none (epoch 9)"},
	} {
		if got := notMoved(tc.epoch, tc.active, tc.to, tc.now); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want it to contain %q", tc.name, got, tc.want)
		}
	}
}
