package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vigil-project/vigil/config"
)

const defaultSocket = "/run/vigil/control.sock"

// socketPath finds the control socket: --socket, else the config's
// runtime.control_socket, else the default.
func socketPath(cfgPath, socket string, stderr io.Writer) string {
	if socket != "" {
		return socket
	}
	cfg, err := config.Load(cfgPath)
	if err == nil {
		return cfg.Runtime.ControlSocket
	}
	if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "vigil: warning: %s is not valid, using %s\n", cfgPath, defaultSocket)
	}
	return defaultSocket
}

// controlFlags are the flags of every command that talks to the daemon:
// where its configuration is (to find the socket) or the socket itself.
func controlFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration `FILE` (to find the control socket)")
	fs.StringVar(path, "config", defaultConfig, "configuration `FILE` (to find the control socket)")
	sock := fs.String("socket", "", "control socket `PATH` (overrides the config's runtime.control_socket)")
	return fs, path, sock
}
