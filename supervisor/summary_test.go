package supervisor

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// Quorum counts the locators that answered within the node manager's
// lease against a majority, or 1 of 2 for a two_node pair.
func TestSummarizeQuorum(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report string
		want   *Quorum
	}{
		{"two of three fresh", `{"lease_ms":200,"peers":[{"id":"a"},{"id":"b"}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":200},{"id":"w","seen":false}]}`,
			&Quorum{Locators: 3, Answered: 2, Needed: 2, OK: true}},
		{"one fresh, one stale", `{"lease_ms":200,"peers":[{"id":"a"},{"id":"b"}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":201},{"id":"w","seen":false}]}`,
			&Quorum{Locators: 3, Answered: 1, Needed: 2, OK: false}},
		{"two_node pair", `{"lease_ms":300,"quorum_needed":1,"peers":[{"id":"a"},{"id":"b"}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":false}]}`,
			&Quorum{Locators: 2, Answered: 1, Needed: 1, OK: true}},
		// A report without lease_ms or quorum_needed (an older node
		// manager's): the default lease, a majority.
		{"one node and a witness", `{"peers":[{"id":"a"}],
			"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"w","seen":true,"age_ms":250}]}`,
			&Quorum{Locators: 2, Answered: 1, Needed: 2, OK: false}},
		{"no report", ``, nil},
	} {
		st := &Status{}
		if tc.report != "" {
			st.NodeManager = reportOf(t, tc.report)
		}
		st.Summarize()
		if (st.Quorum == nil) != (tc.want == nil) || (st.Quorum != nil && *st.Quorum != *tc.want) {
			t.Errorf("%s: quorum %+v, want %+v", tc.name, st.Quorum, tc.want)
		}
		hasNoQuorum := slices.ContainsFunc(st.Warnings, func(w Warning) bool { return w.Kind == "no_quorum" })
		if hasNoQuorum != (tc.want != nil && !tc.want.OK) {
			t.Errorf("%s: warnings %q", tc.name, st.Warnings)
		}
		if st.Warnings == nil {
			t.Errorf("%s: warnings nil, want [] so that --json always has the key", tc.name)
		}
	}
}

// The node manager's and the locator's realtime refusals are warnings;
// the same refusal for both is one line.
func TestSummarizeRealtime(t *testing.T) {
	st := &Status{
		NodeManager: reportOf(t, `{"realtime":{"degraded":["SCHED_RR: operation not permitted","mlockall: cannot allocate memory"]}}`),
		Locator:     locReportOf(t, `{"realtime":{"degraded":["SCHED_RR: operation not permitted","oom_score_adj: permission denied"]}}`),
	}
	st.Summarize()
	var got []string
	for _, w := range st.Warnings {
		if w.Kind == "realtime_degraded" {
			got = append(got, w.Message)
		}
	}
	want := []string{
		"node manager, locator: SCHED_RR: operation not permitted",
		"node manager: mlockall: cannot allocate memory",
		"locator: oom_score_adj: permission denied",
	}
	if !slices.Equal(got, want) {
		t.Errorf("realtime warnings:\n got %q\nwant %q", got, want)
	}
}

// A conflict warns, naming the address and the MAC, for ten minutes after
// it was last seen; an older one, or a count without a last one, does not.
func TestSummarizeConflictIsRecent(t *testing.T) {
	for _, tc := range []struct {
		name, report, want string
	}{
		{"recent", `{"ip_conflicts":3,"last_conflict":{"vip":"192.0.2.100/24@eth0","mac":"52:54:00:12:34:56","age_ms":61400}}`,
			"another host (52:54:00:12:34:56) answered for our floating IP 192.0.2.100/24@eth0 1m1s ago, 3 times since the node manager started (journalctl -u vigil EVENT=vip_conflict)"},
		{"old", `{"ip_conflicts":3,"last_conflict":{"vip":"192.0.2.100/24@eth0","mac":"52:54:00:12:34:56","age_ms":600000}}`, ""},
		{"none", `{"ip_conflicts":0}`, ""},
	} {
		st := &Status{NodeManager: reportOf(t, tc.report)}
		st.Summarize()
		got := ""
		for _, w := range st.Warnings {
			if w.Kind == "vip_conflict" {
				got = w.Message
			}
		}
		if got != tc.want {
			t.Errorf("%s: warning %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A state file that cannot be written (a full disk) is a warning for as
// long as it lasts, naming the process and the error.
func TestSummarizePersistFailing(t *testing.T) {
	st := &Status{
		NodeManager: reportOf(t, `{"persist_failing":true,"persist_error":"statefile: write /var/lib/vigil/.node.state.1: no space left on device"}`),
		Locator:     locReportOf(t, `{"persist_failing":false,"persist_errors":3}`),
	}
	st.Summarize()
	var got []string
	for _, w := range st.Warnings {
		if w.Kind == "persist_failing" {
			got = append(got, w.Message)
		}
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "node manager cannot write its state file") || !strings.HasSuffix(got[0], "no space left on device") {
		t.Fatalf("persist warnings %q", got)
	}
}

// A kernel lease that is not enforced (no nf_tables, or programming it
// fails) is a warning naming why; an enforcing one, or a node without VIPs
// (no kernel_lease in its report), is none.
func TestSummarizeKernelLease(t *testing.T) {
	for _, c := range []struct {
		report string
		warn   bool
	}{
		{`{"kernel_lease":{"state":"unavailable","reason":"netfloat: kernel lease unavailable (nf_tables): protocol not supported"}}`, true},
		{`{"kernel_lease":{"state":"failing","reason":"program the kernel lease: no buffer space"}}`, true},
		{`{"kernel_lease":{"state":"enforcing","applies":12}}`, false},
		{`{}`, false},
	} {
		st := &Status{NodeManager: reportOf(t, c.report)}
		st.Summarize()
		var got []string
		for _, w := range st.Warnings {
			if w.Kind == "kernel_lease" {
				got = append(got, w.Message)
			}
		}
		if c.warn != (len(got) == 1) || len(got) > 1 {
			t.Fatalf("%s: kernel_lease warnings %q", c.report, got)
		}
		if c.warn && !strings.Contains(got[0], "address lifetime") {
			t.Fatalf("%s: warning %q does not say what it means", c.report, got[0])
		}
	}
}

// locReportOf is the locator report in js.
func locReportOf(t *testing.T, js string) *ctlmsg.LocatorReport {
	t.Helper()
	var r ctlmsg.LocatorReport
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &r
}

// A process whose lateness ate more than control.lateness_warn_share of
// the lease within the last 10 s is a timing_margin warning naming its
// worst and the level; one without the warning, or an older one reporting
// no timing, is none.
func TestSummarizeTimingMargin(t *testing.T) {
	st := &Status{
		NodeManager: reportOf(t, `{"timing":{"late":{"count":10,"sum_seconds":0,"max_seconds":0.02,"counts":[]},"warning":true,"warn_episodes":1,"warn_ms":15,"recent_max_late_ms":21.4}}`),
		Locator:     locReportOf(t, `{"timing":{"late":{"count":10,"sum_seconds":0,"max_seconds":0.001,"counts":[]},"warning":false,"warn_ms":15,"recent_max_late_ms":1}}`),
	}
	st.Summarize()
	var got []string
	for _, w := range st.Warnings {
		if w.Kind == "timing_margin" {
			got = append(got, w.Message)
		}
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "node manager ran 21 ms late within the last 10 s: more than the 15 ms") {
		t.Fatalf("timing_margin warnings %q", got)
	}
	st = &Status{NodeManager: reportOf(t, `{}`), Locator: locReportOf(t, `{}`)}
	st.Summarize()
	for _, w := range st.Warnings {
		if w.Kind == "timing_margin" {
			t.Errorf("a report without timing warned: %q", w.Message)
		}
	}
}

// A service after the first that has no quorum, or whose node manager
// cannot persist, is warned of by name; its holder is its own node
// manager's active, not the first service's.
func TestSummarizeSecondService(t *testing.T) {
	st := &Status{
		NodeManager: reportOf(t, `{"role":"active","active":"a","lease_ms":200,"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":3},{"id":"w","seen":true,"age_ms":3}]}`),
		Services: []ServiceStatus{{Name: "voice"}, {Name: "data",
			NodeManager: reportOf(t, `{"role":"standby","active":"b","lease_ms":200,"persist_failing":true,"persist_error":"disk full",
				"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":false},{"id":"w","seen":true,"age_ms":500}]}`)}},
	}
	st.Summarize()
	if st.Services[0].Holder != "a" || st.Services[1].Holder != "b" {
		t.Errorf("holders %q, %q, want a, b", st.Services[0].Holder, st.Services[1].Holder)
	}
	var got []string
	for _, w := range st.Warnings {
		got = append(got, w.Kind+": "+w.Message)
	}
	for _, want := range []string{"no_quorum: service data: no quorum: 1 of 3", "persist_failing: service data: node manager cannot write its state file"} {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, want) }) {
			t.Errorf("no warning %q in %q", want, got)
		}
	}
	if slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, "no_quorum: no quorum") }) {
		t.Errorf("the first service warned of no quorum: %q", got)
	}
}

// No quorum while the peers' datagrams carry another cluster's tag (a
// host with another key, cluster name or services list): the warning says
// what to compare. The drops may be the node manager's or the service's
// locator's: an active of another cluster renews with this host's locator
// all the time but may never send to this node manager (it is not in its
// ring). Without such drops, or with a quorum, it does not.
func TestNoQuorumNamesForeignDatagrams(t *testing.T) {
	const noQuorum = `"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":false},{"id":"w","seen":false}]`
	const quorum = `"locators":[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":3},{"id":"w","seen":false}]`
	for _, tc := range []struct {
		name, locators, dropped, locDropped string
		hint                                bool
	}{
		{"kernel filter", noQuorum, `{"kernel_tag":40}`, `{}`, true},
		{"userspace", noQuorum, `{"cluster":3}`, `{}`, true},
		{"at the locator only", noQuorum, `{}`, `{"kernel_tag":12}`, true},
		{"other drops", noQuorum, `{"auth":3}`, `{"stranger":2}`, false},
		{"quorum", quorum, `{"kernel_tag":40}`, `{"cluster":5}`, false},
	} {
		rep := func() string {
			return `{"role":"standby","lease_ms":200,` + tc.locators + `,"transport":{"dropped":` + tc.dropped + `}}`
		}
		loc := func() *ctlmsg.LocatorReport {
			return locReportOf(t, `{"transport":{"dropped":`+tc.locDropped+`}}`)
		}
		st := &Status{NodeManager: reportOf(t, rep()), Locator: loc(),
			Services: []ServiceStatus{{Name: "voice"}, {Name: "data", NodeManager: reportOf(t, rep()), Locator: loc()}}}
		st.Summarize()
		n := 0
		for _, w := range st.Warnings {
			if w.Kind == "no_quorum" && strings.Contains(w.Message, "another cluster's") && strings.Contains(w.Message, "services' names and order") {
				n++
			}
		}
		if want := map[bool]int{true: 2, false: 0}[tc.hint]; n != want {
			t.Errorf("%s: %d no_quorum warnings name the foreign datagrams, want %d: %+v", tc.name, n, want, st.Warnings)
		}
	}
}
