package e2e

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed testdata/uas.xml
var uasScenario []byte

// WriteUAS writes the SIP server's scenario into dir and returns the shell
// command line that runs the server bound to the floating IP. While the
// file failFlag exists, the server refuses to start (exit 1): the appfail
// scenario's "made to fail its restarts".
func WriteUAS(dir, failFlag string) (string, error) {
	return writeUASOn(dir, "uas", failFlag, VIP)
}

// writeUASOn is WriteUAS for the server called name, bound to vip.
func writeUASOn(dir, name, failFlag, vip string) (string, error) {
	sf := filepath.Join(dir, "uas.xml")
	if err := os.WriteFile(sf, uasScenario, 0o644); err != nil {
		return "", fmt.Errorf("e2e: write uas scenario: %w", err)
	}
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		return "", fmt.Errorf("e2e: sipp not found (Debian package sip-tester): %w", err)
	}
	// SIPp repaints its screen on stdout every second: keep it out of logs.
	return fmt.Sprintf(`if [ -e %[1]s ]; then echo "sip server: %[1]s exists, failing on purpose" >&2; exit 1; fi; exec %[2]s -sf %[3]s -i %[4]s -p %[5]d -nostdin -trace_err -error_file %[6]s >/dev/null`,
		failFlag, sipp, sf, vip, SIPPort, filepath.Join(dir, name+"_errors.log")), nil
}

// Calls is SIPp's account of the calls the client placed.
type Calls struct {
	Placed     int // calls started
	Successful int
	Failed     int
	// Retransmissions is SIPp's count of retransmitted messages: each is a
	// message that went unanswered for at least T1 (500 ms).
	Retransmissions int
	// RetransCalls counts calls whose INVITE was answered only after at
	// least T1 (500 ms), so had to be retransmitted (SIPp's response-time
	// trace of each call).
	RetransCalls int
	Unfinished   int // placed, neither successful nor failed when SIPp ended
}

// CallLoad is SIPp placing calls from the client to the floating IP.
type CallLoad struct {
	cmd  *exec.Cmd
	dir  string
	out  bytes.Buffer
	done chan error
}

// StartCalls places n calls at rate calls/s from host c to VIP:5060
// (INVITE, 100, 200, ACK, BYE, 200). A call unanswered for recvTimeout
// fails.
func (n *Net) StartCalls(t TB, rate, calls int, recvTimeout time.Duration) *CallLoad {
	t.Helper()
	return n.StartCallsTo(t, VIP, SIPPort, rate, calls, recvTimeout)
}

// StartCallsTo is StartCalls to vip:5060, from the client's port
// localPort (each call load needs its own).
func (n *Net) StartCallsTo(t TB, vip string, localPort, rate, calls int, recvTimeout time.Duration) *CallLoad {
	t.Helper()
	dir := tempDir(t, "vigil-e2e-uac-")
	c := &CallLoad{dir: dir, done: make(chan error, 1)}
	c.cmd = n.Command("c", "sipp", "-sn", "uac", "-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls),
		"-i", "192.0.2.50", "-p", strconv.Itoa(localPort),
		"-recv_timeout", strconv.Itoa(int(recvTimeout/time.Millisecond)),
		"-nostdin", "-trace_stat", "-stf", filepath.Join(dir, "stat.csv"), "-fd", "1",
		"-trace_rtt", "-rtt_freq", "1",
		"-trace_shortmsg", "-shortmessage_file", filepath.Join(dir, uacTraceName),
		fmt.Sprintf("%s:%d", vip, SIPPort))
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("e2e: start sipp uac: %v", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(c.Stop)
	return c
}

// Trace is the client's message trace.
func (c *CallLoad) Trace() string { return filepath.Join(c.dir, uacTraceName) }

// Stop kills SIPp if it still runs and reaps it. A run that ends before
// Wait (a fault not applicable to the system, or not injected) must call
// it: SIPp would otherwise go on placing calls from 192.0.2.50:5060, and
// the next run's SIPp, unable to bind that port, would exit at once.
func (c *CallLoad) Stop() {
	select {
	case err := <-c.done:
		c.done <- err
	default:
		_ = c.cmd.Process.Kill()
		c.done <- <-c.done
	}
}

// Wait waits for SIPp to finish its calls and reads its final counters.
func (c *CallLoad) Wait(timeout time.Duration) (Calls, error) {
	var werr error
	select {
	case werr = <-c.done:
		c.done <- werr // for Stop
	case <-time.After(timeout):
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		err := <-c.done
		c.done <- err
		return Calls{}, fmt.Errorf("e2e: sipp uac still running after %v: %s", timeout, tail(c.out.String(), 800))
	}
	// SIPp exits 0 when every call succeeded and 1 when some failed (the
	// counters say which). Anything else is a fatal error (254: it could
	// not bind its socket) after which its files describe no calls.
	if code := c.cmd.ProcessState.ExitCode(); code != 0 && code != 1 {
		return Calls{}, fmt.Errorf("e2e: sipp uac: %v: %s", werr, sippErrors(c.out.String()))
	}
	calls, answered, err := readStat(filepath.Join(c.dir, "stat.csv"))
	if err != nil {
		return calls, err
	}
	calls.RetransCalls, err = readRTT(c.dir, answered)
	return calls, err
}

// sippErrors is what SIPp printed before its first screen (its error
// messages, each printed more than once), or the tail of its output.
func sippErrors(out string) string {
	head, _, found := strings.Cut(out, "\n------------------------------")
	if !found {
		return tail(out, 800)
	}
	var lines []string
	for _, l := range strings.Split(head, "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(lines, l) {
			lines = append(lines, l)
		}
	}
	return tail(strings.Join(lines, "; "), 800)
}

// sipT1 is SIP's first retransmission interval (RFC 3261).
const sipT1 = 500 * time.Millisecond

// readRTT counts the calls in SIPp's -trace_rtt file (one line per call:
// date_ms;response_time_ms;rtd_no) answered after T1 or later. answered is
// how many INVITEs SIPp's statistics say were answered: the trace must
// hold as many lines. SIPp creates the file at the first answer, so
// without any there is none, and no call was answered late.
func readRTT(dir string, answered int) (int, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*_rtt.csv"))
	if len(files) == 0 && answered == 0 {
		return 0, nil
	}
	if len(files) != 1 {
		return 0, fmt.Errorf("e2e: sipp response-time trace: %d files in %s, %d answers in its statistics", len(files), dir, answered)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return 0, fmt.Errorf("e2e: sipp response-time trace: %w", err)
	}
	n, lines := 0, 0
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Split(l, ";")
		if len(f) < 2 {
			continue
		}
		rt, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		lines++
		if time.Duration(rt*float64(time.Millisecond)) >= sipT1 {
			n++
		}
	}
	if lines != answered {
		return 0, fmt.Errorf("e2e: sipp response-time trace %s: %d answers, its statistics %d", files[0], lines, answered)
	}
	return n, nil
}

// readStat reads the cumulative counters from the last line of SIPp's
// -trace_stat file, and how many INVITEs were answered (the sum of the
// response-time repartition, which counts every answer).
func readStat(path string) (c Calls, answered int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return c, 0, fmt.Errorf("e2e: sipp statistics: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return c, 0, fmt.Errorf("e2e: sipp statistics %s: no data line", path)
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	get := func(name string) (int, error) {
		for i, h := range head {
			if h == name && i < len(last) {
				return strconv.Atoi(strings.TrimSpace(last[i]))
			}
		}
		return 0, fmt.Errorf("e2e: sipp statistics: no column %s", name)
	}
	for _, f := range []struct {
		col string
		dst *int
	}{
		{"TotalCallCreated", &c.Placed},
		{"SuccessfulCall(C)", &c.Successful},
		{"FailedCall(C)", &c.Failed},
		{"Retransmissions(C)", &c.Retransmissions},
	} {
		v, err := get(f.col)
		if err != nil {
			return c, 0, err
		}
		*f.dst = v
	}
	c.Unfinished = c.Placed - c.Successful - c.Failed
	buckets := 0
	for _, h := range head {
		if strings.HasPrefix(h, "ResponseTimeRepartition1_") {
			v, err := get(h)
			if err != nil {
				return c, 0, fmt.Errorf("e2e: sipp statistics: %s: %w", h, err)
			}
			answered += v
			buckets++
		}
	}
	if buckets == 0 {
		return c, 0, fmt.Errorf("e2e: sipp statistics %s: no response-time repartition", path)
	}
	return c, answered, nil
}

// OutageProbe sends a SIP OPTIONS from the client to the floating IP every
// interval and records which were answered: the outage a caller sees is the
// longest run of unanswered probes.
type OutageProbe struct {
	conn     *net.UDPConn
	interval time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	sent     []time.Time // by sequence number
	answered map[int]time.Time
}

// ProbeSIP starts an OutageProbe from host c.
func (n *Net) ProbeSIP(t TB, interval time.Duration) *OutageProbe {
	t.Helper()
	var conn *net.UDPConn
	err := n.Hosts["c"].Run(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 50), Port: SIPPort + 1})
		return err
	})
	if err != nil {
		t.Fatalf("e2e: outage probe socket: %v", err)
	}
	p := &OutageProbe{conn: conn, interval: interval, stop: make(chan struct{}), answered: map[int]time.Time{}}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	return p
}

func (p *OutageProbe) send() {
	defer p.wg.Done()
	dst := &net.UDPAddr{IP: net.ParseIP(VIP), Port: SIPPort}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		msg := fmt.Sprintf("OPTIONS sip:probe@%s:%d SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP 192.0.2.50:%d;branch=z9hG4bKprobe%d\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:probe@192.0.2.50>;tag=probe\r\nTo: <sip:probe@%s>\r\n"+
			"Call-ID: probe-%d@vigil-e2e\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n",
			VIP, SIPPort, SIPPort+1, seq, VIP, seq, seq+1)
		p.mu.Lock()
		p.sent = append(p.sent, time.Now())
		p.mu.Unlock()
		_, _ = p.conn.WriteToUDP([]byte(msg), dst)
	}
}

func (p *OutageProbe) receive() {
	defer p.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed by Stop
		}
		now := time.Now()
		sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
		for sc.Scan() {
			l := sc.Text()
			if rest, ok := strings.CutPrefix(l, "Call-ID: probe-"); ok {
				if i := strings.IndexByte(rest, '@'); i > 0 {
					if seq, err := strconv.Atoi(rest[:i]); err == nil {
						p.mu.Lock()
						if _, dup := p.answered[seq]; !dup {
							p.answered[seq] = now
						}
						p.mu.Unlock()
					}
				}
				break
			}
		}
	}
}

// Outage is what the OPTIONS prober saw.
type Outage struct {
	Sent, Answered int
	// Longest is the longest run of unanswered probes: from sending the
	// first unanswered one to sending the next answered one. Two answered
	// probes in a row count no outage however far apart they were sent,
	// so a stall of the prober itself is not taken for one of the service.
	Longest time.Duration
	// LongestStart is when that gap began.
	LongestStart time.Time
	// Unanswered counts probes without an answer (after the first answer).
	Unanswered int
}

// Stop ends the probe, waiting grace for late answers, and measures.
func (p *OutageProbe) Stop(grace time.Duration) Outage {
	close(p.stop)
	time.Sleep(grace)
	p.conn.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	o := Outage{Sent: len(p.sent), Answered: len(p.answered)}
	seqs := make([]int, 0, len(p.answered))
	for s := range p.answered {
		seqs = append(seqs, s)
	}
	sort.Ints(seqs)
	for i := 1; i < len(seqs); i++ {
		lost := seqs[i] - seqs[i-1] - 1
		if lost == 0 {
			continue
		}
		o.Unanswered += lost
		first := p.sent[seqs[i-1]+1]
		if gap := p.sent[seqs[i]].Sub(first); gap > o.Longest {
			o.Longest = gap
			o.LongestStart = first
		}
	}
	if len(seqs) > 0 && seqs[len(seqs)-1] < len(p.sent)-1 {
		// Unanswered to the end: the outage lasted at least until then.
		first := p.sent[seqs[len(seqs)-1]+1]
		o.Unanswered += len(p.sent) - 1 - seqs[len(seqs)-1]
		if gap := p.sent[len(p.sent)-1].Sub(first) + p.interval; gap > o.Longest {
			o.Longest = gap
			o.LongestStart = first
		}
	}
	return o
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
