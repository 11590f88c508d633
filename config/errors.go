package config

import (
	"sort"
	"strconv"
	"strings"
)

// Error is one problem found in a configuration file. Line and Column are
// 1-based; 0 means unknown (the file could not be read at all).
type Error struct {
	File   string
	Line   int
	Column int
	// Key is the dotted path of the offending key, with 0-based list
	// indexes: processes[1].health.interval. Empty for syntax errors.
	Key string
	Msg string
}

// Error formats e as "FILE:LINE:COL: KEY: MSG", the shape editors and CI
// annotations jump to. Unknown parts are left out rather than printed as 0.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Errors is every problem found in one file, sorted by position. Parse
// reports all of them at once so an operator fixes a file in one pass.
type Errors []*Error

// Error joins the errors one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the individual errors to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sort orders by line, then column; stable so that messages about the
// same place keep the order they were found in.
func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}
