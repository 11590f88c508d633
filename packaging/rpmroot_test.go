package packaging

import (
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// rpmRoot is a throwaway root directory with its own rpm database. rpm
// --root chroots into it for the scriptlets, so it holds a static busybox
// as /bin/sh and, when asked, the host's groupadd and getent with their
// libraries: the tools the scriptlets use where an rpm system has them.
type rpmRoot struct {
	t   *testing.T
	dir string
}

const rpmDB = "/var/lib/rpm"

func newRPMRoot(t *testing.T, busybox string, groupTools bool) *rpmRoot {
	t.Helper()
	r := &rpmRoot{t: t, dir: t.TempDir()}
	for _, d := range []string{"bin", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, busybox, filepath.Join(r.dir, "bin/busybox"), 0o755)
	for _, a := range []string{"sh", "rm", "rmdir"} {
		if err := os.Symlink("busybox", filepath.Join(r.dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	// The scriptlets send output to /dev/null.
	if err := syscall.Mknod(filepath.Join(r.dir, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	if groupTools {
		for _, tool := range []string{"groupadd", "getent"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatalf("%s: %v", tool, err)
			}
			r.copyWithLibs(p)
		}
		if err := os.WriteFile(filepath.Join(r.dir, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, ".", nil, "rpm", "--root", r.dir, "--dbpath", rpmDB, "--initdb")
	return r
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// copyWithLibs copies a dynamically linked host program into the root
// with the shared libraries ldd names, at the same paths.
func (r *rpmRoot) copyWithLibs(prog string) {
	r.t.Helper()
	copyFile(r.t, prog, filepath.Join(r.dir, prog), 0o755)
	out := run(r.t, ".", nil, "ldd", prog)
	for _, lib := range regexp.MustCompile(`(?m)(/\S+) \(0x`).FindAllStringSubmatch(out, -1) {
		real, err := filepath.EvalSymlinks(lib[1])
		if err != nil {
			r.t.Fatal(err)
		}
		copyFile(r.t, real, filepath.Join(r.dir, lib[1]), 0o755)
	}
}

// rpm runs rpm on the root and fails the test on an error or on a failed
// scriptlet, which rpm reports only as a warning for %post.
func (r *rpmRoot) rpm(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("rpm", append([]string{"--root", r.dir, "--dbpath", rpmDB}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || regexp.MustCompile(`(?m)scriptlet failed|^error:`).Match(out) {
		r.t.Fatalf("rpm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tree lists every path in the root but the rpm database: relative path ->
// whether it is a directory.
func (r *rpmRoot) tree() map[string]bool {
	r.t.Helper()
	paths := map[string]bool{}
	err := filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.dir, p)
		if rel == strings.TrimPrefix(rpmDB, "/") {
			return filepath.SkipDir
		}
		if rel != "." {
			paths[rel] = d.IsDir()
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return paths
}

// leftovers checks what an erase left behind, compared with the tree
// before the install: nothing of vigil's but the paths in keep, and
// nothing but directories (the parents rpm creates on the way to a file,
// owned by the filesystem package on a real system) otherwise.
func (r *rpmRoot) leftovers(before map[string]bool, keep ...string) {
	r.t.Helper()
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	var bad []string
	for p, dir := range r.tree() {
		if _, ok := before[p]; ok || kept[p] {
			continue
		}
		if strings.Contains(p, "vigil") || !dir {
			bad = append(bad, p)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		r.t.Errorf("left behind after rpm -e:\n  %s", strings.Join(bad, "\n  "))
	}
	for _, k := range keep {
		if _, err := os.Lstat(filepath.Join(r.dir, k)); err != nil {
			r.t.Errorf("%s should be kept after rpm -e: %v", k, err)
		}
	}
}

// owned checks that the package owns every path of vigil's in the root:
// what it does not own, rpm -e leaves behind.
func (r *rpmRoot) owned(exempt ...string) {
	r.t.Helper()
	var paths []string
	for p := range r.tree() {
		if strings.Contains(p, "vigil") && !contains(exempt, p) {
			paths = append(paths, "/"+p)
		}
	}
	sort.Strings(paths)
	cmd := exec.Command("rpm", append([]string{"--root", r.dir, "--dbpath", rpmDB, "-qf", "--qf", "%{NAME}\n"}, paths...)...)
	// One line per path, "vigil" or "file ... is not owned by any
	// package"; rpm exits non-zero on the latter.
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(paths) {
		r.t.Fatalf("rpm -qf: %v\n%s", err, out)
	}
	for _, l := range lines {
		if l != "vigil" {
			r.t.Error(l)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *rpmRoot) read(p string) string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, p))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

// staticBusybox returns busybox's path, which must be statically linked to
// run in the empty root.
func staticBusybox(t *testing.T) string {
	t.Helper()
	p := need(t, "busybox", "busybox-static")
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is dynamically linked; install busybox-static", p)
			}
			t.Skipf("%s is dynamically linked; install busybox-static", p)
		}
	}
	return p
}

// TestRPMInstallUpgradeErase installs the rpm into throwaway roots, upgrades
// it to a higher version and erases it: without scriptlets, every path of
// vigil's must be owned and nothing may be left; with them, the scriptlets
// must succeed with and without the tools they use, create the group and
// the key, and an erase must leave exactly what packaging/README.md says.
func TestRPMInstallUpgradeErase(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds two packages")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: rpm --root chroots into the throwaway root")
	}
	need(t, "rpm", "rpm")
	need(t, "ldd", "libc-bin")
	busybox := staticBusybox(t)
	dist := t.TempDir()
	v1 := buildPackage(t, "rpm", dist, "VIGIL_PKG_VERSION=1.0.0")
	v2 := buildPackage(t, "rpm", dist, "VIGIL_PKG_VERSION=1.0.1")

	t.Run("files", func(t *testing.T) {
		r := newRPMRoot(t, busybox, false)
		before := r.tree()
		r.rpm("-i", "--nodeps", "--noscripts", v1)
		r.owned()
		if out := r.rpm("-V", "--nodeps", "vigil"); strings.TrimSpace(out) != "" {
			t.Errorf("rpm -V after install:\n%s", out)
		}
		r.rpm("-U", "--nodeps", "--noscripts", v2)
		if got := strings.TrimSpace(r.rpm("-q", "vigil")); got != "vigil-1.0.1-1.x86_64" {
			t.Errorf("after -U: rpm -q vigil = %q", got)
		}
		r.owned()
		if out := r.rpm("-V", "--nodeps", "vigil"); strings.TrimSpace(out) != "" {
			t.Errorf("rpm -V after upgrade:\n%s", out)
		}
		r.rpm("-e", "--noscripts", "vigil")
		r.leftovers(before)
	})

	t.Run("scriptlets", func(t *testing.T) {
		r := newRPMRoot(t, busybox, true)
		before := r.tree()
		r.rpm("-i", "--nodeps", v1)
		key := filepath.Join(r.dir, "etc/vigil/cluster.key")
		fi, err := os.Stat(key)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("cluster key after install: %v, %v", fi, err)
		}
		k1 := r.read("etc/vigil/cluster.key")
		groups := func() int {
			return len(regexp.MustCompile(`(?m)^vigil:x:\d+:$`).FindAllString(r.read("etc/group"), -1))
		}
		if n := groups(); n != 1 {
			t.Errorf("install: %d vigil groups in /etc/group, want 1:\n%s", n, r.read("etc/group"))
		}
		r.owned("etc/vigil/cluster.key")
		r.rpm("-U", "--nodeps", v2)
		if r.read("etc/vigil/cluster.key") != k1 {
			t.Error("upgrade replaced the cluster key")
		}
		if n := groups(); n != 1 {
			t.Errorf("upgrade: %d vigil groups in /etc/group, want 1", n)
		}
		r.rpm("-e", "vigil")
		// The key and the group stay (rpm has no purge); groupadd leaves
		// its backup of /etc/group and its lock file.
		r.leftovers(before, "etc/vigil", "etc/vigil/cluster.key", "etc/group-", "etc/.pwd.lock")
		if n := groups(); n != 1 {
			t.Errorf("erase: %d vigil groups in /etc/group, want 1 (kept)", n)
		}
	})

	// No groupadd, getent, addgroup or systemctl: the scriptlets warn and
	// go on, as in a minimal container image.
	t.Run("scriptlets without tools", func(t *testing.T) {
		r := newRPMRoot(t, busybox, false)
		before := r.tree()
		out := r.rpm("-i", "--nodeps", v1)
		if !strings.Contains(out, "create the system group vigil") {
			t.Errorf("no warning about the missing group tools:\n%s", out)
		}
		r.rpm("-U", "--nodeps", v2)
		r.rpm("-e", "vigil")
		r.leftovers(before, "etc/vigil", "etc/vigil/cluster.key")
	})
}
