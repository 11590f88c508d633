package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/schedwatch"
)

// testKeys writes the key files the table refers to and returns the
// replacements for their placeholders.
func testKeys(t *testing.T) *strings.Replacer {
	t.Helper()
	dir := t.TempDir()
	good := filepath.Join(dir, "cluster.key")
	if err := WriteKeyFile(good); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("0123abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(open, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.key")
	if err := os.WriteFile(zero, []byte(strings.Repeat("00", KeySize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("$KEY", good, "$SHORTKEY", short, "$OPENKEY", open, "$ZEROKEY", zero)
}

func TestParseFull(t *testing.T) {
	keys := testKeys(t)
	src := keys.Replace(`
cluster:
  name: sip-edge
  node: b
  role: node
  key_file: $KEY
  listen: 0.0.0.0:7400
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: "[2001:db8::12]:7400"}
  witnesses:
    - {id: w, address: 192.0.2.13:7400}
  timing: {token_interval: 10ms, token_timeout: 100ms, lease: 300ms, drift_margin: 40ms}
vips:
  - {address: 192.0.2.100/24, interface: eth0}
  - {address: "2001:db8::100/64", interface: eth0.100}
announce: {count: 5, interval: 50ms, refresh: 10s, probe: 20ms, handover_gap: 30ms}
control: {cpu_weight: 5000, io_weight: 2000, cpus: "0-1,3", memory_min: 128Mi, realtime: false, sched_delay_warn: 20ms, rt_budget: 150ms, lateness_warn_share: 40%}
apps: {cpu_weight: 50, io_weight: 20, cpu_max: "150%", memory_max: 2G, pids_max: 4096}
processes:
  - name: kamailio
    command: [/bin/sh, -c, "exec sleep 1000"]
    env: {ZZ: last, AA: 1, EMPTY: }
    dir: /tmp
    user: root
    group: root
    rlimits: {nofile: 65536, core: unlimited, memlock: 0}
    restart: on-failure
    critical: true
    stop_signal: "15"
    stop_timeout: 3s
    backoff: {initial: 50ms, max: 5s, stable: 1m, fatal_after: 4}
    memory_max: 512Mi
    pids_max: 100
    cpu_weight: 200
    health:
      interval: 5s
      timeout: 500ms
      sip_options: {target: "sip:127.0.0.1:5060", interval: 2s, rise: 1}
      fall: 4
      grace: 30s
  - name: checker.v2
    command: [sh]
    stop_signal: hup
    health: {exec: [/bin/sh, -c, "exit 0"]}
  - name: rtp_relay
    command: [/bin/sh]
    health: {tcp: "localhost:2223", timeout: 100ms}
  - name: web
    command: [/bin/sh]
    health: {http: "http://127.0.0.1:8080/health"}
hooks:
  on_active: [[/bin/sh, -c, "echo active"], [true]]
  on_fault: [[sh]]
  timeout: 5s
metrics: {listen: ""}
runtime: {control_socket: /run/vigil-b/control.sock, control_group: sip-ops, state_dir: /var/lib/vigil-b, cgroup: vigil/b}
log: {level: debug, format: json}
`)
	got, err := Parse("full.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	assertRunnable(t, got)
	want := &Config{
		Cluster: Cluster{
			Name:    "sip-edge",
			Node:    "b",
			Role:    RoleNode,
			KeyFile: keys.Replace("$KEY"),
			Listen:  "0.0.0.0:7400",
			Nodes: []Peer{
				{ID: "a", Address: "192.0.2.11:7400"},
				{ID: "b", Address: "[2001:db8::12]:7400"},
			},
			Witnesses: []Peer{{ID: "w", Address: "192.0.2.13:7400"}},
			Timing: Timing{
				TokenInterval: 10 * time.Millisecond,
				TokenTimeout:  100 * time.Millisecond,
				Lease:         300 * time.Millisecond,
				DriftMargin:   40 * time.Millisecond,
			},
		},
		VIPs: []VIP{
			{Address: "192.0.2.100/24", Interface: "eth0"},
			{Address: "2001:db8::100/64", Interface: "eth0.100"},
		},
		Services: []Service{{Name: ImplicitService, Implicit: true, VIPs: []VIP{
			{Address: "192.0.2.100/24", Interface: "eth0"},
			{Address: "2001:db8::100/64", Interface: "eth0.100"},
		}}},
		Announce: Announce{Count: 5, Interval: 50 * time.Millisecond, Refresh: 10 * time.Second, Probe: 20 * time.Millisecond, HandoverGap: 30 * time.Millisecond},
		Control:  ControlGroup{CPUWeight: 5000, IOWeight: 2000, CPUs: "0-1,3", MemoryMin: 128 << 20, Realtime: false, SchedDelayWarn: 20 * time.Millisecond, RTBudget: 150 * time.Millisecond, LatenessWarnShare: 0.4},
		Apps:     AppsGroup{CPUWeight: 50, IOWeight: 20, CPUMax: "150%", MemoryMax: 2_000_000_000, PidsMax: 4096},
		Processes: []Process{
			{
				Name:        "kamailio",
				Command:     []string{"/bin/sh", "-c", "exec sleep 1000"},
				Env:         []string{"AA=1", "EMPTY=", "ZZ=last"},
				Dir:         "/tmp",
				User:        "root",
				Group:       "root",
				Rlimits:     map[string]uint64{"nofile": 65536, "core": Unlimited, "memlock": 0},
				Restart:     RestartOnFailure,
				Critical:    true,
				StopSignal:  "SIGTERM",
				StopTimeout: 3 * time.Second,
				Backoff:     Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Stable: time.Minute, FatalAfter: 4},
				MemoryMax:   512 << 20,
				PidsMax:     100,
				CPUWeight:   200,
				Health: &Health{
					Kind:     HealthSIPOptions,
					SIP:      "sip:127.0.0.1:5060",
					Interval: 2 * time.Second, // sip_options' own wins over health's 5s
					Timeout:  500 * time.Millisecond,
					Rise:     1,
					Fall:     4,
					Grace:    30 * time.Second,
				},
			},
			withDefaults(Process{Name: "checker.v2", Command: []string{"sh"}, StopSignal: "SIGHUP",
				Health: &Health{Kind: HealthExec, Exec: []string{"/bin/sh", "-c", "exit 0"}, Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3}}),
			withDefaults(Process{Name: "rtp_relay", Command: []string{"/bin/sh"},
				Health: &Health{Kind: HealthTCP, TCP: "localhost:2223", Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3}}),
			withDefaults(Process{Name: "web", Command: []string{"/bin/sh"},
				Health: &Health{Kind: HealthHTTP, HTTP: "http://127.0.0.1:8080/health", Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3}}),
		},
		Hooks: Hooks{
			OnActive: [][]string{{"/bin/sh", "-c", "echo active"}, {"true"}},
			OnFault:  [][]string{{"sh"}},
			Timeout:  5 * time.Second,
		},
		Metrics: Metrics{Listen: ""},
		Runtime: Runtime{ControlSocket: "/run/vigil-b/control.sock", ControlGroup: "sip-ops", StateDir: "/var/lib/vigil-b", Cgroup: "vigil/b"},
		Log:     Log{Level: "debug", Format: "json"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
		for i := range min(len(got.Processes), len(want.Processes)) {
			if !reflect.DeepEqual(got.Processes[i], want.Processes[i]) {
				t.Errorf("processes[%d]\n got: %+v %+v\nwant: %+v %+v", i, got.Processes[i], got.Processes[i].Health, want.Processes[i], want.Processes[i].Health)
			}
		}
	}

	if self := got.Self(); self != (Peer{ID: "b", Address: "[2001:db8::12]:7400"}) {
		t.Errorf("Self() = %+v", self)
	}
	ids := []string{}
	for _, l := range got.Locators() {
		ids = append(ids, l.ID)
	}
	if strings.Join(ids, ",") != "a,b,w" {
		t.Errorf("Locators() = %v, want a,b,w", ids)
	}
	if p, ok := got.Process("rtp_relay"); !ok || p != &got.Processes[2] {
		t.Errorf("Process(rtp_relay) = %p %v, want &Processes[2]", p, ok)
	}
	if _, ok := got.Process("nope"); ok {
		t.Error("Process(nope) found")
	}
}

// withDefaults fills the process defaults that p leaves zero.
func withDefaults(p Process) Process {
	d := defaultProcess()
	d.Name, d.Command, d.Health = p.Name, p.Command, p.Health
	if p.StopSignal != "" {
		d.StopSignal = p.StopSignal
	}
	return d
}

func TestParseDefaults(t *testing.T) {
	keys := testKeys(t)
	src := keys.Replace(`
cluster:
  name: one
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - name: app
    command: [/bin/sh]
    health: {tcp: "127.0.0.1:80"}
`)
	got, err := Parse("min.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Cluster: Cluster{
			Name: "one", Node: "a", Role: RoleNode, KeyFile: keys.Replace("$KEY"),
			Listen: "192.0.2.11:7400", // this node's own entry
			Nodes:  []Peer{{ID: "a", Address: "192.0.2.11:7400"}},
			Timing: Timing{TokenInterval: 10 * time.Millisecond, TokenTimeout: 50 * time.Millisecond, Lease: 60 * time.Millisecond, DriftMargin: 15 * time.Millisecond},
		},
		Services: []Service{{Name: ImplicitService, Implicit: true}}, // no vips: the implicit service holds none
		Announce: Announce{Count: 3, Interval: 100 * time.Millisecond, HandoverGap: 30 * time.Millisecond},
		Control:  ControlGroup{CPUWeight: 10000, IOWeight: 1000, MemoryMin: 64 << 20, Realtime: true, SchedDelayWarn: 50 * time.Millisecond, RTBudget: 300 * time.Millisecond, LatenessWarnShare: 0.25},
		Apps:     AppsGroup{CPUWeight: 100, IOWeight: 100},
		Processes: []Process{{
			Name: "app", Command: []string{"/bin/sh"}, Dir: "/", Restart: RestartAlways,
			StopSignal: "SIGTERM", StopTimeout: 10 * time.Second,
			Backoff: Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Stable: 10 * time.Second, FatalAfter: 10},
			Health:  &Health{Kind: HealthTCP, TCP: "127.0.0.1:80", Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3},
		}},
		Hooks:   Hooks{Timeout: 10 * time.Second},
		Metrics: Metrics{Listen: "127.0.0.1:9720"},
		Runtime: Runtime{ControlSocket: "/run/vigil/control.sock", ControlGroup: "vigil", StateDir: "/var/lib/vigil"},
		Log:     Log{Level: "info", Format: "text"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults mismatch\n got: %+v\nwant: %+v", got, want)
	}
}

// A witness: its own entry is in witnesses, and Self finds it there.
func TestParseWitness(t *testing.T) {
	keys := testKeys(t)
	got, err := Parse("w.yaml", []byte(keys.Replace(`
cluster:
  name: edge
  node: w
  role: witness
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
vips: []
services: []
processes: []
`)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Self() != (Peer{ID: "w", Address: "192.0.2.13:7400"}) || got.Cluster.Listen != "192.0.2.13:7400" {
		t.Errorf("Self() = %+v, Listen = %q", got.Self(), got.Cluster.Listen)
	}
	if len(got.Locators()) != 3 {
		t.Errorf("Locators() = %v", got.Locators())
	}
	// A witness holds no service; the protocol sees the nodes in order.
	if _, ok := got.Service(); ok || got.Services != nil {
		t.Errorf("a witness has services %+v", got.Services)
	}
	if pc := got.Protocol(); !reflect.DeepEqual(pc.Nodes, []string{"a", "b"}) || pc.Failback != 0 {
		t.Errorf("Protocol() nodes %v failback %v", pc.Nodes, pc.Failback)
	}
}

// A file with services: holds the one service it lists: Config.VIPs are
// its addresses, and the protocol sees the nodes in the order of prefer,
// then the others in cluster.nodes order, with its failback.
func TestParseServices(t *testing.T) {
	keys := testKeys(t)
	src := keys.Replace(`
cluster:
  name: edge
  node: b
  key_file: $KEY
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
    - {id: c, address: 192.0.2.13:7400}
    - {id: d, address: 192.0.2.14:7400}
  witnesses: [{id: w, address: 192.0.2.15:7400}]
  timing: {token_timeout: 100ms}
services:
  - name: customers-1
    vips:
      - {address: 192.0.2.100/24, interface: eth0}
      - {address: "2001:db8::100/64", interface: eth0}
    processes: [kamailio, rtpengine]
    prefer: [c, a]
    failback: 30s
processes:
  - {name: kamailio, command: [/bin/sh], critical: true}
  - {name: rtpengine, command: [/bin/sh]}
`)
	c, err := Parse("vigil.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	assertRunnable(t, c)
	vips := []VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "2001:db8::100/64", Interface: "eth0"}}
	want := Service{Name: "customers-1", VIPs: vips, Processes: []string{"kamailio", "rtpengine"}, Prefer: []string{"c", "a"}, Failback: 30 * time.Second}
	if got, ok := c.Service(); !ok || !reflect.DeepEqual(got, want) || len(c.Services) != 1 {
		t.Errorf("Service() = %+v, %v (of %d); want %+v", got, ok, len(c.Services), want)
	}
	if !reflect.DeepEqual(c.VIPs, vips) {
		t.Errorf("VIPs = %+v, want the service's %+v", c.VIPs, vips)
	}
	pc := c.Protocol()
	if !reflect.DeepEqual(pc.Nodes, []string{"c", "a", "b", "d"}) || pc.Failback != 30*time.Second {
		t.Errorf("Protocol() nodes %v failback %v; want [c a b d] 30s", pc.Nodes, pc.Failback)
	}
	if !reflect.DeepEqual(pc.Locators, []string{"a", "b", "c", "d", "w"}) {
		t.Errorf("Protocol() locators %v; want them in cluster.nodes order, then the witnesses", pc.Locators)
	}

	for name, tc := range map[string]struct {
		from, to string
		failback time.Duration
		nodes    []string
	}{
		"failback off":                  {"failback: 30s", "failback: off", 0, []string{"c", "a", "b", "d"}},
		"failback absent":               {"    failback: 30s\n", "", 0, []string{"c", "a", "b", "d"}},
		"failback empty: the default":   {"failback: 30s", "failback:", 0, []string{"c", "a", "b", "d"}},
		"failback of one token_timeout": {"failback: 30s", "failback: 100ms", 100 * time.Millisecond, []string{"c", "a", "b", "d"}},
		"every node preferred":          {"prefer: [c, a]", "prefer: [d, c, b, a]", 30 * time.Second, []string{"d", "c", "b", "a"}},
		"no prefer":                     {"    prefer: [c, a]\n", "", 30 * time.Second, []string{"a", "b", "c", "d"}},
	} {
		t.Run(name, func(t *testing.T) {
			changed := strings.Replace(src, tc.from, tc.to, 1)
			if changed == src {
				t.Fatalf("%q not in the file", tc.from)
			}
			c, err := Parse("vigil.yaml", []byte(changed))
			if err != nil {
				t.Fatal(err)
			}
			assertRunnable(t, c)
			if s, _ := c.Service(); s.Failback != tc.failback {
				t.Errorf("Failback = %v, want %v", s.Failback, tc.failback)
			}
			if pc := c.Protocol(); !reflect.DeepEqual(pc.Nodes, tc.nodes) || pc.Failback != tc.failback {
				t.Errorf("Protocol() nodes %v failback %v; want %v %v", pc.Nodes, pc.Failback, tc.nodes, tc.failback)
			}
		})
	}

	t.Run("processes absent: nil, every critical process", func(t *testing.T) {
		c, err := Parse("vigil.yaml", []byte(strings.Replace(src, "    processes: [kamailio, rtpengine]\n", "", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := c.Service(); s.Processes != nil {
			t.Errorf("Processes = %v, want nil", s.Processes)
		}
	})
}

// Without services:, the top-level vips are the one service, "default",
// with the defaults: every critical process, cluster.nodes order, no
// failback. Without vips either, it holds no address.
func TestImplicitService(t *testing.T) {
	keys := testKeys(t)
	for name, tc := range map[string]struct {
		vips string
		want []VIP
	}{
		"from vips":  {"vips: [{address: 192.0.2.100/24, interface: eth0}]\n", []VIP{{Address: "192.0.2.100/24", Interface: "eth0"}}},
		"vips empty": {"vips: []\n", nil},
		"vips null":  {"vips:\n", nil},
		"no vips":    {"", nil},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("vigil.yaml", []byte(keys.Replace(`
cluster:
  name: edge
  node: b
  key_file: $KEY
  nodes: [{id: b, address: 192.0.2.12:7400}, {id: a, address: 192.0.2.11:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
`+tc.vips)))
			if err != nil {
				t.Fatal(err)
			}
			want := Service{Name: ImplicitService, VIPs: tc.want, Implicit: true}
			if got, ok := c.Service(); !ok || !reflect.DeepEqual(got, want) || len(c.Services) != 1 {
				t.Errorf("Service() = %+v, %v (of %d); want %+v", got, ok, len(c.Services), want)
			}
			if !reflect.DeepEqual(c.VIPs, tc.want) {
				t.Errorf("VIPs = %+v, want %+v", c.VIPs, tc.want)
			}
			if pc := c.Protocol(); !reflect.DeepEqual(pc.Nodes, []string{"b", "a"}) || pc.Failback != 0 {
				t.Errorf("Protocol() nodes %v failback %v; want cluster.nodes order, no failback", pc.Nodes, pc.Failback)
			}
		})
	}
}

// badConfigs is the catalogue of rejected configurations and the exact
// message each produces. Every YAML starts with the same valid cluster
// block unless the case is about it, so line numbers read directly:
//
//	1 cluster:
//	2   name: edge
//	3   node: a
//	4   key_file: $KEY
//	5   nodes: [{id: a, address: 192.0.2.11:7400}]
var badConfigs = []struct {
	name string
	yaml string
	want []string // "vigil.yaml:LINE:COL: KEY: MSG", $KEY etc. replaced
}{
	{"unknown key", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
metrics: {listn: "127.0.0.1:9720"}
`, []string{`vigil.yaml:6:11: metrics.listn: unknown key (did you mean listen?)`}},

	{"rt_budget above the kernel's limit", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {rt_budget: 1s}
`, []string{`vigil.yaml:6:22: control.rt_budget: must be between 1ms and 950ms (per second of cpu.rt_period_us), got 1s`}},

	{"announce count out of range, negative refresh", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
announce: {count: 0, refresh: -1s}
`, []string{`vigil.yaml:6:19: announce.count: 0 is out of range 1..100`, `vigil.yaml:6:31: announce.refresh: "-1s" is negative`}},

	{"handover gap too long", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
announce: {handover_gap: 2s}
`, []string{`vigil.yaml:6:26: announce.handover_gap: 2s is too long: at most 1s (every planned handover leaves the address unanswered this long)`}},

	{"handover gap negative", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
announce: {handover_gap: -5ms}
`, []string{`vigil.yaml:6:26: announce.handover_gap: "-5ms" is negative`}},

	{"wrong type: mapping where a list belongs", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: {id: a, address: 192.0.2.11:7400}
`, []string{
		`vigil.yaml:5:10: cluster.nodes: must be a list, not a mapping`,
	}},

	{"wrong type: string where a boolean belongs", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {realtime: "yes"}
`, []string{`vigil.yaml:6:21: control.realtime: must be true or false, not "yes"`}},

	{"bad duration", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 20 ms}
`, []string{`vigil.yaml:6:28: cluster.timing.token_interval: "20 ms" is not a duration: write a Go duration like 150ms or 2s`}},

	{"duration without unit", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
hooks: {timeout: 10}
`, []string{`vigil.yaml:6:18: hooks.timeout: "10" has no unit: write a Go duration like 150ms or 2s`}},

	{"negative duration", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {lease: -200ms}
`, []string{`vigil.yaml:6:19: cluster.timing.lease: "-200ms" is negative`}},

	{"bad size", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {memory_min: 64MB}
apps: {memory_max: -1G}
`, []string{
		`vigil.yaml:6:23: control.memory_min: "64MB" has an unknown unit "MB": use K M G T or Ki Mi Gi Ti`,
		`vigil.yaml:7:20: apps.memory_max: "-1G" is not a size: write bytes or a number with a unit (K M G T, Ki Mi Gi Ti), like 64Mi`,
	}},

	{"bad peer address: a name, not an IP", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: "node-a:7400"}]
`, []string{
		`vigil.yaml:5:28: cluster.nodes[0].address: "node-a:7400" is not an IP:port address like 192.0.2.11:7400 or [2001:db8::11]:7400`,
	}},

	{"bad CIDR", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips:
  - {address: 192.0.2.100/33, interface: eth0}
`, []string{`vigil.yaml:7:15: vips[0].address: "192.0.2.100/33" is not an address with a prefix length, like 192.0.2.100/24 or 2001:db8::100/64`}},

	{"VIP without interface", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips:
  - address: 192.0.2.100/24
`, []string{`vigil.yaml:7:5: vips[0].interface: required: the interface that carries the address, like eth0`}},

	{"duplicate node id across nodes and witnesses", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: a, address: 192.0.2.13:7400}]
`, []string{`vigil.yaml:6:20: cluster.witnesses[0].id: duplicate id "a" (first at line 5)`}},

	{"unreadable key file", `
cluster:
  name: edge
  node: a
  key_file: /nonexistent/cluster.key
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:4:13: cluster.key_file: key file: open /nonexistent/cluster.key: no such file or directory`}},

	{"key file of the wrong length", `
cluster:
  name: edge
  node: a
  key_file: $SHORTKEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:4:13: cluster.key_file: malformed key file: $SHORTKEY: want 64 hex digits and a newline (65 bytes), got 9 bytes; write one with vigil keygen`}},

	{"key file readable by others", `
cluster:
  name: edge
  node: a
  key_file: $OPENKEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:4:13: cluster.key_file: unsafe key file permissions: $OPENKEY: mode 0644 is open to group or others (chmod 600 $OPENKEY)`}},

	{"missing cluster.name", `
cluster:
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:1:1: cluster.name: required`}},

	{"node not in nodes", `
cluster:
  name: edge
  node: c
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:3:9: cluster.node: "c" is not the id of an entry in cluster.nodes`}},

	{"two locators without two_node", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
`, []string{`vigil.yaml:5:3: cluster.nodes: 2 nodes and no witness: a lease needs a majority of locators, and 1 of 2 is not one, so the survivor of a failure could never become active; add a witness, or set two_node: true to accept split brain under a network partition`}},

	{"last_man_standing with three locators", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  last_man_standing: 10s
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
`, []string{`vigil.yaml:5:22: cluster.last_man_standing: last_man_standing needs at least 4 locators (nodes and witnesses), have 3: with 3, the membership it would shrink to, 2, still needs both, so a second failure takes the role away as before`}},

	{"last_man_standing shorter than the minimum", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  last_man_standing: 100ms
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}, {id: c, address: 192.0.2.14:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
`, []string{`vigil.yaml:5:22: cluster.last_man_standing: last_man_standing 100ms is shorter than the minimum, 250ms (2 × (token_timeout + lease + drift_margin)): a locator would leave the membership over a failover's silence`}},

	{"last_man_standing 0s", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  last_man_standing: 0s
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:5:22: cluster.last_man_standing: "0s": write off to keep every locator in the membership (the window is a positive duration, like 10s)`}},

	{"timing: drift margin not below the lease", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 150ms, lease: 10ms}
`, []string{
		`vigil.yaml:6:28: cluster.timing.token_interval: token_timeout 50ms must be at least 3 × token_interval 150ms (450ms)`,
		`vigil.yaml:6:42: cluster.timing.lease: lease 10ms must be at least 2 × token_interval 150ms (300ms)`,
		`vigil.yaml:6:42: cluster.timing.lease: drift_margin 15ms must be shorter than lease 10ms`,
	}},

	// The rules below were all accepted by vigil check before issue 11,
	// and then refused by the locator or node manager at start (or, for
	// ports and addresses, made them bind or claim the wrong thing).

	{"timing: token_timeout under 3 × token_interval", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 20ms, token_timeout: 50ms}
`, []string{`vigil.yaml:6:49: cluster.timing.token_timeout: token_timeout 50ms must be at least 3 × token_interval 20ms (60ms)`}},

	{"timing: token_timeout too short for a ring of six", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}, {id: c, address: 192.0.2.13:7400}, {id: d, address: 192.0.2.14:7400}, {id: e, address: 192.0.2.15:7400}, {id: f, address: 192.0.2.16:7400}]
  timing: {token_timeout: 55ms}
`, []string{`vigil.yaml:6:27: cluster.timing.token_timeout: token_timeout 55ms is too short for a ring of 6 nodes: after passing the token on, a node waits while each of the 5 others holds it for token_interval 10ms at least; at least 60ms, 85ms by default (docs/protocol.md, "Larger clusters")`}},

	{"timing: lease under 2 × token_interval", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 20ms, token_timeout: 60ms, lease: 30ms, drift_margin: 10ms}
`, []string{`vigil.yaml:6:62: cluster.timing.lease: lease 30ms must be at least 2 × token_interval 20ms (40ms)`}},

	{"timing: a token_interval the default token_timeout is too short for", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 20ms}
`, []string{`vigil.yaml:6:28: cluster.timing.token_interval: token_timeout 50ms must be at least 3 × token_interval 20ms (60ms)`}},

	{"timing: token_interval under the minimum", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_interval: 500us}
`, []string{`vigil.yaml:6:28: cluster.timing.token_interval: 500µs is shorter than the minimum, 1ms`}},

	{"timing: drift margin as long as the default lease", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {drift_margin: 60ms}
`, []string{`vigil.yaml:6:26: cluster.timing.drift_margin: drift_margin 60ms must be shorter than lease 60ms`}},

	{"more than 8 nodes", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
    - {id: c, address: 192.0.2.13:7400}
    - {id: d, address: 192.0.2.14:7400}
    - {id: e, address: 192.0.2.15:7400}
    - {id: f, address: 192.0.2.16:7400}
    - {id: g, address: 192.0.2.17:7400}
    - {id: h, address: 192.0.2.18:7400}
    - {id: i, address: 192.0.2.19:7400}
`, []string{`vigil.yaml:5:3: cluster.nodes: need 1..8 nodes (the wire format's limit), have 9`}},

	{"more than 8 locators: 5 nodes and 4 witnesses", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
    - {id: c, address: 192.0.2.13:7400}
    - {id: d, address: 192.0.2.14:7400}
    - {id: e, address: 192.0.2.15:7400}
  witnesses:
    - {id: v, address: 192.0.2.21:7400}
    - {id: w, address: 192.0.2.22:7400}
    - {id: x, address: 192.0.2.23:7400}
    - {id: y, address: 192.0.2.24:7400}
`, []string{`vigil.yaml:11:3: cluster.witnesses: 5 nodes and 4 witnesses: need 1..8 locators (the wire format's limit), have 9`}},

	{"port 65535: the locator port would wrap to 0", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:65535}]
  listen: 0.0.0.0:65535
`, []string{
		`vigil.yaml:5:28: cluster.nodes[0].address: "192.0.2.11:65535": port 65535 leaves no port for the locator, which listens on port+1: use 1..65534`,
		`vigil.yaml:6:11: cluster.listen: "0.0.0.0:65535": port 65535 leaves no port for the locator, which listens on port+1: use 1..65534`,
	}},

	{"a node's port is another node's locator port", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.11:7401}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
`, []string{`vigil.yaml:5:63: cluster.nodes[1].address: its node manager port 192.0.2.11:7401 is the locator port of cluster.nodes[0] (line 5): each host uses its port P for the node manager and P+1 for the locator, so leave a gap of two`}},

	{"a witness's locator port is a node's port, in IPv4-mapped form", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7401}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: "[::ffff:192.0.2.11]:7400"}]
`, []string{`vigil.yaml:6:32: cluster.witnesses[0].address: its locator port 192.0.2.11:7401 is the node manager port of cluster.nodes[0] (line 5): each host uses its port P for the node manager and P+1 for the locator, so leave a gap of two`}},

	{"an IPv4-mapped IPv6 address duplicating a peer", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: "[::ffff:192.0.2.11]:7400"}]
`, []string{`vigil.yaml:6:32: cluster.witnesses[0].address: duplicate address 192.0.2.11:7400 (first at line 5)`}},

	{"peer addresses no host has", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 0.0.0.0:7400}, {id: b, address: "[ff02::1]:7400"}]
`, []string{
		`vigil.yaml:5:28: cluster.nodes[0].address: "0.0.0.0:7400": the unspecified address reaches no host: give the address the others reach this host at`,
		`vigil.yaml:5:60: cluster.nodes[1].address: "[ff02::1]:7400": a multicast address is no host's address`,
	}},

	{"listen port differs from the host's entry", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  listen: 0.0.0.0:7500
`, []string{`vigil.yaml:6:11: cluster.listen: port 7500 is not the port of this host's entry cluster.nodes[0] (192.0.2.11:7400, line 5): the others send there`}},

	{"listen address differs from the host's entry", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  listen: 192.0.2.99:7400
`, []string{`vigil.yaml:6:11: cluster.listen: address 192.0.2.99 is not the address of this host's entry cluster.nodes[0] (192.0.2.11:7400, line 5): the others send there (0.0.0.0 or [::] listen on every address)`}},

	{"floating IPs that are a host's own address", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: "[2001:db8::13]:7400"}]
vips:
  - {address: 192.0.2.12/24, interface: eth0}
  - {address: "::ffff:192.0.2.11/120", interface: eth0}
  - {address: "2001:db8::13/64", interface: eth0}
`, []string{
		`vigil.yaml:8:15: vips[0].address: 192.0.2.12 is the address of cluster.nodes[1] (line 5): a floating IP must be an address no host has of its own`,
		`vigil.yaml:9:15: vips[1].address: 192.0.2.11 is the address of cluster.nodes[0] (line 5): a floating IP must be an address no host has of its own`,
		`vigil.yaml:10:15: vips[2].address: 2001:db8::13 is the address of cluster.witnesses[0] (line 6): a floating IP must be an address no host has of its own`,
	}},

	{"floating IPs no host can hold", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips:
  - {address: 0.0.0.0/0, interface: eth0}
  - {address: "::/0", interface: eth0}
  - {address: 192.0.2.100/0, interface: eth0}
  - {address: 127.0.0.2/8, interface: eth0}
  - {address: 224.0.0.18/24, interface: eth0}
  - {address: "fe80::100/64", interface: eth0}
  - {address: 192.0.2.255/24, interface: eth0}
  - {address: 192.0.2.0/24, interface: eth0}
  - {address: "::ffff:192.0.2.100/64", interface: eth0}
`, []string{
		`vigil.yaml:7:15: vips[0].address: "0.0.0.0/0" cannot be a floating IP: the unspecified address is no host's address`,
		`vigil.yaml:8:15: vips[1].address: "::/0" cannot be a floating IP: the unspecified address is no host's address`,
		`vigil.yaml:9:15: vips[2].address: "192.0.2.100/0" cannot be a floating IP: a /0 prefix would route every destination to the interface`,
		`vigil.yaml:10:15: vips[3].address: "127.0.0.2/8" cannot be a floating IP: a loopback address is local to each host`,
		`vigil.yaml:11:15: vips[4].address: "224.0.0.18/24" cannot be a floating IP: a multicast address is no host's address`,
		`vigil.yaml:12:15: vips[5].address: "fe80::100/64" cannot be a floating IP: a link-local address is not unique beyond one link`,
		`vigil.yaml:13:15: vips[6].address: "192.0.2.255/24" cannot be a floating IP: the broadcast address of 192.0.2.0/24 is no host's address`,
		`vigil.yaml:14:15: vips[7].address: "192.0.2.0/24" cannot be a floating IP: the network address of 192.0.2.0/24 is no host's address`,
		`vigil.yaml:15:15: vips[8].address: "::ffff:192.0.2.100/64" cannot be a floating IP: not a valid prefix (an IPv4-mapped address needs a length of at least 96)`,
	}},

	{"duplicate floating IP in IPv4-mapped form", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips:
  - {address: 192.0.2.100/24, interface: eth0}
  - {address: "::ffff:192.0.2.100/120", interface: eth1}
`, []string{`vigil.yaml:8:15: vips[1].address: duplicate address 192.0.2.100 (first at line 7)`}},

	{"control socket path longer than a unix socket path", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
runtime: {control_socket: /run/vigil/` + strings.Repeat("s", 108-len("/run/vigil/")) + `}
`, []string{`vigil.yaml:6:27: runtime.control_socket: 108 bytes is longer than a unix socket path can be (107 bytes)`}},

	{"lateness_warn_share out of range", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {lateness_warn_share: 120%}
`, []string{`vigil.yaml:6:32: control.lateness_warn_share: 120% is out of range 0..100% (0 turns the warning off)`}},
	{"lateness_warn_share not a share", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {lateness_warn_share: quarter}
`, []string{`vigil.yaml:6:32: control.lateness_warn_share: must be a share like 25% or 0.25, not "quarter"`}},
	{"sched_delay_warn below the scheduling watch's period", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
control: {sched_delay_warn: 5ms}
`, []string{`vigil.yaml:6:29: control.sched_delay_warn: threshold 5ms is below the timer period 10ms: lateness is measured once per period`}},

	{"an all-zero key", `
cluster:
  name: edge
  node: a
  key_file: $ZEROKEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`, []string{`vigil.yaml:4:13: cluster.key_file: weak key: $ZEROKEY: every byte is zero; write a random one with vigil keygen`}},

	{"duplicate process name", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - {name: app, command: [/bin/sh]}
  - {name: app, command: [/bin/sh]}
`, []string{`vigil.yaml:8:12: processes[1].name: duplicate process name "app" (first at line 7)`}},

	{"bad process name", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - {name: ../etc, command: [/bin/sh]}
`, []string{`vigil.yaml:7:12: processes[0].name: "../etc" must start with a letter or digit and use only A-Z a-z 0-9 _ . - (at most 64 characters)`}},

	{"restart policy typo", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - name: app
    command: [/bin/sh]
    restart: on_failure
`, []string{`vigil.yaml:9:14: processes[0].restart: "on_failure" is not one of always, on-failure or never`}},

	{"health with two kinds", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - name: app
    command: [/bin/sh]
    health:
      tcp: 127.0.0.1:5060
      http: http://127.0.0.1:8080/
`, []string{`vigil.yaml:11:7: processes[0].health.http: only one check kind per process: tcp is already set`}},

	{"health timeout not below interval", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - name: app
    command: [/bin/sh]
    health:
      sip_options: {target: "sip:127.0.0.1", timeout: 1s}
`, []string{`vigil.yaml:10:55: processes[0].health.sip_options.timeout: timeout 1s must be shorter than interval 1s`}},

	{"command not found", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - {name: a, command: [vigil-no-such-command]}
  - {name: b, command: [/nonexistent/kamailio]}
  - {name: c, command: [bin/kamailio]}
hooks:
  on_active: [[/etc/passwd]]
`, []string{
		`vigil.yaml:7:25: processes[0].command[0]: "vigil-no-such-command" not found in PATH`,
		`vigil.yaml:8:25: processes[1].command[0]: "/nonexistent/kamailio" does not exist`,
		`vigil.yaml:9:25: processes[2].command[0]: "bin/kamailio" must be an absolute path or a command name found in PATH`,
		`vigil.yaml:11:16: hooks.on_active[0][0]: "/etc/passwd" is not an executable file`,
	}},

	{"unknown user and group", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
processes:
  - {name: app, command: [/bin/sh], user: vigil-no-such-user, group: vigil-no-such-group}
`, []string{
		`vigil.yaml:7:43: processes[0].user: unknown user "vigil-no-such-user"`,
		`vigil.yaml:7:70: processes[0].group: unknown group "vigil-no-such-group"`,
	}},

	{"duplicate YAML key", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  node: b
`, []string{`vigil.yaml:6:3: cluster.node: duplicate key (first at line 3)`}},

	{"witness with processes and vips", `
cluster:
  name: edge
  node: w
  role: witness
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
vips: [{address: 192.0.2.100/24, interface: eth0}]
processes: [{name: app, command: [/bin/sh]}]
`, []string{
		`vigil.yaml:8:1: vips: a witness holds no floating IPs: must be empty`,
		`vigil.yaml:9:1: processes: a witness supervises no applications: must be empty`,
	}},

	{"runtime cgroup escaping its parent, bad log level, bad cpus", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
runtime: {cgroup: ../../system.slice, control_group: "sip ops"}
log: {level: verbose}
control: {cpus: "0-1,x", cpu_weight: 20000}
`, []string{
		`vigil.yaml:6:19: runtime.cgroup: "../../system.slice" is not a relative cgroup path of [A-Za-z0-9_.-] segments like "vigil" or "vigil/a"`,
		`vigil.yaml:6:54: runtime.control_group: "sip ops" is not a group name: letters, digits, _ . - (not first), at most 32 characters; "" for root only`,
		`vigil.yaml:7:14: log.level: "verbose" is not one of debug, info, warn or error`,
		`vigil.yaml:8:17: control.cpus: "0-1,x" is not a cpu list like "0" or "0-1,3"`,
		`vigil.yaml:8:38: control.cpu_weight: 20000 is out of range 1..10000`,
	}},

	// services: (issue: services in the configuration).

	{"services and the top-level vips", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips: [{address: 192.0.2.100/24, interface: eth0}]
services:
  - {name: s, vips: [{address: 192.0.2.101/24, interface: eth0}]}
`, []string{`vigil.yaml:7:1: services: the top-level vips (line 6) are the short form of one service, "default", and services: replaces it: move those addresses into a service's vips`}},

	{"an empty services list on a node", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services: []
`, []string{`vigil.yaml:6:1: services: lists no service: list one, or leave services out (the top-level vips are then the one service, "default")`}},

	{"two services, one address in both", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - name: customers-1
    vips: [{address: 192.0.2.100/24, interface: eth0}]
  - name: customers-2
    vips: [{address: "::ffff:192.0.2.100/120", interface: eth1}]
`, []string{
		`vigil.yaml:10:22: services[1].vips[0].address: 192.0.2.100 is also in services[0].vips[0].address (line 8): an address belongs to one service`,
	}},

	{"a service: no vips, unknown process, a witness and an unknown node in prefer, duplicates", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
services:
  - name: s
    vips: []
    processes: [kamailo, kamailio, kamailio]
    prefer: [b, w, c, b]
processes:
  - {name: kamailio, command: [/bin/sh]}
`, []string{
		`vigil.yaml:9:5: services[0].vips: lists no address: a service is a group of floating IPs, give it at least one`,
		`vigil.yaml:10:17: services[0].processes[0]: "kamailo" is not the name of an entry of processes (did you mean kamailio?)`,
		`vigil.yaml:10:36: services[0].processes[2]: duplicate process "kamailio" (first at line 10)`,
		`vigil.yaml:11:17: services[0].prefer[1]: "w" is a witness: it runs no node manager and never holds a service`,
		`vigil.yaml:11:20: services[0].prefer[2]: "c" is not the id of an entry in cluster.nodes`,
		`vigil.yaml:11:23: services[0].prefer[3]: duplicate node "b" (first at line 11)`,
	}},

	{"a service: missing name and vips, empty lists", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - processes: []
    prefer: []
`, []string{
		`vigil.yaml:7:5: services[0].name: required`,
		`vigil.yaml:7:5: services[0].processes: lists no process: leave processes out for the default, every process with critical: true`,
		`vigil.yaml:7:5: services[0].vips: required: the service's floating IPs, like [{address: 192.0.2.100/24, interface: eth0}]`,
		`vigil.yaml:8:5: services[0].prefer: lists no node: leave prefer out for the order of cluster.nodes (prefer only orders the nodes: those it does not list follow, in cluster.nodes order)`,
	}},

	{"a service: bad name, a floating IP that is a host's address, a bad address", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - name: ../s
    vips:
      - {address: 192.0.2.11/24, interface: eth0}
      - {address: 192.0.2.0/24, interface: eth0}
      - {address: 192.0.2.11/24, interface: eth0}
`, []string{
		`vigil.yaml:7:11: services[0].name: "../s" must start with a letter or digit and use only A-Z a-z 0-9 _ . - (at most 64 characters)`,
		`vigil.yaml:9:19: services[0].vips[0].address: 192.0.2.11 is the address of cluster.nodes[0] (line 5): a floating IP must be an address no host has of its own`,
		`vigil.yaml:10:19: services[0].vips[1].address: "192.0.2.0/24" cannot be a floating IP: the network address of 192.0.2.0/24 is no host's address`,
		`vigil.yaml:11:19: services[0].vips[2].address: duplicate address 192.0.2.11 (first at line 9)`,
	}},

	{"failback: 0s, a number, on", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - {name: s, vips: [{address: 192.0.2.100/24, interface: eth0}], failback: 0s}
  - {name: s, vips: [{address: 192.0.2.101/24, interface: eth0}], failback: 30}
  - {name: t, vips: [{address: 192.0.2.102/24, interface: eth0}], failback: on}
`, []string{
		`vigil.yaml:7:77: services[0].failback: "0s": write off for no failback (a failback delay is a positive duration, like 30s)`,
		`vigil.yaml:8:12: services[1].name: duplicate service name "s" (first at line 7)`,
		`vigil.yaml:8:77: services[1].failback: "30" is not off or a duration like 30s`,
		`vigil.yaml:9:77: services[2].failback: "on" is not off or a duration like 30s`,
	}},

	{"failback shorter than token_timeout", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {token_timeout: 100ms}
services:
  - name: s
    vips: [{address: 192.0.2.100/24, interface: eth0}]
    failback: 80ms
`, []string{`vigil.yaml:10:15: services[0].failback: failback 80ms is shorter than cluster.timing.token_timeout (100ms): a node the ring has not yet seen pass the token would get the service back; write off, or 100ms or more`}},

	{"failback shorter than token_timeout, in a later service", `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}, {id: c, address: 192.0.2.13:7400}]
  timing: {token_timeout: 100ms}
services:
  - {name: s, vips: [{address: 192.0.2.100/24, interface: eth0}], failback: 100ms}
  - {name: t, vips: [{address: 192.0.2.101/24, interface: eth0}], failback: 80ms}
  - {name: u, vips: [{address: 192.0.2.102/24, interface: eth0}], failback: 5ms}
`, []string{
		`vigil.yaml:9:77: services[1].failback: failback 80ms is shorter than cluster.timing.token_timeout (100ms): a node the ring has not yet seen pass the token would get the service back; write off, or 100ms or more`,
		`vigil.yaml:10:77: services[2].failback: failback 5ms is shorter than cluster.timing.token_timeout (100ms): a node the ring has not yet seen pass the token would get the service back; write off, or 100ms or more`,
	}},

	{"witness with services", `
cluster:
  name: edge
  node: w
  role: witness
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
services:
  - {name: s, vips: [{address: 192.0.2.100/24, interface: eth0}]}
`, []string{`vigil.yaml:9:5: services[0]: a witness holds no floating IPs and runs no application: list the services by name only, like {name: s}: it runs a locator for each`}},

	{"five services, a long name", `
cluster:
  name: a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - {name: s0, vips: [{address: 192.0.2.100/24, interface: eth0}]}
  - {name: s1, vips: [{address: 192.0.2.101/24, interface: eth0}]}
  - {name: s2, vips: [{address: 192.0.2.102/24, interface: eth0}]}
  - {name: s3, vips: [{address: 192.0.2.103/24, interface: eth0}]}
  - {name: s4, vips: [{address: 192.0.2.104/24, interface: eth0}]}
`, []string{
		`vigil.yaml:7:12: services[0].name: with the cluster's name, "s0" is 65 bytes, more than 64: with several services, each is named "a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv/s0" on the wire; shorten one of them`,
		`vigil.yaml:8:12: services[1].name: with the cluster's name, "s1" is 65 bytes, more than 64: with several services, each is named "a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv/s1" on the wire; shorten one of them`,
		`vigil.yaml:9:12: services[2].name: with the cluster's name, "s2" is 65 bytes, more than 64: with several services, each is named "a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv/s2" on the wire; shorten one of them`,
		`vigil.yaml:10:12: services[3].name: with the cluster's name, "s3" is 65 bytes, more than 64: with several services, each is named "a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv/s3" on the wire; shorten one of them`,
		`vigil.yaml:11:5: services[4]: at most 4 services in a cluster: each has a node manager, ports and kernel lease sets of its own on every host`,
		`vigil.yaml:11:12: services[4].name: with the cluster's name, "s4" is 65 bytes, more than 64: with several services, each is named "a-cluster-name-that-is-long-enough-to-leave-little-room-for-sv/s4" on the wire; shorten one of them`,
	}},

	{"YAML syntax error", `
cluster:
  name: edge
   node: a
`, []string{`vigil.yaml:3: YAML syntax: mapping values are not allowed in this context`}},

	{"empty file", ``, []string{`vigil.yaml:1:1: file is empty: cluster is required`}},

	{"multiple errors in one file are all reported, in file order", `
cluster:
  name: Edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  witnesses: [{id: w, address: 192.0.2.11:7400}]
vips:
  - {address: 192.0.2.100/24, interface: eth0}
  - {address: 192.0.2.100/32, interface: eth1}
processes:
  - name: app
    command: []
    stop_signal: SIGFOO
    health: {}
`, []string{
		`vigil.yaml:2:9: cluster.name: "Edge" must be lowercase letters, digits and '-', at most 63 characters`,
		`vigil.yaml:6:32: cluster.witnesses[0].address: duplicate address 192.0.2.11:7400 (first at line 5)`,
		`vigil.yaml:9:15: vips[1].address: duplicate address 192.0.2.100 (first at line 8)`,
		`vigil.yaml:12:14: processes[0].command: must not be empty`,
		`vigil.yaml:13:18: processes[0].stop_signal: "SIGFOO" is not a signal name like SIGTERM, TERM or 15`,
		`vigil.yaml:14:5: processes[0].health: one of sip_options, exec, tcp or http is required`,
	}},
}

func TestParseBad(t *testing.T) {
	keys := testKeys(t)
	t.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.TrimPrefix(tc.yaml, "\n")
			c, err := Parse("vigil.yaml", []byte(keys.Replace(src)))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = keys.Replace(w)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if err.Error() != strings.Join(want, "\n") {
				t.Errorf("Errors.Error() does not join the lines:\n%s", err)
			}
		})
	}
}

// The edges of the rules added for issue 11 are accepted: the last port with
// a successor, ports two apart on one address, listen as the entry in
// another spelling or on every address, the longest socket path, a VIP in
// a host's subnet.
func TestParseEdgesAccepted(t *testing.T) {
	keys := testKeys(t)
	sock := "/run/" + strings.Repeat("s", maxSocketPath-len("/run/"))
	for name, src := range map[string]string{
		"port 65534": `
cluster: {name: edge, node: a, key_file: $KEY, nodes: [{id: a, address: "192.0.2.11:65534"}]}
`,
		"one host address, ports two apart": `
cluster:
  name: edge
  node: b
  key_file: $KEY
  nodes: [{id: a, address: 127.0.0.1:7400}, {id: b, address: 127.0.0.1:7402}]
  witnesses: [{id: w, address: 127.0.0.1:7403}]
`,
		"a witness below a node: it binds only P+1": `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7401}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.11:7399}]
`,
		"listen as the entry, IPv4-mapped": `
cluster: {name: edge, node: a, key_file: $KEY, listen: "[::ffff:192.0.2.11]:7400", nodes: [{id: a, address: 192.0.2.11:7400}]}
`,
		"listen on every IPv6 address for an IPv4 entry": `
cluster: {name: edge, node: a, key_file: $KEY, listen: "[::]:7400", nodes: [{id: a, address: 192.0.2.11:7400}]}
`,
		"8 nodes, 8 locators, the tightest timings": `
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
    - {id: c, address: 192.0.2.13:7400}
    - {id: d, address: 192.0.2.14:7400}
    - {id: e, address: 192.0.2.15:7400}
    - {id: f, address: 192.0.2.16:7400}
    - {id: g, address: 192.0.2.17:7400}
    - {id: h, address: 192.0.2.18:7400}
  timing: {token_interval: 1ms, token_timeout: 10ms, lease: 2ms, drift_margin: 1ms}
`,
		"the longest control socket path, the shortest sched_delay_warn": `
cluster: {name: edge, node: a, key_file: $KEY, nodes: [{id: a, address: 192.0.2.11:7400}]}
control: {sched_delay_warn: 10ms}
runtime: {control_socket: ` + sock + `}
`,
		"VIPs in the hosts' subnets": `
cluster: {name: edge, node: a, key_file: $KEY, nodes: [{id: a, address: "192.0.2.11:7400"}]}
vips:
  - {address: 192.0.2.12/24, interface: eth0}
  - {address: 192.0.2.254/24, interface: eth0}
  - {address: 198.51.100.0/31, interface: eth1}
  - {address: "::ffff:203.0.113.5/120", interface: eth1}
  - {address: "2001:db8::/64", interface: eth0}
`,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("vigil.yaml", []byte(keys.Replace(src)))
			if err != nil {
				t.Fatal(err)
			}
			assertRunnable(t, c)
		})
	}
}

// assertRunnable checks c against what the control plane does at start
// with it: the protocol's rules, the floating-IP rule, the scheduling watch,
// the locator ports. A file Parse accepts must pass all of them.
func assertRunnable(t *testing.T, c *Config) {
	t.Helper()
	if err := c.Protocol().Validate(); err != nil {
		t.Errorf("protocol refuses an accepted config: %v", err)
	}
	for _, v := range c.VIPs {
		if _, err := netfloat.Normalize(netfloat.VIP{Prefix: netip.MustParsePrefix(v.Address), Interface: v.Interface}); err != nil {
			t.Errorf("netfloat refuses an accepted VIP: %v", err)
		}
	}
	if err := (schedwatch.Config{Threshold: c.Control.SchedDelayWarn}).Validate(); err != nil {
		t.Errorf("schedwatch refuses an accepted sched_delay_warn: %v", err)
	}
	for _, p := range append(c.Locators(), Peer{ID: "listen", Address: c.Cluster.Listen}) {
		ap, err := netip.ParseAddrPort(p.Address)
		if err != nil {
			t.Errorf("%s: %v", p.ID, err)
			continue
		}
		if _, ok := LocatorPort(ap.Port()); !ok {
			t.Errorf("%s: port %d has no locator port", p.ID, ap.Port())
		}
	}
	if len(c.Runtime.ControlSocket) > maxSocketPath {
		t.Errorf("control socket path of %d bytes", len(c.Runtime.ControlSocket))
	}
}

func TestTwoNodeOptIn(t *testing.T) {
	keys := testKeys(t)
	src := keys.Replace(`
cluster:
  name: edge
  node: b
  key_file: $KEY
  two_node: true
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
`)
	c, err := Parse("vigil.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster.TwoNode || c.Self().ID != "b" {
		t.Errorf("got %+v", c.Cluster)
	}
	// two_node with a witness is a contradiction, not a silent no-op.
	src = strings.Replace(src, "two_node: true\n", "two_node: true\n  witnesses: [{id: w, address: 192.0.2.13:7400}]\n", 1)
	_, err = Parse("vigil.yaml", []byte(src))
	want := "vigil.yaml:6:13: cluster.two_node: two_node: true needs exactly 2 nodes and no witnesses (have 2 and 1)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestLoad(t *testing.T) {
	keys := testKeys(t)
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	src := keys.Replace("cluster: {name: x, node: a, key_file: $KEY, nodes: [{id: a, address: \"192.0.2.1:1\"}]}\n")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != path {
		t.Errorf("Source = %q", c.Source)
	}
	if _, err := Load(path + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("cluster: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":1:1: cluster.name: required") {
		t.Errorf("Load(bad) error %v does not name the file", err)
	}
}

// Aliases are followed, but a document that expands past the limit is
// refused instead of walked (billion laughs).
func TestAliases(t *testing.T) {
	keys := testKeys(t)
	src := keys.Replace(`
cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [&peer {id: a, address: 192.0.2.11:7400}]
processes:
  - {name: a, command: &cmd [/bin/sh, -c, "sleep 1"]}
  - {name: b, command: *cmd}
`)
	c, err := Parse("a.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Processes[1].Command, []string{"/bin/sh", "-c", "sleep 1"}) {
		t.Errorf("alias not followed: %v", c.Processes[1].Command)
	}
	var b strings.Builder
	b.WriteString("a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	for i, prev := 'b', 'a'; i <= 'k'; i, prev = i+1, i {
		b.WriteString(string(i) + ": &" + string(i) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + string(prev))
		}
		b.WriteString("]\n")
	}
	_, err = Parse("laughs.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "document too large") {
		t.Errorf("billion laughs: got %v", err)
	}
}

func TestValueParsers(t *testing.T) {
	sizes := map[string]int64{"": 0, "65536": 65536, "64Mi": 64 << 20, "1Gi": 1 << 30, "512M": 512e6, "1G": 1e9, "2k": 2000, "3Ki": 3072}
	for in, want := range sizes {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "1.5G", "G", "1 G", "10Zi", "99999999999Ti", "0x10"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	for _, in := range []string{"0", "0-1,3", "7", "2-2"} {
		if err := parseCPUList(in); err != nil {
			t.Errorf("parseCPUList(%q): %v", in, err)
		}
	}
	for _, in := range []string{",", "0,", "1-0", "a", "-1", "0-99999", " 1"} {
		if err := parseCPUList(in); err == nil {
			t.Errorf("parseCPUList(%q) accepted", in)
		}
	}
	sigs := map[string]string{"SIGTERM": "SIGTERM", "TERM": "SIGTERM", "term": "SIGTERM", "15": "SIGTERM", "9": "SIGKILL", "SIGUSR1": "SIGUSR1", "hup": "SIGHUP"}
	for in, want := range sigs {
		if got, err := canonicalSignal(in); err != nil || got != want {
			t.Errorf("canonicalSignal(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "99", "SIG", "SIGFOO", "-15"} {
		if _, err := canonicalSignal(in); err == nil {
			t.Errorf("canonicalSignal(%q) accepted", in)
		}
	}
	for _, in := range []string{"sip:127.0.0.1:5060", "sip:127.0.0.1", "sips:proxy.example.org", "sip:ping@[2001:db8::1]:5060;transport=tcp", "sip:[::1]"} {
		if err := checkSIPURI(in); err != nil {
			t.Errorf("checkSIPURI(%q): %v", in, err)
		}
	}
	for _, in := range []string{"127.0.0.1:5060", "sip:", "sip:host:0", "sip:host:99999", "http://x", "sip:a b"} {
		if err := checkSIPURI(in); err == nil {
			t.Errorf("checkSIPURI(%q) accepted", in)
		}
	}
	for _, in := range []string{"10%", "150%", "400%"} {
		if err := parseCPUMax(in); err != nil {
			t.Errorf("parseCPUMax(%q): %v", in, err)
		}
	}
	for _, in := range []string{"0%", "%", "150", "1.5%", "-10%"} {
		if err := parseCPUMax(in); err == nil {
			t.Errorf("parseCPUMax(%q) accepted", in)
		}
	}
}

// The example shipped in the packages must parse as shipped, and claim
// nothing: no floating IPs, no processes.
func TestPackagedExample(t *testing.T) {
	data, err := os.ReadFile("../packaging/vigil.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := testKeys(t)
	const shipped = "key_file: " + DefaultKeyFile
	if !strings.Contains(string(data), shipped) {
		t.Fatalf("packaging/vigil.yaml does not contain %q", shipped)
	}
	src := strings.Replace(string(data), shipped, keys.Replace("key_file: $KEY"), 1)
	c, err := Parse("packaging/vigil.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	assertRunnable(t, c)
	if len(c.VIPs) != 0 || len(c.Processes) != 0 || len(c.Hooks.OnActive)+len(c.Hooks.OnStandby)+len(c.Hooks.OnFault) != 0 {
		t.Errorf("the shipped example claims something: vips %v processes %v hooks %+v", c.VIPs, c.Processes, c.Hooks)
	}
	if len(c.Locators()) != 1 {
		t.Errorf("the shipped example is not a one-node cluster: %v", c.Locators())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("cluster: {name: x, node: a, nodes: [{id: a, address: \"192.0.2.1:1\"}]}\n"))
	// A valid seed, so that mutations reach the rules checked after the key.
	key := filepath.Join(f.TempDir(), "cluster.key")
	if err := WriteKeyFile(key); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("cluster: {name: x, node: a, key_file: " + key + ", listen: \"0.0.0.0:7400\", " +
		"nodes: [{id: a, address: \"192.0.2.1:7400\"}, {id: b, address: \"192.0.2.1:7402\"}], witnesses: [{id: w, address: \"[::ffff:192.0.2.3]:7400\"}], " +
		"timing: {token_interval: 10ms, token_timeout: 30ms, lease: 20ms, drift_margin: 5ms}}\n" +
		"vips: [{address: 192.0.2.100/24, interface: eth0}]\ncontrol: {sched_delay_warn: 10ms}\n"))
	f.Add([]byte("cluster: {name: x, node: a, key_file: " + key + ", " +
		"nodes: [{id: a, address: \"192.0.2.1:7400\"}, {id: b, address: \"192.0.2.2:7400\"}], witnesses: [{id: w, address: \"192.0.2.3:7400\"}]}\n" +
		"services: [{name: s, vips: [{address: 192.0.2.100/24, interface: eth0}], processes: [p], prefer: [b], failback: 50ms}]\n" +
		"processes: [{name: p, command: [/bin/sh]}]\n"))
	for _, tc := range badConfigs {
		f.Add([]byte(tc.yaml))
	}
	if data, err := os.ReadFile("../packaging/vigil.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("<<: {cluster: 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
		if c != nil {
			assertRunnable(t, c)
		}
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error is %T %v, want non-empty Errors", err, err)
			}
		}
	})
}

// The annotated example of docs/configuration.md must stay valid. It names
// users and programs this test host lacks; only those errors are allowed.
func TestDocumentedExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Annotated example")
	if !ok {
		t.Fatal("no Annotated example section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	example, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml block in the Annotated example section")
	}
	keys := testKeys(t)
	example = strings.Replace(example, "key_file: "+DefaultKeyFile, keys.Replace("key_file: $KEY"), 1)
	_, err = Parse("configuration.md", []byte(example))
	if err == nil {
		return
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatal(err)
	}
	for _, e := range errs {
		host := strings.Contains(e.Msg, "not found in PATH") || strings.Contains(e.Msg, "does not exist") ||
			strings.HasPrefix(e.Msg, "unknown user") || strings.HasPrefix(e.Msg, "unknown group")
		if !host {
			t.Errorf("documented example: %v", e)
		} else {
			t.Logf("allowed on this host: %v", e)
		}
	}
}

// Keys walks every section: a section added to the parser but not to
// schemaProbe would leave its keys out of the documentation tests.
func TestKeysCoverEverySection(t *testing.T) {
	k := Keys()
	if len(k[""]) < 10 {
		t.Fatalf("top-level keys: %v", k[""])
	}
	for _, sec := range k[""] {
		if k[sec] == nil && k[sec+"[]"] == nil {
			t.Errorf("section %s: no keys recorded (add it to schemaProbe)", sec)
		}
	}
	if !contains(k["runtime"], "control_group") || !contains(k["processes[].backoff"], "fatal_after") {
		t.Errorf("runtime %v, processes[].backoff %v", k["runtime"], k["processes[].backoff"])
	}
}

// Left at its default, token_timeout is the ring's (protocol.
// DefaultTokenTimeoutFor); set, it is what the file says.
func TestTokenTimeoutDefaultFollowsTheRing(t *testing.T) {
	keys := testKeys(t)
	for _, tc := range []struct {
		nodes  int
		timing string
		want   time.Duration
	}{
		{2, "", 50 * time.Millisecond},
		{3, "", 50 * time.Millisecond},
		{5, "", 70 * time.Millisecond},
		{8, "", 115 * time.Millisecond},
		{5, "\n  timing: {token_timeout: 60ms}", 60 * time.Millisecond},
		{5, "\n  timing: {token_interval: 5ms}", 50 * time.Millisecond},
	} {
		var nodes []string
		for i := range tc.nodes {
			nodes = append(nodes, fmt.Sprintf("{id: n%d, address: 192.0.2.%d:7400}", i, 11+i))
		}
		twoNode := ""
		if tc.nodes == 2 {
			twoNode = "\n  two_node: true"
		}
		src := fmt.Sprintf("cluster:\n  name: ring\n  node: n0\n  key_file: $KEY%s\n  nodes: [%s]%s\n", twoNode, strings.Join(nodes, ", "), tc.timing)
		c, err := Parse("vigil.yaml", []byte(keys.Replace(src)))
		if err != nil {
			t.Fatalf("%d nodes%s: %v", tc.nodes, tc.timing, err)
		}
		if got := c.Cluster.Timing.TokenTimeout; got != tc.want {
			t.Errorf("%d nodes%s: token_timeout %v, want %v", tc.nodes, tc.timing, got, tc.want)
		}
		if got := c.Protocol().TokenTimeout; got != tc.want {
			t.Errorf("%d nodes%s: the protocol's token timeout %v, want %v", tc.nodes, tc.timing, got, tc.want)
		}
	}
}

// Each service after the first runs as a cluster of its own on the same
// hosts: its name on the wire, every host's ports shifted by two per
// service, its own state directory, its own floating IPs; the first is
// the file as it is.
func TestForService(t *testing.T) {
	keys := testKeys(t)
	src := `
cluster:
  name: duo
  node: a
  key_file: $KEY
  listen: 0.0.0.0:7400
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
services:
  - {name: voice, vips: [{address: 192.0.2.100/24, interface: eth0}], prefer: [a]}
  - {name: data, vips: [{address: 192.0.2.101/24, interface: eth0}], prefer: [b], failback: 2s}
runtime: {state_dir: /var/lib/vigil}
`
	c, err := Parse("vigil.yaml", []byte(keys.Replace(src)))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServiceCount() != 2 || len(c.VIPs) != 2 {
		t.Fatalf("services %d, vips %v", c.ServiceCount(), c.VIPs)
	}
	first, err := c.ForService(0)
	if err != nil {
		t.Fatal(err)
	}
	// Named, so that a host listing the services in another order does not
	// take part in the first one's elections with another's addresses;
	// its ports are the host's own.
	if first.Cluster.Name != "duo/voice" || first.Cluster.Nodes[0].Address != "192.0.2.11:7400" || first.Cluster.Listen != "0.0.0.0:7400" ||
		first.Runtime.StateDir != "/var/lib/vigil/service-voice" ||
		len(first.VIPs) != 1 || first.VIPs[0].Address != "192.0.2.100/24" || first.Slot != 0 {
		t.Errorf("service 0: %+v", first)
	}
	data, err := c.ForService(1)
	if err != nil {
		t.Fatal(err)
	}
	if data.Cluster.Name != "duo/data" || data.Slot != 1 || data.Runtime.StateDir != "/var/lib/vigil/service-data" || data.Cluster.Listen != "0.0.0.0:7402" {
		t.Errorf("service 1: name %q slot %d state %q listen %q", data.Cluster.Name, data.Slot, data.Runtime.StateDir, data.Cluster.Listen)
	}
	for _, p := range append(data.Cluster.Nodes, data.Cluster.Witnesses...) {
		if !strings.HasSuffix(p.Address, ":7402") {
			t.Errorf("service 1's %s at %s, want port 7402", p.ID, p.Address)
		}
	}
	if len(data.VIPs) != 1 || data.VIPs[0].Address != "192.0.2.101/24" {
		t.Errorf("service 1's VIPs %v", data.VIPs)
	}
	pc := data.Protocol()
	if pc.Cluster != "duo/data" || strings.Join(pc.Nodes, ",") != "b,a" || pc.Failback != 2*time.Second {
		t.Errorf("service 1's protocol: cluster %q nodes %v failback %v", pc.Cluster, pc.Nodes, pc.Failback)
	}
	if c.Cluster.Nodes[0].Address != "192.0.2.11:7400" || c.Cluster.Name != "duo" {
		t.Error("ForService changed the configuration it narrowed")
	}
	// Hooks get cluster.name (VIGIL_CLUSTER), not the wire name.
	if first.ClusterName() != "duo" || data.ClusterName() != "duo" || c.ClusterName() != "duo" {
		t.Errorf("cluster names: %q %q %q, want duo", first.ClusterName(), data.ClusterName(), c.ClusterName())
	}
	if _, err := c.ForService(2); err == nil {
		t.Error("ForService(2) of two services: no error")
	}

	// A witness lists the services by name, for a locator each.
	w, err := Parse("vigil.yaml", []byte(keys.Replace(`
cluster:
  name: duo
  node: w
  role: witness
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
services: [{name: voice}, {name: data}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	wd, err := w.ForService(1)
	if err != nil || w.ServiceCount() != 2 || wd.Cluster.Name != "duo/data" || wd.Cluster.Witnesses[0].Address != "192.0.2.13:7402" || len(wd.VIPs) != 0 {
		t.Errorf("witness, service 1: %+v %v", wd, err)
	}
	if wv, err := w.ForService(0); err != nil || wv.Cluster.Name != "duo/voice" || wv.Cluster.Witnesses[0].Address != "192.0.2.13:7400" {
		t.Errorf("witness, service 0: %+v %v", wv, err)
	}

	// One service, from services: or vips:, is the cluster itself, as
	// before there were several: same name on the wire, same state.
	for _, svcs := range []string{
		"services: [{name: voice, vips: [{address: 192.0.2.100/24, interface: eth0}]}]",
		"vips: [{address: 192.0.2.100/24, interface: eth0}]",
	} {
		one, err := Parse("vigil.yaml", []byte(keys.Replace(`
cluster:
  name: duo
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
runtime: {state_dir: /var/lib/vigil}
`+svcs+"\n")))
		if err != nil {
			t.Fatal(err)
		}
		o, err := one.ForService(0)
		if err != nil || o.Cluster.Name != "duo" || o.Runtime.StateDir != "/var/lib/vigil" || o.Protocol().Cluster != "duo" {
			t.Errorf("%s: service 0: %+v %v", svcs, o, err)
		}
	}
}

// Service i uses ports P+2i and P+2i+1 on every host: they must not run
// into another host's on the same address, nor past 65535.
func TestServicePorts(t *testing.T) {
	keys := testKeys(t)
	for _, tc := range []struct {
		name, nodes string
		want        string
	}{
		{"hosts two ports apart on one address", "[{id: a, address: 127.0.0.1:7400}, {id: b, address: 127.0.0.1:7402}]",
			`vigil.yaml:5:62: cluster.nodes[1].address: its service 0's node manager port 127.0.0.1:7402 is the service 1's node manager port of cluster.nodes[0] (line 5): each host uses its port P for the node manager and P+1 for the locator, so with 2 services, leave a gap of 4`},
		{"no room at the top", "[{id: a, address: 192.0.2.11:65533}, {id: b, address: 192.0.2.12:7400}]",
			`vigil.yaml:5:28: cluster.nodes[0].address: port 65533 leaves no room for the 2 services' ports: each uses two, P+2i and P+2i+1, up to 65536; use a port under 65533`},
	} {
		src := fmt.Sprintf(`
cluster:
  name: duo
  node: a
  nodes: %s
  two_node: true
  key_file: $KEY
services:
  - {name: voice, vips: [{address: 192.0.2.100/24, interface: eth0}]}
  - {name: data, vips: [{address: 192.0.2.101/24, interface: eth0}]}
`, tc.nodes)
		_, err := Parse("vigil.yaml", []byte(keys.Replace(src)))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		}
	}
}

// One locator and one node manager serve every service of a host: two
// realtime groups on a node whatever the number of services, so the
// default budget does not shrink with them, and a file's is taken as set.
func TestRTBudgetNotSharedByServices(t *testing.T) {
	keys := testKeys(t)
	svcs := func(n int) string {
		var b strings.Builder
		b.WriteString("services:\n")
		for i := range n {
			fmt.Fprintf(&b, "  - {name: s%d, vips: [{address: 192.0.2.%d/24, interface: eth0}]}\n", i, 100+i)
		}
		return b.String()
	}
	head := "cluster: {name: rt, node: a, key_file: $KEY, nodes: [{id: a, address: 192.0.2.11:7400}]}\n"
	for n := 1; n <= 4; n++ {
		c, err := Parse("vigil.yaml", []byte(keys.Replace(head+svcs(n))))
		if err != nil {
			t.Fatalf("%d services: %v", n, err)
		}
		if c.Control.RTBudget != 300*time.Millisecond {
			t.Errorf("%d services: rt_budget %v, want the default 300ms", n, c.Control.RTBudget)
		}
	}
	c, err := Parse("vigil.yaml", []byte(keys.Replace(head+"control: {rt_budget: 400ms}\n"+svcs(4))))
	if err != nil {
		t.Fatalf("rt_budget 400ms with 4 services: %v", err)
	}
	if c.Control.RTBudget != 400*time.Millisecond {
		t.Errorf("rt_budget 400ms with 4 services: %v", c.Control.RTBudget)
	}
}
