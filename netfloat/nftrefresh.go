package netfloat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/vigil-project/vigil/internal/nsrun"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// aliveRefresh is the one transaction NFTLease sends at every refresh of
// a held lease: lease_alive's element removed and added again with the
// lease's new end, in both tables. It is built once, by hand, and sent on
// a netlink socket of its own without asking for acknowledgements: the
// kernel processes a batch within the sendmsg and queues a message only
// for what failed, so one sendmsg and one non-blocking recvmsg that finds
// nothing are the whole transaction. Through the nftables library the
// same transaction was a sendmsg, a peek and a read for each of its four
// acknowledgements, each through Go's netpoller, and its allocations: 9.5
// % of a node manager serving four services (docs/protocol.md).
//
// Everything else (the sets' members, the rules, a flush) goes through the
// library as before; this path only moves aliveKey's timeout.
type aliveRefresh struct {
	fd       int
	msg      []byte
	timeouts []int // offsets of the two timeout values (big-endian ms) in msg
	seq      uint32
	rbuf     []byte
}

// timeoutMark stands for a timeout in the message while it is built, so
// that its offsets can be found.
var timeoutMark = []byte{0x56, 0x49, 0x47, 0x49, 0x4c, 0x54, 0x4d, 0x4f}

// newAliveRefresh opens the socket in nsFd (-1: the caller's namespace)
// and builds the transaction for the two lease_alive sets.
func newAliveRefresh(nsFd int, sets ...*nftables.Set) (*aliveRefresh, error) {
	r := &aliveRefresh{fd: -1, rbuf: make([]byte, 8192)}
	err := nsrun.In(netns.NsHandle(nsFd), func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		r.fd = fd
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err != nil {
		r.close()
		return nil, fmt.Errorf("nftables refresh socket: %w", err)
	}
	b := nlMsg(nil, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	for _, s := range sets {
		names := nlAttr(nil, unix.NFTA_SET_ELEM_LIST_TABLE, cstr(s.Table.Name))
		names = nlAttr(names, unix.NFTA_SET_ELEM_LIST_SET, cstr(s.Name))
		b = nlMsg(b, nftMsg(unix.NFT_MSG_DELSETELEM), unix.NLM_F_REQUEST, uint8(s.Table.Family), 0, names)
		key := nlAttr(nil, unix.NFTA_DATA_VALUE, aliveKey)
		elem := nlAttr(nil, unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, key)
		elem = nlAttr(elem, unix.NFTA_SET_ELEM_TIMEOUT, timeoutMark)
		list := nlAttr(nil, 1|unix.NLA_F_NESTED, elem)
		attrs := nlAttr(bytes.Clone(names), unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, list)
		b = nlMsg(b, nftMsg(unix.NFT_MSG_NEWSETELEM), unix.NLM_F_REQUEST|unix.NLM_F_CREATE, uint8(s.Table.Family), 0, attrs)
	}
	b = nlMsg(b, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	for off := 0; ; {
		i := bytes.Index(b[off:], timeoutMark)
		if i < 0 {
			break
		}
		r.timeouts = append(r.timeouts, off+i)
		off += i + len(timeoutMark)
	}
	if len(r.timeouts) != len(sets) {
		r.close()
		return nil, fmt.Errorf("nftables refresh: %d timeouts in the message, want %d", len(r.timeouts), len(sets))
	}
	r.msg = b
	return r, nil
}

// send gives aliveKey the timeout t in both sets. An error means the
// kernel refused the batch (nothing of it was applied: a batch is one
// transaction) or the socket failed; the caller then falls back to the
// library's path.
func (r *aliveRefresh) send(t time.Duration) error {
	ms := uint64(t.Milliseconds())
	for _, off := range r.timeouts {
		binary.BigEndian.PutUint64(r.msg[off:], ms)
	}
	// Fresh sequence numbers, so that an error names this batch's message.
	for off := 0; off < len(r.msg); {
		r.seq++
		binary.NativeEndian.PutUint32(r.msg[off+8:], r.seq)
		off += nlAlign(int(binary.NativeEndian.Uint32(r.msg[off:])))
	}
	// Raw syscalls: neither call blocks (the kernel answers within the
	// sendmsg), and the runtime's sysmon is not woken for them.
	if err := rawSendto(r.fd, r.msg); err != nil {
		return fmt.Errorf("nftables refresh: sendto: %w", err)
	}
	var errs error
	for {
		n, err := rawRecvDontwait(r.fd, r.rbuf)
		if errors.Is(err, unix.EAGAIN) {
			return errs
		}
		if err != nil {
			return errors.Join(errs, fmt.Errorf("nftables refresh: recv: %w", err))
		}
		errs = errors.Join(errs, nlErrors(r.rbuf[:n]))
	}
}

func (r *aliveRefresh) close() {
	if r != nil && r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// nlErrors returns the errors the netlink messages in b report (an
// NLMSG_ERROR with a non-zero code); acknowledgements and anything else
// are not errors.
func nlErrors(b []byte) error {
	var errs error
	for len(b) >= unix.NLMSG_HDRLEN {
		n := int(binary.NativeEndian.Uint32(b))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return errors.Join(errs, fmt.Errorf("nftables refresh: malformed netlink message (%d of %d bytes)", n, len(b)))
		}
		if binary.NativeEndian.Uint16(b[4:]) == unix.NLMSG_ERROR && n >= unix.NLMSG_HDRLEN+4 {
			if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
				errs = errors.Join(errs, fmt.Errorf("nftables refresh: message %d: %w",
					binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN+12:]), unix.Errno(-code)))
			}
		}
		b = b[min(nlAlign(n), len(b)):]
	}
	return errs
}

func nftMsg(t uint16) uint16 { return unix.NFNL_SUBSYS_NFTABLES<<8 | t }

func cstr(s string) []byte { return append([]byte(s), 0) }

func nlAlign(n int) int { return (n + 3) &^ 3 }

// nlMsg appends a netlink message with an nfgenmsg header and payload.
func nlMsg(b []byte, typ, flags uint16, family uint8, resID uint16, payload []byte) []byte {
	n := unix.NLMSG_HDRLEN + 4 + len(payload)
	h := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(h[0:], uint32(n))
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	h[16], h[17] = family, unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(h[18:], resID)
	b = append(append(b, h...), payload...)
	return append(b, make([]byte, nlAlign(n)-n)...)
}

// nlAttr appends a netlink attribute, padded.
func nlAttr(b []byte, typ uint16, data []byte) []byte {
	n := 4 + len(data)
	h := make([]byte, 4)
	binary.NativeEndian.PutUint16(h[0:], uint16(n))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(append(b, h...), data...)
	return append(b, make([]byte, nlAlign(n)-n)...)
}

// rawSendto sends b to the kernel (the socket's default destination is
// not set: the address is given).
func rawSendto(fd int, b []byte) error {
	var sa unix.RawSockaddrNetlink
	sa.Family = unix.AF_NETLINK
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
		uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrNetlink)
	if e != 0 {
		return e
	}
	return nil
}

func rawRecvDontwait(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
