package supervisor

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// Without the group (none configured, or none on the host) the socket
// stays as before: 0600 in its directory, root only.
func TestControlAccessWithoutGroup(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, name := range []string{"", "vigil-no-such-group-x"} {
		acc := lookupControlAccess(name, log)
		if acc.group != "" || acc.gid != -1 {
			t.Errorf("%q: %+v, want root only", name, acc)
		}
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "control.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := acc.share(path, true, log); err != nil {
			t.Fatal(err)
		}
		for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
				t.Errorf("%q: %s mode %v (%v), want %v", name, p, st.Mode().Perm(), err, want)
			}
		}
	}
	if err := allow(accessStatus, "status"); err != nil {
		t.Error(err)
	}
	for _, cmd := range []string{"restart", "switchover", "maintenance", "reload", "bogus"} {
		if err := allow(accessStatus, cmd); err == nil || err.Error() != "permission denied: only root may "+cmd {
			t.Errorf("%s by a member: %v", cmd, err)
		}
		if err := allow(accessAll, cmd); err != nil {
			t.Errorf("%s by root: %v", cmd, err)
		}
	}
}
