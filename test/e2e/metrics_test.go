package e2e

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const metricsAddr = "127.0.0.1:9720" // each host's own loopback

// scrape reads host id's /metrics inside its namespace.
func scrape(n *Net, id string) (map[string]*dto.MetricFamily, error) {
	resp, err := n.HTTPClient(id).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(string(b)))
}

// value is the first sample of family name whose labels include want
// (counter, gauge, or a histogram's sample count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The incident, seen through /metrics: both nodes are scraped every 100 ms
// while the active's node manager is stalled. The scrapes show the role
// moving (old active stops being active, the standby becomes it), the
// takeover counted with its time in the histograms, and the fence counted
// on the stalled node.
func TestE2EMetricsDuringFailover(t *testing.T) {
	needTools(t, "sipp", "stress-ng", "nsenter")
	n := NewNet(t)
	v := NewVigil(t, n, VigilOptions{Bin: vigilBin, Timing: testTiming, Realtime: true, Metrics: metricsAddr})

	type sample struct {
		at     time.Time
		active bool
	}
	var mu sync.Mutex
	roles := map[string][]sample{}
	last := map[string]map[string]*dto.MetricFamily{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				for _, id := range []string{"a", "b"} {
					fams, err := scrape(n, id)
					if err != nil {
						continue // a fenced/restarting host may not answer at once
					}
					act, _ := value(fams, "vigil_role", map[string]string{"role": "active"})
					mu.Lock()
					roles[id] = append(roles[id], sample{time.Now(), act == 1})
					last[id] = fams
					mu.Unlock()
				}
			}
		}()
	}
	r := run(t, n, v, ScenarioStall, RunOptions{
		After:       4 * time.Second,
		BeforeFault: func(string) { start(); time.Sleep(300 * time.Millisecond) },
		AtEnd: func(Result) {
			time.Sleep(300 * time.Millisecond) // one more scrape of the final state
			close(stop)
			wg.Wait()
		},
	})
	checkMoved(t, r)
	from, to := r.From, Other(r.From)

	mu.Lock()
	defer mu.Unlock()
	transitions := func(id string) string {
		var b strings.Builder
		prev := -1
		for _, s := range roles[id] {
			cur := 0
			if s.active {
				cur = 1
			}
			if cur != prev {
				fmt.Fprintf(&b, "%s:%v ", s.at.Format("15:04:05.000"), s.active)
				prev = cur
			}
		}
		return b.String()
	}
	t.Logf("vigil_role{role=active} on %s: %s", from, transitions(from))
	t.Logf("vigil_role{role=active} on %s: %s", to, transitions(to))
	sawActive := func(id string, want ...bool) bool {
		i := 0
		for _, s := range roles[id] {
			if i < len(want) && s.active == want[i] {
				i++
			}
		}
		return i == len(want)
	}
	if !sawActive(from, true, false) {
		t.Errorf("scrapes of %s never showed it active and then not active", from)
	}
	if !sawActive(to, false, true) {
		t.Errorf("scrapes of %s never showed it standby and then active", to)
	}
	if tk, ok := value(last[to], "vigil_takeovers_total", nil); !ok || tk < 1 {
		t.Errorf("%s: vigil_takeovers_total = %v (present %v), want >= 1", to, tk, ok)
	}
	for _, h := range []string{"vigil_takeover_added_seconds", "vigil_takeover_announced_seconds"} {
		if c, ok := value(last[to], h, nil); !ok || c < 1 {
			t.Errorf("%s: %s has %v observations (present %v), want >= 1", to, h, c, ok)
		}
	}
	// The kernel lease stopped the stalled host serving, so its
	// supervisor left the node manager alive (the stall, 2 s, is shorter
	// than the hold, 3 s at this lease): a held fence, not a kill.
	if f, ok := value(last[from], "vigil_fences_held_total", nil); !ok || f < 1 {
		f2, _ := value(last[from], "vigil_fences_total", nil)
		t.Errorf("%s: vigil_fences_held_total = %v (present %v, vigil_fences_total %v), want >= 1 after the stall", from, f, ok, f2)
	}
	// Both nodes export the floating IP, the new active with 1 and the old
	// one with 0: a series, not an absence, so "held by no node" can fire.
	for id, want := range map[string]float64{to: 1, from: 0} {
		if h, ok := value(last[id], "vigil_floating_ip_held", map[string]string{"vip": VIP, "interface": LinkName}); !ok || h != want {
			t.Errorf("%s: vigil_floating_ip_held{vip=%q} = %v (present %v), want %v", id, VIP, h, ok, want)
		}
	}
}
