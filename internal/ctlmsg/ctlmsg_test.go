package ctlmsg

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/transport"
)

var update = flag.Bool("update", false, "rewrite testdata/report-keys.golden")

// fill sets every field reachable from v to a non-zero value, so that a
// marshalled value shows every key (omitempty included).
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i))
		}
	}
}

// keyPaths lists the JSON key paths of a decoded document: "a", "a.b",
// "a[].c" (maps as a.*).
func keyPaths(prefix string, doc any, out *[]string) {
	switch d := doc.(type) {
	case map[string]any:
		for k, v := range d {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			*out = append(*out, p)
			keyPaths(p, v, out)
		}
	case []any:
		for _, v := range d {
			keyPaths(prefix+"[]", v, out)
		}
	}
}

func reportKeys(t *testing.T, name string, v any) []string {
	t.Helper()
	fill(reflect.ValueOf(v).Elem())
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	keyPaths("", doc, &keys)
	// A map's keys are data, not schema.
	for i, k := range keys {
		keys[i] = strings.Replace(k, ".x", ".*", 1)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	for i := range keys {
		keys[i] = name + " " + keys[i]
	}
	return keys
}

// The reports' JSON keys are the wire between a supervisor and a
// control-plane binary of another version, and `vigil status --json`'s
// format: a key renamed in the types shows up here as a diff to review
// (go test ./internal/ctlmsg -update rewrites the file), not as a silently
// zero field on the other side.
func TestReportKeysGolden(t *testing.T) {
	got := append(reportKeys(t, "nodemanager", &NodeManagerReport{}), reportKeys(t, "locator", &LocatorReport{})...)
	text := strings.Join(got, "\n") + "\n"
	path := filepath.Join("testdata", "report-keys.golden")
	if *update {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./internal/ctlmsg -update creates it)", err)
	}
	if string(want) != text {
		wl, gl := strings.Split(string(want), "\n"), strings.Split(text, "\n")
		var diff []string
		for _, k := range gl {
			if !slices.Contains(wl, k) {
				diff = append(diff, "+ "+k)
			}
		}
		for _, k := range wl {
			if !slices.Contains(gl, k) {
				diff = append(diff, "- "+k)
			}
		}
		t.Fatalf("report keys changed (review, then go test ./internal/ctlmsg -update):\n%s", strings.Join(diff, "\n"))
	}
}

// Every top-level key of both reports is documented in the operations
// guide's table of `vigil status --json`.
func TestReportKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key    string
		report any
	}{{"nodemanager", &NodeManagerReport{}}, {"locator", &LocatorReport{}}} {
		var row string
		for _, l := range strings.Split(string(doc), "\n") {
			if strings.HasPrefix(l, "| `"+c.key+"` |") {
				row = l
			}
		}
		if row == "" {
			t.Fatalf("docs/operations.md has no `%s` row", c.key)
		}
		for _, k := range reportKeys(t, "", c.report) {
			k = strings.TrimSpace(k)
			if strings.ContainsAny(k, ".[") {
				continue
			}
			if !strings.Contains(row, "`"+k+"`") && !strings.Contains(row, "`"+k+".") && !strings.Contains(row, "`"+k+"[]") {
				t.Errorf("%s report key %q is not in docs/operations.md's `%s` row", c.key, k, c.key)
			}
		}
	}
}

// A report goes through a message and comes back the same, typed; the
// wrong decoder or a message of another type is an error, not a zero
// report.
func TestReportRoundTrip(t *testing.T) {
	nm := &NodeManagerReport{}
	fill(reflect.ValueOf(nm).Elem())
	nm.Beat = false // a full report (a beat carries its own fields: TestBeatWireKeepsEveryBeatField)
	m, err := NodeManagerReportMsg(nm)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Msg
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.NodeManagerReport()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, nm) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, nm)
	}
	if _, err := Health(true, nil).NodeManagerReport(); err == nil {
		t.Error("a health message decoded as a report")
	}
	bad := &Msg{Type: TypeReport, Report: json.RawMessage(`{"epoch":"seven"}`)}
	if _, err := bad.LocatorReport(); err == nil {
		t.Error("a report with a wrongly typed field decoded")
	}
}

// The constructors set what the receivers read.
func TestConstructors(t *testing.T) {
	if m := Fault(7, "fenced"); m.Type != TypeFault || m.Epoch != 7 || !slices.Equal(m.Reasons, []string{"fenced"}) {
		t.Errorf("fault: %+v", m)
	}
	if m := Reply(3, errors.New("no")); m.Type != TypeReply || m.ID != 3 || m.Error != "no" {
		t.Errorf("reply: %+v", m)
	}
	if m := Reply(3, nil); m.Error != "" {
		t.Errorf("reply without error: %+v", m)
	}
	if m := Health(false, []string{"sip"}); m.Type != TypeHealth || m.Healthy == nil || *m.Healthy {
		t.Errorf("health: %+v", m)
	}
	c := &Config{VIPs: []VIP{{Address: "192.0.2.10/24", Interface: "eth0"}}, Hooks: Hooks{Timeout: time.Second}}
	if m := ConfigMsg(c); m.Type != TypeConfig || m.Config != c {
		t.Errorf("config: %+v", m)
	}
	if m := Command(CmdMaintenance, "on"); m.Type != TypeCommand || m.Cmd != "maintenance" || m.Arg != "on" {
		t.Errorf("command: %+v", m)
	}
}

// A beat carries the lease fields only, and merged into the last full
// report it moves exactly those: the rest stays as the full report said.
func TestBeatMerge(t *testing.T) {
	full := &NodeManagerReport{BeatFields: BeatFields{Self: "a", Role: "standby", Epoch: 3, Active: "b", LeaseMS: 200, Healthy: true},
		Peers: []PeerState{{ID: "a"}, {ID: "b"}}, Takeovers: 2, Transport: transport.Stats{Received: 9}}
	now := &NodeManagerReport{BeatFields: BeatFields{Self: "a", Role: "active", Epoch: 4, Active: "a", LeaseValid: true, LeaseRemainingMS: 150,
		LeaseMS: 200, HoldingToken: true, TokenAgeMS: 1, RotationMS: 40, Healthy: true, DrainingTo: "",
		Succession: &Succession{Epoch: 4, To: "b"}}, Takeovers: 3}
	beat := &NodeManagerReport{Beat: true, BeatFields: now.BeatFields}
	msg := jsonRoundTrip(t, beat)
	var keys map[string]any
	if err := json.Unmarshal(msg.Report, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peers", "locators", "vips_held", "takeovers"} {
		if v, ok := keys[k]; ok && v != nil && fmt.Sprint(v) != "0" {
			t.Errorf("a beat carries %q = %v", k, v)
		}
	}
	got := MergeBeat(full, beat)
	if got.Succession == nil || got.Succession.To != "b" {
		t.Errorf("the succession a beat carries is not merged: %+v", got.Succession)
	}
	if got.Beat || got.Role != "active" || got.Epoch != 4 || got.LeaseRemainingMS != 150 || !got.LeaseValid || !got.HoldingToken {
		t.Errorf("merged lease fields wrong: %+v", got)
	}
	if got.Takeovers != 2 || len(got.Peers) != 2 || got.Transport.Received != 9 {
		t.Errorf("merge lost the full report's other fields: %+v", got)
	}
	if full.Role != "standby" {
		t.Error("merge changed the last full report in place")
	}
	if MergeBeat(nil, beat) != beat {
		t.Error("a beat before any full report is not kept as it is")
	}
}

// A beat on the wire decodes to exactly the beat that was sent: every
// BeatFields field survives (each is set below by reflection), and
// nothing else is sent.
func TestBeatWireKeepsEveryBeatField(t *testing.T) {
	var now NodeManagerReport
	fill(reflect.ValueOf(&now).Elem())
	beat := &NodeManagerReport{Beat: true, BeatFields: now.BeatFields}
	msg := jsonRoundTrip(t, beat)
	got, err := msg.NodeManagerReport()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, beat) {
		t.Fatalf("beat after the wire:\n%+v\nsent:\n%+v", got, beat)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(msg.Report, &keys); err != nil {
		t.Fatal(err)
	}
	if want := 1 + reflect.TypeOf(BeatFields{}).NumField(); len(keys) != want {
		t.Errorf("a beat carries %d keys, want %d: %s", len(keys), want, msg.Report)
	}
}

// jsonRoundTrip is r's message as a peer that reads only JSON gets it.
func jsonRoundTrip(t *testing.T, r *NodeManagerReport) *Msg {
	t.Helper()
	msg, err := NodeManagerReportMsg(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(msg, false)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != '{' {
		t.Fatalf("a beat for a JSON reader is not JSON: %q", b)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
