package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

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
// node of its own).
func runSwitchover(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("switchover", stderr)
	to := fs.String("to", "", "`NODE` to hand the active role to (default: the most preferred healthy standby)")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the role to move (0: return once requested)")
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
	}
	if len(words) > 1 || *wait < 0 {
		fmt.Fprintln(stderr, "usage: vigil switchover [SERVICE] [--to NODE] [--wait DURATION]")
		return exitUsage
	}
	socket := socketPath(*path, *sock, stderr)
	if code := checkService(socket, service, *to, stdout, stderr); code != exitOK {
		return code
	}
	before, _ := roleView(socket, service)
	began := time.Now()
	resp, err := client.Call(socket, supervisor.Request{Cmd: "switchover", Name: *to, Service: service})
	if err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	if *wait == 0 {
		fmt.Fprintln(stdout, "switchover requested")
		return exitOK
	}
	// The status report can lag a role change by a report interval; the
	// node manager's own view when it took the request does not (an
	// earlier build's answer lacks it: the report read before is used).
	if seen := resp.Switchover; seen != nil {
		before.Epoch, before.Active = seen.Epoch, seen.Active
	}
	for deadline := began.Add(*wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		v, err := roleView(socket, service)
		if err == nil && switchedOver(before.Epoch, before.Active, *to, v) {
			fmt.Fprintf(stdout, "switchover done: %s is active (epoch %d), seen after %d ms\n", v.Active, v.Epoch, time.Since(began).Milliseconds())
			return exitOK
		}
	}
	now, _ := roleView(socket, service)
	fmt.Fprintf(stderr, "vigil switchover: requested, but the role did not move within %v: %s\n", *wait, notMoved(before.Epoch, before.Active, *to, now))
	return exitFailure
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
