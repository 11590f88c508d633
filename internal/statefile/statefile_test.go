package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type st struct {
	Epoch uint64
	Who   string
}

var me = Owner{Kind: "locator", Cluster: "edge", ID: "w"}

func TestSaveLoadRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "node.state")
	var got st
	if res, err := Load(p, me, &got); res != Missing || err != nil {
		t.Fatalf("missing file: %v err=%v", res, err)
	}
	for e := uint64(1); e <= 3; e++ {
		if err := Save(p, me, st{Epoch: e, Who: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := Load(p, me, &got); res != Loaded || err != nil || got != (st{3, "a"}) {
		t.Fatalf("load: %v %v %+v", res, err, got)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	b, _ := os.ReadFile(p)
	want := `{"format":"vigil-state/1","kind":"locator","cluster":"edge","id":"w","state":{"Epoch":3,"Who":"a"},"crc32c":"`
	if !strings.HasPrefix(string(b), want) || !strings.HasSuffix(string(b), "\"}\n") {
		t.Fatalf("file content %q, want the documented format", b)
	}
}

// Every file that is not a complete, intact state file of this process is
// refused with an error naming the file and what is wrong, and loads
// nothing: before, null, {} and unknown members loaded as a zero state.
func TestLoadRefuses(t *testing.T) {
	good, err := Encode(me, st{Epoch: 7, Who: "b"})
	if err != nil {
		t.Fatal(err)
	}
	other := func(o Owner) string {
		b, err := Encode(o, st{Epoch: 7, Who: "b"})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	g := strings.TrimSpace(string(good))
	cases := []struct {
		name, content string
		want          error
		detail        string
	}{
		{"empty", "", ErrCorrupt, "empty"},
		{"blank", " \n", ErrCorrupt, "empty"},
		{"null", "null", ErrCorrupt, "null"},
		{"empty object", "{}", ErrCorrupt, "missing"},
		{"legacy with unknown member", `{"Epoch":1,"Who":"a","Extra":1}`, ErrCorrupt, "Extra"},
		{"legacy missing member", `{"Epoch":1}`, ErrCorrupt, "missing Who"},
		{"unknown member", strings.Replace(g, `"format"`, `"extra":1,"format"`, 1), ErrCorrupt, "extra"},
		{"unknown state member", strings.Replace(g, `"Who":"b"`, `"Who":"b","X":2`, 1), ErrCorrupt, ""},
		{"missing checksum", g[:strings.Index(g, `,"crc32c"`)] + "}", ErrCorrupt, "crc32c"},
		{"bad checksum", strings.Replace(g, `"Epoch":7`, `"Epoch":8`, 1), ErrCorrupt, "checksum"},
		{"truncated", g[:len(g)/2], ErrCorrupt, "truncated"},
		{"trailing data", g + g, ErrCorrupt, "trailing"},
		{"wrong format", strings.Replace(g, "vigil-state/1", "vigil-state/9", 1), ErrCorrupt, "format"},
		{"other cluster", other(Owner{Kind: "locator", Cluster: "core", ID: "w"}), ErrForeign, `cluster "core"`},
		{"other host", other(Owner{Kind: "locator", Cluster: "edge", ID: "a"}), ErrForeign, `"a"`},
		{"other process", other(Owner{Kind: "node", Cluster: "edge", ID: "w"}), ErrForeign, "node"},
		{"not json", "VGL1\x00\x01", ErrCorrupt, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "locator.state")
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got := st{Epoch: 99}
			res, err := Load(p, me, &got)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (%v), want %v", err, res, c.want)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.detail) {
				t.Fatalf("error %q does not name the file and %q", err, c.detail)
			}
			if got != (st{Epoch: 99}) {
				t.Fatalf("refused file changed the state: %+v", got)
			}
		})
	}
}

// A file of the previous format (bare JSON of the state, every member
// exactly there) is read once, so an upgrade keeps its epochs.
func TestLoadLegacy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "locator.state")
	os.WriteFile(p, []byte(`{"Epoch":4,"Who":"a"}`+"\n"), 0o600)
	var got st
	if res, err := Load(p, me, &got); res != LoadedLegacy || err != nil || got != (st{4, "a"}) {
		t.Fatalf("legacy: %v %v %+v", res, err, got)
	}
}

func TestSaveToUnwritableDirFails(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if err := Save(filepath.Join(f, "x.state"), me, st{}); err == nil {
		t.Fatal("save under a regular file succeeded")
	}
}

func TestFreshIncarnation(t *testing.T) {
	if _, err := FreshIncarnation(time.Unix(0, 0)); err == nil {
		t.Fatal("an unset clock gave an incarnation")
	}
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	inc, err := FreshIncarnation(now)
	if err != nil || inc != uint64(now.Unix()) || inc >= 1<<32 {
		t.Fatalf("incarnation %d %v", inc, err)
	}
}

type stOpt struct {
	Epoch uint64
	Conf  struct{ Version uint64 } `json:",omitzero"`
}

// A member tagged omitzero is optional: a file written before it existed
// (or with it zero, which is not written) loads it as zero, a file with it
// loads it; any other missing or unknown member is still refused.
func TestOptionalMembers(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s")
	if err := Save(p, me, st{Epoch: 4, Who: "a"}); err != nil {
		t.Fatal(err)
	}
	var got stOpt
	if _, err := Load(p, me, &got); err == nil || !strings.Contains(err.Error(), `unknown member "Who"`) {
		t.Errorf("a file with an unknown member: %v", err)
	}
	if err := Save(p, me, stOpt{Epoch: 5}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); strings.Contains(string(b), "Conf") {
		t.Errorf("a zero omitzero member was written: %s", b)
	}
	got = stOpt{}
	if res, err := Load(p, me, &got); res != Loaded || err != nil || got.Epoch != 5 {
		t.Errorf("without the optional member: %v %v %+v", res, err, got)
	}
	w := stOpt{Epoch: 6}
	w.Conf.Version = 2
	if err := Save(p, me, w); err != nil {
		t.Fatal(err)
	}
	got = stOpt{}
	if res, err := Load(p, me, &got); res != Loaded || err != nil || got != w {
		t.Errorf("with the optional member: %v %v %+v", res, err, got)
	}
	if err := Save(p, me, struct{ Conf struct{ Version uint64 } }{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, me, &stOpt{}); err == nil || !strings.Contains(err.Error(), "missing Epoch") {
		t.Errorf("a required member missing: %v", err)
	}
}
