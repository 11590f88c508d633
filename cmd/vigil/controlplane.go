package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/procsig"
	"github.com/vigil-project/vigil/locator"
	"github.com/vigil-project/vigil/nodemanager"
)

// runLocator is `vigil locator`, started by the supervisor in control/locator:
// one process serves every service of the host.
func runLocator(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("locator", args, stderr, locator.Run)
}

// runNodeManager is `vigil nodemanager`, started by the supervisor in
// control/nodemanager on a node: one process runs every service's node
// manager.
func runNodeManager(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("nodemanager", args, stderr, nodemanager.Run)
}

// runControlPlane runs a control-plane process for the services it serves
// (serviceSlots) and the whole file's configuration.
func runControlPlane(name string, args []string, stderr io.Writer, run func(context.Context, *config.Config, []int, *slog.Logger) error) int {
	// First thing: a `kill -HUP $(pidof vigil)` (or USR1, QUIT, a Ctrl-Z...)
	// must never stop a control-plane process, which on the active would
	// drop the role. Reload is the supervisor's job.
	stray := procsig.CatchStraySignals()
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration `FILE`")
	fs.StringVar(path, "config", defaultConfig, "configuration `FILE`")
	service := fs.String("service", "", "serve only `SERVICE` (what a supervisor from before one process served every service asks for)")
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
	slots, err := serviceSlots(cfg, *service, os.Getenv(ipc.EnvFD) != "" && os.Getenv(ctlmsg.EnvAllServices) == "")
	if err != nil {
		fmt.Fprintf(stderr, "vigil %s: %v in %s\n", name, err, *path)
		return exitUsage
	}
	// One P, as the supervisor: the locator and node manager are event
	// loops woken hundreds of times a second, and with a second P every
	// wake-up also woke a spinning thread to look for more work (a
	// context switch, tens of µs on a paravirtualised guest). The readers
	// yield after each full batch so that a flood cannot hold the one P
	// from the protocol loop (transport.read, netfloat's packet reader).
	runtime.GOMAXPROCS(1)
	log := newLogger(stderr, cfg.Log).With("component", name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Not ctx: after SIGTERM the active node manager still hands over
	// for up to a token timeout, and a stray signal must not cut that short.
	stray.Serve(context.Background(), log, stderr)
	if err := run(ctx, cfg, slots, log); err != nil {
		log.Error(name+" failed", "event", "fatal_error", "err", err)
		return exitFailure
	}
	return exitOK
}

// serviceSlots are the services a control-plane process serves: the one
// named (service), or every one of the file. oldSupervisor: it was started
// by a supervisor from before one process served every service
// (ctlmsg.EnvAllServices unset: after a package upgrade, until vigil is
// restarted), which ran one per service and named each but the first's.
// Under it this process serves that one service: serving every one would
// put a second instance of another service's locator or node manager
// beside the old process, sharing its port (SO_REUSEPORT), and one host's
// vote would then be two.
func serviceSlots(cfg *config.Config, service string, oldSupervisor bool) ([]int, error) {
	if service != "" {
		slot := slices.IndexFunc(cfg.Services, func(s config.Service) bool { return s.Name == service })
		if slot < 0 {
			return nil, fmt.Errorf("no service %q", service)
		}
		return []int{slot}, nil
	}
	if oldSupervisor {
		return []int{0}, nil
	}
	slots := make([]int, cfg.ServiceCount())
	for i := range slots {
		slots[i] = i
	}
	return slots, nil
}
