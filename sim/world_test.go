package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"redrain/actors"
	"redrain/booking"
	"redrain/campaign"
	"redrain/grant"
	"redrain/ingress"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/reclaim"
	"redrain/storage"
)

// Config is one run's shape, drawn from its seed.
type Config struct {
	Seed     uint64
	Nodes    int
	Parts    int32
	Users    int
	Budget   int64 // fen in the activity's one budget
	Duration time.Duration
	// Per-operation fault rates, in parts per thousand.
	KVConflict, KVLost, KVDown int
	ProduceFail, ProduceLost   int
	ProduceLate                int
	Redeliver                  int // a session's start rewound
	NetDelay                   int // a forwarded batch held up in the network
	// Skew bounds each node's clock offset from true time (the budget
	// grains keep true time).
	Skew time.Duration
}

// ConfigOf draws a run's shape from seed.
func ConfigOf(seed uint64) Config {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	c := Config{Seed: seed, Nodes: 1 + r.IntN(3), Parts: int32(1 + r.IntN(4)), Users: 8 + r.IntN(40),
		Budget: int64(500 + r.IntN(4000)), Duration: time.Duration(30+r.IntN(60)) * time.Second}
	if r.IntN(4) > 0 {
		c.KVConflict, c.KVLost, c.KVDown = r.IntN(40), r.IntN(20), r.IntN(40)
	}
	if r.IntN(4) > 0 {
		c.ProduceFail, c.ProduceLost, c.ProduceLate = r.IntN(40), r.IntN(40), r.IntN(20)
	}
	c.Redeliver = r.IntN(300)
	c.NetDelay = r.IntN(100)
	c.Skew = time.Duration(r.IntN(3000)) * time.Millisecond
	return c
}

func (c Config) String() string {
	return fmt.Sprintf("seed %d: %d nodes, %d partitions, %d users, budget %d, %v; faults per 1000: kv conflict %d lost %d down %d, produce fail %d lost %d late %d, redeliver %d, net delay %d; clocks within %v",
		c.Seed, c.Nodes, c.Parts, c.Users, c.Budget, c.Duration, c.KVConflict, c.KVLost, c.KVDown, c.ProduceFail, c.ProduceLost, c.ProduceLate, c.Redeliver, c.NetDelay, c.Skew)
}

// World is one run: the backends, the nodes and what the clients were
// answered.
type World struct {
	cfg   Config
	parts int32
	log   *slog.Logger
	store *storage.MemoryStore
	audit *storage.TiKV // a handle no fault touches
	topic *topic
	group *group
	camp  *campaign.Campaign
	cat   *campaign.Catalog

	storeDown atomic.Bool
	redis     *miniredis.Miniredis // the binding index's Redis
	net       sync.WaitGroup       // messages on their way

	mu       sync.Mutex
	nodes    map[string]*node // the current incarnation of each name
	all      []*node          // every incarnation
	cuts     map[[2]string]bool
	attempts map[string]int // per fault key: how often it was asked
	landed   map[string][]landedGrant
	packets  map[string]packet   // limit key → the packet first answered
	accounts map[string]uint64   // app/user → the act_id of its answered packets
	poisoned map[[2]int64][]byte // partition/offset → a record no node wrote
	answered int
	failures []string
	events   []string
}

// landedGrant is a grant in a record that reached the topic.
type landedGrant struct {
	g      ledger.Grant
	node   string
	part   int32
	offset int64
	at     time.Time
}

// packet is what a client was answered for a limit key.
type packet struct {
	actID  uint64
	award  string
	amount int64
	node   string
}

func newWorld(cfg Config, logOut io.Writer) (*World, error) {
	w := &World{cfg: cfg, parts: cfg.Parts, store: storage.NewMemoryStore(), topic: newTopic(cfg.Parts),
		nodes: map[string]*node{}, cuts: map[[2]string]bool{}, attempts: map[string]int{},
		landed: map[string][]landedGrant{}, packets: map[string]packet{}, accounts: map[string]uint64{},
		poisoned: map[[2]int64][]byte{},
		log:      slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	w.audit = w.store.Client(nil)
	w.group = newGroup(w)
	w.redis = miniredis.NewMiniRedis()
	act := campaign.Activity{
		ID:     "sim",
		Rains:  []campaign.Rain{{SceneID: "rain", RainID: 1, AlwaysOpen: true, Start: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)}},
		Awards: []campaign.Award{{Type: "cash", Kind: campaign.KindMoney, Min: 1, Max: 100}},
		Stages: []campaign.Stage{{Stage: "formal", Budgets: map[string]int64{"cash": cfg.Budget}}},
	}
	cc := campaign.Demo()
	cc.Activities = []campaign.Activity{act}
	var err error
	if w.camp, err = campaign.Compile(cc); err != nil {
		return nil, err
	}
	if w.cat, err = w.camp.SeedCatalog(); err != nil {
		return nil, err
	}
	// The first node's recovery finds Redis empty and writes the index of
	// an empty store: its epoch.
	epoch, err := ingress.StoreEpoch(context.Background(), w.audit)
	if err != nil {
		return nil, err
	}
	if err := w.redis.Set(storage.RedisEpochKey, epoch); err != nil {
		return nil, err
	}
	for id, asset := range w.cat.Budgets() {
		if _, err := actors.SetBudgetTotal(context.Background(), w.audit, id, asset, cfg.Budget); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// fail records a broken invariant.
func (w *World) fail(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures = append(w.failures, fmt.Sprintf("%v: ", time.Now().UTC().Format("15:04:05.000"))+fmt.Sprintf(format, a...))
}

func (w *World) event(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, time.Now().UTC().Format("15:04:05.000")+" "+fmt.Sprintf(format, a...))
}

// chance decides a fault with probability perMille/1000 from the seed and
// what is asked (and how often it was asked before), not from the order
// in which goroutines ask: a replay of the seed decides the same way.
func (w *World) chance(perMille int, what string) bool {
	if perMille <= 0 {
		return false
	}
	w.mu.Lock()
	w.attempts[what]++
	n := w.attempts[what]
	w.mu.Unlock()
	h := sha256.Sum256(fmt.Appendf(nil, "%d/%s/%d", w.cfg.Seed, what, n))
	return binary.BigEndian.Uint64(h[:8])%1000 < uint64(perMille)
}

// kvFault decides one store operation of node n.
func (w *World) kvFault(n *node, op storage.KVOp) storage.KVOutcome {
	if n.gate() != nil || w.storeDown.Load() {
		return storage.KVDown
	}
	switch op.Kind {
	case storage.KVCommit:
		what := n.name + "/commit/" + strings.Join(op.Writes, ",")
		switch {
		case w.chance(w.cfg.KVConflict, what+"/conflict"):
			return storage.KVConflict
		case w.chance(w.cfg.KVLost, what+"/lost"):
			return storage.KVLost
		case w.chance(w.cfg.KVDown, what+"/down"):
			return storage.KVDown
		}
	case storage.KVBegin:
		if w.chance(w.cfg.KVDown/4, n.name+"/begin") {
			return storage.KVDown
		}
	}
	return storage.KVOK
}

// produce decides the fate of one record of node n.
func (w *World) produce(n *node, part int32, rec []byte) error {
	h := sha256.Sum256(rec)
	what := fmt.Sprintf("%s/produce/%d/%x", n.name, part, h[:8])
	switch {
	case w.chance(w.cfg.ProduceFail, what+"/fail"):
		return errProduce
	case w.chance(w.cfg.ProduceLost, what+"/lost"):
		w.land(n, part, rec)
		return errProduce
	case w.chance(w.cfg.ProduceLate, what+"/late"):
		// In flight for a while: it lands even if its node pauses or dies
		// meanwhile, within the write deadline.
		time.Sleep(time.Duration(1+binary.BigEndian.Uint64(h[8:16])%uint64(storage.WriteDeadline/time.Millisecond-1)) * time.Millisecond)
	}
	w.land(n, part, rec)
	return nil
}

func (w *World) land(n *node, part int32, rec []byte) {
	gs, err := ledger.DecodeGrantRecord(nil, rec)
	if err != nil {
		w.fail("node %s wrote an undecodable record: %v", n.name, err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	off := w.topic.append(part, rec)
	for _, g := range gs {
		k := g.LimitKey()
		w.landed[k] = append(w.landed[k], landedGrant{g: g, node: n.owner, part: part, offset: off, at: time.Now()})
	}
}

// cut tells whether the network between a and b is cut.
func (w *World) cut(a, b string) bool {
	if a > b {
		a, b = b, a
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cuts[[2]string{a, b}]
}

func (w *World) setCut(a, b string, on bool) {
	if a > b {
		a, b = b, a
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.cuts[[2]string{a, b}] = true
	} else {
		delete(w.cuts, [2]string{a, b})
	}
}

// route reaches node name from n: an error when the network between them
// is cut or nothing runs there; it waits while the target is paused.
func (w *World) route(ctx context.Context, n *node, name string) (*node, error) {
	if err := n.gate(); err != nil {
		return nil, err
	}
	if w.cut(n.name, name) {
		return nil, fmt.Errorf("sim: network from %s to %s cut", n.name, name)
	}
	w.mu.Lock()
	t := w.nodes[name]
	w.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("sim: nothing listens at %s", name)
	}
	if err := t.gateCtx(ctx); err != nil {
		return nil, fmt.Errorf("sim: %s: %w", name, err)
	}
	return t, nil
}

// errDead is every operation of a process that was killed.
var errDead = errors.New("sim: process killed")

// node is one incarnation of a node: the real admission, booking, budget
// grains and reclaimer, wired as node.Start wires them, over the world's
// simulated backends.
type node struct {
	w     *World
	name  string
	inc   uint64
	owner string // booking's owner name: name/incarnation@address

	ctx    context.Context
	cancel context.CancelFunc
	skew   time.Duration // its clock's offset from true time

	mu       sync.Mutex
	dead     bool
	stopped  bool          // stopped cleanly (stopRest): it renews and settles nothing more
	paused   chan struct{} // closed on resume (nil: running)
	silentAt time.Time     // since when it sends no heartbeat

	streamClosed atomic.Bool
	kv           *storage.TiKV
	rdb          *redis.Client
	pipe         *storage.Pipeliner
	adm          *grant.Admission
	booker       *booking.Booker
	reclaimer    *reclaim.Reclaimer
	bg           sync.WaitGroup
}

// gate lets an operation of the process through: at once while it runs,
// after its resume while it is paused, never once it was killed.
func (n *node) gate() error { return n.gateCtx(context.Background()) }

func (n *node) gateCtx(ctx context.Context) error {
	for {
		n.mu.Lock()
		dead, p := n.dead, n.paused
		n.mu.Unlock()
		if dead {
			return errDead
		}
		if p == nil {
			return nil
		}
		select {
		case <-p:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// down tells whether the process was killed.
func (n *node) down() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dead
}

// stoppedOrDown says whether the incarnation runs no more: killed, or
// stopped cleanly.
func (n *node) stoppedOrDown() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dead || n.stopped
}

// silentSince says since when the process has sent no heartbeat (paused
// or dead).
func (n *node) silentSince() (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.silentAt, n.dead || n.paused != nil
}

// start runs a new incarnation of name.
func (w *World) start(name string) *node {
	w.mu.Lock()
	inc := uint64(1)
	for _, o := range w.all {
		if o.name == name {
			inc = o.inc + 1
		}
	}
	n := &node{w: w, name: name, inc: inc, owner: fmt.Sprintf("%s/%d@%s", name, inc, name)}
	w.all = append(w.all, n)
	w.mu.Unlock()
	// Reachable (by clients and other nodes) once it is wired.
	defer func() {
		w.mu.Lock()
		w.nodes[name] = n
		w.mu.Unlock()
	}()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if w.cfg.Skew > 0 {
		h := sha256.Sum256(fmt.Appendf(nil, "%d/skew/%s", w.cfg.Seed, n.owner))
		n.skew = time.Duration(binary.BigEndian.Uint64(h[:8])%uint64(2*w.cfg.Skew)) - w.cfg.Skew
	}
	clock := func() time.Time { return time.Now().Add(n.skew) }
	log := w.log.With("node", n.owner)
	n.kv = w.store.Client(func(op storage.KVOp) storage.KVOutcome { return w.kvFault(n, op) })
	budgets := actors.NewLocalBudgets(log, n.kv)
	// Redis over in-memory connections (a bubble has no sockets); a paused
	// process's commands wait, a dead one's fail.
	n.rdb = redis.NewClient(&redis.Options{Addr: "127.0.0.1:0", PoolSize: 4, MaxRetries: 1, DialTimeout: time.Second,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			if err := n.gate(); err != nil {
				return nil, err
			}
			return w.redis.Dial()
		}})
	n.rdb.AddHook(gateHook{n})
	n.pipe = storage.NewPipeliner(n.rdb, 2)
	binder := ingress.NewBinder(n.kv, n.pipe, false, w.parts)
	index := &ingress.Index{Log: log, TiKV: n.kv, Redis: n.rdb, Pipe: n.pipe, Drained: n.indexDrained, Binder: binder}
	n.booker = booking.New(booking.Config{Log: log, TiKV: n.kv, Partitions: w.parts, Metrics: &metrics.Registry{},
		Clock: clock, Owner: n.owner, Group: consumer{n}, Tail: n.tail,
		UncleanWait: booking.TenureGrace + storage.WriteDeadline})
	n.adm = grant.New(grant.Config{Log: log, Campaign: w.camp, Resolver: binder, Stream: &writer{n},
		Leases: budgets, Node: name, Incarnation: inc, Metrics: &metrics.Registry{}, Clock: clock,
		Peers: peers{n}, Self: name})
	n.adm.SetCatalog(w.cat)
	n.booker.Watch(sessions{n})
	n.booker.YieldWhile(n.adm.Busy)
	n.booker.OnBooked(func(ops []ledger.Op) { n.adm.MarkBooked(grant.BookedOf(ops)) })
	n.reclaimer = &reclaim.Reclaimer{Log: log, TiKV: n.kv, Budgets: budgets, Parts: w.parts,
		Ends: n.ends, Fence: n.fence, Clock: clock,
		Jitter: func(d time.Duration) time.Duration { return d / 2 }}
	n.bg.Add(3)
	go func() { defer n.bg.Done(); _ = n.booker.Run(n.ctx) }()
	go func() { defer n.bg.Done(); n.reclaimer.Run(n.ctx) }()
	go func() {
		defer n.bg.Done()
		index.Watch(n.ctx, func() bool { return true }, (&metrics.Registry{}).Gauge("redrain_redis_index_lost", "sim"))
	}()
	w.event("start %s (clock %v)", n.owner, n.skew)
	return n
}

func (n *node) tail(p int32) (int64, error) {
	if err := n.gate(); err != nil {
		return 0, err
	}
	return n.w.topic.end(p), nil
}

func (n *node) ends(ctx context.Context) (map[int32]int64, error) {
	if err := n.gateCtx(ctx); err != nil {
		return nil, err
	}
	out := make(map[int32]int64, n.w.parts)
	for p := range n.w.parts {
		out[p] = n.w.topic.end(p)
	}
	return out, nil
}

// fence draws a lease's fence where partition p is booked: here, or at
// its owner over the network.
func (n *node) fence(ctx context.Context, p int32, f ledger.Fence) (ledger.Fence, error) {
	held, err := n.booker.Fence(ctx, p, f)
	if !errors.Is(err, booking.ErrNotOwned) {
		return held, err
	}
	owner, err := booking.PartOwner(ctx, n.kv, p)
	if err != nil {
		return ledger.Fence{}, err
	}
	_, addr, _ := strings.Cut(owner, "@")
	if addr == "" || addr == n.name {
		return ledger.Fence{}, fmt.Errorf("no node books partition %d now (owner %q)", p, owner)
	}
	t, err := n.w.route(ctx, n, addr)
	if err != nil {
		return ledger.Fence{}, err
	}
	return t.booker.Fence(ctx, p, f)
}

// kill stops the process at once, as kill -9 does: nothing it does from
// now on reaches another process or the store (records already in flight
// may still land).
func (n *node) kill() {
	n.mu.Lock()
	if n.dead {
		n.mu.Unlock()
		return
	}
	if n.paused == nil {
		n.silentAt = time.Now()
	} else {
		close(n.paused)
		n.paused = nil
	}
	n.dead = true
	n.mu.Unlock()
	n.cancel()
	n.w.event("kill %s", n.owner)
	// Its goroutines end: every operation they try fails.
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		n.adm.Close(context.Background())
		n.pipe.Close()
		_ = n.rdb.Close()
	}()
}

// pause stops the process's operations until resume (SIGSTOP).
func (n *node) pause() {
	n.mu.Lock()
	if n.dead || n.paused != nil {
		n.mu.Unlock()
		return
	}
	n.paused = make(chan struct{})
	n.silentAt = time.Now()
	n.mu.Unlock()
	n.w.event("pause %s", n.owner)
}

func (n *node) resume() {
	n.mu.Lock()
	p := n.paused
	n.paused = nil
	n.mu.Unlock()
	if p != nil {
		close(p)
		n.w.event("resume %s", n.owner)
	}
}

// grant is one client's request to node n: answers from a process that
// died before it answered never reach the client.
func (n *node) grant(users []int) {
	reqs := make([]grant.Request, len(users))
	for i, u := range users {
		reqs[i] = grant.Request{AppID: 1, UserID: userName(u), ActivityID: "sim", SceneID: "rain", RainID: 1}
	}
	res := make([]grant.Result, len(reqs))
	if n.gate() != nil {
		return
	}
	n.adm.Admit(reqs, res)
	if n.gate() != nil {
		return
	}
	n.w.answer(n, res)
}

// answer checks what a client was answered as it arrives.
func (w *World) answer(n *node, res []grant.Result) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range res {
		if r.Outcome != grant.Issued && r.Outcome != grant.Repeat {
			continue
		}
		w.answered++
		g := r.Grant
		who := fmt.Sprintf("%d/%s", g.AppID, g.UserID)
		if act, ok := w.accounts[who]; ok && act != g.ActID {
			w.failures = append(w.failures, fmt.Sprintf("%s answered user %s a packet of act %d; earlier answers were of act %d (a second account)",
				n.owner, who, g.ActID, act))
		} else if !ok {
			w.accounts[who] = g.ActID
		}
		k := g.LimitKey()
		p := packet{actID: g.ActID, award: g.AwardType, amount: g.Amount, node: n.owner}
		if first, ok := w.packets[k]; ok {
			if first.award != p.award || first.amount != p.amount || first.actID != p.actID {
				w.failures = append(w.failures, fmt.Sprintf("%s answered %s %s %d for %s, first answered %s %d by %s",
					n.owner, r.Outcome, p.award, p.amount, k, first.award, first.amount, first.node))
			}
		} else {
			w.packets[k] = p
		}
		found := false
		for _, l := range w.landed[k] {
			if l.g.Amount == g.Amount && l.g.AwardType == g.AwardType {
				found = true
			}
		}
		if !found {
			w.failures = append(w.failures, fmt.Sprintf("%s answered %s %d for %s, which no record on the topic holds", n.owner, r.Outcome, g.Amount, k))
		}
	}
}

// stop stops the process cleanly, as node.Stop does: the grant path and
// the stream first, then its uncertain leases are settled while booking
// still runs, then the rest.
func (n *node) stopGrants() {
	n.adm.Close(context.Background())
	n.streamClosed.Store(true)
}

func (n *node) stopRest() {
	ctx, cancel := context.WithTimeout(context.Background(), reclaim.SettleWithin+5*time.Second)
	n.reclaimer.Settle(ctx, n.name, n.inc)
	cancel()
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.cancel()
	n.bg.Wait()
	n.pipe.Close()
	_ = n.rdb.Close()
}

func userName(u int) string { return fmt.Sprintf("u%d", u) }

// gateHook holds a process's Redis commands while it is paused and fails
// them once it is dead.
type gateHook struct{ n *node }

func (h gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.n.gateCtx(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (h gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := h.n.gateCtx(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// indexDrained is the binding index's Drained, as the node's: the records
// in flight land within the write deadline, then booking books the topic
// to its end as it is then.
func (n *node) indexDrained(ctx context.Context) error {
	sleepCtx(ctx, storage.WriteDeadline)
	ends, err := n.ends(ctx)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		booked, err := booking.Booked(ctx, n.kv, n.w.parts)
		if err == nil {
			behind := false
			for p, end := range ends {
				behind = behind || booked[p] < end
			}
			if !behind {
				return nil
			}
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return ctx.Err()
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// peers forwards a shard's batches to its owner over the simulated
// network.
type peers struct{ n *node }

func (p peers) Owner(ctx context.Context, part int32) (string, error) {
	owner, err := booking.PartOwner(ctx, p.n.kv, part)
	if err != nil {
		return "", err
	}
	_, addr, _ := strings.Cut(owner, "@")
	return addr, nil
}

func (p peers) Forward(ctx context.Context, addr string, body []byte) ([]byte, error) {
	t, err := p.n.w.route(ctx, p.n, addr)
	if err != nil {
		return nil, err
	}
	// The owner decides the batch on a goroutine of its own (as the
	// remoting actor does); the sender waits until its deadline.
	// The network carries a copy (the sender reuses its buffer once it
	// stops waiting).
	body = bytes.Clone(body)
	// A message may be held up in the network (and overtaken by later
	// ones), past the sender's deadline at times.
	h := sha256.Sum256(body)
	var delay time.Duration
	if p.n.w.chance(p.n.w.cfg.NetDelay, fmt.Sprintf("%s/forward/%s/%x", p.n.owner, addr, h[:8])) {
		delay = time.Duration(binary.BigEndian.Uint64(h[8:16])%8000) * time.Millisecond
	}
	done := make(chan []byte, 1)
	p.n.w.net.Add(1)
	go func() {
		defer p.n.w.net.Done()
		time.Sleep(delay)
		done <- t.adm.Serve(body)
	}()
	var answer []byte
	select {
	case answer = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("sim: no answer from %s: %w", addr, ctx.Err())
	}
	if err := p.n.gate(); err != nil {
		return nil, err
	}
	if p.n.w.cut(p.n.name, addr) || t.gate() != nil {
		return nil, fmt.Errorf("sim: the answer from %s was lost", addr)
	}
	return answer, nil
}

// sessions hands booking's partitions to the grant path, as the node's do.
type sessions struct{ n *node }

func (s sessions) Owned(t *booking.Tenure) {
	p := t.Partition
	s.n.adm.Own(p, t, func(ctx context.Context) ([]grant.Booked, error) {
		var out []grant.Booked
		err := booking.PacketsIn(ctx, s.n.kv, p, func(actID uint64, e ledger.Entry) {
			out = append(out, grant.BookedEntry(actID, e.LimitKey, e.AwardType, e.Amount))
		})
		return out, err
	})
}

func (s sessions) Lost(t *booking.Tenure) { s.n.adm.Disown(t.Partition) }

// redeliver says how far back a session of n starts partition p from its
// marked offset (0: not at all): records booked before come again.
func (w *World) redeliver(n *node, p int32) int64 {
	if !w.chance(w.cfg.Redeliver, fmt.Sprintf("%s/redeliver/%d", n.owner, p)) {
		return 0
	}
	return 1 + int64(w.cfg.Seed%16)
}

// restart starts name again unless an incarnation of it runs (a process
// supervisor's restart).
func (w *World) restart(name string) {
	w.mu.Lock()
	n := w.nodes[name]
	w.mu.Unlock()
	if n == nil || n.down() {
		w.start(name)
	}
}

// poison appends to partition p a record that decodes but that booking
// cannot book (its grant's asset is unknown): a corrupt producer. Its
// partition's owner holds at it until the operator parks it (operate).
func (w *World) poison(p int32) {
	act := uint64(1 << 40)
	for storage.PartitionOf(act, w.parts) != p {
		act++
	}
	g := ledger.Grant{ActID: act, AppID: 1, UserID: "poison", ActivityID: "sim", SceneID: "rain", RainID: 1,
		AwardType: "cash", Asset: "bogus", BudgetID: "bogus", Amount: 1, LeaseID: 1, IssuedAt: time.Now().UnixMilli()}
	rec := ledger.AppendGrantRecord(nil, []ledger.Grant{g})
	w.mu.Lock()
	off := w.topic.append(p, rec)
	w.poisoned[[2]int64{int64(p), off}] = rec
	w.mu.Unlock()
	w.event("poisoned record at %d/%d", p, off)
}

// operate is the operator: a partition held at a record is parked with
// `redrain admin park` (booking.Park) when the record is one a fault
// poisoned; a partition held at any other record breaks an invariant.
func (w *World) operate() {
	ctx := context.Background()
	for p := range w.parts {
		var raw []byte
		if err := w.audit.View(func(txn storage.Txn) (err error) {
			raw, err = storage.Get(ctx, txn, storage.StuckKey(p))
			return err
		}); err != nil || raw == nil {
			continue
		}
		var st struct{ Offset int64 }
		if err := json.Unmarshal(raw, &st); err != nil {
			w.fail("partition %d: stuck record %q: %v", p, raw, err)
			continue
		}
		w.mu.Lock()
		rec, ours := w.poisoned[[2]int64{int64(p), st.Offset}]
		w.mu.Unlock()
		if !ours {
			w.fail("booking holds partition %d at offset %d, a record no fault poisoned: %s", p, st.Offset, raw)
			continue
		}
		created, err := booking.Park(ctx, w.audit, booking.Parked{Partition: p, Offset: st.Offset, By: "sim", At: time.Now().UnixMilli(), Reason: "poisoned by the simulation", Value: rec})
		if err == nil && created {
			w.event("parked %d/%d", p, st.Offset)
		}
	}
}
