package netfloat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrIPv6Disabled is returned by IPv6Disabled for an interface that cannot
// hold an IPv6 address.
var ErrIPv6Disabled = errors.New("IPv6 disabled")

// IPv6Disabled reports why the interface ifname of the caller's network
// namespace cannot hold an IPv6 address, or nil if it can (or if it does
// not exist: that is the link's state, not IPv6's). The kernel refuses
// such an add ("IPv6 is disabled on this device"), so a node whose VIP
// interface has IPv6 off would hold its service without that address; it
// is a host's setting, readable on a standby before any add is tried.
// procSys is the sysctl tree, "/proc/sys" (per network namespace: it
// shows the namespace of the process reading it).
func IPv6Disabled(procSys, ifname string) error {
	if _, err := os.Stat(filepath.Join(procSys, "net/ipv6")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w on this host (no %s/net/ipv6: the kernel was booted with ipv6.disable=1)", ErrIPv6Disabled, procSys)
	}
	if ifname == "" || strings.ContainsAny(ifname, "/\x00") || ifname == "." || ifname == ".." {
		return nil // not an interface name the kernel accepts; not IPv6's business
	}
	b, err := os.ReadFile(filepath.Join(procSys, "net/ipv6/conf", ifname, "disable_ipv6"))
	if err != nil {
		// No such interface (its link state says so), or /proc unreadable:
		// nothing learnt about IPv6; the add itself reports what fails.
		return nil
	}
	if strings.TrimSpace(string(b)) == "1" {
		// sysctl writes a '.' in an interface name as '/'.
		return fmt.Errorf("%w (net.ipv6.conf.%s.disable_ipv6 = 1)", ErrIPv6Disabled, strings.ReplaceAll(ifname, ".", "/"))
	}
	return nil
}
