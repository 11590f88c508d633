package supervisor

import (
	"strings"
	"testing"

	"github.com/vigil-project/vigil/config"
)

// A reload may add and remove floating IPs, and change a service's, but
// not move one from a service to another in one step.
func TestReloadRefusesMovingAnAddress(t *testing.T) {
	svcs := func(voice, data []string) *config.Config {
		c := &config.Config{}
		for _, s := range []struct {
			name  string
			addrs []string
		}{{"voice", voice}, {"data", data}} {
			svc := config.Service{Name: s.name}
			for _, a := range s.addrs {
				svc.VIPs = append(svc.VIPs, config.VIP{Address: a, Interface: "eth0"})
			}
			c.Services = append(c.Services, svc)
		}
		return c
	}
	old := svcs([]string{"192.0.2.100/24", "2001:db8::100/64"}, []string{"192.0.2.101/24"})
	for _, tc := range []struct {
		name string
		next *config.Config
		want string // "" = accepted
	}{
		{"unchanged", svcs([]string{"192.0.2.100/24", "2001:db8::100/64"}, []string{"192.0.2.101/24"}), ""},
		{"added and removed", svcs([]string{"192.0.2.100/24"}, []string{"192.0.2.101/24", "192.0.2.102/24"}), ""},
		{"another prefix length", svcs([]string{"192.0.2.100/25", "2001:db8::100/64"}, []string{"192.0.2.101/24"}), ""},
		{"moved", svcs([]string{"2001:db8::100/64"}, []string{"192.0.2.101/24", "192.0.2.100/24"}),
			"floating IP 192.0.2.100 moves from service voice to data in one reload: remove it from voice and reload on every host, then add it to data and reload again"},
		{"moved, IPv6 written otherwise", svcs([]string{"192.0.2.100/24"}, []string{"192.0.2.101/24", "2001:0db8::0100/64"}),
			"floating IP 2001:db8::100 moves from service voice to data"},
		{"a service more (deferred to a restart)", &config.Config{Services: append(svcs(nil, []string{"192.0.2.100/24"}).Services, config.Service{Name: "x"})}, ""},
	} {
		err := movedAddress(old, tc.next)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
