package sim

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// A transcript is a test file in the style of cockroachdb/datadriven (as
// etcd's raft uses it): each command is followed by the output it produced
// when the file was last regenerated,
//
//	# comments and blank lines between commands are kept as they are
//	crash a
//	----
//	1.2ms a node: BecameStandby epoch=2 reason="lease expired"
//
//	mark
//	----
//
// An output block runs from the "----" line to the next blank line (or the
// end of the file); a command with no output has an empty block. Running
// a transcript executes every command and compares what it printed with
// its block; with -rewrite the blocks are replaced by what was printed,
// so that a change of behaviour shows up as a diff of the file.
//
// This is a small runner of our own: the module does not depend on
// datadriven for one test helper.

const transcriptSep = "----"

// transcriptCmd is one command of a transcript, with the comment and blank
// lines before it.
type transcriptCmd struct {
	pre    []string // verbatim, before the command
	line   int      // 1-based line number of the command
	text   string   // the command line, verbatim
	out    []string // its recorded output
	hasOut bool     // the file has an output block for it ("----")
}

type transcript struct {
	cmds []transcriptCmd
	tail []string // comment and blank lines after the last command
}

// parseTranscript splits text into commands and their output blocks.
func parseTranscript(text string) (*transcript, error) {
	lines := strings.Split(text, "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1] // the final newline ends the last line
	}
	t := &transcript{}
	var pre []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if isTranscriptFiller(l) {
			pre = append(pre, l)
			continue
		}
		if l == transcriptSep {
			return nil, fmt.Errorf("line %d: %q without a command before it", i+1, transcriptSep)
		}
		c := transcriptCmd{pre: pre, line: i + 1, text: l}
		pre = nil
		if i+1 < len(lines) && lines[i+1] == transcriptSep {
			c.hasOut = true
			i += 2
			for ; i < len(lines) && lines[i] != ""; i++ {
				c.out = append(c.out, lines[i])
			}
			// The blank line that ends the block belongs to it.
		}
		t.cmds = append(t.cmds, c)
	}
	t.tail = pre
	return t, nil
}

// isTranscriptFiller: blank and comment lines between commands.
func isTranscriptFiller(l string) bool {
	s := strings.TrimSpace(l)
	return s == "" || strings.HasPrefix(s, "#")
}

// render writes the transcript back; render(parse(text)) is text for
// every text render wrote.
func (t *transcript) render() string {
	var b strings.Builder
	for i, c := range t.cmds {
		for _, l := range c.pre {
			b.WriteString(l + "\n")
		}
		b.WriteString(c.text + "\n")
		if !c.hasOut {
			continue
		}
		b.WriteString(transcriptSep + "\n")
		for _, l := range c.out {
			b.WriteString(l + "\n")
		}
		// A blank line ends the block, unless the next lines start
		// with one (it ends the block then) or nothing follows.
		next := t.tail
		if i < len(t.cmds)-1 {
			next = t.cmds[i+1].pre
			if len(next) == 0 {
				next = []string{t.cmds[i+1].text}
			}
		}
		if len(next) > 0 && next[0] != "" {
			b.WriteString("\n")
		}
	}
	for _, l := range t.tail {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// errTranscriptDiffers is wrapped by runTranscript's error when outputs
// differ from their recorded blocks.
var errTranscriptDiffers = errors.New("output differs from the transcript (rerun with -rewrite to accept it)")

// runTranscript runs every command of text through exec (which gets the
// command line without a trailing comment) and returns the text with every
// output block replaced by what exec printed. err is set if exec failed
// (the run stops there: later commands depend on it) or if any output
// differs from its block (wrapping errTranscriptDiffers, with a diff of
// each block that differs; or, when only the blank lines between blocks
// are not what render writes, saying so). name prefixes the line numbers
// in errors.
func runTranscript(name, text string, exec func(cmd string) (string, error)) (string, error) {
	t, err := parseTranscript(text)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	var diffs []string
	for i := range t.cmds {
		c := &t.cmds[i]
		cmd, _, _ := strings.Cut(c.text, "#")
		out, err := exec(strings.TrimSpace(cmd))
		if err != nil {
			// Not errTranscriptDiffers: nothing to rewrite, the run broke.
			err = fmt.Errorf("%s:%d: %s: %w", name, c.line, c.text, err)
			if len(diffs) > 0 {
				err = fmt.Errorf("%w\n(before it, %d outputs differed:)\n%s", err, len(diffs), strings.Join(diffs, "\n"))
			}
			return "", err
		}
		got := splitOutput(out)
		for _, l := range got {
			if l == "" || l == transcriptSep {
				return "", fmt.Errorf("%s:%d: %s: output line %q would end its block", name, c.line, c.text, l)
			}
		}
		switch {
		case !c.hasOut:
			diffs = append(diffs, fmt.Sprintf("%s:%d: %s: no recorded output; it printed:\n%s", name, c.line, c.text, indent(got, "    + ")))
		case !slicesEqual(c.out, got):
			diffs = append(diffs, fmt.Sprintf("%s:%d: %s: output (-recorded +now):\n%s", name, c.line, c.text, lineDiff(c.out, got)))
		}
		c.out, c.hasOut = got, true
	}
	out := t.render()
	if len(diffs) == 0 && out != text {
		diffs = append(diffs, fmt.Sprintf("%s: the outputs match, the layout does not (blank lines between blocks)", name))
	}
	if len(diffs) > 0 {
		return out, fmt.Errorf("%w\n%s", errTranscriptDiffers, strings.Join(diffs, "\n"))
	}
	return out, nil
}

// checkTranscriptFile runs the transcript in path with a fresh exec from
// newExec and, with rewrite, writes back what it printed if that differs
// (rewrote says so). Without rewrite a difference is an error. A failed
// command is an error either way, and nothing is written.
func checkTranscriptFile(path string, rewrite bool, exec func(cmd string) (string, error)) (rewrote bool, err error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	got, err := runTranscript(path, string(old), exec)
	if rewrite && errors.Is(err, errTranscriptDiffers) {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			return false, fmt.Errorf("rewrite: %w", err)
		}
		return true, nil
	}
	return false, err
}

func splitOutput(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func indent(lines []string, prefix string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// lineDiff shows how want becomes got, line by line (longest common
// subsequence): "-" recorded only, "+" printed now, " " both.
func lineDiff(want, got []string) string {
	n, m := len(want), len(got)
	// lcs[i][j]: length of the LCS of want[i:] and got[j:].
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			b.WriteString("      " + want[i] + "\n")
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			b.WriteString("    + " + got[j] + "\n")
			j++
		default:
			b.WriteString("    - " + want[i] + "\n")
			i++
		}
	}
	return b.String()
}
