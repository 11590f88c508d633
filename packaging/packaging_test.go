// Package packaging holds the nfpm description, the systemd unit and the
// maintainer scripts of Vigil's .deb and .rpm; its tests check the unit with
// systemd-analyze and build both packages and inspect them with dpkg-deb,
// rpm, lintian and rpmlint.
package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/testtool"
)

// need is testtool.Need.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	return testtool.Need(t, tool, pkg)
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// unitDirectives parses a unit file into section -> key -> values.
func unitDirectives(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			sec = strings.Trim(line, "[]")
			out[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[sec][k] = append(out[sec][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnitDirectives(t *testing.T) {
	u := unitDirectives(t, "vigil.service")
	svc := u["Service"]
	for k, want := range map[string]string{
		"Type":                     "notify",
		"NotifyAccess":             "main",
		"Delegate":                 "yes",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "2",
		"KillMode":                 "mixed",
		"OOMPolicy":                "continue",
		"LimitMEMLOCK":             "infinity",
		"ExecStart":                "/usr/bin/vigil supervise -c /etc/vigil/vigil.yaml",
		"ExecReload":               "/usr/bin/vigil reload",
		"ProtectSystem":            "full",
		"ProtectHome":              "read-only",
		"PrivateTmp":               "yes",
		"RuntimeDirectory":         "vigil",
		"RuntimeDirectoryMode":     "0750",
		"StateDirectory":           "vigil",
		"ProtectControlGroups":     "no",
		"RestrictRealtime":         "no",
		"RestrictNamespaces":       "no",
		"ProtectKernelTunables":    "yes",
	} {
		if got := svc[k]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"WatchdogSec", "TimeoutStopSec"} {
		if len(svc[k]) != 1 || svc[k][0] == "" || svc[k][0] == "0" || svc[k][0] == "infinity" {
			t.Errorf("[Service] %s = %q, want a finite time", k, svc[k])
		}
	}
	caps := strings.Fields(strings.Join(svc["CapabilityBoundingSet"], " "))
	want := []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SYS_NICE", "CAP_IPC_LOCK",
		"CAP_SYS_RESOURCE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER"}
	if strings.Join(caps, " ") != strings.Join(want, " ") {
		t.Errorf("CapabilityBoundingSet = %v, want %v (README.md explains each; change both)", caps, want)
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q", got)
	}
}

// unitForVerify copies the unit with ExecStart and ExecReload pointing at
// an executable that exists here (verify checks every command: a machine
// without the package installed has no /usr/bin/vigil), everything else
// unchanged.
func unitForVerify(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("vigil.service")
	if err != nil {
		t.Fatal(err)
	}
	u := string(b)
	for _, key := range []string{"ExecStart", "ExecReload"} {
		v := strings.ReplaceAll(u, key+"=/usr/bin/vigil ", key+"=/bin/true ")
		if v == u {
			t.Fatalf("vigil.service: no %s=/usr/bin/vigil to replace", key)
		}
		u = v
	}
	p := filepath.Join(t.TempDir(), "vigil.service")
	if err := os.WriteFile(p, []byte(u), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnitVerify(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	out, err := exec.Command(sa, "verify", "--man=no", unitForVerify(t)).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitSecurity keeps the hardening from eroding: the exposure score
// was 5.1 when the unit was written (packaging/README.md).
func TestUnitSecurity(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	var out string
	score := exposure(t, sa, unitForVerify(t), &out)
	t.Logf("systemd-analyze security: %.1f", score)
	if score > 5.1 {
		t.Errorf("exposure level %.1f > 5.1: a hardening directive was lost\n%s", score, out)
	}
}

// exposure is systemd-analyze security's overall exposure level for the
// unit file (with any drop-ins beside it); its report goes to *report.
func exposure(t *testing.T, sa, unit string, report *string) float64 {
	t.Helper()
	out, _ := exec.Command(sa, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in systemd-analyze security output:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if report != nil {
		*report = string(out)
	}
	return score
}

func TestMaintainerScriptsParse(t *testing.T) {
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run(t, ".", nil, "sh", "-n", filepath.Join("scripts", s))
	}
}

// buildPackage runs build.sh into dir, with env added to the environment,
// and returns the package's path.
func buildPackage(t *testing.T, kind, dir string, env ...string) string {
	t.Helper()
	out := run(t, "..", append([]string{"VIGIL_DIST=" + dir}, env...), "./packaging/build.sh", kind)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	p := lines[len(lines)-1]
	if !filepath.IsAbs(p) {
		p = filepath.Join("..", p)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("build.sh %s printed %q: %v\n%s", kind, p, err, out)
	}
	return p
}

var wantFiles = []string{
	"/usr/bin/vigil",
	"/etc/vigil/vigil.yaml",
	"/usr/share/man/man8/vigil.8.gz",
	"/usr/share/man/man5/vigil.yaml.5.gz",
	"/usr/share/bash-completion/completions/vigil",
	"/usr/share/doc/vigil/README.md",
	"/usr/share/doc/vigil/configuration.md",
	"/usr/share/doc/vigil/operations.md",
	"/usr/share/doc/vigil/copyright",
	"/usr/share/vigil/grafana/vigil-dashboard.json",
	"/usr/share/vigil/prometheus/vigil-rules.yml",
}

func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the package")
	}
	need(t, "dpkg-deb", "dpkg")
	lintian := need(t, "lintian", "lintian")
	deb := buildPackage(t, "deb", t.TempDir())
	if !regexp.MustCompile(`/vigil_[0-9][A-Za-z0-9.+~]*_amd64\.deb$`).MatchString(deb) {
		t.Errorf("package name %s", deb)
	}
	list := run(t, ".", nil, "dpkg-deb", "-c", deb)
	files := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(l)
		files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
	}
	for _, f := range append(wantFiles, "/lib/systemd/system/vigil.service", "/usr/share/doc/vigil/changelog.Debian.gz", "/usr/share/zsh/vendor-completions/_vigil") {
		if _, ok := files[f]; !ok {
			t.Errorf("deb lacks %s; has:\n%s", f, list)
		}
	}
	if m := files["/usr/bin/vigil"]; m != "-rwxr-xr-x" {
		t.Errorf("/usr/bin/vigil mode %s", m)
	}
	checkDebBinary(t, deb)
	ctrl := t.TempDir()
	run(t, ".", nil, "dpkg-deb", "-e", deb, ctrl)
	conf, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || strings.TrimSpace(string(conf)) != "/etc/vigil/vigil.yaml" {
		t.Errorf("conffiles = %q, %v; want /etc/vigil/vigil.yaml only", conf, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(ctrl, s)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("control %s: %v", s, err)
		}
	}
	out, err := exec.Command(lintian, "--tag-display-limit", "0", deb).CombinedOutput()
	t.Logf("lintian:\n%s", out)
	if err != nil || regexp.MustCompile(`(?m)^E: `).Match(out) {
		t.Errorf("lintian reports errors (%v)", err)
	}
}

func TestRPM(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the package")
	}
	need(t, "rpm", "rpm")
	rpmlint := need(t, "rpmlint", "rpmlint")
	rpm := buildPackage(t, "rpm", t.TempDir())
	if !regexp.MustCompile(`/vigil-[0-9][A-Za-z0-9.+~]*\.x86_64\.rpm$`).MatchString(rpm) {
		t.Errorf("package name %s", rpm)
	}
	// FILEFLAGS: c = %config, n = noreplace, d = %doc.
	list := run(t, ".", nil, "rpm", "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILENAMES}\n]`, rpm)
	files := map[string][2]string{}
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 { // no flags
			f = append([]string{""}, f...)
		}
		files[f[2]] = [2]string{f[0], f[1]}
	}
	for _, f := range append(wantFiles, "/usr/lib/systemd/system/vigil.service", "/usr/share/zsh/site-functions/_vigil") {
		if _, ok := files[f]; !ok {
			t.Errorf("rpm lacks %s; has:\n%s", f, list)
		}
	}
	if got := files["/etc/vigil/vigil.yaml"][0]; got != "cn" {
		t.Errorf("/etc/vigil/vigil.yaml flags %q, want cn (%%config(noreplace))", got)
	}
	if got := files["/usr/share/doc/vigil/README.md"][0]; got != "d" {
		t.Errorf("README.md flags %q, want d (%%doc)", got)
	}
	if got := files["/usr/bin/vigil"][1]; got != "-rwxr-xr-x" {
		t.Errorf("/usr/bin/vigil mode %s", got)
	}
	checkRPMMetadata(t, rpm)
	scripts := run(t, ".", nil, "rpm", "-qp", "--scripts", rpm)
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "vigil keygen"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm scripts lack %q:\n%s", s, scripts)
		}
	}
	out, err := exec.Command(rpmlint, "-r", "rpmlintrc", rpm).CombinedOutput()
	t.Logf("rpmlint:\n%s", out)
	if err != nil || !regexp.MustCompile(`(?m) 0 errors,`).Match(out) {
		t.Errorf("rpmlint reports errors (%v)", err)
	}
}
