package main

import (
	"fmt"
	"io"

	"github.com/vigil-project/vigil/internal/execshim"
)

// runExecShim is `vigil _exec`, the first moments of every supervised
// process (see execshim.Run).
func runExecShim(args []string, stdout, stderr io.Writer) int {
	err := execshim.Run()
	fmt.Fprintf(stderr, "vigil: cannot start process: %v\n", err)
	return 127
}
