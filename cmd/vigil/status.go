package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/locator"
	"github.com/vigil-project/vigil/nodemanager"
	"github.com/vigil-project/vigil/supervisor"
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

func controlFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := newFlags(name, stderr)
	path := fs.String("c", defaultConfig, "configuration file (to find the control socket)")
	fs.StringVar(path, "config", defaultConfig, "configuration file (to find the control socket)")
	sock := fs.String("socket", "", "control socket path (overrides the config)")
	return fs, path, sock
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON (stable keys, see docs/operations.md)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	resp, err := supervisor.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "status"})
	if err != nil {
		fmt.Fprintf(stderr, "vigil status: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp.Status)
		return exitOK
	}
	printStatus(stdout, resp.Status, time.Now())
	return exitOK
}

func printStatus(w io.Writer, st *supervisor.Status, now time.Time) {
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + strings.Join(st.Unhealthy, "; ")
	}
	node := st.Node
	if st.Role == "witness" {
		node += " (witness)"
	}
	fmt.Fprintf(w, "cluster %s  node %s  %s\n", st.Cluster, node, health)
	fmt.Fprintf(w, "supervisor pid %d  up %s  cgroup %s (%s)  rss %.1f MiB  reloads %d\n\n",
		st.Supervisor.PID, age(now, st.Supervisor.StartedAt), st.Supervisor.Cgroup, st.Supervisor.CgroupMode,
		float64(st.Supervisor.RSSBytes)/(1<<20), st.Supervisor.Reloads)
	printCluster(w, st)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSTATE\tPID\tUP\tRESTARTS\tLAST EXIT\tHEALTH\tCGROUP")
	for _, p := range append(append([]supervisor.ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		up, pid, last := "-", "-", "-"
		if p.StartedAt != nil {
			up = age(now, *p.StartedAt)
		}
		if p.PID > 0 {
			pid = fmt.Sprint(p.PID)
		} else if p.Daemonized {
			pid = "(forked)"
		}
		if p.LastExit != nil {
			last = fmt.Sprintf("%s after %s", exitText(p.LastExit), p.LastExit.Ran)
		}
		state := string(p.State)
		if p.NextStart != nil {
			state += " " + p.NextStart.Sub(now).Round(time.Millisecond).String()
		}
		h := p.Health
		if p.HealthError != "" {
			h += " (" + p.HealthError + ")"
		}
		crit := ""
		if p.Critical {
			crit = "*"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, crit, state, pid, up, p.Restarts, last, h, p.Cgroup)
	}
	tw.Flush()
	if ws := warnings(st); len(ws) > 0 {
		fmt.Fprintln(w, "\nwarnings:")
		for _, x := range ws {
			fmt.Fprintf(w, "  - %s\n", x)
		}
	}
}

// warnings are what an on-call engineer should not miss, last on the
// screen: a starved control plane, fences, guarantees not in force,
// processes given up on, another host answering for our address.
func warnings(st *supervisor.Status) []string {
	var out []string
	var nm struct {
		Degraded        bool     `json:"degraded"`
		DegradedReasons []string `json:"degraded_reasons"`
		SchedMaxLateMS  float64  `json:"sched_max_late_ms"`
		Conflicts       uint64   `json:"ip_conflicts"`
		HookFailures    uint64   `json:"hook_failures"`
		Realtime        struct {
			Degraded []string `json:"Degraded"`
		} `json:"realtime"`
	}
	if st.NodeManager != nil && json.Unmarshal(st.NodeManager, &nm) == nil {
		if nm.Degraded {
			out = append(out, fmt.Sprintf("node manager not scheduled in time (worst %.0f ms; %s)", nm.SchedMaxLateMS, strings.Join(nm.DegradedReasons, ", ")))
		}
		if nm.Conflicts > 0 {
			out = append(out, fmt.Sprintf("another host answered for a floating IP %d times", nm.Conflicts))
		}
		if nm.HookFailures > 0 {
			out = append(out, fmt.Sprintf("%d hook runs failed (journalctl -u vigil EVENT=hook)", nm.HookFailures))
		}
		for _, d := range nm.Realtime.Degraded {
			out = append(out, "node manager: "+d)
		}
	}
	var loc struct {
		Degraded       bool    `json:"degraded"`
		SchedMaxLateMS float64 `json:"sched_max_late_ms"`
	}
	if st.Locator != nil && json.Unmarshal(st.Locator, &loc) == nil && loc.Degraded {
		out = append(out, fmt.Sprintf("locator not scheduled in time (worst %.0f ms)", loc.SchedMaxLateMS))
	}
	if st.Supervisor.Fences > 0 {
		out = append(out, fmt.Sprintf("node manager fenced %d times since start (journalctl -u vigil EVENT=fence)", st.Supervisor.Fences))
	}
	for _, p := range append(append([]supervisor.ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		if p.State == supervisor.StateFatal {
			out = append(out, fmt.Sprintf("%s gave up after repeated failures: vigil restart %s", p.Name, p.Name))
		}
	}
	for _, n := range st.NotInForce {
		out = append(out, "not in force: "+n)
	}
	return out
}

func exitText(e *supervisor.ExitInfo) string {
	if e.Signal != "" {
		return e.Signal
	}
	return fmt.Sprintf("status %d", e.Code)
}

func age(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func runRestart(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("restart", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vigil restart [-c FILE] NAME")
		return exitUsage
	}
	if _, err := supervisor.Call(socketPath(*path, *sock, stderr), supervisor.Request{Cmd: "restart", Name: fs.Arg(0)}); err != nil {
		fmt.Fprintf(stderr, "vigil restart: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "restarting %s\n", fs.Arg(0))
	return exitOK
}

// printCluster shows the node manager's and the locator's views.
func printCluster(w io.Writer, st *supervisor.Status) {
	if st.NodeManager != nil {
		var r nodemanager.Report
		if json.Unmarshal(st.NodeManager, &r) == nil {
			active := r.Active
			if active == "" {
				active = "none"
			}
			lease := "-"
			if r.LeaseValid {
				lease = fmt.Sprintf("%dms left", r.LeaseRemainingMS)
			}
			fmt.Fprintf(w, "role %s  epoch %d  active %s  lease %s  token age %dms  rotation %.1fms  maintenance %v\n",
				r.Role, r.Epoch, active, lease, r.TokenAgeMS, r.RotationMS, r.Maintenance)
			if len(r.VIPs) > 0 {
				fmt.Fprintf(w, "floating IPs held: %s\n", strings.Join(r.VIPs, ", "))
			}
			var peers []string
			for _, p := range r.Peers {
				h := "healthy"
				if !p.Healthy {
					h = "unhealthy"
				}
				if p.Maintenance {
					h += ",maintenance"
				}
				peers = append(peers, p.ID+" "+h)
			}
			var locs []string
			for _, l := range r.Locators {
				if l.Seen {
					locs = append(locs, fmt.Sprintf("%s %dms ago", l.ID, l.AgeMS))
				} else {
					locs = append(locs, l.ID+" never")
				}
			}
			fmt.Fprintf(w, "nodes: %s\nlocators answered: %s\n", strings.Join(peers, "; "), strings.Join(locs, "; "))
		}
	}
	if st.Locator != nil {
		var r locator.Report
		if json.Unmarshal(st.Locator, &r) == nil {
			holder := r.Holder
			if holder == "" {
				holder = "none"
			}
			var seen []string
			for _, n := range r.Nodes {
				if n.Seen {
					seen = append(seen, fmt.Sprintf("%s %dms ago", n.ID, n.AgeMS))
				} else {
					seen = append(seen, n.ID+" never")
				}
			}
			fmt.Fprintf(w, "this locator: epoch %d holder %s lease valid %v; check-ins: %s\n", r.Epoch, holder, r.LeaseValid, strings.Join(seen, "; "))
		}
	}
	fmt.Fprintln(w)
}
