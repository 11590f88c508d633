package nodemanager

import (
	"errors"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
)

// holds are sockets this process asks its supervisor to keep open until it
// is gone (ctlmsg.TypeHold): the packet sockets of the floating-IP
// interfaces, whose close waits for an RCU grace period each. Without it a
// SIGKILLed node manager's exit released them itself, and its reaping, on
// which the crash release waits, came 20-45 ms after the kill with the
// kernel's default RCU. keep (netfloat.Options.KeepOpen) may run before the
// channel is open and must not block, so the duplicates wait here until a
// report goes out (flush).
type holds struct {
	mu      sync.Mutex
	pending map[string][]int
	log     *slog.Logger
}

// keep takes ownership of fds, to be held under key.
func (h *holds) keep(key string, fds []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending == nil {
		h.pending = map[string][]int{}
	}
	closeAll(h.pending[key]) // not sent yet: superseded
	h.pending[key] = fds
}

// flush hands what is pending to the supervisor, without waiting: what it
// has no room for now goes with a later report.
func (h *holds) flush(sup *ipc.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, fds := range h.pending {
		err := sup.TrySendFiles(ctlmsg.HoldMsg(key), fds)
		if errors.Is(err, ipc.ErrWouldBlock) {
			return
		}
		if err != nil {
			// An old supervisor, or a broken channel: the sockets are
			// closed by this process's exit, as before.
			h.log.Debug("cannot hand sockets to the supervisor", "key", key, "err", err)
		}
		closeAll(fds) // the supervisor has its own now, or never will
		delete(h.pending, key)
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
