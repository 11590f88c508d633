package supervise

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// An orderly stop of the active (SIGTERM to its vigil, or `vigil restart
// nodemanager`) hands the role over instead of leaving the standby to wait
// for the lease to run out, make-before-break: the successor adds the
// floating IP before the old active drops it, so it is never without a
// holder for the lease-expiry path's lease + drift margin (650 ms with the
// test timing), and both hold it only for a short overlap (the old one
// silent until the successor announced, then nodemanager's drainLinger),
// never past the old active's lease.

// maxStopGap is well under the lease-expiry path (lease 600 ms + drift
// margin 50 ms, then a claim) and generous for a noisy 2-vCPU machine; a
// handover measures a few milliseconds here.
const maxStopGap = 400 * time.Millisecond

// maxOverlap is the test timing's lease: the old active may keep the
// address at most until the lease it held ends (measured: 20-25 ms).
const maxOverlap = 600 * time.Millisecond

// stopRuns is how many times each kind of stop is repeated: one lucky run
// proves nothing about a race.
const stopRuns = 5

func TestStopHandsOverTheVIP(t *testing.T) {
	c := newVIPCluster(t)
	holder := c.waitVIPStandbyReady("")
	stops := map[string]int{}
	for i := 0; i < stopRuns; i++ {
		other := map[string]string{"a": "b", "b": "a"}[holder]
		d := c.nodes[holder]
		gp := c.gapProbe(holder, other)
		d.stop(20 * time.Second)
		stops[holder]++
		gap, dual := gp.wait(t)
		t.Logf("run %d: stopped vigil on active %s: %s holds the VIP after a gap of %v, both held it %v", i, holder, other, gap, dual)
		if dual >= maxOverlap {
			t.Errorf("run %d: both hosts held the VIP for %v, want < %v (the old lease)", i, dual, maxOverlap)
		}
		if gap >= maxStopGap {
			t.Errorf("run %d: stopping the active left the VIP without a holder for %v (want < %v: a handover, not a lease expiry)\n%s", i, gap, maxStopGap, d.log.String())
		}
		if n := strings.Count(d.log.String(), "handing the active role over before stopping"); n != stops[holder] {
			t.Errorf("run %d: %s logged %d handovers in %d stops", i, holder, n, stops[holder])
		}
		if c.holds(holder) {
			t.Errorf("run %d: the stopped host still has the VIP", i)
		}
		stopLine := lastLine(d.log.String(), `"event":"nodemanager_stop"`)
		t.Logf("run %d: %s", i, stopLine)
		if !strings.Contains(stopLine, `"handed_over":true`) {
			t.Errorf("run %d: the node manager did not say it handed over: %s", i, stopLine)
		}
		marks := c.logMarks()
		d.start()
		holder = c.waitVIPStandbyReady("")
		if holder != other && !c.stalledSince(marks) {
			t.Fatalf("run %d: the VIP moved back to %s after its vigil restarted", i, holder)
		}
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

func TestStopRestartNodeManagerHandsOver(t *testing.T) {
	c := newVIPCluster(t)
	holder := c.waitVIPStandbyReady("")
	for i := 0; i < stopRuns; i++ {
		other := map[string]string{"a": "b", "b": "a"}[holder]
		d := c.nodes[holder]
		gp := c.gapProbe(holder, other)
		marks := c.logMarks()
		out, code := d.vigil("restart", "--socket", d.socket, "nodemanager")
		if code != 0 {
			t.Fatalf("vigil restart nodemanager: %d %s", code, out)
		}
		gap, dual := gp.wait(t)
		t.Logf("run %d: restarted the node manager of active %s: %s holds the VIP after a gap of %v, both held it %v", i, holder, other, gap, dual)
		if dual >= maxOverlap {
			t.Errorf("run %d: both hosts held the VIP for %v, want < %v (the old lease)", i, dual, maxOverlap)
		}
		if gap >= maxStopGap {
			t.Errorf("run %d: restarting the active's node manager left the VIP without a holder for %v (want < %v)\n%s", i, gap, maxStopGap, d.log.String())
		}
		holder = c.waitVIPStandbyReady("")
		if holder != other && !c.stalledSince(marks) {
			t.Fatalf("run %d: the VIP moved back to %s after its node manager restarted", i, holder)
		}
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}

// logMarks notes how far each host's log has got.
func (c *vipCluster) logMarks() map[string]int {
	m := map[string]int{}
	for id, d := range c.nodes {
		m[id] = len(d.log.String())
	}
	return m
}

// stalledSince says whether, since marks, a host logged what only a stall
// of the machine past the lease explains (a fence of a silent node
// manager, or a timer late by more than the token timeout): then the role may
// rightly move, even back to the host just restarted. It is logged, so a
// run on a loaded machine shows why the move-back check was waived.
func (c *vipCluster) stalledSince(marks map[string]int) bool {
	c.t.Helper()
	late := regexp.MustCompile(`"event":"late_timer","late_ms":(\d+)`)
	for id, d := range c.nodes {
		log := d.log.String()[marks[id]:]
		if l := lastLine(log, `"event":"fence"`); l != "" {
			c.t.Logf("%s was fenced (the machine stalled), so the role may move: %s", id, l)
			return true
		}
		for _, m := range late.FindAllStringSubmatch(log, -1) {
			if ms, _ := strconv.Atoi(m[1]); time.Duration(ms)*time.Millisecond >= testTokenTimeout {
				c.t.Logf("%s was not scheduled for %d ms, over the token timeout: the role may move", id, ms)
				return true
			}
		}
	}
	return false
}

// lastLine is the last log line that contains s.
func lastLine(log, s string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// waitVIPStandbyReady waits until one host other than not holds the VIP
// and the other node is a standby that the active sees healthy in the ring
// (what a handover needs), and returns the holder.
func (c *vipCluster) waitVIPStandbyReady(not string) string {
	c.t.Helper()
	var holder string
	c.nodes["w"].waitFor("a VIP holder and a standby in its ring", 30*time.Second, func() bool {
		holder = c.holder()
		if holder == "" || holder == not {
			return false
		}
		other := map[string]string{"a": "b", "b": "a"}[holder]
		ra, ok := peerView(c.nodes[holder])
		if !ok || ra.Role != "active" {
			return false
		}
		rb, ok := peerView(c.nodes[other])
		if !ok || rb.Role != "standby" || rb.Active != holder {
			return false
		}
		for _, p := range ra.Peers {
			if p.ID == other {
				return p.InRing && p.Healthy && !p.Maintenance
			}
		}
		return false
	})
	return holder
}

func peerView(d *daemon) (ctlmsg.NodeManagerReport, bool) {
	if !d.running() {
		return ctlmsg.NodeManagerReport{}, false
	}
	resp, err := client.Call(d.socket, supervisor.Request{Cmd: "status"})
	if err != nil || resp.Status.NodeManager == nil {
		return ctlmsg.NodeManagerReport{}, false
	}
	return *resp.Status.NodeManager, true
}

// gapProber samples both hosts every 2 ms from before the stop until the
// new holder has the VIP, and measures the time from the last sample in
// which the old holder had it to the first in which the new one has it. It
// goes on sampling for a while after that, counting samples in which both
// hold it.
type gapProber struct {
	done chan struct{}
	gap  time.Duration // from the old holder's last sample to the new one's first, 0 if they overlapped
	dual time.Duration // from the first to the last sample in which both held it
	err  string
}

func (c *vipCluster) gapProbe(from, to string) *gapProber {
	p := &gapProber{done: make(chan struct{})}
	lastOld := time.Now()
	go func() {
		defer close(p.done)
		var seen, dualFirst time.Time
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			now := time.Now()
			old, nw := c.holds(from), c.holds(to)
			switch {
			case old && nw:
				if dualFirst.IsZero() {
					dualFirst = now
				}
				p.dual = now.Sub(dualFirst)
				lastOld = now
			case old:
				lastOld = now
			}
			if nw && seen.IsZero() {
				seen = now
				p.gap = now.Sub(lastOld)
			}
			if !seen.IsZero() && now.Sub(seen) > time.Second {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		if seen.IsZero() {
			p.err = "the VIP never reached " + to
		}
	}()
	return p
}

// wait returns the gap and how long both held it.
func (p *gapProber) wait(t *testing.T) (gap, dual time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatal("gap prober did not finish")
	}
	if p.err != "" {
		t.Fatal(p.err)
	}
	return p.gap, p.dual
}
