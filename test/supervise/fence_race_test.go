package supervise

import (
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// A fence is final: the active's node manager, stalled with SIGSTOP, is
// fenced by its supervisor, and the floating IP, once removed, never comes
// back on that host while the old node manager is alive. The test resumes
// the old node manager the moment the removal shows up in netlink, so that
// one still running would race the fence and re-add the address under the
// lease it believed valid; and it checks that at the removal the old node
// manager was already dead (SIGKILLed, reaped or a zombie), not stopped.
func TestFenceAddressNeverComesBack(t *testing.T) {
	c := newVIPCluster(t)
	var act string
	c.nodes["a"].waitFor("one host holds the VIP", 30*time.Second, func() bool {
		act = c.holder()
		return act != ""
	})
	stby := map[string]string{"a": "b", "b": "a"}[act]
	host := c.net.Hosts[act]
	vip := netip.MustParseAddr(testVIP)

	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	ns := host.NS
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}

	stalled := nmPid(t, c.nodes[act], "nodemanager")
	var (
		mu         sync.Mutex
		removed    bool
		aliveAtDel bool
		readded    []time.Time
	)
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if a, _ := netip.AddrFromSlice(u.LinkAddress.IP); a.Unmap() != vip {
					continue
				}
				mu.Lock()
				switch {
				case !u.NewAddr && !removed:
					removed = true
					aliveAtDel = alive(stalled)
					// Race the fence: an old node manager still alive now
					// runs and sees its address gone.
					_ = syscall.Kill(stalled, syscall.SIGCONT)
				case u.NewAddr && removed && alive(stalled):
					readded = append(readded, time.Now())
				}
				mu.Unlock()
			}
		}
	}()

	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(stalled, syscall.SIGCONT) }()
	c.nodes[act].waitFor("the stalled node manager fenced", 20*time.Second, func() bool {
		return c.nodes[act].status().Supervisor.Fences >= 1
	})
	c.nodes[stby].waitFor("the standby took over", 20*time.Second, func() bool { return c.holds(stby) })
	c.nodes[act].waitFor("the old node manager gone", 20*time.Second, func() bool { return !alive(stalled) })
	// The restarted node manager reports as a standby: by then any re-add
	// by the old one would have been seen.
	c.nodes[act].waitFor("the restarted node manager reporting", 20*time.Second, func() bool {
		for _, p := range c.nodes[act].status().ControlPlane {
			if p.Name == "nodemanager" && p.PID > 0 && p.PID != stalled && p.LastReport != nil {
				return true
			}
		}
		return false
	})
	close(stopWatch)
	<-watchDone

	mu.Lock()
	defer mu.Unlock()
	if !removed {
		t.Fatal("the fence never removed the floating IP (no RTM_DELADDR seen)")
	}
	if aliveAtDel {
		t.Error("the floating IP was removed while the fenced node manager was still alive")
	}
	if len(readded) > 0 {
		t.Errorf("the floating IP came back %d times while the old node manager was alive", len(readded))
	}
	if c.holds(act) {
		t.Error("the fenced host holds the floating IP again")
	}
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}
