package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// cpuSample is how long `vigil status` waits between its two snapshots to
// turn the cgroups' cumulative CPU counters into a current rate (as
// `docker stats` does). --json returns one snapshot: its consumers rate
// the counters themselves.
const cpuSample = 500 * time.Millisecond

// `vigil status` exit codes above the shared ones, like crm_mon -1's: a
// script or a monitoring check can act on the node's state without
// parsing it. No quorum outranks unhealthy: it means no active role here
// whatever the processes do.
const (
	exitUnhealthy = 3 // this node is unhealthy, or a process is FATAL
	exitNoQuorum  = 4 // no quorum, or no active node known
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs, path, sock := controlFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON (stable keys, see docs/operations.md)")
	watch := fs.Bool("watch", false, "redraw every --interval until interrupted (Ctrl-C)")
	interval := fs.Duration("interval", 2*time.Second, "time between two frames of --watch")
	count := fs.Int("count", 0, "with --watch: stop after `N` frames (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *interval <= 0 || *count < 0 {
		fmt.Fprintln(stderr, "vigil status: --interval must be positive and --count at least 0")
		return exitUsage
	}
	v := statusView{socket: socketPath(*path, *sock, stderr), json: *asJSON, term: isTerminal(stdout), tty: isTTY(stdout) && os.Getenv("TERM") != "dumb"}
	if !*watch {
		code, why, _ := v.frame(context.Background(), stdout, stderr, nil)
		if why != "" {
			fmt.Fprintf(stderr, "vigil status: %s (exit status %d)\n", why, code)
		}
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return v.watch(ctx, stdout, stderr, *interval, *count)
}

// statusView is how `vigil status` shows this host's status.
type statusView struct {
	socket string
	json   bool
	term   bool // stdout is a terminal that may be coloured
	tty    bool // stdout is a terminal: --watch clears the screen
}

// snapshot is a status and when it was taken.
type snapshot struct {
	st *supervisor.Status
	at time.Time
}

func (v statusView) fetch() (snapshot, error) {
	resp, err := client.Call(v.socket, supervisor.Request{Cmd: "status"})
	if err == nil && resp.Status == nil {
		err = errors.New("the daemon answered without a status")
	}
	if err != nil {
		return snapshot{}, err
	}
	return snapshot{st: resp.Status, at: time.Now()}, nil
}

// frame prints one status and returns its exit code, with the reason
// when it is not 0. prev, an earlier snapshot, gives the CPU rates;
// without one the human form waits cpuSample for a second snapshot. It
// returns the snapshot it showed, for the next frame's rates.
func (v statusView) frame(ctx context.Context, stdout, stderr io.Writer, prev *snapshot) (int, string, *snapshot) {
	cur, err := v.fetch()
	if err != nil {
		fmt.Fprintf(stderr, "vigil status: %v\n", err)
		return exitFailure, "", nil
	}
	if v.json {
		cur.st.Summarize()
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(cur.st); err != nil {
			fmt.Fprintf(stderr, "vigil status: %v\n", err)
			return exitFailure, "", nil
		}
		code, why := statusCode(cur.st)
		return code, why, &cur
	}
	if prev == nil {
		// A daemon that stopped in between leaves the first snapshot,
		// shown without CPU rates.
		select {
		case <-time.After(cpuSample):
		case <-ctx.Done():
		}
		if next, err := v.fetch(); err == nil {
			prev, cur = &cur, next
		}
	}
	win := cpuWindow{}
	if prev != nil {
		win = cpuWindow{prev: prev.st, d: cur.at.Sub(prev.at)}
	}
	cur.st.Summarize()
	printStatus(stdout, cur.st, win, time.Now(), v.term)
	code, why := statusCode(cur.st)
	return code, why, &cur
}

// watch redraws the status every interval until ctx ends or count frames
// were shown (count 0: no limit), and returns the last frame's exit code.
// On a terminal each frame replaces the last; otherwise frames follow one
// another, each under a line with its time (JSON: one document per frame).
func (v statusView) watch(ctx context.Context, stdout, stderr io.Writer, interval time.Duration, count int) int {
	code := exitOK
	var prev *snapshot
	for n := 1; ; n++ {
		now := time.Now()
		switch {
		case v.tty:
			fmt.Fprintf(stdout, "\x1b[H\x1b[2J%s\n\n", painter(v.term).paint(cBold, fmt.Sprintf("every %v: vigil status  %s  (Ctrl-C to stop)", interval, now.Format("15:04:05"))))
		case !v.json:
			if n > 1 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "--- vigil status %s ---\n", now.Format(time.RFC3339))
		}
		// Errors (a daemon that stopped) are part of the frame.
		errOut := stderr
		if !v.json {
			errOut = stdout
		}
		code, _, prev = v.frame(ctx, stdout, errOut, prev)
		if (count > 0 && n >= count) || ctx.Err() != nil {
			return code
		}
		select {
		case <-ctx.Done():
			return code
		case <-time.After(interval):
		}
	}
}

// statusCode is the exit code of `vigil status` for st, which Summarize
// has filled, and why it is not 0.
func statusCode(st *supervisor.Status) (int, string) {
	if q := st.Quorum; q != nil && !q.OK {
		return exitNoQuorum, fmt.Sprintf("no quorum: %d of %d locators answered, %d needed", q.Answered, q.Locators, q.Needed)
	}
	// Before the quorum: a service not started here has no view of it.
	for i, r := range st.Reports() {
		what := "the service"
		if len(st.Services) > 1 {
			what = "service " + st.Services[i].Name
		}
		if r.NotStarted() {
			return exitUnhealthy, what + " is not started on this host: " + r.StartError
		}
		if l := st.LocatorReport(i); l != nil && l.StartError != "" {
			return exitUnhealthy, "this host's locator of " + what + " is not started: " + l.StartError
		}
	}
	if activeNode(st) == "" {
		return exitNoQuorum, "no active node known to this host"
	}
	for i, s := range st.Services {
		if i > 0 && s.Holder == "" {
			return exitNoQuorum, "service " + s.Name + ": no active node known to this host"
		}
	}
	if !st.Healthy {
		return exitUnhealthy, "this node is unhealthy: " + strings.Join(st.Unhealthy, "; ")
	}
	for _, r := range st.Reports() {
		if r != nil && len(r.VIPsFailed) > 0 {
			// Held without its address: its callers reach nobody, though
			// nothing moves the service (the interface is up).
			return exitUnhealthy, "floating IP " + r.VIPsFailed[0].VIP + " is not on this host, which holds its service"
		}
	}
	for _, p := range append(append([]supervisor.ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		if p.State == supervisor.StateFatal {
			return exitUnhealthy, p.Name + " is FATAL"
		}
	}
	return exitOK, ""
}

// activeNode is the active node as this host knows it: from the node
// manager, or on a witness from its locator; "" if none or not known yet.
func activeNode(st *supervisor.Status) string {
	if st.NodeManager != nil {
		return st.NodeManager.Active
	}
	if st.Locator != nil {
		return st.Locator.Holder
	}
	return ""
}

// cpuWindow is an earlier snapshot and the time between it and the one
// shown; prev nil means no CPU rates.
type cpuWindow struct {
	prev *supervisor.Status
	d    time.Duration
}

// isTerminal reports whether w is a terminal that may be coloured: not
// with NO_COLOR set (https://no-color.org) or TERM=dumb.
func isTerminal(w io.Writer) bool {
	return os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" && isTTY(w)
}

// isTTY reports whether w is a terminal.
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ANSI SGR sequences; paint only uses them on a terminal.
const (
	cReset  = "\x1b[0m"
	cBold   = "\x1b[1m"
	cRed    = "\x1b[1;31m"
	cGreen  = "\x1b[32m"
	cYellow = "\x1b[33m"
)

type painter bool

func (p painter) paint(colour, s string) string {
	if !p || colour == "" || s == "" {
		return s
	}
	return colour + s + cReset
}

// cell is one table cell; its colour does not count towards the width.
type cell struct{ text, colour string }

func c(text string) cell              { return cell{text: text} }
func cc(text, colour string) cell     { return cell{text: text, colour: colour} }
func cf(format string, a ...any) cell { return cell{text: fmt.Sprintf(format, a...)} }

// table aligns columns by their visible text (tabwriter would count the
// colour sequences), two spaces apart; the header row is bold.
type table [][]cell

func (t table) render(w io.Writer, p painter) {
	var width []int
	for _, r := range t {
		for i, x := range r {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(x.text))
		}
	}
	for ri, r := range t {
		var b strings.Builder
		for i, x := range r {
			col := x.colour
			if ri == 0 {
				col = cBold
			}
			b.WriteString(p.paint(col, x.text))
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(x.text)+2))
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// printStatus renders st for a person: one screen, the cluster first,
// then this host, warnings last (st.Summarize must have run).
func printStatus(w io.Writer, st *supervisor.Status, win cpuWindow, now time.Time, colour bool) {
	p := painter(colour)
	health := p.paint(cGreen, "healthy")
	if !st.Healthy {
		health = p.paint(cRed, "UNHEALTHY: "+strings.Join(st.Unhealthy, "; "))
	}
	fmt.Fprintf(w, "vigil %s  cluster %s  node %s  %s\n\n", st.Version, st.Cluster, st.Node, health)

	nm, loc := st.NodeManager, st.Locator
	printCluster(w, p, st, nm, loc)
	printServices(w, p, st)
	fmt.Fprintln(w)
	printHost(w, p, st, nm, win, now)
	if len(st.Warnings) > 0 {
		fmt.Fprintf(w, "\n%s\n", p.paint(cBold, "WARNINGS"))
		for _, x := range st.Warnings {
			col := cYellow
			if x.Kind == "no_quorum" || x.Kind == "fence" || x.Kind == "fatal" || x.Kind == "vip_conflict" {
				col = cRed
			}
			fmt.Fprintf(w, "  %s\n", p.paint(col, "! "+x.Message))
		}
	}
}

// printCluster: epoch, active node, quorum, token, and one row per host
// with its role, health, its last check-in at this host's locator and
// its locator's last answer to this node.
func printCluster(w io.Writer, p painter, st *supervisor.Status, nm *ctlmsg.NodeManagerReport, loc *ctlmsg.LocatorReport) {
	title := p.paint(cBold, "CLUSTER")
	if len(st.Services) > 1 {
		// Each service has a ring of its own: this section is the
		// first's, the SERVICES table has every one.
		title += "  service " + st.Services[0].Name
	}
	notStarted := nm.NotStarted()
	if notStarted {
		nm = nil // it has no view of the service: the locator's, if any
	}
	locNotStarted := loc != nil && loc.StartError != ""
	if locNotStarted {
		loc = nil
	}
	switch {
	case notStarted && loc == nil:
		fmt.Fprintf(w, "%s  %s on this host (see WARNINGS)\n", title, p.paint(cRed, "not started"))
		return
	case nm == nil && locNotStarted:
		fmt.Fprintf(w, "%s  locator %s on this host (see WARNINGS)\n", title, p.paint(cRed, "not started"))
		return
	case notStarted:
		fmt.Fprintf(w, "%s  epoch %d  active %s (this host's locator)  node manager %s on this host (see WARNINGS)\n", title, loc.Epoch, orNone(loc.Holder), p.paint(cRed, "not started"))
	case nm != nil:
		fmt.Fprintf(w, "%s  epoch %d  active %s  quorum %s\n", title, nm.Epoch, orNone(nm.Active), quorumText(p, st.Quorum))
		token := fmt.Sprintf("token age %dms  rotation %.1fms", nm.TokenAgeMS, nm.RotationMS)
		if nm.TokenLost {
			token += "  " + p.paint(cRed, "LOST")
		}
		if nm.LeaseValid {
			token += fmt.Sprintf("  lease %dms left", nm.LeaseRemainingMS)
			if nm.LeaseMS > 0 {
				token += fmt.Sprintf(" of %dms", nm.LeaseMS)
			}
		}
		fmt.Fprintln(w, token)
		if m := nm.Membership; m != nil {
			// last_man_standing: the locators whose majority counts.
			line := fmt.Sprintf("membership v%d %s", m.Version, strings.Join(m.Members, ","))
			if n := nm.MembershipNext; n != nil {
				line += fmt.Sprintf("  changing to v%d %s", n.Version, strings.Join(n.Members, ","))
			}
			fmt.Fprintln(w, line)
		}
		// The locators answer for an epoch a moment before the node
		// manager reports it: only a lasting difference matters, and only
		// a difference is worth a line.
		if loc != nil && (loc.Epoch != nm.Epoch || loc.Holder != nm.Active) {
			fmt.Fprintf(w, "this host's locator: epoch %d holder %s\n", loc.Epoch, orNone(loc.Holder))
		}
	case loc != nil:
		why := "quorum n/a (no node manager on a witness)"
		if st.Role != "witness" {
			why = "quorum unknown (no report from the node manager yet)"
		}
		fmt.Fprintf(w, "%s  epoch %d  active %s (this host's locator)  %s\n", title, loc.Epoch, orNone(loc.Holder), why)
	default:
		fmt.Fprintf(w, "%s  no report from the node manager or the locator yet\n", title)
		return
	}

	t := table{{c("HOST"), c("ROLE"), c("HEALTH"), c("CHECKED IN"), c("LOCATOR ANSWERED")}}
	// A check-in or answer older than a lease would not have counted
	// for the last renewal: red. Without a node manager (a witness) the
	// lease is not known and ages stay plain.
	lease := int64(0)
	if nm != nil {
		lease = nm.LeaseMS
	}
	ageCell := func(seen bool, ms int64) cell {
		switch {
		case !seen:
			return cc("never", cRed)
		case lease > 0 && ms > lease:
			return cc(agoMS(ms), cRed)
		}
		return c(agoMS(ms))
	}
	// stale: this host's locator has not heard from the node for a lease.
	stale := func(id string) bool {
		if loc == nil || lease <= 0 {
			return false
		}
		for _, n := range loc.Nodes {
			if n.ID == id {
				return !n.Seen || n.AgeMS > lease
			}
		}
		return false
	}
	checkIn := func(id string) cell {
		if loc != nil {
			for _, n := range loc.Nodes {
				if n.ID == id {
					return ageCell(n.Seen, n.AgeMS)
				}
			}
		}
		return c("-")
	}
	answered := func(id string) cell {
		if nm != nil {
			for _, l := range nm.Locators {
				if l.ID == id {
					return ageCell(l.Seen, l.AgeMS)
				}
			}
		}
		return c("-")
	}
	seen := map[string]bool{}
	if nm != nil {
		for _, peer := range nm.Peers {
			seen[peer.ID] = true
			role, rc := "standby", ""
			switch {
			case peer.ID == nm.Self:
				role = nm.Role
			case stale(peer.ID):
				// The token's summary of it (role, health) is as old as
				// its last check-in: say only what is known now.
				role, rc = "unreachable", cRed
			case peer.ID == nm.Active:
				role = "active"
			case !peer.InRing:
				role, rc = "out of ring", cRed
			}
			if role == "active" {
				rc = cGreen
			}
			h, hc := "healthy", ""
			if !peer.Healthy {
				h, hc = "unhealthy", cRed
			}
			if peer.Maintenance {
				h += ", maintenance"
			}
			if role == "unreachable" {
				h, hc = "-", ""
			}
			t = append(t, []cell{c(peer.ID), cc(role, rc), cc(h, hc), checkIn(peer.ID), answered(peer.ID)})
		}
		for _, l := range nm.Locators {
			if !seen[l.ID] {
				t = append(t, []cell{c(l.ID), c("witness"), c("-"), c("-"), answered(l.ID)})
			}
		}
	} else {
		for _, n := range loc.Nodes {
			role, rc := "node", ""
			if n.ID == loc.Holder {
				role, rc = "active", cGreen
			}
			h, hc := "healthy", ""
			if !n.Healthy {
				h, hc = "unhealthy", cRed
			}
			if n.Maintenance {
				h += ", maintenance"
			}
			t = append(t, []cell{c(n.ID), cc(role, rc), cc(h, hc), checkIn(n.ID), c("-")})
		}
	}
	t.render(w, p)
}

// printServices: each service, its holder as this node knows it, the order
// in which nodes take it over, its failback and the processes it needs.
// printServices: every service, its holder and preference; with several,
// also this node's role in each (its own node manager's) and its epoch.
func printServices(w io.Writer, p painter, st *supervisor.Status) {
	svcs := st.Services
	if len(svcs) == 0 {
		return
	}
	several := len(svcs) > 1
	fmt.Fprintln(w)
	head := []cell{c("SERVICE"), c("HOLDER")}
	if several {
		head = append(head, c("HERE"), c("EPOCH"))
	}
	t := table{append(head, c("PREFER"), c("FAILBACK"), c("NEEDS"))}
	for i, s := range svcs {
		hc := cGreen
		if s.Holder == "" {
			hc = cRed
		}
		needs := strings.Join(s.Processes, ", ")
		if needs == "" {
			needs = "-"
		}
		row := []cell{c(s.Name), cc(orNone(s.Holder), hc)}
		if several {
			here, epoch := c("-"), c("-")
			switch r := st.Report(i); {
			case r.NotStarted():
				here = cc("not started", cRed)
			case r != nil:
				here, epoch = c(r.Role), cf("%d", r.Epoch)
				if r.Role == "active" {
					here.colour = cGreen
				}
				if !r.Healthy {
					// Unfit here (its reasons are in the health line): it
					// holds the service only while no fit node can.
					here = cc(r.Role+", unhealthy", cRed)
				}
			case st.Role == "witness":
				here = c("witness")
				if l := st.LocatorReport(i); l != nil {
					epoch = cf("%d", l.Epoch)
				}
			}
			row = append(row, here, epoch)
		}
		t = append(t, append(row, c(strings.Join(s.Prefer, " > ")), c(s.Failback), c(needs)))
	}
	t.render(w, p)
}

func quorumText(p painter, q *supervisor.Quorum) string {
	if q == nil {
		return "unknown"
	}
	detail := fmt.Sprintf(" (%d of %d locators answered, %d needed)", q.Answered, q.Locators, q.Needed)
	if !q.OK {
		return p.paint(cRed, "NO") + detail
	}
	return p.paint(cGreen, "yes") + detail
}

// agoMS is an age in milliseconds as people read it: "19ms ago",
// "4.3s ago", "2m5s ago".
func agoMS(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms ago", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	}
	return d.Round(time.Second).String() + " ago"
}

// hostRoles is this node's role in each service, the services grouped by
// role in the order each role first appears: "active (sip, sip2)",
// "standby (voice), active (data)". A service whose node manager has not
// reported yet counts as "unknown".
func hostRoles(p painter, st *supervisor.Status) string {
	var order []string
	names := map[string][]string{}
	for i, svc := range st.Services {
		role := "unknown"
		if r := st.Report(i); r != nil && r.Role != "" {
			role = r.Role
		}
		if _, ok := names[role]; !ok {
			order = append(order, role)
		}
		names[role] = append(names[role], svc.Name)
	}
	parts := make([]string, 0, len(order))
	for _, role := range order {
		shown := role
		switch role {
		case "active":
			shown = p.paint(cGreen, role)
		case ctlmsg.RoleNotStarted:
			shown = p.paint(cRed, "not started")
		}
		parts = append(parts, shown+" ("+strings.Join(names[role], ", ")+")")
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// printHost: role and addresses, the supervisor, the processes, and the
// cgroups' CPU, throttling, pressure and memory.
func printHost(w io.Writer, p painter, st *supervisor.Status, nm *ctlmsg.NodeManagerReport, win cpuWindow, now time.Time) {
	line := p.paint(cBold, "THIS HOST") + "  " + st.Node
	switch {
	case nm != nil:
		role := nm.Role
		switch role {
		case "active":
			role = p.paint(cGreen, role)
		case ctlmsg.RoleNotStarted:
			role = p.paint(cRed, "not started")
		}
		maint := "off"
		if nm.Maintenance {
			maint = p.paint(cYellow, "on")
		}
		held := slices.Clone(nm.VIPs)
		if len(st.Services) > 1 {
			// Every service's role and addresses on this host, not only
			// the first's: "active (data), standby (voice)" on a node
			// holding one of two would otherwise read as idle.
			role = hostRoles(p, st)
			for i := 1; i < len(st.Services); i++ {
				if r := st.Report(i); r != nil {
					held = append(held, r.VIPs...)
				}
			}
		}
		vips := "none"
		if len(held) > 0 {
			vips = strings.Join(held, ", ")
		}
		if nm.DrainingTo != "" {
			// Make-before-break: kept, silent, until the successor announces.
			vips += fmt.Sprintf(" (handing over to %s, at most %d ms more)", nm.DrainingTo, nm.DrainRemainingMS)
		}
		line += fmt.Sprintf("  role %s  maintenance %s  floating IPs %s", role, maint, vips)
	case st.Role == "witness":
		line += "  role witness"
	default:
		line += "  role unknown (no report from the node manager yet)"
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "supervisor pid %d  up %s  cgroup %s (%s)  rss %s  reloads %d\n",
		st.Supervisor.PID, age(now, st.Supervisor.StartedAt), st.Supervisor.Cgroup, st.Supervisor.CgroupMode,
		bytesText(st.Supervisor.RSSBytes), st.Supervisor.Reloads)

	t := table{{c("PROCESS"), c("STATE"), c("PID"), c("UP"), c("RESTARTS"), c("LAST EXIT"), c("HEALTH")}}
	for _, ps := range append(append([]supervisor.ProcessStatus{}, st.ControlPlane...), st.Processes...) {
		up, pid, last := "-", "-", "-"
		if ps.StartedAt != nil {
			up = age(now, *ps.StartedAt)
		}
		if ps.PID > 0 {
			pid = fmt.Sprint(ps.PID)
		} else if ps.Daemonized {
			pid = "(forked)"
		}
		if ps.LastExit != nil {
			last = fmt.Sprintf("%s after %s", exitText(ps.LastExit), ps.LastExit.Ran)
		}
		state := string(ps.State)
		if ps.NextStart != nil {
			state += " " + ps.NextStart.Sub(now).Round(time.Millisecond).String()
		}
		sc := map[supervisor.State]string{supervisor.StateRunning: cGreen, supervisor.StateBackoff: cYellow,
			supervisor.StateExited: cYellow, supervisor.StateFatal: cRed}[ps.State]
		h := ps.Health
		hc := map[string]string{"healthy": cGreen, "unhealthy": cRed, "starting": cYellow}[h]
		if ps.HealthError != "" {
			h += " (" + ps.HealthError + ")"
		}
		name := ps.Name
		if ps.Critical {
			name += "*"
		}
		t = append(t, []cell{c(name), cc(state, sc), c(pid), c(up), cf("%d", ps.Restarts), c(last), cc(h, hc)})
	}
	t.render(w, p)
	printGroups(w, p, st.Groups, win)
}

// printGroups is the cgroup table. CPU is a rate over the sample window
// (100% = one cpu); throttling and OOM kills are totals since the group
// was created; PSI is "some avg10". A host without per-group PSI (cgroup
// v1) gets one host line instead of a column of equal values.
func printGroups(w io.Writer, p painter, groups []supervisor.GroupStatus, win cpuWindow) {
	if len(groups) == 0 {
		return
	}
	perGroup, rt := false, false
	var host *supervisor.GroupStatus
	for i, g := range groups {
		rt = rt || g.RTBudgetUsec > 0
		switch g.PressureScope {
		case "group":
			perGroup = true
		case "host":
			host = &groups[i]
		}
	}
	head := []cell{c("CGROUP"), c("CPU"), c("THROTTLED")}
	if perGroup {
		head = append(head, c("PSI CPU/MEM/IO"))
	}
	if rt {
		head = append(head, c("RT BUDGET PEAK"))
	}
	t := table{append(head, c("MEMORY"))}
	for _, g := range groups {
		name := g.Group
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			name = "  " + name[i+1:]
		}
		control := g.Group == "control" || strings.HasPrefix(g.Group, "control/")
		if g.Error != "" {
			t = append(t, []cell{c(name), cc("error (see warnings)", cRed)})
			continue
		}
		cpu := "-"
		if pg := prevGroup(win.prev, g.Group); pg != nil && win.d > 0 && g.CPUUsageUsec >= pg.CPUUsageUsec {
			cpu = fmt.Sprintf("%.1f%%", float64(g.CPUUsageUsec-pg.CPUUsageUsec)/float64(win.d.Microseconds())*100)
		}
		thr, tc := "-", ""
		if g.NrThrottled > 0 {
			thr, tc = fmt.Sprintf("%dx %s", g.NrThrottled, (time.Duration(g.ThrottledUsec)*time.Microsecond).Round(time.Millisecond)), cYellow
		}
		mem, mc := bytesText(g.MemoryCurrent), ""
		if g.MemoryMax > 0 {
			mem += " / " + bytesText(g.MemoryMax)
		}
		if g.OOMKills > 0 {
			mem, mc = mem+fmt.Sprintf("  %d OOM kills", g.OOMKills), cRed
		}
		row := []cell{c(name), c(cpu), cc(thr, tc)}
		if perGroup {
			row = append(row, psiCell(g, control))
		}
		if rt {
			row = append(row, rtCell(g))
		}
		t = append(t, append(row, cc(mem, mc)))
	}
	t.render(w, p)
	if !perGroup && host != nil {
		var parts []string
		for _, x := range []struct {
			name string
			v    *float64
		}{{"cpu", host.CPUPressure}, {"memory", host.MemPressure}, {"io", host.IOPressure}} {
			if x.v != nil {
				col := ""
				if *x.v > supervisor.PressureWarnPct {
					col = cYellow
				}
				parts = append(parts, x.name+" "+p.paint(col, fmt.Sprintf("%.1f%%", *x.v)))
			}
		}
		fmt.Fprintf(w, "host PSI some avg10 (no per-group PSI here, so no pressure warning): %s\n", strings.Join(parts, "  "))
	}
}

// rtCell is the most of its realtime budget a group used on one CPU in a
// second of the last ten, and the budget; yellow from the warning share,
// red near the budget, where the kernel stops the group.
func rtCell(g supervisor.GroupStatus) cell {
	if g.RTBudgetUsec <= 0 {
		return c("-")
	}
	budget := (time.Duration(g.RTBudgetUsec) * time.Microsecond).String()
	if g.RTPeakShare == nil {
		return c("- of " + budget)
	}
	col := ""
	switch {
	case *g.RTPeakShare >= 0.9:
		col = cRed
	case *g.RTPeakShare >= supervisor.RTBudgetWarnShare:
		col = cYellow
	}
	return cc(fmt.Sprintf("%.0f%% of %s", *g.RTPeakShare*100, budget), col)
}

// psiCell is a group's own "some avg10" of cpu, memory and io; red when
// a control group's is over the warning threshold.
func psiCell(g supervisor.GroupStatus, control bool) cell {
	if g.PressureScope != "group" {
		return c("-")
	}
	var vals []string
	over := false
	for _, v := range []*float64{g.CPUPressure, g.MemPressure, g.IOPressure} {
		if v == nil {
			vals = append(vals, "-")
			continue
		}
		vals = append(vals, fmt.Sprintf("%.1f", *v))
		over = over || *v > supervisor.PressureWarnPct
	}
	if over && control {
		return cc(strings.Join(vals, "/"), cRed)
	}
	return c(strings.Join(vals, "/"))
}

func prevGroup(prev *supervisor.Status, name string) *supervisor.GroupStatus {
	if prev == nil {
		return nil
	}
	for i := range prev.Groups {
		if prev.Groups[i].Group == name && prev.Groups[i].Error == "" {
			return &prev.Groups[i]
		}
	}
	return nil
}

func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
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
