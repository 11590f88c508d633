package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"runtime"
	"slices"
	"syscall"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/procsig"
	"github.com/vigil-project/vigil/locator"
	"github.com/vigil-project/vigil/nodemanager"
)

// runLocator is `vigil locator`, started by the supervisor in control/locator:
// one process serves every service of the host.
func runLocator(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("locator", false, args, stderr, locator.Run)
}

// runNodeManager is `vigil nodemanager`, started by the supervisor in
// control/nodemanager (control/nodemanager-SERVICE): one for each service.
func runNodeManager(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("nodemanager", true, args, stderr, nodemanager.Run)
}

// runControlPlane runs a control-plane process. perService: it runs for one
// service (--service, or the first) and gets that service's configuration
// (config.Config.ForService); otherwise the whole file's.
func runControlPlane(name string, perService bool, args []string, stderr io.Writer, run func(context.Context, *config.Config, *slog.Logger) error) int {
	// First thing: a `kill -HUP $(pidof vigil)` (or USR1, QUIT, a Ctrl-Z...)
	// must never stop a control-plane process, which on the active would
	// drop the role. Reload is the supervisor's job.
	stray := procsig.CatchStraySignals()
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration `FILE`")
	fs.StringVar(path, "config", defaultConfig, "configuration `FILE`")
	var service *string
	if perService {
		service = fs.String("service", "", "the `SERVICE` to run for (default: the first of the file)")
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, err)
		return exitUsage
	}
	// Each service has a node manager of its own (config.Config.ForService).
	slot := 0
	if perService && *service != "" {
		slot = slices.IndexFunc(cfg.Services, func(s config.Service) bool { return s.Name == *service })
		if slot < 0 {
			fmt.Fprintf(stderr, "vigil %s: no service %q in %s\n", name, *service, *path)
			return exitUsage
		}
	}
	several := perService && cfg.ServiceCount() > 1
	if perService {
		if cfg, err = cfg.ForService(slot); err != nil {
			fmt.Fprintf(stderr, "vigil %s: %v\n", name, err)
			return exitUsage
		}
	}
	// One P, as the supervisor: the locator and node manager are event
	// loops woken hundreds of times a second, and with a second P every
	// wake-up also woke a spinning thread to look for more work (a
	// context switch, tens of µs on a paravirtualised guest). The readers
	// yield after each full batch so that a flood cannot hold the one P
	// from the protocol loop (transport.read, netfloat's packet reader).
	runtime.GOMAXPROCS(1)
	log := newLogger(stderr, cfg.Log).With("component", name)
	if several {
		// Every service's lines name it, the first's too, so that
		// journalctl SERVICE=NAME finds all of one service.
		log = log.With("service", cfg.Services[0].Name)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Not ctx: after SIGTERM the active node manager still hands over
	// for up to a token timeout, and a stray signal must not cut that short.
	stray.Serve(context.Background(), log, stderr)
	if err := run(ctx, cfg, log); err != nil {
		log.Error(name+" failed", "event", "fatal_error", "err", err)
		return exitFailure
	}
	return exitOK
}
