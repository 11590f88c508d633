package metrics

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/supervisor"
)

// The series the alerts in packaging/prometheus/vigil-rules.yml need: they
// must exist whatever the state, or the alert cannot fire.

// floatingSeries returns vigil_floating_ip_held as "vip interface" -> value.
func floatingSeries(t *testing.T, st *supervisor.Status) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	mf, ok := scrape(t, NewCollector(staticSource(st)))["vigil_floating_ip_held"]
	if !ok {
		return out
	}
	for _, m := range mf.GetMetric() {
		ls := labels(m)
		out[ls["vip"]+" "+ls["interface"]] = m.GetGauge().GetValue()
	}
	return out
}

func withNodeManager(t *testing.T, st *supervisor.Status, r *ctlmsg.NodeManagerReport) {
	t.Helper()
	if r == nil {
		st.NodeManager = nil
		return
	}
	st.NodeManager = r
}

// TestFloatingIPHeldIsZeroWhenNotHeld: every configured address is
// exported, 1 where held and 0 where not, so "held by no node" is a sum of
// zeros rather than an absent series (the defect: only held addresses
// were exported, so that alert could never fire).
func TestFloatingIPHeldIsZeroWhenNotHeld(t *testing.T) {
	configured := []supervisor.FloatingIP{
		{Address: "192.0.2.10/24", Interface: "eth0"},
		{Address: "2001:db8::10/64", Interface: "eth1"},
	}
	base := func() *supervisor.Status {
		return &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node", FloatingIPs: configured}
	}
	for _, c := range []struct {
		name string
		nm   *ctlmsg.NodeManagerReport
		want map[string]float64
	}{
		{"active holds both", &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "active"}, VIPs: []string{"192.0.2.10/24@eth0", "2001:db8::10/64@eth1"}},
			map[string]float64{"192.0.2.10 eth0": 1, "2001:db8::10 eth1": 1}},
		{"standby holds none", &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby"}, VIPs: []string{}},
			map[string]float64{"192.0.2.10 eth0": 0, "2001:db8::10 eth1": 0}},
		{"draining one", &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby"}, VIPs: []string{"2001:db8::10/64@eth1"}},
			map[string]float64{"192.0.2.10 eth0": 0, "2001:db8::10 eth1": 1}},
		{"no node manager report", nil,
			map[string]float64{"192.0.2.10 eth0": 0, "2001:db8::10 eth1": 0}},
		{"held but no longer configured (reload)", &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "active"}, VIPs: []string{"192.0.2.10/24@eth0", "198.51.100.7/24@eth0"}},
			map[string]float64{"192.0.2.10 eth0": 1, "2001:db8::10 eth1": 0, "198.51.100.7 eth0": 1}},
	} {
		st := base()
		withNodeManager(t, st, c.nm)
		if got := floatingSeries(t, st); !mapsEqual(got, c.want) {
			t.Errorf("%s: vigil_floating_ip_held %v, want %v", c.name, got, c.want)
		}
	}
	// A witness configures none and exports none.
	w := &supervisor.Status{Cluster: "pbx", Node: "w", Role: "witness"}
	if got := floatingSeries(t, w); len(got) != 0 {
		t.Errorf("witness: vigil_floating_ip_held %v, want none", got)
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestQuorumExported: vigil status's quorum as metrics, present with a node
// manager report, absent on a witness.
func TestQuorumExported(t *testing.T) {
	st := &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node"}
	withNodeManager(t, st, &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby", LeaseMS: 200},
		Peers: []ctlmsg.PeerState{{ID: "a"}, {ID: "b"}},
		Locators: []ctlmsg.LocatorAnswer{
			{ID: "a", Seen: true, AgeMS: 20}, {ID: "b", Seen: true, AgeMS: 900}, {ID: "w", Seen: false},
		}})
	fams := scrape(t, NewCollector(staticSource(st)))
	for name, want := range map[string]float64{
		"vigil_quorum_ok": 0, "vigil_quorum_locators": 3,
		"vigil_quorum_locators_answered": 1, "vigil_quorum_locators_needed": 2,
	} {
		if v := value(t, fams, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	// The same status summarized by the supervisor gives the same answer.
	st.Summarize()
	if v := value(t, scrape(t, NewCollector(staticSource(st))), "vigil_quorum_ok"); v != 0 {
		t.Errorf("summarized: vigil_quorum_ok = %v", v)
	}
	w := &supervisor.Status{Cluster: "pbx", Node: "w", Role: "witness"}
	if _, ok := scrape(t, NewCollector(staticSource(w)))["vigil_quorum_ok"]; ok {
		t.Error("a witness exports vigil_quorum_ok")
	}
}

// TestProcessStateExported: every state is a series, 1 for the current one,
// so that FATAL can be alerted on.
func TestProcessStateExported(t *testing.T) {
	st := &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node", Processes: []supervisor.ProcessStatus{
		{Name: "kamailio", State: supervisor.StateFatal}, {Name: "rtpengine", State: supervisor.StateRunning},
	}}
	fams := scrape(t, NewCollector(staticSource(st)))
	for _, s := range processStates {
		want := b2f(s == supervisor.StateFatal)
		if v := value(t, fams, "vigil_process_state", "process", "kamailio", "group", "apps", "state", string(s)); v != want {
			t.Errorf("kamailio state %s = %v, want %v", s, v, want)
		}
	}
	if v := value(t, fams, "vigil_process_state", "process", "rtpengine", "state", "running"); v != 1 {
		t.Errorf("rtpengine running = %v", v)
	}
}

// TestAuthDropsStartAtZero: the auth drop counter exists before the first
// drop, so rate() sees the first burst.
func TestAuthDropsStartAtZero(t *testing.T) {
	st := &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node"}
	withNodeManager(t, st, &ctlmsg.NodeManagerReport{BeatFields: ctlmsg.BeatFields{Role: "standby"}, Transport: transport.Stats{Dropped: map[string]uint64{"short": 2}}})
	fams := scrape(t, NewCollector(staticSource(st)))
	if v := value(t, fams, "vigil_datagrams_dropped_total", "process", "nodemanager", "reason", "auth"); v != 0 {
		t.Errorf("auth drops = %v, want 0", v)
	}
	if v := value(t, fams, "vigil_datagrams_dropped_total", "process", "nodemanager", "reason", "short"); v != 2 {
		t.Errorf("short drops = %v, want 2", v)
	}
}

// TestNodeInfoSurvivesScrapeError: after one good snapshot, a failed one
// still names the cluster and node, which the scrape-error alert joins on.
func TestNodeInfoSurvivesScrapeError(t *testing.T) {
	var mu sync.Mutex
	fail := false
	c := NewCollector(func(context.Context) (*supervisor.Status, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return nil, errors.New("supervisor loop busy")
		}
		return &supervisor.Status{Cluster: "pbx", Node: "a", Role: "node"}, nil
	})
	url := serve(t, c)
	if v := value(t, parseText(t, get(t, url)), "vigil_node_info", "cluster", "pbx", "node", "a"); v != 1 {
		t.Fatalf("vigil_node_info = %v", v)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	fams := parseText(t, get(t, url))
	if v := value(t, fams, "vigil_scrape_error"); v != 1 {
		t.Fatalf("vigil_scrape_error = %v", v)
	}
	if v := value(t, fams, "vigil_node_info", "cluster", "pbx", "node", "a"); v != 1 {
		t.Fatalf("after a failed snapshot: vigil_node_info = %v", v)
	}
	var names []string
	for n := range fams {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"vigil_build_info", "vigil_node_info", "vigil_scrape_error"}) {
		t.Errorf("a failed snapshot emitted %v", names)
	}
}
