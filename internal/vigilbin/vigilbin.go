// Package vigilbin builds the vigil binary from this tree for the
// integration tests, the end-to-end harness and the benchmarks, which run
// it as real processes, or names a prebuilt one (VIGIL_BIN: the cgroup v2
// VM has no Go toolchain).
package vigilbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Env names a prebuilt binary to use instead of building one.
const Env = "VIGIL_BIN"

// Build builds ./cmd/vigil into a new temporary directory and returns its
// path and a function that removes it; with VIGIL_BIN set it returns that
// and does nothing.
func Build() (bin string, cleanup func(), err error) {
	if bin = os.Getenv(Env); bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "vigil-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("vigilbin: %w", err)
	}
	bin = filepath.Join(dir, "vigil")
	build := exec.Command("go", "build", "-o", bin, "github.com/vigil-project/vigil/cmd/vigil")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("vigilbin: build vigil: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Main is a TestMain body: it sets *bin, runs the tests and exits.
func Main(m *testing.M, bin *string) {
	b, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = b
	code := m.Run()
	cleanup()
	os.Exit(code)
}
