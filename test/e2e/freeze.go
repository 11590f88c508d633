package e2e

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FreezeProbe measures the machine's own floor: a SCHED_FIFO thread, in the
// harness's cgroup (outside every hog's), that records how late its 1 ms
// timer fires. On these VMs the whole guest stops now and then (DESIGN.md,
// "Measuring on these machines"); an outage no longer than the freeze seen
// in the same run is the machine's, not the system's.
type FreezeProbe struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	max      time.Duration
	realtime bool
}

// StartFreezeProbe starts the probe; without SCHED_FIFO it still runs,
// and Realtime says so.
func StartFreezeProbe() *FreezeProbe {
	p := &FreezeProbe{stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		// Never unlocked: the thread is realtime, so it must end with
		// this goroutine instead of serving the rest of the program.
		runtime.LockOSThread()
		err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}, 0)
		p.realtime = err == nil
		close(ready)
		const tick = time.Millisecond
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			t0 := time.Now()
			_ = unix.Nanosleep(&unix.Timespec{Nsec: int64(tick)}, nil)
			if late := time.Since(t0) - tick; late > 0 {
				p.mu.Lock()
				if late > p.max {
					p.max = late
				}
				p.mu.Unlock()
			}
		}
	}()
	<-ready
	return p
}

// Realtime reports whether the probe runs SCHED_FIFO.
func (p *FreezeProbe) Realtime() bool { return p.realtime }

// TakeMax returns the largest lateness since the last call and resets it.
func (p *FreezeProbe) TakeMax() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.max
	p.max = 0
	return m
}

// Stop ends the probe.
func (p *FreezeProbe) Stop() {
	close(p.stop)
	<-p.done
}
