package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// runSwitchover is `vigil switchover [--to NODE] [--wait D]`: by default it
// waits until this node sees another node active in a newer epoch, and says
// which and how long it took, or fails plainly if the role did not move: a
// request forwarded from a standby that the active cannot carry out is
// otherwise dropped without a word.
func runSwitchover(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("switchover", stderr)
	to := fs.String("to", "", "`NODE` to hand the active role to (default: the most preferred healthy standby)")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the role to move (0: return once requested)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 || *wait < 0 {
		fmt.Fprintln(stderr, "usage: vigil switchover [--to NODE] [--wait DURATION]")
		return exitUsage
	}
	socket := socketPath(*path, *sock, stderr)
	before, _ := roleView(socket)
	began := time.Now()
	if _, err := client.Call(socket, supervisor.Request{Cmd: "switchover", Name: *to}); err != nil {
		fmt.Fprintf(stderr, "vigil switchover: %v\n", err)
		return exitFailure
	}
	if *wait == 0 {
		fmt.Fprintln(stdout, "switchover requested")
		return exitOK
	}
	for deadline := began.Add(*wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		v, err := roleView(socket)
		if err == nil && v.Epoch > before.Epoch && v.Active != "" && v.Active != before.Active {
			fmt.Fprintf(stdout, "switchover done: %s is active (epoch %d), seen after %d ms\n", v.Active, v.Epoch, time.Since(began).Milliseconds())
			return exitOK
		}
	}
	now, _ := roleView(socket)
	active := now.Active
	if active == "" {
		active = "none"
	}
	fmt.Fprintf(stderr, "vigil switchover: requested, but the role did not move within %v: active is %s (epoch %d); on the active: journalctl -u vigil EVENT=switchover_refused\n", *wait, active, now.Epoch)
	return exitFailure
}

// roleView reads the node manager's view of the active role from this
// host's status; the zero report when there is none.
func roleView(socket string) (ctlmsg.NodeManagerReport, error) {
	resp, err := client.Call(socket, supervisor.Request{Cmd: "status"})
	if err != nil {
		return ctlmsg.NodeManagerReport{}, err
	}
	if resp.Status == nil || resp.Status.NodeManager == nil {
		return ctlmsg.NodeManagerReport{}, errors.New("no node manager report")
	}
	return *resp.Status.NodeManager, nil
}
