package main

import (
	"fmt"
	"io"

	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// runRestart is `vigil restart NAME`: the daemon stops and starts one
// supervised process.
func runRestart(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("restart", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vigil restart [-c FILE] NAME")
		return exitUsage
	}
	if _, err := client.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "restart", Name: fs.Arg(0)}); err != nil {
		fmt.Fprintf(stderr, "vigil restart: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "restarting %s\n", fs.Arg(0))
	return exitOK
}
