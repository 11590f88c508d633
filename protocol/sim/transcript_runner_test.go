package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// echoExec is a stand-in for the scenario commands: "say X Y" prints X and
// Y on two lines, "quiet" prints nothing, "fail" fails.
func echoExec(cmd string) (string, error) {
	f := strings.Fields(cmd)
	switch f[0] {
	case "say":
		return strings.Join(f[1:], "\n"), nil
	case "quiet":
		return "", nil
	case "fail":
		return "", errors.New("it failed")
	}
	return "", errors.New("unknown command")
}

// The format: blocks are filled in after their command, comments and
// blank lines stay where they are, an empty output is an empty block, and
// a file rewrite produced runs clean and rewrites to itself.
func TestTranscriptFormat(t *testing.T) {
	in := "# head\nsay a b\n\n  # indented comment\nquiet\nsay c # trailing comment\n----\nstale\n\nquiet\n----\n\n# tail\n"
	want := "# head\nsay a b\n----\na\nb\n\n  # indented comment\nquiet\n----\n\nsay c # trailing comment\n----\nc\n\nquiet\n----\n\n# tail\n"
	got, err := runTranscript("t.txt", in, echoExec)
	if !errors.Is(err, errTranscriptDiffers) {
		t.Fatalf("missing and stale blocks: err %v, want errTranscriptDiffers", err)
	}
	if got != want {
		t.Fatalf("rewritten:\n%s\nwant:\n%s", got, want)
	}
	again, err := runTranscript("t.txt", got, echoExec)
	if err != nil || again != got {
		t.Fatalf("an up-to-date transcript: err %v, rewritten to\n%s", err, again)
	}
	// A transcript ending in a block has no blank line after it.
	last := "say x\n----\nx\n"
	if got, err := runTranscript("t.txt", last, echoExec); err != nil || got != last {
		t.Fatalf("%q: err %v, rewritten to %q", last, err, got)
	}
}

// A failing command stops the run; it is not a difference -rewrite may
// record.
func TestTranscriptCommandFails(t *testing.T) {
	got, err := runTranscript("t.txt", "say a\n----\nb\n\nfail now\nsay c\n", echoExec)
	if err == nil || errors.Is(err, errTranscriptDiffers) || got != "" {
		t.Fatalf("err %v, text %q: want a command error and no text", err, got)
	}
	for _, s := range []string{"t.txt:5: fail now: it failed", "1 outputs differed", "t.txt:1: say a"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
	if _, err := runTranscript("t.txt", "----\n", echoExec); err == nil {
		t.Error("a block without a command was accepted")
	}
	if _, err := runTranscript("t.txt", "say a ----\n", func(string) (string, error) { return "a\n\nb", nil }); err == nil {
		t.Error("an output with a blank line (it would end its block) was accepted")
	}
}

// Every scenario transcript is up to date (rewriting it changes nothing),
// and regenerating it from the commands alone gives the committed file:
// what is recorded is what the core does, nothing else.
func TestScenarioTranscriptsRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			orig := string(b)
			got, err := runTranscript(f, orig, (&scenario{t: t}).exec)
			if err != nil || got != orig {
				t.Fatalf("rewriting an up-to-date transcript: err %v, changed: %v", err, got != orig)
			}
			tr, err := parseTranscript(orig)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tr.cmds {
				tr.cmds[i].out, tr.cmds[i].hasOut = nil, false
			}
			bare := tr.render()
			got, err = runTranscript(f, bare, (&scenario{t: t}).exec)
			if !errors.Is(err, errTranscriptDiffers) || !strings.Contains(err.Error(), "no recorded output") {
				t.Fatalf("a transcript without outputs: err %v", err)
			}
			if got != orig {
				t.Fatalf("regenerated from its commands, %s differs from the committed file", f)
			}
		})
	}
}

// A behaviour change fails with a diff of the block that changed, naming
// file, line and command; -rewrite records the new output in the file.
func TestScenarioTranscriptMismatch(t *testing.T) {
	const src = "testdata/switchover.txt"
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	orig := string(b)
	// Pretend the handover used to take 9.9 ms.
	const was = "b active epoch>1 after 1.9ms (since mark)"
	if !strings.Contains(orig, was) {
		t.Fatalf("%s no longer records %q; pick another line", src, was)
	}
	stale := strings.Replace(orig, was, "b active epoch>1 after 9.9ms (since mark)", 1)
	line := strings.Count(stale[:strings.Index(stale, "await b active epoch>1")], "\n") + 1

	dir := t.TempDir()
	path := filepath.Join(dir, "switchover.txt")
	if err := os.WriteFile(path, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = checkTranscriptFile(path, false, (&scenario{t: t}).exec)
	if !errors.Is(err, errTranscriptDiffers) {
		t.Fatalf("a stale block: err %v, want errTranscriptDiffers", err)
	}
	msg := err.Error()
	for _, s := range []string{
		path + ":" + strconv.Itoa(line) + ": await b active epoch>1 within 30ms: output (-recorded +now):",
		"\n    - b active epoch>1 after 9.9ms (since mark)",
		"\n    + b active epoch>1 after 1.9ms (since mark)",
		"\n      556.166081ms b node: BecameActive epoch=2", // context: the lines that did not change
		"-rewrite",
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("the diff lacks %q:\n%s", s, msg)
		}
	}
	if strings.Count(msg, "\n    - ") != 1 || strings.Count(msg, "\n    + ") != 1 {
		t.Errorf("one line changed, the diff shows more:\n%s", msg)
	}
	if b, _ := os.ReadFile(path); string(b) != stale {
		t.Fatal("a check without -rewrite wrote the file")
	}

	rewrote, err := checkTranscriptFile(path, true, (&scenario{t: t}).exec)
	if err != nil || !rewrote {
		t.Fatalf("rewrite: rewrote %v, err %v", rewrote, err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Fatalf("rewritten, the file is not the committed transcript:\n%s", b)
	}
	if rewrote, err := checkTranscriptFile(path, true, (&scenario{t: t}).exec); err != nil || rewrote {
		t.Fatalf("rewriting an up-to-date file: rewrote %v, err %v", rewrote, err)
	}
}

// A broken expectation fails even with -rewrite, and the file stays.
func TestScenarioExpectationNotRewritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken.txt")
	text := "cluster nodes=a,b locators=a,b,w\nawait one-active a within 400ms\nexpect no-active\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := checkTranscriptFile(path, true, (&scenario{t: t}).exec)
	if err == nil || errors.Is(err, errTranscriptDiffers) || !strings.Contains(err.Error(), "broken.txt:3: expect no-active: (t=54.3ms) expect no-active: active: [a]") {
		t.Fatalf("err %v, want the broken expectation", err)
	}
	if b, _ := os.ReadFile(path); string(b) != text {
		t.Fatal("a failed scenario was rewritten")
	}
}
