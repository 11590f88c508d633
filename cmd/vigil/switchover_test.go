package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
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

// SERVICE may stand before, between or after the flags; a second word or
// a negative --wait is refused with what is wrong, before anything is
// asked of the daemon.
func TestSwitchoverArguments(t *testing.T) {
	st := healthyStatus()
	st.Services = []supervisor.ServiceStatus{{Name: "voice"}, {Name: "data"}}
	sock := fakeDaemon(t, func() *supervisor.Status { return st })
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		// An unknown service is refused by name: the word reached checkService wherever it stood.
		{[]string{"nosuch", "--to", "b"}, exitUsage, `no service "nosuch" in this cluster (it has: voice, data)`},
		{[]string{"--to", "b", "nosuch"}, exitUsage, `no service "nosuch"`},
		{[]string{"--to", "b", "nosuch", "--wait", "0"}, exitUsage, `no service "nosuch"`},
		{[]string{"--to", "b"}, exitUsage, "this cluster has 2 services (voice, data): name the one to move"},
		{[]string{"voice", "data"}, exitUsage, `unexpected argument "data": one SERVICE at most`},
		{[]string{"voice", "--to", "b", "data"}, exitUsage, `unexpected argument "data"`},
		{[]string{"voice", "--wait", "-1s"}, exitUsage, "--wait -1s: want 0"},
		{[]string{"voice", "--to"}, exitUsage, "flag needs an argument"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(append([]string{"switchover", "--socket", sock}, tc.args...), &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("switchover %q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

// maintenance and restart take their flags after the word too, and say
// what is wrong with the words. The fake daemon answers anything but
// status with "unknown command": that answer shows the request was sent.
func TestWordsBetweenFlags(t *testing.T) {
	sock := fakeDaemon(t, healthyStatus)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"maintenance", "on", "--socket", sock}, exitFailure, "unknown command"},
		{[]string{"maintenance", "--socket", sock, "off"}, exitFailure, "unknown command"},
		{[]string{"maintenance", "--socket", sock}, exitUsage, "on or off?"},
		{[]string{"maintenance", "maybe", "--socket", sock}, exitUsage, `"maybe": want on or off`},
		{[]string{"maintenance", "on", "--socket", sock, "now"}, exitUsage, `unexpected argument "now"`},
		{[]string{"restart", "kamailio", "--socket", sock}, exitFailure, "unknown command"},
		{[]string{"restart", "--socket", sock}, exitUsage, "name the process to restart"},
		{[]string{"restart", "kamailio", "rtpengine", "--socket", sock}, exitUsage, `unexpected argument "rtpengine": one NAME at a time`},
	} {
		var out, errb bytes.Buffer
		code := dispatch(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}
