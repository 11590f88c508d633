package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/netfloat"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/schedwatch"
)

// The value parsers return plain messages (no key, no position): the
// walker adds those.

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("must be a duration like 150ms, not empty")
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		// time.ParseDuration accepts "0" but nothing else without a unit;
		// reject all bare numbers so "150" never silently means 150ns or 0.
		return 0, fmt.Errorf("%q has no unit: write a Go duration like 150ms or 2s", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write a Go duration like 150ms or 2s", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

var sizeUnits = map[string]int64{
	"":   1,
	"K":  1000,
	"k":  1000,
	"M":  1000 * 1000,
	"G":  1000 * 1000 * 1000,
	"T":  1000 * 1000 * 1000 * 1000,
	"Ki": 1 << 10,
	"Mi": 1 << 20,
	"Gi": 1 << 30,
	"Ti": 1 << 40,
}

var sizeRE = regexp.MustCompile(`^([0-9]+)([A-Za-z]*)$`)

// parseSize reads a byte count: 65536, 512M, 64Mi. "" is 0.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: write bytes or a number with a unit (K M G T, Ki Mi Gi Ti), like 64Mi", s)
	}
	mult, ok := sizeUnits[m[2]]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q: use K M G T or Ki Mi Gi Ti", s, m[2])
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// maxCPU bounds cpu lists: far above any real machine, low enough that a
// typo like 0-99999999 is caught.
const maxCPU = 8191

// parseCPUList checks a cpuset list such as "0", "0-1,3". "" is allowed.
func parseCPUList(s string) error {
	if s == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := cpuNumber(lo)
		if err != nil {
			return fmt.Errorf("%q is not a cpu list like \"0\" or \"0-1,3\"", s)
		}
		if !isRange {
			continue
		}
		b, err := cpuNumber(hi)
		if err != nil || b < a {
			return fmt.Errorf("%q is not a cpu list like \"0\" or \"0-1,3\"", s)
		}
	}
	return nil
}

func cpuNumber(s string) (int, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a number")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > maxCPU {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// parseCPUMax checks "" or "N%" with N a positive integer.
func parseCPUMax(s string) error {
	if s == "" {
		return nil
	}
	num, ok := strings.CutSuffix(s, "%")
	if ok && num != "" && strings.TrimLeft(num, "0123456789") == "" {
		if n, err := strconv.Atoi(num); err == nil && n > 0 {
			return nil
		}
	}
	return fmt.Errorf("%q is not a percentage of one cpu like \"150%%\"", s)
}

// parsePeerAddr checks an IP literal with a non-zero port: peers are
// addressed without DNS so that a failover never waits on a resolver.
func parsePeerAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP:port address like 192.0.2.11:7400 or [2001:db8::11]:7400", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: port must not be 0", s)
	}
	if _, ok := LocatorPort(ap.Port()); !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: port %d leaves no port for the locator, which listens on port+1: use 1..%d", s, ap.Port(), ap.Port()-1)
	}
	if ap.Addr().IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("%q: a multicast address is no host's address", s)
	}
	// ::ffff:192.0.2.11 and 192.0.2.11 are one host: compare them as one.
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// checkHostPort checks host:port where host may be a name (health checks,
// metrics) or empty when allowEmptyHost.
func checkHostPort(s string, allowEmptyHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not a host:port address", s)
	}
	if host == "" && !allowEmptyHost {
		return fmt.Errorf("%q has no host", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return nil
}

// checkSIPURI checks sip:host[:port] or sips:..., with optional user@ and
// ;params, enough to build an OPTIONS request from it.
func checkSIPURI(s string) error {
	bad := fmt.Errorf("%q is not a SIP URI like sip:127.0.0.1:5060", s)
	rest, ok := strings.CutPrefix(s, "sip:")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "sips:"); !ok {
			return bad
		}
	}
	if i := strings.IndexAny(rest, ";?"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if rest == "" || strings.ContainsAny(rest, " \t/") {
		return bad
	}
	host := rest
	if strings.HasPrefix(rest, "[") || strings.Count(rest, ":") == 1 {
		h, port, err := net.SplitHostPort(rest)
		if err != nil {
			if !strings.HasSuffix(rest, "]") { // [v6] without a port
				return bad
			}
			h = strings.Trim(rest, "[]")
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return bad
		}
		host = h
	}
	if host == "" {
		return bad
	}
	return nil
}

// canonicalSignal maps SIGTERM, TERM, term or 15 to "SIGTERM".
func canonicalSignal(s string) (string, error) {
	bad := fmt.Errorf("%q is not a signal name like SIGTERM, TERM or 15", s)
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return "", bad
		}
		if name := unix.SignalName(syscall.Signal(n)); name != "" {
			return name, nil
		}
		return "", bad
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if unix.SignalNum(name) == 0 {
		return "", bad
	}
	return unix.SignalName(unix.SignalNum(name)), nil
}

// checkIfName applies the kernel's dev_valid_name rules.
func checkIfName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\r\v\f") {
		return fmt.Errorf("%q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", s)
	}
	return nil
}

// checkCgroupPath checks a relative path of [A-Za-z0-9_.-] segments.
func checkCgroupPath(s string) error {
	if s == "" {
		return nil
	}
	bad := fmt.Errorf("%q is not a relative cgroup path of [A-Za-z0-9_.-] segments like \"vigil\" or \"vigil/a\"", s)
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." || !cgroupSegRE.MatchString(seg) {
			return bad
		}
	}
	return nil
}

var (
	cgroupSegRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	clusterNameRE = regexp.MustCompile(`^[a-z0-9-]+$`)
	// identifiers name cgroups and appear in logs and metrics labels.
	identRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// maxIdentLen bounds ids and names. Peer ids travel in every datagram, so
// the wire format's limit is the limit; process names share the rule.
const maxIdentLen = protocol.MaxIDLen

// maxSocketPath is the longest path a unix socket can be bound at: sun_path
// holds the path and its terminating NUL.
const maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// LocatorPort is the port of the locator of a host whose entry (or listen)
// port is p: p+1. ok is false when p+1 is no port: 65535 would wrap to 0,
// and binding port 0 picks a random one that no peer knows.
func LocatorPort(p uint16) (port uint16, ok bool) {
	if p == math.MaxUint16 {
		return 0, false
	}
	return p + 1, true
}

// The rules of single values that the section tables check (sections.go).

func checkClusterName(s string) error {
	if !clusterNameRE.MatchString(s) || len(s) > 63 {
		return fmt.Errorf("%q must be lowercase letters, digits and '-', at most 63 characters", s)
	}
	return nil
}

// peerAddress is a node's or witness's address: one the others can reach.
func peerAddress(s string) (netip.AddrPort, error) {
	ap, err := parsePeerAddr(s)
	if err == nil && ap.Addr().IsUnspecified() {
		err = fmt.Errorf("%q: the unspecified address reaches no host: give the address the others reach this host at", s)
	}
	return ap, err
}

// floatingAddr is a VIP's address, normalised by the node manager's own
// rule, so that what it would refuse at takeover is refused here.
func floatingAddr(s string) (netip.Addr, error) {
	pfx, err := netip.ParsePrefix(s)
	var norm netip.Prefix
	if err == nil {
		norm, err = netfloat.NormalizePrefix(pfx)
	}
	var ae *netfloat.AddressError
	switch {
	case errors.As(err, &ae):
		return netip.Addr{}, fmt.Errorf("%q cannot be a floating IP: %s", s, ae.Reason)
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an address with a prefix length, like 192.0.2.100/24 or 2001:db8::100/64", s)
	}
	return norm.Addr(), nil
}

func checkHandoverGap(d time.Duration) error {
	if d > time.Second {
		return fmt.Errorf("%v is too long: at most 1s (every planned handover leaves the address unanswered this long)", d)
	}
	return nil
}

// checkSchedDelayWarn applies the rule of schedwatch, with which the
// locator and node manager watch their scheduling.
func checkSchedDelayWarn(d time.Duration) error {
	if err := (schedwatch.Config{Threshold: d}).Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), schedwatch.ErrConfig.Error()+": "))
	}
	return nil
}

// checkRTBudget applies the kernel's own limit: the root's 950 ms per 1 s period.
func checkRTBudget(d time.Duration) error {
	if d < time.Millisecond || d > 950*time.Millisecond {
		return fmt.Errorf("must be between 1ms and 950ms (per second of cpu.rt_period_us), got %v", d)
	}
	return nil
}

// checkUser accepts "" (the supervisor's user), a user name or a uid.
func checkUser(s string) error {
	if s == "" {
		return nil
	}
	if _, err := user.Lookup(s); err != nil {
		if _, err2 := user.LookupId(s); err2 != nil {
			return fmt.Errorf("unknown user %q", s)
		}
	}
	return nil
}

// checkGroup accepts "" (the user's primary group), a group name or a gid.
func checkGroup(s string) error {
	if s == "" {
		return nil
	}
	if _, err := user.LookupGroup(s); err != nil {
		if _, err2 := user.LookupGroupId(s); err2 != nil {
			return fmt.Errorf("unknown group %q", s)
		}
	}
	return nil
}

func checkMetricsListen(s string) error {
	if s == "" {
		return nil
	}
	if err := checkHostPort(s, true); err != nil {
		return fmt.Errorf("%v (or \"\" to disable)", err)
	}
	return nil
}

func checkTCPTarget(s string) error { return checkHostPort(s, false) }

func checkSocketPath(s string) error {
	if len(s) > maxSocketPath {
		return fmt.Errorf("%d bytes is longer than a unix socket path can be (%d bytes)", len(s), maxSocketPath)
	}
	return nil
}

// groupNameRE is a portable group name (useradd's, without the trailing $).
var groupNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)

func checkGroupName(s string) error {
	if s != "" && !groupNameRE.MatchString(s) {
		return fmt.Errorf("%q is not a group name: letters, digits, _ . - (not first), at most 32 characters; \"\" for root only", s)
	}
	return nil
}

// share reads a share of a whole, written as a percentage ("25%") or a
// fraction (0.25), from 0 to 1.
func (p *parser) share(n *yaml.Node, path string) (float64, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errAt(n, path, "must be a share like 25%% or 0.25, not %s", describe(n))
		return 0, false
	}
	s := strings.TrimSpace(n.Value)
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		p.errAt(n, path, "must be a share like 25%% or 0.25, not %s", describe(n))
		return 0, false
	}
	if pct {
		v /= 100
	}
	if v < 0 || v > 1 {
		p.errAt(n, path, "%s is out of range 0..100%% (0 turns the warning off)", s)
		return 0, false
	}
	return v, true
}
