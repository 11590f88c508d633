package supervise

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// A node whose runtime.state_dir is wiped while it is stopped comes back
// with no state file. Before, its node manager and locator counted their
// incarnation from 1 again and every peer, remembering a newer one,
// dropped everything they sent ("older than"), silently and for good: the
// node could never take the role again. Now it says so (event=state_new)
// and starts at an incarnation from the wall clock, which the peers accept:
// it rejoins the ring, and it takes over when the active's node manager is
// killed.
func TestLostStateDirRejoins(t *testing.T) {
	c := newCluster(t)
	active, standby := c.activeAndStandby()
	d := c.nodes[standby]
	// Two restarts of the standby's control plane: its incarnations are
	// 3 now, which the peers remember (a wiped node counting from 1 again
	// stays below that for good; from 2 lives it only would until its
	// sequence numbers passed the old ones).
	for i := 0; i < 2; i++ {
		nm, loc := nmPid(t, d, "nodemanager"), nmPid(t, d, "locator")
		_ = syscall.Kill(nm, syscall.SIGKILL)
		_ = syscall.Kill(loc, syscall.SIGKILL)
		// One status snapshot for pids and reports: the supervisor clears a
		// process's report when it starts it again, so a report seen with
		// the new pid is the new process's. (Reading them from two calls
		// once paired the old report with the new pid.)
		d.waitFor("the standby's control plane is back and reporting", 20*time.Second, func() bool {
			st := d.status()
			if st.NodeManager == nil || st.Locator == nil {
				return false
			}
			r := st.NodeManager
			newNM, newLoc := pidIn(st, "nodemanager"), pidIn(st, "locator")
			return r.Role == "standby" && r.Active == active && newNM > 0 && newNM != nm && newLoc > 0 && newLoc != loc
		})
	}
	// FreshIncarnation counts wall-clock seconds; it is above the lost
	// incarnations provided the process did not start more than once a
	// second on average (docs/protocol.md). This test restarted it three
	// times within seconds, so wait until the clock is past them, as any
	// real life would be.
	lastInc := incarnations(t, d)
	d.stop(20 * time.Second)
	stateDir := filepath.Join(d.dir, "state")
	ents, err := os.ReadDir(stateDir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no state files to lose in %s: %v %v", stateDir, ents, err)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(d.log.String(), `"event":"state_new"`)
	for uint64(time.Now().Unix()) <= lastInc {
		time.Sleep(100 * time.Millisecond)
	}
	d.start()

	d.waitFor("the wiped node logs that its state is new or lost", 10*time.Second, func() bool {
		return strings.Count(d.log.String(), `"event":"state_new"`) >= before+2 // node manager and locator
	})
	d.waitFor("the wiped node is a standby of the active again", 20*time.Second, func() bool {
		r, ok := c.report(standby)
		return ok && r.Role == "standby" && r.Active == active
	})
	c.nodes[active].waitFor("the active has the wiped node back in its ring", 20*time.Second, func() bool {
		return peerInRing(c.nodes[active], standby)
	})

	// The peers accept its claims: kill -9 of the active's node manager
	// moves the role to it.
	if err := syscall.Kill(nmPid(t, c.nodes[active], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := c.waitActive(15*time.Second, active); got != standby {
		t.Fatalf("active after the kill: %q, want %q", got, standby)
	}
	for _, id := range []string{"a", "b", "w"} {
		checkGrants(t, id, c.nodes[id].log.String())
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

func peerInRing(d *daemon, id string) bool {
	resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
	if err != nil || resp.Status.NodeManager == nil {
		return false
	}
	for _, p := range resp.Status.NodeManager.Peers {
		if p.ID == id {
			return p.InRing
		}
	}
	return false
}

// pidIn is the pid of a running control-plane process in st, 0 if none.
func pidIn(st *supervisor.Status, name string) int {
	for _, p := range st.ControlPlane {
		if p.Name == name && p.State == supervisor.StateRunning && p.PID > 0 {
			return p.PID
		}
	}
	return 0
}

// incarnations is the highest incarnation of d's node manager and locator,
// from their reports.
func incarnations(t *testing.T, d *daemon) uint64 {
	t.Helper()
	resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		t.Fatal(err)
	}
	nm, loc := resp.Status.NodeManager, resp.Status.Locator
	if nm == nil || loc == nil || nm.Incarnation == 0 || loc.Incarnation == 0 {
		t.Fatalf("no incarnations in the reports: %+v %+v", nm, loc)
	}
	if max(nm.Incarnation, loc.Incarnation) > uint64(time.Now().Unix())+60 {
		t.Fatalf("incarnation %d/%d is ahead of the clock", nm.Incarnation, loc.Incarnation)
	}
	return max(nm.Incarnation, loc.Incarnation)
}
