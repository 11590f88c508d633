package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// runSwitchover is `vigil switchover [SERVICE] [--to NODE] [--wait D]`: by
// default it waits until this node sees another node active in a newer
// epoch, and says which and how long it took, or fails plainly if the role
// did not move: a request forwarded from a standby that the active cannot
// carry out is otherwise dropped without a word. SERVICE names the service
// to move: optional with one, required with several (each has an active
// node of its own). With --preferred it moves each service named (every one
// without SERVICE) to its most preferred fit node, where it is not already.
func runSwitchover(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("switchover", stderr)
	to := fs.String("to", "", "`NODE` to hand the active role to (default: the most preferred healthy standby)")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the role to move (0: return once requested)")
	preferred := fs.Bool("preferred", false, "move each service (without SERVICE: every one) to its most preferred fit node, where it is not already")
	// The service may come before the flags (vigil switchover voice --to b).
	words, ok := parseWords(fs, args)
	if !ok {
		return exitUsage
	}
	service := ""
	if len(words) > 0 {
		service = words[0]
	}
	switch {
	case len(words) > 1:
		fmt.Fprintf(stderr, "vigil switchover: unexpected argument %q: one SERVICE at most\n", words[1])
	case *wait < 0:
		fmt.Fprintf(stderr, "vigil switchover: --wait %s: want 0 (return once requested) or more\n", *wait)
	case *preferred && *to != "":
		fmt.Fprintf(stderr, "vigil switchover: --preferred and --to %s: the one picks the node, the other names it\n", *to)
	}
	if len(words) > 1 || *wait < 0 || *preferred && *to != "" {
		fmt.Fprintln(stderr, "usage: vigil switchover [SERVICE] [--to NODE | --preferred] [--wait DURATION]")
		return exitUsage
	}
	socket := socketPath(*path, *sock, stderr)
	if *preferred {
		return movePreferred(socket, service, *wait, stdout, stderr)
	}
	if code := checkService(socket, service, *to, stdout, stderr); code != exitOK {
		return code
	}
	return moveOne(socket, service, *to, *wait, stdout, stderr)
}

// moveOne asks for the switchover of service to the node to ("": any) and
// waits up to wait for this host to see it done.
func moveOne(socket, service, to string, wait time.Duration, stdout, stderr io.Writer) int {
	before, _ := roleView(socket, service)
	began := time.Now()
	resp, err := client.Call(socket, supervisor.Request{Cmd: "switchover", Name: to, Service: service})
	if err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	if wait == 0 {
		fmt.Fprintln(stdout, "switchover requested")
		return exitOK
	}
	// The status report can lag a role change by a report interval; the
	// node manager's own view when it took the request does not (an
	// earlier build's answer lacks it: the report read before is used).
	if seen := resp.Switchover; seen != nil {
		before.Epoch, before.Active = seen.Epoch, seen.Active
	}
	for deadline := began.Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		v, err := roleView(socket, service)
		if err == nil && switchedOver(before.Epoch, before.Active, to, v) {
			fmt.Fprintf(stdout, "switchover done: %s is active (epoch %d), seen after %d ms\n", v.Active, v.Epoch, time.Since(began).Milliseconds())
			return exitOK
		}
	}
	now, _ := roleView(socket, service)
	fmt.Fprintf(stderr, "vigil switchover: requested, but the role did not move within %v: %s\n", wait, notMoved(before.Epoch, before.Active, to, now))
	return exitFailure
}

// movePreferred is `vigil switchover [SERVICE] --preferred`: each service
// named (every one without SERVICE) that is not on its most preferred fit
// node is moved there, one after the other, each as `--to` would; a
// service already there, or with no fit node, is left and said so. After
// a cold start every service sits on the node that came up first (a
// service without failback never moves back by itself): this puts them
// where the file prefers them. Exits 1 if any move failed or any service
// has no fit node, 2 if SERVICE is none of the cluster's.
func movePreferred(socket, service string, wait time.Duration, stdout, stderr io.Writer) int {
	resp, err := client.Call(socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	st := resp.Status
	if st == nil || len(st.Services) == 0 || st.Role == string(config.RoleWitness) {
		fmt.Fprintln(stderr, "vigil switchover: this host runs no node manager (a witness): run it on a node")
		return exitUsage
	}
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Name)
	}
	if service != "" && !slices.Contains(names, service) {
		fmt.Fprintf(stderr, "vigil switchover: no service %q in this cluster (it has: %s)\n", service, strings.Join(names, ", "))
		return exitUsage
	}
	code := exitOK
	for i, s := range st.Services {
		if service != "" && s.Name != service {
			continue
		}
		to, why := preferredTarget(s, st.Report(i))
		switch {
		case why != "":
			fmt.Fprintf(stderr, "%s: left where it is: %s\n", s.Name, why)
			code = exitFailure
		case to == s.Holder:
			fmt.Fprintf(stdout, "%s: on %s, its most preferred fit node\n", s.Name, to)
		default:
			fmt.Fprintf(stdout, "%s: from %s to %s\n", s.Name, s.Holder, to)
			if c := moveOne(socket, s.Name, to, wait, stdout, stderr); c != exitOK {
				code = exitFailure
			}
		}
	}
	return code
}

// preferredTarget is the node service s should be on: the first of its
// preference that is healthy, not in maintenance and in the token ring, as
// this host's node manager of the service (r) last reported them (a full
// report is at most a second old: a node that became fit since may be
// passed over, one that stopped being fit refuses the handover, and the
// command says so); why says what stands in the way when there is none, or
// no holder to move from.
func preferredTarget(s supervisor.ServiceStatus, r *ctlmsg.NodeManagerReport) (to, why string) {
	if r == nil {
		return "", "no report from this host's node manager for it yet"
	}
	if r.NotStarted() {
		return "", "not started on this host (" + r.StartError + "): run this on another node"
	}
	if s.Holder == "" {
		return "", "no node holds it now"
	}
	fit := map[string]bool{}
	for _, p := range r.Peers {
		// This node's own entry is its node manager's current view; it
		// is in the ring while it runs (the token's entry for it says
		// nothing: the token never visits it from elsewhere).
		fit[p.ID] = p.Healthy && !p.Maintenance && (p.InRing || p.ID == r.Self)
	}
	for _, n := range s.Prefer {
		if fit[n] {
			return n, ""
		}
	}
	return "", "no node of its preference (" + strings.Join(s.Prefer, " > ") + ") is healthy, out of maintenance and in the ring"
}

// notMoved says what the role did instead of the move asked for when it
// was (epoch, active): still there in that epoch (the active refused or
// never got the request), or on the same node in a newer one. That is
// one of two things this host cannot tell apart: the active handed over
// and the target did not take it (a node manager that has just started,
// or died, misses a handover; the old active reclaims), or the active
// regenerated the token and refused the request as made in the epoch
// before, and so did the node manager's two sends after it (CI saw the
// first alone before they existed). The active's journal says which.
func notMoved(epoch uint64, active, to string, now ctlmsg.NodeManagerReport) string {
	cur := now.Active
	if cur == "" {
		cur = "none"
	}
	if now.Epoch > epoch && now.Active != "" && now.Active == active && to != "" {
		return fmt.Sprintf("%s holds it again in a newer epoch (%d, was %d): either %s did not take the handover (a node manager that has just started misses one), or %s refused the request (on %s: journalctl -u vigil EVENT=switchover_refused); when `vigil status` on %s shows it standby following %s, try again",
			cur, now.Epoch, epoch, to, cur, cur, to, cur)
	}
	return fmt.Sprintf("active is %s (epoch %d); on the active: journalctl -u vigil EVENT=switchover_refused", cur, now.Epoch)
}

// switchedOver reports whether v shows the move a switchover asked for,
// made when the role was (epoch, active): a newer epoch whose active is
// the target (to), or any other node when the request named none. With a
// target, a later move elsewhere (a failback) is not the one asked for.
func switchedOver(epoch uint64, active, to string, v ctlmsg.NodeManagerReport) bool {
	if v.Epoch <= epoch || v.Active == "" {
		return false
	}
	if to != "" {
		return v.Active == to
	}
	return v.Active != active
}

// roleView reads the view of the active role of the node manager of the
// service (its first: "") from this host's status; the zero report when
// there is none.
func roleView(socket, service string) (ctlmsg.NodeManagerReport, error) {
	resp, err := client.Call(socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return ctlmsg.NodeManagerReport{}, err
	}
	if resp.Status == nil {
		return ctlmsg.NodeManagerReport{}, errors.New("no status")
	}
	slot := 0
	for i, s := range resp.Status.Services {
		if s.Name == service {
			slot = i
		}
	}
	r := resp.Status.Report(slot)
	if r == nil {
		return ctlmsg.NodeManagerReport{}, errors.New("no node manager report")
	}
	return *r, nil
}

// checkService refuses a SERVICE that is not this cluster's, and says when
// the move is one a failback will undo.
func checkService(socket, name, to string, stdout, stderr io.Writer) int {
	resp, err := client.Call(socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	var names []string
	if name == "" {
		if len(resp.Status.Services) > 1 {
			for _, s := range resp.Status.Services {
				names = append(names, s.Name)
			}
			fmt.Fprintf(stderr, "vigil switchover: this cluster has %d services (%s): name the one to move, like vigil switchover %s --to NODE\n",
				len(names), strings.Join(names, ", "), names[0])
			return exitUsage
		}
		return exitOK
	}
	for _, s := range resp.Status.Services {
		if s.Name != name {
			names = append(names, s.Name)
			continue
		}
		// A failback undoes a move away from the most preferred node.
		if s.Failback != "off" && len(s.Prefer) > 0 &&
			((to != "" && to != s.Prefer[0]) || (to == "" && s.Holder == s.Prefer[0])) {
			fmt.Fprintf(stdout, "note: service %s prefers %s and fails back after %s: it moves back once %s has been fit that long\n",
				name, s.Prefer[0], s.Failback, s.Prefer[0])
		}
		return exitOK
	}
	if len(names) == 0 {
		fmt.Fprintf(stderr, "vigil switchover: no service %q: this host holds none (a witness)\n", name)
	} else {
		fmt.Fprintf(stderr, "vigil switchover: no service %q in this cluster (it has: %s)\n", name, strings.Join(names, ", "))
	}
	return exitUsage
}
