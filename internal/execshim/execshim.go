// Package execshim is `vigil _exec`, the first moments of every process
// Vigil starts (applications, and the node manager's hooks): the shim waits
// until it is placed in its cgroup, drops what it must not pass on
// (realtime scheduling, the OOM exemption), applies rlimits and credentials,
// and execs the command. The supervisor builds its Spec; the node
// manager builds one per hook (HookSpec).
package execshim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/procsig"
	"github.com/vigil-project/vigil/realtime"
)

// ShimCommand is the hidden subcommand through which every supervised process
// is started: `vigil _exec`. The shim waits on a barrier until the supervisor
// has placed it in its cgroup (cgroup v1 cannot place at spawn), applies
// rlimits and credentials, and execs the real command. Between fork and the
// barrier it runs only vigil's own code; the application never runs outside
// its cgroup.
const ShimCommand = "_exec"

// SpecEnv carries the Spec to the shim; the shim removes it from the
// environment before exec.
const SpecEnv = "VIGIL_EXEC_SPEC"

// BarrierFD is the shim's fd that the supervisor writes one byte to (placed)
// or closes without writing (abort).
const BarrierFD = 3

// Spec is what the shim needs to become the application.
type Spec struct {
	Path    string            `json:"path"`
	Argv    []string          `json:"argv"`
	UID     *uint32           `json:"uid,omitempty"`
	GID     *uint32           `json:"gid,omitempty"`
	Groups  []uint32          `json:"groups,omitempty"`
	Rlimits map[string]uint64 `json:"rlimits,omitempty"`
	Barrier bool              `json:"barrier"`
	// OOMScoreAdj, when set, is written before exec: applications must not
	// inherit the supervisor's -1000 and become the one thing the OOM
	// killer can never pick.
	OOMScoreAdj *int `json:"oom_score_adj,omitempty"`
	// StopSignal is the process's stop signal: the one stray signal that
	// must still end the shim before it execs (see catchSignals).
	StopSignal int `json:"stop_signal,omitempty"`
	// SchedOther resets the scheduling policy to SCHED_OTHER, nice 0,
	// before exec: a hook started by the realtime node manager must not
	// inherit its SCHED_RR and starve the control plane.
	SchedOther bool `json:"sched_other,omitempty"`
	// Cgroup are the directories (one per hierarchy) whose cgroup.procs
	// the shim writes its own pid into before exec: a hook joins the hooks
	// group (HooksCgroupEnv) itself, after SchedOther (a SCHED_RR task
	// cannot enter a v1 group without realtime budget). If it cannot, the
	// hook does not run: it would run inside the control plane's group.
	Cgroup []string `json:"cgroup,omitempty"`
}

// HooksCgroupEnv names the environment variable through which the
// supervisor tells the node manager where its hooks run: a JSON array of
// the hooks group's directories, one per hierarchy. Only the node manager
// gets it; applications never do (processEnv drops it) and hooks never do
// (the node manager builds their environment from nothing). Absent: the
// group could not be created, and hooks run in the node manager's group.
const HooksCgroupEnv = "VIGIL_HOOKS_CGROUP"

// HooksCgroupEnvFor is the variable that names the hooks group of the
// service in slot: HooksCgroupEnv for the first, HooksCgroupEnv_<slot> for
// the others (one node manager process runs them all).
func HooksCgroupEnvFor(slot int) string {
	if slot == 0 {
		return HooksCgroupEnv
	}
	return HooksCgroupEnv + "_" + strconv.Itoa(slot)
}

// HooksCgroupFromEnv reads the hooks group of the service in slot
// (HooksCgroupEnvFor): nil when it is not set.
func HooksCgroupFromEnv(slot int) ([]string, error) {
	name := HooksCgroupEnvFor(slot)
	raw, ok := os.LookupEnv(name)
	if !ok || raw == "" {
		return nil, nil
	}
	var dirs []string
	if err := json.Unmarshal([]byte(raw), &dirs); err != nil {
		return nil, fmt.Errorf("execshim: %s=%q: %w", name, raw, err)
	}
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("execshim: %s=%q: %q is not an absolute directory", name, raw, d)
		}
	}
	return dirs, nil
}

// HooksCgroupEntry is the HooksCgroupEnv entry for the group at dirs.
func HooksCgroupEntry(slot int, dirs []string) (string, error) {
	b, err := json.Marshal(dirs)
	if err != nil {
		return "", fmt.Errorf("execshim: encode %s: %w", HooksCgroupEnvFor(slot), err)
	}
	return HooksCgroupEnvFor(slot) + "=" + string(b), nil
}

// HookSpec is the Spec of a transition hook, started by the node
// manager through the shim: normal scheduling and oom_score_adj 0 like an
// application, whatever the node manager runs with.
func HookSpec(argv []string) (*Spec, error) {
	if len(argv) == 0 {
		return nil, errors.New("execshim: empty hook command")
	}
	path, err := LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	zero := 0
	return &Spec{Path: path, Argv: argv, OOMScoreAdj: &zero, SchedOther: true}, nil
}

// EnvEntry is the environment entry that carries s to the shim (which
// removes it before exec).
func (s *Spec) EnvEntry() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("execshim: encode exec spec: %w", err)
	}
	return SpecEnv + "=" + string(b), nil
}

var rlimitResources = map[string]int{
	"nofile":  unix.RLIMIT_NOFILE,
	"nproc":   unix.RLIMIT_NPROC,
	"core":    unix.RLIMIT_CORE,
	"memlock": unix.RLIMIT_MEMLOCK,
	"stack":   unix.RLIMIT_STACK,
}

// LookPath resolves a command the way exec would, with a clear error.
func LookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("execshim: command %q: %w", name, err)
	}
	if !filepath.IsAbs(p) {
		if p, err = filepath.Abs(p); err != nil {
			return "", fmt.Errorf("execshim: command %q: %w", name, err)
		}
	}
	return p, nil
}

// joinCgroup moves the calling process (every thread) into the group at
// dirs, one directory per hierarchy.
func joinCgroup(dirs []string) error {
	pid := strconv.Itoa(os.Getpid())
	for _, d := range dirs {
		p := filepath.Join(d, "cgroup.procs")
		if err := os.WriteFile(p, []byte(pid), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w (not run rather than run in its parent's cgroup)", d, err)
		}
	}
	return nil
}

// Run is the body of `vigil _exec`. It only returns on failure; the
// caller exits with 127 like a shell does for a command that cannot run.
func Run() error {
	raw := os.Getenv(SpecEnv)
	if raw == "" {
		return errors.New("vigil _exec is internal: it is started by vigil supervise")
	}
	var s Spec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return fmt.Errorf("decode exec spec: %w", err)
	}
	// `kill -HUP $(pidof vigil)` reaches a shim too: it must not cost the
	// application its start.
	catchSignals(syscall.Signal(s.StopSignal))
	if s.SchedOther {
		// Policy and nice are per thread on Linux: reset this one and exec
		// from it, so that the command starts with them.
		runtime.LockOSThread()
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}, 0); err != nil {
			return fmt.Errorf("reset scheduling to SCHED_OTHER: %w", err)
		}
		// The runtime's other threads were cloned SCHED_RR before main
		// ran; exec ends them, but joining a group checks every thread
		// (v1 refuses an RT thread into a group without rt budget).
		if err := realtime.ResetSelf(); err != nil {
			return fmt.Errorf("reset scheduling to SCHED_OTHER: %w", err)
		}
	}
	if err := joinCgroup(s.Cgroup); err != nil {
		return err
	}
	if s.Barrier {
		b := os.NewFile(BarrierFD, "barrier")
		var one [1]byte
		n, err := b.Read(one[:])
		b.Close()
		if n != 1 {
			return fmt.Errorf("placement aborted by the supervisor (%v)", err)
		}
	}
	if s.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*s.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj %d: %w", *s.OOMScoreAdj, err)
		}
	}
	for name, v := range s.Rlimits {
		res, ok := rlimitResources[name]
		if !ok {
			return fmt.Errorf("unknown rlimit %q", name)
		}
		lim := unix.Rlimit{Cur: v, Max: v}
		if v == ^uint64(0) {
			lim = unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
		}
		if err := unix.Setrlimit(res, &lim); err != nil {
			return fmt.Errorf("setrlimit %s=%d: %w", name, v, err)
		}
	}
	if s.GID != nil {
		groups := make([]int, len(s.Groups))
		for i, g := range s.Groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(int(*s.GID)); err != nil {
			return fmt.Errorf("setgid %d: %w", *s.GID, err)
		}
	}
	if s.UID != nil {
		if err := syscall.Setuid(int(*s.UID)); err != nil {
			return fmt.Errorf("setuid %d: %w", *s.UID, err)
		}
	}
	env := os.Environ()
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, SpecEnv+"=") {
			out = append(out, kv)
		}
	}
	if err := syscall.Exec(s.Path, s.Argv, out); err != nil {
		return fmt.Errorf("exec %s: %w", s.Path, err)
	}
	return nil
}

// catchSignals is procsig.CatchStraySignals for the shim, which
// has no log and whose stderr is the application's: between its start and
// its exec it drops the stray signals, except the process's own stop signal,
// which kills it as it would have killed the application (the supervisor may
// be stopping the group). The kernel resets the caught signals to their
// defaults at exec, so the application starts with the usual dispositions.
func catchSignals(stop syscall.Signal) {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, procsig.StraySignals()...)
	go func() {
		for sig := range ch {
			if sig == stop {
				signal.Reset(sig)
				_ = syscall.Kill(os.Getpid(), stop)
			}
		}
	}()
}
