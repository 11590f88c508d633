package supervise

import (
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/netfloat"
)

// A fence is final: the active's node manager, stalled with SIGSTOP, is
// fenced by its supervisor, and the floating IP, once removed, never comes
// back on that host while the old node manager is alive. The test resumes
// the old node manager the moment the removal shows up in netlink, so that
// one still running would race the fence and re-add the address under the
// lease it believed valid; and it checks that at the removal the old node
// manager was already killed (exiting or with SIGKILL pending, a zombie or
// reaped), not merely stopped: a SIGKILLed process can take tens of ms to
// finish dying on a loaded host, and the fence removes the addresses after
// fenceKillWait without waiting for that, since it runs no user code again.
// The fence acts at the lease's end only where the kernel lease does not
// stop the host serving by itself (TestStalledNodeManagerLeftToKernelLease
// for where it does), so the test disarms it once the node manager is
// stopped, as a failed refresh would.
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
					aliveAtDel = !killed(stalled)
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
	disarmKernelLease(t, c.nodes[act], host)
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
		t.Error("the floating IP was removed while the fenced node manager was still alive and not killed")
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

// disarmKernelLease empties the kernel lease's guard sets on host, as the
// node manager's Disarm does after a failed refresh: the rules then match
// nothing, and only the fence stops the host serving. Where the kernel
// lease is not in force (d's node manager says so) there is nothing to do.
func disarmKernelLease(t *testing.T, d *daemon, host *netnstest.Host) {
	t.Helper()
	if nm := d.status().NodeManager; nm == nil || nm.KernelLease == nil || nm.KernelLease.State != ctlmsg.KernelLeaseEnforcing {
		t.Logf("no kernel lease in force on %s: nothing to disarm", host.Name)
		return
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(host.NS)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*nftables.Set{
		{Table: &nftables.Table{Name: netfloat.TableName, Family: nftables.TableFamilyARP}, Name: "lease_vips4"},
		{Table: &nftables.Table{Name: netfloat.TableName, Family: nftables.TableFamilyINet}, Name: "lease_vips4"},
		{Table: &nftables.Table{Name: netfloat.TableName, Family: nftables.TableFamilyINet}, Name: "lease_vips6"},
	} {
		c.FlushSet(s)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("disarm the kernel lease on %s: %v", host.Name, err)
	}
}

// A node manager stalled past its lease on a host whose kernel lease is in
// force is not killed (the kernel stopped the host serving without it): the
// supervisor checks the real kernel tables, holds the fence (fence_held),
// and the node manager, resumed, carries on as the same process; the host
// then serves the floating IP only if it holds the role again, never beside
// the other node.
func TestStalledNodeManagerLeftToKernelLease(t *testing.T) {
	c := newVIPCluster(t)
	var act string
	c.nodes["a"].waitFor("one host holds the VIP", 30*time.Second, func() bool {
		act = c.holder()
		return act != ""
	})
	stby := map[string]string{"a": "b", "b": "a"}[act]
	c.nodes[stby].waitFor("the standby sees the active", 30*time.Second, func() bool {
		return peerInRing(c.nodes[act], stby)
	})
	if nm := c.nodes[act].status().NodeManager; nm == nil || nm.KernelLease == nil || nm.KernelLease.State != ctlmsg.KernelLeaseEnforcing {
		t.Skipf("the kernel lease is not in force on %s: the fence acts at the lease's end there (TestFenceAddressNeverComesBack)", act)
	}
	stalled := nmPid(t, c.nodes[act], "nodemanager")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(stalled, syscall.SIGCONT) }()
	c.nodes[act].waitFor("the fence held", 20*time.Second, func() bool {
		return c.nodes[act].status().Supervisor.FencesHeld >= 1
	})
	// Resumed well inside the hold (3 s at the tests' 600 ms lease).
	if err := syscall.Kill(stalled, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.nodes[act].waitFor("the resumed node manager reporting", 20*time.Second, func() bool {
		return strings.Contains(c.nodes[act].log.String(), `"event":"fence_hold_end"`)
	})
	// One holder again: whichever node the locators granted.
	var holder string
	c.nodes[act].waitFor("one host holds the VIP again", 30*time.Second, func() bool {
		holder = c.holder()
		return holder != "" && !(c.holds("a") && c.holds("b"))
	})
	st := c.nodes[act].status()
	if st.Supervisor.Fences != 0 {
		t.Errorf("the stalled node manager was fenced %d times; the kernel lease was in force", st.Supervisor.Fences)
	}
	if !alive(stalled) || nmPid(t, c.nodes[act], "nodemanager") != stalled {
		t.Errorf("the stalled node manager (pid %d) did not carry on", stalled)
	}
	if c.holds("a") && c.holds("b") {
		t.Error("both hosts hold the floating IP")
	}
	t.Logf("stalled %s; %s holds the floating IP after the resume", act, holder)
	for _, id := range []string{"a", "b", "w"} {
		c.nodes[id].stop(20 * time.Second)
	}
}
