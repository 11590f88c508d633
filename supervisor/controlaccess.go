package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Who may use the control socket: root (and the daemon's own uid) for
// everything; members of runtime.control_group (default "vigil", created by
// the packages) for status only, so that on-call staff and monitoring can
// read the state without root and cannot change it. The socket is 0660 and
// its directory 0750, both group control_group; SO_PEERCRED and
// SO_PEERGROUPS are checked as well, since a permissive umask or a bind
// mount must not open the door.

// statusOnly is the one command a group member may send.
const statusOnly = "status"

// controlAccess is the control group as looked up at start-up.
type controlAccess struct {
	group string // "" or a group that does not exist: root only
	gid   int
}

// groupLookupTimeout bounds the lookup: with NSS (LDAP, sssd) it may hang,
// and a start-up must not wait on it.
const groupLookupTimeout = 5 * time.Second

// lookupControlAccess resolves name; a missing group, an empty name or a
// lookup that fails means root only, as before the group existed.
func lookupControlAccess(name string, log *slog.Logger) controlAccess {
	if name == "" {
		return controlAccess{gid: -1}
	}
	type result struct {
		g   *user.Group
		err error
	}
	res := make(chan result, 1)
	go func() {
		g, err := user.LookupGroup(name)
		res <- result{g, err}
	}()
	var r result
	select {
	case r = <-res:
	case <-time.After(groupLookupTimeout):
		r.err = fmt.Errorf("lookup did not answer within %v", groupLookupTimeout)
	}
	if r.err != nil {
		var unknown user.UnknownGroupError
		if !errors.As(r.err, &unknown) {
			log.Warn("control socket: cannot look up its group; root only", "event", "control_group", "group", name, "err", r.err)
		}
		return controlAccess{gid: -1}
	}
	gid, err := strconv.Atoi(r.g.Gid)
	if err != nil {
		log.Warn("control socket: bad gid; root only", "event", "control_group", "group", name, "gid", r.g.Gid)
		return controlAccess{gid: -1}
	}
	return controlAccess{group: name, gid: gid}
}

// share gives the group read access to the socket at path: the socket
// 0660 and, when the directory is the socket's own (created here, or
// holding nothing else), the directory 0750, both of the group. A shared
// directory (/run, /tmp, a home) is never changed. createdDir says whether
// listenControl created the directory.
func (a controlAccess) share(path string, createdDir bool, log *slog.Logger) error {
	if a.group == "" {
		return nil
	}
	dir := filepath.Dir(path)
	own := createdDir
	if !own {
		entries, err := os.ReadDir(dir)
		own = err == nil && len(entries) == 1 && entries[0].Name() == filepath.Base(path)
	}
	if own {
		if err := os.Chown(dir, -1, a.gid); err != nil {
			return fmt.Errorf("supervisor: control socket directory: %w", err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return fmt.Errorf("supervisor: control socket directory: %w", err)
		}
	} else if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o001 == 0 {
		log.Warn("control socket: its directory holds other files and is not searchable by others; members of the control group cannot reach the socket",
			"event", "control_group", "group", a.group, "dir", dir)
	}
	// From 0600 to 0660: never wider than wanted in between.
	if err := os.Chown(path, -1, a.gid); err != nil {
		return fmt.Errorf("supervisor: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("supervisor: control socket: %w", err)
	}
	return nil
}

// peerAccess is what a connected peer may do.
type peerAccess int

const (
	accessStatus peerAccess = iota + 1 // a member of the control group
	accessAll                          // root or the daemon's own uid
)

// check returns what the peer of c may do, or why it may do nothing.
func (a controlAccess) check(c *net.UnixConn) (peerAccess, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var groups []uint32
	var cerr, gerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if cerr == nil && cred.Uid != 0 && int(cred.Uid) != os.Geteuid() && a.group != "" && int(cred.Gid) != a.gid {
			groups, gerr = peerGroups(int(fd))
		}
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
		return accessAll, nil
	}
	if a.group != "" {
		if int(cred.Gid) == a.gid || slices.Contains(groups, uint32(a.gid)) {
			return accessStatus, nil
		}
		if gerr != nil {
			return 0, fmt.Errorf("permission denied for uid %d: cannot read its groups: %w", cred.Uid, gerr)
		}
		return 0, fmt.Errorf("permission denied for uid %d: only root and members of group %s may use the control socket", cred.Uid, a.group)
	}
	return 0, fmt.Errorf("permission denied for uid %d: only root may use the control socket", cred.Uid)
}

// allow says whether a peer with access acc may send cmd.
func allow(acc peerAccess, cmd string) error {
	if acc == accessAll || cmd == statusOnly {
		return nil
	}
	return fmt.Errorf("permission denied: only root may %s", cmd)
}

// peerGroups reads the peer's supplementary groups (SO_PEERGROUPS, Linux
// 4.13), growing the buffer when the kernel says it is too small.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]byte, 256*4)
	for range 3 {
		n := uint32(len(buf))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case errno == unix.ERANGE && int(n) > len(buf):
			buf = make([]byte, n)
			continue
		case errno != 0:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
		out := make([]uint32, n/4)
		for i := range out {
			out[i] = binary.NativeEndian.Uint32(buf[4*i:])
		}
		return out, nil
	}
	return nil, errors.New("SO_PEERGROUPS: the group list keeps growing")
}
