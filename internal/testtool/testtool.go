// Package testtool holds what tests of several packages need from the
// host: the external programs they drive (sipp, promtool, bash, rpm, ...)
// and a real full filesystem. Tests only: it imports testing.
package testtool

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
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

// FullDisk mounts a 64 KiB tmpfs (a real filesystem that runs out of space)
// and returns its path with a function that fills it up (until ENOSPC) and
// one that frees it again. It needs root; without it the test is skipped,
// and under CI it fails instead.
func FullDisk(t testing.TB) (dir string, fill, free func()) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to mount a small tmpfs as state_dir")
	}
	dir = filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		skip("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	filler := filepath.Join(dir, "filler")
	fill = func() {
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the tmpfs: %v", err)
				}
				return
			}
		}
	}
	free = func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	return dir, fill, free
}

// SyncBuffer is a log sink that a daemon or a goroutine writes while the
// test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
