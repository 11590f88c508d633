package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// defaultTimingFor is how long `vigil check --timing` measures.
const defaultTimingFor = 30 * time.Second

// timingFigure is one measured series over the window.
type timingFigure struct {
	What     string  `json:"what"` // "nodemanager", "locator", or a locator id for a round trip
	Count    uint64  `json:"count"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	P999MS   float64 `json:"p999_ms"`
	MaxMS    float64 `json:"max_ms"`
	MaxExact bool    `json:"max_exact"` // false: max is an upper bound (its bucket's)
}

func figure(what string, w timingstat.Window) timingFigure {
	return timingFigure{What: what, Count: w.Count, P50MS: msOf(w.Quantile(0.5)), P99MS: msOf(w.Quantile(0.99)),
		P999MS: msOf(w.Quantile(0.999)), MaxMS: msOf(w.Max), MaxExact: w.MaxExact}
}

func msOf(d time.Duration) float64 { return float64(d.Round(time.Microsecond)) / 1e6 }

type timingJSON struct {
	TokenIntervalMS float64 `json:"token_interval_ms"`
	TokenTimeoutMS  float64 `json:"token_timeout_ms"`
	LeaseMS         float64 `json:"lease_ms"`
	DriftMarginMS   float64 `json:"drift_margin_ms"`
	YAML            string  `json:"yaml"`
}

func timingOf(t timingstat.Timing) timingJSON {
	return timingJSON{msOf(t.TokenInterval), msOf(t.TokenTimeout), msOf(t.Lease), msOf(t.DriftMargin), t.YAML()}
}

type ruleJSON struct {
	Field  string  `json:"field"`
	HaveMS float64 `json:"have_ms"`
	NeedMS float64 `json:"need_ms"`
	OK     bool    `json:"ok"`
	Why    string  `json:"why"`
}

// timingResult is `vigil check --timing --json`.
type timingResult struct {
	// Source: "daemon" (the running control plane measured itself) or
	// "self" (no daemon: this command's own lateness, not the control
	// plane's, and no round trips).
	Source     string         `json:"source"`
	Node       string         `json:"node"`
	MeasuredS  float64        `json:"measured_s"`
	Lateness   []timingFigure `json:"lateness"`
	RoundTrips []timingFigure `json:"round_trips"`
	// Unanswered lists the locators that answered no check-in.
	Unanswered  []string   `json:"unanswered,omitempty"`
	KernelLease bool       `json:"kernel_lease"`
	JiffyMS     float64    `json:"jiffy_ms"`
	Configured  timingJSON `json:"configured"`
	Rules       []ruleJSON `json:"rules"`
	OK          bool       `json:"ok"`
	Unknown     bool       `json:"unknown,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	Shortest    timingJSON `json:"shortest"`
	Notes       []string   `json:"notes,omitempty"`
}

// checkTiming is `vigil check --timing`: it samples the running control
// plane's own measurements (timing in its reports) over d and judges
// cfg's timing against the worst of them (timingstat.Judge).
func checkTiming(cfg *config.Config, socket string, d time.Duration, asJSON bool, stdout, stderr io.Writer) int {
	t := timingstat.Timing{TokenInterval: cfg.Cluster.Timing.TokenInterval, TokenTimeout: cfg.Cluster.Timing.TokenTimeout,
		Lease: cfg.Cluster.Timing.Lease, DriftMargin: cfg.Cluster.Timing.DriftMargin}
	res := timingResult{Node: cfg.Cluster.Node, Configured: timingOf(t)}
	m := timingstat.Measured{Nodes: len(cfg.Cluster.Nodes), Jiffy: kernelJiffy()}
	m.Quorum = protoQuorum(cfg)
	res.JiffyMS = msOf(m.Epsilon() - timingstat.KernelLeaseSlack)

	before, err := client.Call(socket, supervisor.Request{Cmd: "status"})
	switch {
	case errors.Is(err, supervisor.ErrNotRunning):
		fmt.Fprintf(stderr, "vigil check --timing: no vigil daemon answers on %s: measuring this command's own timer lateness instead.\n"+
			"  That is NOT the control plane's (this command runs in your shell's cgroup and scheduling class) and no round trip is measured:\n"+
			"  the verdict below is a lower bound at best. Start vigil and run this again for the real figures.\n", socket)
		res.Source = "self"
		w := measureSelf(t.TokenInterval/4, d)
		res.MeasuredS = d.Seconds()
		res.Lateness = []timingFigure{figure("this command", w)}
		m.Late = w.Max
		for range cfg.Cluster.Nodes {
			m.RTT = append(m.RTT, 0)
		}
		for range cfg.Cluster.Witnesses {
			m.RTT = append(m.RTT, 0)
		}
		res.Notes = append(res.Notes, "no daemon: round trips taken as 0, lateness is this command's")
	case err != nil:
		fmt.Fprintf(stderr, "vigil check --timing: %v\n", err)
		return exitFailure
	default:
		res.Source = "daemon"
		start := time.Now()
		time.Sleep(d)
		after, err := client.Call(socket, supervisor.Request{Cmd: "status"})
		if err != nil {
			fmt.Fprintf(stderr, "vigil check --timing: %v\n", err)
			return exitFailure
		}
		res.MeasuredS = time.Since(start).Round(time.Millisecond).Seconds()
		if why := fromDaemon(before.Status, after.Status, &res, &m); why != "" {
			fmt.Fprintf(stderr, "vigil check --timing: %s\n", why)
			return exitFailure
		}
		if nm := after.Status.NodeManager; nm != nil && nm.LeaseMS != 0 && nm.LeaseMS != t.Lease.Milliseconds() {
			res.Notes = append(res.Notes, fmt.Sprintf("the running node manager uses a %d ms lease, the file says %v: cluster.timing applies at the next restart", nm.LeaseMS, t.Lease))
		}
	}
	res.KernelLease = m.KernelLease
	if !m.KernelLease && res.Source == "daemon" && len(res.RoundTrips) > 0 {
		res.Notes = append(res.Notes, "no kernel lease in force (no floating IPs, or no nf_tables): the drift margin must cover the node manager's own reaction")
	}
	v := timingstat.Judge(t, m)
	res.OK, res.Unknown, res.Reason = v.OK && res.Source == "daemon", v.Unknown, v.Reason
	for _, r := range v.Rules {
		res.Rules = append(res.Rules, ruleJSON{Field: r.Field, HaveMS: msOf(r.Have), NeedMS: msOf(r.Need), OK: r.OK, Why: r.Why})
	}
	if !v.Unknown {
		res.Shortest = timingOf(v.Shortest)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		printTiming(stdout, &res, v)
	}
	if !res.OK {
		return exitFailure
	}
	return exitOK
}

// fromDaemon fills res and m from two status snapshots; it returns why
// they cannot be used, or "".
func fromDaemon(s0, s1 *supervisor.Status, res *timingResult, m *timingstat.Measured) string {
	nm0, nm1 := s0.NodeManager, s1.NodeManager
	l0, l1 := s0.Locator, s1.Locator
	if l1 == nil && nm1 == nil {
		return "the control plane has not reported yet (it starts in a lease or two): run this again"
	}
	if (nm1 != nil && nm1.Timing == nil) || (l1 != nil && l1.Timing == nil) {
		return "the running control plane reports no timing figures: it is older than this vigil (restart vigil after the upgrade)"
	}
	if nm1 != nil && (nm0 == nil || nm0.Timing == nil || nm0.Incarnation != nm1.Incarnation) ||
		l1 != nil && (l0 == nil || l0.Timing == nil || l0.Incarnation != l1.Incarnation) {
		return "the control plane restarted while measuring: run this again"
	}
	window := func(a, b timingstat.HistJSON) (timingstat.Window, bool) { return b.Sub(a) }
	if nm1 != nil {
		w, ok := window(nm0.Timing.Late, nm1.Timing.Late)
		if !ok {
			return "the node manager restarted while measuring: run this again"
		}
		res.Lateness = append(res.Lateness, figure("nodemanager", w))
		m.Late = w.Max
		m.KernelLease = nm1.KernelLease != nil && nm1.KernelLease.State == ctlmsg.KernelLeaseEnforcing
		if nm1.QuorumNeeded > 0 {
			m.Quorum = nm1.QuorumNeeded
		}
		for i, p := range nm1.Timing.RTT {
			var prev timingstat.HistJSON
			if i < len(nm0.Timing.RTT) && nm0.Timing.RTT[i].ID == p.ID {
				prev = nm0.Timing.RTT[i].RTT
			}
			w, ok := window(prev, p.RTT)
			if !ok {
				return "the node manager restarted while measuring: run this again"
			}
			res.RoundTrips = append(res.RoundTrips, figure(p.ID, w))
			if w.Count == 0 {
				res.Unanswered = append(res.Unanswered, p.ID)
				m.RTT = append(m.RTT, -1)
			} else {
				m.RTT = append(m.RTT, w.Max)
			}
		}
	}
	if l1 != nil {
		w, ok := window(l0.Timing.Late, l1.Timing.Late)
		if !ok {
			return "the locator restarted while measuring: run this again"
		}
		res.Lateness = append(res.Lateness, figure("locator", w))
		if nm1 == nil {
			// A witness: its locator's lateness is the host's; its round
			// trips are measured by the nodes.
			m.Late = w.Max
			m.RTT, m.Quorum = []time.Duration{0}, 1
			res.Notes = append(res.Notes, "a witness: only its locator's lateness is measured here; the round trips to it are measured on the nodes")
		}
	}
	return ""
}

func protoQuorum(cfg *config.Config) int {
	n := len(cfg.Cluster.Nodes) + len(cfg.Cluster.Witnesses)
	locs := make([]string, n)
	return protocol.Config{Locators: locs, TwoNode: cfg.Cluster.TwoNode}.Quorum()
}

// measureSelf is the fallback without a daemon: how late this process's
// own timer fires every period, for d.
func measureSelf(period, d time.Duration) timingstat.Window {
	var h timingstat.Hist
	tk := time.NewTicker(period)
	defer tk.Stop()
	last := time.Now()
	for end := last.Add(d); last.Before(end); {
		<-tk.C
		now := time.Now()
		h.Add(now.Sub(last) - period)
		last = now
	}
	return h.JSON().Whole()
}

var hzLine = regexp.MustCompile(`(?m)^CONFIG_HZ=(\d+)$`)

// kernelJiffy reads CONFIG_HZ from /boot/config-RELEASE; 0 (the verdict
// then assumes HZ=100) when it cannot.
func kernelJiffy() time.Duration {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return 0
	}
	b, err := os.ReadFile("/boot/config-" + unix.ByteSliceToString(u.Release[:]))
	if err != nil {
		return 0
	}
	if m := hzLine.FindSubmatch(b); m != nil {
		if hz, err := strconv.Atoi(string(m[1])); err == nil && hz > 0 {
			return time.Second / time.Duration(hz)
		}
	}
	return 0
}

func printTiming(w io.Writer, r *timingResult, v timingstat.Verdict) {
	who := "the control plane of node " + r.Node
	if r.Source == "self" {
		who = "THIS COMMAND (no daemon; not the control plane)"
	}
	fmt.Fprintf(w, "measured %s for %.1fs\n\n", who, r.MeasuredS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(f timingFigure) {
		mx := fmt.Sprintf("%.3f", f.MaxMS)
		if !f.MaxExact && f.Count > 0 {
			mx = "≤" + mx
		}
		if f.Count == 0 {
			fmt.Fprintf(tw, "  %s\t0\t-\t-\t-\t-\tno answer\n", f.What)
			return
		}
		fmt.Fprintf(tw, "  %s\t%d\t%.3f\t%.3f\t%.3f\t%s\t\n", f.What, f.Count, f.P50MS, f.P99MS, f.P999MS, mx)
	}
	fmt.Fprintln(tw, "LATENESS (ms)\tSAMPLES\tP50\tP99\tP99.9\tMAX\t")
	for _, f := range r.Lateness {
		row(f)
	}
	if len(r.RoundTrips) > 0 {
		fmt.Fprintln(tw, "ROUND TRIP check-in → ack (ms)\t\t\t\t\t\t")
		for _, f := range r.RoundTrips {
			f.What = "locator " + f.What
			row(f)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nconfigured: %s\n", r.Configured.YAML)
	kl := "no"
	if r.KernelLease {
		kl = "enforcing"
	}
	fmt.Fprintf(w, "safety factor %d on every measured figure, drift %g%%, kernel lease %s, jiffy %gms\n",
		timingstat.SafetyFactor, timingstat.AssumedDrift*100, kl, r.JiffyMS)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if v.Unknown {
		fmt.Fprintf(w, "\nverdict: cannot judge: %s\n", v.Reason)
		return
	}
	for _, rule := range v.Rules {
		mark := "ok  "
		if !rule.OK {
			mark = "LOW "
		}
		fmt.Fprintf(w, "  %s %-13s %6v  needs ≥ %v: %s\n", mark, rule.Field, rule.Have, rule.Need.Round(10*time.Microsecond), rule.Why)
	}
	switch {
	case r.Source == "self":
		fmt.Fprintln(w, "\nverdict: NOT ESTABLISHED (no daemon: the control plane was not measured)")
	case v.OK:
		fmt.Fprintln(w, "\nverdict: ok, the configured timing has enough margin on this host")
	default:
		var low []string
		for _, rule := range v.Rules {
			if !rule.OK {
				low = append(low, rule.Field)
			}
		}
		fmt.Fprintf(w, "\nverdict: TOO LITTLE MARGIN (%s)\n", strings.Join(low, ", "))
	}
	fmt.Fprintf(w, "shortest safe timing on this host (paste under cluster:, the same on every host):\n  %s\n", r.Shortest.YAML)
}
