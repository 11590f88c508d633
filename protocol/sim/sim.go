// Package sim is the deterministic simulator of the protocol core: it
// runs the real protocol.Node and protocol.Locator over a simulated
// network (drops, duplicates, reordering, delays, partitions including
// asymmetric ones, corrupted datagrams), with per-host clocks that
// drift, process stalls, crashes and restarts from
// persisted state, and checks safety after every step and liveness after
// the faults heal. test/sim runs it over many seeds; tests use it too.
// A seed reproduces its schedule exactly.
//
// An adversary on the network (every other schedule) records every
// datagram and re-delivers recorded ones, to every host and process, from
// its warm-up to the end: the latest ones (inside every replay window) and
// any older one (earlier incarnations). Besides safety and liveness, the
// simulator checks that no process ever acts on a datagram that was not
// sent to its current incarnation.
//
// It also runs the scripted scenarios of testdata (scenario_test.go).
// Only tests and the command test/sim import it; it is not part of any
// production binary. The bugs it plants in the core to show that its
// checks find them go through protocol.Config.Planted, whose type is in
// protocol/internal/plant.
package sim

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vigil-project/vigil/protocol"
	"github.com/vigil-project/vigil/protocol/internal/plant"
)

// Options selects one schedule.
type Options struct {
	Seed     uint64
	MaxDrift float64 // clock-rate drift bound ρ; 0 means 1%
	Trace    bool    // record a readable trace in Result.Trace
	// Kill: instead of random faults, kill the active once and measure
	// kill-to-new-active (Result.Failover).
	Kill bool
	// Benign: only faults that must NOT move the active role (standby
	// crashes and stalls, one locator down or stalled at a time, lost
	// tokens); any role change of the active is a violation.
	Benign bool
	// Twin: every node has a twin driven as the node manager drives its
	// node (ticked only at Node.NextDeadline, or a token interval after
	// its last tick), given every input the node gets; after each input
	// their Ready must be the same. A deadline later than a timer the
	// finely ticked node acted on shows as a violation.
	Twin bool
	// Services: 2–4 services share the schedule's hosts, each its own
	// protocol instance (the product's <cluster>/<service> wire name, its
	// own preference order and failback), under the same host clocks,
	// links and host-wide faults; every property is checked per service.
	// 0 or 1: one service.
	Services int
	// LastManStanding: the cluster runs with Config.LastManStanding (a
	// window drawn from the minimum to 300 ms more) on a shape of four
	// or five locators. Its fault schedules add hosts dead for longer
	// than the window (the membership shrinks, and grows back when they
	// return) and a locator that loses its state; its Kill schedules
	// kill hosts that do not hold the role one at a time, a window apart,
	// until three locators are left, then the host that holds it: the
	// role must move within the bound, as the option promises (without
	// it no quorum is left). One service only.
	LastManStanding bool
	// EvenLocators: a shape of four locators (three nodes and a witness,
	// four nodes, or two nodes and two witnesses), whose quorum of 3
	// leaves a claim refused by two (the other shapes have three or five
	// locators).
	EvenLocators bool
	// Large: a shape of six to eight nodes (the wire format's limit),
	// with up to two witnesses and at most eight locators; the default
	// shapes have two to five nodes.
	Large bool

	bug simBug // planted bugs, for tests that check the simulator finds them
	// kernelLate overrides KernelLeaseLate (tests: a late kernel beyond
	// the drift margin must be caught).
	kernelLate time.Duration
}

type simBug uint8

const (
	bugNone               simBug = iota
	bugIgnoreDrift               // locators grant DriftMargin early
	bugNoWait                    // locators grant a new holder without waiting out the old lease
	bugRenewOnlyWithToken        // the active renews only when it holds the token
	bugForgetFailedWrite         // a failed state write counts as written (the measured defect: Ready cleared the state)
	bugNoKernelLease             // no kernel lease: a dead or frozen holder serves until its address lifetime ends
	// bugReleaseBeforeRemoval: the supervisor sends a crashed active's
	// release while its host still serves the addresses (removal after).
	bugReleaseBeforeRemoval
	// bugReleaseOnStall: the supervisor releases for a node manager that
	// is only stalled (silent, not reaped): no proof of death.
	bugReleaseOnStall
	// bugOneWireName: several services under one wire name (the
	// misordered-services hole): a datagram of one service is taken for
	// another's.
	bugOneWireName
	// bugNoShrink: a LastManStanding schedule run without the option:
	// its kills leave no quorum (the liveness check must say so).
	bugNoShrink
	// bugAnyConf: locators grant in any membership a check-in names.
	bugAnyConf
	// bugEarlyCommit: a change completes once a majority of its members
	// adopted it (not every one), so the next may follow with
	// stragglers left at older memberships.
	bugEarlyCommit
)

// planted is the part of b the core itself must carry (its decisions
// change); the simulator plants the others in its model of the host.
func (b simBug) planted() plant.Set {
	switch b {
	case bugIgnoreDrift:
		return plant.Of(plant.IgnoreDrift)
	case bugNoWait:
		return plant.Of(plant.NoWait)
	case bugRenewOnlyWithToken:
		return plant.Of(plant.RenewOnlyWithToken)
	case bugAnyConf:
		return plant.Of(plant.AnyConf)
	case bugEarlyCommit:
		return plant.Of(plant.EarlyCommit)
	}
	return plant.Set{}
}

// KernelLeaseLate is how long after its lease deadline (own clock) a host's
// kernel may still serve the floating IPs when no Vigil process on it can
// act (crashed, frozen): the kernel lease's elements lapse within the
// netlink call's lag (resent past netfloat.ApplyLagLimit, 2 ms) plus one
// jiffy (10 ms at HZ=100, the coarsest common tick) after the deadline.
// The simulator counts every holder as serving until then; the drift
// margin must cover it (docs/protocol.md, "The kernel lease's margin").
const KernelLeaseLate = 12 * time.Millisecond

// addressLifetimeLate is the same for a host without the kernel lease: the
// addresses stay, answering ARP, until their kernel lifetime (2 s, counted
// in whole seconds) ends, 1.5 s or more after the last extension.
const addressLifetimeLate = 1500 * time.Millisecond

// Result is the outcome of one schedule.
type Result struct {
	Seed       uint64
	Shape      string
	Violations []string
	Recovery   time.Duration // heal -> exactly one active for good (-1 if never)
	Bound      time.Duration // the liveness bound Recovery is checked against
	Failover   time.Duration // Kill schedules: kill -> another node active (-1 otherwise)
	Faults     []string
	Steps      int
	Messages   int
	Rejected   int // datagrams the receivers dropped (replay, corruption, ...)
	Replayed   int // datagrams the adversary re-delivered
	Forged     int // releases the adversary made without the key
	// Releases counts crashes of an active's node manager after which its
	// supervisor sent the release (CrashRelease); ReleaseKill: this Kill
	// schedule killed the active that way (Failover measures that path).
	Releases    int
	ReleaseKill bool
	// Failbacks counts failback handovers after the faults healed (a third
	// of the fault schedules run with Config.Failback); FailbackGap is the
	// longest of them from the old active's step-down to one active again.
	Failbacks   int
	FailbackGap time.Duration
	// Kept (Kill with several services): the services the killed host
	// did not hold, each of which had to keep its holder throughout.
	Kept int
	// NotPreferred (Kill): the role went to a node other than the most
	// preferred one left (with several services: for some service). Not
	// a violation: the protocol orders candidates by preference but a
	// lost or late datagram can let another win.
	NotPreferred bool
	Trace        []string
}

var simKey = []byte("vigil-simulator-cluster-key-0032")

// macLen is the length of the HMAC-SHA256 that ends every datagram
// (protocol's wire format): the simulator tells datagrams apart by it.
const macLen = sha256.Size

type simEvent struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type simQueue []*simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

type simProc struct {
	up         bool
	gen        int
	stallUntil time.Duration
	// tickAt is when the node's next periodic tick is due, deadlineAt
	// the tick armed at its deadline (armDeadline).
	tickAt, deadlineAt time.Duration
	// diskFailUntil: its state writes fail until then (a full disk). It
	// sends nothing while its state is not on disk (persist before send).
	diskFailUntil time.Duration
	queue         [][]byte
	filter        *protocol.ReplayFilter
	seen          map[uint64]bool // MACs accepted by this process incarnation
}

type simHost struct {
	id     string
	isNode bool
	rate   float64
	offset time.Duration

	node   *protocol.Node
	tw     *twin          // Options.Twin: node's deadline-ticked copy
	dead   *protocol.Node // last crashed incarnation: its lease may still be "held" until it ends
	nodeSt protocol.NodeState
	np     simProc

	loc   *protocol.Locator
	locSt protocol.LocatorState
	lp    simProc

	healthy, maint bool

	// The supervisor's copy of the node manager's last report (every
	// quarter lease while it runs): the succession, if it was active, and
	// when its lease ended (own clock).
	report      *protocol.Succession
	reportLease time.Duration
	reportAt    time.Duration
}

// twin is a node's copy ticked as the node manager ticks (Options.Twin).
type twin struct {
	n        *protocol.Node
	lastCall time.Duration
}

// tick is the node's Tick at t; the twin ticks only if its deadline has
// come or a token interval has passed since its last input (the node
// manager's nextTick).
func (w *simWorld) tick(h *simHost, t time.Duration) {
	h.node.Tick(t)
	if tw := h.tw; tw != nil && (t >= tw.n.NextDeadline() || t-tw.lastCall >= w.cfg.TokenInterval) {
		tw.n.Tick(t)
		tw.lastCall = t
	}
}

// both applies f to the node and to its twin, if any.
func (h *simHost) both(f func(n *protocol.Node)) {
	f(h.node)
	if h.tw != nil {
		f(h.tw.n)
	}
}

func (h *simHost) local(t time.Duration) time.Duration {
	return h.offset + time.Duration(float64(t)*h.rate)
}

type simWorld struct {
	opt   Options
	cfg   protocol.Config
	rng   *rand.Rand
	q     simQueue
	seq   uint64
	now   time.Duration
	hosts []*simHost
	byID  map[string]int
	res   *Result
	who   []string // check's scratch

	drop, dup, corrupt float64
	minDelay, maxDelay time.Duration
	spike              float64 // probability of a long (reordering) delay
	blocked            map[[2]int]bool

	owner        map[uint64]string
	healAt       time.Duration
	activeCnt    int
	becameOne    time.Duration
	failbackAt   time.Duration // a failback after the heal is under way since (-1: none)
	killAt       time.Duration
	killed       int
	stopped      bool
	scripted     bool
	dropTokens   bool                        // benign schedules: every token datagram between hosts is lost
	benignActive string                      // benign schedules: the active that must stay
	log          []simLogged                 // scripted: what the core did (scenario transcripts record it)
	dropNext     map[[2]int]protocol.MsgType // scripted: drop the next message of a type on a link
	// lateTicks (scenarios only): each deadline tick comes up to this
	// much late, drawn afresh each time, as a busy host's node manager
	// is scheduled late; 0 draws nothing, so schedules stay what they were.
	lateTicks time.Duration

	// The replay adversary's record, shared by the services of a schedule
	// (Options.Services) so that it also replays one service's datagrams
	// to another's processes.
	wire *simWire

	// Options.Services > 1: svc is this world's service (its index in
	// sibs), sibs every service's world of the schedule, all on the same
	// hosts, clocks and network (nil with one service).
	svc  int
	sibs []*simWorld

	// One keyed hash each for the world's life: rebuilding it per
	// datagram was a quarter of the simulator's time.
	enc *protocol.Encoder
	dec *protocol.Decoder
}

// simWire is what the replay adversary recorded: every datagram sent
// (capture), and for each one (by MAC and the sending service) the
// process incarnation it was sent to.
type simWire struct {
	captured [][]byte
	sentTo   map[sentKey]simDest
}

// newWire sizes the record for a typical schedule's datagrams (a few
// thousand a service): growing the map step by step was a tenth of the
// simulator's time.
func newWire() *simWire {
	return &simWire{captured: make([][]byte, 0, 8192), sentTo: make(map[sentKey]simDest, 8192)}
}

// sentKey is a datagram by its MAC and the service that sent it: two
// services may send the same bytes (bugOneWireName).
type sentKey struct {
	mac uint64 // the first 8 bytes of the datagram's MAC: unique enough, and cheap to hash
	svc int
}

func macKey(mac []byte) uint64 { return binary.LittleEndian.Uint64(mac) }

// simDest is the process a datagram was sent to: service, host, locator or
// node, and that process's generation when it was sent.
type simDest struct {
	svc   int
	host  int
	isLoc bool
	gen   int
}

// simLogged is one thing the core did in a scripted world: a node's
// event, a state write of a node or locator, or (from the world) a
// safety violation.
type simLogged struct {
	at   time.Duration
	host string
	proc string         // "node" or "locator"; "" for the world
	ev   protocol.Event // a node's event, or nil
	note string         // when ev is nil: what happened
}

// note records, in a scripted world, something other than an event.
func (w *simWorld) note(host, proc, format string, args ...any) {
	if w.scripted {
		w.log = append(w.log, simLogged{at: w.now, host: host, proc: proc, note: fmt.Sprintf(format, args...)})
	}
}

// shapes: 2 nodes + witness (the product's default), or 3 nodes; Run
// makes a fifth of them larger (4 nodes + witness, 5 nodes).
func simConfig(rng *rand.Rand) protocol.Config {
	// TokenTimeout is the ring's, set in Run once the shape is known.
	c := protocol.Config{Cluster: "sim", TokenInterval: protocol.DefaultTokenInterval,
		Lease: protocol.DefaultLease, DriftMargin: protocol.DefaultDriftMargin}
	if rng.IntN(4) == 0 {
		c.Nodes = []string{"a", "b", "c"}
		c.Locators = []string{"a", "b", "c"}
	} else {
		c.Nodes = []string{"a", "b"}
		c.Locators = []string{"a", "b", "w"}
	}
	return c
}

// Simulate runs one schedule and reports what it found.
func Run(opt Options) Result {
	if opt.MaxDrift == 0 {
		opt.MaxDrift = 0.01
	}
	rng := rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15))
	cfg := simConfig(rng)
	if opt.LastManStanding {
		opt.Services = 1
	}
	// A fifth of the schedules run a larger cluster, drawn from a stream
	// of its own so that the other schedules stay what they were.
	if sr := rand.New(rand.NewPCG(opt.Seed^0x5a4e5, opt.Seed)); sr.IntN(5) == 0 {
		if sr.IntN(2) == 0 {
			cfg.Nodes, cfg.Locators = []string{"a", "b", "c", "d"}, []string{"a", "b", "c", "d", "w"}
		} else {
			cfg.Nodes = []string{"a", "b", "c", "d", "e"}
			cfg.Locators = slices.Clone(cfg.Nodes)
		}
	}
	if opt.EvenLocators {
		switch rand.New(rand.NewPCG(opt.Seed^0xe7e4, opt.Seed)).IntN(3) {
		case 0:
			cfg.Nodes, cfg.Locators = []string{"a", "b", "c"}, []string{"a", "b", "c", "w"}
		case 1:
			cfg.Nodes = []string{"a", "b", "c", "d"}
			cfg.Locators = slices.Clone(cfg.Nodes)
		default:
			cfg.Nodes, cfg.Locators = []string{"a", "b"}, []string{"a", "b", "w", "x"}
		}
	}
	if opt.Large {
		// Its own stream, as the other shape options.
		nodes := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
		switch rand.New(rand.NewPCG(opt.Seed^0x1a26e, opt.Seed)).IntN(6) {
		case 0:
			cfg.Nodes, cfg.Locators = nodes[:6], append(slices.Clone(nodes[:6]), "w")
		case 1:
			cfg.Nodes, cfg.Locators = nodes[:6], append(slices.Clone(nodes[:6]), "w", "x")
		case 2:
			cfg.Nodes, cfg.Locators = nodes[:6], slices.Clone(nodes[:6])
		case 3:
			cfg.Nodes, cfg.Locators = nodes[:7], slices.Clone(nodes[:7])
		case 4:
			cfg.Nodes, cfg.Locators = nodes[:7], append(slices.Clone(nodes[:7]), "w")
		default:
			cfg.Nodes, cfg.Locators = nodes, slices.Clone(nodes)
		}
	}
	var lr *rand.Rand // LastManStanding's own stream
	if opt.LastManStanding {
		lr = rand.New(rand.NewPCG(opt.Seed^0x1a57a, opt.Seed))
		switch lr.IntN(4) {
		case 0:
			cfg.Nodes, cfg.Locators = []string{"a", "b", "c"}, []string{"a", "b", "c", "w"}
		case 1:
			cfg.Nodes, cfg.Locators = []string{"a", "b", "c", "d"}, []string{"a", "b", "c", "d", "w"}
		case 2:
			cfg.Nodes = []string{"a", "b", "c", "d", "e"}
			cfg.Locators = slices.Clone(cfg.Nodes)
		default:
			// Two nodes and three witnesses: the witness down and then
			// the active dead leaves b with two witnesses.
			cfg.Nodes, cfg.Locators = []string{"a", "b"}, []string{"a", "b", "w", "x", "y"}
		}
	}
	// The default token timeout of the ring: a larger one needs longer.
	cfg.TokenTimeout = protocol.DefaultTokenTimeoutFor(len(cfg.Nodes), cfg.TokenInterval)
	if opt.LastManStanding && opt.bug != bugNoShrink {
		cfg.LastManStanding = protocol.MinLastManStanding(cfg) + time.Duration(lr.Int64N(int64(300*time.Millisecond)))
	}
	nsvc := max(opt.Services, 1)
	ws := make([]*simWorld, nsvc)
	for k := range ws {
		c := cfg
		if nsvc > 1 {
			// The product's wire name for each of several services, and
			// a preference of its own: service k prefers the k-th node
			// first (an active/active pair, N+1 on more nodes).
			if opt.bug != bugOneWireName {
				c.Cluster = fmt.Sprintf("sim/s%d", k)
			}
			n := len(cfg.Nodes)
			c.Nodes = append(slices.Clone(cfg.Nodes[k%n:]), cfg.Nodes[:k%n]...)
		}
		if !opt.Kill && !opt.Benign {
			// Failback draws from its own stream (each service's), so
			// that the other schedules stay what they were.
			if fr := rand.New(rand.NewPCG(opt.Seed^0xfa11bac^uint64(k)<<48, opt.Seed)); fr.IntN(3) == 0 {
				c.Failback = c.TokenTimeout + time.Duration(fr.Int64N(int64(400*time.Millisecond)))
			}
		}
		if k == 0 {
			ws[0] = newWorld(opt, rng, c, false)
			continue
		}
		ws[k] = buildWorld(opt, rand.New(rand.NewPCG(opt.Seed^0x5e41ce^uint64(k)<<48, opt.Seed+uint64(k))), c, false, ws[0], k)
	}
	w := ws[0]
	if nsvc > 1 {
		for _, x := range ws {
			x.sibs = ws
		}
	}
	maxDelay := 40 * time.Millisecond // longest fault delay spike
	for _, x := range ws {
		x.res.Bound = x.cfg.RecoveryBound(maxDelay)
	}
	var end time.Duration
	adversary := rng.IntN(2) == 0
	// Half the kills are of the node manager alone on a live host, whose
	// supervisor releases the role at once (its own stream, so that the
	// other schedules stay what they were).
	withRelease := opt.bug == bugReleaseBeforeRemoval || opt.bug == bugReleaseOnStall ||
		rand.New(rand.NewPCG(opt.Seed^0x4e1ea5e, opt.Seed)).IntN(2) == 0
	switch {
	case opt.Kill && opt.LastManStanding:
		end = w.planLMSKill(lr)
	case opt.Kill && nsvc > 1:
		w.killAt = 700*time.Millisecond + time.Duration(rng.Int64N(int64(300*time.Millisecond)))
		for _, x := range ws {
			x.killAt = w.killAt
		}
		w.at(w.killAt, w.killHost)
		end = w.killAt + w.res.Bound
	case opt.Kill:
		w.killAt = 700*time.Millisecond + time.Duration(rng.Int64N(int64(300*time.Millisecond)))
		w.at(w.killAt, func() {
			i := w.holder()
			if i < 0 {
				w.violation("no active to kill at %v", w.now)
				return
			}
			w.killed = i
			if withRelease {
				w.res.ReleaseKill = w.crashRelease(i, w.cfg.Lease+w.cfg.DriftMargin)
				w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v node manager crash of the active %s, released=%v", w.now, w.hosts[i].id, w.res.ReleaseKill))
				return
			}
			w.crashNode(i)
			w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v kill active %s", w.now, w.hosts[i].id))
		})
		end = w.killAt + w.res.Bound
	case opt.Benign:
		// Each service's processes get faults of their own; none may
		// move any service.
		for _, x := range ws {
			end = max(end, x.planBenign())
		}
	default:
		w.healAt = w.planFaults()
		if opt.LastManStanding {
			w.planLMSFaults(lr, w.healAt)
		}
		for _, x := range ws {
			x.healAt = w.healAt
		}
		// Failed persistence draws from its own stream, so that the
		// schedules of the other faults stay what they were.
		w.planDiskFaults(rand.New(rand.NewPCG(opt.Seed^0xd15c, opt.Seed)), w.healAt)
		target := w
		if nsvc > 1 {
			target = ws[rand.New(rand.NewPCG(opt.Seed^0x5e7, opt.Seed)).IntN(nsvc)]
		}
		target.planCrashRelease(rand.New(rand.NewPCG(opt.Seed^0x4e1ea5e, opt.Seed)), w.healAt)
		w.at(w.healAt, func() {
			for _, x := range ws {
				x.heal()
			}
		})
		end = w.healAt + w.res.Bound + 300*time.Millisecond
	}
	if adversary {
		for _, x := range ws {
			x.forgeFrom(500*time.Millisecond, end)
			x.replayFrom(500*time.Millisecond+time.Duration(x.rng.Int64N(int64(500*time.Millisecond))), end)
		}
	}
	runAll(ws, end)
	// A failback in progress at the end is given the bound to complete.
	for k := 0; k < 3; k++ {
		last := time.Duration(-1)
		for _, x := range ws {
			last = max(last, x.failbackAt)
		}
		if last < 0 {
			break
		}
		runAll(ws, last+w.res.Bound)
	}
	for _, x := range ws {
		x.finish()
	}
	return merge(ws)
}

// runAll runs the worlds of a schedule's services as one timeline up to
// end: the earliest event of any of them next (on a tie, the lower
// service's), every world's clock at its instant, and every world checked
// after each step (a fault on a host changes several).
func runAll(ws []*simWorld, end time.Duration) {
	if len(ws) == 1 {
		ws[0].runUntil(end)
		return
	}
	for {
		var next *simWorld
		for _, x := range ws {
			if x.stopped {
				return
			}
			if len(x.q) > 0 && x.q[0].at <= end && (next == nil || x.q[0].at < next.q[0].at) {
				next = x
			}
		}
		if next == nil {
			break
		}
		e := heap.Pop(&next.q).(*simEvent)
		for _, x := range ws {
			x.now = e.at
		}
		e.fn()
		next.res.Steps++
		for _, x := range ws {
			x.check()
		}
	}
	for _, x := range ws {
		x.now = max(x.now, end)
	}
}

// merge is the schedule's result: with several services, the sum of
// their counts and the worst of their times.
func merge(ws []*simWorld) Result {
	r := *ws[0].res
	if len(ws) == 1 {
		return r
	}
	r.Shape = fmt.Sprintf("services=%d nodes=%d locators=%d", len(ws), len(ws[0].cfg.Nodes), len(ws[0].cfg.Locators))
	for _, x := range ws {
		if x.cfg.Failback > 0 {
			r.Shape += fmt.Sprintf(" s%d.failback=%v", x.svc, x.cfg.Failback)
		}
	}
	r.Failover = -1
	for k, x := range ws {
		o := x.res
		if k > 0 {
			r.Violations = append(r.Violations, o.Violations...)
			r.Faults = append(r.Faults, o.Faults...)
			r.Steps += o.Steps
			r.Messages += o.Messages
			r.Rejected += o.Rejected
			r.Replayed += o.Replayed
			r.Forged += o.Forged
			r.Releases += o.Releases
			r.Failbacks += o.Failbacks
		}
		if o.Recovery < 0 {
			r.Recovery = min(r.Recovery, o.Recovery) // never: -1 wins
		} else if r.Recovery >= 0 {
			r.Recovery = max(r.Recovery, o.Recovery)
		}
		if x.killAt >= 0 {
			r.Failover = max(r.Failover, o.Failover) // the services the kill moved
			r.NotPreferred = r.NotPreferred || o.NotPreferred
		} else if x.opt.Kill && x.benignActive != "" {
			r.Kept++
		}
		r.FailbackGap = max(r.FailbackGap, o.FailbackGap)
	}
	return r
}

// planLMSKill (Options.Kill with LastManStanding) kills hosts that do not
// hold the role, one a window (and the change's round trips) after the
// other, until three locators are left, then the host that holds it; the
// role must move within the bound (finish). It returns the schedule's end.
func (w *simWorld) planLMSKill(r *rand.Rand) time.Duration {
	t := 700*time.Millisecond + time.Duration(r.Int64N(int64(300*time.Millisecond)))
	gap := w.cfg.LastManStanding + 300*time.Millisecond
	for k := 0; k < len(w.cfg.Locators)-3; k++ {
		pick := r.Uint64()
		w.at(t, func() {
			act := w.holder()
			nodesUp := 0
			for i, h := range w.hosts {
				if i != act && h.isNode && h.np.up {
					nodesUp++
				}
			}
			var cand []int
			for i, h := range w.hosts {
				// Not the active, and not the last node that could take
				// its place.
				if i != act && (h.lp.up || h.np.up) && !(h.isNode && h.np.up && nodesUp < 2) {
					cand = append(cand, i)
				}
			}
			if len(cand) == 0 {
				return
			}
			i := cand[pick%uint64(len(cand))]
			w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v kill host %s (not the active)", w.now, w.hosts[i].id))
			w.tracef(nil, "FAULT kill host %s", w.hosts[i].id)
			w.crashNode(i)
			w.crashLoc(i)
		})
		t += gap
	}
	w.killAt = t
	w.at(t, func() {
		i := w.holder()
		if i < 0 {
			w.violation("no active to kill at %v", w.now)
			return
		}
		w.killed = i
		w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v kill host %s (the active)", w.now, w.hosts[i].id))
		w.tracef(nil, "FAULT kill host %s (the active)", w.hosts[i].id)
		w.crashNode(i)
		w.crashLoc(i)
	})
	return t + w.res.Bound
}

// planLMSFaults adds to a LastManStanding fault schedule: one or two hosts
// dead for one to three windows (the membership shrinks, and grows back
// once they return and have answered for the window, or at the heal), and
// half the time a locator that loses its state (at most once, and only
// while the membership has three members or more: with two, the one left
// holds no quorum until an operator acts, by design).
func (w *simWorld) planLMSFaults(r *rand.Rand, heal time.Duration) {
	warm := 600 * time.Millisecond
	for k := 1 + r.IntN(2); k > 0; k-- {
		i := r.IntN(len(w.hosts))
		start := warm + time.Duration(r.Int64N(int64(max(heal-warm, time.Millisecond))))
		dur := w.cfg.LastManStanding + time.Duration(r.Int64N(int64(2*w.cfg.LastManStanding)))
		w.hostFault(start, fmt.Sprintf("host %s dead for %v", w.hosts[i].id, dur), func() {
			w.crashNode(i)
			w.crashLoc(i)
		})
		cut := r.IntN(2) == 0
		cutFor := 100*time.Millisecond + time.Duration(r.Int64N(int64(2*w.cfg.LastManStanding)))
		if start+dur >= heal {
			continue // heal() brings it back
		}
		cutFor = min(cutFor, heal-start-dur)
		w.at(start+dur, func() {
			if h := w.hosts[i]; !h.lp.up {
				w.startLoc(i)
			}
			if h := w.hosts[i]; h.isNode && !h.np.up {
				w.startNode(i)
			}
			// Half the time it comes back cut off from the active only:
			// it keeps the membership it left with, and its node, hearing
			// no token, claims in it.
			if a := w.holder(); cut && a >= 0 && a != i {
				w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v host %s back, cut off from the active %s for %v", w.now, w.hosts[i].id, w.hosts[a].id, cutFor))
				w.tracef(nil, "FAULT cut %s<->%s for %v", w.hosts[i].id, w.hosts[a].id, cutFor)
				w.blocked[[2]int{i, a}], w.blocked[[2]int{a, i}] = true, true
				w.at(w.now+cutFor, func() { delete(w.blocked, [2]int{i, a}); delete(w.blocked, [2]int{a, i}) })
			}
		})
	}
	// A member cut off from the active for up to a window: its lease
	// record of the active lapses, and it may grant a claim made in
	// another membership (or see a change complete without it).
	for k := r.IntN(3); k > 0; k-- {
		j := r.Uint64()
		at := warm + time.Duration(r.Int64N(int64(max(heal-warm, time.Millisecond))))
		d := min(50*time.Millisecond+time.Duration(r.Int64N(int64(w.cfg.LastManStanding))), heal-at)
		w.at(at, func() {
			a := w.holder()
			if a < 0 {
				return
			}
			b := int(j % uint64(len(w.hosts)))
			if b == a {
				b = (b + 1) % len(w.hosts)
			}
			w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v cut the active %s <-> %s for %v", w.now, w.hosts[a].id, w.hosts[b].id, d))
			w.tracef(nil, "FAULT cut %s<->%s for %v", w.hosts[a].id, w.hosts[b].id, d)
			w.blocked[[2]int{a, b}], w.blocked[[2]int{b, a}] = true, true
			w.at(w.now+d, func() { delete(w.blocked, [2]int{a, b}); delete(w.blocked, [2]int{b, a}) })
		})
	}
	if r.IntN(2) == 0 {
		i := r.IntN(len(w.hosts))
		at := warm + time.Duration(r.Int64N(int64(max(heal-warm, time.Millisecond))))
		w.at(at, func() {
			if w.smallestConf() < 3 {
				return
			}
			w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v locator %s loses its state", w.now, w.hosts[i].id))
			w.tracef(nil, "FAULT locator %s loses its state", w.hosts[i].id)
			w.loseLocState(i)
		})
	}
}

// smallestConf is the fewest members of any membership a running locator
// or node counts in now.
func (w *simWorld) smallestConf() int {
	least := len(w.cfg.Locators)
	for _, h := range w.hosts {
		if h.loc != nil && h.lp.up {
			if c := h.loc.Status().Conf; !c.Unknown {
				least = min(least, len(c.IDs(w.cfg.Locators)))
			}
		}
		if h.node != nil && h.np.up {
			st := h.node.Status()
			least = min(least, len(st.Conf.IDs(w.cfg.Locators)))
			if st.Next != (protocol.Membership{}) {
				least = min(least, len(st.Next.IDs(w.cfg.Locators)))
			}
		}
	}
	return least
}

// killHost (Options.Kill with several services) kills the host that holds
// the first service, every service's processes on it at once: each service
// it held must move within the bound, each held elsewhere must not move
// at all.
func (w *simWorld) killHost() {
	i := w.holder()
	if i < 0 {
		w.violation("no active to kill at %v", w.now)
		return
	}
	w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v kill host %s (every service's processes)", w.now, w.hosts[i].id))
	for _, x := range w.sibs {
		if a := x.holder(); a >= 0 && a != i {
			x.benignActive, x.killAt = x.hosts[a].id, -1
		}
		x.killed = i
		x.crashNode(i)
		x.crashLoc(i)
	}
}

// holder is the host whose running node manager holds the role now, or -1.
func (w *simWorld) holder() int {
	for i, h := range w.hosts {
		if h.node != nil && h.np.up && h.node.ActiveAt(h.local(w.now)) {
			return i
		}
	}
	return -1
}

// replayFrom starts the adversary at `from`: until `end`, every 1–15 ms it
// re-delivers a recorded datagram to a random host (to the process its
// type is for, as a real sender's port choice would). Half the picks are
// among the last 64 datagrams sent (inside the receivers' replay windows,
// so only the destination check stops a cross-destination replay), half
// among everything recorded (earlier incarnations, for restarted
// receivers).
func (w *simWorld) replayFrom(from, end time.Duration) {
	var next func()
	next = func() {
		if w.now > end || len(w.wire.captured) == 0 {
			return
		}
		var b []byte
		if k := len(w.wire.captured); w.rng.IntN(2) == 0 {
			b = w.wire.captured[k-1-w.rng.IntN(min(k, protocol.ReplayWindowSize))]
		} else {
			b = w.wire.captured[w.rng.IntN(k)]
		}
		to := w.rng.IntN(len(w.hosts))
		w.res.Replayed++
		w.tracef(nil, "REPLAY %s datagram to %s", protocol.MsgType(b[3]), w.hosts[to].id)
		w.deliver(to, b)
		w.at(w.now+time.Millisecond+time.Duration(w.rng.Int64N(int64(14*time.Millisecond))), next)
	}
	w.at(from, next)
}

// forgeFrom: until end, every 5–50 ms the adversary sends each locator and
// node a release and a transfer claiming to come from the active's next
// incarnation, correctly addressed and numbered, but made without the
// cluster key (it has none): the MAC must refuse every one.
func (w *simWorld) forgeFrom(from, end time.Duration) {
	wrongKey := []byte("not-the-vigil-cluster-key-000032")
	var next func()
	next = func() {
		if w.now > end {
			return
		}
		for i, h := range w.hosts {
			if h.node == nil || !h.np.up {
				continue
			}
			s, ok := h.node.Succession(h.local(w.now))
			if !ok {
				continue
			}
			s.To = ""
			for j, o := range w.hosts {
				if j != i && o.isNode {
					s.To = o.id
				}
			}
			_, msgs, _ := protocol.CrashRelease(w.cfgFor(i), h.nodeSt, s)
			for _, env := range msgs {
				if b, err := protocol.Encode(wrongKey, env.Msg); err == nil {
					w.res.Forged++
					w.deliver(w.byID[env.To], b)
				}
			}
			break
		}
		w.at(w.now+5*time.Millisecond+time.Duration(w.rng.Int64N(int64(45*time.Millisecond))), next)
	}
	w.at(from, next)
}

// replayScripted re-delivers the last n datagrams recorded so far, oldest
// first, one every `every`, each to every host (scenario tests).
func (w *simWorld) replayScripted(n int, every time.Duration) {
	set := w.wire.captured[len(w.wire.captured)-min(n, len(w.wire.captured)):]
	for k, b := range set {
		w.at(w.now+time.Duration(k)*every, func() {
			w.tracef(nil, "REPLAY %s datagram to every host", protocol.MsgType(b[3]))
			for to := range w.hosts {
				w.res.Replayed++
				w.deliver(to, b)
			}
		})
	}
}

// newWorld builds the hosts of cfg and starts every process at time 0.
// A scripted world (scenario tests) has exact clocks and a clean network.
func newWorld(opt Options, rng *rand.Rand, cfg protocol.Config, scripted bool) *simWorld {
	return buildWorld(opt, rng, cfg, scripted, nil, 0)
}

// buildWorld is newWorld; with like != nil it builds service svc's world
// on like's hosts: the same host clocks, links and adversary's record.
func buildWorld(opt Options, rng *rand.Rand, cfg protocol.Config, scripted bool, like *simWorld, svc int) *simWorld {
	w := &simWorld{opt: opt, rng: rng, cfg: cfg, byID: map[string]int{}, scripted: scripted, svc: svc,
		wire:  newWire(),
		owner: map[uint64]string{}, blocked: map[[2]int]bool{}, healAt: -1, killAt: -1, becameOne: -1, failbackAt: -1}
	if like != nil {
		w.wire, w.blocked = like.wire, like.blocked
	}
	w.enc, _ = protocol.NewEncoder(simKey) // simKey is KeySize long
	w.dec, _ = protocol.NewDecoder(simKey)
	w.res = &Result{Seed: opt.Seed, Recovery: -1, Failover: -1}
	w.res.Shape = fmt.Sprintf("nodes=%d locators=%d", len(w.cfg.Nodes), len(w.cfg.Locators))
	if cfg.Failback > 0 {
		w.res.Shape += fmt.Sprintf(" failback=%v", cfg.Failback)
	}
	w.setNet(false)
	for _, id := range w.cfg.Locators {
		h := &simHost{id: id, isNode: slices.Index(w.cfg.Nodes, id) >= 0, healthy: true, rate: 1}
		switch {
		case like != nil:
			o := like.hosts[len(w.hosts)]
			h.rate, h.offset = o.rate, o.offset
		case !scripted:
			h.rate = 1 + (rng.Float64()*2-1)*opt.MaxDrift
			h.offset = time.Duration(rng.Int64N(int64(1000 * time.Second)))
		}
		w.byID[id] = len(w.hosts)
		w.hosts = append(w.hosts, h)
	}
	for _, id := range w.cfg.Nodes {
		if _, ok := w.byID[id]; !ok { // a node without a locator (unusual, but allowed)
			w.byID[id] = len(w.hosts)
			w.hosts = append(w.hosts, &simHost{id: id, isNode: true, healthy: true, rate: 1})
		}
	}
	for i, h := range w.hosts {
		if slices.Index(w.cfg.Locators, h.id) >= 0 {
			w.startLoc(i)
		}
		if h.isNode {
			w.startNode(i)
		}
	}
	return w
}

// runUntil processes events up to and including time end.
func (w *simWorld) runUntil(end time.Duration) {
	for len(w.q) > 0 && !w.stopped {
		if w.q[0].at > end {
			break
		}
		e := heap.Pop(&w.q).(*simEvent)
		w.now = e.at
		e.fn()
		w.res.Steps++
		w.check()
	}
	if w.now < end {
		w.now = end
	}
}

func (w *simWorld) at(t time.Duration, fn func()) {
	w.seq++
	heap.Push(&w.q, &simEvent{at: t, seq: w.seq, fn: fn})
}

func (w *simWorld) tracef(h *simHost, format string, args ...any) {
	if w.opt.Trace {
		who := "world"
		if h != nil {
			who = h.id
		}
		out := w.res
		if w.sibs != nil {
			who += fmt.Sprintf("/s%d", w.svc)
			out = w.sibs[0].res // one trace for the schedule
		}
		out.Trace = append(out.Trace, fmt.Sprintf("%10.3fms %-5s %s", float64(w.now)/1e6, who, fmt.Sprintf(format, args...)))
	}
}

func (w *simWorld) violation(format string, args ...any) {
	msg := fmt.Sprintf("t=%v: ", w.now) + fmt.Sprintf(format, args...)
	if w.sibs != nil {
		msg = fmt.Sprintf("service s%d: ", w.svc) + msg
	}
	w.res.Violations = append(w.res.Violations, msg)
	w.tracef(nil, "VIOLATION %s", msg)
	w.note("", "", "VIOLATION %s", msg)
	if len(w.res.Violations) >= 5 {
		w.stopped = true
	}
}

func (w *simWorld) setNet(faulty bool) {
	w.drop, w.dup, w.corrupt = 0, 0.002, 0.001
	w.minDelay, w.maxDelay, w.spike = 100*time.Microsecond, 2*time.Millisecond, 0.002
	if w.scripted {
		w.dup, w.corrupt, w.spike = 0, 0, 0
		w.minDelay, w.maxDelay = 500*time.Microsecond, time.Millisecond
	}
	if faulty {
		w.drop = w.rng.Float64() * 0.4
		w.dup = w.rng.Float64() * 0.2
		w.maxDelay = time.Duration(1+w.rng.IntN(20)) * time.Millisecond
		w.spike = w.rng.Float64() * 0.1
		w.corrupt = 0.01
	}
}

// ---- processes ----

func (w *simWorld) cfgFor(i int) protocol.Config {
	c := w.cfg
	c.Self = w.hosts[i].id
	c.Planted = w.opt.bug.planted()
	return c
}

func (w *simWorld) startNode(i int) {
	h := w.hosts[i]
	n, err := protocol.NewNode(w.cfgFor(i), h.nodeSt, h.local(w.now))
	if err != nil {
		w.violation("NewNode: %v", err)
		return
	}
	// A starting node manager removes whatever floating IPs a previous
	// incarnation left (NewNode's contract), so the dead one's hold ends.
	h.dead = nil
	h.node, h.tw = n, nil
	if w.opt.Twin {
		tn, err := protocol.NewNode(w.cfgFor(i), h.nodeSt, h.local(w.now))
		if err != nil {
			w.violation("NewNode (twin): %v", err)
			return
		}
		h.tw = &twin{n: tn, lastCall: h.local(w.now)}
	}
	h.report, h.reportAt = nil, 0 // the supervisor forgets the previous process's report
	h.np.up, h.np.stallUntil, h.np.queue = true, 0, nil
	h.np.gen++
	h.np.filter, h.np.seen = protocol.NewReplayFilter(w.cfgFor(i)), map[uint64]bool{}
	if !h.healthy {
		h.both(func(n *protocol.Node) { n.SetHealth(h.local(w.now), false) })
	}
	if h.maint {
		h.both(func(n *protocol.Node) { n.SetMaintenance(h.local(w.now), true) })
	}
	w.tracef(h, "node start incarnation=%d max_epoch=%d", n.Status().Incarnation, h.nodeSt.MaxEpoch)
	w.nodeReady(i)
	w.scheduleNodeTick(i, h.np.gen)
}

func (w *simWorld) startLoc(i int) { w.startLocWith(i, false) }

func (w *simWorld) startLocWith(i int, lost bool) {
	h := w.hosts[i]
	l, err := protocol.NewLocator(w.cfgFor(i), h.locSt, h.local(w.now))
	if err != nil {
		w.violation("NewLocator: %v", err)
		return
	}
	if lost {
		l.AssumeLostState()
	}
	h.loc = l
	h.lp.up, h.lp.stallUntil, h.lp.queue = true, 0, nil
	h.lp.gen++
	h.lp.filter, h.lp.seen = protocol.NewReplayFilter(w.cfgFor(i)), map[uint64]bool{}
	w.tracef(h, "locator start incarnation=%d epoch=%d holder=%q", h.locSt.Incarnation+1, h.locSt.Epoch, h.locSt.Holder)
	w.locReady(i)
	w.scheduleLocTick(i, h.lp.gen)
}

// confNote is a state's membership for the log, "" while it is the
// configured one (every scenario without last_man_standing reads as
// before).
func (w *simWorld) confNote(c, next protocol.Membership) string {
	if c == (protocol.Membership{}) && next == (protocol.Membership{}) {
		return ""
	}
	s := " conf=" + c.Format(w.cfg.Locators)
	if next != (protocol.Membership{}) {
		s += " next=" + next.Format(w.cfg.Locators)
	}
	return s
}

// loseLocState restarts host i's locator without its state file, as the
// driver does when state_dir was lost: a fresh incarnation above the old
// one (statefile.FreshIncarnation), nothing else, and AssumeLostState.
func (w *simWorld) loseLocState(i int) {
	h := w.hosts[i]
	w.crashLoc(i)
	h.locSt = protocol.LocatorState{Incarnation: h.locSt.Incarnation + 1000}
	w.startLocWith(i, true)
}

func (w *simWorld) crashNode(i int) {
	h := w.hosts[i]
	if !h.np.up {
		return
	}
	h.np.up = false
	h.np.gen++
	h.dead, h.node, h.tw = h.node, nil, nil
	w.tracef(h, "node CRASH")
}

func (w *simWorld) crashLoc(i int) {
	h := w.hosts[i]
	if !h.lp.up {
		return
	}
	h.lp.up = false
	h.lp.gen++
	h.loc = nil
	w.tracef(h, "locator CRASH")
}

func (w *simWorld) scheduleNodeTick(i, gen int) {
	h := w.hosts[i]
	period := time.Duration(float64(5*time.Millisecond)/h.rate) + time.Duration(w.rng.Int64N(int64(500*time.Microsecond)))
	h.np.tickAt = w.now + period
	w.at(h.np.tickAt, func() {
		if !h.np.up || h.np.gen != gen {
			return
		}
		if w.now < h.np.stallUntil {
			return // the resume event ticks and reschedules
		}
		w.tick(h, h.local(w.now))
		w.nodeReady(i)
		w.nodeReport(h)
		w.scheduleNodeTick(i, gen)
	})
}

// nodeReport is the node manager's report to its supervisor, every
// quarter lease while it runs: the supervisor keeps the last one.
func (w *simWorld) nodeReport(h *simHost) {
	if h.node == nil || (h.reportAt > 0 && w.now-h.reportAt < w.cfg.Lease/4) {
		return
	}
	h.reportAt = w.now
	h.report = nil
	if s, ok := h.node.Succession(h.local(w.now)); ok {
		h.report, h.reportLease = &s, h.node.LeaseUntil()
	}
}

// crashRelease is a crash of node i's node manager process on a live host
// (killed, panicked): its supervisor reaps it and, if its last report said
// it was active with lease left, removes the addresses and the kernel
// lease at once (the host stops serving), then persists the next
// incarnation and sends the release (protocol.CrashRelease); the node
// manager restarts after `restart`. Reports whether it released.
func (w *simWorld) crashRelease(i int, restart time.Duration) bool {
	h := w.hosts[i]
	if w.opt.bug == bugReleaseOnStall {
		// The planted bug: silence taken for death. The node manager is
		// only stopped; it keeps its lease and its addresses.
		w.stallNode(i, 2*w.cfg.Lease)
	} else {
		w.crashNode(i)
		w.at(w.now+restart, func() {
			if !h.np.up {
				w.startNode(i)
			}
		})
	}
	if h.report == nil || h.local(w.now) >= h.reportLease {
		return false // not active by its last report: the lease runs out
	}
	if w.opt.bug != bugReleaseBeforeRemoval && w.opt.bug != bugReleaseOnStall {
		h.dead = nil // addresses and kernel lease removed before anything is sent
	}
	st, msgs, err := protocol.CrashRelease(w.cfgFor(i), h.nodeSt, *h.report)
	if err != nil {
		w.violation("CrashRelease: %v", err)
		return false
	}
	if w.now < h.np.diskFailUntil {
		w.tracef(h, "crash release: state write FAILED; sending nothing")
		return false
	}
	h.nodeSt = st // persisted (fsync) before anything is sent
	w.note(h.id, "node", "crash release incarnation=%d", st.Incarnation)
	w.tracef(h, "node manager CRASH: addresses removed, release sent as incarnation %d", st.Incarnation)
	w.res.Releases++
	for _, env := range msgs {
		w.send(i, env)
	}
	return true
}

func (w *simWorld) scheduleLocTick(i, gen int) {
	h := w.hosts[i]
	w.at(w.now+20*time.Millisecond, func() {
		if !h.lp.up || h.lp.gen != gen || w.now < h.lp.stallUntil {
			if h.lp.up && h.lp.gen == gen {
				w.scheduleLocTick(i, gen)
			}
			return
		}
		h.loc.Tick(h.local(w.now))
		w.locReady(i)
		w.scheduleLocTick(i, gen)
	})
}

func (w *simWorld) stallNode(i int, d time.Duration) {
	h := w.hosts[i]
	if !h.np.up || h.np.stallUntil > w.now {
		return
	}
	if h.tw != nil {
		// The protocol counts its own stall from its last input, which
		// for the twin may be up to a token interval earlier than for
		// the node (it is ticked less often): the same stall would read
		// as a different gap (Node.advance shifts the token timer by
		// it). With Twin both take an input as the stall begins, so the
		// comparison is of their timers, not of their pace.
		t := h.local(w.now)
		h.node.Tick(t)
		h.tw.n.Tick(t)
		h.tw.lastCall = t
		w.nodeReady(i)
	}
	h.np.stallUntil = w.now + d
	gen := h.np.gen
	w.tracef(h, "node STALL %v", d)
	w.at(w.now+d, func() {
		if !h.np.up || h.np.gen != gen {
			return
		}
		h.np.stallUntil = 0
		w.tracef(h, "node RESUME")
		q := h.np.queue
		h.np.queue = nil
		for _, b := range q {
			w.deliverNow(i, false, b)
		}
		w.tick(h, h.local(w.now))
		w.nodeReady(i)
		w.scheduleNodeTick(i, gen)
	})
}

func (w *simWorld) stallLoc(i int, d time.Duration) {
	h := w.hosts[i]
	if !h.lp.up || h.lp.stallUntil > w.now {
		return
	}
	h.lp.stallUntil = w.now + d
	gen := h.lp.gen
	w.tracef(h, "locator STALL %v", d)
	w.at(w.now+d, func() {
		if !h.lp.up || h.lp.gen != gen {
			return
		}
		h.lp.stallUntil = 0
		w.tracef(h, "locator RESUME")
		q := h.lp.queue
		h.lp.queue = nil
		for _, b := range q {
			w.deliverNow(i, true, b)
		}
	})
}

// ---- Ready handling: persist, check events, send ----

func (w *simWorld) nodeReady(i int) {
	h := w.hosts[i]
	rd := h.node.Ready()
	if h.tw != nil {
		w.compareTwin(h, rd, h.tw.n.Ready())
	}
	written := true
	if rd.State != nil {
		if w.now < h.np.diskFailUntil {
			written = false
			if w.opt.bug == bugForgetFailedWrite {
				h.both(func(n *protocol.Node) { n.Persisted(*rd.State) })
			}
			w.tracef(h, "node state write FAILED (incarnation=%d max_epoch=%d); sending nothing", rd.State.Incarnation, rd.State.MaxEpoch)
			w.note(h.id, "node", "state write FAILED incarnation=%d max_epoch=%d", rd.State.Incarnation, rd.State.MaxEpoch)
		} else {
			h.nodeSt = *rd.State // persisted (fsync) before anything is sent
			h.both(func(n *protocol.Node) { n.Persisted(*rd.State) })
			w.note(h.id, "node", "state incarnation=%d max_epoch=%d%s", rd.State.Incarnation, rd.State.MaxEpoch, w.confNote(rd.State.Conf, rd.State.Next))
		}
	}
	for _, ev := range rd.Events {
		w.tracef(h, "event %s", ev)
		if w.scripted {
			w.log = append(w.log, simLogged{at: w.now, host: h.id, proc: "node", ev: ev})
		}
		switch e := ev.(type) {
		case protocol.BecameStandby:
			if w.benignActive == h.id {
				w.violation("the active %s lost the role although nothing it needs failed: %s", h.id, e)
			}
			if e.Planned && strings.HasSuffix(e.Reason, ": failback") && w.healAt >= 0 && w.now >= w.healAt {
				// Planned, after the faults healed: not a recovery,
				// but its gap must be as short as one.
				w.failbackAt = w.now
				w.res.Failbacks++
			}
		case protocol.BecameActive:
			w.own(h, e.Epoch)
		case protocol.TokenRegenerated:
			w.own(h, e.Epoch)
		}
	}
	if written {
		h.both(func(n *protocol.Node) { n.Sent(h.local(w.now)) }) // a write takes no simulated time: as the driver, dated at the send, on the node's clock
		for _, env := range rd.Messages {
			w.send(i, env)
		}
	} // else the events are local and were acted on; the messages are lost
	w.armDeadline(i)
}

// armDeadline ticks the node at its next deadline (Node.NextDeadline)
// when that comes before its next tick, as the node manager arms its
// timer (nextTick), a timer's latency of up to 300 µs later. Without it
// a timed action waited for the next periodic tick, up to 5.5 ms: as
// much as the claim stagger between two candidates (half a token
// interval), which hid two defects of the claim order with four locators
// behind the simulator's own lateness (docs/protocol.md, the order of
// candidates), and a liveness defect of last_man_standing.
func (w *simWorld) armDeadline(i int) {
	h := w.hosts[i]
	if h.node == nil || !h.np.up || w.now < h.np.stallUntil {
		return // a stalled node is ticked when it resumes
	}
	wait := max(time.Duration(float64(h.node.NextDeadline()-h.local(w.now))/h.rate), 0)
	at := w.now + wait + time.Duration(w.rng.Int64N(int64(300*time.Microsecond))) + time.Microsecond
	if w.lateTicks > 0 {
		at += time.Duration(w.rng.Int64N(int64(w.lateTicks)))
	}
	if at >= h.np.tickAt && h.np.tickAt > w.now || at >= h.np.deadlineAt && h.np.deadlineAt > w.now {
		return // a tick comes first
	}
	h.np.deadlineAt = at
	gen := h.np.gen
	w.at(at, func() {
		if !h.np.up || h.np.gen != gen || w.now < h.np.stallUntil || h.np.deadlineAt != at {
			return
		}
		w.tick(h, h.local(w.now))
		w.nodeReady(i)
	})
}

// compareTwin: the deadline-ticked twin must have done exactly what the
// node did.
func (w *simWorld) compareTwin(h *simHost, rd, rt protocol.Ready) {
	same := reflect.DeepEqual(rd.Messages, rt.Messages) && reflect.DeepEqual(rd.Events, rt.Events) &&
		(rd.State == nil) == (rt.State == nil) && (rd.State == nil || *rd.State == *rt.State)
	if !same {
		w.violation("%s: the deadline-ticked twin diverged at %v (its next deadline %v, last input %v): node sent %v, events %v; twin sent %v, events %v; node %+v twin %+v",
			h.id, h.local(w.now), h.tw.n.NextDeadline(), h.tw.lastCall, rd.Messages, rd.Events, rt.Messages, rt.Events, h.node.Status(), h.tw.n.Status())
		h.tw = nil // one report per incarnation
	}
}

func (w *simWorld) own(h *simHost, e uint64) {
	if o, ok := w.owner[e]; ok && o != h.id {
		w.violation("epoch %d used by %s and %s", e, o, h.id)
	}
	w.owner[e] = h.id
}

func (w *simWorld) locReady(i int) {
	h := w.hosts[i]
	rd := h.loc.Ready()
	if rd.State != nil {
		if w.now < h.lp.diskFailUntil {
			w.tracef(h, "locator state write FAILED (epoch=%d holder=%q); sending nothing", rd.State.Epoch, rd.State.Holder)
			w.note(h.id, "locator", "state write FAILED incarnation=%d epoch=%d holder=%q", rd.State.Incarnation, rd.State.Epoch, rd.State.Holder)
			if w.opt.bug == bugForgetFailedWrite {
				h.loc.Persisted(*rd.State)
			}
			return
		}
		h.locSt = *rd.State
		h.loc.Persisted(*rd.State)
		w.note(h.id, "locator", "state incarnation=%d epoch=%d holder=%q%s", rd.State.Incarnation, rd.State.Epoch, rd.State.Holder, w.confNote(rd.State.Conf, protocol.Membership{}))
	}
	for _, env := range rd.Messages {
		w.send(i, env)
	}
}

func (w *simWorld) send(from int, env protocol.Envelope) {
	to, ok := w.byID[env.To]
	if !ok {
		w.violation("message to unknown host %q", env.To)
		return
	}
	w.checkPersisted(w.hosts[from], env.Msg)
	b, err := w.enc.AppendEncode(nil, env.Msg)
	if err != nil {
		w.violation("Encode %s: %v", env.Msg.Type, err)
		return
	}
	w.res.Messages++
	dh := w.hosts[to]
	dest := simDest{svc: w.svc, host: to, isLoc: env.Msg.Type.ForLocator(), gen: dh.np.gen}
	if dest.isLoc {
		dest.gen = dh.lp.gen
	}
	w.wire.sentTo[sentKey{macKey(b[len(b)-macLen:]), w.svc}] = dest
	w.wire.captured = append(w.wire.captured, b)
	if w.opt.Trace {
		w.tracef(w.hosts[from], "send %s", fmtMsg(env))
	}
	if from == to {
		w.at(w.now+50*time.Microsecond, func() { w.deliver(to, b) })
		return
	}
	if t, ok := w.dropNext[[2]int{from, to}]; ok && t == env.Msg.Type {
		delete(w.dropNext, [2]int{from, to})
		w.tracef(w.hosts[from], "  (dropped by script)")
		return
	}
	if w.dropTokens && env.Msg.Type == protocol.MsgToken {
		w.tracef(w.hosts[from], "  (token dropped)")
		return
	}
	if w.blocked[[2]int{from, to}] {
		w.tracef(w.hosts[from], "  (partitioned %s->%s)", w.hosts[from].id, env.To)
		return
	}
	if w.rng.Float64() < w.drop {
		w.tracef(w.hosts[from], "  (dropped)")
		return
	}
	copies := 1
	if w.rng.Float64() < w.dup {
		copies = 2
	}
	for c := 0; c < copies; c++ {
		d := w.minDelay + time.Duration(w.rng.Int64N(int64(w.maxDelay-w.minDelay)+1))
		if w.rng.Float64() < w.spike {
			d += time.Duration(w.rng.Int64N(int64(40 * time.Millisecond)))
		}
		bb := b
		if w.rng.Float64() < w.corrupt {
			bb = append([]byte(nil), b...)
			bb[w.rng.IntN(len(bb))] ^= byte(1 + w.rng.IntN(255))
		}
		w.at(w.now+d, func() { w.deliver(to, bb) })
	}
}

func (w *simWorld) deliver(to int, b []byte) {
	if len(b) < 4 {
		return
	}
	isLoc := protocol.MsgType(b[3]).ForLocator()
	h := w.hosts[to]
	p := &h.np
	if isLoc {
		p = &h.lp
	}
	if !p.up {
		return
	}
	if w.now < p.stallUntil {
		p.queue = append(p.queue, b)
		return
	}
	w.deliverNow(to, isLoc, b)
}

func (w *simWorld) deliverNow(to int, isLoc bool, b []byte) {
	h := w.hosts[to]
	p := &h.np
	if isLoc {
		p = &h.lp
	}
	m, err := w.dec.Decode(b)
	if err != nil {
		w.res.Rejected++
		return
	}
	if err := p.filter.Accept(m); err != nil {
		w.res.Rejected++
		return
	}
	mac := macKey(b[len(b)-macLen:])
	if p.seen[mac] {
		w.violation("%s accepted the same datagram twice (%s from %s)", h.id, m.Type, m.From)
	}
	p.seen[mac] = true
	if w.opt.Trace {
		w.tracef(h, "recv %s", fmtMsg(protocol.Envelope{To: h.id, Msg: m}))
	}
	now := h.local(w.now)
	if isLoc {
		err = h.loc.Step(now, m)
		w.locReady(to)
	} else {
		err = h.node.Step(now, m)
		if h.tw != nil {
			if terr := h.tw.n.Step(now, m); (terr == nil) != (err == nil) {
				w.violation("%s: deadline twin's Step(%s) = %v, the node's %v", h.id, m.Type, terr, err)
			}
			h.tw.lastCall = now
		}
		w.nodeReady(to)
	}
	switch {
	case errors.Is(err, protocol.ErrStale):
		w.res.Rejected++ // answered at most; nothing acted on
	case err != nil:
		w.violation("%s %s Step: %v", map[bool]string{true: "locator", false: "node"}[isLoc], h.id, err)
	default:
		// Acted on: it must have been sent to this very process
		// incarnation, never captured on its way elsewhere or earlier,
		// nor another service's.
		d, ok := w.wire.sentTo[sentKey{mac, w.svc}]
		for k := 0; !ok && k < len(w.sibs); k++ {
			d, ok = w.wire.sentTo[sentKey{mac, k}]
		}
		if ok && d != (simDest{svc: w.svc, host: to, isLoc: isLoc, gen: p.gen}) {
			w.violation("%s acted on a %s from %s sent to %s (service=%d locator=%v gen=%d), not to it (service=%d locator=%v gen=%d)",
				h.id, m.Type, m.From, w.hosts[d.host].id, d.svc, d.isLoc, d.gen, w.svc, isLoc, p.gen)
		}
	}
}

// ---- checks ----

// check runs after every step: at this real instant, at most one node may
// serve the floating IPs. A node serves while, by its own clock and state,
// it holds a valid lease; a crashed or stalled node cannot remove its
// addresses, so it serves until its kernel lease ends (KernelLeaseLate after
// its lease deadline). A running node removes them itself at the deadline,
// but its kernel entries may outlive that by as much, so every node counts
// until then.
func (w *simWorld) check() {
	cnt := 0
	who := w.who[:0] // reused: check runs after every step
	defer func() { w.who = who[:0] }()
	for _, h := range w.hosts {
		if !h.isNode {
			continue
		}
		t := h.local(w.now)
		if w.serves(h.node, t, h.np.up && h.np.stallUntil <= w.now) || w.serves(h.dead, t, false) {
			cnt++
			who = append(who, h.id)
		}
	}
	if cnt > 1 {
		w.violation("overlapping leases: %v all active", who)
	}
	switch {
	case cnt == 1 && w.activeCnt != 1 && w.failbackAt >= 0:
		gap := w.now - w.failbackAt
		w.res.FailbackGap = max(w.res.FailbackGap, gap)
		if gap > w.res.Bound {
			w.violation("liveness: failback left no active for %v (bound %v)", gap, w.res.Bound)
		}
		w.failbackAt = -1
	case cnt == 1 && w.activeCnt != 1:
		w.becameOne = w.now
	}
	w.activeCnt = cnt
	if w.killAt >= 0 && w.res.Failover < 0 && w.now > w.killAt && cnt == 1 && who[0] != w.hosts[w.killed].id {
		w.res.Failover = w.now - w.killAt
		// The preference order (Nodes) names where the role should go:
		// the first node other than the killed one, and running (a
		// last_man_standing kill killed others first).
		next := ""
		for _, id := range w.cfg.Nodes {
			if h := w.hosts[w.byID[id]]; id != w.hosts[w.killed].id && h.np.up {
				next = id
				break
			}
		}
		w.res.NotPreferred = who[0] != next
	}
}

// serves: node n serves the floating IPs at its local time t.
// running: its process can act (up and not stalled).
func (w *simWorld) serves(n *protocol.Node, t time.Duration, running bool) bool {
	if n == nil {
		return false
	}
	late := KernelLeaseLate
	if w.opt.kernelLate > 0 {
		late = w.opt.kernelLate
	}
	if w.opt.bug == bugNoKernelLease && !running {
		late = addressLifetimeLate
	}
	return n.ActiveAt(t - late)
}

func (w *simWorld) finish() {
	if w.stopped {
		return
	}
	// Benign schedules; and with several services, in a kill schedule,
	// each service the killed host did not hold.
	if w.opt.Benign || w.benignActive != "" {
		h := w.hosts[w.byID[w.benignActive]]
		if w.activeCnt != 1 || h.node == nil || !h.node.ActiveAt(h.local(w.now)) {
			w.violation("benign faults: %s is not the one active at the end", w.benignActive)
		}
		return
	}
	if w.opt.Kill {
		if w.res.Failover < 0 {
			w.violation("no new active within %v of killing the active", w.res.Bound)
		}
		return
	}
	if w.activeCnt != 1 || w.becameOne < 0 {
		w.violation("liveness: %d active at the end, %v after the faults healed (bound %v)", w.activeCnt, w.now-w.healAt, w.res.Bound)
		return
	}
	rec := w.becameOne - w.healAt
	if rec < 0 {
		rec = 0
	}
	w.res.Recovery = rec
	if rec > w.res.Bound {
		w.violation("liveness: one active only %v after the faults healed (bound %v)", rec, w.res.Bound)
	}
}

// ---- faults ----

func (w *simWorld) randNodeFrom(r *rand.Rand) int {
	for {
		if i := r.IntN(len(w.hosts)); w.hosts[i].isNode {
			return i
		}
	}
}

func (w *simWorld) randNode() int {
	for {
		i := w.rng.IntN(len(w.hosts))
		if w.hosts[i].isNode {
			return i
		}
	}
}

func (w *simWorld) activeHost() int {
	if i := w.holder(); i >= 0 {
		return i
	}
	return w.randNode()
}

// fault records and traces desc at `at` and runs fn; with several
// services desc is said to be this service's.
func (w *simWorld) fault(at time.Duration, desc string, fn func()) {
	w.hostFault(at, w.svcPrefix()+desc, fn)
}

// hostFault is fault for a fault whose desc names the services it hits
// (planFaults: host-wide faults, or a drawn set of services).
func (w *simWorld) hostFault(at time.Duration, desc string, fn func()) {
	w.at(at, func() {
		w.res.Faults = append(w.res.Faults, fmt.Sprintf("%v %s", w.now, desc))
		w.tracef(nil, "FAULT %s", desc)
		fn()
	})
}

// svcPrefix is "sK: " with several services, "" with one.
func (w *simWorld) svcPrefix() string {
	if w.sibs == nil {
		return ""
	}
	return fmt.Sprintf("s%d: ", w.svc)
}

// all is every service's world of the schedule (w alone with one).
func (w *simWorld) all() []*simWorld {
	if w.sibs == nil {
		return []*simWorld{w}
	}
	return w.sibs
}

// some draws the services a process fault hits: w alone with one service
// (no draw, so that one-service schedules stay what they were); with
// several, all of them a third of the time (every node manager on a host,
// say), otherwise a random non-empty set.
func (w *simWorld) some(r *rand.Rand) []*simWorld {
	if w.sibs == nil {
		return []*simWorld{w}
	}
	if r.IntN(3) == 0 {
		return w.sibs
	}
	for {
		var out []*simWorld
		for _, x := range w.sibs {
			if r.IntN(2) == 0 {
				out = append(out, x)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
}

// one draws one service's world (w with one service, no draw).
func (w *simWorld) one(r *rand.Rand) *simWorld {
	if w.sibs == nil {
		return w
	}
	return w.sibs[r.IntN(len(w.sibs))]
}

// svcs names ws for a fault's description: "" with one service.
func svcs(ws ...*simWorld) string {
	if ws[0].sibs == nil {
		return ""
	}
	if len(ws) == len(ws[0].sibs) {
		return " [every service]"
	}
	names := make([]string, len(ws))
	for i, x := range ws {
		names[i] = fmt.Sprintf("s%d", x.svc)
	}
	return " [" + strings.Join(names, " ") + "]"
}

// planFaults schedules 1..5 random faults after a warm-up and returns when
// they have all healed.
func (w *simWorld) planFaults() time.Duration {
	r := w.rng
	warm := 600 * time.Millisecond
	span := 300*time.Millisecond + time.Duration(r.Int64N(int64(2200*time.Millisecond)))
	heal := warm + span
	k := 1 + r.IntN(5)
	for f := 0; f < k; f++ {
		start := warm + time.Duration(r.Int64N(int64(span*8/10)))
		maxDur := heal - start
		dur := 20*time.Millisecond + time.Duration(r.Int64N(int64(min(maxDur, 700*time.Millisecond))))
		if dur > maxDur {
			dur = maxDur
		}
		switch r.IntN(12) {
		case 0:
			i := w.randNode()
			ws := w.some(r)
			w.hostFault(start, fmt.Sprintf("crash node %s%s for %v", w.hosts[i].id, svcs(ws...), dur), func() {
				for _, x := range ws {
					x.crashNode(i)
				}
			})
			w.at(start+dur, func() {
				for _, x := range ws {
					if !x.hosts[i].np.up {
						x.startNode(i)
					}
				}
			})
		case 1:
			x := w.one(r)
			w.hostFault(start, fmt.Sprintf("crash active%s for %v", svcs(x), dur), func() {
				i := x.activeHost()
				x.crashNode(i)
				x.at(x.now+dur, func() {
					if !x.hosts[i].np.up {
						x.startNode(i)
					}
				})
			})
		case 2:
			i := r.IntN(len(w.hosts))
			ws := w.some(r)
			w.hostFault(start, fmt.Sprintf("crash locator %s%s for %v", w.hosts[i].id, svcs(ws...), dur), func() {
				for _, x := range ws {
					x.crashLoc(i)
				}
			})
			w.at(start+dur, func() {
				for _, x := range ws {
					if !x.hosts[i].lp.up {
						x.startLoc(i)
					}
				}
			})
		case 3:
			i := w.randNode()
			ws := w.some(r)
			w.hostFault(start, fmt.Sprintf("stall node %s%s %v", w.hosts[i].id, svcs(ws...), dur), func() {
				for _, x := range ws {
					x.stallNode(i, dur)
				}
			})
		case 4:
			d := min(maxDur, 2*w.cfg.Lease+time.Duration(r.Int64N(int64(200*time.Millisecond))))
			x := w.one(r)
			w.hostFault(start, fmt.Sprintf("stall active%s %v", svcs(x), d), func() { x.stallNode(x.activeHost(), d) })
		case 5:
			i := r.IntN(len(w.hosts))
			ws := w.some(r)
			w.hostFault(start, fmt.Sprintf("stall locator %s%s %v", w.hosts[i].id, svcs(ws...), dur), func() {
				for _, x := range ws {
					x.stallLoc(i, dur)
				}
			})
		case 6:
			// The whole host: every service's processes on it.
			i := r.IntN(len(w.hosts))
			w.hostFault(start, fmt.Sprintf("stall host %s %v", w.hosts[i].id, dur), func() {
				for _, x := range w.all() {
					x.stallLoc(i, dur)
					if x.hosts[i].isNode {
						x.stallNode(i, dur)
					}
				}
			})
		case 7:
			// Links are the hosts': every service's world shares blocked.
			i := r.IntN(len(w.hosts))
			out, in := true, true
			switch r.IntN(3) {
			case 1:
				out = false
			case 2:
				in = false
			}
			w.hostFault(start, fmt.Sprintf("isolate %s out=%v in=%v for %v", w.hosts[i].id, out, in, dur), func() {
				for j := range w.hosts {
					if j != i {
						if out {
							w.blocked[[2]int{i, j}] = true
						}
						if in {
							w.blocked[[2]int{j, i}] = true
						}
					}
				}
			})
			w.at(start+dur, func() { w.unblockAll() })
		case 8:
			a, b := r.IntN(len(w.hosts)), r.IntN(len(w.hosts))
			if a != b {
				both := r.IntN(2) == 0
				w.hostFault(start, fmt.Sprintf("cut link %s->%s both=%v for %v", w.hosts[a].id, w.hosts[b].id, both, dur), func() {
					w.blocked[[2]int{a, b}] = true
					if both {
						w.blocked[[2]int{b, a}] = true
					}
				})
				w.at(start+dur, func() { w.unblockAll() })
			}
		case 9:
			w.hostFault(start, fmt.Sprintf("lossy network for %v", dur), func() {
				w.setNet(true)
				for _, x := range w.all() {
					x.drop, x.dup, x.corrupt = w.drop, w.dup, w.corrupt
					x.minDelay, x.maxDelay, x.spike = w.minDelay, w.maxDelay, w.spike
				}
			})
			w.at(start+dur, func() {
				for _, x := range w.all() {
					x.setNet(false)
				}
			})
		case 10:
			// Maintenance is the host's: it moves every service off. An
			// application failing moves only the services that need it.
			i := w.randNode()
			maint := r.IntN(3) == 0
			ws := w.all()
			if !maint {
				ws = w.some(r)
			}
			w.hostFault(start, fmt.Sprintf("node %s%s unhealthy=%v maintenance=%v for %v", w.hosts[i].id, svcs(ws...), !maint, maint, dur), func() {
				for _, x := range ws {
					h := x.hosts[i]
					if maint {
						h.maint = true
					} else {
						h.healthy = false
					}
					if h.node != nil && h.np.up && x.now >= h.np.stallUntil {
						h.both(func(n *protocol.Node) {
							n.SetHealth(h.local(x.now), h.healthy)
							n.SetMaintenance(h.local(x.now), h.maint)
						})
						x.nodeReady(i)
					}
				}
			})
			w.at(start+dur, func() {
				for _, x := range ws {
					x.setHealthy(i)
				}
			})
		case 11:
			i := w.randNode()
			to := ""
			if r.IntN(2) == 0 {
				to = w.cfg.Nodes[r.IntN(len(w.cfg.Nodes))]
			}
			x := w.one(r)
			w.hostFault(start, fmt.Sprintf("switchover%s at %s to %q", svcs(x), w.hosts[i].id, to), func() {
				h := x.hosts[i]
				if h.node != nil && h.np.up && x.now >= h.np.stallUntil {
					err := h.node.Switchover(h.local(x.now), to)
					if h.tw != nil {
						if terr := h.tw.n.Switchover(h.local(x.now), to); (terr == nil) != (err == nil) {
							x.violation("%s: deadline twin's Switchover = %v, the node's %v", h.id, terr, err)
						}
					}
					x.tracef(h, "switchover(%q): %v", to, err)
					x.nodeReady(i)
				}
			})
		}
	}
	return heal
}

// planBenign schedules faults that leave the active and a quorum of
// locators working; the active must keep the role throughout.
func (w *simWorld) planBenign() time.Duration {
	r := w.rng
	warm := 600 * time.Millisecond
	end := warm + 1500*time.Millisecond + time.Duration(r.Int64N(int64(1500*time.Millisecond)))
	var active = -1
	w.at(warm, func() {
		active = w.activeHost()
		if h := w.hosts[active]; !h.node.ActiveAt(h.local(w.now)) {
			w.violation("no active after the warm-up")
		}
		w.benignActive = w.hosts[active].id
	})
	// One locator fault at a time, never overlapping, so a quorum stays up.
	t := warm
	for t < end-300*time.Millisecond {
		start := t + time.Duration(r.Int64N(int64(300*time.Millisecond)))
		dur := 20*time.Millisecond + time.Duration(r.Int64N(int64(600*time.Millisecond)))
		t = start + dur + time.Millisecond
		kind := r.IntN(6)
		w.at(start, func() {
			if active < 0 {
				return
			}
			var others []int
			for i, h := range w.hosts {
				if h.isNode && i != active {
					others = append(others, i)
				}
			}
			o := others[r.IntN(len(others))]
			l := r.IntN(len(w.hosts))
			switch kind {
			case 0:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v crash standby %s for %v", w.now, w.hosts[o].id, dur))
				w.crashNode(o)
				w.at(w.now+dur, func() {
					if !w.hosts[o].np.up {
						w.startNode(o)
					}
				})
			case 1:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v stall standby %s %v", w.now, w.hosts[o].id, dur))
				w.stallNode(o, dur)
			case 2:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v crash locator %s for %v", w.now, w.hosts[l].id, dur))
				w.crashLoc(l)
				w.at(w.now+dur, func() {
					if !w.hosts[l].lp.up {
						w.startLoc(l)
					}
				})
			case 3:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v stall locator %s %v", w.now, w.hosts[l].id, dur))
				w.stallLoc(l, dur)
			case 4:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v drop tokens for %v", w.now, dur))
				w.dropTokens = true
				w.at(w.now+dur, func() { w.dropTokens = false })
			case 5:
				w.res.Faults = append(w.res.Faults, w.svcPrefix()+fmt.Sprintf("%v standby %s Late(%v)", w.now, w.hosts[o].id, dur))
				if h := w.hosts[o]; h.node != nil && h.np.up && w.now >= h.np.stallUntil {
					h.both(func(n *protocol.Node) { n.Late(h.local(w.now), dur) })
					if h.tw != nil {
						h.tw.lastCall = h.local(w.now)
					}
					w.nodeReady(o)
				}
			}
		})
	}
	return end
}

func (w *simWorld) unblockAll() {
	if w.now < w.healAt || w.healAt < 0 {
		clear(w.blocked)
	}
}

func (w *simWorld) setHealthy(i int) {
	h := w.hosts[i]
	h.healthy, h.maint = true, false
	if h.node != nil && h.np.up && w.now >= h.np.stallUntil {
		h.both(func(n *protocol.Node) {
			n.SetHealth(h.local(w.now), true)
			n.SetMaintenance(h.local(w.now), false)
		})
		w.nodeReady(i)
	}
}

// checkPersisted is persist-before-send, checked on every datagram: what
// a message says or promises is on its sender's disk. A locator's answer
// names the epoch and holder it has persisted (a grant it could not write
// is not answered); a node's claim carries an epoch at most its persisted
// highest; every datagram carries the persisted incarnation.
func (w *simWorld) checkPersisted(h *simHost, m protocol.Message) {
	if m.Type.FromLocator() {
		if m.Incarnation != h.locSt.Incarnation || (m.Type == protocol.MsgAck && (m.Ack.Epoch != h.locSt.Epoch || m.Ack.Holder != h.locSt.Holder)) {
			w.violation("locator %s sent %s (incarnation %d, epoch %d, holder %q) not on its disk (incarnation %d, epoch %d, holder %q)",
				h.id, m.Type, m.Incarnation, m.Ack.Epoch, m.Ack.Holder, h.locSt.Incarnation, h.locSt.Epoch, h.locSt.Holder)
		}
		return
	}
	if m.Incarnation != h.nodeSt.Incarnation || (m.Type == protocol.MsgCheckIn && m.CheckIn.Claim && m.CheckIn.Epoch > h.nodeSt.MaxEpoch) {
		w.violation("node %s sent %s (incarnation %d, epoch %d) not on its disk (incarnation %d, max epoch %d)",
			h.id, m.Type, m.Incarnation, m.CheckIn.Epoch, h.nodeSt.Incarnation, h.nodeSt.MaxEpoch)
	}
}

// planDiskFaults makes, in a third of the schedules, the state writes of
// one node or locator fail for a while before healAt; in half of those the
// process then crashes and restarts from what is on disk (the grant or
// claim it could not write is forgotten).
func (w *simWorld) planDiskFaults(r *rand.Rand, healAt time.Duration) {
	if r.IntN(3) != 0 {
		return
	}
	warm := 600 * time.Millisecond
	if healAt <= warm+50*time.Millisecond {
		return
	}
	start := warm + time.Duration(r.Int64N(int64(healAt-warm-40*time.Millisecond)))
	// Ends, and a crash's restart happens, before the heal.
	dur := min(healAt-start-35*time.Millisecond, 5*time.Millisecond+time.Duration(r.Int64N(int64(900*time.Millisecond))))
	crash := r.IntN(2) == 0
	node := r.IntN(2) == 0
	i := r.IntN(len(w.hosts))
	if node {
		i = w.randNodeFrom(r)
	}
	kind := map[bool]string{true: "node", false: "locator"}[node]
	// The disk is the host's: every service's node managers (or
	// locators) on it fail their writes.
	w.hostFault(start, fmt.Sprintf("disk full on %s %s for %v (crash after: %v)", kind, w.hosts[i].id, dur, crash), func() {
		for _, x := range w.all() {
			h := x.hosts[i]
			if node {
				h.np.diskFailUntil = x.now + dur
			} else {
				h.lp.diskFailUntil = x.now + dur
			}
		}
	})
	if !crash {
		return
	}
	w.at(start+dur, func() {
		for _, x := range w.all() {
			if node {
				x.crashNode(i)
			} else {
				x.crashLoc(i)
			}
			x.tracef(x.hosts[i], "crash after the disk failure")
		}
		w.at(w.now+30*time.Millisecond, func() {
			for _, x := range w.all() {
				if node && !x.hosts[i].np.up {
					x.startNode(i)
				}
				if !node && !x.hosts[i].lp.up {
					x.startLoc(i)
				}
			}
		})
	})
}

// planCrashRelease: in a quarter of the fault schedules, the active's node
// manager crashes on a live host once (crashRelease), its restart 10–300
// ms later (the node manager's hold-off, at least lease + drift margin,
// keeps it silent longer: the simulated one only starts as a standby).
func (w *simWorld) planCrashRelease(r *rand.Rand, healAt time.Duration) {
	if r.IntN(4) != 0 {
		return
	}
	warm := 600 * time.Millisecond
	if healAt <= warm+50*time.Millisecond {
		return
	}
	start := warm + time.Duration(r.Int64N(int64(healAt-warm-40*time.Millisecond)))
	restart := min(healAt-start-5*time.Millisecond, 10*time.Millisecond+time.Duration(r.Int64N(int64(290*time.Millisecond))))
	w.fault(start, fmt.Sprintf("node manager crash of the active (restart after %v)", restart), func() {
		for i, h := range w.hosts {
			if h.node != nil && h.np.up && w.now >= h.np.stallUntil && h.node.ActiveAt(h.local(w.now)) {
				w.crashRelease(i, restart)
				return
			}
		}
	})
}

// heal ends every fault: processes restarted, network clean, all healthy.
// Stalls end by themselves (they were planned to end by now).
func (w *simWorld) heal() {
	w.tracef(nil, "HEAL")
	clear(w.blocked)
	w.setNet(false)
	for i, h := range w.hosts {
		if !h.lp.up {
			w.startLoc(i)
		}
		if h.isNode {
			if !h.np.up {
				w.startNode(i)
			}
			h.healthy, h.maint = true, false
			if w.now < h.np.stallUntil {
				continue // applied below when the stall ends
			}
			w.setHealthy(i)
		}
	}
	// Stalled nodes get their health restored right after they resume.
	for i, h := range w.hosts {
		if h.isNode && h.np.up && w.now < h.np.stallUntil {
			w.at(h.np.stallUntil+time.Microsecond, func() { w.setHealthy(i) })
		}
	}
}

func fmtMsg(env protocol.Envelope) string {
	m := env.Msg
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s->%s e=%d", m.Type, m.From, env.To, m.Epoch)
	switch m.Type {
	case protocol.MsgToken:
		fmt.Fprintf(&b, " tok=%d/%d active=%q handover=%q", m.Token.Epoch, m.Token.Seq, m.Token.Active, m.Token.Handover)
	case protocol.MsgCheckIn:
		fmt.Fprintf(&b, " round=%x claim=%v epoch=%d", m.CheckIn.Round&0xffffffff, m.CheckIn.Claim, m.CheckIn.Epoch)
		if c := m.CheckIn; c.Conf != (protocol.Membership{}) || c.Next != (protocol.Membership{}) {
			fmt.Fprintf(&b, " conf=v%d/%b next=v%d/%b", c.Conf.Version, c.Conf.Members, c.Next.Version, c.Next.Members)
		}
	case protocol.MsgAck:
		fmt.Fprintf(&b, " round=%x granted=%v epoch=%d holder=%q grant_in=%v", m.Ack.Round&0xffffffff, m.Ack.Granted, m.Ack.Epoch, m.Ack.Holder, m.Ack.GrantIn)
		if c := m.Ack.Conf; c != (protocol.Membership{}) {
			fmt.Fprintf(&b, " conf=v%d/%b unknown=%v", c.Version, c.Members, c.Unknown)
		}
	case protocol.MsgRelease:
		fmt.Fprintf(&b, " epoch=%d", m.Release.Epoch)
	case protocol.MsgTransfer:
		fmt.Fprintf(&b, " epoch=%d to=%q", m.Transfer.Epoch, m.Transfer.To)
	case protocol.MsgSwitchover:
		fmt.Fprintf(&b, " to=%q", m.Switchover.To)
	}
	return b.String()
}
