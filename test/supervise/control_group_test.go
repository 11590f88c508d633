package supervise

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-project/vigil/supervisor"
	"github.com/vigil-project/vigil/supervisor/client"
)

// Environment of TestControlClientHelper, the client run as another user.
const (
	envClientSocket = "VIGIL_TEST_CONTROL_SOCKET"
	envClientCmd    = "VIGIL_TEST_CONTROL_CMD"
	envClientName   = "VIGIL_TEST_CONTROL_NAME"
)

// TestControlClientHelper is not a test: TestControlGroup runs this test
// binary as another uid with these variables set, to send one request.
func TestControlClientHelper(t *testing.T) {
	sock := os.Getenv(envClientSocket)
	if sock == "" {
		t.Skip("helper process of TestControlGroup")
	}
	_, err := client.Call(sock, supervisor.Request{Cmd: os.Getenv(envClientCmd), Name: os.Getenv(envClientName)})
	if err != nil {
		fmt.Printf("\nRESULT: error: %v\n", err)
		return
	}
	fmt.Printf("\nRESULT: ok\n")
}

// copyExe copies an executable where another uid may run it.
func copyExe(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// Members of runtime.control_group may read status without root, through
// the CLI, whether the group is their primary or a supplementary one; every
// other command is refused to them by the daemon, and a non-member is
// refused at the socket's permissions and, were those opened (a umask, a
// bind mount), by the daemon's own check.
func TestControlGroup(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"groupadd", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (package passwd)", tool)
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	group := "vigt" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("groupadd", "--system", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v\n%s", group, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", group).CombinedOutput(); err != nil {
			t.Errorf("groupdel %s: %v\n%s", group, err, out)
		}
	})
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gid64, _ := strconv.ParseUint(g.Gid, 10, 32)
	gid := uint32(gid64)

	const procs = `  - {name: sleeper, command: [/bin/sleep, "1000"]}
`
	d := newDaemon(t, procs)
	d.controlGroup = group
	d.socket = filepath.Join(d.dir, "run", "control.sock") // a directory of its own, created by vigil
	d.writeConfig(procs)
	// The clients run as another uid: let them through the test's
	// directories (search only, no listing) to the socket and the binaries.
	for _, dir := range []string{filepath.Dir(d.dir), d.dir} {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(d.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyExe(t, vigilBin, filepath.Join(bin, "vigil"))
	copyExe(t, self, filepath.Join(bin, "client"))
	d.start()

	for path, want := range map[string]os.FileMode{d.socket: os.ModeSocket | 0o660, filepath.Dir(d.socket): os.ModeDir | 0o750} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want || st.Sys().(*syscall.Stat_t).Gid != gid {
			t.Errorf("%s: mode %v gid %d, want %v gid %d", path, st.Mode(), st.Sys().(*syscall.Stat_t).Gid, want, gid)
		}
	}

	var ub [2]byte
	_, _ = rand.Read(ub[:])
	uid := 61000 + uint32(binary.BigEndian.Uint16(ub[:])%1000) // no such user needed: the kernel checks numbers
	const nogroup = 65534
	// as runs bin/name as cred: its stdout, its stderr, its exit status.
	as := func(cred *syscall.Credential, name string, args []string, env ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "VIGIL_BIN=/bin/true"}, env...)
		cmd.Dir = "/"
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), stderr.String(), code
	}
	call := func(cred *syscall.Credential, cmd, name string) string {
		t.Helper()
		out, _, _ := as(cred, "client", []string{"-test.run=^TestControlClientHelper$", "-test.count=1"},
			envClientSocket+"="+d.socket, envClientCmd+"="+cmd, envClientName+"="+name)
		i := strings.Index(out, "RESULT: ")
		if i < 0 {
			t.Fatalf("client as uid %d: no result:\n%s", cred.Uid, out)
		}
		return strings.TrimSpace(strings.SplitN(out[i+len("RESULT: "):], "\n", 2)[0])
	}

	primary := &syscall.Credential{Uid: uid, Gid: gid}
	supplementary := &syscall.Credential{Uid: uid, Gid: nogroup, Groups: []uint32{gid}}
	stranger := &syscall.Credential{Uid: uid, Gid: nogroup, Groups: []uint32{}}
	sleeperPID := d.proc("sleeper").PID
	for who, cred := range map[string]*syscall.Credential{"primary group": primary, "supplementary group": supplementary} {
		out, errOut, code := as(cred, "vigil", []string{"status", "--json", "--socket", d.socket})
		var st supervisor.Status
		if code == exitFailureCode || code == 2 || json.Unmarshal([]byte(out), &st) != nil || st.Node != "a" {
			t.Errorf("vigil status as a member (%s): exit %d\n%s%s", who, code, out, errOut)
		}
		for _, req := range [][2]string{{"switchover", ""}, {"restart", "sleeper"}, {"reload", ""}, {"maintenance", "on"}} {
			want := "error: permission denied: only root may " + req[0]
			if got := call(cred, req[0], req[1]); got != want {
				t.Errorf("%s as a member (%s): %q, want %q", req[0], who, got, want)
			}
		}
		if got := call(cred, "status", ""); got != "ok" {
			t.Errorf("status request as a member (%s): %q", who, got)
		}
	}
	// Nothing a member asked for happened.
	if p := d.proc("sleeper"); p.PID != sleeperPID || p.Restarts != 0 {
		t.Errorf("sleeper was restarted by a member: pid %d -> %d, restarts %d", sleeperPID, p.PID, p.Restarts)
	}
	if st := d.status(); st.Supervisor.Reloads != 0 {
		t.Errorf("a member's reload was applied: reloads %d", st.Supervisor.Reloads)
	}

	// A non-member does not get through the socket's permissions.
	if _, errOut, code := as(stranger, "vigil", []string{"status", "--socket", d.socket}); code != exitFailureCode || !strings.Contains(errOut, "permission denied") {
		t.Errorf("vigil status as a non-member: exit %d\n%s", code, errOut)
	}
	// Nor through the daemon, with the socket opened to everyone.
	if err := os.Chmod(filepath.Dir(d.socket), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("error: permission denied for uid %d: only root and members of group %s may use the control socket", uid, group)
	if got := call(stranger, "status", ""); got != want {
		t.Errorf("status as a non-member through an open socket: %q, want %q", got, want)
	}
	// Root may still do everything.
	if _, err := client.Call(d.socket, supervisor.Request{Cmd: "restart", Name: "sleeper"}); err != nil {
		t.Errorf("restart as root: %v", err)
	}
	d.stop(15 * time.Second)
}

const exitFailureCode = 1
