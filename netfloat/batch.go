package netfloat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A takeover of many addresses is one step: ClaimAll programs the kernel
// lease once for all of them (Claim does it per address, each transaction
// carrying every address held so far), adds them with netlink requests
// sent nlBatch to a datagram, and sends their first announcements back to
// back. ReleaseAll and ExtendAll are the same for the release and the
// lifetime refresh.

// nlBatch is the most netlink requests sent in one datagram. The kernel
// queues an acknowledgement per request on our socket before we read any,
// so a batch must fit the socket's receive buffer (rmem_default, 208 KiB
// on Debian; an acknowledgement takes about 1 KiB of it).
const nlBatch = 64

// execBatch runs reqs, each built with NLM_F_ACK, on the manager's netlink
// socket, nlBatch to a datagram, and returns each one's error in order.
func (m *Manager) execBatch(reqs []*nl.NetlinkRequest) []error {
	errs := make([]error, len(reqs))
	sh := m.nlSockets[unix.NETLINK_ROUTE]
	s := sh.Socket
	// The library's Execute holds the same lock for its whole exchange:
	// no other request's answer is read here, nor ours there.
	s.Lock()
	defer s.Unlock()
	pid, err := s.GetPid()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var buf []byte
	for lo := 0; lo < len(reqs); lo += nlBatch {
		chunk := reqs[lo:min(len(reqs), lo+nlBatch)]
		pending := make(map[uint32]int, len(chunk))
		buf = buf[:0]
		for i, r := range chunk {
			r.Seq = atomic.AddUint32(&sh.Seq, 1)
			pending[r.Seq] = lo + i
			buf = append(buf, r.Serialize()...)
		}
		fail := func(err error) {
			for _, i := range pending {
				errs[i] = err
			}
		}
		if err := unix.Sendto(s.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			fail(fmt.Errorf("netlink send: %w", err))
			continue
		}
		for len(pending) > 0 {
			msgs, from, err := s.Receive()
			if err != nil {
				fail(fmt.Errorf("netlink receive: %w", err))
				break
			}
			if from.Pid != nl.PidKernel {
				continue
			}
			for _, msg := range msgs {
				i, ok := pending[msg.Header.Seq]
				if !ok || msg.Header.Pid != pid || msg.Header.Type != unix.NLMSG_ERROR {
					continue // an answer to a request that timed out earlier
				}
				delete(pending, msg.Header.Seq)
				errs[i] = ackError(msg)
			}
		}
	}
	return errs
}

// ackError is the error an NLMSG_ERROR acknowledgement carries, with the
// kernel's extended message when it gave one; nil for success.
func ackError(msg syscall.NetlinkMessage) error {
	if len(msg.Data) < 4 {
		return errors.New("netlink: short acknowledgement")
	}
	errno := int32(nl.NativeEndian().Uint32(msg.Data[0:4]))
	if errno == 0 {
		return nil
	}
	var err error = syscall.Errno(-errno)
	rest := msg.Data[4:]
	if msg.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(rest) < syscall.SizeofNlMsghdr {
		return err
	}
	// Skip the echoed request, then read the attributes.
	echo := (*syscall.NlMsghdr)(unsafe.Pointer(&rest[0]))
	if int(echo.Len) > len(rest) {
		return err
	}
	rest = rest[align4(int(echo.Len)):]
	for len(rest) >= syscall.SizeofRtAttr {
		a := (*syscall.RtAttr)(unsafe.Pointer(&rest[0]))
		if int(a.Len) < syscall.SizeofRtAttr || int(a.Len) > len(rest) {
			break
		}
		if a.Type == nl.NLMSGERR_ATTR_MSG {
			err = fmt.Errorf("%w: %s", err, unix.ByteSliceToString(rest[syscall.SizeofRtAttr:a.Len]))
		}
		rest = rest[min(len(rest), align4(int(a.Len))):]
	}
	return err
}

func align4(n int) int { return (n + 3) &^ 3 }

// ClaimAll claims every VIP of vips as Claim does, in one step: one kernel
// lease transaction for all of them, their addresses added with batched
// netlink requests, and their first announcements sent back to back, in
// the order given. The reports are in the order of vips and count from
// ClaimAll's start. With Options.ProbeWindow, every address is probed
// first and ClaimAll returns when the window has passed. A VIP that cannot
// be claimed (invalid, its interface missing, refused by the kernel) is
// not held and its error is joined into the one returned; the others are
// claimed all the same.
func (m *Manager) ClaimAll(ctx context.Context, vips []VIP) ([]ClaimReport, error) {
	start := time.Now()
	reps := make([]ClaimReport, len(vips))
	if err := ctx.Err(); err != nil {
		for i := range reps {
			reps[i].Err = err // none was claimed
		}
		return reps, err
	}
	type item struct {
		i     int
		v     VIP
		p     *port
		probe *probeWaiter
		h     *holding
	}
	var (
		items []*item
		errs  []error
		seen  = map[vipKey]bool{}
	)
	for i, v := range vips {
		nv, err := Normalize(v)
		if err != nil {
			reps[i].Err = err
			continue
		}
		if seen[nv.key()] {
			reps[i].Err = fmt.Errorf("%w: %s given twice", ErrInvalidVIP, nv)
			continue
		}
		seen[nv.key()] = true
		p, err := m.port(nv.Interface)
		if err != nil {
			reps[i].Err = err
			continue
		}
		items = append(items, &item{i: i, v: nv, p: p})
	}

	if m.opts.ProbeWindow > 0 {
		m.mu.Lock()
		for _, it := range items {
			it.probe = &probeWaiter{addr: it.v.Prefix.Addr(), iface: it.v.Interface, c: make(chan net.HardwareAddr, 1)}
			m.probes[it.probe] = struct{}{}
		}
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			for _, it := range items {
				delete(m.probes, it.probe)
			}
			m.mu.Unlock()
		}()
		for _, it := range items {
			if err := it.p.probe(it.v.Prefix.Addr()); err != nil {
				// Claim gives up on a failed probe; here one address's
				// probe must not cost the others their claim, and the
				// probe is only a report.
				errs = append(errs, fmt.Errorf("netfloat: probe %s: %w", it.v, err))
				continue
			}
			m.probesSent.Add(1)
		}
	}

	// Same address, new prefix length: remove it first (see Claim).
	m.mu.Lock()
	var relen []*item
	for _, it := range items {
		if prev := m.held[it.v.key()]; prev != nil && prev.vip.Prefix != it.v.Prefix && prev.index == it.p.index {
			relen = append(relen, &item{v: prev.vip, p: it.p})
		}
	}
	m.mu.Unlock()
	for _, it := range relen {
		if err := m.addrDel(it.p.index, it.v.Prefix); err != nil {
			errs = append(errs, err)
		}
	}

	if m.kl != nil {
		m.mu.Lock()
		for _, it := range items {
			m.claiming[it.v.key()] = it.v.Prefix.Addr()
		}
		m.mu.Unlock()
		_ = m.applyKernel()
	}
	reqs := make([]*nl.NetlinkRequest, len(items))
	for k, it := range items {
		reqs[k] = m.addrReplaceReq(it.p.index, it.v.Prefix, m.label(it.v.Interface), m.lifetimeSecs())
	}
	nerrs := m.execBatch(reqs)
	added := time.Since(start)

	m.mu.Lock()
	failed := false
	var ok []*item
	for k, it := range items {
		delete(m.claiming, it.v.key())
		if nerrs[k] != nil {
			failed = true
			reps[it.i].Err = fmt.Errorf("netfloat: add %s to ifindex %d: %w", it.v.Prefix, it.p.index, nerrs[k])
			continue
		}
		reps[it.i].AddedAfter = added
		ok = append(ok, it)
	}
	if m.closed {
		m.mu.Unlock()
		for _, it := range ok {
			reps[it.i].Err = ErrClosed
		}
		return reps, joinReports(reps, errs)
	}
	ctxs := make([]context.Context, len(ok))
	for k, it := range ok {
		if old := m.held[it.v.key()]; old != nil {
			old.cancel()
		}
		actx, cancel := context.WithCancel(context.Background())
		ctxs[k] = actx
		it.h = &holding{vip: it.v, index: it.p.index, cancel: cancel, done: make(chan struct{})}
		m.held[it.v.key()] = it.h
		m.wg.Add(1)
	}
	m.mu.Unlock()
	if failed && m.kl != nil {
		_ = m.applyKernel() // the failed ones out of the kernel lease again
	}

	for _, it := range ok {
		if err := m.announce(it.p, it.v); err != nil {
			// Held all the same, as after Claim: the burst goes on.
			errs = append(errs, err)
		}
		reps[it.i].AnnouncedAfter = time.Since(start)
	}
	// The rest of each burst, after every first announcement.
	for k, it := range ok {
		go m.announcer(ctxs[k], it.v, it.h.done)
	}
	if len(ok) > 0 {
		m.log.Info("vips claimed", "count", len(ok), "added_us", added.Microseconds(),
			"announced_us", reps[ok[len(ok)-1].i].AnnouncedAfter.Microseconds())
	}

	if m.opts.ProbeWindow > 0 && len(items) > 0 {
		t := time.NewTimer(m.opts.ProbeWindow - time.Since(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		for _, it := range items {
			select {
			case mac := <-it.probe.c:
				reps[it.i].Conflict = mac
			default:
			}
		}
	}
	return reps, joinReports(reps, errs)
}

// joinReports is the reports' errors and the others, joined.
func joinReports(reps []ClaimReport, errs []error) error {
	for _, r := range reps {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseAll releases every VIP of vips as Release does, in one step: their
// announcements stopped, one kernel lease transaction, their addresses
// removed with batched netlink requests. Addresses (or interfaces) already
// gone are not errors; the other failures are joined.
func (m *Manager) ReleaseAll(vips []VIP) error {
	var errs []error
	type target struct {
		v     VIP
		index int
		h     *holding
	}
	var ts []target
	m.mu.Lock()
	for _, v := range vips {
		nv, err := Normalize(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h := m.held[nv.key()]
		delete(m.held, nv.key())
		ts = append(ts, target{v: nv, h: h})
	}
	m.mu.Unlock()
	// No announcement leaves once the addresses start to go.
	var hs []*holding
	for _, t := range ts {
		if t.h != nil {
			hs = append(hs, t.h)
		}
	}
	stopAll(hs)
	if len(hs) > 0 {
		// The kernel stops serving them first, then they go.
		_ = m.applyKernel()
	}
	index := map[string]int{}
	var reqs []*nl.NetlinkRequest
	var del []target
	for _, t := range ts {
		if t.h != nil {
			t.index = t.h.index
		} else {
			i, ok := index[t.v.Interface]
			if !ok {
				link, err := m.h.LinkByName(t.v.Interface)
				switch {
				case err == nil:
					i = link.Attrs().Index
				case isGone(err):
					i = -1
				default:
					errs = append(errs, fmt.Errorf("netfloat: release %s: %w", t.v, err))
					i = -1
				}
				index[t.v.Interface] = i
			}
			if i < 0 {
				continue
			}
			t.index = i
		}
		reqs = append(reqs, m.addrDelReq(t.index, t.v.Prefix))
		del = append(del, t)
	}
	for k, err := range m.execBatch(reqs) {
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("netfloat: delete %s from ifindex %d: %w", del[k].v.Prefix, del[k].index, err))
		}
	}
	return errors.Join(errs...)
}

// ExtendAll restarts the lifetime of every held VIP of vips, as Extend
// does, with batched netlink requests. It returns the VIPs that are not
// held (a caller entitled to them claims them again) and the other
// failures, joined.
func (m *Manager) ExtendAll(vips []VIP) (notHeld []VIP, err error) {
	var errs []error
	var reqs []*nl.NetlinkRequest
	var hs []*holding
	for _, v := range vips {
		h, err := m.holdingOf(v)
		if errors.Is(err, ErrNotHeld) {
			notHeld = append(notHeld, v)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reqs = append(reqs, m.addrReplaceReq(h.index, h.vip.Prefix, m.label(h.vip.Interface), m.lifetimeSecs()))
		hs = append(hs, h)
	}
	for k, err := range m.execBatch(reqs) {
		if err != nil {
			errs = append(errs, fmt.Errorf("netfloat: add %s to ifindex %d: %w", hs[k].vip.Prefix, hs[k].index, err))
		}
	}
	return notHeld, errors.Join(errs...)
}

// heldOf is the holdings of the held VIPs of vips, in order; the others
// are left out.
func (m *Manager) heldOf(vips []VIP) ([]*holding, error) {
	var errs []error
	var hs []*holding
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vips {
		nv, err := Normalize(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if h := m.held[nv.key()]; h != nil {
			hs = append(hs, h)
		}
	}
	return hs, errors.Join(errs...)
}

// stopAll stops the announcers of hs, all told first, then waited for:
// once it has returned no announcement of them goes out any more, not even
// one that was already being sent (a late gratuitous ARP from the old
// active of a handover would point clients back at it). Not under m.mu: an
// announcement in flight takes it.
func stopAll(hs []*holding) {
	for _, h := range hs {
		h.cancel()
	}
	for _, h := range hs {
		<-h.done
	}
}

func vipsOf(hs []*holding) []VIP {
	out := make([]VIP, len(hs))
	for i, h := range hs {
		out[i] = h.vip
	}
	return out
}

// QuietAll is Quiet for every held VIP of vips, with one kernel lease
// transaction. It returns the VIPs now quiet; those not held are left out
// (nothing to keep), invalid ones are the error.
func (m *Manager) QuietAll(vips []VIP) ([]VIP, error) {
	hs, err := m.heldOf(vips)
	stopAll(hs)
	if m.kl != nil && len(hs) > 0 {
		m.mu.Lock()
		for _, h := range hs {
			if !h.quiet {
				h.quiet = true
				h.acceptUntil = time.Duration(m.leaseMax.Load())
			}
		}
		m.mu.Unlock()
		// A failure disarms the kernel lease: see Quiet.
		_ = m.applyKernel()
	}
	return vipsOf(hs), err
}

// RefuseAll is Refuse for every held VIP of vips, with one kernel lease
// transaction. It returns the VIPs now refused; those not held are left
// out. Without an armed kernel lease it returns ErrKernelLeaseUnavailable
// and changes nothing.
func (m *Manager) RefuseAll(vips []VIP) ([]VIP, error) {
	if m.kl == nil || m.KernelLeaseStats().Failing {
		return nil, ErrKernelLeaseUnavailable
	}
	hs, err := m.heldOf(vips)
	if err != nil {
		return nil, err
	}
	stopAll(hs)
	m.mu.Lock()
	for _, h := range hs {
		h.quiet = true
		h.acceptUntil = 0 // in no accept set: the kernel drops what comes
	}
	m.mu.Unlock()
	if len(hs) > 0 {
		if err := m.applyKernel(); err != nil {
			return vipsOf(hs), fmt.Errorf("netfloat: refuse %d addresses: %w", len(hs), err)
		}
	}
	return vipsOf(hs), nil
}
