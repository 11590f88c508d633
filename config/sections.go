package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/schedwatch"
)

// marks remembers where cross-checked values stand in the file, so that
// checks made after the walk still point at a line.
type marks struct {
	root, clusterKey, nameVal, nodeVal, roleVal, keyFileVal, twoNodeVal, nodesKey, witnessesKey *yaml.Node
	vipsKey, processesKey                                                                       *yaml.Node
	peers                                                                                       []peerMark
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
	vips      []vipMark
}

type peerMark struct {
	path           string
	idVal, addrVal *yaml.Node
	ap             netip.AddrPort // unmapped: ::ffff:192.0.2.11 is 192.0.2.11
	witness        bool
}

type vipMark struct {
	path string
	val  *yaml.Node
	addr netip.Addr // normalised by netfloat
}

func (p *parser) config(root *yaml.Node, c *Config) {
	root = deref(root)
	top, ok := p.mapping(root, "", "cluster", "vips", "announce", "control", "apps", "processes", "hooks", "metrics", "runtime", "log")
	if !ok {
		return
	}
	mk := &marks{root: root}
	if n := top.get("cluster"); n != nil {
		mk.clusterKey = top.key("cluster")
		p.cluster(n, &c.Cluster, mk)
	} else {
		p.errAt(root, "cluster", "required")
	}
	if n := top.get("vips"); n != nil {
		mk.vipsKey = top.key("vips")
		c.VIPs = p.vips(n, mk)
	}
	if n := top.get("announce"); n != nil {
		p.announce(n, &c.Announce)
	}
	if n := top.get("control"); n != nil {
		p.control(n, &c.Control)
	}
	if n := top.get("apps"); n != nil {
		p.apps(n, &c.Apps)
	}
	if n := top.get("processes"); n != nil {
		mk.processesKey = top.key("processes")
		c.Processes = p.processes(n)
	}
	if n := top.get("hooks"); n != nil {
		p.hooks(n, &c.Hooks)
	}
	if n := top.get("metrics"); n != nil {
		p.metrics(n, &c.Metrics)
	}
	if n := top.get("runtime"); n != nil {
		p.runtime(n, &c.Runtime)
	}
	if n := top.get("log"); n != nil {
		p.log(n, &c.Log)
	}
	if mk.clusterKey != nil {
		p.crossCheck(c, mk)
	}
}

func (p *parser) cluster(n *yaml.Node, cl *Cluster, mk *marks) {
	f, ok := p.mapping(n, "cluster", "name", "node", "role", "key_file", "listen", "two_node", "nodes", "witnesses", "timing")
	if !ok {
		return
	}
	if v := f.get("name"); v != nil {
		if s, ok := p.str(v, "cluster.name"); ok {
			if !clusterNameRE.MatchString(s) || len(s) > 63 {
				p.errAt(v, "cluster.name", "%q must be lowercase letters, digits and '-', at most 63 characters", s)
			}
			cl.Name, mk.nameVal = s, v
		}
	} else {
		p.errAt(mk.clusterKey, "cluster.name", "required")
	}
	if v := f.get("node"); v != nil {
		if s, ok := p.str(v, "cluster.node"); ok {
			cl.Node = s
			mk.nodeVal = v
		}
	} else {
		p.errAt(mk.clusterKey, "cluster.node", "required: the id of this host in nodes or witnesses")
	}
	if v := f.get("role"); v != nil {
		if s, ok := p.enum(v, "cluster.role", string(RoleNode), string(RoleWitness)); ok {
			cl.Role = Role(s)
			mk.roleVal = v
		}
	}
	if v := f.get("key_file"); v != nil {
		if s, ok := p.absPath(v, "cluster.key_file"); ok {
			cl.KeyFile = s
			mk.keyFileVal = v
		} else {
			cl.KeyFile = "" // already reported; do not also read the default
		}
	}
	if v := f.get("listen"); v != nil {
		if s, ok := p.str(v, "cluster.listen"); ok {
			if ap, err := parsePeerAddr(s); err != nil {
				p.errAt(v, "cluster.listen", "%v", err)
			} else {
				cl.Listen, mk.listenVal, mk.listen = s, v, ap
			}
		}
	}
	if v := f.get("two_node"); v != nil {
		cl.TwoNode, _ = p.boolean(v, "cluster.two_node")
		mk.twoNodeVal = v
	}
	if v := f.get("nodes"); v != nil {
		mk.nodesKey = f.key("nodes")
		cl.Nodes = p.peers(v, "cluster.nodes", mk)
	}
	if len(cl.Nodes) == 0 && !mk.peersBad {
		p.errAt(firstNode(mk.nodesKey, mk.clusterKey), "cluster.nodes", "at least one node is required")
	}
	if v := f.get("witnesses"); v != nil {
		mk.witnessesKey = f.key("witnesses")
		cl.Witnesses = p.peers(v, "cluster.witnesses", mk)
	}
	if v := f.get("timing"); v != nil {
		p.timing(v, &cl.Timing, mk)
	}
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
		f, ok := p.mapping(it, ip, "id", "address")
		if !ok {
			mk.peersBad = true
			continue
		}
		pm := peerMark{path: ip, witness: path == "cluster.witnesses"}
		var peer Peer
		good := true
		if v := f.get("id"); v != nil {
			if s, ok := p.ident(v, ip+".id"); ok {
				peer.ID, pm.idVal = s, v
			} else {
				good = false
			}
		} else {
			p.errAt(it, ip+".id", "required")
			good = false
		}
		if v := f.get("address"); v != nil {
			if s, ok := p.str(v, ip+".address"); ok {
				ap, err := parsePeerAddr(s)
				if err == nil && ap.Addr().IsUnspecified() {
					err = fmt.Errorf("%q: the unspecified address reaches no host: give the address the others reach this host at", s)
				}
				if err != nil {
					p.errAt(v, ip+".address", "%v", err)
					good = false
				} else {
					peer.Address, pm.addrVal, pm.ap = s, v, ap
				}
			} else {
				good = false
			}
		} else {
			p.errAt(it, ip+".address", "required")
			good = false
		}
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
	const path = "cluster.timing"
	before := len(p.errs)
	f, ok := p.mapping(n, path, "token_interval", "token_timeout", "lease", "drift_margin")
	if !ok {
		mk.timingBad = true
		return
	}
	set := func(key string, dst *int64) {
		if v := f.get(key); v != nil {
			if d, ok := p.positiveDuration(v, path+"."+key); ok {
				*dst = int64(d)
			}
		}
	}
	set("token_interval", (*int64)(&t.TokenInterval))
	set("token_timeout", (*int64)(&t.TokenTimeout))
	set("lease", (*int64)(&t.Lease))
	set("drift_margin", (*int64)(&t.DriftMargin))
	// How the timings relate is the protocol's rule (protocol.Config),
	// checked in crossCheck with the rest of it.
	mk.timing, mk.timingAt, mk.timingBad = f, n, len(p.errs) > before
}

func (p *parser) vips(n *yaml.Node, mk *marks) []VIP {
	items, ok := p.list(n, "vips")
	if !ok {
		return nil
	}
	var out []VIP
	first := map[netip.Addr]*yaml.Node{}
	for i, it := range items {
		ip := index("vips", i)
		f, ok := p.mapping(it, ip, "address", "interface")
		if !ok {
			continue
		}
		var vip VIP
		good := true
		if v := f.get("address"); v != nil {
			if s, ok := p.str(v, ip+".address"); ok {
				pfx, err := netip.ParsePrefix(s)
				var norm netip.Prefix
				var ae *netfloat.AddressError
				if err == nil {
					// The node manager's own rule, so that what it would
					// refuse at takeover is refused here.
					norm, err = netfloat.NormalizePrefix(pfx)
				}
				switch {
				case errors.As(err, &ae):
					p.errAt(v, ip+".address", "%q cannot be a floating IP: %s", s, ae.Reason)
					good = false
				case err != nil:
					p.errAt(v, ip+".address", "%q is not an address with a prefix length, like 192.0.2.100/24 or 2001:db8::100/64", s)
					good = false
				case first[norm.Addr()] != nil:
					p.errAt(v, ip+".address", "duplicate address %s (first at line %d)", norm.Addr(), first[norm.Addr()].Line)
					good = false
				default:
					first[norm.Addr()] = v
					vip.Address = s
					mk.vips = append(mk.vips, vipMark{path: ip + ".address", val: v, addr: norm.Addr()})
				}
			} else {
				good = false
			}
		} else {
			p.errAt(it, ip+".address", "required")
			good = false
		}
		if v := f.get("interface"); v != nil {
			if s, ok := p.str(v, ip+".interface"); ok {
				if err := checkIfName(s); err != nil {
					p.errAt(v, ip+".interface", "%v", err)
					good = false
				}
				vip.Interface = s
			} else {
				good = false
			}
		} else {
			p.errAt(it, ip+".interface", "required: the interface that carries the address, like eth0")
			good = false
		}
		if good {
			out = append(out, vip)
		}
	}
	return out
}

func (p *parser) cpuWeight(n *yaml.Node, path string, lo int64) (uint64, bool) {
	i, ok := p.integer(n, path, lo, 10000)
	return uint64(i), ok
}

func (p *parser) announce(n *yaml.Node, a *Announce) {
	f, ok := p.mapping(n, "announce", "count", "interval", "refresh", "probe", "handover_gap")
	if !ok {
		return
	}
	if v := f.get("count"); v != nil {
		if i, ok := p.integer(v, "announce.count", 1, 100); ok {
			a.Count = int(i)
		}
	}
	if v := f.get("interval"); v != nil {
		if d, ok := p.positiveDuration(v, "announce.interval"); ok {
			a.Interval = d
		}
	}
	for _, k := range []struct {
		key string
		dst *time.Duration
	}{{"refresh", &a.Refresh}, {"probe", &a.Probe}, {"handover_gap", &a.HandoverGap}} {
		if v := f.get(k.key); v != nil {
			// duration refuses negative values; 0 turns the feature off.
			if d, ok := p.duration(v, "announce."+k.key); ok {
				*k.dst = d
			}
		}
	}
	if v := f.get("handover_gap"); v != nil && a.HandoverGap > time.Second {
		p.errAt(v, "announce.handover_gap", "%v is too long: at most 1s (every planned handover leaves the address unanswered this long)", a.HandoverGap)
	}
}

func (p *parser) control(n *yaml.Node, g *ControlGroup) {
	f, ok := p.mapping(n, "control", "cpu_weight", "io_weight", "cpus", "memory_min", "realtime", "sched_delay_warn", "rt_budget")
	if !ok {
		return
	}
	if v := f.get("cpu_weight"); v != nil {
		if w, ok := p.cpuWeight(v, "control.cpu_weight", 1); ok {
			g.CPUWeight = w
		}
	}
	if v := f.get("io_weight"); v != nil {
		if w, ok := p.cpuWeight(v, "control.io_weight", 1); ok {
			g.IOWeight = w
		}
	}
	if v := f.get("cpus"); v != nil {
		if s, ok := p.str(v, "control.cpus"); ok {
			if err := parseCPUList(s); err != nil {
				p.errAt(v, "control.cpus", "%v", err)
			} else {
				g.CPUs = s
			}
		}
	}
	if v := f.get("memory_min"); v != nil {
		if sz, ok := p.size(v, "control.memory_min"); ok {
			g.MemoryMin = sz
		}
	}
	if v := f.get("realtime"); v != nil {
		if b, ok := p.boolean(v, "control.realtime"); ok {
			g.Realtime = b
		}
	}
	if v := f.get("sched_delay_warn"); v != nil {
		if d, ok := p.positiveDuration(v, "control.sched_delay_warn"); ok {
			// The locator and node manager watch their scheduling with it.
			if err := (schedwatch.Config{Threshold: d}).Validate(); err != nil {
				p.errAt(v, "control.sched_delay_warn", "%s", strings.TrimPrefix(err.Error(), schedwatch.ErrConfig.Error()+": "))
			} else {
				g.SchedDelayWarn = d
			}
		}
	}
	if v := f.get("rt_budget"); v != nil {
		if d, ok := p.positiveDuration(v, "control.rt_budget"); ok {
			// The kernel's own limit: the root's 950 ms per 1 s period.
			if d < time.Millisecond || d > 950*time.Millisecond {
				p.errAt(v, "control.rt_budget", "must be between 1ms and 950ms (per second of cpu.rt_period_us), got %v", d)
			} else {
				g.RTBudget = d
			}
		}
	}
}

func (p *parser) apps(n *yaml.Node, g *AppsGroup) {
	f, ok := p.mapping(n, "apps", "cpu_weight", "io_weight", "cpu_max", "memory_max", "pids_max")
	if !ok {
		return
	}
	if v := f.get("cpu_weight"); v != nil {
		if w, ok := p.cpuWeight(v, "apps.cpu_weight", 1); ok {
			g.CPUWeight = w
		}
	}
	if v := f.get("io_weight"); v != nil {
		if w, ok := p.cpuWeight(v, "apps.io_weight", 1); ok {
			g.IOWeight = w
		}
	}
	if v := f.get("cpu_max"); v != nil {
		if s, ok := p.str(v, "apps.cpu_max"); ok {
			if err := parseCPUMax(s); err != nil {
				p.errAt(v, "apps.cpu_max", "%v", err)
			} else {
				g.CPUMax = s
			}
		}
	}
	if v := f.get("memory_max"); v != nil {
		if sz, ok := p.size(v, "apps.memory_max"); ok {
			g.MemoryMax = sz
		}
	}
	if v := f.get("pids_max"); v != nil {
		if i, ok := p.integer(v, "apps.pids_max", 0, math.MaxInt64); ok {
			g.PidsMax = i
		}
	}
}

var processKeys = []string{
	"name", "command", "env", "dir", "user", "group", "rlimits", "restart", "critical",
	"stop_signal", "stop_timeout", "backoff", "memory_max", "pids_max", "cpu_weight", "health",
}

func (p *parser) processes(n *yaml.Node) []Process {
	items, ok := p.list(n, "processes")
	if !ok {
		return nil
	}
	var out []Process
	names := map[string]*yaml.Node{}
	for i, it := range items {
		ip := index("processes", i)
		f, ok := p.mapping(it, ip, processKeys...)
		if !ok {
			continue
		}
		pr := defaultProcess()
		if v := f.get("name"); v != nil {
			if s, ok := p.ident(v, ip+".name"); ok {
				if first := names[s]; first != nil {
					p.errAt(v, ip+".name", "duplicate process name %q (first at line %d)", s, first.Line)
				} else {
					names[s] = v
				}
				pr.Name = s
			}
		} else {
			p.errAt(it, ip+".name", "required")
		}
		p.process(f, ip, &pr)
		out = append(out, pr)
	}
	return out
}

func (p *parser) process(f fields, ip string, pr *Process) {
	if v := f.get("command"); v != nil {
		if argv, ok := p.argv(v, ip+".command"); ok {
			pr.Command = argv
		}
	} else {
		p.errAt(f.at, ip+".command", "required")
	}
	if v := f.get("env"); v != nil {
		pr.Env = p.env(v, ip+".env")
	}
	if v := f.get("dir"); v != nil {
		if s, ok := p.absPath(v, ip+".dir"); ok {
			pr.Dir = s
		}
	}
	if v := f.get("user"); v != nil {
		if s, ok := p.str(v, ip+".user"); ok && s != "" {
			if _, err := user.Lookup(s); err != nil {
				if _, err2 := user.LookupId(s); err2 != nil {
					p.errAt(v, ip+".user", "unknown user %q", s)
				}
			}
			pr.User = s
		}
	}
	if v := f.get("group"); v != nil {
		if s, ok := p.str(v, ip+".group"); ok && s != "" {
			if _, err := user.LookupGroup(s); err != nil {
				if _, err2 := user.LookupGroupId(s); err2 != nil {
					p.errAt(v, ip+".group", "unknown group %q", s)
				}
			}
			pr.Group = s
		}
	}
	if v := f.get("rlimits"); v != nil {
		pr.Rlimits = p.rlimits(v, ip+".rlimits")
	}
	if v := f.get("restart"); v != nil {
		if s, ok := p.enum(v, ip+".restart", string(RestartAlways), string(RestartOnFailure), string(RestartNever)); ok {
			pr.Restart = RestartPolicy(s)
		}
	}
	if v := f.get("critical"); v != nil {
		pr.Critical, _ = p.boolean(v, ip+".critical")
	}
	if v := f.get("stop_signal"); v != nil {
		if s, ok := p.str(v, ip+".stop_signal"); ok {
			if sig, err := canonicalSignal(s); err != nil {
				p.errAt(v, ip+".stop_signal", "%v", err)
			} else {
				pr.StopSignal = sig
			}
		}
	}
	if v := f.get("stop_timeout"); v != nil {
		if d, ok := p.positiveDuration(v, ip+".stop_timeout"); ok {
			pr.StopTimeout = d
		}
	}
	if v := f.get("backoff"); v != nil {
		p.backoff(v, ip+".backoff", &pr.Backoff)
	}
	if v := f.get("memory_max"); v != nil {
		if sz, ok := p.size(v, ip+".memory_max"); ok {
			pr.MemoryMax = sz
		}
	}
	if v := f.get("pids_max"); v != nil {
		if i, ok := p.integer(v, ip+".pids_max", 0, math.MaxInt64); ok {
			pr.PidsMax = i
		}
	}
	if v := f.get("cpu_weight"); v != nil {
		if w, ok := p.cpuWeight(v, ip+".cpu_weight", 0); ok {
			pr.CPUWeight = w
		}
	}
	if v := f.get("health"); v != nil {
		pr.Health = p.health(v, f.key("health"), ip+".health")
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

func (p *parser) env(n *yaml.Node, path string) []string {
	if n.Kind != yaml.MappingNode {
		p.errAt(n, path, "must be a mapping of NAME: value, not %s", kindOf(n))
		return nil
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
	return out
}

// Unlimited is the rlimit value written as "unlimited" (RLIM_INFINITY).
const Unlimited = ^uint64(0)

func (p *parser) rlimits(n *yaml.Node, path string) map[string]uint64 {
	f, ok := p.mapping(n, path, "nofile", "nproc", "core", "memlock", "stack")
	if !ok {
		return nil
	}
	out := map[string]uint64{}
	for name, e := range f.m {
		kp := join(path, name)
		v := e.val
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == "unlimited" {
			out[name] = Unlimited
			continue
		}
		var u uint64
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&u) != nil {
			p.errAt(v, kp, "must be a non-negative integer or \"unlimited\", not %s", describe(v))
			continue
		}
		out[name] = u
	}
	return out
}

func (p *parser) backoff(n *yaml.Node, path string, b *Backoff) {
	f, ok := p.mapping(n, path, "initial", "max", "stable", "fatal_after")
	if !ok {
		return
	}
	if v := f.get("fatal_after"); v != nil {
		if i, ok := p.integer(v, path+".fatal_after", 1, math.MaxInt32); ok {
			b.FatalAfter = int(i)
		}
	}
	before := len(p.errs)
	for _, d := range []struct {
		key string
		dst *int64
	}{
		{"initial", (*int64)(&b.Initial)},
		{"max", (*int64)(&b.Max)},
		{"stable", (*int64)(&b.Stable)},
	} {
		if v := f.get(d.key); v != nil {
			if x, ok := p.positiveDuration(v, path+"."+d.key); ok {
				*d.dst = int64(x)
			}
		}
	}
	if len(p.errs) == before && b.Max < b.Initial {
		at, key := f.get("max"), "max"
		if at == nil {
			at, key = f.get("initial"), "initial"
		}
		p.errAt(at, path+"."+key, "max %s must not be shorter than initial %s", b.Max, b.Initial)
	}
}

var healthKinds = []string{string(HealthSIPOptions), string(HealthExec), string(HealthTCP), string(HealthHTTP)}

func (p *parser) health(n, key *yaml.Node, path string) *Health {
	known := append(append([]string{}, healthKinds...), "interval", "timeout", "rise", "fall", "grace")
	f, ok := p.mapping(n, path, known...)
	if !ok {
		return nil
	}
	h := defaultHealth()
	// Timing at health level first, then sip_options' own, which wins.
	var intervalAt, timeoutAt mark
	timingOK := p.healthTiming(f, path, &h, &intervalAt, &timeoutAt)

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
		argv, ok := p.argv(v, kp)
		h.Exec, good = argv, ok
	case HealthTCP:
		if s, ok := p.str(v, kp); ok {
			if err := checkHostPort(s, false); err != nil {
				p.errAt(v, kp, "%v", err)
				good = false
			}
			h.TCP = s
		} else {
			good = false
		}
	case HealthHTTP:
		if s, ok := p.str(v, kp); ok {
			if err := checkHTTPURL(s); err != nil {
				p.errAt(v, kp, "%v", err)
				good = false
			}
			h.HTTP = s
		} else {
			good = false
		}
	case HealthSIPOptions:
		sf, ok := p.mapping(v, kp, "target", "interval", "timeout", "rise", "fall", "grace")
		if !ok {
			return nil
		}
		if t := sf.get("target"); t != nil {
			if s, ok := p.str(t, kp+".target"); ok {
				if err := checkSIPURI(s); err != nil {
					p.errAt(t, kp+".target", "%v", err)
					good = false
				}
				h.SIP = s
			} else {
				good = false
			}
		} else {
			p.errAt(kinds[0].key, kp+".target", "required, like \"sip:127.0.0.1:5060\"")
			good = false
		}
		timingOK = p.healthTiming(sf, kp, &h, &intervalAt, &timeoutAt) && timingOK
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

// healthTiming reads the timing keys of f into h; false if any was bad.
func (p *parser) healthTiming(f fields, path string, h *Health, intervalAt, timeoutAt *mark) bool {
	before := len(p.errs)
	if v := f.get("interval"); v != nil {
		if d, ok := p.positiveDuration(v, path+".interval"); ok {
			h.Interval, *intervalAt = d, mark{v, path + ".interval"}
		}
	}
	if v := f.get("timeout"); v != nil {
		if d, ok := p.positiveDuration(v, path+".timeout"); ok {
			h.Timeout, *timeoutAt = d, mark{v, path + ".timeout"}
		}
	}
	if v := f.get("rise"); v != nil {
		if i, ok := p.integer(v, path+".rise", 1, 1000); ok {
			h.Rise = int(i)
		}
	}
	if v := f.get("fall"); v != nil {
		if i, ok := p.integer(v, path+".fall", 1, 1000); ok {
			h.Fall = int(i)
		}
	}
	if v := f.get("grace"); v != nil {
		if d, ok := p.duration(v, path+".grace"); ok {
			h.Grace = d
		}
	}
	return len(p.errs) == before
}

func (p *parser) hooks(n *yaml.Node, h *Hooks) {
	f, ok := p.mapping(n, "hooks", "on_active", "on_standby", "on_fault", "timeout")
	if !ok {
		return
	}
	for _, hk := range []struct {
		key string
		dst *[][]string
	}{{"on_active", &h.OnActive}, {"on_standby", &h.OnStandby}, {"on_fault", &h.OnFault}} {
		v := f.get(hk.key)
		if v == nil {
			continue
		}
		path := "hooks." + hk.key
		items, ok := p.list(v, path)
		if !ok {
			continue
		}
		for i, it := range items {
			if argv, ok := p.argv(it, index(path, i)); ok {
				*hk.dst = append(*hk.dst, argv)
			}
		}
	}
	if v := f.get("timeout"); v != nil {
		if d, ok := p.positiveDuration(v, "hooks.timeout"); ok {
			h.Timeout = d
		}
	}
}

func (p *parser) metrics(n *yaml.Node, m *Metrics) {
	f, ok := p.mapping(n, "metrics", "listen")
	if !ok {
		return
	}
	if v := f.get("listen"); v != nil {
		if s, ok := p.str(v, "metrics.listen"); ok {
			if s != "" {
				if err := checkHostPort(s, true); err != nil {
					p.errAt(v, "metrics.listen", "%v (or \"\" to disable)", err)
					return
				}
			}
			m.Listen = s
		}
	}
}

// groupNameRE is a portable group name (useradd's, without the trailing $).
var groupNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)

func (p *parser) runtime(n *yaml.Node, r *Runtime) {
	f, ok := p.mapping(n, "runtime", "control_socket", "control_group", "state_dir", "cgroup")
	if !ok {
		return
	}
	if v := f.get("control_socket"); v != nil {
		if s, ok := p.absPath(v, "runtime.control_socket"); ok {
			if len(s) > maxSocketPath {
				p.errAt(v, "runtime.control_socket", "%d bytes is longer than a unix socket path can be (%d bytes)", len(s), maxSocketPath)
			} else {
				r.ControlSocket = s
			}
		}
	}
	if v := f.get("control_group"); v != nil {
		if s, ok := p.str(v, "runtime.control_group"); ok {
			if s != "" && !groupNameRE.MatchString(s) {
				p.errAt(v, "runtime.control_group", "%q is not a group name: letters, digits, _ . - (not first), at most 32 characters; \"\" for root only", s)
			} else {
				r.ControlGroup = s
			}
		}
	}
	if v := f.get("state_dir"); v != nil {
		if s, ok := p.absPath(v, "runtime.state_dir"); ok {
			r.StateDir = s
		}
	}
	if v := f.get("cgroup"); v != nil {
		if s, ok := p.str(v, "runtime.cgroup"); ok {
			if err := checkCgroupPath(s); err != nil {
				p.errAt(v, "runtime.cgroup", "%v", err)
			} else {
				r.Cgroup = s
			}
		}
	}
}

func (p *parser) log(n *yaml.Node, l *Log) {
	f, ok := p.mapping(n, "log", "level", "format")
	if !ok {
		return
	}
	if v := f.get("level"); v != nil {
		if s, ok := p.enum(v, "log.level", "debug", "info", "warn", "error"); ok {
			l.Level = s
		}
	}
	if v := f.get("format"); v != nil {
		if s, ok := p.enum(v, "log.format", "text", "json"); ok {
			l.Format = s
		}
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
	if !mk.peersBad {
		p.listenRule(cl, mk)
		p.portRule(mk)
		p.vipRule(mk)
	}
	p.protocolRules(c, mk)
	if cl.KeyFile != "" {
		if _, err := ReadKeyFile(cl.KeyFile); err != nil {
			p.errAt(firstNode(mk.keyFileVal, mk.clusterKey), "cluster.key_file", "%s", strings.TrimPrefix(err.Error(), "config: "))
		}
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
func (p *parser) portRule(mk *marks) {
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
		lp, _ := LocatorPort(pm.ap.Port()) // parsePeerAddr refused a port without a successor
		mine := []bound{{netip.AddrPortFrom(pm.ap.Addr(), lp), "locator", pm}}
		if !pm.witness {
			mine = append([]bound{{pm.ap, "node manager", pm}}, mine...)
		}
	check:
		for _, b := range mine {
			for _, t := range taken {
				if b.ap == t.ap {
					p.errAt(pm.addrVal, pm.path+".address", "its %s port %s is the %s port of %s (line %d): "+
						"each host uses its port P for the node manager and P+1 for the locator, so leave a gap of two",
						b.what, b.ap, t.what, t.by.path, t.by.addrVal.Line)
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
}
