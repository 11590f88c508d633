package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/netfloat"
)

// runCheck validates a configuration file the way `vigil supervise` would
// load it, and prints every problem as FILE:LINE:COL: KEY: MSG. With
// --timing it then judges the file's timing against what the running
// control plane measures (checktiming.go).
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := config.DefaultPath
	fs.StringVar(&path, "c", path, "configuration `FILE`")
	fs.StringVar(&path, "config", path, "configuration `FILE` (same as -c)")
	timing := fs.Bool("timing", false, "measure the running control plane's lateness and round trips, judge cluster.timing against them (exit 1: too little margin)")
	measure := fs.Duration("for", defaultTimingFor, "with --timing: how long to measure")
	asJSON := fs.Bool("json", false, "with --timing: print JSON")
	sock := fs.String("socket", "", "with --timing: control socket `PATH` (overrides the config's runtime.control_socket)")
	if err := fs.Parse(args); err != nil {
		return exitUsage // the error and the help are on stderr
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil check: unexpected argument %q\nusage: vigil check [-c FILE] [--timing [--for D] [--json]]\n", fs.Arg(0))
		return exitUsage
	}
	if *measure <= 0 {
		fmt.Fprintln(stderr, "vigil check: --for must be positive\nusage: vigil check [-c FILE] [--timing [--for D] [--json]]")
		return exitUsage
	}
	cfg, err := config.Load(path)
	if err != nil {
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
	if *timing {
		socket := *sock
		if socket == "" {
			socket = cfg.Runtime.ControlSocket
		}
		return checkTiming(cfg, socket, *measure, *asJSON, stdout, stderr)
	}
	for _, w := range interfaceWarnings(cfg, "/proc/sys") {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return exitOK
}

// interfaceWarnings are the floating IPs' interfaces this host (its
// network namespace) lacks, and those of IPv6 floating IPs whose IPv6 is
// off (procSys: the sysctl tree, "/proc/sys"), one line each with its key.
// A warning, not an error: the file may be checked before the interface
// exists (a VLAN, a bond brought up later) or on another machine. Started
// as it is, the node would be unhealthy, and hold such a service only
// where no fit node can, without that address (vip_error in vigil status).
func interfaceWarnings(cfg *config.Config, procSys string) []string {
	var out []string
	for s, svc := range cfg.Services {
		for i, v := range svc.VIPs {
			key := fmt.Sprintf("services[%d].vips[%d].interface", s, i)
			if svc.Implicit {
				key = fmt.Sprintf("vips[%d].interface", i)
			}
			if _, err := net.InterfaceByName(v.Interface); err != nil {
				out = append(out, fmt.Sprintf("%s: %q is not an interface of this host: a node holds the service without %s, and unhealthy, until it appears", key, v.Interface, v.Address))
				continue
			}
			if p, err := netip.ParsePrefix(v.Address); err != nil || !p.Addr().Is6() {
				continue
			}
			if err := netfloat.IPv6Disabled(procSys, v.Interface); err != nil {
				out = append(out, fmt.Sprintf("%s: %q cannot hold %s: %v; the node is unhealthy until IPv6 is enabled there", key, v.Interface, v.Address, err))
			}
		}
	}
	return out
}
