package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vigil-project/vigil/realtime"
	"golang.org/x/sys/unix"
)

// The bench re-executes itself in these roles, selected by roleEnv. Each
// role waits for a line on stdin before it starts (the parent places it in
// its cgroup first) and exits when stdin closes, so that a dead parent
// leaves nothing running.
const (
	roleEnv     = "VIGIL_ISOLATION_ROLE"
	realtimeEnv = "VIGIL_ISOLATION_REALTIME" // "1": call realtime.ApplySelf
	portEnv     = "VIGIL_ISOLATION_PORT"
	durationEnv = "VIGIL_ISOLATION_DURATION"
)

// probePriority is the freeze probe's SCHED_FIFO priority: above the
// control plane's SCHED_RR 10, so that it sees only what stops the vCPUs.
const probePriority = 50

// pingResult is what ping and probe print as JSON when done.
type pingResult struct {
	Report string  // realtime.ApplySelf's report, "" when not applied
	Hop    []int32 // one-way hop latencies, µs (two per round trip)
	RTT    []int32 // round trips from the scheduled send instant, µs
	Late   []int32 // probe: timer lateness, µs
	Sent   int
	Lost   int
	Err    string
	CPU    time.Duration // filled in by the parent: the role's CPU time
	// ProbeCPU is the freeze probe's CPU time in the same slice (parent).
	ProbeCPU time.Duration
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func sleepUntil(ns int64) {
	ts := unix.NsecToTimespec(ns)
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// runRole runs the role named by roleEnv and returns the exit code.
func runRole(role string) int {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 1
	}
	// Parent gone (stdin closed) ends every role.
	go func() {
		_, _ = in.ReadString('\n')
		os.Exit(0)
	}()
	var rep string
	if os.Getenv(realtimeEnv) == "1" {
		rep = realtime.ApplySelf(realtime.Settings{Realtime: true}).String()
	}
	var res pingResult
	res.Report = rep
	switch role {
	case "pong":
		// pong echoes until the parent closes stdin; it returns only on failure.
		fmt.Fprintln(os.Stderr, "pong:", pong(rep))
		return 1
	case "ping":
		port, _ := strconv.Atoi(os.Getenv(portEnv))
		d, _ := time.ParseDuration(os.Getenv(durationEnv))
		if err := ping(port, d, &res); err != nil {
			res.Err = err.Error()
		}
	case "probe":
		d, _ := time.ParseDuration(os.Getenv(durationEnv))
		if err := probe(d, &res); err != nil {
			res.Err = err.Error()
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown role", role)
		return 2
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}

func udpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind 127.0.0.1:0: %w", err)
	}
	return fd, nil
}

// pong echoes each datagram with its own receive and send times stamped
// in. Blocking syscalls on a locked thread: no netpoller hand-off between
// the wake-up and the reply.
func pong(rep string) error {
	runtime.LockOSThread()
	fd, err := udpSocket()
	if err != nil {
		return err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	fmt.Printf("port %d %s\n", sa.(*unix.SockaddrInet4).Port, strconv.Quote(rep))
	buf := make([]byte, 64)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("recvfrom: %w", err)
		}
		binary.LittleEndian.PutUint64(buf[24:], uint64(monoNow()))
		if n < 40 {
			continue
		}
		binary.LittleEndian.PutUint64(buf[32:], uint64(monoNow()))
		if err := unix.Sendto(fd, buf[:n], 0, from); err != nil && err != unix.EINTR {
			return fmt.Errorf("sendto: %w", err)
		}
	}
}

// ping sends a token every 1 ms on an absolute schedule for d. A late
// sender still sends every slot it missed, stamped with the slot's
// scheduled time, so a stall shows in every sample it delayed
// (no coordinated omission). Packet: seq, scheduled, sent, pong recv, pong send.
func ping(port int, d time.Duration, res *pingResult) error {
	runtime.LockOSThread()
	fd, err := udpSocket()
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("connect 127.0.0.1:%d: %w", port, err)
	}
	n := int(d / time.Millisecond)
	res.Hop = make([]int32, 0, 2*n)
	res.RTT = make([]int32, 0, n)
	got := make([]bool, n)
	var sendDone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		buf := make([]byte, 64)
		// Replies may come until 200 ms after the last send.
		tv := unix.Timeval{Usec: 200000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		for {
			k, err := unix.Read(fd, buf)
			if err == unix.EINTR || (err == unix.EAGAIN && !sendDone.Load()) {
				continue // a stalled pong is a sample, not the end
			}
			if err != nil {
				return // 200 ms without a reply after the last send
			}
			now := monoNow()
			if k < 40 {
				continue
			}
			seq := int(binary.LittleEndian.Uint64(buf[0:]))
			sched := int64(binary.LittleEndian.Uint64(buf[8:]))
			precv := int64(binary.LittleEndian.Uint64(buf[24:]))
			psend := int64(binary.LittleEndian.Uint64(buf[32:]))
			if seq < 0 || seq >= n || got[seq] {
				continue
			}
			got[seq] = true
			res.Hop = append(res.Hop, us(precv-sched), us(now-psend))
			res.RTT = append(res.RTT, us(now-sched))
		}
	}()
	start := monoNow() + int64(5*time.Millisecond)
	pkt := make([]byte, 40)
	for i := 0; i < n; i++ {
		slot := start + int64(i)*int64(time.Millisecond)
		if monoNow() < slot {
			sleepUntil(slot)
		}
		binary.LittleEndian.PutUint64(pkt[0:], uint64(i))
		binary.LittleEndian.PutUint64(pkt[8:], uint64(slot))
		binary.LittleEndian.PutUint64(pkt[16:], uint64(monoNow()))
		if _, err := unix.Write(fd, pkt); err != nil && err != unix.EINTR {
			return fmt.Errorf("send: %w", err)
		}
		res.Sent++
	}
	sendDone.Store(true)
	<-done
	for _, g := range got {
		if !g {
			res.Lost++
		}
	}
	return nil
}

func us(ns int64) int32 {
	v := ns / 1000
	if v > 1<<31-1 {
		v = 1<<31 - 1
	}
	if v < 0 {
		v = 0
	}
	return int32(v)
}

// probe is DESIGN.md's freeze probe: a SCHED_FIFO thread, outside every
// hog's cgroup, recording how late its own 1 ms absolute timer fires.
func probe(d time.Duration, res *pingResult) error {
	runtime.LockOSThread()
	if err := unix.Mlockall(unix.MCL_CURRENT); err != nil {
		return fmt.Errorf("mlockall: %w", err)
	}
	// Every thread, not only this one: a realtime thread returning from a
	// syscall may wait for a P held by a runtime thread, and a SCHED_OTHER
	// runtime thread starved by the hogs would show as a freeze that is
	// not one (priority inversion through the Go scheduler).
	if err := fifoAll(probePriority); err != nil {
		return err
	}
	n := int(d / time.Millisecond)
	res.Late = make([]int32, 0, n)
	next := monoNow() + int64(time.Millisecond)
	for i := 0; i < n; i++ {
		sleepUntil(next)
		res.Late = append(res.Late, us(monoNow()-next))
		next += int64(time.Millisecond)
	}
	return nil
}

// fifoAll sets SCHED_FIFO prio on every thread of the process, repeating
// until no new thread appears (new ones inherit from their creator).
func fifoAll(prio int) error {
	done := map[string]bool{}
	for pass := 0; pass < 100; pass++ {
		des, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, de := range des {
			if done[de.Name()] {
				continue
			}
			fresh++
			tid, _ := strconv.Atoi(de.Name())
			attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
			if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && err != unix.ESRCH {
				return fmt.Errorf("SCHED_FIFO %d for probe thread %d: %w", prio, tid, err)
			}
			done[de.Name()] = true
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("probe threads keep appearing")
}
