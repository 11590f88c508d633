package main

import (
	"fmt"
	"io"

	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

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
	if _, err := client.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "maintenance", Name: fs.Arg(0)}); err != nil {
		fmt.Fprintf(stderr, "vigil maintenance: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "maintenance %s\n", fs.Arg(0))
	return exitOK
}
