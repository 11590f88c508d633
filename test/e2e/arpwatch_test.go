package e2e

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigil-project/vigil/internal/neightest"
)

// arpWatch asks "who has VIP" from one host every interval with real ARP
// requests and records, per MAC, the first and last reply: what the LAN
// sees, independent of any host's own state.
type arpWatch struct {
	c    *neightest.ARPClient
	stop chan struct{}
	done sync.WaitGroup

	mu      sync.Mutex
	answers map[string]*arpAnswers
}

type arpAnswers struct {
	first, last time.Time
	n           int
}

func watchARP(t *testing.T, n *Net, from string, every time.Duration) *arpWatch {
	t.Helper()
	h := n.Hosts[from]
	var c *neightest.ARPClient
	var self netip.Addr // the sender address: the host's own, as an ARP client of it would use
	if err := h.Run(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		if self, err = neightest.InterfaceIPv4(ifi); err != nil {
			return err
		}
		c, err = neightest.DialARP(ifi)
		return err
	}); err != nil {
		t.Fatalf("arp client on %s: %v", from, err)
	}
	w := &arpWatch{c: c, stop: make(chan struct{}), answers: map[string]*arpAnswers{}}
	vip := netip.MustParseAddr(VIP)
	w.done.Add(2)
	go func() {
		defer w.done.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				_ = c.Request(self, vip)
			}
		}
	}()
	go func() {
		defer w.done.Done()
		for {
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			p, err := c.Read()
			select {
			case <-w.stop:
				return
			default:
			}
			if err != nil {
				continue // the deadline (frames that are not ARP are skipped by Read): look at w.stop again
			}
			if p.Op != neightest.ARPReply || p.SenderIP != vip {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			a := w.answers[p.SenderMAC.String()]
			if a == nil {
				a = &arpAnswers{first: now}
				w.answers[p.SenderMAC.String()] = a
			}
			a.last = now
			a.n++
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *arpWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
		w.done.Wait()
		w.c.Close()
	}
}

// result stops the watch and returns the answers per MAC.
func (w *arpWatch) result() map[string]arpAnswers {
	w.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]arpAnswers{}
	for k, v := range w.answers {
		out[k] = *v
	}
	return out
}

// overlap is how long the old MAC still answered after the new one first
// did (0 if never).
func arpOverlap(ans map[string]arpAnswers, oldMAC, newMAC net.HardwareAddr) time.Duration {
	o, okO := ans[oldMAC.String()]
	nw, okN := ans[newMAC.String()]
	if !okO || !okN || !o.last.After(nw.first) {
		return 0
	}
	return o.last.Sub(nw.first)
}
