// Package statefile persists small pieces of protocol state (epochs,
// incarnations, grants, maintenance) so that a restart never reuses them.
//
// One format for every state file (docs/protocol.md, "Persisted state"):
// a single line of JSON
//
//	{"format":"vigil-state/1","kind":"node","cluster":"edge","id":"a","state":{...},"crc32c":"1a2b3c4d"}
//
// where crc32c is the CRC-32C (Castagnoli) of the same record's compact
// JSON without the crc32c member, in hex. kind, cluster and id name the
// process the file belongs to: a file copied from another node, another
// cluster or another process is refused, as is a file that is empty,
// truncated, `null`, `{}`, has unknown or missing members or a wrong
// checksum. A refusal names the file and what is wrong: the protocol state
// is never guessed (a forgotten epoch could be reused).
//
// Writes are atomic and durable: a temporary file in the same directory,
// fsync, rename over the old one, fsync of the directory. A crash at any
// point leaves either the old or the new state, never a mix.
package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// Format is the format member of every state file.
const Format = "vigil-state/1"

// Owner is what a state file belongs to; Load refuses a file of another.
type Owner struct {
	Kind    string // "node", "locator", "maintenance"
	Cluster string // cluster.name
	ID      string // cluster.node: the host the process runs on
}

// Errors of Load (wrapped, with the path and the detail).
var (
	// ErrCorrupt: not a state file, or damaged (torn write, bit flips,
	// hand edits).
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrForeign: a valid state file of another cluster, host or process.
	ErrForeign = errors.New("state file belongs to another")
)

// Result says what Load found.
type Result int

// Load results.
const (
	Missing Result = iota // no file: a first start, or the state was lost
	Loaded
	// LoadedLegacy: a file written before this format (bare JSON of the
	// state, no checksum or owner), read because every member is exactly
	// there; the next Save rewrites it in the current format.
	LoadedLegacy
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type record struct {
	Format  string          `json:"format"`
	Kind    string          `json:"kind"`
	Cluster string          `json:"cluster"`
	ID      string          `json:"id"`
	State   json.RawMessage `json:"state"`
	CRC32C  string          `json:"crc32c,omitempty"`
}

// checksum is the CRC-32C of r's compact JSON without the crc32c member.
func (r record) checksum() (string, error) {
	r.CRC32C = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%08x", crc32.Checksum(b, castagnoli)), nil
}

// Encode returns the file content Save writes for v.
func Encode(o Owner, v any) ([]byte, error) {
	st, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	r := record{Format: Format, Kind: o.Kind, Cluster: o.Cluster, ID: o.ID, State: st}
	if r.CRC32C, err = r.checksum(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Save writes v, owned by o, to path durably.
func Save(path string, o Owner, v any) error {
	b, err := Encode(o, v)
	if err != nil {
		return fmt.Errorf("statefile: encode %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("statefile: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("statefile: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("statefile: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("statefile: rename to %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("statefile: fsync %s: %w", dir, err)
	}
	return nil
}

// Load reads path, which must belong to o, into v (a pointer to a struct).
// A missing file leaves v untouched and returns Missing: a first start, or
// a lost state directory (the caller says so). Anything else that is not a
// complete, intact state file of o is an error wrapping ErrCorrupt or
// ErrForeign that names the file; v is then untouched.
func Load(path string, o Owner, v any) (Result, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Missing, nil
	}
	if err != nil {
		return Missing, fmt.Errorf("statefile: %w", err)
	}
	res, err := decode(b, o, v)
	if err != nil {
		how := "move it away only if every node of the cluster is stopped, or restore it from a backup"
		if errors.Is(err, ErrForeign) {
			how = "runtime.state_dir must be this process's own directory: restore this host's file"
		}
		return Missing, fmt.Errorf("statefile: %s: %w; refusing to guess the protocol state: %s", path, err, how)
	}
	return res, nil
}

func decode(b []byte, o Owner, v any) (Result, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return 0, fmt.Errorf("%w: empty (%d bytes)", ErrCorrupt, len(b))
	}
	var top map[string]json.RawMessage
	if err := strictDecode(b, &top); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if top == nil {
		return 0, fmt.Errorf("%w: null", ErrCorrupt)
	}
	if _, ok := top["format"]; !ok {
		// A file of the format before this one: exactly the state's
		// members, nothing else. {} is not a state.
		if err := decodeState(b, v); err != nil {
			return 0, fmt.Errorf("%w: no format member, and not a complete state of the previous format: %v", ErrCorrupt, err)
		}
		return LoadedLegacy, nil
	}
	var r record
	if err := strictDecode(b, &r); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if missing := missingKeys(top, "format", "kind", "cluster", "id", "state", "crc32c"); len(missing) > 0 {
		return 0, fmt.Errorf("%w: missing %s", ErrCorrupt, strings.Join(missing, ", "))
	}
	if r.Format != Format {
		return 0, fmt.Errorf("%w: format %q, want %q", ErrCorrupt, r.Format, Format)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, r.State); err != nil {
		return 0, fmt.Errorf("%w: state: %v", ErrCorrupt, err)
	}
	r.State = compact.Bytes()
	sum, err := r.checksum()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if sum != r.CRC32C {
		return 0, fmt.Errorf("%w: checksum mismatch (file says crc32c %q, content has %q)", ErrCorrupt, r.CRC32C, sum)
	}
	if r.Kind != o.Kind || r.Cluster != o.Cluster || r.ID != o.ID {
		return 0, fmt.Errorf("%w: it is the %s state of %q in cluster %q, this is the %s of %q in cluster %q",
			ErrForeign, r.Kind, r.ID, r.Cluster, o.Kind, o.ID, o.Cluster)
	}
	if err := decodeState(r.State, v); err != nil {
		return 0, fmt.Errorf("%w: state: %v", ErrCorrupt, err)
	}
	return Loaded, nil
}

// decodeState decodes b into v requiring every member v encodes to (the
// exact names) and no other, except that a member whose field is tagged
// omitzero or omitempty may be missing (a state written before the field
// existed, or with its zero value, which is not written): it decodes as
// the zero value.
func decodeState(b []byte, v any) error {
	var got map[string]json.RawMessage
	if err := strictDecode(b, &got); err != nil {
		return err
	}
	if got == nil {
		return errors.New("null")
	}
	ref, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(ref, &want); err != nil {
		return fmt.Errorf("state type is not a JSON object: %w", err)
	}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if missing := missingKeys(got, keys...); len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	optional := optionalMembers(v)
	for k := range got {
		if _, ok := want[k]; !ok && !optional[k] {
			return fmt.Errorf("unknown member %q", k)
		}
	}
	return strictDecode(b, v)
}

// optionalMembers names the JSON members of the struct v points to whose
// fields are tagged omitzero or omitempty.
func optionalMembers(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	if t == nil || t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		for _, o := range strings.Split(opts, ",") {
			if o == "omitzero" || o == "omitempty" {
				out[name] = true
			}
		}
	}
	return out
}

func missingKeys(m map[string]json.RawMessage, keys ...string) []string {
	var out []string
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// strictDecode decodes exactly one JSON value, refusing unknown fields and
// trailing data.
func strictDecode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("truncated: %w", err)
		}
		return err
	}
	if d.More() {
		return errors.New("trailing data after the record")
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the record")
	}
	return nil
}
