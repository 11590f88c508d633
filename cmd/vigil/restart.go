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
	words, ok := parseWords(fs, args)
	if !ok {
		return exitUsage
	}
	if len(words) != 1 {
		if len(words) == 0 {
			fmt.Fprintln(stderr, "vigil restart: name the process to restart (vigil status lists them)")
		} else {
			fmt.Fprintf(stderr, "vigil restart: unexpected argument %q: one NAME at a time\n", words[1])
		}
		fmt.Fprintln(stderr, "usage: vigil restart [-c FILE] NAME")
		return exitUsage
	}
	if _, err := client.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "restart", Name: words[0]}); err != nil {
		fmt.Fprintf(stderr, "vigil restart: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "restarting %s\n", words[0])
	return exitOK
}
