package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/locator"
	"github.com/vigil-project/vigil/nodemanager"
	"github.com/vigil-project/vigil/supervisor"
)

// runLocator is `vigil locator`, started by the supervisor in control/locator.
func runLocator(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("locator", args, stderr, locator.Run)
}

// runNodeManager is `vigil nodemanager`, started by the supervisor in
// control/nodemanager.
func runNodeManager(args []string, stdout, stderr io.Writer) int {
	return runControlPlane("nodemanager", args, stderr, nodemanager.Run)
}

func runControlPlane(name string, args []string, stderr io.Writer, run func(context.Context, *config.Config, *slog.Logger) error) int {
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration file")
	fs.StringVar(path, "config", defaultConfig, "configuration file")
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
	log := newLogger(stderr, cfg.Log).With("component", name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error(name+" failed", "event", "fatal_error", "err", err)
		return exitFailure
	}
	return exitOK
}

// runSwitchover is `vigil switchover [--to NODE]`.
func runSwitchover(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("switchover", stderr)
	to := fs.String("to", "", "node to hand the active role to (default: the next healthy standby)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: vigil switchover [--to NODE]")
		return exitUsage
	}
	if _, err := supervisor.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "switchover", Name: *to}); err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "switchover requested")
	return exitOK
}

// runMaintenance is `vigil maintenance on|off`.
func runMaintenance(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("maintenance", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "on" && fs.Arg(0) != "off") {
		fmt.Fprintln(stderr, "usage: vigil maintenance on|off")
		return exitUsage
	}
	if _, err := supervisor.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "maintenance", Name: fs.Arg(0)}); err != nil {
		fmt.Fprintf(stderr, "vigil maintenance: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "maintenance %s\n", fs.Arg(0))
	return exitOK
}
