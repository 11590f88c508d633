package supervisor

import (
	"fmt"
	"os"

	"github.com/vigil-project/vigil/cgroup"
)

// appsCPUs is every online cpu except those reserved for the control plane,
// so applications never run on them. If the reservation would leave the
// applications no cpu at all, they share (and that is logged).
func appsCPUs(reserved string) (string, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return "", fmt.Errorf("online cpus: %w", err)
	}
	online, err := cgroup.ParseCPUs(string(b))
	if err != nil {
		return "", err
	}
	res, err := cgroup.ParseCPUs(reserved)
	if err != nil {
		return "", err
	}
	for c := range res {
		delete(online, c)
	}
	if len(online) == 0 {
		return "", fmt.Errorf("control.cpus %q leaves no cpu for the applications", reserved)
	}
	return cgroup.FormatCPUs(online), nil
}
