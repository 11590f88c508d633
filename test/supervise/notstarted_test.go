package supervise

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// A damaged state file of one service does not take the host's other
// services with it. b is stopped (data moves to a), the node and locator
// state files of data on b are cut in half (a torn write), and b starts:
// its node manager and its locator run voice and report data as not
// started, saying why, once each, in status, metrics and the log; b
// serves voice (it takes it over when voiceapp fails on a) while data
// stays on a, held by a's and the witness's locators. `vigil maintenance
// on` reaches data as well. Once the damaged files are moved away, the
// same processes start data within the retry period, in maintenance, and
// b follows a for it.
func TestDamagedStateOfOneService(t *testing.T) {
	p := newActivePair(t)
	p.waitSettled()
	b := p.nodes["b"]
	b.stop(15 * time.Second)
	p.waitPlaced("both services on a once b stopped", map[string]string{"voice": "a", "data": "a"}, "a")

	dataDir := filepath.Join(b.dir, "state", "service-data")
	var damaged []string
	for _, f := range []string{"node.state", "locator.state"} {
		path := filepath.Join(dataDir, f)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("b's data state: %v", err)
		}
		if err := os.WriteFile(path, raw[:len(raw)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		damaged = append(damaged, path)
	}
	dataStays := p.watchHolder("data", "a")
	logFrom := len(b.log.String())
	b.start()

	b.waitFor("b runs voice and reports data not started by its node manager and its locator", 30*time.Second, func() bool {
		st := b.status()
		r0, r1, l1 := st.Report(0), st.Report(1), st.LocatorReport(1)
		return r0 != nil && r0.Role == "standby" && r0.Active == "a" && r0.Healthy &&
			r1.NotStarted() && l1 != nil && l1.StartError != ""
	})
	st := b.status()
	if r1 := st.Report(1); r1.Role != "not_started" || !strings.Contains(r1.StartError, "node.state") || !strings.Contains(r1.StartError, "refusing to guess") {
		t.Errorf("b's data node manager report: role %q, start_error %q; want not_started naming node.state", r1.Role, r1.StartError)
	}
	if l1 := st.LocatorReport(1); !strings.Contains(l1.StartError, "locator.state") {
		t.Errorf("b's data locator report: start_error %q, want one naming locator.state", l1.StartError)
	}
	if l0 := st.LocatorReport(0); l0 == nil || l0.StartError != "" || l0.Listen == "" {
		t.Errorf("b's voice locator: %+v, want it started", l0)
	}
	var kinds []string
	for _, w := range st.Warnings {
		if w.Kind == "service_not_started" {
			kinds = append(kinds, w.Message)
		}
	}
	if len(kinds) != 2 || !strings.HasPrefix(kinds[0], "service data: node manager") || !strings.HasPrefix(kinds[1], "service data: this host's locator") {
		t.Errorf("b's service_not_started warnings: %q, want data's node manager and locator", kinds)
	}
	if out, code := b.vigil("status", "--socket", b.socket); code != 3 || !strings.Contains(out, "not started") {
		t.Errorf("vigil status on b: exit %d, want 3 (unhealthy) and the service shown not started:\n%s", code, out)
	}
	body := p.scrape("b")
	for _, want := range []string{
		`vigil_service_not_started{process="nodemanager",service="data"} 1`,
		`vigil_service_not_started{process="locator",service="data"} 1`,
		`vigil_service_not_started{process="nodemanager",service="voice"} 0`,
		`vigil_service_not_started{process="locator",service="voice"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("b's metrics lack %s", want)
		}
	}
	// A switchover of data asked on b is refused there, saying why.
	if out, code := b.vigil("switchover", "data", "--to", "b", "--socket", b.socket); code == 0 || !strings.Contains(out, "not started on this node") {
		t.Errorf("switchover of data on b, where it is not started: exit %d: %s", code, out)
	}
	pids := map[string]int{}
	for _, c := range st.ControlPlane {
		pids[c.Name] = c.PID
	}

	// b serves voice: voiceapp fails on a, voice moves to b; data stays.
	sw := filepath.Join(p.dir, "a-voice-fail")
	if err := os.WriteFile(sw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitPlaced("voice on b after voiceapp failed on a, data still on a", map[string]string{"voice": "b", "data": "a"}, "a")
	if err := os.Remove(sw); err != nil {
		t.Fatal(err)
	}

	// Maintenance on b reaches data too: written for its start (voice,
	// running, hands itself back to a once voiceapp is healthy there).
	p.nodes["a"].waitFor("voiceapp healthy on a again", 10*time.Second, func() bool {
		return p.nodes["a"].proc("voiceapp").Health == "healthy"
	})
	if out, code := b.vigil("maintenance", "--socket", b.socket, "on"); code != 0 {
		t.Fatalf("maintenance on b with data not started: exit %d: %s", code, out)
	}
	p.waitPlaced("voice back on a with b in maintenance", map[string]string{"voice": "a", "data": "a"}, "a")

	// The damaged files moved away: the same processes start data (a
	// missing file is a new state), in maintenance, and b follows a for it.
	for _, path := range damaged {
		if err := os.Rename(path, path+".damaged"); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor("b's node manager and locator start data without a restart", 30*time.Second, func() bool {
		st := b.status()
		r1, l1 := st.Report(1), st.LocatorReport(1)
		return r1 != nil && !r1.NotStarted() && r1.Role == "standby" && r1.Active == "a" && r1.Healthy &&
			l1 != nil && l1.StartError == "" && l1.Listen != ""
	})
	if r1 := b.status().Report(1); !r1.Maintenance {
		t.Error("data started on b out of maintenance, which was set while it was not started")
	}
	st = b.status()
	for _, c := range st.ControlPlane {
		if c.PID != pids[c.Name] || c.State != supervisor.StateRunning {
			t.Errorf("b's %s: pid %d (%s), was %d: the process was restarted", c.Name, c.PID, c.State, pids[c.Name])
		}
	}
	for _, w := range st.Warnings {
		if w.Kind == "service_not_started" {
			t.Errorf("b still warns: %s", w.Message)
		}
	}
	log := b.log.String()[logFrom:]
	// Once per process for the one cause, not once per try.
	if n := strings.Count(log, `"event":"service_start_failed"`); n != 2 {
		t.Errorf("%d service_start_failed lines on b, want 2 (node manager and locator, once each):\n%s", n, log)
	}
	if n := strings.Count(log, `"event":"service_start_recovered"`); n != 2 {
		t.Errorf("%d service_start_recovered lines on b, want 2", n)
	}
	if out, code := b.vigil("maintenance", "--socket", b.socket, "off"); code != 0 {
		t.Fatalf("maintenance off b: exit %d: %s", code, out)
	}
	b.waitFor("b out of maintenance for both", 10*time.Second, func() bool {
		st := b.status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r1 != nil && !r0.Maintenance && !r1.Maintenance
	})
	if n := dataStays(); n > 0 {
		t.Errorf("data's address was not on a alone in %d samples while b could not start it", n)
	}
	p.checkDual()
}

// A port another program holds is the other cause: b's node manager cannot
// bind data's port (7402, held here by a socket in b's namespace), runs
// voice and reports data not started with the bind error, and starts data
// within the retry period once the port is free, in the same process.
func TestPortTakenForOneService(t *testing.T) {
	p := newActivePair(t)
	p.waitSettled()
	b := p.nodes["b"]
	b.stop(15 * time.Second)
	p.waitPlaced("both services on a once b stopped", map[string]string{"voice": "a", "data": "a"}, "a")
	var held *net.UDPConn
	if err := p.net.Hosts["b"].Run(func() error {
		var err error
		held, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.12:7402")))
		return err
	}); err != nil {
		t.Fatalf("holding data's node manager port on b: %v", err)
	}
	defer held.Close()
	b.start()
	b.waitFor("b runs voice and reports data not started: its port is taken", 30*time.Second, func() bool {
		st := b.status()
		r0, r1 := st.Report(0), st.Report(1)
		return r0 != nil && r0.Role == "standby" && r0.Active == "a" && r1.NotStarted() && strings.Contains(r1.StartError, "address already in use")
	})
	if l1 := b.status().LocatorReport(1); l1 == nil || l1.StartError != "" {
		t.Errorf("b's data locator (its own port, 7403): %+v, want it started", l1)
	}
	nmPID := nmPid(t, b, "nodemanager")
	held.Close()
	b.waitFor("b's node manager starts data once the port is free", 30*time.Second, func() bool {
		r1 := b.status().Report(1)
		return r1 != nil && !r1.NotStarted() && r1.Role == "standby" && r1.Active == "a"
	})
	if pid := nmPid(t, b, "nodemanager"); pid != nmPID {
		t.Errorf("b's node manager was restarted (pid %d, was %d)", pid, nmPID)
	}
	p.checkDual()
}
