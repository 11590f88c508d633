package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/schedwatch"
)

// Default paths.
const (
	DefaultPath    = "/etc/vigil/vigil.yaml"
	DefaultKeyFile = "/etc/vigil/cluster.key"
	// DefaultControlGroup is the group the packages create: its members
	// may run `vigil status` without root.
	DefaultControlGroup = "vigil"
)

// Load reads, parses, defaults and validates the file at path. A file
// that cannot be read is a plain error wrapping the fs error; a file with
// problems returns Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	c.Source = path
	return c, nil
}

// Parse parses, defaults and validates a configuration. name is used in
// error messages only. The error, when not nil, is of type Errors and
// lists every problem found. Parse reads cluster.key_file and looks up
// users and commands, so it checks the host it runs on.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{file: name}
	c := defaults()
	if root := p.decode(data); root != nil {
		p.config(root, c)
	}
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
	}
	return c, nil
}

// defaults is the configuration with every documented default filled in.
func defaults() *Config {
	return &Config{
		Cluster: Cluster{
			Role:    RoleNode,
			KeyFile: DefaultKeyFile,
			Timing: Timing{
				TokenInterval: protocol.DefaultTokenInterval,
				TokenTimeout:  protocol.DefaultTokenTimeout,
				Lease:         protocol.DefaultLease,
				DriftMargin:   protocol.DefaultDriftMargin,
			},
		},
		Control: ControlGroup{
			CPUWeight:         10000,
			IOWeight:          1000,
			MemoryMin:         64 << 20,
			Realtime:          true,
			SchedDelayWarn:    schedwatch.DefaultThreshold,
			LatenessWarnShare: timingstat.DefaultWarnShare,
			RTBudget:          300 * time.Millisecond,
		},
		Announce: Announce{Count: 3, Interval: 100 * time.Millisecond, HandoverGap: DefaultHandoverGap},
		Apps:     AppsGroup{CPUWeight: 100, IOWeight: 100},
		Hooks:    Hooks{Timeout: 10 * time.Second},
		Metrics:  Metrics{Listen: "127.0.0.1:9720"},
		Runtime: Runtime{
			ControlSocket: "/run/vigil/control.sock",
			ControlGroup:  DefaultControlGroup,
			StateDir:      "/var/lib/vigil",
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

func defaultProcess() Process {
	return Process{
		Dir:         "/",
		Restart:     RestartAlways,
		StopSignal:  "SIGTERM",
		StopTimeout: 10 * time.Second,
		Backoff: Backoff{
			Initial:    100 * time.Millisecond,
			Max:        30 * time.Second,
			Stable:     10 * time.Second,
			FatalAfter: 10,
		},
	}
}

// DefaultHealth is a health check's timing when the configuration does not
// set it (docs/configuration.md); package health falls back to it too.
func DefaultHealth() Health {
	return Health{
		Interval: time.Second,
		Timeout:  300 * time.Millisecond,
		Rise:     2,
		Fall:     3,
	}
}

// Process returns the supervised process called name.
func (c *Config) Process(name string) (*Process, bool) {
	for i := range c.Processes {
		if c.Processes[i].Name == name {
			return &c.Processes[i], true
		}
	}
	return nil, false
}

// Self returns this host's entry: the node or witness whose id is
// cluster.node. Validation guarantees it exists in a parsed Config.
func (c *Config) Self() Peer {
	list := c.Cluster.Nodes
	if c.Cluster.Role == RoleWitness {
		list = c.Cluster.Witnesses
	}
	for _, p := range list {
		if p.ID == c.Cluster.Node {
			return p
		}
	}
	return Peer{}
}

// Locators returns every host that runs a locator: the nodes, then the
// witnesses. A lease needs a majority of them.
func (c *Config) Locators() []Peer {
	out := make([]Peer, 0, len(c.Cluster.Nodes)+len(c.Cluster.Witnesses))
	out = append(out, c.Cluster.Nodes...)
	return append(out, c.Cluster.Witnesses...)
}

// Service returns the first of the file's services (the one of
// services:, or the implicit one made from the top-level vips:), or, in a
// configuration narrowed by ForService, its service. ok is false on a
// witness that lists none.
func (c *Config) Service() (Service, bool) {
	if c == nil || len(c.Services) == 0 {
		return Service{}, false
	}
	return c.Services[0], true
}

// ServiceCount is how many services the cluster has, as this file lists
// them: each has a node manager of its own (on a node), ports and a name of
// its own (ForService); the host's one locator serves them all. At least 1: a witness
// that lists none serves the first.
func (c *Config) ServiceCount() int {
	if c == nil {
		return 1
	}
	return max(len(c.Services), 1)
}

// ClusterName is cluster.name as the file has it, also in a service's
// narrowed configuration (ForService), whose Cluster.Name is the
// "<cluster>/<service>" its datagrams carry (a cluster name has no "/").
func (c *Config) ClusterName() string {
	name, _, _ := strings.Cut(c.Cluster.Name, "/")
	return name
}

// ForService is c narrowed to the service in slot i (its index in
// Services): what that service's node manager and locator run with. Its
// Services is that one service, VIPs its floating IPs, Slot i. A cluster
// of one service keeps everything else as it is, so that a host with one
// service is unchanged. With several, each runs as a cluster of its own,
// over the same hosts and key: named "<cluster>/<service>" on the wire
// (its datagrams and a replay never reach another service's processes),
// its state in the subdirectory service-<name> of runtime.state_dir, and,
// after the first, every host's ports shifted by 2i (node manager P+2i,
// locator P+2i+1).
//
// The first service is named too: were it "<cluster>", a host that lists
// the services in another order would run another service in the first
// slot under the same name and ports, and take part in its elections with
// its own floating IPs: the same address held by two hosts at once. Named,
// the two slots' datagrams carry different tags and are dropped, and the
// misordered host gets no quorum for either.
func (c *Config) ForService(i int) (*Config, error) {
	if i < 0 || i >= c.ServiceCount() {
		return nil, fmt.Errorf("config: no service %d: the cluster has %d", i, c.ServiceCount())
	}
	n := *c
	n.Slot = i
	if len(c.Services) == 0 {
		return &n, nil // a witness without services: the first
	}
	svc := c.Services[i]
	n.Services = []Service{svc}
	n.VIPs = slices.Clone(svc.VIPs)
	if len(c.Services) == 1 {
		return &n, nil
	}
	n.Cluster.Name = c.Cluster.Name + "/" + svc.Name
	n.Runtime.StateDir = filepath.Join(c.Runtime.StateDir, "service-"+svc.Name)
	if i == 0 {
		return &n, nil
	}
	shift := func(ps []Peer) ([]Peer, error) {
		out := make([]Peer, len(ps))
		for k, p := range ps {
			ap, err := parsePeerAddr(p.Address)
			if err != nil {
				return nil, fmt.Errorf("config: %s: %w", p.ID, err)
			}
			p.Address = netip.AddrPortFrom(ap.Addr(), ap.Port()+uint16(2*i)).String()
			out[k] = p
		}
		return out, nil
	}
	var err error
	if n.Cluster.Nodes, err = shift(c.Cluster.Nodes); err != nil {
		return nil, err
	}
	if n.Cluster.Witnesses, err = shift(c.Cluster.Witnesses); err != nil {
		return nil, err
	}
	if c.Cluster.Listen != "" {
		ap, err := parsePeerAddr(c.Cluster.Listen)
		if err != nil {
			return nil, fmt.Errorf("config: listen: %w", err)
		}
		n.Cluster.Listen = netip.AddrPortFrom(ap.Addr(), ap.Port()+uint16(2*i)).String()
	}
	return &n, nil
}

// Protocol is the protocol core's view of c: what the node manager and the
// locator start with. Validation applies its rules (protocol.Config.Problems)
// to every file it accepts.
//
// Its Nodes are in the service's order of preference: the nodes of prefer
// first, most preferred first, then every other node in cluster.nodes
// order (cluster.nodes order without a service, on a witness). Its
// Locators are the nodes in cluster.nodes order, then the witnesses.
func (c *Config) Protocol() protocol.Config {
	svc, _ := c.Service()
	return c.protocolFor(svc)
}

// protocolFor is Protocol for one of c's services, so that validation
// applies the per-service rules (failback) to every service, not only to
// the first.
func (c *Config) protocolFor(svc Service) protocol.Config {
	pc := protocol.Config{
		Cluster:         c.Cluster.Name,
		Self:            c.Cluster.Node,
		TwoNode:         c.Cluster.TwoNode,
		LastManStanding: c.Cluster.LastManStanding,
		TokenInterval:   c.Cluster.Timing.TokenInterval,
		TokenTimeout:    c.Cluster.Timing.TokenTimeout,
		Lease:           c.Cluster.Timing.Lease,
		DriftMargin:     c.Cluster.Timing.DriftMargin,
	}
	pc.Nodes = preferenceOrder(c.Cluster.Nodes, svc.Prefer)
	pc.Failback = svc.Failback
	for _, l := range c.Locators() {
		pc.Locators = append(pc.Locators, l.ID)
	}
	return pc
}

// preferenceOrder is the ids of nodes with those of prefer first, in
// prefer's order, then the others in their own order. Ids of prefer that
// are not nodes, or repeated, are skipped: validation reports them.
func preferenceOrder(nodes []Peer, prefer []string) []string {
	var out []string
	taken := map[string]bool{}
	for _, id := range prefer {
		if !taken[id] && hasPeer(nodes, id) {
			out = append(out, id)
			taken[id] = true
		}
	}
	for _, n := range nodes {
		if !taken[n.ID] { // a repeated node id stays repeated: the protocol's rules report it
			out = append(out, n.ID)
		}
	}
	return out
}
