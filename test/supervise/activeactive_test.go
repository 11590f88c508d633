package supervise

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/netnstest"
)

// pairVIPs are the floating IPs of the pair's services: voice and data,
// and fax and video for a cluster of four.
var pairVIPs = map[string]netip.Addr{
	"voice": netip.MustParseAddr("192.0.2.100"),
	"data":  netip.MustParseAddr("192.0.2.101"),
	"fax":   netip.MustParseAddr("192.0.2.104"),
	"video": netip.MustParseAddr("192.0.2.105"),
}

// activePair is two nodes and a witness, each a `vigil supervise` in its
// own namespace, with two services: voice (prefers a, needs voiceapp) and
// data (prefers b, needs dataapp). A sampler records every moment two
// live hosts have the same service's address.
type activePair struct {
	t     *testing.T
	net   *netnstest.Net
	nodes map[string]*daemon
	dir   string   // the apps' failure switches: <dir>/<host>-<service>-fail
	svcs  []string // the services the sampler watches: a's, at the start

	mu   sync.Mutex
	dead map[string]bool
	// longestDual is the longest run of samples with two live holders, by
	// service: a planned move (switchover, an unhealthy active's
	// handover) keeps the address on the old active, refused by its
	// kernel and unannounced, until the successor announced it
	// (nodemanager/drain.go), never past the old lease.
	longestDual map[string]time.Duration
}

func newActivePair(t *testing.T) *activePair {
	t.Helper()
	return newActivePairWith(t, func(string) []string { return []string{"voice", "data"} })
}

// newActivePairOrdered is newActivePair with host reversed listing the
// services in the other order (data, then voice): a mistake.
func newActivePairOrdered(t *testing.T, reversed string) *activePair {
	t.Helper()
	return newActivePairWith(t, func(id string) []string {
		if id == reversed {
			return []string{"data", "voice"}
		}
		return []string{"voice", "data"}
	})
}

// newActivePairWith starts the pair with each host's services (names of
// pairVIPs, in file order) as services says.
func newActivePairWith(t *testing.T, services func(id string) []string) *activePair {
	t.Helper()
	needRoot(t)
	n := netnstest.New(t,
		netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"},
		netnstest.HostSpec{Name: "b", Addr: "192.0.2.12/24"},
		netnstest.HostSpec{Name: "w", Addr: "192.0.2.13/24"},
	)
	p := &activePair{t: t, net: n, nodes: newPeers(t, "a", "b", "w"), dir: t.TempDir(), svcs: services("a"),
		dead: map[string]bool{}, longestDual: map[string]time.Duration{}}
	for _, id := range []string{"a", "b", "w"} {
		d := p.nodes[id]
		d.wrap = []string{"nsenter", "--net=/run/netns/" + n.Hosts[id].NSName}
		// Inside the host's own namespace: any port is free.
		d.metrics = pairMetrics
		p.configure(id, services(id))
	}
	for _, id := range []string{"a", "b", "w"} {
		p.nodes[id].start()
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		since := map[string]time.Time{}
		for {
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for _, svc := range p.svcs {
				if len(p.holders(svc)) < 2 {
					delete(since, svc)
					continue
				}
				if since[svc].IsZero() {
					since[svc] = time.Now()
				}
				p.mu.Lock()
				p.longestDual[svc] = max(p.longestDual[svc], time.Since(since[svc]))
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(quit)
		<-done
	})
	return p
}

// pairServices are the services of the pair as a node's file has them.
var pairServices = map[string]string{
	"voice": fmt.Sprintf(`  - name: voice
    vips: [{address: %s/24, interface: %s}]
    processes: [voiceapp]
    prefer: [a, b]
`, pairVIPs["voice"], netnstest.LinkName),
	"data": fmt.Sprintf(`  - name: data
    vips: [{address: %s/24, interface: %s}]
    processes: [dataapp]
    prefer: [b, a]
`, pairVIPs["data"], netnstest.LinkName),
	"fax": fmt.Sprintf(`  - name: fax
    vips: [{address: %s/24, interface: %s}]
    processes: [voiceapp]
    prefer: [a, b]
`, pairVIPs["fax"], netnstest.LinkName),
	"video": fmt.Sprintf(`  - name: video
    vips: [{address: %s/24, interface: %s}]
    processes: [dataapp]
    prefer: [b, a]
`, pairVIPs["video"], netnstest.LinkName),
}

// configure writes host id's file with svcs, in that order: on a node,
// both applications run whichever services it lists; the witness lists the
// services by name.
func (p *activePair) configure(id string, svcs []string) {
	p.t.Helper()
	d := p.nodes[id]
	addrs := map[string]string{"a": "192.0.2.11:7400", "b": "192.0.2.12:7400", "w": "192.0.2.13:7400"}
	d.cluster = pairYAML("duo", id, d, addrs)
	d.extra = "services:\n"
	procs := ""
	for _, svc := range svcs {
		if id == "w" {
			// The witness's locator serves each service it lists.
			d.extra += "  - {name: " + svc + "}\n"
		} else {
			d.extra += pairServices[svc]
		}
	}
	if id != "w" {
		for _, app := range []string{"voice", "data"} {
			procs += fmt.Sprintf(`
  - name: %sapp
    command: [/bin/sleep, "3600"]
    health:
      exec: [/bin/sh, -c, "test ! -e %s"]
      interval: 300ms
      timeout: 250ms
      rise: 1
      fall: 2
`, app, filepath.Join(p.dir, id+"-"+app+"-fail"))
		}
	}
	d.writeConfig(procs)
}

// pairMetrics is where each host's supervisor serves its metrics, in that
// host's namespace.
const pairMetrics = "127.0.0.1:9720"

// scrape returns host's /metrics, fetched over a connection opened in its
// namespace (a socket belongs to the namespace of the thread that made
// it, so the dial is done there and the HTTP exchange outside).
func (p *activePair) scrape(host string) string {
	p.t.Helper()
	var conn net.Conn
	if err := p.net.Hosts[host].Run(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", pairMetrics, 5*time.Second)
		return err
	}); err != nil {
		p.t.Fatalf("metrics of %s: %v", host, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		p.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", pairMetrics); err != nil {
		p.t.Fatalf("metrics of %s: %v", host, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		p.t.Fatalf("metrics of %s: %v", host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		p.t.Fatalf("metrics of %s: %s %v", host, resp.Status, err)
	}
	return string(body)
}

// holders are the live hosts that have the service's address.
func (p *activePair) holders(svc string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var hs []string
	for _, id := range []string{"a", "b"} {
		if !p.dead[id] && p.net.Hosts[id].HasAddr(pairVIPs[svc]) {
			hs = append(hs, id)
		}
	}
	return hs
}

// placed reports whether each service's address is on exactly the host
// want names, and nowhere else alive.
func (p *activePair) placed(want map[string]string) bool {
	for svc, host := range want {
		if hs := p.holders(svc); len(hs) != 1 || hs[0] != host {
			return false
		}
	}
	return true
}

// waitPlaced waits until the addresses are where want says, and the
// service's holder as host reports it agrees.
func (p *activePair) waitPlaced(what string, want map[string]string, reporter string) {
	p.t.Helper()
	p.nodes[reporter].waitFor(what, 30*time.Second, func() bool {
		if !p.placed(want) {
			return false
		}
		st := p.nodes[reporter].status()
		for _, s := range st.Services {
			if s.Holder != want[s.Name] {
				return false
			}
		}
		return true
	})
}

// switchover moves svc to node to from host, again while the token has
// not yet shown to fit (it just came back, or just got healthy).
func (p *activePair) switchover(host, svc, to string) {
	p.t.Helper()
	p.vigilUntilDone(host, "switchover", svc, "--to", to)
}

// switchoverPreferred runs `vigil switchover --preferred` on host and
// returns its output, trying again as switchover does.
func (p *activePair) switchoverPreferred(host string) string {
	p.t.Helper()
	return p.vigilUntilDone(host, "switchover", "--preferred")
}

// vigilUntilDone runs a switchover command on host until it succeeds, for
// up to 20 s, and returns the output of every try. It tries again only
// on the CLI's own advice when the role is on the old active in a newer
// epoch. Seen once in CI on the just-formed cluster: the active had
// regenerated the token 12 ms before the request and refused it as made
// in the epoch before. The node manager now sends such a request again
// (protocol: forwardAgain); a target that just started can still miss a
// handover.
func (p *activePair) vigilUntilDone(host string, args ...string) string {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	all := ""
	for {
		out, code := p.nodes[host].vigil(append(args, "--socket", p.nodes[host].socket)...)
		all += out
		if code == 0 {
			return all
		}
		if time.Now().After(deadline) || !strings.Contains(out, "no healthy standby") && !strings.Contains(out, "try again") {
			p.t.Fatalf("%s on %s: exit %d: %s", strings.Join(args, " "), host, code, out)
		}
		p.t.Logf("%s: %s; trying again", strings.Join(args, " "), strings.TrimSpace(out))
		time.Sleep(100 * time.Millisecond)
	}
}

// ranPastLease returns how late the node manager of svc said it ran, in
// log (event=timing_margin), when that was past its lease: a node manager
// that stalls that long loses the lease by design, whatever else happens.
func ranPastLease(log, svc string) (float64, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"event":"timing_margin"`) || !strings.Contains(line, `"service":"`+svc+`"`) {
			continue
		}
		var e struct {
			Late  float64 `json:"late_ms"`
			Lease float64 `json:"lease_ms"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &e) == nil && e.Lease > 0 && e.Late >= e.Lease {
			return e.Late, true
		}
	}
	return 0, false
}

// waitSettled waits until voice and data are each held by one node and
// followed by the other.
func (p *activePair) waitSettled() {
	p.t.Helper()
	p.nodes["a"].waitFor("both services held, each followed by the other node", 30*time.Second, func() bool {
		if len(p.holders("voice")) != 1 || len(p.holders("data")) != 1 {
			return false
		}
		for svc, i := range map[string]int{"voice": 0, "data": 1} {
			other := map[string]string{"a": "b", "b": "a"}[p.holders(svc)[0]]
			st := p.nodes[other].status()
			if r := st.Report(i); r == nil || r.Role != "standby" || r.Active == "" || !r.Healthy {
				return false
			}
		}
		return true
	})
}

// watchHolder samples, until the returned function is called, whether the
// service's address is on host alone; that function returns the samples
// in which it was not.
func (p *activePair) watchHolder(svc, host string) func() int {
	quit, done := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-quit:
				done <- n
				return
			case <-time.After(2 * time.Millisecond):
			}
			if hs := p.holders(svc); len(hs) != 1 || hs[0] != host {
				n++
			}
		}
	}()
	return func() int { close(quit); return <-done }
}

// checkDual fails if two live hosts held a service's address for a lease
// in a row (testTiming's 600 ms): longer than any planned move's drain.
func (p *activePair) checkDual() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for svc, d := range p.longestDual {
		p.t.Logf("%s: two live hosts held %s for at most %v in a row", svc, pairVIPs[svc], d.Round(time.Millisecond))
		if d >= 600*time.Millisecond {
			p.t.Errorf("%s: two live hosts held %s for %v in a row, a lease or more", svc, pairVIPs[svc], d)
		}
	}
}

// An active/active pair: voice on a, data on b, each the other's standby.
// An application failure moves only the service that needs it; the death
// of a host moves exactly the service it held; a host that comes back
// takes nothing back (no failback); a switchover moves one service;
// maintenance moves every service off the node.
func TestActiveActivePair(t *testing.T) {
	p := newActivePair(t)
	home := map[string]string{"voice": "a", "data": "b"}
	// Whoever came up first holds both (no failback), or, when both came
	// up together, each may be home already.
	p.waitSettled()
	// `vigil switchover --preferred` moves the one not on its most
	// preferred node, and leaves the other; run again, it moves nothing.
	// It decides from a's reports, which may be a second old: wait until
	// they show both nodes fit for both services.
	bFit := func() bool {
		st := p.nodes["a"].status()
		for i := range 2 {
			r := st.Report(i)
			if r == nil || !slices.ContainsFunc(r.Peers, func(pe ctlmsg.PeerState) bool { return pe.ID == "b" && pe.Healthy && pe.InRing }) {
				return false
			}
		}
		return true
	}
	p.nodes["a"].waitFor("a's node managers report b healthy and in the ring", 10*time.Second, bFit)
	// Both on a first, so that --preferred has one to move.
	for _, svc := range []string{"voice", "data"} {
		if hs := p.holders(svc); len(hs) != 1 || hs[0] != "a" {
			p.switchover("a", svc, "a")
		}
	}
	p.waitPlaced("both services on a", map[string]string{"voice": "a", "data": "a"}, "a")
	p.nodes["a"].waitFor("a's node managers report b healthy and in the ring again", 10*time.Second, bFit)
	out := p.switchoverPreferred("a")
	p.waitPlaced("voice on a and data on b", home, "a")
	if !strings.Contains(out, "voice: ") || !strings.Contains(out, "data: ") || !strings.Contains(out, "from ") {
		t.Errorf("switchover --preferred on a: %s; want a line for voice and data, one of them moved", out)
	}
	p.nodes["b"].waitFor("b's node managers report voice on a and data held here", 10*time.Second, func() bool {
		st := p.nodes["b"].status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && r0.Active == "a" && r1.Role == "active"
	})
	if out, code := p.nodes["b"].vigil("switchover", "--preferred", "--socket", p.nodes["b"].socket); code != 0 ||
		!strings.Contains(out, "voice: on a, its most preferred fit node") || !strings.Contains(out, "data: on b, its most preferred fit node") {
		t.Errorf("switchover --preferred on b with both home: exit %d: %s; want both left", code, out)
	}

	st := p.nodes["b"].status()
	if len(st.Services) != 2 || st.Services[0].Name != "voice" || st.Services[1].Name != "data" {
		t.Fatalf("b's services: %+v", st.Services)
	}
	if got := strings.Join(st.Services[1].Prefer, ","); got != "b,a" {
		t.Errorf("data's preference on b: %s, want b,a", got)
	}
	var names []string
	for _, c := range st.ControlPlane {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "locator,nodemanager" {
		t.Errorf("b's control plane: %s, want one locator and one node manager for both services", got)
	}
	// The one locator answers for each service on that service's port,
	// from its own state: each service's report says its own holder (a
	// report a second old may still predate the switchovers).
	p.nodes["b"].waitFor("b's locator reports voice held by a and data by b, on two ports", 10*time.Second, func() bool {
		st := p.nodes["b"].status()
		l0, l1 := st.LocatorReport(0), st.LocatorReport(1)
		return l0 != nil && l1 != nil && l0.Listen != l1.Listen && l1.Slot == 1 && l0.Holder == "a" && l1.Holder == "b"
	})
	// Every service's log lines name it, the first's too.
	for _, svc := range []string{"voice", "data"} {
		for _, c := range []string{"nodemanager", "locator"} {
			if log := p.nodes["b"].log.String(); !strings.Contains(log, `"component":"`+c+`","service":"`+svc+`"`) {
				t.Errorf("b's %s does not name %s in that service's log lines", c, svc)
			}
		}
	}
	// Each service's role, from its own node manager, in the metrics.
	p.nodes["b"].waitFor("b's metrics show it active for data and standby for voice", 10*time.Second, func() bool {
		body := p.scrape("b")
		return strings.Contains(body, `vigil_role{role="active",service="data"} 1`) &&
			strings.Contains(body, `vigil_role{role="standby",service="voice"} 1`) &&
			strings.Contains(body, `vigil_service_held{service="data"} 1`) &&
			strings.Contains(body, `vigil_quorum_ok{service="data"} 1`) &&
			strings.Contains(body, `vigil_quorum_ok{service="voice"} 1`)
	})

	// voiceapp fails its check on a: voice moves to b, data stays.
	sw := filepath.Join(p.dir, "a-voice-fail")
	if err := os.WriteFile(sw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitPlaced("voice moved to b after voiceapp failed on a", map[string]string{"voice": "b", "data": "b"}, "b")
	if err := os.Remove(sw); err != nil {
		t.Fatal(err)
	}
	// Back home by switchover, one service at a time.
	p.nodes["b"].waitFor("voiceapp healthy on a again", 10*time.Second, func() bool {
		return p.nodes["a"].proc("voiceapp").Health == "healthy"
	})
	p.switchover("b", "voice", "a")
	p.waitPlaced("voice back on a", home, "a")
	if out, code := p.nodes["a"].vigil("switchover", "--to", "b", "--socket", p.nodes["a"].socket); code != 2 || !strings.Contains(out, "name the one to move") {
		t.Errorf("switchover without a service in a cluster of two: exit %d: %s", code, out)
	}

	// b's node manager, which runs both services, crashes: b's supervisor
	// releases data, which b held, at once (its kernel lease and its
	// address), a takes it, and voice, which b only followed, stays on a.
	voiceMoved := p.watchHolder("voice", "a")
	logFrom := len(p.nodes["b"].log.String())
	if err := syscall.Kill(nmPid(t, p.nodes["b"], "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitPlaced("data on a after the node manager on b crashed", map[string]string{"voice": "a", "data": "a"}, "a")
	if n := voiceMoved(); n > 0 {
		t.Errorf("voice's address was not on a alone in %d samples while b's node manager crashed", n)
	}
	if log := p.nodes["b"].log.String()[logFrom:]; !strings.Contains(log, `"event":"crash_release"`) || !strings.Contains(log, `"service":"data"`) {
		t.Errorf("no crash release of data on b:\n%s", log)
	} else if releases := strings.Count(log, `"event":"crash_release"`); releases != 1 {
		t.Errorf("%d crash releases on b, want data's alone (b was voice's standby):\n%s", releases, log)
	}
	// Back once b's new node manager follows a (a switchover to a node
	// manager still starting is lost, and waits out the lease).
	p.nodes["b"].waitFor("b's new node manager follows a for data", 30*time.Second, func() bool {
		r := p.nodes["b"].status().Report(1)
		return r != nil && r.Role == "standby" && r.Active == "a" && r.Healthy
	})
	p.switchover("a", "data", "b")
	p.waitPlaced("data back on b", home, "a")

	// b's locator, which serves both services, crashes: each service
	// loses b's vote until it is back, and neither moves (a's and the
	// witness's locators are a quorum for both).
	voiceStays, dataStays := p.watchHolder("voice", "a"), p.watchHolder("data", "b")
	before := p.nodes["b"].status()
	locPID := 0
	for _, c := range before.ControlPlane {
		if c.Name == "locator" {
			locPID = c.PID
		}
	}
	inc0 := []uint64{before.LocatorReport(0).Incarnation, before.LocatorReport(1).Incarnation}
	if locPID <= 0 {
		t.Fatal("no locator on b")
	}
	if err := syscall.Kill(locPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.nodes["b"].waitFor("b's restarted locator answering for both services again, out of quarantine", 30*time.Second, func() bool {
		st := p.nodes["b"].status()
		for i := range 2 {
			if r := st.LocatorReport(i); r == nil || r.Incarnation == inc0[i] || r.Quarantined {
				return false
			}
		}
		return true
	})
	if n := voiceStays(); n > 0 {
		t.Errorf("voice's address was not on a alone in %d samples while b's locator restarted", n)
	}
	if n := dataStays(); n > 0 {
		t.Errorf("data's address was not on b alone in %d samples while b's locator restarted", n)
	}
	// (Not the epochs: a token regenerated meanwhile starts a new one
	// on the same holder, and CI saw that once here.)
	if !p.placed(home) {
		t.Errorf("after b's locator restart: voice on %v, data on %v", p.holders("voice"), p.holders("data"))
	}

	// a dies: voice moves to b; data, on b, does not move.
	// Counted once b's own report has data held (the count moves with
	// the takeover, before the report).
	var dataTakeovers uint64
	p.nodes["b"].waitFor("b's data node manager reports data held", 10*time.Second, func() bool {
		r := p.nodes["b"].status().Report(1)
		if r == nil || r.Role != "active" || len(r.VIPs) != 1 {
			return false
		}
		dataTakeovers = r.Takeovers
		return true
	})
	dataMoved := p.watchHolder("data", "b")
	logFrom = len(p.nodes["b"].log.String())
	p.mu.Lock()
	p.dead["a"] = true
	p.mu.Unlock()
	killHost(t, p.nodes["a"])
	p.waitPlaced("both services on b after a died", map[string]string{"voice": "b", "data": "b"}, "b")
	takeovers, notAlone := p.nodes["b"].status().Report(1).Takeovers-dataTakeovers, dataMoved()
	if late, ok := ranPastLease(p.nodes["b"].log.String()[logFrom:], "data"); ok {
		// b itself stalled for longer than the lease (seen once in CI,
		// 750 ms, with the machine loaded): losing data then is right.
		t.Logf("b's data node manager ran %.0f ms late, past its lease: data's %d takeovers and %d samples not on b alone are not held against it", late, takeovers, notAlone)
	} else {
		if takeovers != 0 {
			t.Errorf("b took data over %d times when a died, it held it already", takeovers)
		}
		if notAlone > 0 {
			t.Errorf("data's address was not on b alone in %d samples while a died", notAlone)
		}
	}

	// a comes back: no failback configured, nothing moves. Its dead
	// incarnation's address is still on its interface, not served (the
	// kernel lease ended with that incarnation's lease), until the new
	// node manager removes it as it starts, which on a loaded machine can
	// take most of a second: a counts as live again once both its node
	// managers report, which they do after that.
	p.nodes["a"].start()
	p.nodes["a"].waitFor("a's node managers started", 30*time.Second, func() bool {
		st := p.nodes["a"].status()
		return st.Report(0) != nil && st.Report(1) != nil
	})
	p.mu.Lock()
	p.dead["a"] = false
	p.mu.Unlock()
	p.nodes["a"].waitFor("a's node managers follow b", 30*time.Second, func() bool {
		st := p.nodes["a"].status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && r0.Role == "standby" && r1.Role == "standby" && r0.Active == "b" && r1.Active == "b"
	})
	time.Sleep(time.Second) // a failback would move voice in this time; none is configured
	if !p.placed(map[string]string{"voice": "b", "data": "b"}) {
		t.Errorf("a service moved back to a without a failback: voice on %v, data on %v", p.holders("voice"), p.holders("data"))
	}

	// Maintenance is the node's: b hands both services to a, and takes
	// neither back when it ends.
	if out, code := p.nodes["b"].vigil("maintenance", "--socket", p.nodes["b"].socket, "on"); code != 0 {
		t.Fatalf("maintenance on b: exit %d: %s", code, out)
	}
	p.waitPlaced("both services on a after maintenance on b", map[string]string{"voice": "a", "data": "a"}, "a")
	p.nodes["b"].waitFor("both of b's node managers in maintenance", 10*time.Second, func() bool {
		st := p.nodes["b"].status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && r0.Maintenance && r1.Maintenance
	})
	if out, code := p.nodes["b"].vigil("maintenance", "--socket", p.nodes["b"].socket, "off"); code != 0 {
		t.Fatalf("maintenance off b: exit %d: %s", code, out)
	}
	p.nodes["b"].waitFor("b out of maintenance, following a for both", 10*time.Second, func() bool {
		st := p.nodes["b"].status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && !r0.Maintenance && !r1.Maintenance && r0.Active == "a" && r1.Active == "a" && r0.Healthy && r1.Healthy
	})
	if !p.placed(map[string]string{"voice": "a", "data": "a"}) {
		t.Errorf("a service moved when b's maintenance ended: voice on %v, data on %v", p.holders("voice"), p.holders("data"))
	}

	// A reload that moves voice's address to data is refused, whole: a
	// host that reloaded first would claim it for data while another
	// still holds it for voice.
	d := p.nodes["a"]
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	voiceVIP := fmt.Sprintf("vips: [{address: %s/24, interface: %s}]\n    processes: [voiceapp]", pairVIPs["voice"], netnstest.LinkName)
	dataVIP := fmt.Sprintf("vips: [{address: %s/24, interface: %s}]\n    processes: [dataapp]", pairVIPs["data"], netnstest.LinkName)
	moved := strings.Replace(strings.Replace(string(b), voiceVIP, fmt.Sprintf("vips: [{address: 192.0.2.102/24, interface: %s}]\n    processes: [voiceapp]", netnstest.LinkName), 1),
		dataVIP, fmt.Sprintf("vips: [{address: %s/24, interface: %s}, {address: %s/24, interface: %[2]s}]\n    processes: [dataapp]", pairVIPs["data"], netnstest.LinkName, pairVIPs["voice"]), 1)
	if moved == string(b) || !strings.Contains(moved, "192.0.2.102") {
		t.Fatalf("the test could not rewrite a's file:\n%s", b)
	}
	if err := os.WriteFile(d.cfgPath, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := d.vigil("reload", "--socket", d.socket); code == 0 || !strings.Contains(out, "moves from service voice to data") {
		t.Errorf("reload moving voice's address to data: exit %d: %s", code, out)
	}
	if !p.placed(map[string]string{"voice": "a", "data": "a"}) || p.net.Hosts["a"].HasAddr(netip.MustParseAddr("192.0.2.102")) {
		t.Errorf("the refused reload changed the addresses: voice on %v, data on %v", p.holders("voice"), p.holders("data"))
	}
	p.checkDual()
}

// A host that lists the services in another order than the others
// (b: data, then voice) must not take part in either service: its first
// service is data where the others' is voice, and were the first slot
// named only by the cluster, b would stand in voice's elections with
// data's address. When voiceapp then failed on a, b would take the slot
// and add data's address, which a holds for data: one address on two live
// hosts. Each service is named on the wire, so b hears from nobody, has no
// quorum for either service, and holds nothing throughout.
func TestMisorderedServicesHoldNothing(t *testing.T) {
	p := newActivePairOrdered(t, "b")
	p.waitPlaced("a holds both services", map[string]string{"voice": "a", "data": "a"}, "a")
	// ... and says why: its peers' datagrams are another cluster's.
	p.nodes["b"].waitFor("b warns of no quorum for both services, naming the services list", 30*time.Second, func() bool {
		n := 0
		for _, w := range p.nodes["b"].status().Warnings {
			if w.Kind == "no_quorum" && strings.Contains(w.Message, "services' names and order") {
				n++
			}
		}
		return n == 2
	})

	// voiceapp fails on a: voice has no healthy node to go to.
	if err := os.WriteFile(filepath.Join(p.dir, "a-voice-fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.nodes["a"].waitFor("a's voice node manager reports a unhealthy", 10*time.Second, func() bool {
		r := p.nodes["a"].status().Report(0)
		return r != nil && !r.Healthy
	})
	// Three leases (testTiming's 600 ms) for b to take anything it could.
	deadline := time.Now().Add(1800 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, svc := range []string{"voice", "data"} {
			if p.net.Hosts["b"].HasAddr(pairVIPs[svc]) {
				t.Fatalf("b, whose services are listed in another order, holds %s's address %s", svc, pairVIPs[svc])
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	for i, svc := range []string{"data", "voice"} { // b's order
		if r := p.nodes["b"].status().Report(i); r == nil || r.Role == "active" || r.LeaseValid {
			t.Errorf("b's %s node manager: %+v, want a node without the role", svc, r)
		}
	}
	if hs := p.holders("data"); len(hs) != 1 || hs[0] != "a" {
		t.Errorf("data's address on %v, want a alone", hs)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for svc, d := range p.longestDual {
		if d > 0 {
			t.Errorf("%s's address was on two live hosts for %v", svc, d)
		}
	}
}

// Going from one service to two renames the first on the wire (<cluster>
// becomes <cluster>/<service>), so hosts on either side of the change do
// not hear each other. Done as docs/configuration.md says (the witness,
// then the standby, then the active, each restarted with the new file),
// it costs the first service one failover, to the standby, after about a
// lease, never with its address on two live hosts; the new service comes
// up on the standby, the first host with it and a quorum.
func TestAddingASecondService(t *testing.T) {
	p := newActivePairWith(t, func(string) []string { return []string{"voice"} })
	var active, standby string
	p.nodes["w"].waitFor("voice held, followed by the other node", 30*time.Second, func() bool {
		hs := p.holders("voice")
		if len(hs) != 1 {
			return false
		}
		active, standby = hs[0], map[string]string{"a": "b", "b": "a"}[hs[0]]
		r := p.nodes[standby].status().Report(0)
		return r != nil && r.Role == "standby" && r.Active == active && r.Healthy
	})

	// Voice's holders as they change, and its longest time held by none.
	quit, done := make(chan struct{}), make(chan struct{})
	var holders []string
	var longestGap time.Duration
	go func() {
		defer close(done)
		var since time.Time
		for {
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond):
			}
			hs := p.holders("voice")
			switch {
			case len(hs) == 0 && since.IsZero():
				since = time.Now()
			case len(hs) == 0:
				longestGap = max(longestGap, time.Since(since))
			default:
				since = time.Time{}
				if len(hs) == 1 && (len(holders) == 0 || holders[len(holders)-1] != hs[0]) {
					holders = append(holders, hs[0])
				}
			}
		}
	}()

	for _, id := range []string{"w", standby, active} {
		d := p.nodes[id]
		d.stop(15 * time.Second)
		p.configure(id, []string{"voice", "data"})
		d.start()
		d.waitFor(id+" runs both services", 30*time.Second, func() bool {
			st := d.status()
			if id == "w" {
				return st.LocatorReport(0) != nil && st.LocatorReport(1) != nil
			}
			r0, r1 := st.Report(0), st.Report(1)
			return r0 != nil && r1 != nil && r0.Active != "" && r1.Active != ""
		})
		if id == standby {
			p.waitPlaced("voice moved to "+standby+", data held there", map[string]string{"voice": standby, "data": standby}, standby)
		}
	}
	p.waitPlaced("both services on "+standby, map[string]string{"voice": standby, "data": standby}, active)
	close(quit)
	<-done
	t.Logf("voice held by %v in turn; held by none for at most %v", holders, longestGap.Round(time.Millisecond))
	if strings.Join(holders, ",") != active+","+standby {
		t.Errorf("voice held by %v in turn, want %s then %s: one failover", holders, active, standby)
	}
	// A lease (600 ms) for the old active's to run out, then the standby's
	// claim: well under 3 s on a loaded machine.
	if longestGap > 3*time.Second {
		t.Errorf("voice held by no node for %v in a row", longestGap)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for svc, d := range p.longestDual {
		if d > 0 {
			t.Errorf("%s's address was on two live hosts for %v", svc, d)
		}
	}
}

// Four services, the most a cluster may have, on a pair and a witness:
// every one is held by one node, the one node manager and the one locator
// of each host serve all four (two control-plane processes a node, one on
// the witness), and when a dies every service it held moves to b and none
// is ever on two live hosts.
func TestFourServices(t *testing.T) {
	all := []string{"voice", "data", "fax", "video"}
	p := newActivePairWith(t, func(string) []string { return all })
	p.nodes["b"].waitFor("each service held by one node, followed by the other", 30*time.Second, func() bool {
		for i, svc := range all {
			hs := p.holders(svc)
			if len(hs) != 1 {
				return false
			}
			other := map[string]string{"a": "b", "b": "a"}[hs[0]]
			if r := p.nodes[other].status().Report(i); r == nil || r.Role != "standby" || r.Active != hs[0] || !r.Healthy {
				return false
			}
		}
		return true
	})
	for id, want := range map[string]int{"a": 2, "b": 2, "w": 1} {
		st := p.nodes[id].status()
		if n := len(st.ControlPlane); n != want {
			t.Errorf("%s runs %d control-plane processes, want %d", id, n, want)
		}
		// The one locator reports for every service, each its own port.
		ports := map[string]bool{}
		for i, svc := range all {
			if r := st.LocatorReport(i); r == nil {
				t.Errorf("%s has no locator report for %s", id, svc)
			} else {
				ports[r.Listen] = true
			}
		}
		if len(ports) != len(all) {
			t.Errorf("%s's locator listens on %v for %d services", id, ports, len(all))
		}
	}
	p.mu.Lock()
	p.dead["a"] = true
	p.mu.Unlock()
	killHost(t, p.nodes["a"])
	want := map[string]string{}
	for _, svc := range all {
		want[svc] = "b"
	}
	p.waitPlaced("all four services on b after a died", want, "b")
	p.checkDual()
}

// `vigil maintenance on` while the node manager is not running (here it
// cannot start: b's cluster key file is damaged, so it exits at once and
// is restarted with backoff) reaches it at its next start: the supervisor
// writes each service's maintenance.state, and once the file is mended the
// node manager comes up in maintenance for every service, and the other
// nodes see it so. Without that it came back eligible for its services.
// (A damaged state file of one service no longer stops the process:
// TestDamagedStateOfOneService.)
func TestMaintenanceReachesANodeManagerNotRunning(t *testing.T) {
	p := newActivePair(t)
	p.waitSettled()
	b := p.nodes["b"]
	keyFile := filepath.Join(b.dir, "cluster.key")
	good, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(nmPid(t, b, "nodemanager"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the node manager on b failing at start (its key file refused)", 20*time.Second, func() bool {
		for _, c := range b.status().ControlPlane {
			if c.Name == "nodemanager" {
				return c.LastExit != nil && c.LastExit.Signal == "" && c.LastExit.Code != 0
			}
		}
		return false
	})
	if log := b.log.String(); !strings.Contains(log, "malformed key file") {
		t.Fatalf("the node manager on b did not say why it stopped:\n%s", log)
	}
	// It lives a few milliseconds every backoff (up to 2 s); a command
	// that met it alive fails as for any process that exits under it,
	// and is repeated, as an operator would.
	var out string
	code := -1
	for try := 0; try < 3 && code != 0; try++ {
		out, code = b.vigil("maintenance", "--socket", b.socket, "on")
	}
	if code != 0 {
		t.Fatalf("maintenance on b with its node manager not running: exit %d: %s", code, out)
	}
	if log := b.log.String(); !strings.Contains(log, "for a node manager that is not running") {
		t.Errorf("b's supervisor did not say it kept maintenance for the node manager:\n%s", log)
	}
	if err := os.WriteFile(keyFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the node manager on b started again, in maintenance for both services", 30*time.Second, func() bool {
		st := b.status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && r0.Maintenance && r1.Maintenance && r1.Active != "" && r1.Active != "b"
	})
	p.nodes["a"].waitFor("a sees b in maintenance for data", 10*time.Second, func() bool {
		r := p.nodes["a"].status().Report(1)
		if r == nil {
			return false
		}
		for _, peer := range r.Peers {
			if peer.ID == "b" {
				return peer.Maintenance
			}
		}
		return false
	})
	if hs := p.holders("data"); len(hs) != 1 || hs[0] != "a" {
		t.Errorf("data held by %v with b in maintenance, want a", hs)
	}
	if out, code := b.vigil("maintenance", "--socket", b.socket, "off"); code != 0 {
		t.Fatalf("maintenance off b: exit %d: %s", code, out)
	}
	b.waitFor("b out of maintenance for both", 10*time.Second, func() bool {
		st := b.status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && !r0.Maintenance && !r1.Maintenance
	})
}

// The node manager process of b, which holds data and follows voice,
// stalls (SIGSTOP) for two leases: the supervisor's fence, now one for
// every service of the process, acts on data's deadline (left to the
// kernel lease, or a kill), a takes data over, voice never moves, and no
// address is on two live hosts for a lease. Resumed, b follows a for
// both services.
func TestStalledNodeManagerOfAPair(t *testing.T) {
	p := newActivePair(t)
	home := map[string]string{"voice": "a", "data": "b"}
	p.waitSettled()
	p.nodes["a"].waitFor("a's node managers report b healthy and in the ring", 10*time.Second, func() bool {
		st := p.nodes["a"].status()
		for i := range 2 {
			r := st.Report(i)
			if r == nil || !slices.ContainsFunc(r.Peers, func(pe ctlmsg.PeerState) bool { return pe.ID == "b" && pe.Healthy && pe.InRing }) {
				return false
			}
		}
		return true
	})
	p.switchoverPreferred("a")
	p.waitPlaced("voice on a and data on b", home, "a")

	b := p.nodes["b"]
	stalled := nmPid(t, b, "nodemanager")
	voiceStays := p.watchHolder("voice", "a")
	logFrom := len(b.log.String())
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(stalled, syscall.SIGCONT) }()
	time.Sleep(1200 * time.Millisecond) // two of the test's leases: the stall is the fault
	_ = syscall.Kill(stalled, syscall.SIGCONT)
	p.waitPlaced("data on a after b's node manager stalled", map[string]string{"voice": "a", "data": "a"}, "a")
	b.waitFor("b's node manager follows a for both services", 30*time.Second, func() bool {
		st := b.status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && r0.Role == "standby" && r1.Role == "standby" && r0.Active == "a" && r1.Active == "a"
	})
	if n := voiceStays(); n > 0 {
		t.Errorf("voice's address was not on a alone in %d samples while b's node manager stalled", n)
	}
	log := b.log.String()[logFrom:]
	fenced := false
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"event":"fence_held"`) && !strings.Contains(line, `"event":"fence"`) {
			continue
		}
		fenced = true
		if !strings.Contains(line, `"service":"data"`) && !strings.Contains(line, `"service":"voice"`) {
			t.Errorf("b's fence does not name the silent service: %s", line)
		}
	}
	if !fenced {
		t.Errorf("b's supervisor did not fence its stalled node manager:\n%s", log)
	}
	p.checkDual()
}
