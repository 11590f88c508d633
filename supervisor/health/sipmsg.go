package health

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// This file holds the little SIP (RFC 3261) that an OPTIONS health check
// needs: parsing the target URI, building the request, and a strict parser for
// the response. It does no I/O.

// errSIPParse is returned for any datagram that is not a well-formed SIP response.
var errSIPParse = errors.New("sip: malformed response")

// sipTarget is a parsed sip: URI.
type sipTarget struct {
	uri  string // Request-URI and To URI: "sip:" + host[:port], as configured
	host string // without brackets
	port int
}

// addr is the host:port to send the request to.
func (t sipTarget) addr() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// parseSIPTarget accepts sip:host[:port] with an optional user part and URI
// parameters (sip:ping@[2001:db8::1]:5070;transport=udp). sips: is refused:
// the check speaks plain UDP only.
func parseSIPTarget(s string) (sipTarget, error) {
	bad := func(why string) (sipTarget, error) {
		return sipTarget{}, fmt.Errorf("%w: sip_options target %q: %s", ErrConfig, s, why)
	}
	if len(s) < 4 || !strings.EqualFold(s[:4], "sip:") {
		return bad("want sip:host[:port]")
	}
	rest := s[4:]
	if i := strings.IndexAny(rest, ";?"); i >= 0 {
		params := rest[i:]
		rest = rest[:i]
		if j := strings.IndexByte(params, '?'); j >= 0 {
			params = params[:j]
		}
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(p, "=")
			if strings.EqualFold(k, "transport") && !strings.EqualFold(v, "udp") {
				return bad("only UDP transport is supported")
			}
		}
	}
	user := ""
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		user, rest = rest[:i], rest[i+1:]
		if user == "" {
			return bad("empty user part")
		}
	}
	hostport := rest
	var host, portStr string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return bad("unterminated IPv6 reference")
		}
		host = rest[1:end]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return bad("bad IPv6 address")
		}
		rest = rest[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return bad("junk after IPv6 reference")
			}
			portStr = rest[1:]
			if portStr == "" {
				return bad("empty port")
			}
		}
	} else {
		host = rest
		if i := strings.IndexByte(rest, ':'); i >= 0 {
			host, portStr = rest[:i], rest[i+1:]
			if portStr == "" {
				return bad("empty port")
			}
		}
		if host == "" {
			return bad("empty host")
		}
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
			return bad("IPv6 address must be in brackets")
		}
		for _, r := range host {
			if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return bad("bad host name")
			}
		}
	}
	port := 5060
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return bad("bad port")
		}
		port = p
	}
	uri := "sip:" + hostport
	if user != "" {
		uri = "sip:" + user + "@" + hostport
	}
	return sipTarget{uri: uri, host: host, port: port}, nil
}

// sipRequest holds what identifies one OPTIONS transaction.
type sipRequest struct {
	target  sipTarget
	local   string // local ip:port as the Via sent-by (IPv6 bracketed)
	branch  string // full branch, "z9hG4bK" + random
	callID  string
	fromTag string
	cseq    uint32
}

// build renders the request. Header order follows RFC 3261's examples; every
// line ends in CRLF.
func (r *sipRequest) build() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "OPTIONS %s SIP/2.0\r\n", r.target.uri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", r.local, r.branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:vigil@%s>;tag=%s\r\n", r.local, r.fromTag)
	fmt.Fprintf(&b, "To: <%s>\r\n", r.target.uri)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", r.callID)
	fmt.Fprintf(&b, "CSeq: %d OPTIONS\r\n", r.cseq)
	fmt.Fprintf(&b, "Contact: <sip:vigil@%s>\r\n", r.local)
	b.WriteString("Accept: application/sdp\r\n")
	b.WriteString("User-Agent: vigil\r\n")
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// matches reports whether resp answers this request (RFC 3261 17.1.3: top
// Via branch and CSeq method; Call-ID and CSeq number checked as well, since
// a health check has no reason to accept anything looser).
func (r *sipRequest) matches(resp *sipResponse) bool {
	return resp.branch == r.branch && resp.callID == r.callID &&
		resp.cseq == r.cseq && resp.cseqMethod == "OPTIONS"
}

// sipResponse is the part of a response a health check looks at.
type sipResponse struct {
	code       int
	reason     string
	callID     string
	cseq       uint32
	cseqMethod string
	branch     string // branch parameter of the topmost Via
	headers    map[string][]string
}

// fullHeaderName maps RFC 3261 (7.3.3) and later compact header names to
// the full, lower-case ones.
func fullHeaderName(name string) string {
	switch name {
	case "i":
		return "call-id"
	case "v":
		return "via"
	case "f":
		return "from"
	case "t":
		return "to"
	case "m":
		return "contact"
	case "l":
		return "content-length"
	case "c":
		return "content-type"
	case "e":
		return "content-encoding"
	case "k":
		return "supported"
	case "s":
		return "subject"
	case "o":
		return "event"
	case "u":
		return "allow-events"
	case "r":
		return "refer-to"
	case "b":
		return "referred-by"
	case "x":
		return "session-expires"
	}
	return name
}

// parseSIPResponse parses one datagram as a SIP response. The status line is
// checked strictly (SIP/2.0 SP 3DIGIT SP reason); header names are
// case-insensitive and may be compact; folded lines (leading SP/HTAB) are
// joined; lines may end in CRLF or a bare LF. Call-ID, CSeq and a Via with a
// branch are required, and a Content-Length larger than the body marks a
// truncated datagram, which is rejected (RFC 3261 18.3).
func parseSIPResponse(data []byte) (*sipResponse, error) {
	msg := string(data)
	// Senders may prefix keep-alive CRLFs (RFC 5626); skip them.
	msg = strings.TrimLeft(msg, "\r\n")
	head, body, found := cutHeaders(msg)
	if !found {
		return nil, fmt.Errorf("%w: no end of headers", errSIPParse)
	}
	lines := strings.Split(head, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	resp := &sipResponse{headers: map[string][]string{}}
	if err := parseStatusLine(lines[0], resp); err != nil {
		return nil, err
	}
	// Unfold: a line starting with SP or HTAB continues the previous one.
	var fields []string
	for _, l := range lines[1:] {
		if l == "" {
			return nil, fmt.Errorf("%w: empty header line", errSIPParse)
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(fields) == 0 {
				return nil, fmt.Errorf("%w: continuation before any header", errSIPParse)
			}
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("%w: header without colon", errSIPParse)
		}
		name = strings.ToLower(strings.TrimRight(name, " \t"))
		if name == "" || !isToken(name) {
			return nil, fmt.Errorf("%w: bad header name", errSIPParse)
		}
		name = fullHeaderName(name)
		value = strings.Trim(value, " \t")
		if strings.ContainsAny(value, "\r\x00") {
			return nil, fmt.Errorf("%w: control character in %s", errSIPParse, name)
		}
		resp.headers[name] = append(resp.headers[name], value)
	}

	ids := resp.headers["call-id"]
	if len(ids) != 1 || ids[0] == "" {
		return nil, fmt.Errorf("%w: want exactly one Call-ID", errSIPParse)
	}
	resp.callID = ids[0]

	cseqs := resp.headers["cseq"]
	if len(cseqs) != 1 {
		return nil, fmt.Errorf("%w: want exactly one CSeq", errSIPParse)
	}
	num, method, ok := strings.Cut(cseqs[0], " ")
	method = strings.Trim(method, " \t")
	n, err := strconv.ParseUint(num, 10, 32)
	if !ok || err != nil || method == "" || !isToken(method) {
		return nil, fmt.Errorf("%w: bad CSeq %q", errSIPParse, cseqs[0])
	}
	resp.cseq, resp.cseqMethod = uint32(n), method

	vias := resp.headers["via"]
	if len(vias) == 0 {
		return nil, fmt.Errorf("%w: no Via", errSIPParse)
	}
	branch, err := topViaBranch(vias[0])
	if err != nil {
		return nil, err
	}
	resp.branch = branch

	if cl := resp.headers["content-length"]; len(cl) > 0 {
		n, err := strconv.Atoi(cl[0])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: bad Content-Length", errSIPParse)
		}
		if n > len(body) {
			return nil, fmt.Errorf("%w: truncated body", errSIPParse)
		}
	}
	return resp, nil
}

// cutHeaders splits at the first empty line, CRLF or bare LF.
func cutHeaders(msg string) (head, body string, found bool) {
	i := strings.Index(msg, "\n\r\n")
	j := strings.Index(msg, "\n\n")
	switch {
	case i >= 0 && (j < 0 || i < j):
		return strings.TrimSuffix(msg[:i], "\r"), msg[i+3:], true
	case j >= 0:
		return strings.TrimSuffix(msg[:j], "\r"), msg[j+2:], true
	}
	return "", "", false
}

func parseStatusLine(line string, resp *sipResponse) error {
	const version = "SIP/2.0 "
	if len(line) < len(version)+4 || !strings.EqualFold(line[:len(version)], version) {
		return fmt.Errorf("%w: bad status line", errSIPParse)
	}
	rest := line[len(version):]
	code := rest[:3]
	for _, c := range []byte(code) {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: bad status code", errSIPParse)
		}
	}
	n, _ := strconv.Atoi(code)
	if n < 100 || n > 699 || rest[3] != ' ' {
		return fmt.Errorf("%w: bad status code", errSIPParse)
	}
	reason := rest[4:]
	for _, c := range []byte(reason) {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: control character in reason phrase", errSIPParse)
		}
	}
	resp.code, resp.reason = n, reason
	return nil
}

// topViaBranch returns the branch parameter of the first via-parm in value
// (a Via header may carry several, comma-separated).
func topViaBranch(value string) (string, error) {
	if i := strings.IndexByte(value, ','); i >= 0 {
		value = value[:i]
	}
	head, params, _ := strings.Cut(value, ";")
	// RFC 3261 allows LWS around the slashes of sent-protocol.
	head = strings.Join(strings.Fields(head), " ")
	head = strings.ReplaceAll(strings.ReplaceAll(head, " /", "/"), "/ ", "/")
	proto, sentBy, ok := strings.Cut(head, " ")
	if !ok || sentBy == "" || len(proto) <= len("SIP/2.0/") ||
		!strings.EqualFold(proto[:len("SIP/2.0/")], "SIP/2.0/") {
		return "", fmt.Errorf("%w: bad Via", errSIPParse)
	}
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "branch") {
			if v = strings.TrimSpace(v); v != "" {
				return v, nil
			}
			break
		}
	}
	return "", fmt.Errorf("%w: Via without branch", errSIPParse)
}

// isToken reports whether s is an RFC 3261 token.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// netipAddrPortUnmap turns ::ffff:a.b.c.d into a.b.c.d so an IPv4 Via never
// shows a mapped address.
func netipAddrPortUnmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
