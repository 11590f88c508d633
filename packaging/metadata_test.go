package packaging

import (
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// nfpmMaintainer is the maintainer line of nfpm.yaml, the one the packages,
// the changelog and the copyright file must all name.
func nfpmMaintainer(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^maintainer: *(.+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("nfpm.yaml: no maintainer")
	}
	if strings.Contains(string(m[1]), "example.") {
		t.Errorf("nfpm.yaml maintainer %q is a placeholder", m[1])
	}
	return string(m[1])
}

// dep5 parses packaging/copyright into its paragraphs (field -> value).
func dep5(t *testing.T) []map[string]string {
	t.Helper()
	b, err := os.ReadFile("copyright")
	if err != nil {
		t.Fatal(err)
	}
	var paras []map[string]string
	for _, block := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
		p := map[string]string{}
		key := ""
		for _, l := range strings.Split(block, "\n") {
			if strings.HasPrefix(l, " ") && key != "" {
				p[key] += "\n" + strings.TrimSpace(l)
				continue
			}
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				t.Fatalf("copyright: bad line %q", l)
			}
			key = k
			p[k] = strings.TrimSpace(v)
		}
		paras = append(paras, p)
	}
	return paras
}

// TestCopyright: DEP-5, Apache-2.0 for Vigil, every license named has its
// text (or is in Debian's common-licenses), the contact is the maintainer.
func TestCopyright(t *testing.T) {
	paras := dep5(t)
	if got := paras[0]["Format"]; got != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" {
		t.Errorf("Format: %q", got)
	}
	if got, want := paras[0]["Upstream-Contact"], nfpmMaintainer(t); got != want {
		t.Errorf("Upstream-Contact %q, want nfpm.yaml's maintainer %q", got, want)
	}
	texts := map[string]bool{}
	var used []string
	for _, p := range paras[1:] {
		if _, ok := p["Files"]; ok {
			if p["Files"] == "*" && p["License"] != "Apache-2.0" {
				t.Errorf("Files: * has License %q, want Apache-2.0", p["License"])
			}
			used = append(used, strings.Split(p["License"], " and ")...)
			continue
		}
		name, text, _ := strings.Cut(p["License"], "\n")
		if len(text) < 200 {
			t.Errorf("License paragraph %q has no full text", name)
		}
		texts[name] = true
	}
	for _, l := range used {
		if !texts[l] {
			t.Errorf("license %q is used but has no License paragraph", l)
		}
	}
	lic, err := os.ReadFile("../LICENSE")
	if err != nil || !strings.Contains(string(lic), "Apache License\n                           Version 2.0, January 2004") ||
		!strings.Contains(string(lic), "END OF TERMS AND CONDITIONS") {
		t.Errorf("LICENSE is not the Apache License 2.0 text (%v)", err)
	}
}

// checkDebBinary runs the deb's /usr/bin/vigil: its version is
// scripts/version.sh's and `make build`'s for the same tree, a missing
// configuration file ends it with the exit status the unit does not retry,
// and copyright covers every module it links.
func checkDebBinary(t *testing.T, deb string) {
	t.Helper()
	root := t.TempDir()
	run(t, ".", nil, "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/bin/vigil")

	want := strings.TrimSpace(run(t, "..", nil, "./scripts/version.sh"))
	if got := binaryVersion(t, bin); got != want {
		t.Errorf("deb's vigil version %q, scripts/version.sh %q", got, want)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	made := filepath.Join(t.TempDir(), "vigil")
	run(t, "..", nil, "make", "-s", "build", "GO="+goTool, "BIN="+made)
	if got := binaryVersion(t, made); got != want {
		t.Errorf("make build's vigil version %q, the deb's %q", got, want)
	}

	u := unitDirectives(t, "vigil.service")
	prevent := u["Service"]["RestartPreventExitStatus"]
	cmd := exec.Command(bin, "supervise", "-c", filepath.Join(root, "absent.yaml"))
	out, err := cmd.CombinedOutput()
	if len(prevent) != 1 || cmd.ProcessState == nil || cmd.ProcessState.String() != "exit status "+prevent[0] {
		t.Errorf("supervise with a missing config: %v (%s); the unit's RestartPreventExitStatus=%v", err, out, prevent)
	}

	mods := run(t, ".", nil, goTool, "version", "-m", bin)
	var files []*regexp.Regexp
	for _, p := range dep5(t)[1:] {
		for _, f := range strings.Fields(p["Files"]) {
			if f == "*" {
				continue
			}
			files = append(files, regexp.MustCompile("^"+strings.ReplaceAll(regexp.QuoteMeta(f), `\*`, ".*")+"$"))
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+dep\s+(\S+)`).FindAllStringSubmatch(mods, -1) {
		covered := false
		for _, re := range files {
			covered = covered || re.MatchString(m[1]+"/x.go")
		}
		if !covered {
			t.Errorf("copyright has no Files paragraph for the linked module %s", m[1])
		}
	}

	// The maintainer, everywhere the deb names one.
	maint := nfpmMaintainer(t)
	if got := strings.TrimSpace(run(t, ".", nil, "dpkg-deb", "-f", deb, "Maintainer")); got != maint {
		t.Errorf("deb Maintainer %q, nfpm.yaml %q", got, maint)
	}
	f, err := os.Open(filepath.Join(root, "usr/share/doc/vigil/changelog.Debian.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cl), "\n -- "+maint+"  ") {
		t.Errorf("changelog.Debian trailer does not name %q:\n%s", maint, cl)
	}
}

func binaryVersion(t *testing.T, bin string) string {
	t.Helper()
	out := run(t, ".", nil, bin, "version")
	v, ok := strings.CutPrefix(strings.SplitN(out, "\n", 2)[0], "vigil ")
	if !ok {
		t.Fatalf("%s version: %q", bin, out)
	}
	return v
}

// checkRPMMetadata: license, maintainer, what the scriptlets need, and the
// license file as %license.
func checkRPMMetadata(t *testing.T, rpm string) {
	t.Helper()
	meta := run(t, ".", nil, "rpm", "-qp", "--qf", "%{LICENSE}\n%{PACKAGER}\n%{VERSION}\n", rpm)
	want := "Apache-2.0\n" + nfpmMaintainer(t) + "\n" + strings.TrimSpace(run(t, "..", nil, "./scripts/version.sh")) + "\n"
	if meta != want {
		t.Errorf("rpm License, Packager, Version:\n%s\nwant\n%s", meta, want)
	}
	req := run(t, ".", nil, "rpm", "-qp", "--requires", rpm)
	for _, r := range []string{"/bin/sh", "systemd", "shadow-utils"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(r) + `$`).MatchString(req) {
			t.Errorf("rpm does not require %s (its scriptlets run it); requires:\n%s", r, req)
		}
	}
	lic := run(t, ".", nil, "rpm", "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILENAMES}\n]`, rpm)
	if !strings.Contains(lic, "l /usr/share/licenses/vigil/LICENSE\n") {
		t.Errorf("rpm has no %%license /usr/share/licenses/vigil/LICENSE:\n%s", lic)
	}
}
