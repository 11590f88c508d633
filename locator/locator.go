// Package locator is `vigil locator`: the service locator of one host. It
// records every node's token check-ins, grants the active role's lease
// (the protocol core decides; this package does the I/O), persists its
// promises with fsync before answering, and reports its view to the
// supervisor. It runs in control/locator, on every host, witnesses included.
package locator

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/clock"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
	"github.com/vigil-project/vigil/internal/statefile"
	"github.com/vigil-project/vigil/internal/timingstat"
	"github.com/vigil-project/vigil/internal/transport"
	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/realtime"
	"github.com/vigil-project/vigil/schedwatch"
)

// StateFile is the locator's persisted state, in runtime.state_dir (each
// service's, config.Config.ForService).
const StateFile = "locator.state"

// served is the locator of one service: its own core, port, state file and
// replay windows (docs/protocol.md, "Several services"). Only the process,
// its loop and its report channel are shared.
type served struct {
	slot int // its service: the index in the file's services
	d    *driver
	tr   *transport.Transport
	pcfg protocol.Config
	log  *slog.Logger
}

// Run serves the services in slots (indexes into cfg.Services, the whole
// file's configuration: every one, unless an older supervisor runs a
// process per service) until ctx ends or the supervisor's channel closes.
func Run(ctx context.Context, cfg *config.Config, slots []int, log *slog.Logger) error {
	key, err := config.ReadKeyFile(cfg.Cluster.KeyFile)
	if err != nil {
		return err
	}
	rt := realtime.ApplyAndLog(realtime.Settings{Realtime: cfg.Control.Realtime}, log)
	clk := clock.Real{}
	n := len(slots)
	svcs := make([]*served, 0, n)
	// bySlot finds a datagram's service by the slot its port stamps on it.
	bySlot := make([]*served, cfg.ServiceCount())
	defer func() {
		for _, s := range svcs {
			s.tr.Close()
		}
	}()
	// A service whose core cannot start (its state file refused, its port
	// taken) does not end the process, which serves the host's other
	// services: it answers no node for that service, is reported as not
	// started, and is tried again every ctlmsg.StartRetryEvery.
	// Under a supervisor from before that (ctlmsg.EnvLeaveOut unset), it
	// ends the process, as it did.
	leaveOut := os.Getenv(ctlmsg.EnvLeaveOut) != "" || os.Getenv(ipc.EnvFD) == ""
	var down []*notStarted
	for _, slot := range slots {
		s, err := open(cfg, slot, key, clk, log)
		if err != nil && !leaveOut {
			return err
		}
		if err != nil {
			down = append(down, failedStart(cfg, slot, clk, log, err))
			continue
		}
		s.slot = slot
		svcs = append(svcs, s)
		bySlot[slot] = s
	}
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
				if m.Type == ctlmsg.TypeCommand {
					_ = sup.Send(ctlmsg.Reply(m.ID, errors.New("the locator takes no commands")), time.Second)
				}
			}
		}()
	}
	watch, err := schedwatch.New(schedwatch.Config{Threshold: cfg.Control.SchedDelayWarn, Logger: log})
	if err != nil {
		return err
	}
	go func() { _ = watch.Run(ctx) }()

	// One loop for every service: their timing is the cluster's, so one
	// tick serves them all, and each datagram says whose port took it.
	in := make(chan transport.Inbound, 256*n)
	for _, s := range svcs {
		go s.tr.Run(ctx, in)
	}
	pcfg0, err := cfg.ForService(slots[0])
	if err != nil {
		return err
	}
	interval := tickPeriod(transport.ProtocolConfig(pcfg0))
	tick := clk.NewTicker(interval)
	defer tick.Stop()
	for _, s := range svcs {
		s.d.interval, s.d.lastTick = interval, clk.Now()
	}
	reportTick := clk.NewTicker(ctlmsg.FullReportEvery)
	defer reportTick.Stop()
	// retry fires every StartRetryEvery while a service is not started.
	var retry <-chan time.Time
	var retryTick clock.Ticks
	if len(down) > 0 {
		retryTick = clk.NewTicker(ctlmsg.StartRetryEvery)
		defer func() { retryTick.Stop() }()
		retry = retryTick.C()
	}
	tryAgain := func() {
		left := down[:0]
		for _, f := range down {
			s, err := open(cfg, f.slot, key, clk, log)
			if err != nil {
				f.failed(err)
				left = append(left, f)
				continue
			}
			s.slot = f.slot
			s.d.interval, s.d.lastTick = interval, clk.Now()
			svcs = append(svcs, s)
			bySlot[f.slot] = s
			go s.tr.Run(ctx, in)
			f.log.Info("service started after failing to", "event", "service_start_recovered",
				"failed_ms", (clk.Now() - f.since).Milliseconds(), "attempts", f.attempts)
		}
		down = left
		if len(down) == 0 {
			retryTick.Stop()
			retry = nil
		}
	}
	report := func() {
		if sup == nil {
			return
		}
		rt.Refresh() // the supervisor may have made us SCHED_RR since start
		ws := watch.Snapshot()
		h := ws.Histogram.JSON()
		for _, s := range svcs {
			r := s.report(s.slot)
			r.Realtime = rt
			r.Degraded, r.SchedLateEpisodes, r.SchedMaxLateMS = ws.Degraded, ws.Episodes, float64(ws.MaxLate)/1e6
			r.SchedLate = &h
			msg, err := ctlmsg.LocatorReportMsg(&r)
			if err != nil {
				s.log.Error("cannot encode the report", "event", "ipc_error", "err", err)
				continue
			}
			// Never wait for the supervisor (no realtime priority,
			// starved on a loaded host): this loop answers the nodes'
			// renewals. A report it has no room for is skipped; the next
			// one says it all.
			if err := sup.TrySend(msg); err != nil {
				s.log.Debug("report to the supervisor skipped", "err", err)
			}
		}
		for _, f := range down {
			r := ctlmsg.LocatorReport{Slot: f.slot, Self: cfg.Cluster.Node, Realtime: rt,
				StartError: f.err, StartFailingMS: (clk.Now() - f.since).Milliseconds()}
			if msg, err := ctlmsg.LocatorReportMsg(&r); err == nil {
				_ = sup.TrySend(msg)
			}
		}
	}
	report()
	for {
		select {
		case <-ctx.Done():
			log.Info("locator stopped", "event", "locator_stop")
			return nil
		case m := <-in:
			if m.Slot >= 0 && m.Slot < len(bySlot) && bySlot[m.Slot] != nil {
				bySlot[m.Slot].d.onInbound(m)
			}
		case <-tick.C():
			for _, s := range svcs {
				s.d.onTick()
			}
		case <-reportTick.C():
			// The locator is not fenced; its report is for status only.
			report()
		case <-retry:
			tryAgain()
			report()
		}
	}
}

// notStarted is a service whose locator could not start: since when, the
// last error, how many tries.
type notStarted struct {
	slot     int
	since    time.Duration
	err      string
	attempts int
	log      *slog.Logger
}

// failedStart is the first failure to start the service in slot.
func failedStart(cfg *config.Config, slot int, clk clock.Clock, log *slog.Logger, err error) *notStarted {
	if cfg.ServiceCount() > 1 && slot < len(cfg.Services) {
		log = log.With("service", cfg.Services[slot].Name)
	}
	f := &notStarted{slot: slot, since: clk.Now(), log: log}
	f.failed(err)
	return f
}

// failed notes one more failed try; a new cause is logged.
func (f *notStarted) failed(err error) {
	f.attempts++
	if msg := err.Error(); msg != f.err {
		f.err = msg
		f.log.Error("service not started: this host's locator answers no node for it, and tries again every "+ctlmsg.StartRetryEvery.String()+"; its other services run",
			"event", "service_start_failed", "err", msg, "attempts", f.attempts)
	}
}

// open starts the locator of the service in slot: its state, its port and
// its core. Every line it logs names the service when the file has more
// than one.
func open(cfg *config.Config, slot int, key []byte, clk clock.Clock, log *slog.Logger) (*served, error) {
	several := cfg.ServiceCount() > 1
	sc, err := cfg.ForService(slot)
	if err != nil {
		return nil, err
	}
	if several {
		// journalctl SERVICE=NAME finds all of one service, the
		// first's too.
		log = log.With("service", sc.Services[0].Name)
	}
	pcfg := transport.ProtocolConfig(sc)
	pcfg.Self = sc.Cluster.Node
	statePath := filepath.Join(sc.Runtime.StateDir, StateFile)
	owner := statefile.Owner{Kind: "locator", Cluster: sc.Cluster.Name, ID: sc.Cluster.Node}
	st, lost, err := loadState(statePath, owner, clk.Wall(), log)
	if err != nil {
		return nil, err
	}
	tr, err := transport.Open(sc, pcfg, key, true, log)
	if err != nil {
		return nil, err
	}
	w := &statefile.Writer{Path: statePath, Owner: owner, What: "locator state", Log: log}
	d, err := start(pcfg, st, lost, clk, tr, w, log)
	if err != nil {
		tr.Close()
		return nil, err
	}
	d.timing = timingstat.NewRecorder(&timingstat.Warn{Process: "locator", Share: sc.Control.LatenessWarnShare, Lease: pcfg.Lease, Log: log}, nil)
	log.Info("locator started", "event", "locator_start", "listen", tr.Addr().String(), "incarnation", st.Incarnation+1, "epoch", st.Epoch, "holder", st.Holder)
	return &served{d: d, tr: tr, pcfg: pcfg, log: log}, nil
}

// report is the service's part of the locator's report: its core, its
// port, its state file.
func (s *served) report(slot int) ctlmsg.LocatorReport {
	d := s.d
	failing, persistErrors, lastErr := d.w.Status()
	ls := d.l.Status()
	r := buildReport(ls, d.clk.Now(), s.tr, persistErrors)
	r.Slot = slot
	if c := ls.Conf; s.pcfg.LastManStanding > 0 || c != (protocol.Membership{}) {
		r.Membership = ctlmsg.MembershipOf(c, s.pcfg.Locators)
	}
	r.PersistFailing, r.PersistError = failing, lastErr
	r.Incarnation = d.incarnation
	r.Timing = d.timing.Report(d.clk.Now())
	return r
}

// loadState reads the locator's state file. No file: a first start or a
// lost state directory, said in the log, and an incarnation from the
// clock so that the nodes, which remember the previous life's, accept this
// one (statefile.FreshIncarnation); lost is then true.
func loadState(path string, owner statefile.Owner, wall time.Time, log *slog.Logger) (st protocol.LocatorState, lost bool, err error) {
	res, err := statefile.Load(path, owner, &st)
	if err != nil {
		return st, false, err
	}
	switch res {
	case statefile.LoadedLegacy:
		log.Info("locator state file in the previous format (no checksum); rewritten now", "event", "state_upgraded", "path", path)
	case statefile.Missing:
		inc, err := statefile.FreshIncarnation(wall)
		if err != nil {
			return st, false, err
		}
		st.Incarnation = inc - 1 // NewLocator counts this start
		log.Warn("no locator state file: a first start, or runtime.state_dir was lost; starting at an incarnation from the clock and granting no lease for one lease time",
			"event", "state_new", "path", path, "incarnation", inc)
		return st, true, nil
	}
	return st, false, nil
}

// driver carries out the core's Ready: persist, then send. A failed write
// leaves the state dirty in the core (no Persisted) and sends nothing: an
// answer whose promise is not on disk could be broken by a restart, and
// silence is safe (the nodes ask again). The next flush retries the write;
// the Writer logs one persist_error per episode and persist_recovered.
type driver struct {
	l        *protocol.Locator
	w        stateWriter
	send     func(protocol.Envelope) error
	log      *slog.Logger
	clk      clock.Clock   // the lease's clock and the protocol tick
	interval time.Duration // the tick's period (tickPeriod): every one, the core's clock, the retry of a failed write, the lateness sample

	// timing: how late each tick ran, for `vigil check --timing` and the
	// lease-share warning; lastTick is when the previous one ran.
	timing   *timingstat.Recorder
	lastTick time.Duration

	incarnation uint64 // as persisted
	lastHolder  string // as persisted and logged
	lastEpoch   uint64
	lastConf    protocol.Membership
	locators    []string // the protocol's, for the membership's ids
}

// stateWriter persists locator.state: *statefile.Writer.
type stateWriter interface {
	Save(v any) error
	Status() (failing bool, errors uint64, lastErr string)
}

// start creates the protocol locator from the persisted state (lost: the
// state file was missing) and writes its first state (nothing is sent until
// a write succeeds). Its owner ticks it every d.interval. Run and the driver
// tests both start a locator with it.
func start(pcfg protocol.Config, st protocol.LocatorState, lost bool, clk clock.Clock, ep transport.Endpoint, w stateWriter, log *slog.Logger) (*driver, error) {
	l, err := protocol.NewLocator(pcfg, st, clk.Now())
	if err != nil {
		return nil, err
	}
	if lost {
		// A lost state directory cannot be told from a first start: a
		// lease granted by the previous life may still run.
		l.AssumeLostState()
	}
	// The new incarnation must be on disk before any datagram carries it:
	// the first flush writes it, and until a write succeeds nothing is
	// sent (a full disk at start is retried like any other).
	d := &driver{l: l, w: w, send: ep.Send, log: log, clk: clk, lastEpoch: st.Epoch, lastHolder: st.Holder,
		lastConf: st.Conf, locators: pcfg.Locators}
	if c := l.Status().Conf; c.Unknown {
		log.Warn("no state file under last_man_standing: this locator counts in no membership of the locators until every node checks in from the same one, or the active adds it back (docs/operations.md, \"A locator's state directory lost\")",
			"event", "membership", "membership", c.Format(pcfg.Locators))
	}
	d.flush()
	d.timing = timingstat.NewRecorder(nil, nil)
	d.interval = tickPeriod(pcfg)
	d.lastTick = clk.Now()
	return d, nil
}

// tickPeriod is how often the locator's loop ticks with no datagram. The
// locator only answers: its core has no timer of its own (Tick just moves
// its clock, which every datagram moves too), a failed write is retried by
// every check-in as well, and what is left is the lateness sample of
// `vigil check --timing`, which a quarter lease still resolves against the
// lease. Every token interval, the tick was a third of an idle locator's
// wake-ups (100 a second at lease 60 ms, for nothing).
func tickPeriod(p protocol.Config) time.Duration { return max(p.TokenInterval, p.Lease/4) }

// onInbound steps an accepted datagram into the core and carries out its
// Ready.
func (d *driver) onInbound(m transport.Inbound) {
	if err := d.l.Step(m.At, m.Msg); err != nil {
		d.log.Debug("message rejected", "type", m.Msg.Type.String(), "from", m.Msg.From, "err", err)
	}
	d.flush()
}

// onTick runs the core's timers; it is also the retry of a failed write:
// State stays in every Ready until it is on disk.
func (d *driver) onTick() {
	now := d.clk.Now()
	d.timing.Late(now, now-d.lastTick-d.interval)
	d.lastTick = now
	d.l.Tick(now)
	d.flush()
}

func (d *driver) flush() {
	rd := d.l.Ready()
	if rd.State != nil {
		if err := d.w.Save(rd.State); err != nil {
			return
		}
		d.l.Persisted(*rd.State)
		d.incarnation = rd.State.Incarnation
		switch s := rd.State; {
		case s.Holder == "" && s.Epoch != d.lastEpoch:
			// Started without state: the highest epoch the nodes name,
			// which its previous life may have granted (no grant).
			d.log.Info("epoch floor raised: no state file, so no epoch the nodes know is granted again", "event", "epoch_floor", "epoch", s.Epoch)
			d.lastEpoch = s.Epoch
		case s.Holder != d.lastHolder || s.Epoch != d.lastEpoch:
			d.log.Info("lease granted", "event", "grant", "holder", s.Holder, "epoch", s.Epoch, "previous", d.lastHolder)
			d.lastHolder, d.lastEpoch = s.Holder, s.Epoch
		}
		if c := rd.State.Conf; c != d.lastConf && !c.Unknown {
			d.log.Info("membership of the locators adopted", "event", "membership", "membership", c.Format(d.locators),
				"previous", d.lastConf.Format(d.locators))
			d.lastConf = c
		}
	}
	for _, e := range rd.Messages {
		if err := d.send(e); err != nil {
			d.log.Debug("send failed", "err", err)
		}
	}
}

func buildReport(s protocol.LocatorStatus, now time.Duration, tr transport.Endpoint, persistErrors uint64) ctlmsg.LocatorReport {
	r := ctlmsg.LocatorReport{
		Self: s.Self, Epoch: s.Epoch, Holder: s.Holder, LeaseValid: s.LeaseValid,
		GrantInMS: s.GrantIn.Milliseconds(), Quarantined: s.Quarantined,
		Transport: tr.Stats(), PersistErrors: persistErrors, Listen: tr.Addr().String(),
	}
	if s.LeaseValid {
		r.LeaseRemainingMS = (s.LeaseUntil - now).Milliseconds()
	}
	for _, n := range s.Nodes {
		nr := ctlmsg.NodeCheckin{ID: n.ID, Seen: n.Seen, Epoch: n.Epoch, Healthy: n.Healthy, Maintenance: n.Maintenance, TokenSeq: n.TokenSeq}
		if n.Seen {
			nr.AgeMS = (now - n.At).Milliseconds()
		}
		r.Nodes = append(r.Nodes, nr)
	}
	return r
}
