// Command vigil is Vigil's single binary: the supervisor daemon, its control-plane
// processes and the operator's CLI.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes shared by every subcommand (SPEC.md); `vigil status` adds
// its own above these (status.go).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"supervise", "run the daemon (systemd ExecStart)", runSupervise},
		{"status", "show this host's view of the cluster and its processes", runStatus},
		{"restart", "restart a supervised process (clears FATAL)", runRestart},
		{"reload", "re-read the configuration file and wait for the result (systemd ExecReload)", runReload},
		{"switchover", "move the active role (the service) to another node and wait for it (--to NODE or --preferred, --wait D)", runSwitchover},
		{"maintenance", "on: this node refuses the active role; off: accepts it", runMaintenance},
		{"locator", "run this host's service locator (started by supervise)", runLocator},
		{"nodemanager", "run this host's node manager (started by supervise)", runNodeManager},
		{"check", "validate a configuration file", runCheck},
		{"keygen", "write a new random cluster key (0600)", runKeygen},
		{"version", "print version, commit and Go version", runVersion},
		{"completion", "print the bash or zsh completion script", runCompletion},
		{"_exec", "internal: start a supervised process", runExecShim},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: vigil COMMAND [flags] [ARGS]\n       vigil --version\n\ncommands:\n")
	for _, c := range commands() {
		if hidden(c) {
			continue
		}
		fmt.Fprintf(w, "  %-20s %s\n", c.name+" "+docOf(c.name).args, c.usage)
	}
	fmt.Fprintf(w, "\nRun 'vigil COMMAND -h' for a command's flags and arguments.\n")
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "help":
		// `vigil help COMMAND` is `vigil COMMAND -h`.
		if len(args) == 1 {
			usage(stdout)
			return exitOK
		}
		args = []string{args[1], "-h"}
	case "-v", "-version", "--version":
		return runVersion(args[1:], stdout, stderr)
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		// Help is answered here, for every command alike (including ones
		// added later): exit 0, on stdout, with the arguments too.
		if !hidden(c) && wantsHelp(args[1:]) {
			printHelp(stdout, c, commandFlags(c))
			return exitOK
		}
		return c.run(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "vigil: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}
