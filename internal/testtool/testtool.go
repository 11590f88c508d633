// Package testtool finds the external programs that tests drive (sipp,
// promtool, bash, rpm, ...). Tests only: it imports testing.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// Need returns the path of tool, found in PATH. When it is missing the test
// is skipped, or fails under CI (CI=true), where scripts/install-deps.sh
// installs it: a CI run must not pass by skipping what it was meant to check.
func Need(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (Debian package %s; scripts/install-deps.sh installs it)", tool, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", tool, pkg)
	}
	return p
}
