package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// parser walks yaml.Node trees by hand instead of decoding into structs:
// that is what lets every error carry a line, a column and a key path,
// and lets unknown and duplicate keys be reported rather than ignored.
type parser struct {
	file string
	errs Errors
	// keys, when not nil, records the keys each mapping accepts (Keys).
	keys map[string][]string
}

func (p *parser) errAt(n *yaml.Node, key, format string, args ...any) {
	e := &Error{File: p.file, Key: key, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// maxNodes bounds the document after alias expansion, so that a
// "billion laughs" file is rejected instead of walked.
const maxNodes = 100_000

var yamlLineRE = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// decode parses data into its single document's root node, or returns
// nil after recording why it could not.
func (p *parser) decode(data []byte) (root *yaml.Node) {
	defer func() {
		// yaml.v3 is third-party code fed with operator input; a parser
		// bug must become a config error, not crash the daemon's start.
		if r := recover(); r != nil {
			p.errAt(nil, "", "YAML parser failed: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errs = append(p.errs, &Error{File: p.file, Line: 1, Column: 1, Msg: "file is empty: cluster is required"})
			return nil
		}
		p.syntaxError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errAt(&extra, "", "only one YAML document is allowed")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.syntaxError(err)
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		p.errs = append(p.errs, &Error{File: p.file, Line: 1, Column: 1, Msg: "file is empty: cluster is required"})
		return nil
	}
	memo := map[*yaml.Node]int{}
	if n, err := expandedSize(doc.Content[0], memo, 0); err != nil {
		p.errAt(doc.Content[0], "", "%v", err)
		return nil
	} else if n > maxNodes {
		p.errAt(doc.Content[0], "", "document too large: %d nodes after expanding aliases (limit %d)", n, maxNodes)
		return nil
	}
	return doc.Content[0]
}

func (p *parser) syntaxError(err error) {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: "YAML syntax: " + m[2]})
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Msg: "YAML syntax: " + err.Error()})
}

// expandedSize counts the nodes of n as the walker will see them, with
// aliases followed; memo makes it linear and marks nodes being visited
// (-1) so that a self-referencing alias is an error, not a hang.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int, depth int) (int, error) {
	if depth > 1000 {
		return 0, errors.New("document nested too deeply")
	}
	if v, ok := memo[n]; ok {
		if v < 0 {
			return 0, errors.New("an alias refers to a node that contains it")
		}
		return v, nil
	}
	memo[n] = -1
	total := 1
	kids := n.Content
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		kids = []*yaml.Node{n.Alias}
	}
	for _, k := range kids {
		s, err := expandedSize(k, memo, depth+1)
		if err != nil {
			return 0, err
		}
		total += s
		if total > maxNodes {
			total = maxNodes + 1 // saturate: only "too large" matters
		}
	}
	memo[n] = total
	return total, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "empty"
		}
		return "a string"
	}
	return "an alias"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

type entry struct{ key, val *yaml.Node }

// fields is a checked mapping: known keys with non-null values.
type fields struct {
	m map[string]entry
	// bad is the keys whose reading reported an error (parser.section).
	bad map[string]bool
}

func (f fields) get(k string) *yaml.Node { return f.m[k].val }

// mapping checks that n is a mapping whose keys are all in known and
// appear once. Keys with an empty (null) value count as absent, so
// "key_file:" means "use the default".
func (p *parser) mapping(n *yaml.Node, path string, known ...string) (fields, bool) {
	f := fields{m: map[string]entry{}, bad: map[string]bool{}}
	if p.keys != nil {
		p.keys[path] = known
	}
	if n.Kind != yaml.MappingNode {
		p.errAt(n, path, "must be a mapping, not %s", kindOf(n))
		return f, false
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.errAt(k, path, "keys must be strings, not %s", kindOf(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			p.errAt(k, path, "merge keys (<<) are not supported: write the keys out")
			continue
		}
		name := k.Value
		if first, dup := seen[name]; dup {
			p.errAt(k, join(path, name), "duplicate key (first at line %d)", first.Line)
			continue
		}
		seen[name] = k
		if !contains(known, name) {
			if s := suggest(name, known); s != "" {
				p.errAt(k, join(path, name), "unknown key (did you mean %s?)", s)
			} else {
				p.errAt(k, join(path, name), "unknown key")
			}
			continue
		}
		if isNull(v) {
			continue
		}
		f.m[name] = entry{k, v}
	}
	return f, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to name, if it is a likely typo.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD && d < len(k) {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// list checks that n is a sequence and returns its items, aliases followed.
func (p *parser) list(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		p.errAt(n, path, "must be a list, not %s", kindOf(n))
		return nil, false
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = deref(c)
	}
	return out, true
}

// str accepts any scalar: "name: 5060" is the string "5060".
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errAt(n, path, "must be a string, not %s", kindOf(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		p.errAt(n, path, "must be true or false, not %s", describe(n))
		return false, false
	}
	return b, true
}

func (p *parser) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	var i int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		p.errAt(n, path, "must be an integer, not %s", describe(n))
		return 0, false
	}
	if i < lo || i > hi {
		p.errAt(n, path, "%d is out of range %d..%d", i, lo, hi)
		return 0, false
	}
	return i, true
}

// describe names a wrong value for a type error: the value itself when
// it is a short scalar, its kind otherwise.
func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && !isNull(n) && len(n.Value) <= 40 {
		return strconv.Quote(n.Value)
	}
	return kindOf(n)
}

func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return 0, false
	}
	d, err := parseDuration(s)
	if err != nil {
		p.errAt(n, path, "%v", err)
		return 0, false
	}
	return d, true
}

// positiveDuration is a duration that must be > 0.
func (p *parser) positiveDuration(n *yaml.Node, path string) (time.Duration, bool) {
	d, ok := p.duration(n, path)
	if ok && d == 0 {
		p.errAt(n, path, "must be greater than 0")
		return 0, false
	}
	return d, ok
}

func (p *parser) size(n *yaml.Node, path string) (int64, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := parseSize(s)
	if err != nil {
		p.errAt(n, path, "%v", err)
		return 0, false
	}
	return v, true
}

func (p *parser) enum(n *yaml.Node, path string, allowed ...string) (string, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return "", false
	}
	if !contains(allowed, s) {
		p.errAt(n, path, "%q is not one of %s", s, orList(allowed))
		return "", false
	}
	return s, true
}

func orList(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	out := ""
	for i, x := range xs[:len(xs)-1] {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out + " or " + xs[len(xs)-1]
}

// strList reads a list of strings.
func (p *parser) strList(n *yaml.Node, path string) ([]string, bool) {
	items, ok := p.list(n, path)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	good := true
	for i, it := range items {
		s, ok := p.str(it, index(path, i))
		good = good && ok
		out = append(out, s)
	}
	return out, good
}
