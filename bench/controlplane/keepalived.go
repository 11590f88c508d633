package main

import (
	"context"
	"fmt"
	"github.com/vigil-project/vigil/bench/internal/quantile"
	"os"
	"slices"
	"time"

	"github.com/vigil-project/vigil/test/e2e"
)

// measureKeepalived runs keepalived on nodes a and b of an e2e network, as
// bench/failover does (VRRPv3 multicast adverts every advert, SCHED_RR,
// memory locked, a 1 s track script), and measures its processes at idle
// the way measure does Vigil's: the run time of each process's threads
// over nsamples windows. The VRRP process of the master sends the adverts
// and that of the backup receives them: they are what Vigil's node
// managers are compared with. Check scripts live for milliseconds and are
// not counted (Vigil's health checks are not running in its measurement
// either).
func measureKeepalived(ctx context.Context, advert, window time.Duration, nsamples int) (string, error) {
	label := fmt.Sprintf("system=keepalived advert_ms=%d", advert.Milliseconds())
	fmt.Printf("--- %s\n", label)
	type kproc struct {
		host, role, name string
		pid              int
		cpu, rss         []float64
		restarts         int
	}
	var summary string
	r := e2e.NewRunner(os.Stderr)
	err := r.Do(func(t e2e.TB) {
		n := e2e.NewNet(t)
		k := e2e.NewKeepalived(t, n, advert)
		if err := k.Start(); err != nil {
			t.Fatalf("%v", err)
		}
		if err := sleepCtx(ctx, 3*time.Second); err != nil {
			t.Fatalf("%v", err)
		}
		// find lists the long-lived processes of keepalived on both nodes:
		// the VRRP process and keepalived's parent.
		find := func() ([]*kproc, error) {
			var ps []*kproc
			for _, h := range []string{"a", "b"} {
				role := "backup"
				if h == "a" {
					role = "master"
				}
				vrrp, err := k.VRRPPid(h)
				if err != nil {
					return nil, err
				}
				all, err := k.Pids(h)
				if err != nil {
					return nil, err
				}
				ps = append(ps, &kproc{host: h, role: role, name: "vrrp", pid: vrrp})
				for _, pid := range all {
					if pid != vrrp && isKeepalived(pid) {
						ps = append(ps, &kproc{host: h, role: role, name: "keepalived-other", pid: pid})
					}
				}
			}
			return ps, nil
		}
		procs, err := find()
		if err != nil {
			t.Fatalf("%v", err)
		}
		holder0 := n.Holder()
		win := window / time.Duration(nsamples)
		for i := 0; i < nsamples; i++ {
			start := map[*kproc]int64{}
			for _, p := range procs {
				start[p], _ = runNS(p.pid)
			}
			t0 := time.Now()
			if err := sleepCtx(ctx, win); err != nil {
				t.Fatalf("%v", err)
			}
			el := time.Since(t0)
			for _, p := range procs {
				v, err := runNS(p.pid)
				if err != nil {
					p.restarts++ // gone: keepalived restarted its child?
					continue
				}
				p.cpu = append(p.cpu, 100*float64(v-start[p])/float64(el.Nanoseconds()))
				rss, _ := vmRSSKiB(p.pid)
				p.rss = append(p.rss, float64(rss)/1024)
			}
		}
		var vrrpMax float64
		for _, p := range procs {
			cs, rs := slices.Clone(p.cpu), slices.Clone(p.rss)
			slices.Sort(cs)
			slices.Sort(rs)
			fmt.Printf("bench=controlplane %s host=%s role=%s proc=%s sched=%s rss_idle_mib=%.1f cpu_pct_p50=%.3f cpu_pct_p99=%.3f windows=%d restarts=%d window_s=%.0f\n",
				label, p.host, p.role, p.name, schedOf(p.pid), quantile.Nearest(rs, .5), quantile.Nearest(cs, .5), quantile.Nearest(cs, .99), len(cs), p.restarts, win.Seconds())
			if p.name == "vrrp" && len(cs) > 0 {
				vrrpMax = max(vrrpMax, quantile.Nearest(cs, .5))
			}
		}
		moved := 0
		if h := n.Holder(); h != holder0 {
			moved = 1
		}
		summary = fmt.Sprintf("bench=controlplane %s vrrp_cpu_pct_p50_max=%.3f windows=%d window_s=%.0f moved=%d failed=0",
			label, vrrpMax, nsamples, win.Seconds(), moved)
	})
	if err != nil {
		return "", err
	}
	return summary, nil
}

// isKeepalived says whether pid runs keepalived itself, not a script it
// started.
func isKeepalived(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && string(b) == "keepalived\n"
}
