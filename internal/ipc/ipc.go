// Package ipc is the channel between the supervisor and its control-plane
// processes (the locator and the node manager): a SOCK_SEQPACKET socket pair
// whose child end the control-plane process inherits. One message per
// packet (ctlmsg.Encode), so a message is never torn. The messages themselves (types,
// reports) are package ctlmsg; this package only carries them.
package ipc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

// EnvFD names the environment variable that tells a control-plane process
// which fd is its end of the channel.
const EnvFD = "VIGIL_IPC_FD"

// ChildFD is the fd number the supervisor gives the child end.
const ChildFD = 4

// maxPacket bounds one message; statuses are a few KiB.
const maxPacket = 256 << 10

// ErrNoChannel means the process was not started by a supervisor.
var ErrNoChannel = errors.New("ipc: no supervisor channel (" + EnvFD + " not set)")

// Conn is one end of the channel. Send is safe for concurrent use; Recv is
// for one reader.
type Conn struct {
	c  *net.UnixConn
	mu sync.Mutex // Send
	// rmu guards rbuf, Recv's packet buffer: reused, since a fresh
	// maxPacket buffer per message was most of the supervisor's garbage
	// (a node manager reports four times a lease). Decoding copies out of it.
	rmu  sync.Mutex
	rbuf []byte
	roob []byte // its control buffer, for passed files
	// received counts the messages Recv returned.
	received atomic.Uint64
	// binaryBeats: the peer reads beats as binary frames (it is a
	// supervisor that said so in ctlmsg.EnvBinaryBeats).
	binaryBeats bool
}

// Pair returns the supervisor's end and the file to hand to the child as
// ChildFD. The caller closes child after the fork.
func Pair() (*Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ipc: socketpair: %w", err)
	}
	parent, err := fromFD(fds[0], "ipc-parent")
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	return parent, os.NewFile(uintptr(fds[1]), "ipc-child"), nil
}

// FromEnv opens the channel a supervisor gave this process.
func FromEnv() (*Conn, error) {
	s := os.Getenv(EnvFD)
	if s == "" {
		return nil, ErrNoChannel
	}
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("ipc: bad %s=%q", EnvFD, s)
	}
	syscall.CloseOnExec(fd)
	c, err := fromFD(fd, "ipc")
	if err != nil {
		return nil, err
	}
	c.binaryBeats = os.Getenv(ctlmsg.EnvBinaryBeats) == ctlmsg.BinaryBeatsV1
	return c, nil
}

// Env is the environment a supervisor gives a control-plane process for
// its end of the channel: where it is, and the message forms it reads.
func Env() []string {
	return []string{fmt.Sprintf("%s=%d", EnvFD, ChildFD), ctlmsg.EnvBinaryBeats + "=" + ctlmsg.BinaryBeatsV1}
}

func fromFD(fd int, name string) (*Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // FileConn dups it
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("ipc: fd %d: %w", fd, err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("ipc: fd %d is not a unix socket", fd)
	}
	return &Conn{c: uc}, nil
}

// Send writes one message. A peer that does not read within timeout makes
// Send fail rather than block its caller.
func (c *Conn) Send(m *ctlmsg.Msg, timeout time.Duration) error {
	b, err := ctlmsg.Encode(m, c.binaryBeats)
	if err != nil {
		return fmt.Errorf("ipc: %w", err)
	}
	if len(b) > maxPacket {
		return fmt.Errorf("ipc: %s message of %d bytes exceeds %d", m.Type, len(b), maxPacket)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if timeout > 0 {
		_ = c.c.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := c.c.Write(b); err != nil {
		return fmt.Errorf("ipc: send %s: %w", m.Type, err)
	}
	return nil
}

// ErrWouldBlock means TrySend did not send: the peer's queue is full (it
// has not read for a while) or a blocking Send is in progress.
var ErrWouldBlock = errors.New("ipc: peer not reading, message not sent")

// TrySend writes one message if that can be done at once, and otherwise
// returns ErrWouldBlock without waiting. A realtime control-plane loop
// reports through it: the supervisor runs without realtime priority, and
// a loop that waited for it to read (its queue holds only
// net.unix.max_dgram_qlen packets) would be stalled by every host load
// that starves the supervisor, long enough to lose a short lease.
func (c *Conn) TrySend(m *ctlmsg.Msg) error { return c.trySend(m, nil) }

// trySend is TrySend with oob, a control message (nil: none), sent along.
func (c *Conn) trySend(m *ctlmsg.Msg, oob []byte) error {
	b, err := ctlmsg.Encode(m, c.binaryBeats)
	if err != nil {
		return fmt.Errorf("ipc: %w", err)
	}
	if len(b) > maxPacket {
		return fmt.Errorf("ipc: %s message of %d bytes exceeds %d", m.Type, len(b), maxPacket)
	}
	if !c.mu.TryLock() {
		return ErrWouldBlock // a Send is waiting for the peer
	}
	defer c.mu.Unlock()
	rc, err := c.c.SyscallConn()
	if err != nil {
		return fmt.Errorf("ipc: send %s: %w", m.Type, err)
	}
	// A deadline left by Send would make the write fail before trying.
	_ = c.c.SetWriteDeadline(time.Time{})
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	h := unix.Msghdr{Iov: &iov, Iovlen: 1}
	if len(oob) > 0 {
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
	var serr syscall.Errno
	werr := rc.Write(func(fd uintptr) bool {
		for {
			// RawSyscall: a call that cannot block need not tell the
			// scheduler, and telling it wakes the runtime's sysmon
			// (internal/transport/rawio.go).
			_, _, serr = syscall.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&h)), unix.MSG_DONTWAIT)
			if serr != unix.EINTR {
				return true // done either way: never wait for the peer
			}
		}
	})
	switch {
	case werr != nil:
		return fmt.Errorf("ipc: send %s: %w", m.Type, werr)
	case serr == unix.EAGAIN:
		return ErrWouldBlock
	case serr != 0:
		return fmt.Errorf("ipc: send %s: %w", m.Type, serr)
	}
	return nil
}

// Recv reads one message; io.EOF when the peer closed its end. Files
// passed with it (TrySendFiles) are closed: use RecvFiles to keep them.
func (c *Conn) Recv() (*ctlmsg.Msg, error) {
	m, files, err := c.RecvFiles()
	for _, f := range files {
		f.Close()
	}
	return m, err
}

// RecvFiles reads one message and the files passed with it (none for
// most), which the caller then owns. They come close-on-exec.
func (c *Conn) RecvFiles() (*ctlmsg.Msg, []*os.File, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rbuf == nil {
		c.rbuf = make([]byte, maxPacket)
		c.roob = make([]byte, unix.CmsgSpace(4*MaxFiles))
	}
	buf := c.rbuf
	n, files, err := c.read(buf, c.roob)
	if err != nil {
		return nil, nil, err
	}
	m, err := ctlmsg.Decode(buf[:n])
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, fmt.Errorf("ipc: %w", err)
	}
	c.received.Add(1)
	return m, files, nil
}

// MaxFiles bounds the files one message carries.
const MaxFiles = 8

// TrySendFiles is TrySend with open files passed along (SCM_RIGHTS): the
// peer gets descriptors of its own for them, so they stay open while
// either end holds them. The caller keeps fds. For what a process wants
// kept open past its own exit: the node manager's packet sockets
// (docs/operations.md, "Node manager crash on a live host").
func (c *Conn) TrySendFiles(m *ctlmsg.Msg, fds []int) error {
	if len(fds) > MaxFiles {
		return fmt.Errorf("ipc: %d files in one message, at most %d", len(fds), MaxFiles)
	}
	return c.trySend(m, unix.UnixRights(fds...))
}

// read reads one packet and the files passed with it, waiting in the
// runtime's poller until one is there. The read itself, which cannot
// block then, is a RawSyscall: a system call made through the scheduler
// wakes the runtime's sysmon thread, and the supervisor reads a node
// manager's report every quarter lease (internal/transport/rawio.go does
// the same for datagrams).
func (c *Conn) read(buf, oob []byte) (int, []*os.File, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	var n, oobn int
	var serr syscall.Errno
	rerr := rc.Read(func(fd uintptr) bool {
		iov := unix.Iovec{Base: &buf[0]}
		iov.SetLen(len(buf))
		h := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
		h.SetControllen(len(oob))
		for {
			r, _, e := syscall.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&h)), unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // nothing yet: wait for the poller
			}
			n, oobn, serr = int(r), int(h.Controllen), e
			return true
		}
	})
	switch {
	case rerr != nil:
		return 0, nil, rerr
	case serr != 0:
		return 0, nil, &net.OpError{Op: "read", Net: "unixpacket", Err: os.NewSyscallError("recvmsg", serr)}
	}
	// With MSG_CTRUNC (more files than MaxFiles) the kernel closed the
	// ones that did not fit; the message and the rest are read as usual.
	files := filesOf(oob[:oobn])
	if n == 0 {
		// SOCK_SEQPACKET: a zero-length read is the peer's close, as
		// net.Conn.Read has it (our peers never send an empty packet).
		for _, f := range files {
			f.Close()
		}
		return 0, nil, io.EOF
	}
	return n, files, nil
}

// filesOf turns the SCM_RIGHTS of a control buffer into files.
func filesOf(oob []byte) []*os.File {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "ipc-passed"))
		}
	}
	return files
}

// Received is how many messages Recv has returned: a reader that hands
// them to another goroutine lets that one tell "none came" from "one
// came and is on its way to me".
func (c *Conn) Received() uint64 { return c.received.Load() }

// Pending reports whether a message is waiting in this end's receive
// queue, not yet read (SIOCINQ). The supervisor asks before it fences a
// silent node manager: under load its own reader may be what is late.
func (c *Conn) Pending() bool {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// Close closes this end.
func (c *Conn) Close() error { return c.c.Close() }
