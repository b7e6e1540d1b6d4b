package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/configstore"
	"redrain/ingress"
	"redrain/lines"
	"redrain/metrics"
	"redrain/presentation"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/wallet"
)

// startRead brings up a node of the read side (--role read): the store,
// Redis and the wallet's layers behind the API, and nothing of the write
// side (no broker, booking, grant path, lease holders or cluster), so
// that it keeps answering while Kafka or booking is down.
func (n *Node) startRead(ctx context.Context) error {
	cfg := n.cfg
	var err error
	if n.tikv, err = storage.OpenTiKV(cfg.PD, cfg.DataDir); err != nil {
		return err
	}
	if n.redis, err = storage.OpenRedis(cfg.Redis, 32); err != nil {
		if cfg.Redis == "" {
			return err
		}
		// The read side starts without Redis: the wallet reads the store
		// at a bounded rate until it answers.
		n.log.Warn("redis unreachable at start; wallets are read from the store at a bounded rate until it answers", "err", err)
		n.redis = &storage.Redis{Addr: cfg.Redis, Client: redis.NewClient(&redis.Options{Addr: cfg.Redis, PoolSize: 32,
			DialTimeout: time.Second, MaxRetries: 1})}
	}
	if err := n.startAuth(); err != nil {
		return err
	}
	n.startWallets(ctx)
	if err := n.startReadConfig(ctx); err != nil {
		return err
	}
	n.audits = newAudits(n.Metrics, n.exporter)
	n.Metrics.GaugeFunc("redrain_ready", "1 when the node serves grants.", func() int64 {
		if n.readyErr() == nil {
			return 1
		}
		return 0
	})
	if err := n.listen(func(plane ingress.Plane) *ingress.Server {
		return &ingress.Server{Plane: plane, Role: ingress.RoleRead, Wallet: n.wallets, TiKV: n.tikv,
			Presentation: n.Presentation, Sync: n.lines,
			Ledger:  storeLedger{tikv: n.tikv, parts: n.cfg.Partitions},
			Metrics: n.Metrics, Exporter: n.exporter, Authenticate: n.authenticate, Apps: n.apps, Log: n.log,
			Ready: n.readyErr, Draining: n.draining.Load,
			Stats: func() ingress.Stats {
				st := ingress.Stats{Ready: n.readyErr() == nil, CPUSeconds: metrics.ProcessCPUSeconds()}
				st.Allocs, st.AllocBytes = metrics.HeapAllocs()
				return st
			},
			Cluster: n.clusterView,
			Audit:   n.audit,
		}
	}); err != nil {
		return err
	}
	if cfg.AuditEvery > 0 {
		n.bg.Add(1)
		go func() { defer n.bg.Done(); n.audits.every(ctx, cfg.AuditEvery, n.tikv, n.log) }()
	}
	n.log.Info("node started (read side)", "http", n.Addr(), "admin_http", n.AdminAddr(), "data_dir", cfg.DataDir,
		"redis", describe([]string{n.redis.Addr}, n.redis.Embedded()), "tikv", describe(cfg.PD, n.tikv.Embedded))
	return nil
}

// startReadConfig gives a read node what it serves of the configuration
// store: the wallet's presentation and the business lines (their
// snapshots and push-pull; a read node takes no notice, so it has no
// broker), each line's switch from the switches document. With the store
// down it serves the last good copy from the data dir, as every node.
func (n *Node) startReadConfig(ctx context.Context) error {
	n.Presentation = &presentation.Presentation{}
	if ls := n.Campaign.Config.BusinessLines; len(ls) > 0 {
		s, err := lines.New(lines.Config{Lines: ls, TiKV: n.tikv, Metrics: n.Metrics, Log: n.log})
		if err != nil {
			return fmt.Errorf("node: business lines: %w", err)
		}
		n.lines = s
	}
	n.config = configstore.New(n.tikv, nil)
	n.watcher = &configstore.Watcher{Source: n.config, Every: configPollEvery,
		CacheFile: filepath.Join(n.cfg.DataDir, "config-cache.json"), Log: n.log,
		Apply: func(snap *configstore.Snapshot) error {
			_, serve, err := n.readSideOf(snap)
			if err == nil {
				serve()
			}
			return err
		}}
	if err := n.watcher.Start(ctx); err != nil {
		return fmt.Errorf("node: configuration: %w", err)
	}
	n.bg.Add(1)
	go func() { defer n.bg.Done(); n.watcher.Run(ctx) }()
	return nil
}

// startWallets starts the wallet's read side and its feed.
func (n *Node) startWallets(ctx context.Context) {
	n.wallets = wallet.New(wallet.Config{TiKV: n.tikv, Parts: n.cfg.Partitions, Redis: n.redis.Client,
		Log: n.log, Metrics: n.Metrics, StoreRate: n.cfg.WalletStoreRate})
	n.spawn(ctx, "wallet", n.wallets.Run)
	if n.cfg.WalletCheckDaily {
		n.spawn(ctx, "wallet-daily", func(ctx context.Context) { n.wallets.RunDaily(ctx, dailyCheckMargin) })
	}
}

// dailyCheckMargin is how long after a UTC midnight the daily wallet
// check starts: the day's last bookings are in the store and their
// tombstones written by then.
const dailyCheckMargin = 10 * time.Minute

// listen serves the API on Config.HTTP, and the operations routes on
// Config.AdminHTTP when set, with servers newServer makes per plane.
func (n *Node) listen(newServer func(ingress.Plane) *ingress.Server) error {
	var err error
	if n.cfg.AdminHTTP == "" {
		n.server = newServer(ingress.PlaneAll)
	} else {
		n.server, n.opsServer = newServer(ingress.PlaneAPI), newServer(ingress.PlaneOps)
		if n.opsListener, err = net.Listen("tcp", n.cfg.AdminHTTP); err != nil {
			return fmt.Errorf("node: admin http: %w", err)
		}
		go func() { n.served <- n.opsServer.Serve(n.opsListener) }()
	}
	if n.listener, err = net.Listen("tcp", n.cfg.HTTP); err != nil {
		return fmt.Errorf("node: http: %w", err)
	}
	go func() { n.served <- n.server.Serve(n.listener) }()
	return nil
}

// audit runs the reconciliation (GET /admin/v1/audit) and returns its JSON
// report.
func (n *Node) audit(ctx context.Context) ([]byte, error) {
	r, err := n.audits.run(ctx, func(ctx context.Context) (*reconcile.Report, error) { return reconcile.Run(ctx, n.tikv) })
	if err != nil {
		return nil, err
	}
	if n.consistency != nil {
		r.Consistency = n.consistency.StatusJSON()
	}
	return r.JSON(), nil
}
