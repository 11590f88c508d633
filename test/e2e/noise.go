package e2e

import (
	"fmt"
	"runtime"
	"strconv"
	"time"
)

// NoiseMemoryMax is the memory limit of the noisy neighbour's group. The
// neighbour's anonymous memory (NoiseVMBytes) and its disk writer's page
// cache together exceed it, so the group reclaims all the time without
// the OOM killer: "a memory hog that drives the host into reclaim", kept
// inside one group so it does not squeeze a shared 24 GiB test machine.
const (
	NoiseMemoryMax = 512 << 20
	noiseVMBytes   = "384M"
)

// NoiseArgs is the noisy neighbour of the noisy scenario: 4 CPU hogs per
// core at nice -10, a memory hog, and a disk writer that fsyncs
// continuously (in tmpDir), for timeout (stress-ng's syntax, e.g. "60s").
func NoiseArgs(tmpDir, timeout string) []string {
	return []string{"nice", "-n", "-10", "stress-ng",
		"--cpu", strconv.Itoa(4 * runtime.NumCPU()),
		"--vm", "1", "--vm-bytes", noiseVMBytes, "--vm-keep",
		"--hdd", "1", "--hdd-opts", "fsync", "--hdd-bytes", "64M",
		"--temp-path", tmpDir,
		"--timeout", timeout, "--quiet"}
}

// Seconds is d in whole seconds, rounded up, as stress-ng's timeout.
func Seconds(d time.Duration) string {
	return fmt.Sprintf("%ds", int((d+time.Second-1)/time.Second))
}
