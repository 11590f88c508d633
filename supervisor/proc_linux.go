package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/cgroup"
	"github.com/vigil-project/vigil/internal/execshim"
	"github.com/vigil-project/vigil/internal/ipc"
)

func unixPrctlSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// spawn starts p through the shim, placed in p's cgroup before the
// application runs: at clone time with CLONE_INTO_CGROUP on cgroup v2, else by
// writing cgroup.procs while the shim waits on its barrier.
func (s *Supervisor) spawn(p *proc) (int, <-chan Exit, error) {
	spec, err := buildSpec(&p.cfg, p.creds)
	if err != nil {
		return 0, nil, err
	}
	if p.control == "" {
		zero := 0
		spec.OOMScoreAdj = &zero
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, nil, fmt.Errorf("supervisor: output pipe: %w", err)
	}
	defer outW.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		outR.Close()
		return 0, nil, fmt.Errorf("supervisor: open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()

	var extra *os.File
	if p.control != "" {
		conn, child, err := ipc.Pair()
		if err != nil {
			outR.Close()
			return 0, nil, err
		}
		defer child.Close()
		p.setConn(conn)
		extra = child
	}
	out := outW
	if p.control != "" {
		// The control plane logs structured lines of its own: they go to
		// the supervisor's stderr (the journal) as they are, not wrapped.
		out = os.Stderr
	}
	pid, done, err := s.spawnInto(p, spec, devnull, out, extra)
	if err != nil {
		outR.Close()
		p.setConn(nil)
		return 0, nil, err
	}
	if p.control != "" {
		outR.Close()
		return pid, done, nil
	}
	go pumpOutput(p.log, outR)
	return pid, done, nil
}

// files lays out the child's fds: 0-2 stdio, 3 the barrier (closed when
// unused), ipc.ChildFD the control-plane channel.
func files(stdin, out, barrier, extra *os.File) []uintptr {
	none := ^uintptr(0) // -1: the fd is closed in the child
	fds := []uintptr{stdin.Fd(), out.Fd(), out.Fd(), none}
	if barrier != nil {
		fds[execshim.BarrierFD] = barrier.Fd()
	}
	if extra != nil {
		for len(fds) < ipc.ChildFD {
			fds = append(fds, none)
		}
		fds = append(fds, extra.Fd())
	}
	return fds
}

func (s *Supervisor) spawnInto(p *proc, spec *execshim.Spec, stdin, out, extra *os.File) (int, <-chan Exit, error) {
	sys := &syscall.SysProcAttr{Setsid: true}
	if fd, err := p.group.OpenFD(); err == nil {
		defer fd.Close()
		spec.Barrier = false
		sys.UseCgroupFD, sys.CgroupFD = true, int(fd.Fd())
		pid, done, err := s.forkShim(p, spec, sys, files(stdin, out, nil, extra))
		if err == nil {
			return pid, done, nil
		}
		// Old kernels and some delegation setups refuse clone3 into a
		// cgroup; the barrier below works everywhere.
		if !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EINVAL) {
			return 0, nil, err
		}
		p.log.Debug("CLONE_INTO_CGROUP refused; placing before exec", "err", err)
		sys = &syscall.SysProcAttr{Setsid: true}
	} else if !errors.Is(err, cgroup.ErrNotSupported) {
		return 0, nil, fmt.Errorf("supervisor: cgroup fd of %s: %w", p.group.Path(), err)
	}

	barR, barW, err := os.Pipe()
	if err != nil {
		return 0, nil, fmt.Errorf("supervisor: barrier pipe: %w", err)
	}
	defer barW.Close()
	spec.Barrier = true
	pid, done, err := s.forkShim(p, spec, sys, files(stdin, out, barR, extra))
	barR.Close()
	if err != nil {
		return 0, nil, err
	}
	if err := p.group.AddProc(pid); err != nil {
		// Closing the barrier unwritten makes the shim exit without exec.
		return 0, nil, fmt.Errorf("supervisor: place pid %d in %s: %w", pid, p.group.Path(), err)
	}
	if _, err := barW.Write([]byte{1}); err != nil {
		return 0, nil, fmt.Errorf("supervisor: release pid %d: %w", pid, err)
	}
	return pid, done, nil
}

func (s *Supervisor) forkShim(p *proc, spec *execshim.Spec, sys *syscall.SysProcAttr, files []uintptr) (int, <-chan Exit, error) {
	js, err := jsonMarshal(spec)
	if err != nil {
		return 0, nil, err
	}
	dir := p.cfg.Dir
	if dir == "" {
		dir = "/"
	}
	return s.reaper.Spawn(s.opts.Exe, []string{"vigil", execshim.ShimCommand, p.cfg.Name}, &syscall.ProcAttr{
		Dir:   dir,
		Env:   processEnv(&p.cfg, js),
		Files: files,
		Sys:   sys,
	})
}

// pumpOutput logs every line a process writes, tagged with its name. It ends
// when every writer (the process and anything it forked) has closed the pipe.
func pumpOutput(log *slog.Logger, r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096) // a longer line is logged in pieces; 50 processes must not cost MiBs of buffers
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := strings.TrimRight(string(bytes.ToValidUTF8(line, []byte("\uFFFD"))), "\r\n")
			if text != "" {
				log.Info(text, "event", "output")
			}
		}
		if err == bufio.ErrBufferFull {
			continue // an over-long line is logged in pieces
		}
		if err != nil {
			return
		}
	}
}

// selfRSS is the supervisor's resident set size from /proc/self/statm.
func selfRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// signalNumber maps a canonical name such as "SIGTERM" (config validates it)
// to its number; unknown names fall back to SIGTERM.
func signalNumber(name string) syscall.Signal {
	if s := unix.SignalNum(name); s != 0 {
		return s
	}
	return syscall.SIGTERM
}
