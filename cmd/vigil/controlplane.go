package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
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
	// First thing: a `kill -HUP $(pidof vigil)` (or USR1, QUIT, a Ctrl-Z...)
	// must never stop a control-plane process, which on the active would
	// drop the role. Reload is the supervisor's job.
	stray := supervisor.CatchStraySignals()
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration `FILE`")
	fs.StringVar(path, "config", defaultConfig, "configuration `FILE`")
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
	// Not ctx: after SIGTERM the active node manager still hands over
	// for up to a token timeout, and a stray signal must not cut that short.
	stray.Serve(context.Background(), log, stderr)
	if err := run(ctx, cfg, log); err != nil {
		log.Error(name+" failed", "event", "fatal_error", "err", err)
		return exitFailure
	}
	return exitOK
}

// runSwitchover is `vigil switchover [--to NODE] [--wait D]`: by default it
// waits until this node sees another node active in a newer epoch, and says
// which and how long it took, or fails plainly if the role did not move: a
// request forwarded from a standby that the active cannot carry out is
// otherwise dropped without a word.
func runSwitchover(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("switchover", stderr)
	to := fs.String("to", "", "`NODE` to hand the active role to (default: the next healthy standby)")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the role to move (0: return once requested)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 || *wait < 0 {
		fmt.Fprintln(stderr, "usage: vigil switchover [--to NODE] [--wait DURATION]")
		return exitUsage
	}
	socket := socketPath(*path, *sock, stderr)
	before, _ := roleView(socket)
	began := time.Now()
	if _, err := supervisor.Call(socket, supervisor.Request{Cmd: "switchover", Name: *to}); err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	if *wait == 0 {
		fmt.Fprintln(stdout, "switchover requested")
		return exitOK
	}
	for deadline := began.Add(*wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		v, err := roleView(socket)
		if err == nil && v.Epoch > before.Epoch && v.Active != "" && v.Active != before.Active {
			fmt.Fprintf(stdout, "switchover done: %s is active (epoch %d), seen after %d ms\n", v.Active, v.Epoch, time.Since(began).Milliseconds())
			return exitOK
		}
	}
	now, _ := roleView(socket)
	active := now.Active
	if active == "" {
		active = "none"
	}
	fmt.Fprintf(stderr, "vigil switchover: requested, but the role did not move within %v: active is %s (epoch %d); on the active: journalctl -u vigil EVENT=switchover\n", *wait, active, now.Epoch)
	return exitFailure
}

// roleView reads the node manager's view of the active role from this
// host's status; the zero report when there is none.
func roleView(socket string) (ctlmsg.NodeManagerReport, error) {
	resp, err := supervisor.Call(socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return ctlmsg.NodeManagerReport{}, err
	}
	if resp.Status == nil || resp.Status.NodeManager == nil {
		return ctlmsg.NodeManagerReport{}, errors.New("no node manager report")
	}
	return *resp.Status.NodeManager, nil
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
