package netfloat

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/clock"
)

// bareNamespace is a new network namespace with nothing in it, closed at
// the end of the test: all the kernel lease needs, and all the cgroup v2
// VM's kernel can make (no bridge, no nft CLI there).
func bareNamespace(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return int(ns)
}

// The hand-built refresh (aliveRefresh) is accepted by the running kernel
// and sets the exact timeout in both tables; a batch naming a set the
// kernel lacks is refused whole, with ENOENT. It runs in `make test` on the
// host's kernel and in the cgroup v2 VM on Debian 12's (test/vm/v2), the
// production default: a kernel that answered the batch otherwise would
// send every refresh through the library again, at its old cost, and no
// other test would say so.
func TestAliveRefreshOnThisKernel(t *testing.T) {
	ns := bareNamespace(t)
	var u unix.Utsname
	_ = unix.Uname(&u)
	t.Logf("kernel %s", unix.ByteSliceToString(u.Release[:]))
	kl, err := NewNFTLease(ns, clock.Boottime)
	if errors.Is(err, ErrKernelLeaseUnavailable) && os.Getenv("VIGIL_VM_GUEST") != "1" {
		t.Skipf("no nf_tables here: %v", err) // the VM loads it for this test: there it fails
	}
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	x := netip.MustParseAddr("192.0.2.101")
	apply := func(left time.Duration) {
		t.Helper()
		u := clock.Boottime() + left
		if err := kl.Apply(LeaseState{Guarded: []netip.Addr{x}, Announce: []LeaseElement{{x, u}}, Accept: []LeaseElement{{x, u}}}); err != nil {
			t.Fatalf("lease of %v: %v", left, err)
		}
	}
	apply(time.Minute) // the full transaction, through the library
	for _, left := range []time.Duration{2 * time.Minute, 90 * time.Second, 3 * time.Minute} {
		apply(left)
		if kl.refresh == nil {
			t.Fatalf("the refresh to %v did not go through the hand-built batch: the kernel refused it, or its socket could not open", left)
		}
		// Generous: an emulated VM may take seconds between the two.
		for _, s := range []*nftables.Set{kl.arpAlive, kl.inetAlive} {
			if els := setElements(t, kl, s); len(els) != 1 || string(els[0].Key) != string(aliveKey) || els[0].Timeout > left || els[0].Timeout < left-20*time.Second {
				t.Fatalf("%s after a refresh to %v = %+v", s.Name, left, els)
			}
		}
	}

	if n, why := kl.RefreshFallbacks(); n != 0 {
		t.Fatalf("%d refreshes fell back to the library (%s)", n, why)
	}

	missing := *kl.arpAlive
	missing.Name = "lease_alive_nosuchset"
	r, err := newAliveRefresh(ns, &missing, kl.inetAlive)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if err := r.send(time.Hour); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("refresh naming a missing set: %v, want ENOENT", err)
	}
	if els := setElements(t, kl, kl.inetAlive); len(els) != 1 || els[0].Timeout > 3*time.Minute {
		t.Fatalf("inet alive after the refused batch = %+v, want its 3 minutes", els)
	}
}
