package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type st struct {
	Epoch uint64
	Who   string
}

func TestSaveLoadRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "node.state")
	var got st
	if ok, err := Load(p, &got); ok || err != nil {
		t.Fatalf("missing file: ok=%v err=%v", ok, err)
	}
	for e := uint64(1); e <= 3; e++ {
		if err := Save(p, st{Epoch: e, Who: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := Load(p, &got); !ok || err != nil || got != (st{3, "a"}) {
		t.Fatalf("load: %v %v %+v", ok, err, got)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "node.state")
	if err := os.WriteFile(p, []byte(`{"Epoch": 4`), 0o600); err != nil {
		t.Fatal(err)
	}
	var got st
	_, err := Load(p, &got)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt file: %v", err)
	}
}

func TestSaveToUnwritableDirFails(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes anywhere; use a path under a regular file instead.
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		if err := Save(filepath.Join(f, "x.state"), st{}); err == nil {
			t.Fatal("save under a regular file succeeded")
		}
		return
	}
	d := t.TempDir()
	os.Chmod(d, 0o500)
	if err := Save(filepath.Join(d, "x.state"), st{}); err == nil {
		t.Fatal("save to read-only dir succeeded")
	}
}
