package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/vigil-project/vigil/config"
)

// runCheck validates a configuration file the way `vigil supervise` would
// load it, and prints every problem as FILE:LINE:COL: KEY: MSG.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed below, each to its stream
	path := config.DefaultPath
	fs.StringVar(&path, "c", path, "configuration `FILE`")
	fs.StringVar(&path, "config", path, "configuration `FILE` (same as -c)")
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: vigil check [-c FILE]\n\nValidate a configuration file; exit 0 if it is valid, 2 if not.\n\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "vigil check: %v\n", err)
		usage(stderr)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil check: unexpected argument %q\n", fs.Arg(0))
		usage(stderr)
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
