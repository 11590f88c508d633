package main

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// cmdDoc is what a command's FlagSet cannot say: its positional arguments,
// their completions and any notes for -h. A command without an entry takes
// no arguments.
type cmdDoc struct {
	args  string   // synopsis of the positional arguments, e.g. "on|off"
	words []string // completions of the first positional argument
	files bool     // the first positional argument is a file
	more  string   // extra paragraphs for -h
}

func docOf(name string) cmdDoc {
	switch name {
	case "supervise":
		return cmdDoc{more: "Runs in the foreground; under systemd it is the unit's ExecStart. SIGHUP reloads the\n" +
			"configuration, SIGTERM or SIGINT stops every process and removes the floating IPs.\n" +
			"Exit status: 0 stopped, 1 runtime failure, 2 invalid configuration."}
	case "status":
		return cmdDoc{more: "Exit status (like crm_mon -1, so that scripts and monitoring can act on it):\n" +
			"  0  ok: this node is healthy and a quorum of locators grants an active node\n" +
			"  1  the daemon cannot be reached (not running, permission denied) or a runtime failure\n" +
			"  2  usage error\n" +
			"  3  this node is unhealthy (a critical process down or failing its check, a floating-IP\n" +
			"     interface down) or a supervised process is FATAL\n" +
			"  4  no quorum, or no active node known (takes precedence over 3)\n" +
			"Members of the group \"vigil\" may run it without root."}
	case "restart":
		return cmdDoc{args: "NAME", more: "NAME is a process of the configuration's processes list, or locator or nodemanager\n(each serves every service of the host: restarting it restarts it for all of them)."}
	case "switchover":
		return cmdDoc{args: "[SERVICE]", more: "SERVICE names the service to move (vigil status, SERVICE): optional with one service,\n" +
			"required with several, each of which has an active node of its own. A service with a failback\n" +
			"moves back to a more preferred node once that one has been fit for the failback time.\n" +
			"--preferred moves each service (SERVICE, or every one) to its most preferred fit node\n" +
			"(healthy, out of maintenance, in the ring) where it is not already: after a cold start."}
	case "maintenance":
		return cmdDoc{args: "on|off", words: []string{"on", "off"}, more: "The setting is kept across restarts (runtime.state_dir)."}
	case "check":
		return cmdDoc{more: "Exit status 0 if the file is valid, 2 with every error as FILE:LINE:COL: KEY: MSG if not."}
	case "keygen":
		return cmdDoc{args: "[FILE]", files: true, more: "Writes a new random cluster key (mode 0600) to FILE, default /etc/vigil/cluster.key,\n" +
			"and refuses to replace one. Copy the same file to every node and witness."}
	case "version":
		return cmdDoc{more: "Same as vigil --version or vigil -v."}
	case "completion":
		return cmdDoc{args: "bash|zsh", words: []string{"bash", "zsh"},
			more: "Prints the completion script; the packages install both. For a shell of your own:\n" +
				"  source <(vigil completion bash)        # in ~/.bashrc\n" +
				"  vigil completion zsh > ~/.zfunc/_vigil   # with ~/.zfunc in $fpath"}
	}
	return cmdDoc{}
}

// hidden commands are not for people: no usage line, no help.
func hidden(c command) bool { return c.name[0] == '_' }

// internal commands are started by vigil itself, not by an operator: no
// completion, and the man page lists them apart.
func internal(c command) bool {
	return hidden(c) || c.name == "locator" || c.name == "nodemanager"
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// flagCollector is handed to a command as its stderr by commandFlags:
// newFlags recognises it and hands it the command's FlagSet, which is how
// help and completion learn every command's flags without a second list
// that could drift.
type flagCollector struct{ fs *flag.FlagSet }

func (*flagCollector) Write(p []byte) (int, error) { return len(p), nil }

// commandFlags returns c's flags: it runs c with -h, which makes its
// FlagSet stop at parsing. nil if c does not use newFlags.
func commandFlags(c command) *flag.FlagSet {
	fc := &flagCollector{}
	c.run([]string{"-h"}, io.Discard, fc)
	return fc.fs
}

// newFlags is every command's FlagSet. A parse error prints the error and
// the command's help to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vigil "+name, flag.ContinueOnError)
	if fc, ok := stderr.(*flagCollector); ok {
		fc.fs = fs
		fs.SetOutput(io.Discard)
		fs.Usage = func() {}
		return fs
	}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		for _, c := range commands() {
			if c.name == name {
				printHelp(stderr, c, fs)
			}
		}
	}
	return fs
}

// parseWords parses flags that may stand before, between or after the
// command's words (vigil maintenance on --socket S): the flag package stops
// at the first word, so it parses again after each. It returns the words,
// or false after a flag error (already printed).
func parseWords(fs *flag.FlagSet, args []string) ([]string, bool) {
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return words, true
		}
		words = append(words, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// synopsis is "vigil NAME [flags] ARGS".
func synopsis(c command, fs *flag.FlagSet) string {
	s := "vigil " + c.name
	if fs != nil && hasFlags(fs) {
		s += " [flags]"
	}
	if a := docOf(c.name).args; a != "" {
		s += " " + a
	}
	return s
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func printHelp(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s.\n", synopsis(c, fs), upperFirst(c.usage))
	if m := docOf(c.name).more; m != "" {
		fmt.Fprintf(w, "\n%s\n", m)
	}
	if fs == nil || !hasFlags(fs) {
		return
	}
	fmt.Fprintf(w, "\nflags:\n")
	for _, o := range options(fs) {
		fmt.Fprintf(w, "  %s\n      %s", o.spelling(), o.usage)
		if o.def != "" {
			fmt.Fprintf(w, " (default %s)", o.def)
		}
		fmt.Fprintln(w)
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// option is one flag with its aliases (flags bound to the same variable,
// like -c and --config).
type option struct {
	names []string // short first
	arg   string   // the value's name (FILE, PATH, duration, ...), "" for a boolean
	usage string
	def   string
}

// dashed spells a flag name as an operator types it: -c, --config (Go's
// flag package accepts one or two dashes for either).
func dashed(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

func (o option) spelling() string {
	var parts []string
	for _, n := range o.names {
		parts = append(parts, dashed(n))
	}
	s := strings.Join(parts, ", ")
	if o.arg != "" {
		s += " " + o.arg
	}
	return s
}

// fileArg reports whether the option's value is a path.
func (o option) fileArg() bool { return o.arg == "FILE" || o.arg == "PATH" }

func options(fs *flag.FlagSet) []option {
	var out []option
	byValue := map[flag.Value]int{}
	fs.VisitAll(func(f *flag.Flag) {
		if i, ok := byValue[f.Value]; ok {
			out[i].names = append(out[i].names, f.Name)
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			arg = ""
		}
		def := f.DefValue
		if def == "" || def == "false" || def == "0" {
			def = ""
		}
		byValue[f.Value] = len(out)
		out = append(out, option{names: []string{f.Name}, arg: arg, usage: strings.TrimSuffix(usage, " (same as -c)"), def: def})
	})
	for i := range out {
		sort.Slice(out[i].names, func(a, b int) bool { return len(out[i].names[a]) < len(out[i].names[b]) })
	}
	return out
}
