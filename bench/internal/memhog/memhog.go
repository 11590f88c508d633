// Package memhog is the memory neighbour of the benchmarks (bench/isolation's
// memory variant, bench/controlplane -memory): dirty anonymous memory plus a
// file re-read through the page cache, together more than the host has
// available, so that the whole host goes into reclaim and clean pages of
// every process (a control plane's text included) are candidates for
// eviction.
package memhog

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const gib = int64(1) << 30

// Plan sizes the hog.
type Plan struct {
	Anon, File, Max int64 // bytes: dirty anonymous memory, page-cache file, the hog's memory.max
}

// Size plans from the host's memory now: anonymous memory up to
// MemAvailable - 5 GiB, kept dirty, plus a 6 GiB file re-read through the
// page cache: together ~1 GiB more than the host has available. The anon
// part leaves >= 5 GiB for everybody else and page cache is always
// reclaimable; memory.max is MemTotal - 2 GiB so the cap is not what
// reclaims, but the hog can never hold the last 2 GiB. short is a small hog
// under its own memory.max (proves the plumbing only).
func Size(short bool) (Plan, error) {
	if short {
		return Plan{Anon: 256 << 20, File: 512 << 20, Max: 512 << 20}, nil
	}
	total, avail, err := meminfo()
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Anon: avail - 5*gib, File: 6 * gib, Max: total - 2*gib}
	if p.Anon < gib {
		return p, fmt.Errorf("only %d MiB available: too little for the memory hog", avail>>20)
	}
	return p, nil
}

func meminfo() (total, avail int64, err error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	if total == 0 || avail == 0 {
		return 0, 0, errors.New("/proc/meminfo: no MemTotal/MemAvailable")
	}
	return total, avail, nil
}

// fileName is the page-cache file in the scratch directory.
const fileName = "pagecache"

// Prepare writes the page-cache file once into dir (on disk, not tmpfs:
// real blocks, so re-reads go to the disk once they are evicted) and says
// what it did in one line to print.
func (p Plan) Prepare(dir string) (string, error) {
	f := filepath.Join(dir, fileName)
	if st, err := os.Stat(f); err == nil && st.Size() == p.File {
		return "", nil
	}
	t := time.Now()
	cmd := exec.Command("dd", "if=/dev/zero", "of="+f, "bs=1M", "count="+strconv.FormatInt(p.File>>20, 10), "conv=fsync", "status=none")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("write %s: %v: %s", f, err, out)
	}
	// Drop our own cached copy so the hog starts from the disk.
	_ = exec.Command("dd", "if="+f, "iflag=nocache", "count=0", "status=none").Run()
	return fmt.Sprintf("memory hog: anon_mib=%d pagecache_file_mib=%d memory_max_mib=%d (file written in %.1fs)",
		p.Anon>>20, p.File>>20, p.Max>>20, time.Since(t).Seconds()), nil
}

// Argv is the hog's command line (run it in a group with memory.max
// p.Max): two stress-ng vm workers and a re-reader of the file, each with
// its own time limit as a backstop, so nothing outlives a benchmark that
// was killed with SIGKILL.
func (p Plan) Argv(dir string, limit time.Duration) []string {
	secs := strconv.Itoa(int(limit.Seconds()))
	return []string{"sh", "-c",
		fmt.Sprintf(`stress-ng --vm 2 --vm-bytes %d --vm-keep --timeout %s -q &
timeout %s sh -c 'while :; do cat %s > /dev/null; done' ; wait`,
			p.Anon/2, secs, secs, filepath.Join(dir, fileName))}
}
