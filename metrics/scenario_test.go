package metrics

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/schedwatch"
	"github.com/vigil-project/vigil/supervisor"
)

// The incident scenario the dashboard picture is drawn from: two nodes a
// and b, scraped every 15 s for 40 minutes. On a, the active node, an app
// runs away from minute 10 and starves the control plane (lateness, token
// rotation, pressure and run-queue wait rise; rtpengine's health check
// fails twice); at minute 20 a's node manager stops answering, the
// supervisor fences it and b takes over; a comes back as standby; at
// minute 32.5 an operator switches back to a.
const (
	scenarioStep  = 15 * time.Second
	scenarioSteps = 160
	// wakeupEvery is schedwatch's timer period.
	wakeupEvery = 10 * time.Millisecond
)

func scenarioStart() time.Time { return time.Date(2025, 3, 14, 2, 40, 0, 0, time.UTC) }

// simNode is one node's cumulative state across the scenario.
type simNode struct {
	id, instance string
	role         string // "" while its node manager does not report
	epoch        uint64
	takeovers    uint64
	last         *ctlmsg.Takeover
	holdsVIPs    bool
	fences       uint64
	restarts     map[string]int
	appsCPU      map[string]float64 // cumulative CPU seconds per app
	ctrlCPU      float64
	nmWait       float64 // node manager's cumulative run-queue wait, seconds
	nmRun        float64
	late         []uint64 // node manager's cumulative wakeups per schedwatch bucket
	lateCount    uint64
	lateSum      float64
	episodes     uint64
	rotation     float64 // seconds
	psi          float64 // percent
	announced    uint64  // GARPs sent
}

// load is what a node goes through during one step.
type load struct {
	apps   map[string]float64 // cores per app
	stress float64            // 0 = idle control plane, 1 = starved
	psi    float64            // percent
}

func newSimNode(id string, active bool) *simNode {
	n := &simNode{
		id: id, instance: "pbx-" + id + ":9720", role: "standby", epoch: 7,
		restarts: map[string]int{}, appsCPU: map[string]float64{},
		late: make([]uint64, len(schedwatch.HistogramBounds)),
	}
	if active {
		n.role, n.holdsVIPs, n.takeovers = "active", true, 1
		n.last = &ctlmsg.Takeover{Epoch: 7, AddedMS: 14, AnnouncedMS: 17.5}
	}
	return n
}

// restartNodeManager is the fence's effect: a new process with fresh
// counters.
func (n *simNode) restartNodeManager() {
	n.takeovers, n.last, n.nmWait, n.nmRun = 0, nil, 0, 0
	n.late = make([]uint64, len(schedwatch.HistogramBounds))
	n.lateCount, n.lateSum, n.episodes = 0, 0, 0
}

func (n *simNode) takeOver(epoch uint64, addedMS, announcedMS float64) {
	n.role, n.epoch, n.holdsVIPs = "active", epoch, true
	n.takeovers++
	n.last = &ctlmsg.Takeover{Epoch: epoch, AddedMS: addedMS, AnnouncedMS: announcedMS}
	n.announced += 2
}

// advance adds one step of l to the cumulative counters. Each wakeup's
// lateness is exponential with a mean that grows with the stress. The
// token visits every node, so its rotation time follows the most starved
// node in the ring (ring).
func (n *simNode) advance(l load, ring float64) {
	secs := scenarioStep.Seconds()
	for app, cores := range l.apps {
		n.appsCPU[app] += cores * secs
	}
	n.ctrlCPU += (0.02 + 0.01*l.stress) * secs
	n.psi = l.psi
	n.rotation = 0.0032 + 0.15*ring
	if n.role == "" {
		return
	}
	n.nmWait += (0.002 + 0.4*l.stress) * secs
	n.nmRun += 0.015 * secs
	mean := 0.0002 + 0.06*l.stress
	wakeups := uint64(secs / (wakeupEvery.Seconds() + mean))
	for i, b := range schedwatch.HistogramBounds {
		n.late[i] += uint64(math.Round(float64(wakeups) * (1 - math.Exp(-b.Seconds()/mean))))
	}
	n.lateCount += wakeups
	n.lateSum += float64(wakeups) * mean
	if l.stress > 0.3 {
		n.episodes++
	}
}

func (n *simNode) status(t *testing.T, now time.Time, other string) *supervisor.Status {
	t.Helper()
	st := &supervisor.Status{
		Version: "1.0.0", Cluster: "pbx", Node: n.id, Role: "node", Healthy: n.role != "",
		Supervisor:  supervisor.SupervisorState{StartedAt: scenarioStart().Add(-24 * time.Hour), RSSBytes: 14 << 20, Fences: n.fences},
		FloatingIPs: []supervisor.FloatingIP{{Address: "192.0.2.10/24", Interface: "eth0", Service: "default"}, {Address: "192.0.2.11/24", Interface: "eth0", Service: "default"}},
		Services:    []supervisor.ServiceStatus{{Name: "default"}},
	}
	started := now.Add(-time.Hour)
	for _, c := range []string{"locator", "nodemanager"} {
		ps := supervisor.ProcessStatus{Name: c, State: supervisor.StateRunning, Critical: true, Health: "none", StartedAt: &started}
		if c == "nodemanager" {
			ps.Restarts = int(n.fences)
			ps.SchedWaitMS, ps.SchedRunMS = n.nmWait*1e3, n.nmRun*1e3
			if n.role == "" {
				ps.State = supervisor.StateBackoff
			}
		}
		st.ControlPlane = append(st.ControlPlane, ps)
	}
	apps := []string{"kamailio", "rtpengine"}
	for _, a := range apps {
		st.Processes = append(st.Processes, supervisor.ProcessStatus{
			Name: a, State: supervisor.StateRunning, Health: "healthy", StartedAt: &started, Restarts: n.restarts[a],
		})
	}
	psi := n.psi
	group := func(name string, cpu float64) supervisor.GroupStatus {
		return supervisor.GroupStatus{Group: name, CPUUsageUsec: uint64(cpu * 1e6), MemoryCurrent: 200 << 20,
			PidsCurrent: 8, PressureScope: "host", CPUPressure: &psi, MemPressure: new(float64), IOPressure: new(float64)}
	}
	var appsTotal float64
	for _, a := range apps {
		appsTotal += n.appsCPU[a]
	}
	st.Groups = append(st.Groups, group("control", n.ctrlCPU), group("apps", appsTotal))
	for _, a := range apps {
		st.Groups = append(st.Groups, group("apps/"+a, n.appsCPU[a]))
	}
	peers := []ctlmsg.PeerState{{ID: n.id, Healthy: true, InRing: true}, {ID: other, Healthy: true, InRing: true}}
	slices.SortFunc(peers, func(a, b ctlmsg.PeerState) int { return strings.Compare(a.ID, b.ID) })
	loc := ctlmsg.LocatorReport{Self: n.id, Epoch: n.epoch, Nodes: []ctlmsg.NodeCheckin{{ID: "a", Seen: true, AgeMS: 20}, {ID: "b", Seen: true, AgeMS: 25}}}
	st.Locator = &loc
	if n.role == "" {
		return st
	}
	h := &schedwatch.HistogramJSON{Counts: slices.Clone(n.late), Count: n.lateCount, SumSeconds: n.lateSum}
	for _, b := range schedwatch.HistogramBounds {
		h.BoundsSeconds = append(h.BoundsSeconds, b.Seconds())
	}
	nm := ctlmsg.NodeManagerReport{
		BeatFields: ctlmsg.BeatFields{
			Self: n.id, Role: n.role, Epoch: n.epoch, LeaseValid: true, LeaseRemainingMS: 2000, LeaseMS: 200,
			HoldingToken: n.role == "active", TokenAgeMS: 5, RotationMS: n.rotation * 1e3, Healthy: true,
		},
		Peers: peers, VIPs: []string{}, Takeovers: n.takeovers, LastTakeover: n.last,
		SchedLateEpisodes: n.episodes, SchedLate: h, GARPSent: n.announced,
		Locators: []ctlmsg.LocatorAnswer{{ID: "a", Seen: true, AgeMS: 20}, {ID: "b", Seen: true, AgeMS: 20}, {ID: "w", Seen: true, AgeMS: 25}},
	}
	if n.holdsVIPs {
		nm.VIPs = []string{"192.0.2.10/24@eth0", "192.0.2.11/24@eth0"}
	}
	st.NodeManager = &nm
	return st
}

// scenarioEvents applies the events at the start of step i and returns
// what a and b go through during it.
func scenarioEvents(a, b *simNode, i int) (la, lb load) {
	quiet := func(kam, rtp float64) map[string]float64 {
		// A small deterministic wobble so lines are not flat.
		w := 1 + 0.08*math.Sin(float64(i)/3)
		return map[string]float64{"kamailio": kam * w, "rtpengine": rtp * w}
	}
	la = load{apps: quiet(0.25, 0.30), psi: 1.5}
	lb = load{apps: quiet(0.05, 0.10), psi: 1}
	switch {
	case i >= 40 && i < 80: // rtpengine runs away on a
		r := float64(i-40) / 40
		la = load{apps: quiet(0.25, 0.30+1.35*r), stress: r * r, psi: 2 + 55*r}
		if i == 55 || i == 68 {
			a.restarts["rtpengine"]++ // health check timed out under load
		}
	case i >= 80 && i < 84: // a's node manager is starved, fenced, restarted
		la = load{apps: quiet(0.05, 0.10), psi: []float64{45, 20, 8, 4}[i-80]}
		if i == 80 {
			a.role, a.holdsVIPs = "", false
		}
		if i == 81 {
			a.fences++
			a.restartNodeManager()
			a.restarts["rtpengine"]++ // and the runaway app with it
			b.takeOver(8, 19, 23.5)
		}
		if i >= 81 {
			lb = load{apps: quiet(0.25, 0.30), psi: 1.5}
		}
	case i >= 84 && i < 130:
		la = load{apps: quiet(0.05, 0.10), psi: 1}
		lb = load{apps: quiet(0.25, 0.30), psi: 1.5}
		if i == 84 {
			a.role, a.epoch = "candidate", 8
		}
		if i == 85 {
			a.role = "standby"
		}
		if i == 105 {
			b.restarts["kamailio"]++
		}
	case i >= 130: // switchover back to a
		if i == 130 {
			b.role, b.holdsVIPs = "standby", false
			a.takeOver(9, 11, 13.5)
			b.epoch = 9
		}
	}
	return la, lb
}

// scrapeSeries holds one node's scrapes, parsed, with their times.
type scrapeSeries struct {
	instance string
	at       []time.Time
	fams     []map[string]*dto.MetricFamily
}

// runScenario feeds every step's status to one collector per node, served
// by serveOn as in production, and scrapes /metrics over HTTP.
func runScenario(t *testing.T) []*scrapeSeries {
	t.Helper()
	a, b := newSimNode("a", true), newSimNode("b", false)
	type served struct {
		n   *simNode
		mu  sync.Mutex
		st  *supervisor.Status
		url string
		out *scrapeSeries
	}
	var nodes []*served
	for _, n := range []*simNode{a, b} {
		s := &served{n: n, out: &scrapeSeries{instance: n.instance}}
		s.url = serve(t, NewCollector(func(context.Context) (*supervisor.Status, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.st, nil
		}))
		nodes = append(nodes, s)
	}
	start := scenarioStart()
	for i := range scenarioSteps {
		now := start.Add(time.Duration(i) * scenarioStep)
		la, lb := scenarioEvents(a, b, i)
		ring := max(la.stress, lb.stress)
		if a.role == "" || b.role == "" {
			ring = 0 // a node manager that does not answer is out of the ring
		}
		a.advance(la, ring)
		b.advance(lb, ring)
		for _, s := range nodes {
			other := "b"
			if s.n == b {
				other = "a"
			}
			st := s.n.status(t, now, other)
			s.mu.Lock()
			s.st = st
			s.mu.Unlock()
			s.out.at = append(s.out.at, now)
			s.out.fams = append(s.out.fams, parseText(t, get(t, s.url)))
		}
	}
	out := make([]*scrapeSeries, len(nodes))
	for i, s := range nodes {
		out[i] = s.out
	}
	return out
}

// openMetrics writes the scrapes as one OpenMetrics file with timestamps
// and instance/job labels, each family once and each series' samples in
// time order, as promtool's backfill wants.
func openMetrics(t *testing.T, runs []*scrapeSeries) []byte {
	t.Helper()
	merged := map[string]*dto.MetricFamily{}
	for _, r := range runs {
		for i, fams := range r.fams {
			ts := r.at[i].UnixMilli()
			for name, mf := range fams {
				m, ok := merged[name]
				if !ok {
					m = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type}
					merged[name] = m
				}
				for _, s := range mf.GetMetric() {
					s.Label = append(s.Label,
						&dto.LabelPair{Name: ptr("instance"), Value: ptr(r.instance)},
						&dto.LabelPair{Name: ptr("job"), Value: ptr("vigil")})
					slices.SortFunc(s.Label, func(x, y *dto.LabelPair) int { return strings.Compare(x.GetName(), y.GetName()) })
					s.TimestampMs = &ts
					m.Metric = append(m.Metric, s)
				}
			}
		}
	}
	names := make([]string, 0, len(merged))
	for n := range merged {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	for _, n := range names {
		m := merged[n]
		// Stable: keeps each series' samples in time order.
		slices.SortStableFunc(m.Metric, func(x, y *dto.Metric) int {
			return strings.Compare(fmt.Sprint(labels(x)), fmt.Sprint(labels(y)))
		})
		if _, err := expfmt.MetricFamilyToOpenMetrics(&buf, m); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	buf.WriteString("# EOF\n")
	return buf.Bytes()
}

func ptr[T any](v T) *T { return &v }
