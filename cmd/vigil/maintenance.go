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
	words, ok := parseWords(fs, args)
	if !ok {
		return exitUsage
	}
	switch {
	case len(words) == 0:
		fmt.Fprintln(stderr, "vigil maintenance: on or off?")
	case words[0] != "on" && words[0] != "off":
		fmt.Fprintf(stderr, "vigil maintenance: %q: want on or off\n", words[0])
	case len(words) > 1:
		fmt.Fprintf(stderr, "vigil maintenance: unexpected argument %q\n", words[1])
	default:
		if _, err := client.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "maintenance", Name: words[0]}); err != nil {
			fmt.Fprintf(stderr, "vigil maintenance: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "maintenance %s\n", words[0])
		return exitOK
	}
	fmt.Fprintln(stderr, "usage: vigil maintenance on|off")
	return exitUsage
}
