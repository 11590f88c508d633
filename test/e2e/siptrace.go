package e2e

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The client writes one line per SIP message (SIPp's -trace_shortmsg):
// the calls it counted failed, which the capture on its link then follows
// to the node each message went to (sipcapture.go).
const uacTraceName = "uac_messages.log"

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
// date, time, Unix time, S|R, Call-ID, "CSeq:N METHOD", start line.
func readShortTrace(path string) (map[string][]sipMsg, error) {
	calls := map[string][]sipMsg{}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("e2e: sip trace: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) < 7 {
			continue // a line cut short
		}
		calls[fs[4]] = append(calls[fs[4]], sipMsg{sent: fs[3] == "S", cseq: strings.TrimPrefix(fs[5], "CSeq:"), line: fs[6]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("e2e: sip trace %s: %w", path, err)
	}
	return calls, nil
}

// LostCall is one call the client counted as failed, followed through the
// traces of the client and of each node's SIP server.
type LostCall struct {
	CallID string
	// Nodes are the nodes the client sent a request of the call to, in
	// the order it first did.
	Nodes []string
	// Story is the call on the client's link: each request with the node
	// it was sent to, each response with the node it came from,
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
	slices.Sort(ids)
	return ids
}

// explainLost follows every failed call of the client's trace uacPath
// through the capture on the client's link: the node each request was
// sent to and each response came from.
func explainLost(uacPath string, captured map[string][]capturedMsg) ([]LostCall, error) {
	uac, err := readShortTrace(uacPath)
	if err != nil {
		return nil, err
	}
	var lost []LostCall
	for _, cid := range failedCallIDs(uac) {
		l := LostCall{CallID: cid}
		var story []string
		for _, m := range captured[cid] {
			f := strings.Fields(m.line)
			if len(f) < 2 {
				continue
			}
			if m.out {
				story = append(story, f[0]+"→"+m.peer)
				if !slices.Contains(l.Nodes, m.peer) {
					l.Nodes = append(l.Nodes, m.peer)
				}
			} else {
				story = append(story, f[1]+"←"+m.peer)
			}
		}
		if len(story) == 0 {
			story = append(story, "not captured")
		}
		l.Story = strings.Join(story, " ")
		lost = append(lost, l)
	}
	return lost, nil
}
