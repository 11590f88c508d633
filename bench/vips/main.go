// Command vips measures how long a takeover takes to put many floating IPs
// on the wire: from the decision (the call into netfloat, which the node
// manager makes in the loop pass that became active) until every address
// is in the kernel, until the first announcement of the last one has been
// sent, and until a client on the same switch has received it (kernel
// receive timestamps of the client's packet socket). Then the release:
// until every address is gone. It runs the product's netfloat.Manager with
// the product's kernel lease (nftables), in network namespaces of its own:
// a switch, the host, the client.
//
//	go run ./bench/vips [-counts 1,16,256] [-runs 20] [-mode batch,serial] [-short]
//
// -mode serial claims one address after another, as the node manager did
// before ClaimAll; batch is ClaimAll. Needs root.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"github.com/vigil-project/vigil/bench/internal/quantile"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-project/vigil/bench/internal/machine"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/netnstest"
	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/test/e2e"
	"golang.org/x/sys/unix"
)

func main() {
	counts := flag.String("counts", "1,16,256", "comma-separated numbers of floating IPs claimed at once (at most 508)")
	runs := flag.Int("runs", 20, "takeovers per count and mode")
	modes := flag.String("mode", "batch,serial", "comma-separated: batch (ClaimAll, ReleaseAll), serial (Claim, Release per address)")
	short := flag.Bool("short", false, "CI mode: 3 runs")
	flag.Parse()
	if *short {
		*runs = 3
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/vips: needs root (network namespaces, nftables)")
		os.Exit(2)
	}
	var ns []int
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 508 {
			fmt.Fprintf(os.Stderr, "bench/vips: -counts: %q is not a number from 1 to 508\n", s)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	ms := strings.Split(*modes, ",")
	for _, m := range ms {
		if m != "batch" && m != "serial" {
			fmt.Fprintf(os.Stderr, "bench/vips: -mode: %q is neither batch nor serial\n", m)
			os.Exit(2)
		}
	}
	if *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench/vips: -runs must be >= 1")
		os.Exit(2)
	}
	machine.Describe(os.Stdout)
	var lines []string
	r := e2e.NewRunner(os.Stderr)
	err := r.Do(func(t e2e.TB) {
		net := netnstest.New(t,
			netnstest.HostSpec{Name: "h", Addr: "198.51.100.11/24"},
			netnstest.HostSpec{Name: "c", Addr: "198.51.100.12/24"},
		)
		h, c := net.Hosts["h"], net.Hosts["c"]
		kl, err := netfloat.NewNFTLease(int(h.NS), clock.Boottime)
		if err != nil {
			t.Fatalf("kernel lease: %v", err)
		}
		t.Cleanup(func() { kl.Close() })
		m, err := netfloat.New(h.Handle, h.NS, netfloat.Options{
			Lifetime: 30 * time.Second, LeaseClock: clock.Boottime, KernelLease: kl,
		})
		if err != nil {
			t.Fatalf("netfloat: %v", err)
		}
		t.Cleanup(func() { _ = m.Close() })
		all := vips(slices.Max(ns))
		if err := m.Guard(all); err != nil {
			t.Fatalf("guard: %v", err)
		}
		m.SetLeaseDeadline(clock.Boottime() + 24*time.Hour)
		cap, err := newCapture(c)
		if err != nil {
			t.Fatalf("client capture: %v", err)
		}
		t.Cleanup(cap.close)
		for _, mode := range ms {
			for _, n := range ns {
				l, err := measure(m, cap, mode, all[:n], *runs)
				if err != nil {
					t.Fatalf("mode %s, %d addresses: %v", mode, n, err)
				}
				fmt.Println(l)
				lines = append(lines, l)
			}
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/vips:", err)
		os.Exit(1)
	}
}

// vips are n floating IPs on eth0 from the documentation ranges (254 of
// 192.0.2.0/24, then 203.0.113.0/24).
func vips(n int) []netfloat.VIP {
	var out []netfloat.VIP
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i)})
		if i >= 254 {
			a = netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i - 254)})
		}
		out = append(out, netfloat.VIP{Prefix: netip.PrefixFrom(a, 24), Interface: netnstest.LinkName})
	}
	return out
}

func measure(m *netfloat.Manager, cap *capture, mode string, vs []netfloat.VIP, runs int) (string, error) {
	var added, announced, seen, released, apply []float64
	for i := 0; i < runs; i++ {
		cap.reset()
		t0 := time.Now()
		var reps []netfloat.ClaimReport
		switch mode {
		case "batch":
			var err error
			reps, err = m.ClaimAll(context.Background(), vs)
			if err != nil {
				return "", err
			}
		case "serial":
			for _, v := range vs {
				rep, err := m.Claim(context.Background(), v)
				if err != nil {
					return "", err
				}
				// Claim's durations count from its own start.
				off := time.Since(t0) - rep.AnnouncedAfter
				rep.AddedAfter += off
				rep.AnnouncedAfter += off
				reps = append(reps, rep)
			}
		}
		// The last kernel lease transaction was the claim's (serial: the
		// last address's, with all the others in it).
		apply = append(apply, msOf(m.KernelLeaseStats().LastApply))
		var a, an time.Duration
		for _, r := range reps {
			a, an = max(a, r.AddedAfter), max(an, r.AnnouncedAfter)
		}
		last, err := cap.waitAll(vs, t0, 5*time.Second)
		if err != nil {
			return "", err
		}
		t1 := time.Now()
		switch mode {
		case "batch":
			if err := m.ReleaseAll(vs); err != nil {
				return "", err
			}
		case "serial":
			for _, v := range vs {
				if err := m.Release(v); err != nil {
					return "", err
				}
			}
		}
		rel := time.Since(t1)
		if held := m.Held(); len(held) != 0 {
			return "", fmt.Errorf("after release %d addresses are still held", len(held))
		}
		added = append(added, msOf(a))
		announced = append(announced, msOf(an))
		seen = append(seen, msOf(last.Sub(t0)))
		released = append(released, msOf(rel))
	}
	return fmt.Sprintf("bench=vips mode=%s addresses=%d runs=%d added_ms_p50=%.2f added_ms_p99=%.2f announced_ms_p50=%.2f announced_ms_p99=%.2f client_seen_ms_p50=%.2f client_seen_ms_p99=%.2f released_ms_p50=%.2f released_ms_p99=%.2f kernel_lease_apply_ms_p50=%.2f",
		mode, len(vs), runs, quantile.Nearest(added, .5), quantile.Nearest(added, .99), quantile.Nearest(announced, .5), quantile.Nearest(announced, .99),
		quantile.Nearest(seen, .5), quantile.Nearest(seen, .99), quantile.Nearest(released, .5), quantile.Nearest(released, .99), quantile.Nearest(apply, .5)), nil
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// capture is a packet socket in the client's namespace that records when
// each address's first gratuitous ARP arrived (the kernel's receive time).
type capture struct {
	fd int
}

func newCapture(c *netnstest.Host) (*capture, error) {
	var fd int
	err := c.Run(func() error {
		var err error
		// Not bound: the client's only link besides lo is its eth0.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Big enough for a burst of 508 addresses' two frames each.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	return &capture{fd: fd}, nil
}

func (c *capture) close() { unix.Close(c.fd) }

// reset drops what is queued.
func (c *capture) reset() {
	buf := make([]byte, 2048)
	for {
		if _, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// waitAll reads ARP frames until every address of vs was announced (an ARP
// whose sender address is it) and returns the arrival of the last one.
func (c *capture) waitAll(vs []netfloat.VIP, since time.Time, within time.Duration) (time.Time, error) {
	want := map[netip.Addr]bool{}
	for _, v := range vs {
		want[v.Prefix.Addr()] = true
	}
	var last time.Time
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	deadline := time.Now().Add(within)
	for len(want) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return last, fmt.Errorf("the client saw no announcement of %d of %d addresses within %v", len(want), len(vs), within)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return last, err
		}
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return last, err
		}
		// An ARP for IPv4 over Ethernet: the sender protocol address at 14.
		if n < 28 || binary.BigEndian.Uint16(buf[2:4]) != unix.ETH_P_IP {
			continue
		}
		spa := netip.AddrFrom4([4]byte(buf[14:18]))
		if !want[spa] {
			continue
		}
		at, ok := rxTime(oob[:oobn])
		if !ok || at.Before(since) {
			continue // left over from an earlier run
		}
		delete(want, spa)
		if at.After(last) {
			last = at
		}
	}
	return last, nil
}

// rxTime is the SCM_TIMESTAMPNS of a received frame.
func rxTime(oob []byte) (time.Time, bool) {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, cm := range cms {
		if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(cm.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(cm.Data[8:16]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
