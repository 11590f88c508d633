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
		{[]string{"--preferred", "--to", "b"}, exitUsage, "--preferred and --to b: the one picks the node, the other names it"},
		{[]string{"nosuch", "--preferred"}, exitUsage, `no service "nosuch" in this cluster (it has: voice, data)`},
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

// --preferred picks, for each service, the first node of its preference
// that its node manager here sees healthy, out of maintenance and in the
// ring; and says why there is none.
func TestPreferredTarget(t *testing.T) {
	peers := func(js string) *ctlmsg.NodeManagerReport {
		return fromJSON[ctlmsg.NodeManagerReport](`{"self":"a","role":"active","epoch":7,"active":"a","peers":` + js + `}`)
	}
	all := `[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true},{"id":"c","healthy":true,"in_ring":true}]`
	for _, tc := range []struct {
		name    string
		prefer  []string
		holder  string
		r       *ctlmsg.NodeManagerReport
		to, why string
	}{
		{"the first, fit", []string{"b", "a", "c"}, "a", peers(all), "b", ""},
		{"already there", []string{"a", "b", "c"}, "a", peers(all), "a", ""},
		{"first unhealthy", []string{"b", "c", "a"}, "a", peers(`[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":false,"in_ring":true},{"id":"c","healthy":true,"in_ring":true}]`), "c", ""},
		{"first in maintenance", []string{"b", "a"}, "c", peers(`[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"maintenance":true,"in_ring":true}]`), "a", ""},
		{"first out of the ring", []string{"b", "a"}, "a", peers(`[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":false}]`), "a", ""},
		// The token never marks its own node in the ring: its node manager runs.
		{"this node, fit", []string{"a", "b"}, "b", peers(`[{"id":"a","healthy":true,"in_ring":false},{"id":"b","healthy":true,"in_ring":true}]`), "a", ""},
		{"this node, unhealthy", []string{"a", "b"}, "b", peers(`[{"id":"a","healthy":false,"in_ring":false},{"id":"b","healthy":true,"in_ring":true}]`), "b", ""},
		{"none fit", []string{"b", "c"}, "a", peers(`[{"id":"a","healthy":true,"in_ring":true}]`), "", "no node of its preference (b > c) is healthy"},
		{"no holder", []string{"a", "b"}, "", peers(all), "", "no node holds it now"},
		{"no report", []string{"a", "b"}, "a", nil, "", "no report from this host's node manager"},
		{"not started here", []string{"b", "a"}, "a", &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Self: "b", Role: ctlmsg.RoleNotStarted}, StartError: "statefile: checksum mismatch"},
			"", "not started on this host (statefile: checksum mismatch): run this on another node"},
	} {
		to, why := preferredTarget(supervisor.ServiceStatus{Name: "s", Prefer: tc.prefer, Holder: tc.holder}, tc.r)
		if to != tc.to || !strings.Contains(why, tc.why) || (tc.why == "") != (why == "") {
			t.Errorf("%s: %q, %q; want %q, %q", tc.name, to, why, tc.to, tc.why)
		}
	}
}

// `vigil switchover --preferred` leaves a service that is home, asks for
// the move of one that is not (the fake daemon refuses every command, which
// shows the request went out), and fails for the one it could not move.
func TestSwitchoverPreferred(t *testing.T) {
	st := healthyStatus()
	nm := fromJSON[ctlmsg.NodeManagerReport](`{"self":"a","role":"active","epoch":7,"active":"a","healthy":true,
		"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}]}`)
	st.NodeManager = nm
	data := *nm
	st.Services = []supervisor.ServiceStatus{
		{Name: "voice", Prefer: []string{"a", "b"}, Holder: "a"},
		{Name: "data", Prefer: []string{"b", "a"}, Holder: "a", NodeManager: &data},
	}
	sock := fakeDaemon(t, func() *supervisor.Status { return st })
	var out, errb bytes.Buffer
	code := dispatch([]string{"switchover", "--socket", sock, "--preferred"}, &out, &errb)
	if code != exitFailure || !strings.Contains(out.String(), "voice: on a, its most preferred fit node") ||
		!strings.Contains(out.String(), "data: from a to b") || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, voice left, data asked to move to b", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	code = dispatch([]string{"switchover", "voice", "--socket", sock, "--preferred"}, &out, &errb)
	if code != exitOK || strings.Contains(out.String(), "data") {
		t.Errorf("voice alone: exit %d, stdout %q, stderr %q; want 0 and nothing of data", code, out.String(), errb.String())
	}
	// A witness lists the services by name but runs no node manager.
	st.Role, st.NodeManager, st.Services[1].NodeManager = "witness", nil, nil
	out.Reset()
	errb.Reset()
	code = dispatch([]string{"switchover", "--socket", sock, "--preferred"}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "a witness") {
		t.Errorf("on a witness: exit %d, stderr %q; want 2 and to run it on a node", code, errb.String())
	}
}
