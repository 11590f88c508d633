// Package systemdvm runs scripts/vm-systemd-test.sh (make test-vm) from go
// test when VIGIL_VM_TESTS=1: the .deb under a real systemd in a qemu VM.
// It is not part of `go test ./...` (CI runs it as make test-vm): a run takes
// about 5 minutes with a warm cache on a 2-core host (plus 1-4 for the first
// debootstrap), see README.md.
package systemdvm

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestPackageUnderSystemd(t *testing.T) {
	if os.Getenv("VIGIL_VM_TESTS") != "1" {
		t.Skip("set VIGIL_VM_TESTS=1 to boot the qemu VM (make test-vm), about 5 minutes")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: debootstrap and a root-owned image")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../../scripts/vm-systemd-test.sh")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("vm-systemd-test.sh: %v", err)
	}
}
