// Package procsig is what every Vigil process does with the signals an
// operator may send to anything named vigil: the supervisor, the control
// plane and the exec shim catch the stray ones rather than die or stop.
package procsig

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// StraySignals are the signals an operator may send to every process named
// vigil (`kill -HUP $(pidof vigil)`, `pkill -USR1 vigil`, a script, a Ctrl-Z)
// that must never stop the supervisor or a control-plane process: on the
// active node, a node manager that dies drops the role. Left to Go's
// defaults, SIGHUP exits, SIGQUIT exits with a stack dump and SIGTSTP, SIGTTIN
// and SIGTTOU stop the process (a stall: the standby takes over); SIGUSR1,
// SIGUSR2, SIGALRM and a SIGPIPE sent with kill are already dropped, but only
// until someone changes the defaults, so they are named here too.
//
// SIGTERM and SIGINT are not stray: they are how systemd and the supervisor
// stop a process. SIGKILL and SIGSTOP cannot be caught. SIGABRT is left to
// the default (stack dump and exit): it is systemd's WatchdogSignal=.
func StraySignals() []os.Signal {
	return []os.Signal{
		syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM,
		syscall.SIGPIPE, syscall.SIGQUIT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU,
	}
}

// StrayCatcher keeps the stray signals from stopping this process: from
// CatchStraySignals on they are caught, and Serve logs and drops them.
type StrayCatcher struct{ ch chan os.Signal }

// CatchStraySignals starts catching the stray signals (except those in
// handled, which the caller takes care of) at once, before the caller has a
// logger; what arrives meanwhile waits for Serve.
//
// The signals are caught, not ignored (SIG_IGN): an ignored disposition
// survives execve and would be inherited by every hook and health check the
// process runs, whereas a caught one is reset to the default at exec.
func CatchStraySignals(handled ...os.Signal) *StrayCatcher {
	var sigs []os.Signal
	for _, s := range StraySignals() {
		if !slices.Contains(handled, s) {
			sigs = append(sigs, s)
		}
	}
	c := &StrayCatcher{ch: make(chan os.Signal, 8)}
	signal.Notify(c.ch, sigs...)
	return c
}

// Serve logs and drops each caught signal until ctx ends, then stops
// catching. SIGQUIT writes every goroutine's stack to dump and the process
// goes on (the dump Go would have printed, without the exit). SIGPIPE is
// dropped silently: with a broken log stream every write raises one, and
// logging it would raise another.
func (c *StrayCatcher) Serve(ctx context.Context, log *slog.Logger, dump io.Writer) {
	go func() {
		defer signal.Stop(c.ch)
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-c.ch:
				switch sig {
				case syscall.SIGPIPE:
				case syscall.SIGQUIT:
					log.Warn("SIGQUIT: writing every goroutine's stack to stderr and going on", "event", "signal_dump", "signal", "SIGQUIT")
					_ = pprof.Lookup("goroutine").WriteTo(dump, 2)
				default:
					log.Info("signal ignored: reload with `systemctl reload vigil` or `vigil reload`", "event", "signal_ignored", "signal", Name(sig.(syscall.Signal)))
				}
			}
		}
	}()
}

// Name is a signal's name ("SIGTERM"), or "signal N" for one without.
func Name(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}
