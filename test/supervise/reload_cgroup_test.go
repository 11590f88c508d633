package supervise

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
)

// A reload that removes control.cpus, apps.memory_max and a process's
// pids_max puts the kernel's values back: the control plane may use every
// cpu again, the applications too, and the limits are gone. (A zero in
// the new configuration used to mean "leave the running value", so the
// old reservation and limits stayed until vigil restarted.)
func TestReloadDroppedCgroupSettingsReset(t *testing.T) {
	needRoot(t)
	own := cgroupOf(t, os.Getpid())
	v2 := isV2()
	// file is the path of an interface file of a group in the tree.
	file := func(d *daemon, ctrl, group, name string) string {
		if v2 {
			return filepath.Join("/sys/fs/cgroup", own["unified"], d.subtree, group, name)
		}
		return filepath.Join("/sys/fs/cgroup", ctrl, own[ctrl], d.subtree, group, name)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return strings.TrimSpace(string(b))
	}
	cpusFile, memFile, unlimited := "cpuset.cpus", "memory.limit_in_bytes", ""
	if v2 {
		cpusFile, memFile, unlimited = "cpuset.cpus.effective", "memory.max", "max"
	}
	procs := `
  - name: sleeper
    command: [/bin/sleep, "1000"]
`
	d := newDaemon(t, procs+"    pids_max: 77\n")
	d.control = "  cpus: \"0\"\n"
	d.extra = "\napps:\n  memory_max: 96Mi\n"
	d.writeConfig(procs + "    pids_max: 77\n")
	// The cpus of the cgroup the test runs in, where the tree is made:
	// what the groups must have again after the reset.
	ownDir := filepath.Join("/sys/fs/cgroup", "cpuset", own["cpuset"])
	if v2 {
		ownDir = filepath.Join("/sys/fs/cgroup", own["unified"])
	}
	if _, err := os.Stat(filepath.Join(ownDir, cpusFile)); err != nil {
		t.Skipf("no cpuset controller here: %v", err)
	}
	all := read(filepath.Join(ownDir, cpusFile))
	if all == "0" {
		t.Skip("the test's cpuset has only cpu 0: nothing to reserve")
	}
	d.start()
	d.waitState("sleeper", supervisor.StateRunning, 10*time.Second)
	if _, err := os.Stat(file(d, "cpuset", "control", cpusFile)); err != nil {
		t.Skipf("no cpuset controller for the tree: %v", err)
	}
	if c := read(file(d, "cpuset", "control", cpusFile)); c != "0" {
		t.Fatalf("control/ has cpus %q with control.cpus \"0\"", c)
	}
	if c := read(file(d, "cpuset", "apps", cpusFile)); c == all || strings.Contains(c, "0") {
		t.Fatalf("apps/ has cpus %q with cpu 0 reserved", c)
	}
	if m := read(file(d, "memory", "apps", memFile)); m != "100663296" {
		t.Fatalf("apps/ memory limit %q, want 96 MiB", m)
	}
	if p := read(file(d, "pids", "apps/sleeper", "pids.max")); p != "77" {
		t.Fatalf("apps/sleeper pids.max %q, want 77", p)
	}
	if unlimited == "" {
		// v1's "no limit" is a page-rounded maximum: the value of the
		// tree's root, which Vigil never limits.
		unlimited = read(filepath.Join(filepath.Dir(filepath.Dir(file(d, "memory", "apps", memFile))), memFile))
	}

	d.control, d.extra = "", ""
	d.writeConfig(procs)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitFor("the reservation and the limits gone", 15*time.Second, func() bool {
		p := d.proc("sleeper")
		return p.State == supervisor.StateRunning &&
			read(file(d, "cpuset", "control", cpusFile)) == all && read(file(d, "cpuset", "apps", cpusFile)) == all &&
			read(file(d, "memory", "apps", memFile)) == unlimited && read(file(d, "pids", "apps/sleeper", "pids.max")) == "max"
	})
	for _, g := range []string{"control/supervisor", "apps/sleeper"} {
		if c := read(file(d, "cpuset", g, cpusFile)); c != all {
			t.Errorf("%s has cpus %q after the reload, want %q", g, c, all)
		}
	}
	if !strings.Contains(d.log.String(), `"event":"cgroup_reset"`) {
		t.Error("no cgroup_reset event logged")
	}
	d.stop(15 * time.Second)
}
