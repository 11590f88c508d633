// Package v2 runs Vigil's cgroup v2 tests in a qemu VM: run.sh boots
// Debian's cloud kernel with a busybox initramfs holding static test
// binaries of ./cgroup, ./test/supervise and this package (guest_test.go),
// with cgroup2 mounted at /sys/fs/cgroup. `make test-v2` runs the same.
package v2

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestCgroupV2VM boots the VM and fails unless every package passed in it.
// It runs only with VIGIL_VM_TESTS=1 (make test-v2 sets it). It needs root
// (apt-get download of the kernel, cached afterwards) and qemu; in CI
// (CI=true) a missing qemu is a failure, elsewhere a skip.
func TestCgroupV2VM(t *testing.T) {
	if os.Getenv("VIGIL_VM_GUEST") == "1" {
		t.Skip("inside the VM already")
	}
	if testing.Short() {
		t.Skip("boots a qemu VM (about a minute); not in -short")
	}
	// make test-v2 (and so CI, as a step of its own after make test) runs
	// the VM; a plain go test ./... does not boot one behind your back.
	if os.Getenv("VIGIL_VM_TESTS") != "1" {
		t.Skip("set VIGIL_VM_TESTS=1 or run make test-v2 to boot the cgroup v2 VM")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the VM runs Debian's amd64 cloud kernel")
	}
	ci := os.Getenv("CI") == "true"
	var missing []string
	for _, tool := range []string{"qemu-system-x86_64", "cpio", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if ci {
			t.Fatalf("CI=true but %v not installed (scripts/install-deps.sh: qemu-system-x86, busybox-static, cpio)", missing)
		}
		t.Skipf("%v not installed (Debian: qemu-system-x86, busybox-static, cpio)", missing)
	}
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("CI=true but not root: the kernel download and the VM tests need root")
		}
		t.Skip("needs root: downloads the kernel with apt-get")
	}
	script, err := filepath.Abs("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 16*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, script)
	cmd.Stdout, cmd.Stderr = &out, &out
	// The work dir is kept (and its path printed) when a run fails.
	cmd.Env = append(os.Environ(), "VIGIL_VM_DIR=")
	began := time.Now()
	err = cmd.Run()
	t.Logf("run.sh took %v:\n%s", time.Since(began).Round(100*time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("cgroup v2 VM run failed: %v", err)
	}
}
