package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// serviceYAML is a services: section with the one service voice on
// testVIP, and an on_active hook that appends its node and
// $VIGIL_SERVICE to hookOut.
func serviceYAML(prefer []string, failback, hookOut string) string {
	return fmt.Sprintf(`services:
  - name: voice
    vips: [{address: %s/24, interface: %s}]
    prefer: [%s]
    failback: %s
hooks:
  on_active:
    - [/bin/sh, -c, "echo $VIGIL_NODE $VIGIL_SERVICE >> %s"]
`, testVIP, netnstest.LinkName, strings.Join(prefer, ", "), failback, hookOut)
}

// A service prefers c, then a (then b, unlisted), and fails back after 2 s.
// Whoever wins the first claim, c ends up holding it. When c's host dies
// the service moves to a (straight away, or by failback if b won the
// claim). When c is back, the service stays on a for the failback time at
// least, then moves to c as a planned handover: two live hosts hold the
// address at once only while the old active drains it, silent, never for
// as long as its lease. The hooks see the service's name.
func TestServiceFailsBackToPreferredNode(t *testing.T) {
	needRoot(t)
	const failback = 2 * time.Second
	hookOut := filepath.Join(t.TempDir(), "hooks.out")
	s := newNodeSet(t, "svc", []string{"a", "b", "c"}, func(string) string {
		return serviceYAML([]string{"c", "a"}, failback.String(), hookOut)
	})
	s.waitHolder("c, the most preferred node, holds the service", "c", 30*time.Second)
	s.waitKnown("c")
	st := s.nodes["b"].status()
	if len(st.Services) != 1 || st.Services[0].Name != "voice" || st.Services[0].Holder != "c" ||
		!slices.Equal(st.Services[0].Prefer, []string{"c", "a", "b"}) || st.Services[0].Failback != "2s" {
		t.Errorf("status services on b: %+v", st.Services)
	}
	if len(st.FloatingIPs) != 1 || st.FloatingIPs[0].Service != "voice" {
		t.Errorf("status floating IPs on b: %+v", st.FloatingIPs)
	}

	s.kill("c")
	s.waitHolder("a, the next preference, holds the service after c died", "a", 20*time.Second)
	s.waitKnown("a")

	back := time.Now()
	s.revive("c")
	s.waitHolder("the service back on c", "c", 30*time.Second)
	if d := time.Since(back); d < failback {
		t.Errorf("the service moved back to c %v after c started, before the failback time %v", d.Round(time.Millisecond), failback)
	}
	if !strings.Contains(s.nodes["a"].log.String(), `handover to \"c\": failback`) {
		t.Errorf("a logged no failback handover to c")
	}
	// vigil switchover names the service; a move away from c is undone by
	// the failback, and the command says so. It compares with the active
	// this host last reported: wait until that is c (a report older than
	// the failback names a, whose epoch it would then skip).
	s.waitKnown("c")
	c := s.nodes["c"]
	if out, code := c.vigil("switchover", "nosuch", "--to", "a", "--socket", c.socket); code != 2 || !strings.Contains(out, `no service "nosuch" in this cluster (it has: voice)`) {
		t.Errorf("switchover of an unknown service: exit %d: %s", code, out)
	}
	moved := time.Now() // a becomes active after this, and the failback waits from then
	out, code := c.vigil("switchover", "voice", "--to", "a", "--socket", c.socket)
	if code != 0 || !strings.Contains(out, "note: service voice prefers c and fails back after 2s") || !strings.Contains(out, "switchover done: a is active") {
		t.Fatalf("switchover voice --to a: exit %d: %s", code, out)
	}
	s.waitHolder("the service on a after the switchover", "a", 20*time.Second)
	s.waitHolder("the service back on c after the switchover", "c", 30*time.Second)
	if d := time.Since(moved); d < failback {
		t.Errorf("the switchover to a was undone after %v, before the failback time %v", d.Round(time.Millisecond), failback)
	}
	// The hooks run off the protocol's path: the last one may still be
	// on its way.
	var b []byte
	s.anyLive().waitFor("on_active hooks on a and c", 10*time.Second, func() bool {
		b, _ = os.ReadFile(hookOut)
		return strings.Contains(string(b), "c voice") && strings.Contains(string(b), "a voice")
	})
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasSuffix(l, " voice") {
			t.Errorf("on_active hook saw %q, want VIGIL_SERVICE=voice", l)
		}
	}
	s.checkPlanned()
}

// Without failback (the default) a node that comes back does not take the
// service back: the move would be an interruption that nothing asked for.
func TestServiceStaysWithoutFailback(t *testing.T) {
	needRoot(t)
	out := filepath.Join(t.TempDir(), "hooks.out")
	s := newNodeSet(t, "svc", []string{"a", "b", "c"}, func(string) string {
		return serviceYAML([]string{"a", "b", "c"}, "off", out)
	})
	first := s.waitHolder("one host holds the service", "", 30*time.Second)
	s.waitKnown(first)
	s.kill(first)
	second := s.waitHolder("the service moved after "+first+" died", "", 20*time.Second)
	if second == first {
		t.Fatalf("%s still holds the service", first)
	}
	s.waitKnown(second)
	s.revive(first)
	s.nodes[first].waitFor(first+" back as a standby of "+second, 20*time.Second, func() bool {
		r := s.nodes[first].status().NodeManager
		return r != nil && r.Role == "standby" && r.Active == second
	})
	// Watch for several token timeouts (400 ms each): any failback would
	// have moved it by then.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if h := s.holders(); len(h) != 1 || h[0] != second {
			t.Fatalf("%s came back and the service moved: holders %v, want only %s", first, h, second)
		}
	}
	s.checkSafe(first)
}
