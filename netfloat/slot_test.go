package netfloat

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
)

// Two services on one host, slots 0 and 1, each with its kernel lease and
// address mark: each serves its own address; one slot's revocation (the
// crash release of its node manager) and Reconcile (its fence, or its
// next node manager's start) leave the other's address served.
func TestSlotsKeepToThemselves(t *testing.T) {
	needNFT(t)
	a, b := twoHosts(t)
	x := VIP{Prefix: vip4, Interface: "eth0"}
	y := VIP{Prefix: netip.MustParsePrefix("192.0.2.101/24"), Interface: "eth0"}
	managers := make([]*Manager, 2)
	for slot, v := range []VIP{x, y} {
		kl, err := NewNFTLease(nsFd(a), clock.Boottime, LeaseSlot(slot))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kl.Close() })
		m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: kl, Protocol: SlotProtocol(slot), Label: SlotLabel(slot)})
		if err := m.Guard([]VIP{v}); err != nil {
			t.Fatal(err)
		}
		m.SetLeaseDeadline(clock.Boottime() + time.Minute)
		if _, err := m.Claim(context.Background(), v); err != nil {
			t.Fatal(err)
		}
		managers[slot] = m
	}
	probe := newARPProber(t, b)
	served := func(v VIP) bool {
		mac, err := probe.ask(v.Prefix.Addr(), 300*time.Millisecond)
		return err == nil && bytes.Equal(mac, a.MAC)
	}
	if !served(x) || !served(y) {
		t.Fatalf("both leased: served x %v, y %v", served(x), served(y))
	}
	if err := RevokeLease(nsFd(a), 1); err != nil {
		t.Fatal(err)
	}
	if !served(x) || served(y) {
		t.Fatalf("slot 1 revoked: served x %v (want true), y %v (want false)", served(x), served(y))
	}
	if lc := NewLeaseChecker(nsFd(a), 0); lc.Enforces([]netip.Addr{x.Prefix.Addr()}, 2*time.Minute) != nil {
		t.Errorf("slot 0's lease no longer enforced after slot 1's revocation: %v", lc.Enforces([]netip.Addr{x.Prefix.Addr()}, 2*time.Minute))
	}
	removed, err := managers[1].Reconcile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Prefix != y.Prefix {
		t.Fatalf("slot 1's Reconcile removed %v, want only %v", removed, y)
	}
	if !a.HasAddr(x.Prefix.Addr()) || a.HasAddr(y.Prefix.Addr()) {
		t.Fatalf("after slot 1's Reconcile: x held %v (want true), y held %v (want false)", a.HasAddr(x.Prefix.Addr()), a.HasAddr(y.Prefix.Addr()))
	}
	if !served(x) {
		t.Fatal("slot 0's address no longer served after slot 1's Reconcile")
	}
}
