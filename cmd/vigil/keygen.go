package main

import (
	"errors"
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
	fl := newFlags("keygen", stderr)
	if err := fl.Parse(args); err != nil {
		return exitUsage // the error and the help are on stderr
	}
	if fl.NArg() > 1 {
		fmt.Fprintf(stderr, "vigil keygen: too many arguments\nusage: vigil keygen [FILE]\n")
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
