package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/testtool"
	"github.com/vigil-project/vigil/supervisor"
)

// Every command answers -h and --help on stdout with exit 0, naming its
// positional arguments and every flag its FlagSet defines; `vigil help
// CMD` is the same.
func TestHelpEveryCommand(t *testing.T) {
	for _, c := range commands() {
		if hidden(c) {
			continue
		}
		fs := commandFlags(c)
		if fs == nil {
			t.Errorf("%s: does not use newFlags, so -h cannot list its flags", c.name)
			continue
		}
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {c.name, "-help"}, {"help", c.name}} {
			var out, errb bytes.Buffer
			code := dispatch(args, &out, &errb)
			help := out.String()
			if code != exitOK || errb.Len() != 0 {
				t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
			}
			if !strings.HasPrefix(help, "usage: vigil "+c.name) {
				t.Errorf("%v: help does not start with its usage:\n%s", args, help)
			}
			if a := docOf(c.name).args; a != "" && !strings.Contains(strings.SplitN(help, "\n", 2)[0], " "+a) {
				t.Errorf("%v: usage line lacks the arguments %q:\n%s", args, a, help)
			}
			for _, o := range options(fs) {
				if !strings.Contains(help, o.spelling()) {
					t.Errorf("%v: help lacks flag %q:\n%s", args, o.spelling(), help)
				}
			}
		}
	}
	// The arguments the issue names, spelled out.
	for name, want := range map[string]string{"maintenance": "usage: vigil maintenance [flags] on|off", "keygen": "usage: vigil keygen [FILE]",
		"restart": "usage: vigil restart [flags] NAME", "completion": "usage: vigil completion bash|zsh"} {
		var out bytes.Buffer
		if dispatch([]string{name, "-h"}, &out, &out); !strings.HasPrefix(out.String(), want+"\n") {
			t.Errorf("vigil %s -h:\n%s\nwant first line %q", name, out.String(), want)
		}
	}
	// A command's help is printed even after other arguments, and flag
	// errors still exit 2 with the help on stderr.
	var out, errb bytes.Buffer
	if code := dispatch([]string{"maintenance", "on", "--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "on|off") {
		t.Errorf("maintenance on --help: exit %d\n%s", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := dispatch([]string{"status", "--bogus"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "usage: vigil status") || out.Len() != 0 {
		t.Errorf("status --bogus: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

func TestVersionFlag(t *testing.T) {
	var want bytes.Buffer
	if code := dispatch([]string{"version"}, &want, &want); code != exitOK || !strings.HasPrefix(want.String(), "vigil ") {
		t.Fatalf("version: exit %d %q", code, want.String())
	}
	for _, f := range []string{"--version", "-version", "-v"} {
		var out, errb bytes.Buffer
		if code := dispatch([]string{f}, &out, &errb); code != exitOK || out.String() != want.String() || errb.Len() != 0 {
			t.Errorf("vigil %s: exit %d, %q, stderr %q; want %q", f, code, out.String(), errb.String(), want.String())
		}
	}
}

// fakeDaemon answers the control socket's status request with whatever
// status() returns, speaking the daemon's protocol (one JSON request, one
// JSON response per connection) on a real unix socket.
func fakeDaemon(t *testing.T, status func() *supervisor.Status) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var req supervisor.Request
			if json.NewDecoder(c).Decode(&req) == nil {
				resp := supervisor.Response{Error: "unknown command"}
				if req.Cmd == "status" {
					resp = supervisor.Response{OK: true, Status: status()}
				}
				_ = json.NewEncoder(c).Encode(resp)
			}
			c.Close()
		}
	}()
	return sock
}

// healthyStatus is goldenStatus made healthy: every process running, the
// node healthy, a quorum, node a active.
func healthyStatus() *supervisor.Status {
	st, _ := goldenStatus()
	st.Healthy, st.Unhealthy = true, nil
	st.Processes = st.Processes[:1]
	nm := *st.NodeManager
	nm.Healthy, nm.UnhealthyReasons = true, nil
	st.NodeManager = &nm
	return st
}

// `vigil status` tells the node's state by its exit status, for the human
// and the JSON form alike.
func TestStatusExitCodes(t *testing.T) {
	nmWith := func(active string, locators string) *ctlmsg.NodeManagerReport {
		return fromJSON[ctlmsg.NodeManagerReport](`{"self":"a","role":"standby","epoch":7,"active":"` + active + `","lease_ms":200,"healthy":true,
			"peers":[{"id":"a","healthy":true,"in_ring":true},{"id":"b","healthy":true,"in_ring":true}],"locators":` + locators + `}`)
	}
	const allAnswered = `[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":5},{"id":"w","seen":true,"age_ms":4}]`
	const oneAnswered = `[{"id":"a","seen":true,"age_ms":3},{"id":"b","seen":true,"age_ms":900},{"id":"w","seen":false}]`
	cases := []struct {
		name   string
		modify func(st *supervisor.Status)
		code   int
		why    string
	}{
		{"healthy, quorum, active b", func(st *supervisor.Status) { st.NodeManager = nmWith("b", allAnswered) }, exitOK, ""},
		{"the golden state: rtpengine in backoff", func(st *supervisor.Status) {
			golden, _ := goldenStatus()
			*st = *golden
		}, exitUnhealthy, "this node is unhealthy: rtpengine backoff"},
		{"a non-critical process FATAL", func(st *supervisor.Status) {
			st.Processes = append(st.Processes, supervisor.ProcessStatus{Name: "exporter", State: supervisor.StateFatal})
		}, exitUnhealthy, "exporter is FATAL"},
		{"no quorum", func(st *supervisor.Status) { st.NodeManager = nmWith("a", oneAnswered) }, exitNoQuorum, "no quorum: 1 of 3 locators answered, 2 needed"},
		{"no quorum outranks unhealthy", func(st *supervisor.Status) {
			st.Healthy, st.Unhealthy = false, []string{"kamailio down"}
			st.NodeManager = nmWith("a", oneAnswered)
		}, exitNoQuorum, "no quorum"},
		{"no active node", func(st *supervisor.Status) { st.NodeManager = nmWith("", allAnswered) }, exitNoQuorum, "no active node known to this host"},
		{"no report from the control plane yet", func(st *supervisor.Status) { st.NodeManager, st.Locator = nil, nil }, exitNoQuorum, "no active node"},
		{"witness whose locator grants b", func(st *supervisor.Status) {
			st.Role, st.NodeManager = "witness", nil
			st.Locator = fromJSON[ctlmsg.LocatorReport](`{"self":"w","epoch":3,"holder":"b","nodes":[]}`)
		}, exitOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := healthyStatus()
			tc.modify(st)
			sock := fakeDaemon(t, func() *supervisor.Status {
				cp := *st
				return &cp
			})
			for _, form := range [][]string{{"--json"}, nil} {
				var out, errb bytes.Buffer
				code := dispatch(append([]string{"status", "--socket", sock}, form...), &out, &errb)
				if code != tc.code || !strings.Contains(errb.String(), tc.why) || (tc.code == exitOK) != (errb.Len() == 0) {
					t.Errorf("status %v: exit %d, stderr %q; want %d and %q", form, code, errb.String(), tc.code, tc.why)
				}
				if out.Len() == 0 {
					t.Errorf("status %v printed nothing", form)
				}
			}
		})
	}
	// No daemon: 1.
	var out, errb bytes.Buffer
	if code := dispatch([]string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &out, &errb); code != exitFailure || !strings.Contains(errb.String(), "not running") {
		t.Errorf("no daemon: exit %d, stderr %q", code, errb.String())
	}
}

// --watch without a terminal prints frames one after another, each under
// its time line, and ends with the last frame's exit status; the daemon's
// state changing between frames shows in them.
func TestStatusWatch(t *testing.T) {
	frames := make(chan *supervisor.Status, 16)
	healthy := healthyStatus()
	unhealthy := healthyStatus()
	unhealthy.Healthy, unhealthy.Unhealthy = false, []string{"kamailio down"}
	// The human form asks twice for its first frame (CPU rates), then once per frame.
	for _, st := range []*supervisor.Status{healthy, healthy, healthy, unhealthy} {
		frames <- st
	}
	sock := fakeDaemon(t, func() *supervisor.Status {
		select {
		case st := <-frames:
			return st
		default:
			return unhealthy
		}
	})
	var out, errb bytes.Buffer
	code := dispatch([]string{"status", "--socket", sock, "--watch", "--interval", "10ms", "--count", "3"}, &out, &errb)
	if code != exitUnhealthy || errb.Len() != 0 {
		t.Errorf("exit %d, stderr %q; want %d (the last frame's)", code, errb.String(), exitUnhealthy)
	}
	heads := regexp.MustCompile(`(?m)^--- vigil status \S+ ---$`).FindAllStringIndex(out.String(), -1)
	if len(heads) != 3 || heads[0][0] != 0 || strings.Contains(out.String(), "\x1b") {
		t.Fatalf("want 3 plain frames, got %d:\n%s", len(heads), out.String())
	}
	first, last := out.String()[heads[0][1]:heads[1][0]], out.String()[heads[2][1]:]
	if !strings.Contains(first, "  healthy\n") || !strings.Contains(last, "UNHEALTHY: kamailio down") {
		t.Errorf("frames do not follow the daemon:\n%s", out.String())
	}

	// JSON: one document per frame.
	out.Reset()
	code = dispatch([]string{"status", "--socket", sock, "--watch", "--json", "--interval", "10ms", "--count", "2"}, &out, &errb)
	dec := json.NewDecoder(&out)
	n := 0
	for {
		var st supervisor.Status
		if err := dec.Decode(&st); err != nil {
			break
		}
		n++
	}
	if n != 2 || code != exitUnhealthy {
		t.Errorf("--json --watch: %d documents, exit %d", n, code)
	}

	// Interrupted (the context ends): it returns at once with the last frame's status.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := statusView{socket: sock, json: true}
	out.Reset()
	if code := v.watch(ctx, &out, &errb, time.Hour, 0); code != exitUnhealthy || strings.Count(out.String(), `"node": "a"`) != 1 {
		t.Errorf("interrupted watch: exit %d\n%s", code, out.String())
	}

	for _, bad := range [][]string{{"--interval", "0s"}, {"--count", "-1"}} {
		if code := dispatch(append([]string{"status", "--socket", sock, "--watch"}, bad...), &out, &errb); code != exitUsage {
			t.Errorf("status --watch %v: exit %d, want %d", bad, code, exitUsage)
		}
	}
}

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := dispatch([]string{"completion", shell}, &out, &errb); code != exitOK || errb.Len() != 0 {
		t.Fatalf("completion %s: exit %d, stderr %q", shell, code, errb.String())
	}
	p := filepath.Join(t.TempDir(), "vigil."+shell)
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// need is testtool.Need.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	return testtool.Need(t, tool, pkg)
}

// The bash completion parses and completes commands, flags and arguments
// from the commands' own definitions.
func TestCompletionBash(t *testing.T) {
	bash := need(t, "bash", "bash")
	script := completionScript(t, "bash")
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	complete := func(words ...string) string {
		t.Helper()
		prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _vigil; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, append([]string{"--norc", "--noprofile", "-c", prog, "bash", script}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", words, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"vigil", "sw"}, "switchover"},
		{[]string{"vigil", "ma"}, "maintenance"},
		{[]string{"vigil", "--v"}, "--version"},
		{[]string{"vigil", "maintenance", "o"}, "on off"},
		{[]string{"vigil", "maintenance", "of"}, "off"},
		{[]string{"vigil", "status", "--w"}, "--watch"},
		{[]string{"vigil", "switchover", "--t"}, "--to"},
		{[]string{"vigil", "completion", ""}, "bash zsh"},
		{[]string{"vigil", "help", "ke"}, "keygen"},
		{[]string{"vigil", "status", "--interval", ""}, ""},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.words, got, tc.want)
		}
	}
	// A file flag completes files.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vigil-test.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := complete("vigil", "check", "-c", filepath.Join(dir, "vigil-t")); got != filepath.Join(dir, "vigil-test.yaml") {
		t.Errorf("check -c FILE: %q", got)
	}
}

// The zsh completion parses, and hands _arguments each command's flags.
func TestCompletionZsh(t *testing.T) {
	zsh := need(t, "zsh", "zsh")
	script := completionScript(t, "zsh")
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	// Outside the completion system: compdef, _describe and _arguments
	// record what they are given.
	prog := `compdef() { print -r -- "compdef $*" }
_describe() { print -rl -- "describe" "${(@P)4}" }
_arguments() { print -rl -- "$@" }
source "$1"
words=(vigil sw); CURRENT=2; _vigil
words=(vigil status --w); CURRENT=3; _vigil
words=(vigil maintenance ''); CURRENT=3; _vigil`
	out, err := exec.Command(zsh, "-f", "-c", prog, "zsh", script).CombinedOutput()
	if err != nil {
		t.Fatalf("zsh: %v\n%s", err, out)
	}
	for _, want := range []string{"compdef _vigil vigil", "switchover:move the active role", "--watch[redraw every --interval",
		"(-c --config)-c[configuration FILE", "1:on|off:(on off)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("zsh completion lacks %q:\n%s", want, out)
		}
	}
}

// manPage reads a page of packaging/.
func manPage(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// vigil.8 documents every command, and status's exit codes; vigil.yaml.5
// every key the parser accepts, under a heading naming its section.
func TestManPages(t *testing.T) {
	page := manPage(t, "vigil.8")
	for _, c := range commands() {
		if internal(c) {
			if !strings.Contains(page, ".B vigil "+c.name) {
				t.Errorf("vigil.8 does not mention the internal command %s", c.name)
			}
			continue
		}
		if !regexp.MustCompile(`(?m)^\.SS "vigil ` + regexp.QuoteMeta(c.name) + `\b`).MatchString(page) {
			t.Errorf("vigil.8 has no section .SS \"vigil %s\"", c.name)
		}
	}
	for _, code := range []int{exitOK, exitFailure, exitUsage, exitUnhealthy, exitNoQuorum} {
		if !regexp.MustCompile(`(?m)^\.SH EXIT STATUS(?s:.*)^\.B ` + string(rune('0'+code)) + `$`).MatchString(page) {
			t.Errorf("vigil.8 EXIT STATUS lacks %d", code)
		}
	}

	yaml5 := manPage(t, "vigil.yaml.5")
	sections := map[string]string{} // heading path -> its text
	parts := regexp.MustCompile(`(?m)^\.S[HS] (.*)$`).FindAllStringSubmatchIndex(yaml5, -1)
	for i, p := range parts {
		end := len(yaml5)
		if i+1 < len(parts) {
			end = parts[i+1][0]
		}
		for _, h := range strings.Split(strings.Trim(yaml5[p[2]:p[3]], `"`), ", ") {
			sections[h] = yaml5[p[1]:end]
		}
	}
	for path, keys := range config.Keys() {
		if path == "" {
			path = "SECTIONS"
		}
		text, ok := sections[path]
		if !ok {
			t.Errorf("vigil.yaml.5 has no heading for %s", path)
			continue
		}
		for _, k := range keys {
			if path == "SECTIONS" {
				if _, ok := sections[k]; !ok && sections[k+"[]"] == "" {
					t.Errorf("vigil.yaml.5 has no section %s", k)
				}
				continue
			}
			if !regexp.MustCompile(`(?m)^\.B[RI]? "?(\S+ ", " )*` + regexp.QuoteMeta(k) + `\b`).MatchString(text) {
				t.Errorf("vigil.yaml.5 %s: key %s is not documented (a .TP entry starting .B %s)", path, k, k)
			}
		}
	}
}

// Both pages render without a warning: mandoc's lint, and groff's with
// every warning on.
func TestManPagesRender(t *testing.T) {
	for _, name := range []string{"vigil.8", "vigil.yaml.5"} {
		path := filepath.Join("..", "..", "packaging", name)
		t.Run(name, func(t *testing.T) {
			t.Run("mandoc", func(t *testing.T) {
				mandoc := need(t, "mandoc", "mandoc")
				if out, err := exec.Command(mandoc, "-T", "lint", "-W", "warning", path).CombinedOutput(); err != nil || len(out) > 0 {
					t.Errorf("mandoc -T lint: %v\n%s", err, out)
				}
			})
			t.Run("groff", func(t *testing.T) {
				groff := need(t, "groff", "groff-base")
				out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", path).CombinedOutput()
				if err != nil || len(out) > 0 {
					t.Errorf("groff -ww: %v\n%s", err, out)
				}
			})
		})
	}
}

// A control-plane process serves every service of the file, unless it is
// named one (--service) or runs under a supervisor from before one
// process served them all, which names the service of each process but the
// first's: then only that one, or it would take the ports of the others.
func TestServiceSlots(t *testing.T) {
	cfg := &config.Config{Services: []config.Service{{Name: "voice"}, {Name: "data"}, {Name: "fax"}}}
	for _, tc := range []struct {
		service string
		old     bool
		want    []int
	}{
		{"", false, []int{0, 1, 2}},
		{"", true, []int{0}},
		{"data", true, []int{1}},
		{"fax", false, []int{2}},
	} {
		got, err := serviceSlots(cfg, tc.service, tc.old)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("service %q, old supervisor %v: %v, %v; want %v", tc.service, tc.old, got, err, tc.want)
		}
	}
	if _, err := serviceSlots(cfg, "video", false); err == nil || !strings.Contains(err.Error(), `no service "video"`) {
		t.Errorf("an unknown service: %v", err)
	}
	one, err := serviceSlots(&config.Config{}, "", false)
	if err != nil || !slices.Equal(one, []int{0}) {
		t.Errorf("a cluster without services: %v, %v", one, err)
	}
}
