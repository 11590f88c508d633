package netfloat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// IPv6Disabled reads the interface's disable_ipv6 from a sysctl tree; the
// tree is a directory here (the real one, per namespace, is exercised by
// test/supervise's TestIPv6DisabledOnVIPInterface).
func TestIPv6Disabled(t *testing.T) {
	root := t.TempDir()
	write := func(ifn, v string) {
		dir := filepath.Join(root, "net/ipv6/conf", ifn)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "disable_ipv6"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("eth0", "0")
	write("eth1", "1")
	write("eth0.100", "1")
	for _, c := range []struct {
		ifn  string
		want string // "" for nil
	}{
		{"eth0", ""},
		{"eth1", "IPv6 disabled (net.ipv6.conf.eth1.disable_ipv6 = 1)"},
		{"eth0.100", "IPv6 disabled (net.ipv6.conf.eth0/100.disable_ipv6 = 1)"},
		{"nosuch0", ""}, // a missing interface is the link's state
		{"../../x", ""},
	} {
		err := IPv6Disabled(root, c.ifn)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want nil", c.ifn, err)
		case c.want != "" && (err == nil || err.Error() != c.want || !errors.Is(err, ErrIPv6Disabled)):
			t.Errorf("%s: %v, want %q", c.ifn, err, c.want)
		}
	}
	// Booted with ipv6.disable=1: no net/ipv6 at all.
	bare := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bare, "net/ipv4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := IPv6Disabled(bare, "eth0"); !errors.Is(err, ErrIPv6Disabled) || !strings.Contains(err.Error(), "ipv6.disable=1") {
		t.Errorf("no net/ipv6: %v", err)
	}
}
