// Package journal is a log/slog handler that writes each record to the
// systemd journal natively (sd_journal_send's protocol, through
// github.com/coreos/go-systemd/v22/journal), so that every attribute is a
// field journalctl can match on:
//
//	journalctl -u vigil PROCESS=kamailio EVENT=exit
//
// # Field mapping
//
//   - MESSAGE is the message followed by the attributes as logfmt
//     (" key=value", keys of groups dotted: health.err=...), so the default
//     `journalctl -u vigil` view reads like the text log; the level is
//     PRIORITY (debug 7, info 6,
//     warn 4, error 3; levels between round towards the more severe),
//     SYSLOG_IDENTIFIER is the handler's identifier ("vigil").
//   - An attribute's key is upper-cased and every character outside
//     [A-Z0-9_] becomes '_': process -> PROCESS, last_exit -> LAST_EXIT,
//     "health.error" -> HEALTH_ERROR. Groups prefix their keys with the
//     group name and '_': slog.Group("proc", "pid", 7) -> PROC_PID=7.
//   - Leading characters that journald rejects in a field name (digits and
//     '_', which marks trusted fields only journald may set) are dropped;
//     a key that would then be empty, or that names a field journald or
//     journalctl give a meaning (MESSAGE, PRIORITY, SYSLOG_*, CODE_*,
//     OBJECT_*, ...), is prefixed with VIGIL_: "priority" -> VIGIL_PRIORITY.
//     Field names are cut at journald's 64 bytes.
//   - Values are slog's text form (durations 1.5s, times RFC 3339); a
//     value may hold newlines: the native protocol carries them.
//   - A key that occurs twice keeps its last value.
package journal

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
)

// SendFunc delivers one entry; sdjournal.Send is the real one.
type SendFunc func(message string, priority sdjournal.Priority, fields map[string]string) error

// Handler is a slog.Handler writing to the journal. The zero value is not
// usable; use New.
type Handler struct {
	send   SendFunc
	ident  string
	level  slog.Leveler
	prefix string // group prefix for attributes added later, "" or "G_"
	dotted string // the same prefix for MESSAGE's key=value text, "" or "G."
	attrs  []field
	text   string // " k=v ..." of attrs, appended to every MESSAGE
}

type field struct{ key, value string }

// Options configure a Handler.
type Options struct {
	// Level is the minimum level logged; nil means slog.LevelInfo.
	Level slog.Leveler
	// Identifier is SYSLOG_IDENTIFIER; "" means "vigil".
	Identifier string
	// Send delivers entries; nil means the journal's native socket
	// (sdjournal.Send).
	Send SendFunc
}

// New returns a handler that writes to the journal.
func New(opts Options) *Handler {
	h := &Handler{send: opts.Send, ident: opts.Identifier, level: opts.Level}
	if h.send == nil {
		h.send = sdjournal.Send
	}
	if h.ident == "" {
		h.ident = "vigil"
	}
	if h.level == nil {
		h.level = slog.LevelInfo
	}
	return h
}

// Available reports whether the journal's native socket accepts entries.
func Available() bool { return sdjournal.Enabled() }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler: one journal entry per record.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	msg, pri, fields := h.Entry(r)
	return h.send(msg, pri, fields)
}

// Entry maps a record to the journal entry Handle sends: the message, the
// priority and the fields besides MESSAGE and PRIORITY.
func (h *Handler) Entry(r slog.Record) (string, sdjournal.Priority, map[string]string) {
	fields := make(map[string]string, len(h.attrs)+r.NumAttrs()+1)
	fields["SYSLOG_IDENTIFIER"] = h.ident
	for _, f := range h.attrs {
		fields[f.key] = f.value
	}
	var text strings.Builder
	text.WriteString(r.Message)
	text.WriteString(h.text)
	r.Attrs(func(a slog.Attr) bool {
		addAttr(fields, &text, h.prefix, h.dotted, a)
		return true
	})
	return text.String(), Priority(r.Level), fields
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	m := make(map[string]string)
	var text strings.Builder
	for _, a := range attrs {
		addAttr(m, &text, h.prefix, h.dotted, a)
	}
	h2 := *h
	h2.attrs = append(append([]field(nil), h.attrs...), fieldsOf(m)...)
	h2.text = h.text + text.String()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "_"
	h2.dotted = h.dotted + name + "."
	return &h2
}

func fieldsOf(m map[string]string) []field {
	out := make([]field, 0, len(m))
	for k, v := range m {
		out = append(out, field{k, v})
	}
	return out
}

// addAttr adds a (resolved, possibly group) attribute under prefix to the
// fields, and as " key=value" (keys dotted as slog's text handler does) to
// text.
func addAttr(fields map[string]string, text *strings.Builder, prefix, dotted string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p, d := prefix, dotted
		if a.Key != "" {
			p, d = prefix+a.Key+"_", dotted+a.Key+"."
		}
		for _, ga := range v.Group() {
			addAttr(fields, text, p, d, ga)
		}
		return
	}
	if a.Key == "" {
		return // slog: an attribute without a key is dropped
	}
	val := valueString(v)
	fields[FieldName(prefix+a.Key)] = val
	text.WriteByte(' ')
	text.WriteString(dotted + a.Key)
	text.WriteByte('=')
	text.WriteString(quote(val))
}

// quote returns s as logfmt writes a value: bare when that is unambiguous.
func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " =\"\t\n\r\\") || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	return s
}

func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	default:
		return v.String()
	}
}

// reserved reports the fields journald or journalctl give a meaning; an
// attribute never sets them.
func reserved(name string) bool {
	switch name {
	case "MESSAGE", "MESSAGE_ID", "PRIORITY", "ERRNO", "DOCUMENTATION", "TID",
		"INVOCATION_ID", "USER_INVOCATION_ID", "UNIT", "USER_UNIT":
		return true
	}
	return strings.HasPrefix(name, "SYSLOG_") || strings.HasPrefix(name, "CODE_") ||
		strings.HasPrefix(name, "OBJECT_") || strings.HasPrefix(name, "COREDUMP_")
}

// FieldName maps an attribute key (with its group prefix) to a journal
// field name, as the package comment describes.
func FieldName(key string) string {
	b := make([]byte, 0, len(key))
	for _, c := range key { // one '_' per character, not per byte
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, byte(c-'a'+'A'))
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			b = append(b, byte(c))
		default:
			b = append(b, '_')
		}
	}
	name := strings.TrimLeft(string(b), "0123456789_")
	if name == "" || reserved(name) {
		name = "VIGIL_" + name
	}
	// journald caps field names at 64 bytes.
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// Priority maps a slog level to a syslog priority; levels between the
// named ones round towards the more severe.
func Priority(l slog.Level) sdjournal.Priority {
	switch {
	case l >= slog.LevelError:
		return sdjournal.PriErr
	case l > slog.LevelInfo:
		return sdjournal.PriWarning
	case l > slog.LevelDebug:
		return sdjournal.PriInfo
	default:
		return sdjournal.PriDebug
	}
}
