package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestVersionScript runs scripts/version.sh, the one version scheme of
// `make build` and build.sh, in a temporary git repository through a
// release's life: no tag, a tag, commits after it, a pre-release, a
// modified tree.
func TestVersionScript(t *testing.T) {
	gitPath := need(t, "git", "git")
	script, err := filepath.Abs("../scripts/version.sh")
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	env := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
	git := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(t, repo, env, gitPath, args...))
	}
	n := 0
	commit := func() string {
		t.Helper()
		n++
		if err := os.WriteFile(filepath.Join(repo, "f"), []byte(strings.Repeat("x", n)), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", "c")
		return git("rev-parse", "--short", "HEAD")
	}
	version := func() string {
		t.Helper()
		return strings.TrimSpace(run(t, repo, env, script))
	}
	check := func(what, want string) {
		t.Helper()
		got := version()
		if got != want {
			t.Errorf("%s: version %q, want %q", what, got, want)
		}
		if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(got) {
			t.Errorf("%s: %q is not a valid deb and rpm version", what, got)
		}
	}

	// Outside a checkout it refuses rather than inventing a version.
	cmd := exec.Command(script)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("not yet a git repository: version.sh succeeded with %q", out)
	}

	git("init", "-q")
	sha := commit()
	check("first commit, no tag", "0.0.0+git1."+sha)
	sha = commit()
	check("second commit, no tag", "0.0.0+git2."+sha)
	if err := os.WriteFile(filepath.Join(repo, "f"), []byte("modified"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("modified, no tag", "0.0.0+git2."+sha+".dirty")
	git("checkout", "-q", "f")
	git("tag", "release-3") // not v[0-9]*: ignored
	check("other tag", "0.0.0+git2."+sha)

	git("tag", "v1.2.0")
	check("tag v1.2.0", "1.2.0")
	// A touch alone is not a modification.
	now := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(repo, "f"), now, now); err != nil {
		t.Fatal(err)
	}
	check("tag v1.2.0, touched", "1.2.0")
	if err := os.WriteFile(filepath.Join(repo, "f"), []byte("modified"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("tag v1.2.0, modified", "1.2.0.dirty")
	git("checkout", "-q", "f")
	commit()
	sha = commit()
	check("two commits after v1.2.0", "1.2.0+2.g"+sha)

	git("tag", "-a", "-m", "rc", "v1.3.0-rc1")
	check("annotated pre-release tag", "1.3.0~rc1")
	sha = commit()
	check("a commit after the pre-release", "1.3.0~rc1+1.g"+sha)
	git("tag", "v1.3.0")
	check("tag v1.3.0", "1.3.0")
}
