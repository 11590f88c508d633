package config

import "go.yaml.in/yaml/v3"

// Every mapping of the file is read from a table of fields: a key, how
// its value is parsed and where it goes. parser.section derives the known
// keys from the table (for unknown-key errors, their suggestions and Keys),
// reads the present keys in table order, reports absent required ones and
// builds each key's path, so that adding a key is one line and every key is
// reported the same way.

// parseFn reads one value found at path. It reports its own errors at n;
// ok is false when it did and produced nothing.
type parseFn[T any] func(p *parser, n *yaml.Node, path string) (T, bool)

// field is one key of a mapping's table.
type field struct {
	key string
	// read handles the key's value when it is present (not null); nil
	// means the caller reads the key itself after the table.
	read func(p *parser, e entry, path string)
	// required, when not "", is the message for an absent key.
	required string
	// done, when set, runs after a read that reported no error: it
	// remembers where a value stands, for checks made later.
	done func(p *parser, e entry, path string)
}

// set is the common field: parse the value and store it in *dst when it
// parsed, leaving the default otherwise.
func set[T any](key string, parse parseFn[T], dst *T) field {
	return field{key: key, read: func(p *parser, e entry, path string) {
		if v, ok := parse(p, e.val, path); ok {
			*dst = v
		}
	}}
}

// req makes the key required: msg is reported, at the section's place,
// when it is absent.
func (f field) req(msg string) field {
	f.required = msg
	return f
}

// mark records the value's node in *at once it was read without error.
func (f field) mark(at **yaml.Node) field {
	f.done = func(_ *parser, e entry, _ string) { *at = e.val }
	return f
}

// then runs fn once the value was read without error.
func (f field) then(fn func(p *parser, e entry, path string)) field {
	f.done = fn
	return f
}

// section checks that n is a mapping of the table's keys (parser.mapping)
// and reads them in table order. Absent required keys are reported at at,
// the node that names the mapping. The fields returned say which keys
// reported an error (fields.failed).
func (p *parser) section(n, at *yaml.Node, path string, table ...field) (fields, bool) {
	known := make([]string, len(table))
	for i, fd := range table {
		known[i] = fd.key
	}
	f, ok := p.mapping(n, path, known...)
	if !ok {
		return f, false
	}
	for _, fd := range table {
		kp := join(path, fd.key)
		before := len(p.errs)
		e, present := f.m[fd.key]
		switch {
		case present && fd.read != nil:
			fd.read(p, e, kp)
		case !present && fd.required != "":
			p.errAt(at, kp, "%s", fd.required)
		}
		if len(p.errs) > before {
			f.bad[fd.key] = true
		} else if present && fd.read != nil && fd.done != nil {
			fd.done(p, e, kp)
		}
	}
	return f, true
}

// failed reports whether reading any of keys reported an error.
func (f fields) failed(keys ...string) bool {
	for _, k := range keys {
		if f.bad[k] {
			return true
		}
	}
	return false
}

// group is a key whose value is a mapping read with its own table.
func group(key string, table ...field) field {
	return field{key: key, read: func(p *parser, e entry, path string) {
		p.section(e.val, e.key, path, table...)
	}}
}

// The parse functions the tables combine with the walker's readers
// (str, duration, size, ...; yamlwalk.go).

// intIn reads an integer in lo..hi.
func intIn[T ~int | ~int64 | ~uint64](lo, hi int64) parseFn[T] {
	return func(p *parser, n *yaml.Node, path string) (T, bool) {
		i, ok := p.integer(n, path, lo, hi)
		return T(i), ok
	}
}

// oneOf reads a string that must be one of allowed.
func oneOf[T ~string](allowed ...T) parseFn[T] {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return func(p *parser, n *yaml.Node, path string) (T, bool) {
		s, ok := p.enum(n, path, names...)
		return T(s), ok
	}
}

// conv reads a value with parse and converts it with fn, whose error is
// reported at the value.
func conv[T, U any](parse parseFn[T], fn func(T) (U, error)) parseFn[U] {
	return func(p *parser, n *yaml.Node, path string) (U, bool) {
		var zero U
		v, ok := parse(p, n, path)
		if !ok {
			return zero, false
		}
		u, err := fn(v)
		if err != nil {
			p.errAt(n, path, "%v", err)
			return zero, false
		}
		return u, true
	}
}

// checked reads a value with parse and refuses it when check fails; the
// error is reported at the value.
func checked[T any](parse parseFn[T], check func(T) error) parseFn[T] {
	return conv(parse, func(v T) (T, error) { return v, check(v) })
}
