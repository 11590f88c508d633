package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	sdjournal "github.com/coreos/go-systemd/v22/journal"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/journal"
	"github.com/vigil-project/vigil/metrics"
	"github.com/vigil-project/vigil/supervisor"
)

const defaultConfig = "/etc/vigil/vigil.yaml"

func runSupervise(args []string, stdout, stderr io.Writer) int {
	crashOnPanic()
	fs := newFlags("supervise", stderr)
	path := fs.String("c", defaultConfig, "configuration `FILE`")
	fs.StringVar(path, "config", defaultConfig, "configuration `FILE`")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil supervise: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		// Exit 2: the unit's RestartPreventExitStatus=2 does not retry
		// a file that will not load.
		printConfigErrors(stderr, err)
		return exitUsage
	}
	// The locator and node manager run in / and are given this path: a
	// relative one (`vigil supervise -c vigil.yaml`) would not load there,
	// and they would restart forever.
	abs, err := filepath.Abs(*path)
	if err != nil {
		fmt.Fprintf(stderr, "vigil supervise: %s: %v\n", *path, err)
		return exitFailure
	}
	*path = abs
	// The supervisor is an event loop, not a compute job: one P keeps its
	// goroutines' hand-offs on one cpu instead of waking another (an IPI,
	// costly on VMs). Measured with 50 idle processes: 0.87 % -> 0.25 % of a
	// core, restart latency unchanged. Set in-process, so no child inherits it.
	runtime.GOMAXPROCS(1)
	log := newLogger(stderr, cfg.Log)
	s := supervisor.New(cfg, supervisor.Options{ConfigPath: *path, Version: buildVersion(), Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Metrics.Listen != "" {
		// The endpoint scrapes the supervisor's own status; a listener
		// that cannot bind is logged, not fatal: metrics are not worth
		// an outage.
		c := metrics.NewCollector(s.Snapshot, metrics.WithVersion(buildVersion()))
		go func() {
			if err := metrics.Serve(ctx, cfg.Metrics.Listen, c, log); err != nil {
				log.Error("metrics endpoint failed", "event", "metrics_error", "err", err)
			}
		}()
	}
	if err := s.Run(ctx); err != nil {
		log.Error("supervisor failed", "event", "fatal_error", "err", err)
		return exitFailure
	}
	return exitOK
}

// crashOnPanic makes a panic or fatal runtime error abort the supervisor
// with SIGABRT instead of the Go runtime's exit status 2, which the unit
// reserves for a configuration error (RestartPreventExitStatus=2): a crash
// must be restarted, a bad file must not be retried. Set in-process, so
// supervised processes (and GOTRACEBACK in their environment) are untouched.
func crashOnPanic() {
	debug.SetTraceback("crash")
}

func printConfigErrors(w io.Writer, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintln(w, err)
}

// newLogger writes one event per line to stderr, or, under systemd, to the
// journal natively with every attribute as a field (internal/journal), so
// `journalctl -u vigil PROCESS=kamailio EVENT=exit` filters. The journal is
// used only when stderr is the journal stream systemd gave us (JOURNAL_STREAM
// names its device and inode) and the native socket answers; otherwise, as
// with StandardError= redirected, the text or json lines of log.format.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	if os.Getenv("JOURNAL_STREAM") != "" {
		if ok, _ := sdjournal.StderrIsJournalStream(); ok && journal.Available() {
			return slog.New(journal.New(journal.Options{Level: lvl}))
		}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if os.Getenv("JOURNAL_STREAM") != "" {
		// journald stamps every line itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
