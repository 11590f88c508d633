package netfloat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// manyVIPs are n IPv4 floating IPs on eth0 (192.0.2.100 and up, then
// 198.51.100.1 and up).
func manyVIPs(n int) []VIP {
	var out []VIP
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})
		if 100+i > 254 {
			a = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i - 155)})
		}
		out = append(out, VIP{Prefix: netip.PrefixFrom(a, 24), Interface: "eth0"})
	}
	return out
}

// TestClaimAllReleaseAll: more addresses than one netlink batch, one of
// them refused by the kernel in the middle of a batch (IPv6 disabled on
// the interface), one invalid, one given twice and one on a missing
// interface. Everything claimable is added, marked, in the kernel lease
// by one transaction, and announced; each failure is the report of its
// own VIP only. ExtendAll names what is not held; ReleaseAll removes it
// all with one transaction.
func TestClaimAllReleaseAll(t *testing.T) {
	a, b := twoHosts(t)
	if err := a.Sysctl("net/ipv6/conf/eth0/disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	f := &fakeLease{host: a}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f})
	m.SetLeaseDeadline(clock.Boottime() + time.Hour)
	cap := startCapture(t, b)

	good := manyVIPs(2*nlBatch + 7)
	v6 := VIP{Prefix: netip.MustParsePrefix("2001:db8::100/64"), Interface: "eth0"}
	bad := VIP{Prefix: netip.MustParsePrefix("127.0.0.5/8"), Interface: "eth0"}
	noIf := VIP{Prefix: netip.MustParsePrefix("203.0.113.5/24"), Interface: "nosuch0"}
	vips := slices.Clone(good[:nlBatch+3])
	v6At := len(vips)
	vips = append(vips, v6, bad, good[0], noIf)
	vips = append(vips, good[nlBatch+3:]...)

	applies := len(f.states)
	reps, err := m.ClaimAll(context.Background(), vips)
	if err == nil {
		t.Fatal("ClaimAll: no error, want the four failures joined")
	}
	if len(reps) != len(vips) {
		t.Fatalf("%d reports for %d VIPs", len(reps), len(vips))
	}
	for i, r := range reps {
		wantErr := i >= v6At && i < v6At+4
		if (r.Err != nil) != wantErr {
			t.Errorf("report %d (%s): err %v, want an error: %v", i, vips[i], r.Err, wantErr)
		}
		if r.Err == nil && (r.AddedAfter <= 0 || r.AnnouncedAfter < r.AddedAfter) {
			t.Errorf("report %d (%s): added %v announced %v", i, vips[i], r.AddedAfter, r.AnnouncedAfter)
		}
	}
	if !errors.Is(reps[v6At].Err, syscall.EACCES) {
		t.Errorf("IPv6 on an interface without IPv6: %v, want EACCES from the kernel's acknowledgement", reps[v6At].Err)
	}
	if !errors.Is(reps[v6At+1].Err, ErrInvalidVIP) || !errors.Is(reps[v6At+2].Err, ErrInvalidVIP) {
		t.Errorf("loopback: %v; duplicate: %v; want ErrInvalidVIP", reps[v6At+1].Err, reps[v6At+2].Err)
	}
	if got := m.Held(); len(got) != len(good) {
		t.Fatalf("Held() has %d VIPs, want %d", len(got), len(good))
	}
	for _, v := range good {
		if !a.HasAddr(v.Prefix.Addr()) {
			t.Fatalf("%s not in the kernel", v)
		}
	}
	// One transaction put them all in the lease before they existed; one
	// more took the refused one out again.
	f.mu.Lock()
	n := len(f.states) - applies
	first := f.states[applies]
	f.mu.Unlock()
	if n != 2 {
		t.Errorf("ClaimAll applied the kernel lease %d times, want 2 (all in; the failed ones out)", n)
	}
	for _, v := range append(slices.Clone(good), v6) {
		if _, ok := hasElem(first.Announce, v.Prefix.Addr()); !ok {
			t.Errorf("%s not in the first transaction's announce set", v)
		}
	}
	if _, ok := hasElem(f.last().Announce, v6.Prefix.Addr()); ok {
		t.Error("the refused IPv6 address stayed in the kernel lease")
	}
	poll(t, 5*time.Second, "b sees every address announced", func() bool {
		for _, v := range good {
			if !cap.has(v.Prefix.Addr(), a.MAC, "arp-request") {
				return false
			}
		}
		return true
	})

	notHeld, err := m.ExtendAll(append(slices.Clone(good), noIf))
	if err != nil || len(notHeld) != 1 || notHeld[0] != noIf {
		t.Fatalf("ExtendAll = %v, %v; want [%s], nil", notHeld, err, noIf)
	}

	applies = len(f.states)
	if err := m.ReleaseAll(append(slices.Clone(good), noIf, v6)); err != nil {
		t.Fatalf("ReleaseAll: %v", err)
	}
	if f.mu.Lock(); len(f.states)-applies != 1 {
		t.Errorf("ReleaseAll applied the kernel lease %d times, want 1", len(f.states)-applies)
	}
	f.mu.Unlock()
	if got := m.Held(); len(got) != 0 {
		t.Fatalf("Held() after ReleaseAll = %v", got)
	}
	for _, v := range good {
		if a.HasAddr(v.Prefix.Addr()) {
			t.Fatalf("%s still in the kernel", v)
		}
	}
	if l := f.last(); len(l.Announce)+len(l.Accept) != 0 {
		t.Fatalf("kernel lease after ReleaseAll: %+v", l)
	}
	// Releasing what is gone already is not an error.
	if err := m.ReleaseAll(good[:3]); err != nil {
		t.Fatalf("ReleaseAll of released VIPs: %v", err)
	}
}

// TestQuietAllRefuseAll: both act on the held VIPs only, with one kernel
// lease transaction, and stop their announcements.
func TestQuietAllRefuseAll(t *testing.T) {
	a, _ := twoHosts(t)
	f := &fakeLease{host: a}
	m := newManager(t, a, Options{LeaseClock: clock.Boottime, KernelLease: f, GARPCount: 50, GARPInterval: 5 * time.Millisecond})
	m.SetLeaseDeadline(clock.Boottime() + time.Hour)
	vips := manyVIPs(6)
	if _, err := m.ClaimAll(context.Background(), vips[:4]); err != nil {
		t.Fatal(err)
	}
	applies := len(f.states)
	quiet, err := m.QuietAll(vips[:2])
	if err != nil || !slices.Equal(quiet, vips[:2]) {
		t.Fatalf("QuietAll = %v, %v", quiet, err)
	}
	refused, err := m.RefuseAll(vips[2:]) // 4 and 5 are not held
	if err != nil || !slices.Equal(refused, vips[2:4]) {
		t.Fatalf("RefuseAll = %v, %v; want %v", refused, err, vips[2:4])
	}
	if f.mu.Lock(); len(f.states)-applies != 2 {
		t.Errorf("%d kernel lease transactions, want one each", len(f.states)-applies)
	}
	f.mu.Unlock()
	l := f.last()
	for i, v := range vips[:4] {
		_, announce := hasElem(l.Announce, v.Prefix.Addr())
		_, accept := hasElem(l.Accept, v.Prefix.Addr())
		if announce || accept != (i < 2) {
			t.Errorf("%s: announce %v accept %v; quiet ones accept, refused ones do not, none announce", v, announce, accept)
		}
	}
	// No announcement leaves once they returned: every announcer has
	// ended (its burst of 50 every 5 ms would still be running).
	m.mu.Lock()
	for _, v := range vips[:4] {
		select {
		case <-m.held[v.key()].done:
		default:
			t.Errorf("%s: its announcer still runs", v)
		}
	}
	m.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if reps, err := m.ClaimAll(ctx, vips[4:]); !errors.Is(err, context.Canceled) || len(reps) != 2 || !errors.Is(reps[0].Err, context.Canceled) || !errors.Is(reps[1].Err, context.Canceled) {
		t.Fatalf("ClaimAll with a cancelled context = %+v, %v; want every report failed", reps, err)
	}

	m2 := newManager(t, a, Options{LeaseClock: clock.Boottime})
	if _, err := m2.RefuseAll(vips); !errors.Is(err, ErrKernelLeaseUnavailable) {
		t.Fatalf("RefuseAll without a kernel lease: %v", err)
	}
}

// TestAckError: the kernel's acknowledgement, success and failure with its
// extended message, as the netlink socket really returns it.
func TestAckError(t *testing.T) {
	a, _ := twoHosts(t)
	m := newManager(t, a, Options{})
	link, err := a.Handle.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix("192.0.2.77/24")
	errs := m.execBatch([]*nl.NetlinkRequest{
		m.addrReplaceReq(link.Attrs().Index, p, "", 30),
		m.addrDelReq(link.Attrs().Index, netip.MustParsePrefix("192.0.2.78/24")), // not there
		m.addrReplaceReq(9999, p, "", 30),                                        // no such link
		m.addrDelReq(link.Attrs().Index, p),
	})
	if errs[0] != nil || errs[3] != nil {
		t.Fatalf("add and delete: %v, %v", errs[0], errs[3])
	}
	if !errors.Is(errs[1], unix.EADDRNOTAVAIL) || !isGone(errs[1]) {
		t.Errorf("delete of a missing address: %v, want EADDRNOTAVAIL", errs[1])
	}
	if !errors.Is(errs[2], unix.ENODEV) || !strings.Contains(fmt.Sprint(errs[2]), "no such device") {
		t.Errorf("add to a missing link: %v, want ENODEV", errs[2])
	}
}
