package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vigil-project/vigil/config"
)

// runKeygen writes a new cluster key. It refuses to replace one: every
// node must hold the same key, and a silent replacement would cut this
// node off from the cluster at its next start.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: vigil keygen [FILE]\n\nWrite a new random cluster key (mode 0600) to FILE, default %s.\n"+
			"Copy the same file to every node and witness.\n", config.DefaultKeyFile)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "vigil keygen: %v\n", err)
		usage(stderr)
		return exitUsage
	}
	if fl.NArg() > 1 {
		fmt.Fprintf(stderr, "vigil keygen: too many arguments\n")
		usage(stderr)
		return exitUsage
	}
	path := config.DefaultKeyFile
	if fl.NArg() == 1 {
		path = fl.Arg(0)
	}
	// Only a missing parent is created, 0700: an existing directory keeps
	// the mode its owner chose.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		fmt.Fprintf(stderr, "vigil keygen: %v\n", err)
		return exitFailure
	}
	if err := config.WriteKeyFile(path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			fmt.Fprintf(stderr, "vigil keygen: %s already exists; remove it first to replace the key (every node needs the new key)\n", path)
		} else {
			fmt.Fprintf(stderr, "vigil keygen: %v\n", err)
		}
		return exitFailure
	}
	fmt.Fprintln(stdout, path)
	return exitOK
}
