package supervisor

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks sd_notify. Without NOTIFY_SOCKET every call is a no-op, so
// the supervisor runs the same with and without systemd.
type notifier struct {
	log        *slog.Logger
	lastStatus string
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "event", "notify_error", "state", state, "err", err)
	}
}

// ready is sent once the cgroup tree exists and every process was started.
func (n *notifier) ready(status string) {
	n.lastStatus = status
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

func (n *notifier) status(s string) {
	if s == n.lastStatus {
		return
	}
	n.lastStatus = s
	n.send("STATUS=" + s)
}

func (n *notifier) stopping() { n.send(daemon.SdNotifyStopping) }

// watchdog pings systemd at half of WATCHDOG_USEC, but only after the main
// loop has run a no-op posted to it: a loop that is stuck (deadlock, a
// blocking call that should not be there) stops the pings and systemd
// restarts us, which is the point of the watchdog.
func (n *notifier) watchdog(ctx context.Context, loop chan<- func()) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("invalid watchdog settings from systemd", "event", "notify_error", "err", err)
		return
	}
	if interval == 0 {
		return
	}
	every := interval / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		alive := make(chan struct{})
		select {
		case loop <- func() { close(alive) }:
		case <-ctx.Done():
			return
		case <-time.After(every):
			n.log.Warn("main loop not accepting work; withholding watchdog ping", "event", "watchdog_miss")
			continue
		}
		select {
		case <-alive:
			n.send(daemon.SdNotifyWatchdog)
		case <-ctx.Done():
			return
		case <-time.After(every):
			n.log.Warn("main loop did not answer; withholding watchdog ping", "event", "watchdog_miss")
		}
	}
}
