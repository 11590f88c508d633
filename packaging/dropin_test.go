package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// documentedDropIn is the example drop-in of docs/operations.md ("The
// unit's sandbox and your applications"): the ini block after `systemctl
// edit vigil`.
func documentedDropIn(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)systemctl edit vigil[^\n]*\n```\n\n```ini\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/operations.md: no ```ini drop-in after `systemctl edit vigil`")
	}
	return string(m[1])
}

// TestDocumentedDropIn: the drop-in the docs offer for relaxing the sandbox
// is one systemd accepts, and it relaxes what the docs say it does.
func TestDocumentedDropIn(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	unit := unitForVerify(t)
	dir := filepath.Join(filepath.Dir(unit), "vigil.service.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "override.conf")
	verify := func() string {
		out, err := exec.Command(sa, "verify", "--man=no", unit).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// First prove that verify reads drop-ins beside the unit.
	if err := os.WriteFile(conf, []byte("[Service]\nNoSuchKey=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(); !strings.Contains(out, "NoSuchKey") {
		t.Fatalf("systemd-analyze verify ignores %s; got %q", conf, out)
	}
	dropIn := documentedDropIn(t)
	if err := os.WriteFile(conf, []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(); out != "" {
		t.Errorf("the documented drop-in:\n%s\nsystemd-analyze verify:\n%s", dropIn, out)
	}
	for _, want := range []string{"ReadWritePaths=/etc/asterisk", "PrivateTmp=no", "ProtectHome=no"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(dropIn) {
			t.Errorf("the documented drop-in lacks %s", want)
		}
	}
	// The drop-in must relax the unit: the exposure score rises above the
	// shipped unit's.
	with := exposure(t, sa, unit, nil)
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	if without := exposure(t, sa, unit, nil); with <= without {
		t.Errorf("exposure with the drop-in %.1f, without %.1f: the drop-in does not relax anything systemd sees", with, without)
	}
}
