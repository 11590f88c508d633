package config

import (
	"reflect"
	"sort"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// everyKeyNode sets every key a node's file can have to a value other
// than its default (with its sibling keys, so that leaving one out changes
// the result): the health timings at health level and in sip_options are
// in different processes, since sip_options' own win.
const everyKeyNode = `
cluster:
  name: sip-edge
  node: b
  key_file: $KEY
  listen: 0.0.0.0:7400
  two_node: true
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: "[2001:db8::12]:7400"}
  timing: {token_interval: 5ms, token_timeout: 100ms, lease: 300ms, drift_margin: 40ms}
vips:
  - {address: 192.0.2.100/24, interface: eth0}
announce: {count: 5, interval: 50ms, refresh: 10s, probe: 20ms, handover_gap: 50ms}
control: {cpu_weight: 5000, io_weight: 2000, cpus: "0-1,3", memory_min: 128Mi, realtime: false, sched_delay_warn: 20ms, rt_budget: 150ms, lateness_warn_share: 0.1}
apps: {cpu_weight: 50, io_weight: 20, cpu_max: "150%", memory_max: 2G, pids_max: 4096}
processes:
  - name: kamailio
    command: [/bin/sh, -c, "exec sleep 1000"]
    env: {ZZ: last, AA: 1}
    dir: /tmp
    user: root
    group: root
    rlimits: {nofile: 65536, nproc: 512, core: unlimited, memlock: 0, stack: 8388608}
    restart: on-failure
    critical: true
    stop_signal: HUP
    stop_timeout: 3s
    backoff: {initial: 50ms, max: 5s, stable: 1m, fatal_after: 4}
    memory_max: 512Mi
    pids_max: 100
    cpu_weight: 200
    health:
      sip_options: {target: "sip:127.0.0.1:5060", interval: 2s, timeout: 400ms, rise: 1, fall: 6, grace: 20s}
  - name: checker
    command: [sh]
    health: {exec: [/bin/sh, -c, "exit 0"], interval: 5s, timeout: 500ms, rise: 4, fall: 5, grace: 30s}
  - name: rtp_relay
    command: [/bin/sh]
    health: {tcp: "localhost:2223"}
  - name: web
    command: [/bin/sh]
    health: {http: "http://127.0.0.1:8080/health"}
hooks:
  on_active: [[/bin/sh, -c, "echo active"]]
  on_standby: [[/bin/sh, -c, "echo standby"]]
  on_fault: [[sh]]
  timeout: 5s
metrics: {listen: "127.0.0.1:9721"}
runtime: {control_socket: /run/vigil-b/control.sock, control_group: sip-ops, state_dir: /var/lib/vigil-b, cgroup: vigil/b}
log: {level: debug, format: json}
`

// everyKeyWitness has the keys only a witness's file can set to a value
// other than their default: role and witnesses.
const everyKeyWitness = `
cluster:
  name: sip-edge
  node: w
  role: witness
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}, {id: b, address: 192.0.2.12:7400}]
  witnesses: [{id: w, address: 192.0.2.13:7400}]
`

// everyKeyServices sets the keys of services:, which a file with the
// top-level vips: of everyKeyNode cannot have.
const everyKeyServices = `
cluster:
  name: sip-edge
  node: c
  key_file: $KEY
  last_man_standing: 10s
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
    - {id: c, address: 192.0.2.13:7400}
    - {id: d, address: 192.0.2.14:7400}
services:
  - name: customers-1
    vips:
      - {address: 192.0.2.100/24, interface: eth0}
      - {address: "2001:db8::100/64", interface: eth1}
    processes: [kamailio]
    prefer: [c, a]
    failback: 30s
processes:
  - {name: kamailio, command: [/bin/sh]}
  - {name: rtpengine, command: [/bin/sh]}
`

// The section tables as a whole: every key the parser accepts (Keys) is
// set in everyKeyNode, everyKeyWitness or everyKeyServices; everyKeyNode parses into
// exactly the expected Config (each key lands in its own field); and
// leaving any one key out changes what Parse returns (no key is accepted
// and then ignored).
func TestEveryKeyLandsInItsField(t *testing.T) {
	keys := testKeys(t)
	docs := []string{keys.Replace(everyKeyNode), keys.Replace(everyKeyWitness), keys.Replace(everyKeyServices)}

	t.Run("every key is set", func(t *testing.T) {
		set := map[string]bool{}
		for _, doc := range docs {
			walkKeys(t, doc, func(path, key string, _ *yaml.Node) { set[path+" "+key] = true })
		}
		var missing []string
		for path, known := range Keys() {
			for _, k := range known {
				if !set[path+" "+k] {
					missing = append(missing, join(path, k))
				}
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("keys the parser accepts that this test does not set (add them to everyKeyNode): %v", missing)
		}
	})

	t.Run("each key lands in its field", func(t *testing.T) {
		got, err := Parse("every.yaml", []byte(docs[0]))
		if err != nil {
			t.Fatal(err)
		}
		health := func(h Health) *Health { return &h }
		want := &Config{
			Cluster: Cluster{
				Name: "sip-edge", Node: "b", Role: RoleNode, KeyFile: keys.Replace("$KEY"), Listen: "0.0.0.0:7400", TwoNode: true,
				Nodes:  []Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "[2001:db8::12]:7400"}},
				Timing: Timing{TokenInterval: 5 * time.Millisecond, TokenTimeout: 100 * time.Millisecond, Lease: 300 * time.Millisecond, DriftMargin: 40 * time.Millisecond},
			},
			VIPs:     []VIP{{Address: "192.0.2.100/24", Interface: "eth0"}},
			Services: []Service{{Name: ImplicitService, VIPs: []VIP{{Address: "192.0.2.100/24", Interface: "eth0"}}, Implicit: true}},
			Announce: Announce{Count: 5, Interval: 50 * time.Millisecond, Refresh: 10 * time.Second, Probe: 20 * time.Millisecond, HandoverGap: 50 * time.Millisecond},
			Control:  ControlGroup{CPUWeight: 5000, IOWeight: 2000, CPUs: "0-1,3", MemoryMin: 128 << 20, Realtime: false, SchedDelayWarn: 20 * time.Millisecond, RTBudget: 150 * time.Millisecond, LatenessWarnShare: 0.1},
			Apps:     AppsGroup{CPUWeight: 50, IOWeight: 20, CPUMax: "150%", MemoryMax: 2_000_000_000, PidsMax: 4096},
			Processes: []Process{
				{
					Name: "kamailio", Command: []string{"/bin/sh", "-c", "exec sleep 1000"}, Env: []string{"AA=1", "ZZ=last"},
					Dir: "/tmp", User: "root", Group: "root",
					Rlimits: map[string]uint64{"nofile": 65536, "nproc": 512, "core": Unlimited, "memlock": 0, "stack": 8 << 20},
					Restart: RestartOnFailure, Critical: true, StopSignal: "SIGHUP", StopTimeout: 3 * time.Second,
					Backoff:   Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Stable: time.Minute, FatalAfter: 4},
					MemoryMax: 512 << 20, PidsMax: 100, CPUWeight: 200,
					Health: health(Health{Kind: HealthSIPOptions, SIP: "sip:127.0.0.1:5060",
						Interval: 2 * time.Second, Timeout: 400 * time.Millisecond, Rise: 1, Fall: 6, Grace: 20 * time.Second}),
				},
				withDefaults(Process{Name: "checker", Command: []string{"sh"}, Health: health(Health{Kind: HealthExec, Exec: []string{"/bin/sh", "-c", "exit 0"},
					Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Rise: 4, Fall: 5, Grace: 30 * time.Second})}),
				withDefaults(Process{Name: "rtp_relay", Command: []string{"/bin/sh"}, Health: health(Health{Kind: HealthTCP, TCP: "localhost:2223",
					Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3})}),
				withDefaults(Process{Name: "web", Command: []string{"/bin/sh"}, Health: health(Health{Kind: HealthHTTP, HTTP: "http://127.0.0.1:8080/health",
					Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 3})}),
			},
			Hooks: Hooks{
				OnActive:  [][]string{{"/bin/sh", "-c", "echo active"}},
				OnStandby: [][]string{{"/bin/sh", "-c", "echo standby"}},
				OnFault:   [][]string{{"sh"}},
				Timeout:   5 * time.Second,
			},
			Metrics: Metrics{Listen: "127.0.0.1:9721"},
			Runtime: Runtime{ControlSocket: "/run/vigil-b/control.sock", ControlGroup: "sip-ops", StateDir: "/var/lib/vigil-b", Cgroup: "vigil/b"},
			Log:     Log{Level: "debug", Format: "json"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
			for i := range min(len(got.Processes), len(want.Processes)) {
				if g, w := got.Processes[i], want.Processes[i]; !reflect.DeepEqual(g, w) {
					t.Errorf("processes[%d]\n got: %+v %+v\nwant: %+v %+v", i, g, g.Health, w, w.Health)
				}
			}
		}
	})

	t.Run("a witness's keys land in theirs", func(t *testing.T) {
		got, err := Parse("every.yaml", []byte(docs[1]))
		if err != nil {
			t.Fatal(err)
		}
		want := defaults()
		want.Cluster.Name, want.Cluster.Node, want.Cluster.Role, want.Cluster.KeyFile = "sip-edge", "w", RoleWitness, keys.Replace("$KEY")
		want.Cluster.Listen = "192.0.2.13:7400"
		want.Cluster.Nodes = []Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "192.0.2.12:7400"}}
		want.Cluster.Witnesses = []Peer{{ID: "w", Address: "192.0.2.13:7400"}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
		}
	})

	t.Run("a service's keys land in theirs", func(t *testing.T) {
		got, err := Parse("every.yaml", []byte(docs[2]))
		if err != nil {
			t.Fatal(err)
		}
		vips := []VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "2001:db8::100/64", Interface: "eth1"}}
		want := defaults()
		want.Cluster.Name, want.Cluster.Node, want.Cluster.KeyFile = "sip-edge", "c", keys.Replace("$KEY")
		want.Cluster.Listen = "192.0.2.13:7400"
		want.Cluster.Nodes = []Peer{{ID: "a", Address: "192.0.2.11:7400"}, {ID: "b", Address: "192.0.2.12:7400"}, {ID: "c", Address: "192.0.2.13:7400"}, {ID: "d", Address: "192.0.2.14:7400"}}
		want.Cluster.LastManStanding = 10 * time.Second
		want.Cluster.Timing.TokenTimeout = 55 * time.Millisecond // the default for a ring of four
		want.VIPs = vips
		want.Services = []Service{{Name: "customers-1", VIPs: vips, Processes: []string{"kamailio"}, Prefer: []string{"c", "a"}, Failback: 30 * time.Second}}
		want.Processes = []Process{
			withDefaults(Process{Name: "kamailio", Command: []string{"/bin/sh"}}),
			withDefaults(Process{Name: "rtpengine", Command: []string{"/bin/sh"}}),
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
		}
	})

	t.Run("no key is ignored", func(t *testing.T) {
		for _, doc := range docs {
			base, err := Parse("every.yaml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			// Each key in turn, found again in a fresh tree by its position
			// in the walk, is emptied ("key:" means "use the default").
			var paths []string
			walkKeys(t, doc, func(path, key string, _ *yaml.Node) { paths = append(paths, join(path, key)) })
			for i, path := range paths {
				root := decodeDoc(t, doc)
				j := 0
				walkNode(root, "", func(_, _ string, v *yaml.Node) {
					if j == i {
						*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "~"}
					}
					j++
				})
				out, err := yaml.Marshal(root)
				if err != nil {
					t.Fatal(err)
				}
				c, err := Parse("every.yaml", out)
				if err == nil && reflect.DeepEqual(c, base) {
					t.Errorf("%s: leaving it out changes nothing: the key is ignored, or this test sets it to its default", path)
				}
			}
		}
	})
}

func decodeDoc(t *testing.T, doc string) *yaml.Node {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
		t.Fatal(err)
	}
	return &root
}

// walkKeys calls fn for every key of every mapping in doc, with the path
// of its mapping in Keys' form (list items as []).
func walkKeys(t *testing.T, doc string, fn func(path, key string, val *yaml.Node)) {
	t.Helper()
	walkNode(decodeDoc(t, doc), "", fn)
}

func walkNode(n *yaml.Node, path string, fn func(path, key string, val *yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkNode(c, path, fn)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			walkNode(c, path+"[]", fn)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			fn(path, k.Value, v)
			walkNode(v, join(path, k.Value), fn)
		}
	}
}
