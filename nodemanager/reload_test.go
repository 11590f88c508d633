package nodemanager

import (
	"net/netip"
	"testing"

	"github.com/vigil-project/vigil/netfloat"
)

func vip(t *testing.T, s, ifn string) netfloat.VIP {
	t.Helper()
	v, err := parseVIP(s, ifn)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A reload touches only what changed: identical VIPs are kept, a new
// prefix length is claimed in place (never released: that would remove the
// address just re-added), a VIP moved to another interface is claimed there
// and released from the old one.
func TestDiffVIPs(t *testing.T) {
	a := vip(t, "192.0.2.100/24", "eth0")
	b := vip(t, "192.0.2.101/24", "eth0")
	a25 := vip(t, "192.0.2.100/25", "eth0")
	aEth1 := vip(t, "192.0.2.100/24", "eth1")
	v6 := vip(t, "2001:db8::100/64", "eth0")
	cases := []struct {
		name                 string
		old, next            []netfloat.VIP
		claim, release, kept []netfloat.VIP
	}{
		{"unchanged", []netfloat.VIP{a, b}, []netfloat.VIP{b, a}, nil, nil, []netfloat.VIP{b, a}},
		{"add", []netfloat.VIP{a}, []netfloat.VIP{a, b}, []netfloat.VIP{b}, nil, []netfloat.VIP{a}},
		{"remove", []netfloat.VIP{a, b}, []netfloat.VIP{a}, nil, []netfloat.VIP{b}, []netfloat.VIP{a}},
		{"first", nil, []netfloat.VIP{a, v6}, []netfloat.VIP{a, v6}, nil, nil},
		{"all gone", []netfloat.VIP{a, v6}, nil, nil, []netfloat.VIP{a, v6}, nil},
		{"new length", []netfloat.VIP{a, b}, []netfloat.VIP{a25, b}, []netfloat.VIP{a25}, nil, []netfloat.VIP{b}},
		{"moved", []netfloat.VIP{a}, []netfloat.VIP{aEth1}, []netfloat.VIP{aEth1}, []netfloat.VIP{a}, nil},
	}
	for _, c := range cases {
		p := diffVIPs(c.old, c.next)
		if !same(p.claim, c.claim) || !same(p.release, c.release) || !same(p.kept, c.kept) {
			t.Errorf("%s: claim %v release %v kept %v; want %v %v %v", c.name, p.claim, p.release, p.kept, c.claim, c.release, c.kept)
		}
	}
}

func same(a, b []netfloat.VIP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseVIPRefusesGarbage(t *testing.T) {
	for _, c := range [][2]string{{"192.0.2.100", "eth0"}, {"nonsense/24", "eth0"}, {"192.0.2.100/24", ""}} {
		if _, err := parseVIP(c[0], c[1]); err == nil {
			t.Errorf("parseVIP(%q, %q) accepted", c[0], c[1])
		}
	}
	v := vip(t, "192.0.2.100/24", "eth0")
	if v.Prefix != netip.MustParsePrefix("192.0.2.100/24") || v.Interface != "eth0" {
		t.Errorf("parsed %v", v)
	}
}
