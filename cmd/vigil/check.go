package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/vigil-project/vigil/config"
)

// runCheck validates a configuration file the way `vigil supervise` would
// load it, and prints every problem as FILE:LINE:COL: KEY: MSG.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := config.DefaultPath
	fs.StringVar(&path, "c", path, "configuration `FILE`")
	fs.StringVar(&path, "config", path, "configuration `FILE` (same as -c)")
	if err := fs.Parse(args); err != nil {
		return exitUsage // the error and the help are on stderr
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil check: unexpected argument %q\nusage: vigil check [-c FILE]\n", fs.Arg(0))
		return exitUsage
	}
	if _, err := config.Load(path); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(stderr, e)
			}
		} else {
			fmt.Fprintf(stderr, "vigil check: %v\n", err)
		}
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return exitOK
}
