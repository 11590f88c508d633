package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// nmReport is the part of the node manager's report these tests read.
type nmReport struct {
	ctlmsg.NodeManagerReport
	// at is when the node manager sent this report (its supervisor's
	// last_report): a report is a snapshot, and its lease has run on since.
	at time.Time
}

// holdsLeaseNow says whether the node, by its own last report, still holds
// a valid lease at now.
func (r nmReport) holdsLeaseNow(now time.Time) bool {
	return r.Role == "active" && r.LeaseValid && r.at.Add(time.Duration(r.LeaseRemainingMS)*time.Millisecond).After(now)
}

// cluster is two nodes and a witness, each a `vigil supervise`, on loopback.
type cluster struct {
	t     *testing.T
	nodes map[string]*daemon // a, b, w
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, nodes: newPeers(t, "a", "b", "w")}
	addrs := map[string]string{}
	for id, d := range c.nodes {
		addrs[id] = fmt.Sprintf("127.0.0.1:%d", d.port)
	}
	for id, d := range c.nodes {
		d.cluster = pairYAML("pair", id, d, addrs)
		d.writeConfig("")
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].start()
	}
	return c
}

// newPeers returns one daemon per id, all with the same cluster key.
func newPeers(t *testing.T, ids ...string) map[string]*daemon {
	t.Helper()
	out := map[string]*daemon{}
	var key []byte
	for _, id := range ids {
		d := newDaemon(t, "")
		kf := filepath.Join(d.dir, "cluster.key")
		if key == nil {
			var err error
			if key, err = os.ReadFile(kf); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(kf, key, 0o600); err != nil {
			t.Fatal(err)
		}
		out[id] = d
	}
	return out
}

// pairYAML is the cluster: body of host id in a cluster of nodes a and b
// and witness w at addrs.
func pairYAML(name, id string, d *daemon, addrs map[string]string) string {
	role := "node"
	if id == "w" {
		role = "witness"
	}
	return fmt.Sprintf(`  name: %s
  node: %s
  role: %s
  key_file: %s
  nodes:
    - {id: a, address: %s}
    - {id: b, address: %s}
  witnesses:
    - {id: w, address: %s}
%s`, name, id, role, filepath.Join(d.dir, "cluster.key"), addrs["a"], addrs["b"], addrs["w"], testTiming)
}

func (c *cluster) report(id string) (nmReport, bool) {
	resp, err := client.Call(c.nodes[id].socket, supervisor.Request{Cmd: "status"})
	if err != nil || resp.Status.NodeManager == nil {
		return nmReport{}, false
	}
	r := nmReport{NodeManagerReport: *resp.Status.NodeManager}
	for _, p := range resp.Status.ControlPlane {
		if p.Name == "nodemanager" && p.LastReport != nil {
			r.at = *p.LastReport
		}
	}
	return r, true
}

// active returns the one node that reports itself active with a valid
// lease, or "" when none or both do.
func (c *cluster) active() string {
	ra, oka := c.report("a")
	rb, okb := c.report("b")
	aAct := oka && ra.Role == "active" && ra.LeaseValid
	bAct := okb && rb.Role == "active" && rb.LeaseValid
	switch {
	case aAct && !bAct:
		return "a"
	case bAct && !aAct:
		return "b"
	}
	return ""
}

// activeAndStandby waits for an active node and for the other one to be
// a standby in its ring (what a switchover needs), and returns both.
func (c *cluster) activeAndStandby() (active, standby string) {
	c.t.Helper()
	active = c.waitActive(20*time.Second, "")
	standby = map[string]string{"a": "b", "b": "a"}[active]
	c.waitFor("the standby is in the ring", func() bool {
		r, ok := c.report(standby)
		return ok && r.Role == "standby" && r.Active == active
	})
	return active, standby
}

func (c *cluster) waitActive(timeout time.Duration, not string) string {
	c.t.Helper()
	var a string
	c.nodes["a"].waitFor("one active node", timeout, func() bool {
		a = c.active()
		return a != "" && a != not
	})
	return a
}

// watchDual samples both nodes' own views until the returned function is
// called, and counts samples in which both held a valid lease at the same
// instant, each lease projected from its report's time (the supervisor
// caches reports). The returned function stops the sampler, waits for it to
// end and returns the count.
func (c *cluster) watchDual() (stop func() int) {
	quit, done := make(chan struct{}), make(chan int)
	go func() {
		dual := 0
		for {
			select {
			case <-quit:
				done <- dual
				return
			default:
			}
			ra, oka := c.report("a")
			rb, okb := c.report("b")
			now := time.Now()
			if oka && okb && ra.holdsLeaseNow(now) && rb.holdsLeaseNow(now) {
				dual++
			}
			time.Sleep(5 * time.Millisecond) // the sampling period, not a wait
		}
	}()
	return func() int {
		close(quit)
		return <-done
	}
}

func nmPid(t *testing.T, d *daemon, name string) int {
	t.Helper()
	for _, p := range d.status().ControlPlane {
		if p.Name == name && p.State == supervisor.StateRunning && p.PID > 0 {
			return p.PID
		}
	}
	t.Fatalf("no running %s", name)
	return 0
}

// Two nodes and a witness as real processes: the protocol elects one active;
// kill -9 of its node manager moves the role; a stalled node manager is
// fenced and replaced; a locator restart changes nothing; after every
// control-plane process of every host is killed a new token exists with no
// operator action.
func TestClusterFailover(t *testing.T) {
	c := newCluster(t)
	first := c.waitActive(20*time.Second, "")
	t.Logf("initial active: %s", first)
	stopDual := c.watchDual()

	// kill -9 of the active's node manager.
	began := time.Now()
	if err := syscall.Kill(nmPid(t, c.nodes[first], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := c.waitActive(10*time.Second, first)
	t.Logf("kill -9: %s active after %v", second, time.Since(began).Round(time.Millisecond))
	// The killed node manager is back (restarted by its supervisor) as standby.
	c.nodes[first].waitFor("restarted node manager reports standby", 10*time.Second, func() bool {
		r, ok := c.report(first)
		return ok && r.Role == "standby" && r.Active == second
	})

	// SIGSTOP of the active's node manager for 2x the lease (the incident:
	// a starved control plane), then SIGCONT.
	stalled := nmPid(t, c.nodes[second], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // 2x the test lease
	_ = syscall.Kill(stalled, syscall.SIGCONT)
	third := c.waitActive(10*time.Second, second)
	if third != first {
		t.Fatalf("after the stall: active %q", third)
	}
	c.nodes[second].waitFor("stalled node manager fenced", 10*time.Second, func() bool {
		return c.nodes[second].status().Supervisor.Fences >= 1
	})
	c.nodes[second].waitFor("stalled node stands down", 10*time.Second, func() bool {
		r, ok := c.report(second)
		return ok && r.Role == "standby" && r.Active == third
	})

	// A locator restart (the witness's) changes nothing.
	r0, _ := c.report(third)
	if err := syscall.Kill(nmPid(t, c.nodes["w"], "locator"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if a := c.active(); a != third {
		t.Fatalf("locator restart moved the active role: %q -> %q", third, a)
	}
	if r1, _ := c.report(third); r1.Epoch != r0.Epoch {
		t.Errorf("locator restart changed the epoch %d -> %d", r0.Epoch, r1.Epoch)
	}

	// Every control-plane process of every host killed at once.
	for _, id := range []string{"a", "b", "w"} {
		for _, p := range c.nodes[id].status().ControlPlane {
			if p.PID > 0 {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	}
	c.waitActive(20*time.Second, "")
	if dual := stopDual(); dual != 0 {
		t.Errorf("%d samples saw both nodes active with a valid lease", dual)
	}
	// No locator ever granted one epoch to two holders.
	for _, id := range []string{"a", "b", "w"} {
		checkGrants(t, id, c.nodes[id].log.String())
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// checkGrants reads a locator's grant events: epochs only grow, and an
// epoch has one holder.
func checkGrants(t *testing.T, id, log string) {
	t.Helper()
	holder := map[float64]string{}
	var last float64
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"event":"grant"`) {
			continue
		}
		var ev struct {
			Holder string  `json:"holder"`
			Epoch  float64 `json:"epoch"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			continue
		}
		n++
		if h, ok := holder[ev.Epoch]; ok && h != ev.Holder {
			t.Errorf("locator %s granted epoch %v to %s and %s", id, ev.Epoch, h, ev.Holder)
		}
		if ev.Epoch < last {
			t.Errorf("locator %s went back from epoch %v to %v", id, last, ev.Epoch)
		}
		holder[ev.Epoch], last = ev.Holder, ev.Epoch
	}
	if n == 0 {
		t.Errorf("locator %s logged no grant", id)
	}
}
