// Package locator is `vigil locator`: the service locator of one host. It
// records every node's token check-ins, grants the active role's lease
// (the protocol core decides; this package does the I/O), persists its
// promises with fsync before answering, and reports its view to the
// supervisor. It runs in control/locator, on every host, witnesses included.
package locator

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/schedwatch"
)

// StateFile is the locator's persisted state, in runtime.state_dir.
const StateFile = "locator.state"

// Report is what the locator tells the supervisor, and what `vigil status
// --json` shows under "locator". Keys are stable.
type Report struct {
	Self             string          `json:"self"`
	Incarnation      uint64          `json:"incarnation"`
	Epoch            uint64          `json:"epoch"`
	Holder           string          `json:"holder"`
	LeaseValid       bool            `json:"lease_valid"`
	LeaseRemainingMS int64           `json:"lease_remaining_ms"`
	GrantInMS        int64           `json:"grant_in_ms"`
	Quarantined      bool            `json:"quarantined"`
	Nodes            []NodeReport    `json:"nodes"`
	Transport        transport.Stats `json:"transport"`
	PersistErrors    uint64          `json:"persist_errors"`
	Listen           string          `json:"listen"`
	// Degraded: not scheduled for longer than control.sched_delay_warn
	// within the last 10 s.
	Degraded          bool    `json:"degraded"`
	SchedLateEpisodes uint64  `json:"sched_late_episodes"`
	SchedMaxLateMS    float64 `json:"sched_max_late_ms"`
	// SchedLate is how late every 10 ms wakeup of this process was.
	SchedLate *schedwatch.HistogramJSON `json:"sched_late_histogram,omitempty"`
	// Realtime is what control.realtime put in force for this process.
	Realtime realtime.Report `json:"realtime"`
}

// NodeReport is one node's last check-in here.
type NodeReport struct {
	ID          string `json:"id"`
	Seen        bool   `json:"seen"`
	AgeMS       int64  `json:"age_ms"`
	Epoch       uint64 `json:"epoch"`
	Healthy     bool   `json:"healthy"`
	Maintenance bool   `json:"maintenance"`
	TokenSeq    uint64 `json:"token_seq"`
}

// Run serves until ctx ends or the supervisor's channel closes.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	key, err := config.ReadKeyFile(cfg.Cluster.KeyFile)
	if err != nil {
		return err
	}
	rt := realtime.ApplyAndLog(realtime.Settings{Realtime: cfg.Control.Realtime}, log)
	pcfg := transport.ProtocolConfig(cfg)
	pcfg.Self = cfg.Cluster.Node
	statePath := filepath.Join(cfg.Runtime.StateDir, StateFile)
	var st protocol.LocatorState
	if _, err := statefile.Load(statePath, &st); err != nil {
		return err
	}
	l, err := protocol.NewLocator(pcfg, st, clock.Boottime())
	if err != nil {
		return err
	}
	// The new incarnation must be on disk before any datagram carries it.
	rd := l.Ready()
	if rd.State != nil {
		if err := statefile.Save(statePath, rd.State); err != nil {
			return err
		}
		st.Incarnation = rd.State.Incarnation
	}
	tr, err := transport.Open(cfg, pcfg, key, true, log)
	if err != nil {
		return err
	}
	defer tr.Close()
	sup, err := ipc.FromEnv()
	if err != nil && !errors.Is(err, ipc.ErrNoChannel) {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if sup != nil {
		defer sup.Close()
		go func() {
			// The supervisor closing its end means it is gone: a control
			// plane never runs unsupervised.
			for {
				m, err := sup.Recv()
				if err != nil {
					log.Warn("supervisor channel closed; exiting", "event", "supervisor_gone")
					cancel()
					return
				}
				if m.Type == "command" {
					_ = sup.Send(&ipc.Msg{Type: "reply", ID: m.ID, Error: "the locator takes no commands"}, time.Second)
				}
			}
		}()
	}
	log.Info("locator started", "event", "locator_start", "listen", tr.Addr().String(), "incarnation", st.Incarnation, "epoch", st.Epoch, "holder", st.Holder)

	watch, err := schedwatch.New(schedwatch.Config{Threshold: cfg.Control.SchedDelayWarn, Logger: log})
	if err != nil {
		return err
	}
	go func() { _ = watch.Run(ctx) }()

	in := make(chan transport.Inbound, 256)
	go tr.Run(ctx, in)
	tick := time.NewTicker(pcfg.TokenInterval)
	defer tick.Stop()
	reportTick := time.NewTicker(250 * time.Millisecond)
	defer reportTick.Stop()
	var persistErrors uint64
	var lastHolder string
	var lastEpoch uint64 = st.Epoch
	report := func() {
		if sup == nil {
			return
		}
		r := buildReport(l.Status(), clock.Boottime(), tr, persistErrors)
		r.Incarnation = st.Incarnation
		r.Realtime = rt
		ws := watch.Snapshot()
		r.Degraded, r.SchedLateEpisodes, r.SchedMaxLateMS = ws.Degraded, ws.Episodes, float64(ws.MaxLate)/1e6
		h := ws.Histogram.JSON()
		r.SchedLate = &h
		b, _ := json.Marshal(r)
		if err := sup.Send(&ipc.Msg{Type: "report", Report: b}, 50*time.Millisecond); err != nil {
			log.Debug("cannot report to the supervisor", "err", err)
		}
	}
	flush := func() {
		rd := l.Ready()
		if rd.State != nil {
			if err := statefile.Save(statePath, rd.State); err != nil {
				// An answer whose promise is not on disk could be broken
				// by a restart: say nothing rather than something unsafe.
				persistErrors++
				log.Error("cannot persist locator state; not answering", "event", "persist_error", "err", err)
				return
			}
		}
		for _, e := range rd.Messages {
			if err := tr.Send(e); err != nil {
				log.Debug("send failed", "err", err)
			}
		}
		s := l.Status()
		if s.Holder != lastHolder || s.Epoch != lastEpoch {
			log.Info("lease granted", "event", "grant", "holder", s.Holder, "epoch", s.Epoch, "previous", lastHolder)
			lastHolder, lastEpoch = s.Holder, s.Epoch
		}
	}
	report()
	for {
		select {
		case <-ctx.Done():
			log.Info("locator stopped", "event", "locator_stop")
			return nil
		case m := <-in:
			if err := l.Step(m.At, m.Msg); err != nil {
				log.Debug("message rejected", "type", m.Msg.Type.String(), "from", m.Msg.From, "err", err)
			}
			flush()
		case <-tick.C:
			l.Tick(clock.Boottime())
			flush()
		case <-reportTick.C:
			// The locator is not fenced; its report is for status only.
			report()
		}
	}
}

func buildReport(s protocol.LocatorStatus, now time.Duration, tr *transport.Transport, persistErrors uint64) Report {
	r := Report{
		Self: s.Self, Epoch: s.Epoch, Holder: s.Holder, LeaseValid: s.LeaseValid,
		GrantInMS: s.GrantIn.Milliseconds(), Quarantined: s.Quarantined,
		Transport: tr.Stats(), PersistErrors: persistErrors, Listen: tr.Addr().String(),
	}
	if s.LeaseValid {
		r.LeaseRemainingMS = (s.LeaseUntil - now).Milliseconds()
	}
	for _, n := range s.Nodes {
		nr := NodeReport{ID: n.ID, Seen: n.Seen, Epoch: n.Epoch, Healthy: n.Healthy, Maintenance: n.Maintenance, TokenSeq: n.TokenSeq}
		if n.Seen {
			nr.AgeMS = (now - n.At).Milliseconds()
		}
		r.Nodes = append(r.Nodes, nr)
	}
	return r
}
