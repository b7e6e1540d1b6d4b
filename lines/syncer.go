// Package lines keeps the latest assets users hold on other business lines
// (games, e-commerce, ...) for the wallet: a line says a user's assets
// changed (POST /v1/sync/notify, queued on the sync topic), and a consumer
// pulls that user's assets from the line's HTTP API and stores the latest
// snapshot in TiKV; a wallet entry pulls again the lines that pushed for
// the user before (push-pull).
//
// It owns the lines' configuration (Line, Validate), the notice topic and
// its producer and consumer group, the puller (a timeout per request, a
// bounded answer, three attempts with exponential backoff and jitter, a
// token bucket and a bound on pulls in flight per line), the dedupe (at
// most one pull per (line, user) per window; notices inside the window
// coalesce into one pull at its end), the operator's switch (SetOff: an
// off line is not pulled, its snapshots are served stale) and the snapshot
// store (Key). It must never let a line hold up the HTTP route (the route
// waits for Kafka only), nor keep more than the latest snapshot of a
// (line, user). A line that fails costs its own workers at most three
// timeouts a pull; one that stalls while notices flood fills its queue,
// and the consumer then waits for it (a backlog is pulled, not dropped),
// holding other lines' notices of the same partitions until an operator
// switches it off, which empties its queue at once.
package lines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"redrain/metrics"
	"redrain/protect"
	"redrain/storage"
)

// Topic is the default name of the notice topic: one record per notice,
// keyed "{app_id}/{user_id}" so that one consumer sees a user's notices in
// order; Group is the consumer group that pulls for them.
const (
	Topic = "redrain-sync"
	Group = "redrain-sync"
)

// Bounds of the pull path.
const (
	// AttemptsMax is the tries of one pull: the first and two retries
	// after a timeout, a connection failure or a 5xx/429 answer.
	AttemptsMax = 3
	// BackoffDefault is the wait before the first retry; each next one
	// doubles it, plus a random jitter of up to half of it.
	BackoffDefault = 200 * time.Millisecond
	// queueMax bounds the pulls waiting for one line. The consumer waits
	// for room (a backlog on the topic is pulled, not dropped; a line that
	// stalls holds its partitions' notices until an operator switches it
	// off, which empties its queue at once); a wallet entry or a window's
	// trailing pull that finds it full is dropped (counted).
	queueMax = 4096
	// enteredMax bounds the wallet entries waiting for their push-pull.
	enteredMax = 4096
	// enteredWorkers read stored snapshots for wallet entries at once.
	enteredWorkers = 2
	// dedupeKeysMax bounds the (line, user) pairs remembered for dedupe
	// (~100 bytes each).
	dedupeKeysMax = 1 << 20
	// userIDMax bounds a user id, as the grant API does.
	userIDMax = 64
)

var (
	// ErrUnknownLine is the error of a notice for a line no campaign file
	// configures.
	ErrUnknownLine = errors.New("lines: unknown business line")
	// ErrNotice wraps the other reasons a notice is refused.
	ErrNotice = errors.New("lines: invalid notice")
)

// Notice says that a user's assets on a line changed.
type Notice struct {
	Line string `json:"line"`
	App  uint32 `json:"app_id"`
	User string `json:"user_id"`
}

// Config is what New takes.
type Config struct {
	// Lines are the business lines, validated (Validate). None is valid.
	Lines []Line
	// Brokers reach the Kafka cluster holding Topic (created by the
	// caller: storage.Kafka.EnsureTopic).
	Brokers []string
	Topic   string // "": Topic
	Group   string // "": Group
	TiKV    *storage.TiKV
	Metrics *metrics.Registry // nil: not exported
	Log     *slog.Logger      // nil: slog.Default()
	// Client sends the pulls (nil: one of the Syncer's own, without a
	// proxy); each request's timeout is its line's.
	Client *http.Client
	// Backoff is the wait before the first retry (0: BackoffDefault).
	Backoff time.Duration
	// Clock stamps snapshots and times the dedupe window (nil: time.Now).
	Clock func() time.Time
}

// LineStats are the counters of one line (also exported as metrics).
type LineStats struct {
	Pulled, Failed, Retried, Deduped, RateLimited, SkippedOff, Dropped int64
}

// Syncer pulls business lines' assets for the notices on the topic and
// serves the latest snapshots. Its methods are safe for concurrent use.
type Syncer struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	lines  map[string]*lineState
	ids    []string // the configured lines, sorted
	off    atomic.Pointer[map[string]bool]

	producer sarama.SyncProducer
	entered  chan userKey

	mu     sync.Mutex
	recent map[pullKey]*recent // guarded by mu; Invariant: len <= dedupeKeysMax

	ctx     context.Context // the workers'; cancelled by Close
	cancel  context.CancelFunc
	workers sync.WaitGroup

	notices, unknown, enteredDropped, writeFailed *metrics.Counter
}

type lineState struct {
	Line
	limiter                                                            *protect.Limiter // one bucket: the line's
	queue                                                              chan job
	pulled, failed, retried, deduped, rateLimited, skippedOff, dropped *metrics.Counter
}

type job struct {
	app  uint32
	user string
	push bool // a notice asked for it (not a wallet entry)
}

type userKey struct {
	app  uint32
	user string
}

type pullKey struct {
	line string
	userKey
}

// recent is the dedupe state of a (line, user): when its last pull was
// queued and whether another waits for the window's end.
type recent struct {
	last    time.Time
	pending bool // a pull is scheduled for last+window
	push    bool // the pending pull carries a notice
}

// New validates the lines, connects the producer and starts the pull
// workers (Concurrency per line). Run consumes the topic; Close stops.
func New(cfg Config) (*Syncer, error) {
	if err := Validate(cfg.Lines); err != nil {
		return nil, err
	}
	if cfg.TiKV == nil {
		return nil, errors.New("lines: no store")
	}
	if cfg.Topic == "" {
		cfg.Topic = Topic
	}
	if cfg.Group == "" {
		cfg.Group = Group
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Registry{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = BackoffDefault
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Syncer{cfg: cfg, log: cfg.Log.With("component", "lines"), client: cfg.Client,
		lines: make(map[string]*lineState, len(cfg.Lines)), entered: make(chan userKey, enteredMax),
		recent: make(map[pullKey]*recent)}
	if s.client == nil {
		s.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: ConcurrencyMax, IdleConnTimeout: time.Minute}}
	}
	reg := cfg.Metrics
	s.notices = reg.Counter("redrain_sync_notices_total", "Business-line notices acknowledged by Kafka (POST /v1/sync/notify).")
	s.unknown = reg.Counter("redrain_sync_notices_unknown_total", "Notices consumed that name no configured business line or do not decode (skipped).")
	s.enteredDropped = reg.Counter("redrain_sync_entered_dropped_total", "Wallet entries whose push-pull was dropped because its queue was full.")
	s.writeFailed = reg.Counter("redrain_line_snapshot_write_failures_total", "Pull results that could not be stored.")
	for _, l := range cfg.Lines {
		ls := &lineState{Line: l, limiter: protect.NewLimiter(l.Rate, float64(l.Burst), 1), queue: make(chan job, queueMax)}
		c := func(name, help string, kv ...string) *metrics.Counter {
			return reg.Counter(name, help, append([]string{"line", l.ID}, kv...)...)
		}
		const pulls = "Pulls of users' assets from a business line, by outcome (failed: after every attempt)."
		ls.pulled = c("redrain_line_pulls_total", pulls, "outcome", "ok")
		ls.failed = c("redrain_line_pulls_total", pulls, "outcome", "failed")
		ls.retried = c("redrain_line_retries_total", "Pull attempts after a failed one (timeout, connection, 5xx or 429).")
		ls.deduped = c("redrain_line_deduped_total", "Pulls not started because the (line, user) was pulled within the line's window (coalesced into one at its end).")
		ls.rateLimited = c("redrain_line_rate_limited_total", "Pull attempts that waited for the line's rate limit.")
		ls.skippedOff = c("redrain_line_skipped_off_total", "Notices and pulls skipped because an operator switched the line off.")
		ls.dropped = c("redrain_line_dropped_total", "Pulls dropped because the line's queue was full.")
		id := l.ID
		reg.GaugeFunc("redrain_line_off", "1 while an operator has the business line switched off.", func() int64 {
			if s.isOff(id) {
				return 1
			}
			return 0
		}, "line", id)
		reg.GaugeFunc("redrain_line_queued", "Pulls waiting for the business line.", func() int64 { return int64(len(ls.queue)) }, "line", id)
		s.lines[l.ID] = ls
		s.ids = append(s.ids, l.ID)
	}
	slices.Sort(s.ids)
	pcfg := storage.SaramaConfig("redrain-sync")
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	pcfg.Producer.Return.Successes = true
	pcfg.Producer.Partitioner = sarama.NewHashPartitioner
	pcfg.Producer.Timeout = 5 * time.Second
	p, err := sarama.NewSyncProducer(cfg.Brokers, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: sync producer: %v", storage.ErrUnavailable, err)
	}
	s.producer = p
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, ls := range s.lines {
		for range ls.Concurrency {
			s.workers.Go(func() { s.work(ls) })
		}
	}
	for range enteredWorkers {
		s.workers.Go(s.enterLoop)
	}
	return s, nil
}

// Close stops the producer and the workers (pulls in flight are
// abandoned, nothing half written) and waits for them.
func (s *Syncer) Close() {
	s.cancel()
	s.workers.Wait()
	_ = s.producer.Close()
}

// Lines returns the configured lines' ids, sorted.
func (s *Syncer) Lines() []string { return slices.Clone(s.ids) }

// SetOff puts the operator's switch in force: the lines listed are not
// pulled (notices for them are counted and skipped, their snapshots
// served stale); the others are. Ids of lines this node does not serve
// are ignored.
func (s *Syncer) SetOff(ids []string) {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	s.off.Store(&m)
}

func (s *Syncer) isOff(id string) bool {
	m := s.off.Load()
	return m != nil && (*m)[id]
}

// Stats returns line's counters (zero for an unknown line).
func (s *Syncer) Stats(line string) LineStats {
	l := s.lines[line]
	if l == nil {
		return LineStats{}
	}
	return LineStats{Pulled: l.pulled.Load(), Failed: l.failed.Load(), Retried: l.retried.Load(), Deduped: l.deduped.Load(),
		RateLimited: l.rateLimited.Load(), SkippedOff: l.skippedOff.Load(), Dropped: l.dropped.Load()}
}

// Check refuses a notice that names no configured line (ErrUnknownLine)
// or no user (ErrNotice), before anything is queued.
func (s *Syncer) Check(n Notice) error {
	switch {
	case s.lines[n.Line] == nil:
		return fmt.Errorf("%w %q (configured: %v)", ErrUnknownLine, n.Line, s.ids)
	case n.App == 0:
		return fmt.Errorf("%w: app_id 0", ErrNotice)
	case n.User == "" || len(n.User) > userIDMax:
		return fmt.Errorf("%w: user_id: want 1 to %d bytes", ErrNotice, userIDMax)
	}
	return nil
}

// Notify queues n on the topic and returns once Kafka acknowledged it
// (the pull comes later). A refused notice (Check) queues nothing; a
// broker that does not acknowledge is an error wrapping
// storage.ErrUnavailable.
func (s *Syncer) Notify(n Notice) error {
	if err := s.Check(n); err != nil {
		return err
	}
	val, err := json.Marshal(n)
	if err != nil {
		return err
	}
	key := strconv.AppendUint(nil, uint64(n.App), 10)
	key = append(append(key, '/'), n.User...)
	if _, _, err := s.producer.SendMessage(&sarama.ProducerMessage{Topic: s.cfg.Topic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val)}); err != nil {
		return fmt.Errorf("%w: queue notice: %v", storage.ErrUnavailable, err)
	}
	s.notices.Inc()
	return nil
}

// Snapshots returns user's latest snapshot on every configured line that
// has one, in line order, from one snapshot read of the store. A line
// switched off, or whose last pull failed, is marked Stale.
func (s *Syncer) Snapshots(ctx context.Context, app uint32, user string) ([]Snapshot, error) {
	recs, err := readRecords(ctx, s.cfg.TiKV, s.ids, app, user)
	if err != nil {
		return nil, err
	}
	out := make([]Snapshot, 0, len(recs))
	for _, id := range s.ids {
		if r := recs[id]; r != nil {
			out = append(out, snapshotOf(id, r, s.isOff(id)))
		}
	}
	return out, nil
}

// Entered says user opened the wallet: every line that pushed for the user
// before is pulled again, subject to its window and switch. It never
// blocks: past enteredMax waiting entries it drops this one (counted).
func (s *Syncer) Entered(app uint32, user string) {
	if len(s.ids) == 0 || app == 0 || user == "" || len(user) > userIDMax {
		return
	}
	select {
	case s.entered <- userKey{app, user}:
	default:
		s.enteredDropped.Inc()
	}
}

// enteredReadTimeout bounds the store read of one wallet entry's push-pull.
const enteredReadTimeout = 5 * time.Second

func (s *Syncer) enterLoop() {
	for {
		var u userKey
		select {
		case <-s.ctx.Done():
			return
		case u = <-s.entered:
		}
		ctx, cancel := context.WithTimeout(s.ctx, enteredReadTimeout)
		recs, err := readRecords(ctx, s.cfg.TiKV, s.ids, u.app, u.user)
		cancel()
		if err != nil {
			s.log.Warn("lines: wallet entry: read snapshots", "app_id", u.app, "err", err)
			continue
		}
		now := s.cfg.Clock()
		for _, id := range s.ids {
			r, l := recs[id], s.lines[id]
			switch {
			case r == nil || !r.Pushed:
			case s.isOff(id):
				l.skippedOff.Inc()
			case r.PulledAt != 0 && now.Sub(time.UnixMilli(r.PulledAt)) < l.Window():
				// Pulled within the window, maybe by another node.
				l.deduped.Inc()
			default:
				if j := (job{app: u.app, user: u.user}); s.admit(l, j) {
					s.enqueue(l, j)
				}
			}
		}
	}
}

// handle takes one notice consumed from the topic; false when ctx ended
// (or the Syncer stopped) before its pull found room in the line's queue:
// the notice is then not done.
func (s *Syncer) handle(ctx context.Context, raw []byte) bool {
	var n Notice
	if err := json.Unmarshal(raw, &n); err != nil {
		s.unknown.Inc()
		return true
	}
	l := s.lines[n.Line]
	switch {
	case l == nil || s.Check(n) != nil:
		// A line configured on the node that queued it but not here.
		s.unknown.Inc()
	case s.isOff(n.Line):
		l.skippedOff.Inc()
	default:
		j := job{app: n.App, user: n.User, push: true}
		if !s.admit(l, j) {
			return true
		}
		select {
		case l.queue <- j:
		case <-ctx.Done():
			return false
		case <-s.ctx.Done():
			return false
		}
	}
	return true
}

// admit applies the dedupe window to a pull of j on l: true when it is to
// be queued now. Inside the window of the last pull it is counted and one
// pull is scheduled at the window's end, carrying every notice that
// arrived meanwhile.
func (s *Syncer) admit(l *lineState, j job) bool {
	k := pullKey{l.ID, userKey{j.app, j.user}}
	now := s.cfg.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recent[k]
	if r != nil && now.Sub(r.last) < l.Window() {
		l.deduped.Inc()
		r.push = r.push || j.push
		if !r.pending {
			r.pending = true
			time.AfterFunc(r.last.Add(l.Window()).Sub(now), func() { s.trailing(l, k) })
		}
		return false
	}
	if r == nil && len(s.recent) >= dedupeKeysMax {
		s.sweep(now)
	}
	if r == nil && len(s.recent) < dedupeKeysMax {
		r = &recent{}
		s.recent[k] = r
	}
	if r != nil {
		r.last = now
	}
	return true
}

// trailing queues the pull that notices inside a window asked for.
func (s *Syncer) trailing(l *lineState, k pullKey) {
	if s.ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	r := s.recent[k]
	j := job{app: k.app, user: k.user, push: r.push}
	r.pending, r.push, r.last = false, false, s.cfg.Clock()
	s.mu.Unlock()
	if s.isOff(l.ID) {
		l.skippedOff.Inc()
		return
	}
	s.enqueue(l, j)
}

// sweep drops the dedupe entries whose window is over and that wait for
// nothing. Called with mu held.
func (s *Syncer) sweep(now time.Time) {
	for k, r := range s.recent {
		if !r.pending && now.Sub(r.last) >= s.lines[k.line].Window() {
			delete(s.recent, k)
		}
	}
}

func (s *Syncer) enqueue(l *lineState, j job) {
	select {
	case l.queue <- j:
	default:
		l.dropped.Inc()
	}
}

// work runs pulls of l one at a time until Close; Concurrency of them run
// per line.
func (s *Syncer) work(l *lineState) {
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-l.queue:
			s.pull(l, j)
		}
	}
}

// pull reads j's user's assets from l, up to AttemptsMax times, each after
// a token of l's rate, and stores the result: the assets, or the failure
// beside the last good assets.
func (s *Syncer) pull(l *lineState, j job) {
	var assets []Asset
	var err error
	for attempt := range AttemptsMax {
		if s.isOff(l.ID) {
			l.skippedOff.Inc()
			return
		}
		if attempt > 0 {
			l.retried.Inc()
			d := s.cfg.Backoff << (attempt - 1)
			if !s.sleep(d + rand.N(d/2+1)) {
				return
			}
		}
		if !s.takeToken(l) {
			return
		}
		assets, err = pullOnce(s.ctx, s.client, &l.Line, j.app, j.user)
		if err == nil || !retryable(err) || s.ctx.Err() != nil {
			break
		}
	}
	if s.ctx.Err() != nil {
		return // stopping: the result of a cut pull is not a failure
	}
	if err != nil {
		s.log.Debug("lines: pull failed", "line", l.ID, "app_id", j.app, "err", err)
	}
	// The outcome is counted once its snapshot is stored (or could not
	// be), so a reader that saw the count finds the snapshot that says it.
	ctx, cancel := context.WithTimeout(s.ctx, enteredReadTimeout)
	defer cancel()
	werr := writeResult(ctx, s.cfg.TiKV, Key(l.ID, j.app, j.user), assets, s.cfg.Clock(), j.push, err)
	switch {
	case err != nil:
		l.failed.Inc()
	case werr == nil:
		l.pulled.Inc()
	}
	if werr != nil {
		s.writeFailed.Inc()
		s.log.Warn("lines: store snapshot", "line", l.ID, "app_id", j.app, "err", werr)
	}
}

// takeToken waits for a token of l's rate limit; false when stopping.
func (s *Syncer) takeToken(l *lineState) bool {
	waited := false
	for {
		ok, wait := l.limiter.Allow(protect.Key{}, time.Now())
		if ok {
			return true
		}
		if !waited {
			l.rateLimited.Inc()
			waited = true
		}
		if !s.sleep(wait) {
			return false
		}
	}
}

// sleep waits d; false when the Syncer stops first.
func (s *Syncer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// Run consumes the notice topic in the consumer group until ctx ends,
// handing each notice to its line's pulls; a notice is done once handed
// over (a pull lost to a crash comes back with the user's next notice or
// wallet entry).
func (s *Syncer) Run(ctx context.Context) error {
	cfg := storage.SaramaConfig("redrain-sync-consumer")
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	cfg.Consumer.Return.Errors = false
	group, err := sarama.NewConsumerGroup(s.cfg.Brokers, s.cfg.Group, cfg)
	if err != nil {
		return fmt.Errorf("%w: sync consumer group: %v", storage.ErrUnavailable, err)
	}
	defer group.Close()
	h := &consumer{s: s}
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{s.cfg.Topic}, h); err != nil && ctx.Err() == nil {
			s.log.Warn("lines: consume", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

type consumer struct{ s *Syncer }

func (c *consumer) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *consumer) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (c *consumer) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case <-sess.Context().Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !c.s.handle(sess.Context(), m.Value) {
				return nil // not handed over: the partition's next owner reads it again
			}
			sess.MarkMessage(m, "")
		}
	}
}
