// Package cluster makes a redrain process a member of a protoactor cluster:
// the actor system, remoting, the membership provider (automanaged on its
// own loopback listener by default, or etcd) and the identity lookup that
// places grains (per-user and per-budget actors) on members. It owns
// membership only; the grains live in package actors.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/labstack/echo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Provider names a membership provider.
type Provider string

const (
	// ProviderAutomanaged: every member polls the /_health route of the
	// members it lists (its own listener and Seeds) every two seconds.
	ProviderAutomanaged Provider = "automanaged"
	// ProviderEtcd: every member keeps a key under a 3 s etcd lease and
	// watches the keys of the others.
	ProviderEtcd Provider = "etcd"
)

// EtcdLeaseTTL is the etcd provider's lease: a member that stops renewing
// it (killed, paused, cut off from etcd) leaves every list about this long
// later. protoactor fixes it (an unexported field, no option); it is here
// so that operators and tests know what to expect.
const EtcdLeaseTTL = 3 * time.Second

// etcdDialTimeout bounds the reachability check of the endpoints at start.
const etcdDialTimeout = 5 * time.Second

// Config says how a member joins.
type Config struct {
	Name string // cluster name; members with different names never meet
	// Host is the interface for remoting (and the automanaged listener);
	// 127.0.0.1 by default. Other members dial it as given, so with etcd it
	// must be an address they can reach (a pod IP), never 0.0.0.0.
	Host string
	Port int // remoting port, 0 = any
	// Provider chooses membership; empty means ProviderEtcd when Etcd is
	// set, else ProviderAutomanaged.
	Provider Provider
	// ManagePort is the membership (automanaged provider) HTTP port, 0 = any.
	ManagePort int
	// Seeds are the membership addresses (host:manage-port) of the other
	// members; empty means a one-member cluster. Automanaged only.
	Seeds []string
	// Etcd are the etcd endpoints (host:port or URLs). Etcd only.
	Etcd []string
	// EtcdPrefix is the root of the member keys, which are
	// {EtcdPrefix}/{Name}/{Name}@{actor system id}; "/redrain" by default.
	// The provider watches {EtcdPrefix}/{Name} as a plain key prefix, so
	// two clusters under one prefix must not have names where one starts
	// with the other ("redrain" would list the members of "redrain-b").
	EtcdPrefix     string
	Kinds          []*pcluster.Kind
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Member is this process's place in the cluster.
type Member struct {
	System  *actor.ActorSystem
	Cluster *pcluster.Cluster
	// ID is this member's id in member lists: the actor system's id with
	// the automanaged provider, {Name}@{actor system id} with etcd.
	ID       string
	Provider Provider
	// Manage is the membership address (host:port): the automanaged
	// listener, or with etcd the remoting address the member registered.
	Manage   string
	listener net.Listener // automanaged only
	etcd     *lateEtcd    // etcd only

	// late is set once the topology subscription that runs after the
	// placement table's has replaced the early one (see Start).
	late     atomic.Bool
	mu       sync.Mutex
	members  []*pcluster.Member // the latest topology; never modified
	listed   bool               // this member has been in its own list
	unlisted bool               // ... and has left it since (see Evicted)
	// stopping is set once Stop runs: what protoactor then logs as an error
	// about the member's own shutdown is expected (see quiet).
	stopping atomic.Bool
}

// Start joins the cluster.
func Start(cfg Config) (*Member, error) {
	if cfg.Name == "" {
		cfg.Name = "redrain"
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Provider == "" {
		cfg.Provider = ProviderAutomanaged
		if len(cfg.Etcd) > 0 {
			cfg.Provider = ProviderEtcd
		}
	}
	// protoactor narrates membership and activation at INFO; keep WARN up.
	m := &Member{Provider: cfg.Provider}
	logger := slog.New(minLevel{quiet{cfg.Logger.Handler(), &m.stopping}, slog.LevelWarn}).With("component", "protoactor")
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	m.System, m.ID = system, system.ID

	var provider pcluster.ClusterProvider
	var err error
	switch cfg.Provider {
	case ProviderAutomanaged:
		if len(cfg.Etcd) > 0 {
			return nil, errors.New("cluster: etcd endpoints given to the automanaged provider")
		}
		provider, err = m.automanaged(cfg)
	case ProviderEtcd:
		provider, err = m.etcdProvider(cfg)
	default:
		return nil, fmt.Errorf("cluster: unknown provider %q", cfg.Provider)
	}
	if err != nil {
		return nil, err
	}

	rc := remote.Configure(cfg.Host, cfg.Port)
	cc := pcluster.Configure(cfg.Name, provider, disthash.New(), rc,
		pcluster.WithKinds(cfg.Kinds...), pcluster.WithRequestTimeout(cfg.RequestTimeout))
	m.Cluster = pcluster.New(system, cc)

	// Members() answers from a topology subscription. Handlers run in
	// subscription order, in the goroutine that swaps the member list under
	// its lock; disthash swaps its placement table (without a lock) in its
	// own handler, subscribed during StartMember. A handler subscribed
	// after StartMember therefore runs after that swap, so whoever sees a
	// member in Members() and then looks a grain up reads the table made
	// for that topology (a later change still swaps it under the lookup:
	// DESIGN.md, "protoactor traps"). The early handler
	// only catches what StartMember itself publishes and goes quiet once
	// the late one is in place; it is not unsubscribed because protoactor's
	// Unsubscribe moves the last subscription into the freed slot, which
	// would put the late handler ahead of disthash's.
	system.EventStream.Subscribe(func(ev any) {
		if !m.late.Load() {
			m.onTopology(ev)
		}
	})
	if err := startMember(m.Cluster); err != nil {
		m.release()
		return nil, err
	}
	system.EventStream.Subscribe(m.onTopology)
	m.late.Store(true)
	// An update that ran the early handler before the switch holds the
	// member list's lock until its last handler returns; taking that lock
	// (GetActivatorMember does) waits for it, so no Members() answer gets
	// ahead of the placement table.
	m.Cluster.MemberList.GetActivatorMember("", "")
	if cfg.Provider == ProviderEtcd {
		m.Manage = system.Address()
	}
	return m, nil
}

// automanaged sets up the default provider. It would bind 0.0.0.0 on its
// own; it is handed its own listener so that it stays on cfg.Host.
func (m *Member) automanaged(cfg Config) (pcluster.ClusterProvider, error) {
	lis, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.ManagePort)))
	if err != nil {
		return nil, fmt.Errorf("cluster: membership listener: %w", err)
	}
	m.listener = lis
	m.Manage = lis.Addr().String()
	managePort := lis.Addr().(*net.TCPAddr).Port

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Listener = lis
	hosts := append([]string{m.Manage}, cfg.Seeds...)
	provider := automanaged.NewWithTesting(2*time.Second, managePort, e, hosts...)

	kinds := make([]string, 0, len(cfg.Kinds))
	for _, k := range cfg.Kinds {
		kinds = append(kinds, k.Kind)
	}
	system := m.System
	// The testing constructor leaves the health route to us; it answers what
	// the provider's own route would.
	e.GET("/_health", func(ctx echo.Context) error {
		host, port, err := system.GetHostPort()
		if err != nil {
			return ctx.NoContent(http.StatusServiceUnavailable)
		}
		return ctx.JSON(http.StatusOK, automanaged.NewNode(cfg.Name, system.ID, host, port, managePort, kinds))
	})
	return provider, nil
}

// etcd sets up protoactor's etcd provider. Known trap: a member whose key
// expires while it still runs (a pause, GC stall or etcd outage longer than
// EtcdLeaseTTL) is out for good until it restarts. Every member that sees
// the key deleted drops it from its list and puts its id on remoting's
// block list, which the member list never clears; the member's own watch
// deletes it from its own list too (and blocks itself). Its keep-alive then
// puts the key back under a new lease, but every list filters the blocked
// id out, and the provider skips its own key. Evicted reports it, so a
// liveness check can restart the process, which joins under a new id.
// An etcd outage longer than the TTL therefore evicts every member.
func (m *Member) etcdProvider(cfg Config) (pcluster.ClusterProvider, error) {
	if len(cfg.Seeds) > 0 || cfg.ManagePort != 0 {
		return nil, errors.New("cluster: seeds or a membership port given to the etcd provider")
	}
	if strings.Contains(cfg.Name, "/") {
		return nil, fmt.Errorf("cluster: name %q: the etcd provider takes the last path element of a key as a member id", cfg.Name)
	}
	if cfg.EtcdPrefix == "" {
		cfg.EtcdPrefix = "/redrain"
	}
	m.ID = cfg.Name + "@" + m.System.ID // as the provider names itself
	ctx, cancel := context.WithCancel(context.Background())
	m.etcd = &lateEtcd{prefix: cfg.EtcdPrefix, cancel: cancel,
		cfg: clientv3.Config{Endpoints: cfg.Etcd, DialTimeout: etcdDialTimeout, Context: ctx}}
	return m.etcd, nil
}

// lateEtcd creates protoactor's etcd provider, and so its etcd client, only
// when the cluster starts the member, after remoting has started. Remoting's
// Start sets gRPC's process-wide logger without a lock, and an etcd client
// created before it (the provider's constructor dials at once) would read
// that logger from its dialing goroutines: a data race, reported by the race
// detector. The same holds for any gRPC client running in the process when a
// member starts (so tests start members before their own gRPC clients).
type lateEtcd struct {
	prefix string
	cfg    clientv3.Config
	cancel context.CancelFunc // of cfg.Context
	p      *etcd.Provider
	keep   bool // the client must not be cancelled (see StartMember)
}

func (l *lateEtcd) StartMember(c *pcluster.Cluster) error {
	// The provider's calls carry no deadline, so an unreachable etcd would
	// hang StartMember for ever; find out first, with a deadline.
	if err := reachEtcd(l.cfg, l.prefix); err != nil {
		return err
	}
	p, err := etcd.NewWithConfig(l.prefix, l.cfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	l.p = p
	if err := p.StartMember(c); err != nil {
		// Its watch may already run, and would spin on a cancelled client
		// (only Shutdown stops it, and Shutdown's delete would wait for ever
		// on an etcd that just failed). Start fails and the process ends.
		l.keep = true
		return err
	}
	return nil
}

func (l *lateEtcd) StartClient(*pcluster.Cluster) error {
	return errors.New("cluster: redrain runs members only")
}

// Shutdown deletes the member's key, so the others drop it at once, and
// stops the provider's watch. The provider never closes its etcd client (it
// is unexported); Member.Stop cancels the client's context afterwards,
// which ends its lease keep-alive, but its gRPC connection stays until the
// process exits.
func (l *lateEtcd) Shutdown(graceful bool) error {
	if l.p == nil {
		return nil
	}
	return l.p.Shutdown(graceful)
}

// reachEtcd reads one key count under prefix within etcdDialTimeout.
func reachEtcd(ec clientv3.Config, prefix string) error {
	c, err := clientv3.New(ec)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), etcdDialTimeout)
	defer cancel()
	if _, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd %v unreachable: %w", ec.Endpoints, err)
	}
	return nil
}

// onTopology keeps the latest topology for Members and Evicted.
func (m *Member) onTopology(ev any) {
	t, ok := ev.(*pcluster.ClusterTopology)
	if !ok {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members = t.Members
	self := false
	for _, x := range t.Members {
		self = self || x.Id == m.ID
	}
	if self {
		m.listed = true
	} else if m.listed {
		m.unlisted = true
	}
}

// Members returns the members of the latest topology this member has seen,
// itself included once it is listed. Unlike MemberList.Members it is safe
// to call while the topology changes, and a grain looked up after it
// returns is placed on the topology it returned (or a later one).
func (m *Member) Members() []*pcluster.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.members
}

// Evicted reports whether this member was in its own member list and has
// left it: it no longer hosts grains and never rejoins (see the etcd
// provider's trap above); only a restart brings it back.
func (m *Member) Evicted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unlisted
}

// startMember turns the library's panics on start into an error.
func startMember(c *pcluster.Cluster) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok { // a provider's error, panicked by StartMember
				err = fmt.Errorf("cluster: start member: %w", e)
				return
			}
			err = fmt.Errorf("cluster: start member: %v", r)
		}
	}()
	c.StartMember()
	return nil
}

// Stop leaves the cluster: the member is marked as left in gossip, the
// membership provider drops it (the automanaged listener closes, the etcd
// key is deleted, so the others drop it at once), the actor system and
// placement stop, then remoting, within remoteStopWithin.
func (m *Member) Stop() {
	m.stopping.Store(true)
	m.shutdown()
	m.release()
}

// remoteStopWithin bounds remoting's graceful stop. gRPC's GracefulStop
// waits for the streams that other members keep open to this one, and
// before it the endpoint manager's stop waits for each endpoint writer's
// message in progress: one still dialing a member that left sleeps 2 s
// between attempts (protoactor gives the whole 10 s). Past the bound the
// gRPC server is stopped, closing every stream, and Stop returns; what is
// left of the graceful stop ends on its own, or with the process.
const remoteStopWithin = time.Second

// shutdown does what protoactor's graceful Cluster.Shutdown does, without
// its fixed 2 s sleep "for ownership transfer" (redrain's grains keep
// nothing that needs transferring: every grain trusts TiKV over its memory)
// and with remoting's graceful stop bounded. Its remoting can panic there
// ("send on closed channel"): an endpoint reader whose stream failed (a
// peer paused or killed) closes its disconnect channel without removing it
// from the map that the endpoint manager's stop sends to. The rest of its
// shutdown is then skipped; the process is stopping anyway.
func (m *Member) shutdown() {
	defer func() {
		if r := recover(); r != nil {
			slog.Warn("cluster: protoactor panicked while shutting down remoting", "panic", r)
		}
	}()
	c := m.Cluster
	c.Gossip.SetState(pcluster.GracefullyLeftKey, &emptypb.Empty{})
	c.ActorSystem.Shutdown()
	_ = c.Config.ClusterProvider.Shutdown(true)
	c.IdentityLookup.Shutdown()
	c.Gossip.Shutdown()
	graceful := make(chan any, 1)
	go func() {
		defer func() {
			r := recover()
			if r != nil {
				slog.Warn("cluster: protoactor panicked while shutting down remoting", "panic", r)
			}
			graceful <- r
		}()
		c.Remote.Shutdown(true)
	}()
	t := time.NewTimer(remoteStopWithin)
	defer t.Stop()
	select {
	case <-graceful:
	case <-t.C:
		c.Remote.Shutdown(false) // the gRPC server's Stop, which ends a GracefulStop
	}
}

// release closes what Start opened besides the actor system.
func (m *Member) release() {
	if m.etcd != nil && !m.etcd.keep {
		m.etcd.cancel()
	}
	if m.listener == nil {
		return
	}
	if err := m.listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		slog.Debug("cluster: close membership listener", "err", err)
	}
}

// minLevel drops records below a level before the wrapped handler sees them.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(as), m.min}
}

func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.Handler.WithGroup(name), m.min}
}

// quiet lowers to DEBUG what protoactor logs as an error about the
// member's own orderly stop, once Stop has begun (stopping): the records
// of stopMessages, each only with its error. Nothing else is lowered, and
// nothing before Stop.
type quiet struct {
	slog.Handler
	stopping *atomic.Bool
}

// stopMessages are protoactor's error records that Stop itself causes, by
// message, with the test of their "error" attribute.
var stopMessages = map[string]func(error) bool{
	// The automanaged provider's membership server returns when Stop
	// closes it (cluster/clusterproviders/automanaged).
	"Automanaged server stopping..!": func(err error) bool { return errors.Is(err, http.ErrServerClosed) },
	// An endpoint writer's stream to another member ends when Stop closes
	// this member's client connections (remote/endpoint_writer.go).
	"EndpointWriter lost connection": func(err error) bool { return status.Code(err) == codes.Canceled },
}

func (q quiet) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug && q.stopping.Load() && benign(r) {
		if !q.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r = r.Clone()
		r.Level = slog.LevelDebug
	}
	return q.Handler.Handle(ctx, r)
}

// benign reports whether r is one of stopMessages.
func benign(r slog.Record) bool {
	match := stopMessages[r.Message]
	if match == nil {
		return false
	}
	ok := false
	r.Attrs(func(a slog.Attr) bool {
		if err, isErr := a.Value.Any().(error); isErr && a.Key == "error" {
			ok = match(err)
			return false
		}
		return true
	})
	return ok
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler {
	return quiet{q.Handler.WithAttrs(as), q.stopping}
}

func (q quiet) WithGroup(name string) slog.Handler {
	return quiet{q.Handler.WithGroup(name), q.stopping}
}
