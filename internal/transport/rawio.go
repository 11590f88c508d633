package transport

import (
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hot path's system calls (recvmmsg on every socket, write on a
// lane) are made with RawSyscall, inside RawConn's Read and Write so the
// runtime's poller still does the waiting. They never block (the sockets
// are non-blocking), and the ordinary path through entersyscall wakes
// the runtime's sysmon thread whenever it is parked, which then spins on
// 20 µs sleeps for a while: profiles put over half of an idle locator's
// CPU there (docs/operations.md, "Where the CPU goes").

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// rawBatch reads datagrams with recvmmsg(2).
type rawBatch struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	addrs []unix.RawSockaddrAny
	bufs  [][]byte
	// empty counts reads that found nothing (EAGAIN), for the tests.
	empty *atomic.Uint64
}

func newRawBatch(c *net.UDPConn, n, size int) (*rawBatch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &rawBatch{rc: rc, hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), addrs: make([]unix.RawSockaddrAny, n), bufs: make([][]byte, n)}
	for i := range n {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
	}
	return b, nil
}

// each reads datagrams and hands every batch to handle (datagram i is
// bufs[i][:size(i)] from src(i)) until handle returns false (each then
// returns nil) or a read fails.
//
// After a batch that emptied the queue (fewer than len(bufs)) it waits
// for the next datagram instead of reading again to be told EAGAIN: the
// poller is edge-triggered and every datagram queued after the read is a
// new edge, so nothing is missed, and an idle process makes one system
// call fewer per datagram (tens of µs on a paravirtualised guest). That
// is only sound inside one RawConn.Read: each call of it first forgets
// the readiness the poller has latched.
//
// One case reads short with more queued: on a connected socket (a lane),
// an ICMP error that arrived behind a datagram ends the batch at that
// datagram (recvmmsg keeps the error for the next call). What queued
// behind it is then read at the lane peer's next datagram; that peer's
// process was down a moment ago, and the live peers send every token
// interval. Datagrams from elsewhere (a crash release) come to the
// catch-all socket, which is not connected and gets no such error.
func (b *rawBatch) each(handle func(n int) bool) error {
	var errno syscall.Errno
	err := b.rc.Read(func(fd uintptr) bool {
		for {
			for i := range b.hdrs {
				h := &b.hdrs[i].hdr
				h.Name = (*byte)(unsafe.Pointer(&b.addrs[i]))
				h.Namelen = uint32(unsafe.Sizeof(b.addrs[i]))
				h.Iov = &b.iovs[i]
				h.SetIovlen(1)
				h.Control, h.Controllen, h.Flags = nil, 0, 0
				b.hdrs[i].n = 0
			}
			r, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				if b.empty != nil {
					b.empty.Add(1)
				}
				return false // the poller waits, then calls again
			default:
				errno = e
				return true
			}
			n := int(r)
			if !handle(n) {
				return true
			}
			if n < len(b.hdrs) {
				return false
			}
		}
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func (b *rawBatch) size(i int) int { return int(b.hdrs[i].n) }

// src is datagram i's source address (invalid when the kernel gave none).
func (b *rawBatch) src(i int) netip.Addr {
	a := &b.addrs[i]
	switch a.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(a))
		return netip.AddrFrom4(p.Addr)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(a))
		return netip.AddrFrom16(p.Addr).Unmap()
	}
	return netip.Addr{}
}

// rawWrite writes b to the connected socket c with write(2).
func rawWrite(c *net.UDPConn, b []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	werr := rc.Write(func(fd uintptr) bool {
		var p unsafe.Pointer
		if len(b) > 0 {
			p = unsafe.Pointer(&b[0])
		}
		_, _, e := syscall.RawSyscall(unix.SYS_WRITE, fd, uintptr(p), uintptr(len(b)))
		errno = e
		return e != unix.EAGAIN && e != unix.EINTR
	})
	if werr != nil {
		return werr
	}
	if errno != 0 {
		return errno
	}
	return nil
}
