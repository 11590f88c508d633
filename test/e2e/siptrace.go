package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The SIP servers and the client write one line per SIP message (SIPp's
// -trace_shortmsg): a failed call can then be followed message by message,
// to the node each of its requests reached.
const (
	uasTraceName = "uas_messages.log"
	uacTraceName = "uac_messages.log"
)

// UASTrace is the message trace of the SIP server WriteUAS(dir, …) runs.
func UASTrace(dir string) string { return filepath.Join(dir, uasTraceName) }

// sipMsg is one line of a SIPp short-message trace.
type sipMsg struct {
	sent bool
	cseq string // "1 INVITE"
	line string // the start line: "INVITE sip:…" or "SIP/2.0 200 OK"
}

func (m sipMsg) request() bool { return !strings.HasPrefix(m.line, "SIP/") }

// method is the request's method, or the response's CSeq method.
func (m sipMsg) method() string {
	_, meth, _ := strings.Cut(m.cseq, " ")
	return meth
}

// final reports whether m is a final response (2xx–6xx).
func (m sipMsg) final() bool {
	f := strings.Fields(m.line)
	if m.request() || len(f) < 2 {
		return false
	}
	code, err := strconv.Atoi(f[1])
	return err == nil && code >= 200
}

// readShortTrace reads a SIPp short-message trace by Call-ID: tab-separated
// date, time, Unix time, S|R, Call-ID, "CSeq:N METHOD", start line. The
// server's trace is rotated at 32 MiB (path_<suffix>): the rotated file is
// read first. A missing file is an empty trace (no server ran there).
func readShortTrace(path string) (map[string][]sipMsg, error) {
	files, err := filepath.Glob(path + "*")
	if err != nil {
		return nil, fmt.Errorf("e2e: sip trace: %w", err)
	}
	// The current file is the newest: read the rotated one first.
	sort.Slice(files, func(i, j int) bool { return files[i] != path && files[j] == path })
	calls := map[string][]sipMsg{}
	for _, p := range files {
		if err := readShortTraceFile(p, calls); err != nil {
			return nil, err
		}
	}
	return calls, nil
}

func readShortTraceFile(path string, calls map[string][]sipMsg) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2e: sip trace: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) < 7 {
			continue // a line cut by the server's end
		}
		calls[fs[4]] = append(calls[fs[4]], sipMsg{sent: fs[3] == "S", cseq: strings.TrimPrefix(fs[5], "CSeq:"), line: fs[6]})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("e2e: sip trace %s: %w", path, err)
	}
	return nil
}

// LostCall is one call the client counted as failed, followed through the
// traces of the client and of each node's SIP server.
type LostCall struct {
	CallID string
	// Nodes are the nodes whose SIP server received a request of the call,
	// in the order they first did.
	Nodes []string
	// Story is the call as the client sent it: each request with the
	// nodes that received it, each response with the node that sent it,
	// "INVITE→a 100←a 200←a ACK→b BYE→b BYE→b …".
	Story string
}

// Straddled reports whether the call's dialog straddled the move: its
// requests reached more than one node, so no one SIP server saw it whole.
func (l LostCall) Straddled() bool { return len(l.Nodes) > 1 }

// failedCallIDs are the calls in the client's trace with a request (not
// an ACK) that never got a final response: the ones SIPp counts failed.
func failedCallIDs(uac map[string][]sipMsg) []string {
	var ids []string
	for id, msgs := range uac {
		if strings.HasPrefix(id, "probe") {
			continue
		}
		pending := map[string]bool{}
		for _, m := range msgs {
			switch {
			case m.sent && m.request() && m.method() != "ACK":
				pending[m.cseq] = true
			case !m.sent && m.final():
				delete(pending, m.cseq)
			}
		}
		if len(pending) > 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// explainLost follows every failed call of the client's trace uacPath
// through the SIP servers' traces (node → trace file): each message the
// client sent is matched, in order, with the same message received by a
// node's server, each one it received with the same message sent.
func explainLost(uacPath string, servers map[string]string) ([]LostCall, error) {
	uac, err := readShortTrace(uacPath)
	if err != nil {
		return nil, err
	}
	nodes := make([]string, 0, len(servers))
	byNode := map[string]map[string][]sipMsg{}
	for id, p := range servers {
		tr, err := readShortTrace(p)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, id)
		byNode[id] = tr
	}
	sort.Strings(nodes)
	var lost []LostCall
	for _, cid := range failedCallIDs(uac) {
		l := LostCall{CallID: cid}
		// What each node's server received and sent of the call, matched
		// one for one in order.
		used := map[string]int{}
		var story []string
		for _, m := range uac[cid] {
			want := !m.sent // the client sent it: the server received it
			var got []string
			for _, n := range nodes {
				msgs := byNode[n][cid]
				for i := used[n+"\x00"+m.cseq+m.line]; i < len(msgs); i++ {
					s := msgs[i]
					if s.sent == want && s.cseq == m.cseq && s.line == m.line {
						used[n+"\x00"+m.cseq+m.line] = i + 1
						got = append(got, n)
						break
					}
				}
			}
			name := strings.Fields(m.line)[0]
			arrow := "→"
			if !m.request() {
				name, arrow = strings.Fields(m.line)[1], "←"
			}
			where := strings.Join(got, "+")
			if where == "" {
				where = "none"
			}
			story = append(story, name+arrow+where)
			if m.sent {
				for _, n := range got {
					if !slices.Contains(l.Nodes, n) {
						l.Nodes = append(l.Nodes, n)
					}
				}
			}
		}
		l.Story = strings.Join(story, " ")
		lost = append(lost, l)
	}
	return lost, nil
}
