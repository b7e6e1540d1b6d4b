// Package node assembles one `redrain serve` process from a Config: the
// backends (embedded or real), the cluster member and its grains, the
// booker, the grant admission and the HTTP API; recovery before the node reports
// ready; and an orderly stop. It holds no business rules.
package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/valyala/fasthttp"

	"redrain/actors"
	"redrain/admin"
	"redrain/adminauth"
	"redrain/booking"
	"redrain/campaign"
	"redrain/closing"
	"redrain/cluster"
	"redrain/configstore"
	"redrain/consistency"
	"redrain/dashboard"
	"redrain/grant"
	"redrain/ingress"
	"redrain/ledger"
	"redrain/lines"
	"redrain/metrics"
	"redrain/metrics/promexport"
	"redrain/presentation"
	"redrain/protect"
	"redrain/reclaim"
	"redrain/spend"
	"redrain/storage"
	"redrain/wallet"
	"redrain/withdraw"
)

// Config is everything `redrain serve` takes.
type Config struct {
	DataDir string // embedded backends' data and the node id; default ./data
	HTTP    string // listen address; default :8080
	// AdminHTTP is the operations listener's address: /admin/v1/*,
	// /metrics and /debug/pprof/ move there from HTTP. Empty: both on HTTP,
	// which only a node on embedded defaults may do.
	AdminHTTP  string
	Kafka      []string // brokers; empty = embedded
	PD         []string // TiKV PD endpoints; empty = embedded
	Redis      string   // address; empty = embedded
	ConfigFile string   // campaign config; empty = the demo campaign
	KeysFile   string   // the campaign's keys (campaign.Keys) apart from ConfigFile; empty: in it
	Partitions int32    // of the grant topic when it is created
	Seeds      []string // cluster membership addresses of other members
	// Etcd are etcd endpoints for membership instead of Seeds (protoactor's
	// etcd provider); empty = automanaged. With etcd there is no membership
	// listener: ClusterAddr is then the remoting address other members dial.
	Etcd []string
	// ClusterAddr is this member's membership address (host:port); the
	// default 127.0.0.1:0 picks a port (fine for one member).
	ClusterAddr string
	// GrantTopic names the grant topic (default storage.GrantTopic) and
	// BookingGroup booking's consumer group (default booking.Group); every
	// node of a cluster names the same.
	GrantTopic   string
	BookingGroup string
	// BookingLagMax is how old the oldest unbooked grant may get while
	// booking still gives way to a busy grant path (0: booking.DefaultLagMax;
	// negative: never give way). Larger favours bursts accepted, smaller
	// grants booked soon.
	BookingLagMax time.Duration
	// AuditEvery is how often the node audits the store live (invariants
	// 1-6 while booking may lag; redrain_audit_* series); 0: only when
	// asked (GET /admin/v1/audit). Each audit reads every account.
	AuditEvery time.Duration
	// StopGrace is how long Stop keeps serving after /readyz turned 503,
	// before the listeners close, so that load balancers stop sending
	// first (each connection closes after its answers meanwhile). 0: none.
	StopGrace time.Duration
	// Role is which side of the API the node serves (redrain serve
	// --role): RoleRead serves wallets and ledgers from the store and Redis
	// alone (no broker, booking, grant path or cluster), RoleWrite grants
	// and books and serves no wallet, RoleAll (the default) both.
	Role ingress.Role
	// WalletStoreRate bounds the wallet's reads of the store a second
	// while Redis fails (0: wallet's default).
	WalletStoreRate int
	// WalletCheckDaily runs the wallet's T+1 cache check on this node
	// (redrain serve --wallet-check-daily): 10 minutes after each UTC
	// midnight, every user changed the day before (wallet.RunDaily; one
	// node of those with it checks a day, the one that claimed it).
	WalletCheckDaily bool
	// SyncTopic names the business lines' notice topic (default
	// lines.Topic) and SyncGroup the consumer group that pulls for them
	// (default lines.Group); used only with business lines configured.
	SyncTopic string
	SyncGroup string
	// Moves books the spending routes' moves and reads their accounts;
	// nil: the node's Booker. Tests set an in-memory one (spend/spendtest).
	Moves spend.Booker
	// Withdraw is the node's withdrawal rules and payout channels.
	Withdraw WithdrawConfig
	// Clock is the node's clock (nil: time.Now). Tests set one to book
	// in past months (expiry past validity).
	Clock func() time.Time
	// ExpiryEvery is how often a node that serves wallets checks whether
	// the partitions it owns were swept for expiry this month (0:
	// expiryEveryDefault, an hour; negative: never, operators trigger it).
	ExpiryEvery time.Duration
	Log         *slog.Logger
}

// Node is a running redrain process.
type Node struct {
	cfg         Config
	clock       func() time.Time
	log         *slog.Logger
	ID          string
	Incarnation uint64
	Campaign    *campaign.Campaign
	Metrics     *metrics.Registry
	// Presentation is the wallet's presentation this node serves (the
	// configuration store's live and canary versions, or its cache file's
	// while the store is down): Presentation.For(act_id) gives a wallet
	// answer its slots. Set before Start returns; never replaced.
	Presentation *presentation.Presentation

	tikv     *storage.TiKV
	kafka    *storage.Kafka
	redis    *storage.Redis
	pipe     *storage.Pipeliner
	stream   *storage.GrantWriter
	member   *cluster.Member
	booker   *booking.Booker
	grants   *grant.Admission
	binder   *ingress.Binder
	config   *configstore.Store
	watcher  *configstore.Watcher
	admin    *admin.API
	verifier *adminauth.Verifier
	apps     *adminauth.Verifier // nil: /v1 unsigned (no app_keys)
	// reclaimed counts the leases this node reclaimed; reclaimer reclaims
	// them (reclaim.go).
	reclaimed *metrics.Counter
	audits    *audits
	exporter  *promexport.Exporter // serves Metrics and the collectors below
	// budgetViews are the budgets' figures read for /metrics and the
	// dashboard, at most once a second.
	budgetViews *budgetViews
	reclaimer   *reclaim.Reclaimer
	// index keeps Redis's binding index whole (recover.go).
	index *ingress.Index
	// duplicate is set once another live process publishes this node's id
	// (status.go): the node is not ready from then on.
	duplicate atomic.Pointer[error]
	guard     *protect.Guard
	// wallets is the read side (nil on a node of --role write).
	wallets *wallet.Wallets
	// statementsTap holds this node's committed journals summed for the
	// statements folder (closing.Tap).
	statementsTap closing.Tap
	lines         *lines.Syncer     // nil: the campaign file configures no business lines (lines.go)
	withdrawals   *withdraw.Service // nil: the node serves no withdrawals (withdraw.go)
	// consistency is the consistency service (consistency.go); nil on a
	// read node or when the grant topic cannot be read.
	consistency       *consistency.Service
	consistencyStream *consistency.KafkaStream
	server            *ingress.Server
	listener          net.Listener
	// opsServer and opsListener serve the operations routes apart from the
	// API (Config.AdminHTTP); nil without.
	opsServer   *ingress.Server
	opsListener net.Listener

	ready        atomic.Bool
	draining     atomic.Bool // Stop began: /readyz answers 503 (stop.go)
	lag          atomic.Int64
	partitionLag atomic.Pointer[map[int32]int64]
	lagMu        sync.Mutex
	lagClient    sarama.Client // guarded by lagMu
	grains       actors.GrainCounts
	cancel       context.CancelFunc
	bg           sync.WaitGroup
	served       chan error
	stopped      sync.Once
}

// Addr is the HTTP listen address.
func (n *Node) Addr() string { return n.listener.Addr().String() }

// AdminAddr is where the operations routes are served: the operations
// listener, or Addr without one.
func (n *Node) AdminAddr() string {
	if n.opsListener != nil {
		return n.opsListener.Addr().String()
	}
	return n.Addr()
}

// Start brings a node up. It returns once the API listens; the node reports
// ready on /readyz when recovery has finished.
func Start(cfg Config) (n *Node, err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.HTTP == "" {
		cfg.HTTP = ":8080"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = storage.GrantPartitionsDefault
	}
	if cfg.GrantTopic == "" {
		cfg.GrantTopic = storage.GrantTopic
	}
	if cfg.BookingGroup == "" {
		cfg.BookingGroup = booking.Group
	}
	if cfg.SyncTopic == "" {
		cfg.SyncTopic = lines.Topic
	}
	if cfg.SyncGroup == "" {
		cfg.SyncGroup = lines.Group
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	n = &Node{cfg: cfg, log: cfg.Log, Metrics: &metrics.Registry{}, Incarnation: uint64(time.Now().UnixNano()), served: make(chan error, 2)}
	n.exporter = promexport.New(n.Metrics)
	// The error returns below set the named result n to nil before this
	// runs, so it stops what was started through its own reference.
	started := n
	defer func() {
		if err != nil {
			started.Stop(context.Background())
		}
	}()
	switch {
	case cfg.ConfigFile != "":
		n.Campaign, err = campaign.LoadWithKeys(cfg.ConfigFile, cfg.KeysFile)
	case cfg.KeysFile != "":
		err = errors.New("node: a keys file (--keys) goes with a campaign file (--config)")
	default:
		n.Campaign, err = campaign.Compile(campaign.Demo())
	}
	if err != nil {
		return nil, err
	}
	if err := n.checkKeys(n.Campaign.Config); err != nil {
		return nil, err
	}
	if err := n.checkOpsPlane(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if n.ID, err = nodeID(cfg.DataDir); err != nil {
		return nil, err
	}
	n.log = n.log.With("node", n.ID)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if cfg.Role == ingress.RoleRead {
		if err := n.startRead(ctx); err != nil {
			return nil, err
		}
		return n, nil
	}

	if n.tikv, err = storage.OpenTiKV(cfg.PD, cfg.DataDir); err != nil {
		return nil, err
	}
	if n.kafka, err = storage.OpenKafkaTopic(cfg.Kafka, cfg.DataDir, cfg.GrantTopic, cfg.Partitions); err != nil {
		return nil, err
	}
	if n.kafka.Durability != "" {
		n.log.Warn("kafka: " + n.kafka.Durability)
	}
	if n.redis, err = storage.OpenRedis(cfg.Redis, 32); err != nil {
		return nil, err
	}
	n.pipe = storage.NewPipeliner(n.redis.Client, 8)
	n.index = &ingress.Index{Log: n.log, TiKV: n.tikv, Redis: n.redis.Client, Pipe: n.pipe, Drained: n.indexDrained}
	if err := n.checkDuplicate(ctx); err != nil {
		return nil, err
	}
	clock := time.Now
	if cfg.Clock != nil {
		clock = cfg.Clock
	}
	n.clock = clock
	host, port, err := splitHostPort(cfg.ClusterAddr)
	if err != nil {
		return nil, fmt.Errorf("node: cluster address %q: %w", cfg.ClusterAddr, err)
	}
	cc := cluster.Config{Host: host, ManagePort: port, Seeds: cfg.Seeds, Etcd: cfg.Etcd,
		Kinds: actors.Kinds(n.log, n.tikv, &n.grains), Logger: n.log.With("component", "cluster")}
	if len(cfg.Etcd) > 0 {
		cc.ManagePort, cc.Port = 0, port
	}
	n.member, err = cluster.Start(cc)
	if err != nil {
		return nil, err
	}
	// protoactor keeps one process-wide default grain call config (sender
	// context, timeout, retries), made for the first cluster that asks for
	// it and never replaced. A node started after another one stopped in the
	// same process (tests, a program embedding redrain) would send every
	// grain request from the stopped actor system and get dead letters, so
	// it is pointed at this member before anything calls a grain. Nodes in
	// one process therefore run one at a time.
	*pcluster.DefaultGrainCallConfig(n.member.Cluster) = *pcluster.NewGrainCallOptions(n.member.Cluster)
	if err := awaitPlacement(n.member.Cluster, actors.KindBudget); err != nil {
		return nil, err
	}
	if n.stream, err = storage.NewGrantWriterOn(n.kafka.Brokers, cfg.GrantTopic, cfg.Partitions, storage.DefaultWriterTiming); err != nil {
		return nil, err
	}
	// Booking records this member's remoting address with each partition
	// it takes over: the other nodes forward that partition's grants there.
	self := n.member.System.Address()
	// A partition taken from an owner that did not release it waits until
	// that owner's last records can have landed: it stopped deciding within
	// TenureGrace, and a record lands within WriteDeadline of its start.
	// Alone on an embedded broker, no other process ever owned one.
	wait := booking.TenureGrace + storage.WriteDeadline
	if n.kafka.Embedded() {
		wait = 0
	}
	n.booker = booking.New(booking.Config{Log: n.log, TiKV: n.tikv,
		Brokers: n.kafka.Brokers, Topic: cfg.GrantTopic, GroupID: cfg.BookingGroup, Partitions: cfg.Partitions, Metrics: n.Metrics, Clock: clock,
		Owner: ownerName(n.ID, n.Incarnation, self), LagMax: cfg.BookingLagMax, UncleanWait: wait})
	budgets := actors.NewBudgets(n.member.Cluster, n.tikv)
	n.binder = ingress.NewBinder(n.tikv, n.pipe, n.kafka.Embedded(), cfg.Partitions)
	n.index.Binder = n.binder
	// A shard is decided by the node whose booking owns its partition
	// (sessions), once that booking caught up with the partition; the other
	// nodes forward their batches for it there (peers).
	n.grants = grant.New(grant.Config{Log: n.log, Campaign: n.Campaign, Resolver: n.binder,
		Stream: n.stream, Leases: budgets, Node: n.ID,
		Incarnation: n.Incarnation, Metrics: n.Metrics, Clock: clock,
		Peers: peers{n}, Self: self})
	if err := n.spawnServing(); err != nil {
		return nil, err
	}
	n.booker.Watch(sessions{n})
	// Reads of accounts of partitions owned elsewhere (token status, the
	// wallet) ask their owner, and read the store when it cannot answer.
	n.booker.ReadThrough(owners{n})
	n.booker.YieldWhile(n.grants.Busy)
	if cfg.Role == ingress.RoleAll {
		n.startWallets(ctx)
	}
	n.booker.OnBooked(func(ops []ledger.Op) { n.grants.MarkBooked(grant.BookedOf(ops)) })
	if n.wallets != nil {
		n.booker.OnMoved(n.wallets.Moved)
	}
	// Each committed journal: its grants to the holders at once and the
	// journal to the Feed; its grants summed to the statements folder.
	n.booker.OnJournal(func(p int32, seq uint64, bookedAt int64, ops []ledger.Op) {
		if n.wallets != nil {
			n.wallets.Journal(p, seq, ops)
		}
		n.statementsTap.Journal(p, seq, bookedAt, ops)
	})
	if err := n.startLines(); err != nil {
		return nil, err
	}
	if err := n.startWithdrawals(); err != nil {
		return nil, err
	}
	if err := n.startConfig(ctx); err != nil {
		return nil, err
	}
	n.Metrics.GaugeFunc("redrain_booking_lag_records", "Grant records in Kafka not yet booked (all partitions).", n.lag.Load)
	n.registerMetrics()
	n.audits = newAudits(n.Metrics, n.exporter)
	n.Metrics.GaugeFunc("redrain_booking_stopped", "1 when booking stopped on a broken money invariant or an unreadable record (see /readyz).", func() int64 {
		if n.booker.Broken() != nil {
			return 1
		}
		return 0
	})
	n.Metrics.GaugeFunc("redrain_ready", "1 when the node serves grants.", func() int64 {
		if n.readyErr() == nil {
			return 1
		}
		return 0
	})
	dash := dashboard.Handler(dashboard.NewHub(dashSource{n}), n.verifier)
	toks := ingress.NewTokens(n.Campaign, n.grants.Catalog, n.tikv, n.booker)
	toks.StoredAwardMax = n.storedAwardMax
	newServer := func(plane ingress.Plane) *ingress.Server {
		return &ingress.Server{Plane: plane, Grants: n.grants, Binder: n.binder, Campaign: n.Campaign, TiKV: n.tikv, Metrics: n.Metrics, Exporter: n.exporter,
			Tokens:       toks,
			Ledger:       n.booker,
			Spend:        &spend.Service{Booker: n.spendBooker(), Budgets: budgetAssets{n.tikv}},
			Role:         cfg.Role,
			Authenticate: n.authenticate, Apps: n.apps,
			Guard: n.guard, Sync: n.lines, Presentation: n.Presentation,
			Log: n.log, Dashboard: dash,
			Admin: func(ctx *fasthttp.RequestCtx, keyID string) bool {
				return n.serveParked(ctx, keyID) || n.serveStatements(ctx) || n.serveExpiry(ctx) || n.admin.Serve(ctx, keyID)
			},
			Ready:    n.readyErr,
			Draining: n.draining.Load,
			Stats: func() ingress.Stats {
				lag, err := n.refreshLag()
				if err != nil {
					lag = -1 // unknown: never "drained"
				}
				st := ingress.Stats{GrantsIssued: n.grants.Issued(), GrantsBooked: n.booker.Booked.Load(),
					BookingLag: lag, Ready: n.readyErr() == nil, CPUSeconds: metrics.ProcessCPUSeconds(),
					GrantRecords: n.grants.Records(),
					BookingKeys:  n.booker.Keys.Load(), BookingTxns: n.booker.Batches.Load()}
				st.Allocs, st.AllocBytes = metrics.HeapAllocs()
				if h := n.booker.IssueToBooked; h != nil {
					st.IssueToBookedBounds, st.IssueToBooked = h.Buckets()
				}
				return st
			},
			Cluster: n.clusterView,
			Audit:   n.audit,
		}
	}
	if err := n.listen(func(plane ingress.Plane) *ingress.Server {
		s := newServer(plane)
		if n.wallets != nil {
			s.Wallet = n.wallets
		}
		if n.withdrawals != nil {
			s.Withdrawals = n.withdrawals
		}
		return s
	}); err != nil {
		return nil, err
	}

	indexLost := n.Metrics.Gauge("redrain_redis_index_lost", "1 while Redis lost its binding index and the node rebuilds it (new users are refused meanwhile).")
	n.reclaimed = n.Metrics.Counter("redrain_leases_reclaimed_total", "Budget leases this node reclaimed after their holder stopped renewing them (closed at what was booked under them).")
	n.reclaimer = n.newReclaimer()
	n.spawn(ctx, "statements", n.foldStatements)
	if n.wallets != nil && cfg.ExpiryEvery >= 0 {
		n.spawn(ctx, "expiry", func(ctx context.Context) { n.sweepExpiryMonthly(ctx, cmp.Or(cfg.ExpiryEvery, expiryEveryDefault)) })
	}
	n.spawn(ctx, "index", func(ctx context.Context) { n.index.Watch(ctx, n.ready.Load, indexLost) })
	n.spawn(ctx, "watcher", n.watcher.Run)
	n.spawn(ctx, "status", n.publishStatus)
	n.spawn(ctx, "budget-folder", func(ctx context.Context) {
		(&actors.Folder{Budgets: budgets, Redis: n.pipe, Log: n.log, Clock: clock}).Run(ctx, actors.StoredBudgetIDs(ctx, n.tikv, n.log))
	})
	n.spawn(ctx, "booking", func(ctx context.Context) { _ = n.booker.Run(ctx) })
	n.spawn(ctx, "lag", n.watchLag)
	n.spawn(ctx, "recover", n.recover)
	n.spawn(ctx, "reclaim", n.reclaimer.Run)
	if n.lines != nil {
		n.spawn(ctx, "lines", func(ctx context.Context) { _ = n.lines.Run(ctx) })
	}
	if n.withdrawals != nil {
		n.spawn(ctx, "withdrawals", n.withdrawals.Run)
	}
	if cfg.AuditEvery > 0 {
		n.spawn(ctx, "audit", func(ctx context.Context) { n.audits.every(ctx, cfg.AuditEvery, n.tikv, n.log) })
	}
	n.startConsistency(ctx)
	n.log.Info("node started", "http", n.Addr(), "admin_http", n.AdminAddr(), "data_dir", cfg.DataDir,
		"kafka", describe(n.kafka.Brokers, n.kafka.Embedded()), "redis", describe([]string{n.redis.Addr}, n.redis.Embedded()),
		"tikv", describe(cfg.PD, n.tikv.Embedded), "cluster", n.member.Manage)
	if !n.kafka.Embedded() && n.redis.Embedded() {
		n.log.Warn("a real broker with the embedded Redis: each request with new users runs the binder's script in the embedded server, ~0.4 ms a call; point --redis at a redis-server")
	}
	return n, nil
}

// placementWithin bounds how long a started member may take to see itself
// in the cluster topology (the membership provider polls every 2 s).
const placementWithin = 15 * time.Second

// awaitPlacement returns once the cluster can place grains of every kind.
// Until the member has seen its first topology, protoactor's identity
// lookup finds no owner for a grain; and it swaps its placement table in
// without a lock while a concurrent lookup reads it (a data race the race
// detector reports on the first grain calls of the booker, the grant path's
// lease fetch and recovery). The topology changes only when members come
// or go, so once it is seen nothing at start touches the table again.
// MemberList takes the lock the topology update holds while it swaps the
// table, which orders that write before every later lookup.
func awaitPlacement(c *pcluster.Cluster, kinds ...string) error {
	deadline := time.Now().Add(placementWithin)
	for {
		placed := true
		for _, k := range kinds {
			if c.MemberList.GetActivatorMember(k, "") == "" {
				placed = false
			}
		}
		if placed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node: cluster member cannot place grains of %v after %v", kinds, placementWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// splitHostPort reads host:port; empty means 127.0.0.1:0.
func splitHostPort(addr string) (string, int, error) {
	if addr == "" {
		return "127.0.0.1", 0, nil
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	return h, port, nil
}

func describe(addrs []string, embedded bool) string {
	if embedded {
		return "embedded " + strings.Join(addrs, ",")
	}
	return strings.Join(addrs, ",")
}

func (n *Node) readyErr() error {
	if d := n.duplicate.Load(); d != nil {
		return *d
	}
	if n.cfg.Role == ingress.RoleRead {
		return nil // the read side serves from whatever layer answers
	}
	if err := n.booker.Broken(); err != nil {
		return fmt.Errorf("booking stopped: %w", err)
	}
	if !n.ready.Load() {
		return errors.New("recovering: booking the grant backlog and rebuilding indexes")
	}
	if n.kafka.Embedded() && n.grants.Deciding() < n.grants.Shards() {
		// Alone on its broker, the node decides every shard itself.
		return fmt.Errorf("restoring claims: %d of %d shards decided here", n.grants.Deciding(), n.grants.Shards())
	}
	if !n.booker.Joined() {
		// Its join makes the group move partitions, and the grant shards
		// with them, on every member: a node ready before it has its
		// assignment would have clients meet "moving" answers.
		return errors.New("joining the booking group: no partitions assigned yet")
	}
	if n.member.Evicted() {
		// The others dropped this member (e.g. after a pause with the etcd
		// provider); it stays out until restarted.
		return errors.New("evicted from the cluster: restart this node")
	}
	return nil
}

// Served returns the exit of an HTTP server (the API's or the operations
// listener's).
func (n *Node) Served() <-chan error { return n.served }

// nodeID reads the node's id from its data dir, creating it on first start.
func nodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := "n-" + hex.EncodeToString(r[:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("node: write node id: %w", err)
	}
	return id, nil
}

func (n *Node) watchLag(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		_, _ = n.refreshLag()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshLag reads the booking lag from Kafka now and caches it for the
// metric and the cluster view. The stats endpoint calls it too: a cached
// figure up to 250 ms old once let a waiter see "drained" while records
// acknowledged a moment earlier were still unbooked.
func (n *Node) refreshLag() (int64, error) {
	n.lagMu.Lock()
	defer n.lagMu.Unlock()
	if n.lagClient == nil {
		c, err := sarama.NewClient(n.kafka.Brokers, storage.SaramaConfig("redrain-lag"))
		if err != nil {
			return 0, err
		}
		n.lagClient = c
	}
	lag, err := booking.LagOf(context.Background(), n.lagClient, n.cfg.GrantTopic, n.tikv)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, l := range lag {
		sum += l
	}
	n.lag.Store(sum)
	n.partitionLag.Store(&lag)
	return sum, nil
}
