// Package cluster makes a redrain process a member of a protoactor cluster:
// the actor system, remoting on loopback, the membership provider and the
// identity lookup that places grains (per-user and per-budget actors) on
// members. It owns membership only; the grains live in package actors.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/labstack/echo"
)

// Config says how a member joins.
type Config struct {
	Name string // cluster name; members with different names never meet
	Host string // interface for remoting and membership; 127.0.0.1 by default
	Port int    // remoting port, 0 = any
	// ManagePort is the membership (automanaged provider) HTTP port, 0 = any.
	ManagePort int
	// Seeds are the membership addresses (host:manage-port) of the other
	// members; empty means a one-member cluster.
	Seeds          []string
	Kinds          []*pcluster.Kind
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Member is this process's place in the cluster.
type Member struct {
	System   *actor.ActorSystem
	Cluster  *pcluster.Cluster
	Manage   string // membership address (host:port)
	listener net.Listener
}

// Start joins the cluster. The automanaged provider would bind 0.0.0.0 on
// its own; it is handed its own listener so that it stays on cfg.Host.
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
	lis, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.ManagePort)))
	if err != nil {
		return nil, fmt.Errorf("cluster: membership listener: %w", err)
	}
	manage := lis.Addr().String()
	managePort := lis.Addr().(*net.TCPAddr).Port

	// protoactor narrates membership and activation at INFO; keep WARN up.
	logger := slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn}).With("component", "protoactor")
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Listener = lis
	hosts := append([]string{manage}, cfg.Seeds...)
	provider := automanaged.NewWithTesting(2*time.Second, managePort, e, hosts...)

	rc := remote.Configure(cfg.Host, cfg.Port)
	cc := pcluster.Configure(cfg.Name, provider, disthash.New(), rc,
		pcluster.WithKinds(cfg.Kinds...), pcluster.WithRequestTimeout(cfg.RequestTimeout))
	c := pcluster.New(system, cc)
	m := &Member{System: system, Cluster: c, Manage: manage, listener: lis}

	kinds := make([]string, 0, len(cfg.Kinds))
	for _, k := range cfg.Kinds {
		kinds = append(kinds, k.Kind)
	}
	// The testing constructor leaves the health route to us; it answers what
	// the provider's own route would.
	e.GET("/_health", func(ctx echo.Context) error {
		host, port, err := system.GetHostPort()
		if err != nil {
			return ctx.NoContent(http.StatusServiceUnavailable)
		}
		return ctx.JSON(http.StatusOK, automanaged.NewNode(cfg.Name, system.ID, host, port, managePort, kinds))
	})
	if err := startMember(c); err != nil {
		_ = lis.Close()
		return nil, err
	}
	return m, nil
}

// startMember turns the library's panics on start into an error.
func startMember(c *pcluster.Cluster) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cluster: start member: %v", r)
		}
	}()
	c.StartMember()
	return nil
}

// Stop leaves the cluster.
func (m *Member) Stop() {
	m.Cluster.Shutdown(true)
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
