package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// runReload is `vigil reload`, the unit's ExecReload=: it asks the running
// daemon to re-read its configuration file and waits for the answer, so that
// `systemctl reload vigil` fails, with the file's errors, when the file is
// invalid (exit 2; nothing changed), or when there is no daemon to ask
// (exit 1). A signal could do neither: it returns before the daemon has even
// read the file. Only the supervisor reloads: the control plane keeps running
// and the role stays where it is.
func runReload(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("reload", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: vigil reload [-c FILE] [--socket PATH]")
		return exitUsage
	}
	// The file is read here only to find the socket: the daemon reloads
	// the file it was started with, and judges it itself.
	socket := *sock
	var localErr error
	if socket == "" {
		socket = defaultSocket
		if cfg, err := config.Load(*path); err == nil {
			socket = cfg.Runtime.ControlSocket
		} else {
			localErr = err
		}
	}
	resp, err := client.Call(socket, supervisor.Request{Cmd: "reload"})
	switch {
	case err == nil && resp.Reload == nil:
		fmt.Fprintln(stderr, "vigil reload: the daemon answered without saying what it reloaded")
		return exitFailure
	case err == nil:
		printReload(stdout, resp.Reload)
		if explicit(fs.Visit, "c", "config") && !sameFile(*path, resp.Reload.Config) {
			fmt.Fprintf(stderr, "vigil reload: warning: the daemon reloaded %s, not %s\n", resp.Reload.Config, *path)
		}
		return exitOK
	case resp != nil && len(resp.ConfigErrors) > 0:
		fmt.Fprintf(stderr, "vigil reload: %s\n", resp.Error)
		for _, e := range resp.ConfigErrors {
			fmt.Fprintln(stderr, e)
		}
		return exitUsage
	case errors.Is(err, supervisor.ErrNotRunning) && localErr != nil:
		// The socket came from the default because the file is broken;
		// say what is wrong with it rather than only that nothing answers.
		fmt.Fprintf(stderr, "vigil reload: %s is not valid (so its control socket is unknown) and no daemon answers on the default %s; the file's errors:\n", *path, socket)
		printConfigErrors(stderr, localErr)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vigil reload: %v\n", err)
		return exitFailure
	}
}

func printReload(w io.Writer, r *supervisor.ReloadResult) {
	fmt.Fprintf(w, "reloaded %s\n", r.Config)
	for _, l := range []struct {
		what  string
		names []string
	}{
		{"added (starting)", r.Added},
		{"changed (restarting)", r.Changed},
		{"removed (stopping)", r.Removed},
		{"unchanged", r.Unchanged},
	} {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "  %-21s %s\n", l.what+":", strings.Join(l.names, ", "))
		}
	}
	if len(r.Deferred) > 0 {
		fmt.Fprintf(w, "  not applied until vigil restarts: %s\n", strings.Join(r.Deferred, ", "))
	}
}

// explicit says whether one of the named flags was set on the command line.
func explicit(visit func(func(*flag.Flag)), names ...string) bool {
	set := false
	visit(func(f *flag.Flag) {
		for _, n := range names {
			if f.Name == n {
				set = true
			}
		}
	})
	return set
}

func sameFile(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && filepath.Clean(aa) == filepath.Clean(bb)
}
