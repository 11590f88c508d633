package config

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
)

// Each section is read from its table of fields (fields.go): a key per
// line, with how its value is parsed and where it goes. What spans keys
// (duplicates, required combinations, the protocol's rules) is checked
// around the tables, with the marks below pointing at the lines.

// marks remembers where cross-checked values stand in the file, so that
// checks made after the walk still point at a line.
type marks struct {
	root, clusterKey, nameVal, nodeVal, keyFileVal, twoNodeVal, nodesKey, witnessesKey *yaml.Node
	lmsVal                                                                             *yaml.Node
	vipsKey, processesKey, servicesKey                                                 *yaml.Node
	// rtBudgetVal is control.rt_budget's value when the file sets it.
	rtBudgetVal *yaml.Node
	peers       []peerMark
	// peersBad: a node or witness entry was rejected, so "node is not
	// in nodes" would only repeat that error.
	peersBad bool
	// listenVal is cluster.listen when set, listen its value (unmapped).
	listenVal *yaml.Node
	listen    netip.AddrPort
	// timing is cluster.timing's keys (timingAt the mapping), for the
	// protocol's rules; timingBad: a value did not parse, so comparing it
	// would only add noise.
	timing    fields
	timingAt  *yaml.Node
	timingBad bool
	// vips is every floating IP read, of the top-level vips and of every
	// service: an address is unique in the cluster.
	vips []vipMark
	// processesBad: a process entry or its name was rejected, so "not
	// the name of an entry of processes" might only repeat that error.
	processesBad bool
	// serviceItems is every entry of services; services the marks of
	// those that are mappings, in step with the Services read.
	serviceItems []*yaml.Node
	services     []serviceMark
	// servicesEmpty: services is an empty list.
	servicesEmpty bool
}

type peerMark struct {
	path           string
	idVal, addrVal *yaml.Node
	ap             netip.AddrPort // unmapped: ::ffff:192.0.2.11 is 192.0.2.11
	witness        bool
}

type vipMark struct {
	list string // the list it is in: vips, services[1].vips
	path string
	val  *yaml.Node
	addr netip.Addr // normalised by netfloat
}

// serviceMark is where a service's cross-checked values stand.
type serviceMark struct {
	path string     // services[i]
	item *yaml.Node // the entry
	// vipsKey is the vips key when there is one.
	vipsKey *yaml.Node
	nameVal *yaml.Node
	// processes and prefer are the names listed, once each, with where.
	processes, prefer []mark
	failbackVal       *yaml.Node
}

func (p *parser) config(root *yaml.Node, c *Config) {
	root = deref(root)
	mk := &marks{root: root}
	_, ok := p.section(root, root, "",
		field{key: "cluster", read: func(p *parser, e entry, _ string) {
			mk.clusterKey = e.key
			p.cluster(e.val, &c.Cluster, mk)
		}}.req("required"),
		field{key: "vips", read: func(p *parser, e entry, _ string) {
			mk.vipsKey = e.key
			c.VIPs = p.vips(e.val, "vips", mk)
		}},
		field{key: "services", read: func(p *parser, e entry, _ string) {
			mk.servicesKey = e.key
			c.Services = p.services(e.val, mk)
		}},
		group("announce", announceFields(&c.Announce)...),
		group("control", controlFields(&c.Control, &mk.rtBudgetVal)...),
		group("apps", appsFields(&c.Apps)...),
		field{key: "processes", read: func(p *parser, e entry, _ string) {
			mk.processesKey = e.key
			c.Processes = p.processes(e.val, mk)
		}},
		group("hooks", hooksFields(&c.Hooks)...),
		group("metrics", set("listen", checked((*parser).str, checkMetricsListen), &c.Metrics.Listen)),
		group("runtime", runtimeFields(&c.Runtime)...),
		group("log",
			set("level", oneOf("debug", "info", "warn", "error"), &c.Log.Level),
			set("format", oneOf("text", "json"), &c.Log.Format)),
	)
	if ok && mk.clusterKey != nil {
		p.crossCheck(c, mk)
	}
}

func (p *parser) cluster(n *yaml.Node, cl *Cluster, mk *marks) {
	p.section(n, mk.clusterKey, "cluster",
		set("name", checked((*parser).str, checkClusterName), &cl.Name).req("required").mark(&mk.nameVal),
		set("node", (*parser).str, &cl.Node).req("required: the id of this host in nodes or witnesses").mark(&mk.nodeVal),
		set("role", oneOf(RoleNode, RoleWitness), &cl.Role),
		field{key: "key_file", read: func(p *parser, e entry, path string) {
			// A bad value is reported: do not also read the default.
			cl.KeyFile, _ = p.absPath(e.val, path)
		}}.mark(&mk.keyFileVal),
		field{key: "listen", read: func(p *parser, e entry, path string) {
			if ap, ok := conv((*parser).str, parsePeerAddr)(p, e.val, path); ok {
				cl.Listen, mk.listenVal, mk.listen = e.val.Value, e.val, ap
			}
		}},
		set("two_node", (*parser).boolean, &cl.TwoNode).mark(&mk.twoNodeVal),
		set("last_man_standing", (*parser).lastManStanding, &cl.LastManStanding).mark(&mk.lmsVal),
		// Checked before the witnesses are read: an error there must not
		// hide that there is no node.
		field{key: "nodes", read: func(p *parser, e entry, path string) {
			mk.nodesKey = e.key
			cl.Nodes = p.peers(e.val, path, mk)
			if len(cl.Nodes) == 0 && !mk.peersBad {
				p.errAt(e.key, path, "at least one node is required")
			}
		}}.req("at least one node is required"),
		field{key: "witnesses", read: func(p *parser, e entry, path string) {
			mk.witnessesKey = e.key
			cl.Witnesses = p.peers(e.val, path, mk)
		}},
		field{key: "timing", read: func(p *parser, e entry, _ string) { p.timing(e.val, &cl.Timing, mk) }},
	)
}

func firstNode(ns ...*yaml.Node) *yaml.Node {
	for _, n := range ns {
		if n != nil {
			return n
		}
	}
	return nil
}

func (p *parser) peers(n *yaml.Node, path string, mk *marks) []Peer {
	items, ok := p.list(n, path)
	if !ok {
		mk.peersBad = true
		return nil
	}
	var out []Peer
	for i, it := range items {
		ip := index(path, i)
		pm := peerMark{path: ip, witness: path == "cluster.witnesses"}
		var peer Peer
		f, ok := p.section(it, it, ip,
			set("id", (*parser).ident, &peer.ID).req("required").mark(&pm.idVal),
			field{key: "address", read: func(p *parser, e entry, path string) {
				if ap, ok := conv((*parser).str, peerAddress)(p, e.val, path); ok {
					peer.Address, pm.addrVal, pm.ap = e.val.Value, e.val, ap
				}
			}}.req("required"),
		)
		if !ok {
			mk.peersBad = true
			continue
		}
		good := !f.failed("id", "address")
		// Ids and addresses are unique across nodes and witnesses.
		for _, prev := range mk.peers {
			if pm.idVal != nil && prev.idVal != nil && peer.ID == prev.idVal.Value {
				p.errAt(pm.idVal, ip+".id", "duplicate id %q (first at line %d)", peer.ID, prev.idVal.Line)
				good = false
			}
			if pm.addrVal != nil && prev.addrVal != nil && pm.ap == prev.ap {
				p.errAt(pm.addrVal, ip+".address", "duplicate address %s (first at line %d)", pm.ap, prev.addrVal.Line)
				good = false
			}
		}
		if pm.idVal != nil || pm.addrVal != nil {
			mk.peers = append(mk.peers, pm)
		}
		if good {
			out = append(out, peer)
		} else {
			mk.peersBad = true
		}
	}
	return out
}

func (p *parser) ident(n *yaml.Node, path string) (string, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return "", false
	}
	if !identRE.MatchString(s) || len(s) > maxIdentLen {
		p.errAt(n, path, "%q must start with a letter or digit and use only A-Z a-z 0-9 _ . - (at most %d characters)", s, maxIdentLen)
		return "", false
	}
	return s, true
}

func (p *parser) absPath(n *yaml.Node, path string) (string, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return "", false
	}
	if !filepath.IsAbs(s) {
		p.errAt(n, path, "%q must be an absolute path", s)
		return "", false
	}
	return s, true
}

func (p *parser) timing(n *yaml.Node, t *Timing, mk *marks) {
	before := len(p.errs)
	f, ok := p.section(n, n, "cluster.timing",
		set("token_interval", (*parser).positiveDuration, &t.TokenInterval),
		set("token_timeout", (*parser).positiveDuration, &t.TokenTimeout),
		set("lease", (*parser).positiveDuration, &t.Lease),
		set("drift_margin", (*parser).positiveDuration, &t.DriftMargin),
	)
	if !ok {
		mk.timingBad = true
		return
	}
	// How the timings relate is the protocol's rule (protocol.Config),
	// checked in crossCheck with the rest of it.
	mk.timing, mk.timingAt, mk.timingBad = f, n, len(p.errs) > before
}

// vips reads the floating IPs of the list at path: the top-level vips, or
// a service's services[i].vips. An address is unique in the cluster, not
// only in its list; each is marked for vipRule.
func (p *parser) vips(n *yaml.Node, path string, mk *marks) []VIP {
	items, ok := p.list(n, path)
	if !ok {
		return nil
	}
	var out []VIP
	for i, it := range items {
		ip := index(path, i)
		var vip VIP
		f, ok := p.section(it, it, ip,
			field{key: "address", read: func(p *parser, e entry, kp string) {
				addr, ok := conv((*parser).str, floatingAddr)(p, e.val, kp)
				if !ok {
					return // reported
				}
				for _, prev := range mk.vips {
					switch {
					case prev.addr != addr:
						continue
					case prev.list == path:
						p.errAt(e.val, kp, "duplicate address %s (first at line %d)", addr, prev.val.Line)
					default:
						p.errAt(e.val, kp, "%s is also in %s (line %d): an address belongs to one service", addr, prev.path, prev.val.Line)
					}
					return
				}
				vip.Address = e.val.Value
				mk.vips = append(mk.vips, vipMark{list: path, path: kp, val: e.val, addr: addr})
			}}.req("required"),
			set("interface", checked((*parser).str, checkIfName), &vip.Interface).req("required: the interface that carries the address, like eth0"),
		)
		if ok && !f.failed("address", "interface") {
			out = append(out, vip)
		}
	}
	return out
}

func announceFields(a *Announce) []field {
	return []field{
		set("count", intIn[int](1, 100), &a.Count),
		set("interval", (*parser).positiveDuration, &a.Interval),
		// duration refuses negative values; 0 turns these off.
		set("refresh", (*parser).duration, &a.Refresh),
		set("probe", (*parser).duration, &a.Probe),
		set("handover_gap", checked((*parser).duration, checkHandoverGap), &a.HandoverGap),
	}
}

func controlFields(g *ControlGroup, rtBudgetAt **yaml.Node) []field {
	return []field{
		set("cpu_weight", intIn[uint64](1, 10000), &g.CPUWeight),
		set("io_weight", intIn[uint64](1, 10000), &g.IOWeight),
		set("cpus", checked((*parser).str, parseCPUList), &g.CPUs),
		set("memory_min", (*parser).size, &g.MemoryMin),
		set("realtime", (*parser).boolean, &g.Realtime),
		set("sched_delay_warn", checked((*parser).positiveDuration, checkSchedDelayWarn), &g.SchedDelayWarn),
		set("rt_budget", checked((*parser).positiveDuration, checkRTBudget), &g.RTBudget).mark(rtBudgetAt),
		set("lateness_warn_share", (*parser).share, &g.LatenessWarnShare),
	}
}

func appsFields(g *AppsGroup) []field {
	return []field{
		set("cpu_weight", intIn[uint64](1, 10000), &g.CPUWeight),
		set("io_weight", intIn[uint64](1, 10000), &g.IOWeight),
		set("cpu_max", checked((*parser).str, parseCPUMax), &g.CPUMax),
		set("memory_max", (*parser).size, &g.MemoryMax),
		set("pids_max", intIn[int64](0, math.MaxInt64), &g.PidsMax),
	}
}

func (p *parser) processes(n *yaml.Node, mk *marks) []Process {
	items, ok := p.list(n, "processes")
	if !ok {
		mk.processesBad = true
		return nil
	}
	var out []Process
	names := map[string]*yaml.Node{}
	for i, it := range items {
		pr := defaultProcess()
		f, ok := p.section(it, it, index("processes", i), processFields(&pr, names)...)
		if ok {
			out = append(out, pr)
		}
		if !ok || f.failed("name") || pr.Name == "" {
			mk.processesBad = true
		}
	}
	return out
}

// services reads the services: entries. What they name (processes,
// nodes) is checked in serviceRules, once the whole file is read.
func (p *parser) services(n *yaml.Node, mk *marks) []Service {
	items, ok := p.list(n, "services")
	if !ok {
		return nil
	}
	mk.serviceItems, mk.servicesEmpty = items, len(items) == 0
	var out []Service
	names := map[string]*yaml.Node{}
	for i, it := range items {
		ip := index("services", i)
		sm := serviceMark{path: ip, item: it}
		var s Service
		_, ok := p.section(it, it, ip,
			set("name", (*parser).ident, &s.Name).req("required").then(func(p *parser, e entry, path string) {
				sm.nameVal = e.val
				if first := names[s.Name]; first != nil {
					p.errAt(e.val, path, "duplicate service name %q (first at line %d)", s.Name, first.Line)
				} else {
					names[s.Name] = e.val
				}
			}),
			// Required on a node (serviceRules), absent on a witness.
			field{key: "vips", read: func(p *parser, e entry, path string) {
				sm.vipsKey = e.key
				s.VIPs = p.vips(e.val, path, mk)
				if e.val.Kind == yaml.SequenceNode && len(e.val.Content) == 0 {
					p.errAt(e.key, path, "lists no address: a service is a group of floating IPs, give it at least one")
				}
			}},
			field{key: "processes", read: func(p *parser, e entry, path string) {
				s.Processes, sm.processes = p.nameList(e, path, "process",
					"lists no process: leave processes out for the default, every process with critical: true")
			}},
			field{key: "prefer", read: func(p *parser, e entry, path string) {
				s.Prefer, sm.prefer = p.nameList(e, path, "node",
					"lists no node: leave prefer out for the order of cluster.nodes "+
						"(prefer only orders the nodes: those it does not list follow, in cluster.nodes order)")
			}},
			set("failback", (*parser).failback, &s.Failback).mark(&sm.failbackVal),
		)
		if ok {
			out = append(out, s)
			mk.services = append(mk.services, sm)
		}
	}
	return out
}

// nameList reads a non-empty list of names (of what: process, node),
// each once; empty is the message for an empty list. The names are
// returned with where they stand, for the checks of serviceRules.
func (p *parser) nameList(e entry, path, what, empty string) ([]string, []mark) {
	items, ok := p.list(e.val, path)
	if !ok {
		return nil, nil
	}
	if len(items) == 0 {
		p.errAt(e.key, path, "%s", empty)
		return nil, nil
	}
	var names []string
	var at []mark
	first := map[string]*yaml.Node{}
	for i, it := range items {
		ip := index(path, i)
		s, ok := p.str(it, ip)
		switch {
		case !ok: // reported
		case first[s] != nil:
			p.errAt(it, ip, "duplicate %s %q (first at line %d)", what, s, first[s].Line)
		default:
			first[s] = it
			names = append(names, s)
			at = append(at, mark{it, ip})
		}
	}
	return names, at
}

// lastManStanding reads off (0) or a positive duration.
func (p *parser) lastManStanding(n *yaml.Node, path string) (time.Duration, bool) {
	return p.offOrDuration(n, path, "10s", "write off to keep every locator in the membership (the window is a positive duration, like 10s)")
}

// failback reads off (0) or a positive duration.
func (p *parser) failback(n *yaml.Node, path string) (time.Duration, bool) {
	return p.offOrDuration(n, path, "30s", "write off for no failback (a failback delay is a positive duration, like 30s)")
}

// offOrDuration reads off (0) or a positive duration; example is one for
// the error, zero what to say of "0s".
func (p *parser) offOrDuration(n *yaml.Node, path, example, zero string) (time.Duration, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "off" {
		return 0, true
	}
	s, ok := p.str(n, path)
	if !ok {
		return 0, false
	}
	d, err := parseDuration(s)
	switch {
	case err != nil:
		p.errAt(n, path, "%q is not off or a duration like %s", s, example)
		return 0, false
	case d == 0:
		p.errAt(n, path, "%q: %s", s, zero)
		return 0, false
	}
	return d, true
}

// processFields is one process's table; names holds the names taken so
// far, for the duplicate check.
func processFields(pr *Process, names map[string]*yaml.Node) []field {
	return []field{
		set("name", (*parser).ident, &pr.Name).req("required").then(func(p *parser, e entry, path string) {
			if first := names[pr.Name]; first != nil {
				p.errAt(e.val, path, "duplicate process name %q (first at line %d)", pr.Name, first.Line)
			} else {
				names[pr.Name] = e.val
			}
		}),
		set("command", (*parser).argv, &pr.Command).req("required"),
		set("env", (*parser).env, &pr.Env),
		set("dir", (*parser).absPath, &pr.Dir),
		set("user", checked((*parser).str, checkUser), &pr.User),
		set("group", checked((*parser).str, checkGroup), &pr.Group),
		set("rlimits", (*parser).rlimits, &pr.Rlimits),
		set("restart", oneOf(RestartAlways, RestartOnFailure, RestartNever), &pr.Restart),
		set("critical", (*parser).boolean, &pr.Critical),
		set("stop_signal", conv((*parser).str, canonicalSignal), &pr.StopSignal),
		set("stop_timeout", (*parser).positiveDuration, &pr.StopTimeout),
		{key: "backoff", read: func(p *parser, e entry, path string) { p.backoff(e.val, path, &pr.Backoff) }},
		set("memory_max", (*parser).size, &pr.MemoryMax),
		set("pids_max", intIn[int64](0, math.MaxInt64), &pr.PidsMax),
		set("cpu_weight", intIn[uint64](0, 10000), &pr.CPUWeight),
		{key: "health", read: func(p *parser, e entry, path string) { pr.Health = p.health(e.val, e.key, path) }},
	}
}

// argv reads a non-empty command line whose argv[0] can be executed.
func (p *parser) argv(n *yaml.Node, path string) ([]string, bool) {
	argv, ok := p.strList(n, path)
	if !ok {
		return nil, false
	}
	if len(argv) == 0 {
		p.errAt(n, path, "must not be empty")
		return nil, false
	}
	if err := checkExecutable(argv[0]); err != nil {
		p.errAt(deref(n.Content[0]), index(path, 0), "%v", err)
		return nil, false
	}
	return argv, true
}

// checkExecutable applies exec's rules at check time, so that a typo
// fails `vigil check` rather than the first start. Names without a slash
// are looked up in this process's PATH.
func checkExecutable(s string) error {
	if s == "" {
		return fmt.Errorf("the command must not be empty")
	}
	if !strings.Contains(s, "/") {
		if _, err := exec.LookPath(s); err != nil {
			return fmt.Errorf("%q not found in PATH", s)
		}
		return nil
	}
	if !filepath.IsAbs(s) {
		return fmt.Errorf("%q must be an absolute path or a command name found in PATH", s)
	}
	st, err := os.Stat(s)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("%q does not exist", s)
		}
		return fmt.Errorf("%q: %v", s, err)
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%q is not an executable file", s)
	}
	return nil
}

// argvList reads a list of command lines; a bad one is reported and left out.
func (p *parser) argvList(n *yaml.Node, path string) ([][]string, bool) {
	items, ok := p.list(n, path)
	if !ok {
		return nil, false
	}
	var out [][]string
	for i, it := range items {
		if argv, ok := p.argv(it, index(path, i)); ok {
			out = append(out, argv)
		}
	}
	return out, true
}

// env reads a mapping of variables; a bad entry is reported and left out.
func (p *parser) env(n *yaml.Node, path string) ([]string, bool) {
	if n.Kind != yaml.MappingNode {
		p.errAt(n, path, "must be a mapping of NAME: value, not %s", kindOf(n))
		return nil, false
	}
	vals := map[string]string{}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			p.errAt(k, path, "keys must be variable names, not %s", kindOf(k))
			continue
		}
		name := k.Value
		kp := join(path, name)
		if first := seen[name]; first != nil {
			p.errAt(k, kp, "duplicate key (first at line %d)", first.Line)
			continue
		}
		seen[name] = k
		if name == "" || strings.ContainsAny(name, "=\x00") {
			p.errAt(k, kp, "%q is not a variable name (empty, or contains '=' or NUL)", name)
			continue
		}
		val := ""
		if !isNull(v) {
			s, ok := p.str(v, kp)
			if !ok {
				continue
			}
			if strings.ContainsRune(s, 0) {
				p.errAt(v, kp, "must not contain NUL")
				continue
			}
			val = s
		}
		vals[name] = val
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out, true
}

// Unlimited is the rlimit value written as "unlimited" (RLIM_INFINITY).
const Unlimited = ^uint64(0)

// rlimits reads the limits that are set, each key in turn (once in map
// order, which made errors at one aliased node come out in any order).
func (p *parser) rlimits(n *yaml.Node, path string) (map[string]uint64, bool) {
	out := map[string]uint64{}
	var table []field
	for _, name := range []string{"nofile", "nproc", "core", "memlock", "stack"} {
		table = append(table, field{key: name, read: func(p *parser, e entry, path string) {
			if u, ok := p.rlimit(e.val, path); ok {
				out[name] = u
			}
		}})
	}
	if _, ok := p.section(n, n, path, table...); !ok {
		return nil, false
	}
	return out, true
}

// rlimit is one limit: a non-negative integer or "unlimited".
func (p *parser) rlimit(v *yaml.Node, path string) (uint64, bool) {
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == "unlimited" {
		return Unlimited, true
	}
	var u uint64
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&u) != nil {
		p.errAt(v, path, "must be a non-negative integer or \"unlimited\", not %s", describe(v))
		return 0, false
	}
	return u, true
}

func (p *parser) backoff(n *yaml.Node, path string, b *Backoff) {
	// fatal_after first: the order in which errors at one (aliased) node
	// have always been reported.
	f, ok := p.section(n, n, path,
		set("fatal_after", intIn[int](1, math.MaxInt32), &b.FatalAfter),
		set("initial", (*parser).positiveDuration, &b.Initial),
		set("max", (*parser).positiveDuration, &b.Max),
		set("stable", (*parser).positiveDuration, &b.Stable),
	)
	if ok && !f.failed("initial", "max", "stable") && b.Max < b.Initial {
		at, key := f.get("max"), "max"
		if at == nil {
			at, key = f.get("initial"), "initial"
		}
		p.errAt(at, path+"."+key, "max %s must not be shorter than initial %s", b.Max, b.Initial)
	}
}

var healthKinds = []string{string(HealthSIPOptions), string(HealthExec), string(HealthTCP), string(HealthHTTP)}

func (p *parser) health(n, key *yaml.Node, path string) *Health {
	h := DefaultHealth()
	// Timing at health level first, then sip_options' own, which wins.
	var intervalAt, timeoutAt mark
	var table []field
	for _, k := range healthKinds {
		table = append(table, field{key: k}) // read below: exactly one is allowed
	}
	f, ok := p.section(n, key, path, append(table, healthTiming(&h, &intervalAt, &timeoutAt)...)...)
	if !ok {
		return nil
	}
	timingOK := !f.failed(healthTimingKeys...)

	// Kinds in file order, so "two kinds" points at the second one.
	var kinds []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if e, ok := f.m[k.Value]; ok && contains(healthKinds, k.Value) && e.key == k {
			kinds = append(kinds, e)
		}
	}
	switch {
	case len(kinds) == 0:
		p.errAt(key, path, "one of sip_options, exec, tcp or http is required")
		return nil
	case len(kinds) > 1:
		for _, e := range kinds[1:] {
			p.errAt(e.key, join(path, e.key.Value), "only one check kind per process: %s is already set", kinds[0].key.Value)
		}
		return nil
	}
	kind, v := kinds[0].key.Value, kinds[0].val
	kp := join(path, kind)
	h.Kind = HealthKind(kind)
	good := true
	switch h.Kind {
	case HealthExec:
		h.Exec, good = p.argv(v, kp)
	case HealthTCP:
		h.TCP, good = checked((*parser).str, checkTCPTarget)(p, v, kp)
	case HealthHTTP:
		h.HTTP, good = checked((*parser).str, checkHTTPURL)(p, v, kp)
	case HealthSIPOptions:
		sf, ok := p.section(v, kinds[0].key, kp, append([]field{
			set("target", checked((*parser).str, checkSIPURI), &h.SIP).req(`required, like "sip:127.0.0.1:5060"`),
		}, healthTiming(&h, &intervalAt, &timeoutAt)...)...)
		if !ok {
			return nil
		}
		good = !sf.failed("target")
		timingOK = timingOK && !sf.failed(healthTimingKeys...)
	}
	if timingOK && h.Timeout >= h.Interval {
		at := timeoutAt
		if at.n == nil {
			at = intervalAt
		}
		if at.n == nil {
			at = mark{key, path + ".timeout"}
		}
		p.errAt(at.n, at.path, "timeout %s must be shorter than interval %s", h.Timeout, h.Interval)
		good = false
	}
	if !good {
		return nil
	}
	return &h
}

// mark is where a value that a later check may blame stands.
type mark struct {
	n    *yaml.Node
	path string
}

var healthTimingKeys = []string{"interval", "timeout", "rise", "fall", "grace"}

// healthTiming is the table of the timing keys of a health check and of
// its sip_options; intervalAt and timeoutAt record where those were set.
func healthTiming(h *Health, intervalAt, timeoutAt *mark) []field {
	return []field{
		set("interval", (*parser).positiveDuration, &h.Interval).then(func(_ *parser, e entry, path string) { *intervalAt = mark{e.val, path} }),
		set("timeout", (*parser).positiveDuration, &h.Timeout).then(func(_ *parser, e entry, path string) { *timeoutAt = mark{e.val, path} }),
		set("rise", intIn[int](1, 1000), &h.Rise),
		set("fall", intIn[int](1, 1000), &h.Fall),
		set("grace", (*parser).duration, &h.Grace),
	}
}

func hooksFields(h *Hooks) []field {
	return []field{
		set("on_active", (*parser).argvList, &h.OnActive),
		set("on_standby", (*parser).argvList, &h.OnStandby),
		set("on_fault", (*parser).argvList, &h.OnFault),
		set("timeout", (*parser).positiveDuration, &h.Timeout),
	}
}

func runtimeFields(r *Runtime) []field {
	return []field{
		set("control_socket", checked((*parser).absPath, checkSocketPath), &r.ControlSocket),
		set("control_group", checked((*parser).str, checkGroupName), &r.ControlGroup),
		set("state_dir", (*parser).absPath, &r.StateDir),
		set("cgroup", checked((*parser).str, checkCgroupPath), &r.Cgroup),
	}
}

// crossCheck validates what spans sections: this host's identity, the
// locator count, a witness's empty sections and the key file.
func (p *parser) crossCheck(c *Config, mk *marks) {
	cl := &c.Cluster
	if mk.nodeVal != nil && !mk.peersBad {
		inNodes, inWitnesses := hasPeer(cl.Nodes, cl.Node), hasPeer(cl.Witnesses, cl.Node)
		switch {
		case cl.Role == RoleNode && !inNodes && inWitnesses:
			p.errAt(mk.nodeVal, "cluster.node", "%q is a witness: set role: witness", cl.Node)
		case cl.Role == RoleNode && !inNodes:
			p.errAt(mk.nodeVal, "cluster.node", "%q is not the id of an entry in cluster.nodes", cl.Node)
		case cl.Role == RoleWitness && !inWitnesses && inNodes:
			p.errAt(mk.nodeVal, "cluster.node", "%q is in cluster.nodes but role is witness", cl.Node)
		case cl.Role == RoleWitness && !inWitnesses:
			p.errAt(mk.nodeVal, "cluster.node", "%q is not the id of an entry in cluster.witnesses", cl.Node)
		default:
			if cl.Listen == "" {
				cl.Listen = c.Self().Address
			}
		}
	}
	pair := len(cl.Nodes) == 2 && len(cl.Witnesses) == 0
	switch {
	case mk.peersBad:
		// The count is not known; the rejected entry was reported.
	case pair && !cl.TwoNode:
		p.errAt(firstNode(mk.nodesKey, mk.clusterKey), "cluster.nodes",
			"2 nodes and no witness: a lease needs a majority of locators, and 1 of 2 is not one, "+
				"so the survivor of a failure could never become active; add a witness, "+
				"or set two_node: true to accept split brain under a network partition")
	case cl.TwoNode && !pair && mk.twoNodeVal != nil:
		p.errAt(mk.twoNodeVal, "cluster.two_node", "two_node: true needs exactly 2 nodes and no witnesses (have %d and %d)", len(cl.Nodes), len(cl.Witnesses))
	}
	if cl.Role == RoleWitness {
		if len(c.VIPs) > 0 {
			p.errAt(mk.vipsKey, "vips", "a witness holds no floating IPs: must be empty")
		}
		if len(c.Processes) > 0 {
			p.errAt(mk.processesKey, "processes", "a witness supervises no applications: must be empty")
		}
	}
	p.serviceRules(c, mk)
	if !mk.peersBad {
		p.listenRule(cl, mk)
		p.portRule(mk, c.ServiceCount())
		p.vipRule(mk)
	}
	if mk.timing.get("token_timeout") == nil {
		// Left at its default: long enough for the ring (protocol.
		// DefaultTokenTimeoutFor; the same on every host, which has the
		// same nodes).
		cl.Timing.TokenTimeout = protocol.DefaultTokenTimeoutFor(len(cl.Nodes), cl.Timing.TokenInterval)
	}
	p.protocolRules(c, mk)
	if cl.KeyFile != "" {
		if _, err := ReadKeyFile(cl.KeyFile); err != nil {
			p.errAt(firstNode(mk.keyFileVal, mk.clusterKey), "cluster.key_file", "%s", strings.TrimPrefix(err.Error(), "config: "))
		}
	}
}

// serviceRules checks services: against the rest of the file, and sets
// c.Services: on a node, its services (those of services:, or the implicit
// one of the top-level vips:); on a witness, the services' names, for the
// locator it runs for each (none without services:). c.VIPs is then every
// floating IP of the services.
func (p *parser) serviceRules(c *Config, mk *marks) {
	if len(mk.serviceItems) > netfloat.MaxSlots {
		p.errAt(mk.serviceItems[netfloat.MaxSlots], index("services", netfloat.MaxSlots),
			"at most %d services in a cluster: each has a node manager, ports and kernel lease sets of its own on every host", netfloat.MaxSlots)
	}
	for _, sm := range mk.services {
		if len(mk.services) < 2 || sm.nameVal == nil {
			continue
		}
		// With several services, the datagrams of each carry
		// <cluster>/<service> (Config.ForService).
		if n := len(c.Cluster.Name) + 1 + len(sm.nameVal.Value); n > protocol.MaxIDLen {
			p.errAt(sm.nameVal, sm.path+".name", "with the cluster's name, %q is %d bytes, more than %d: with several services, each is named %q on the wire; shorten one of them",
				sm.nameVal.Value, n, protocol.MaxIDLen, c.Cluster.Name+"/"+sm.nameVal.Value)
		}
	}
	if c.Cluster.Role == RoleWitness {
		names := make([]Service, 0, len(c.Services))
		for i, sm := range mk.services {
			if sm.vipsKey != nil || sm.processes != nil || sm.prefer != nil || sm.failbackVal != nil {
				p.errAt(sm.item, sm.path, "a witness holds no floating IPs and runs no application: list the services by name only, like {name: %s}: it runs a locator for each", c.Services[i].Name)
			}
			names = append(names, Service{Name: c.Services[i].Name})
		}
		c.Services = names
		if len(c.Services) == 0 {
			c.Services = nil
		}
		return
	}
	if mk.servicesKey == nil {
		c.Services = []Service{{Name: ImplicitService, VIPs: slices.Clone(c.VIPs), Implicit: true}}
		return
	}
	if mk.vipsKey != nil {
		p.errAt(mk.servicesKey, "services", "the top-level vips (line %d) are the short form of one service, %q, "+
			"and services: replaces it: move those addresses into a service's vips", mk.vipsKey.Line, ImplicitService)
	} else if mk.servicesEmpty {
		p.errAt(mk.servicesKey, "services", "lists no service: list one, or leave services out "+
			"(the top-level vips are then the one service, %q)", ImplicitService)
	}
	for _, sm := range mk.services {
		if sm.vipsKey == nil {
			p.errAt(sm.item, sm.path+".vips", "required: the service's floating IPs, like [{address: 192.0.2.100/24, interface: eth0}]")
		}
	}
	for _, sm := range mk.services {
		for _, m := range sm.processes {
			name := m.n.Value
			if _, ok := c.Process(name); ok || mk.processesBad {
				continue
			}
			var names []string
			for _, pr := range c.Processes {
				names = append(names, pr.Name)
			}
			if s := suggest(name, names); s != "" {
				p.errAt(m.n, m.path, "%q is not the name of an entry of processes (did you mean %s?)", name, s)
			} else {
				p.errAt(m.n, m.path, "%q is not the name of an entry of processes", name)
			}
		}
		for _, m := range sm.prefer {
			id := m.n.Value
			switch {
			case hasPeer(c.Cluster.Nodes, id):
			case hasPeer(c.Cluster.Witnesses, id):
				p.errAt(m.n, m.path, "%q is a witness: it runs no node manager and never holds a service", id)
			case !mk.peersBad:
				p.errAt(m.n, m.path, "%q is not the id of an entry in cluster.nodes", id)
			}
		}
	}
	c.VIPs = nil
	for _, s := range c.Services {
		c.VIPs = append(c.VIPs, s.VIPs...)
	}
}

func hasPeer(ps []Peer, id string) bool {
	for _, p := range ps {
		if p.ID == id {
			return true
		}
	}
	return false
}

// self is this host's entry among the peers, if validation found it.
func (mk *marks) self(cl *Cluster) (peerMark, bool) {
	for _, pm := range mk.peers {
		if pm.idVal != nil && pm.idVal.Value == cl.Node && pm.witness == (cl.Role == RoleWitness) {
			return pm, pm.addrVal != nil
		}
	}
	return peerMark{}, false
}

// listenRule: the peers send to this host's entry, so cluster.listen must
// be that address and port, or the unspecified address with that port (Go
// listens on both families for either 0.0.0.0 or [::]).
func (p *parser) listenRule(cl *Cluster, mk *marks) {
	self, ok := mk.self(cl)
	if mk.listenVal == nil || !ok {
		return
	}
	l, e := mk.listen, self.ap
	where := fmt.Sprintf("this host's entry %s (%s, line %d)", self.path, e, self.addrVal.Line)
	switch {
	case l.Port() != e.Port():
		p.errAt(mk.listenVal, "cluster.listen", "port %d is not the port of %s: the others send there", l.Port(), where)
	case !l.Addr().IsUnspecified() && l.Addr() != e.Addr():
		p.errAt(mk.listenVal, "cluster.listen", "address %s is not the address of %s: the others send there (0.0.0.0 or [::] listen on every address)", l.Addr(), where)
	}
}

// portRule: each node binds its port P and P+1 (its locator's), each
// witness P+1; no two hosts may need the same address and port.
func (p *parser) portRule(mk *marks, services int) {
	type bound struct {
		ap   netip.AddrPort
		what string
		by   peerMark
	}
	var taken []bound
	for _, pm := range mk.peers {
		if pm.addrVal == nil {
			continue
		}
		// Service i's node manager is at P+2i, its locator at P+2i+1
		// (Config.ForService).
		if last := int(pm.ap.Port()) + 2*services - 1; last > math.MaxUint16 {
			p.errAt(pm.addrVal, pm.path+".address", "port %d leaves no room for the %d services' ports: each uses two, P+2i and P+2i+1, up to %d; use a port under %d",
				pm.ap.Port(), services, last, math.MaxUint16-2*services+2)
			continue
		}
		var mine []bound
		for i := range services {
			what := func(s string) string {
				if services == 1 {
					return s
				}
				return fmt.Sprintf("service %d's %s", i, s)
			}
			if !pm.witness {
				mine = append(mine, bound{netip.AddrPortFrom(pm.ap.Addr(), pm.ap.Port()+uint16(2*i)), what("node manager"), pm})
			}
			mine = append(mine, bound{netip.AddrPortFrom(pm.ap.Addr(), pm.ap.Port()+uint16(2*i+1)), what("locator"), pm})
		}
	check:
		for _, b := range mine {
			for _, t := range taken {
				if b.ap == t.ap {
					gap := "leave a gap of two"
					if services > 1 {
						gap = fmt.Sprintf("with %d services, leave a gap of %d", services, 2*services)
					}
					p.errAt(pm.addrVal, pm.path+".address", "its %s port %s is the %s port of %s (line %d): "+
						"each host uses its port P for the node manager and P+1 for the locator, so %s",
						b.what, b.ap, t.what, t.by.path, t.by.addrVal.Line, gap)
					break check
				}
			}
		}
		taken = append(taken, mine...)
	}
}

// vipRule: a floating IP is no host's own address.
func (p *parser) vipRule(mk *marks) {
	for _, v := range mk.vips {
		for _, pm := range mk.peers {
			if pm.addrVal != nil && pm.ap.Addr() == v.addr {
				p.errAt(v.val, v.path, "%s is the address of %s (line %d): a floating IP must be an address no host has of its own", v.addr, pm.path, pm.addrVal.Line)
				break
			}
		}
	}
}

// protocolRules reports what protocol.Config refuses, so that a file this
// package accepts never stops a node manager or locator at start. Each
// problem is placed at the key it names, or at a key it compares it with
// when that one was left at its default; problems at a key that already
// has an error, or about values that did not parse, would only repeat it.
func (p *parser) protocolRules(c *Config, mk *marks) {
	has := map[string]bool{}
	for _, e := range p.errs {
		has[e.Key] = true
	}
	for _, pr := range c.Protocol().Problems() {
		var at *yaml.Node
		var key string
		switch pr.Field {
		case "cluster":
			at, key = firstNode(mk.nameVal, mk.clusterKey), "cluster.name"
		case "nodes", "locators", "two_node":
			if mk.peersBad {
				continue
			}
			at, key = firstNode(mk.nodesKey, mk.clusterKey), "cluster.nodes"
			if pr.Field == "locators" {
				if mk.witnessesKey == nil {
					continue // as many as nodes: reported for those
				}
				// Every node and every witness runs a locator.
				pr.Msg = fmt.Sprintf("%d nodes and %d witnesses: %s", len(c.Cluster.Nodes), len(c.Cluster.Witnesses), pr.Msg)
				at, key = mk.witnessesKey, "cluster.witnesses"
			}
			if pr.Field == "two_node" {
				at, key = firstNode(mk.twoNodeVal, mk.clusterKey), "cluster.two_node"
			}
		case "last_man_standing":
			at, key = firstNode(mk.lmsVal, mk.clusterKey), "cluster.last_man_standing"
		case "failback":
			// Of the service Protocol took it from: the first one.
			if mk.timingBad || len(mk.services) == 0 {
				continue
			}
			sm := mk.services[0]
			at, key = firstNode(sm.failbackVal, mk.servicesKey), sm.path+".failback"
			pr.Msg = failbackMsg(c.Services[0].Failback, c.Cluster.Timing.TokenTimeout)
		default: // a timing
			if mk.timingBad {
				continue
			}
			at, key = firstNode(mk.timingAt, mk.clusterKey), "cluster.timing."+pr.Field
			for _, name := range append([]string{pr.Field}, pr.Also...) {
				if v := mk.timing.get(name); v != nil {
					at, key = v, "cluster.timing."+name
					break
				}
			}
		}
		if !has[key] {
			p.errAt(at, key, "%s", pr.Msg)
		}
	}
	// The other services' node managers start with their own failback
	// (ForService); the rest of their protocol configuration is the first's.
	for i := 1; i < len(c.Services) && i < len(mk.services) && !mk.timingBad; i++ {
		sm := mk.services[i]
		key := sm.path + ".failback"
		for _, pr := range c.protocolFor(c.Services[i]).Problems() {
			if pr.Field == "failback" && !has[key] {
				p.errAt(firstNode(sm.failbackVal, mk.servicesKey), key, "%s", failbackMsg(c.Services[i].Failback, c.Cluster.Timing.TokenTimeout))
			}
		}
	}
}

// failbackMsg is the protocol's failback rule in the file's words (its
// "0" is the file's off).
func failbackMsg(failback, tokenTimeout time.Duration) string {
	return fmt.Sprintf("failback %v is shorter than cluster.timing.token_timeout (%v): a node the ring has not yet seen pass the token would get the service back; write off, or %v or more",
		failback, tokenTimeout, tokenTimeout)
}
