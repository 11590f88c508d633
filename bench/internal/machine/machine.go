// Package machine prints the header every Vigil benchmark starts with: what
// the numbers were measured on.
package machine

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupMode names the host's cgroup setup.
func CgroupMode() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "v2"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
		return "v1-hybrid"
	}
	return "v1"
}

// Describe writes one key=value line about the machine.
func Describe(w io.Writer) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	kernel := strings.TrimRight(string(u.Release[:]), "\x00")
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	fmt.Fprintf(w, "machine cores=%d kernel=%s cgroup=%s go=%s cpu=%q\n", runtime.NumCPU(), kernel, CgroupMode(), runtime.Version(), model)
}
