package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/actors"
	"redrain/admin"
	"redrain/adminauth"
	"redrain/campaign"
	"redrain/configstore"
	"redrain/errcode"
	"redrain/ingress"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/presentation"
	"redrain/protect"
	"redrain/storage"
	"redrain/tokens"
)

// configPollEvery is how often a node asks the configuration store whether
// anything changed (one TiKV read of the change counter): a publish reaches
// every node within this plus the time to compile it.
const configPollEvery = 200 * time.Millisecond

// startConfig seeds the file's activities into the configuration store,
// loads what is published and starts watching it. With the store down it
// serves the last good copy from the data dir.
func (n *Node) startConfig(ctx context.Context) error {
	n.config = configstore.New(n.tikv, nil)
	n.guard = protect.NewGuard(n.Metrics)
	n.Presentation = &presentation.Presentation{}
	n.admin = &admin.API{Store: n.config, Resolve: n.binder.Resolve,
		Budgets:       &budgetAdmin{tikv: n.tikv, redis: n.pipe, openIssued: n.openIssued},
		CheckSwitches: func(b []byte) error { _, err := protect.ParseSwitches(b); return err },
		Log:           n.log}
	if err := n.startAuth(); err != nil {
		return err
	}
	if err := n.seed(ctx); err != nil {
		// The store may be down: the cached copy still serves.
		n.log.Warn("config: seeding activities failed", "err", err)
	}
	pickup := n.Metrics.Histogram("redrain_config_pickup_seconds", "Time from a configuration change (publish, rollback, switches) to this node serving it.", metrics.LatencyBounds)
	n.watcher = &configstore.Watcher{Source: n.config, Every: configPollEvery,
		CacheFile: filepath.Join(n.cfg.DataDir, "config-cache.json"), Apply: n.applyConfig, Log: n.log,
		OnPickup: func(d time.Duration) { pickup.ObserveNs(d.Nanoseconds()) }}
	if err := n.watcher.Start(ctx); err != nil {
		return fmt.Errorf("node: configuration: %w", err)
	}
	n.Metrics.GaugeFunc("redrain_config_seq", "The configuration store change counter this node serves.", func() int64 {
		return int64(n.watcher.Status().Seq)
	})
	n.Metrics.GaugeFunc("redrain_config_stale", "1 while the node cannot read or refuses the store's newest configuration (store down, or a snapshot that does not compile here) and serves its last good one.", func() int64 {
		if n.watcher.Status().LastError != "" {
			return 1
		}
		return 0
	})
	n.Metrics.GaugeFunc("redrain_presentation_live_version", "The wallet presentation's version this node serves to everyone (0: none published).", func() int64 {
		live, _ := n.Presentation.Served()
		return int64(live)
	})
	n.Metrics.GaugeFunc("redrain_presentation_canary_version", "The wallet presentation's version this node serves to its canary's users (0: no canary).", func() int64 {
		_, canary := n.Presentation.Served()
		return int64(canary)
	})
	n.Metrics.GaugeFunc("redrain_config_from_cache", "1 when the node serves its cached configuration because the store is unreachable.", func() int64 {
		if n.watcher.Status().Source == "cache" {
			return 1
		}
		return 0
	})
	return nil
}

// startAuth reads the admin and app keys into the verifiers of signed
// requests.
func (n *Node) startAuth() error {
	keys := n.Campaign.Config.AdminKeys
	if len(keys) == 0 {
		// Only on embedded defaults: checkKeys refused this elsewhere.
		keys = []string{adminauth.DevKey}
	}
	ring, err := adminauth.ParseKeys(keys)
	if err != nil {
		return fmt.Errorf("node: admin_keys: %w", err)
	}
	n.verifier = &adminauth.Verifier{Keys: ring, Nonces: &adminauth.RedisNonces{Client: n.redis.Client}}
	if len(n.Campaign.Config.AppKeys) > 0 {
		apps, err := adminauth.ParseAppKeys(n.Campaign.Config.AppKeys)
		if err != nil {
			return fmt.Errorf("node: app_keys: %w", err)
		}
		n.apps = &adminauth.Verifier{Keys: apps, Window: adminauth.AppWindowDefault,
			Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}
	} else {
		// Only on embedded defaults: checkKeys refused this elsewhere.
		n.log.Warn("no app_keys: /v1 accepts unsigned requests and any client may act for any app (embedded demo only)")
	}
	return nil
}

// seed stores and publishes each file activity the store does not have.
// Nodes starting together may both seed an activity; the store then holds
// two identical versions, and the later publish wins.
func (n *Node) seed(ctx context.Context) error {
	for _, spec := range n.Campaign.Seeds {
		_, err := n.config.Head(ctx, spec.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, configstore.ErrNotFound) {
			return err
		}
		body, err := n.admin.Prepare(ctx, spec)
		if err != nil {
			return err
		}
		v, err := n.config.Put(ctx, spec.ID, body, "seed", "from the node's campaign file")
		if err != nil {
			return err
		}
		if _, _, err := n.admin.Publish(ctx, spec.ID, v, nil, false, "seed"); err != nil {
			return err
		}
		n.log.Info("config: seeded activity", "activity", spec.ID, "version", v)
	}
	return nil
}

// applyConfig compiles a snapshot and swaps it in. An error keeps the
// previous catalog: a version that does not compile here is never served.
func (n *Node) applyConfig(snap *configstore.Snapshot) error {
	cat := campaign.NewCatalog(snap.Seq)
	for _, as := range snap.Activities {
		var live, canary *campaign.Version
		var err error
		if as.Live != nil {
			if live, err = admin.Compile(as.Live); err != nil {
				return err
			}
		}
		var users []uint64
		if as.Canary != nil {
			if canary, err = admin.Compile(as.Canary); err != nil {
				return err
			}
			users = as.Head.Canary.ActIDs
		}
		if live != nil || canary != nil {
			cat.Add(live, canary, users)
		}
	}
	sw, readSide, err := n.readSideOf(snap)
	if err != nil {
		return err
	}
	if err := n.guard.Set(sw); err != nil {
		return err
	}
	n.grants.SetCatalog(cat)
	readSide()
	return nil
}

// readSideOf parses what a snapshot gives the wallet's read side (the
// presentation, the business lines' switches) and returns the snapshot's
// switches and the step that serves them; nothing changes on an error.
func (n *Node) readSideOf(snap *configstore.Snapshot) (*protect.Switches, func(), error) {
	sw := &protect.Switches{}
	if snap.Switches != nil {
		var err error
		if sw, err = protect.ParseSwitches(snap.Switches); err != nil {
			return nil, nil, err
		}
	}
	live, canary, users, err := presentationOf(snap)
	if err != nil {
		return nil, nil, err
	}
	return sw, func() {
		n.Presentation.Set(live, canary, users)
		if n.lines != nil {
			n.lines.SetOff(sw.LinesOff)
		}
	}, nil
}

// presentationOf compiles the wallet's presentation a snapshot serves:
// its live version, its canary's and the canary's act_ids (nil when none).
func presentationOf(snap *configstore.Snapshot) (live, canary *presentation.Version, users []uint64, err error) {
	doc := snap.Document(presentation.DocumentID)
	if doc == nil {
		return nil, nil, nil, nil
	}
	if doc.Live != nil {
		if live, err = presentation.Compile(doc.Live.Body, doc.Live.Version); err != nil {
			return nil, nil, nil, err
		}
	}
	if doc.Canary != nil {
		if canary, err = presentation.Compile(doc.Canary.Body, doc.Canary.Version); err != nil {
			return nil, nil, nil, err
		}
		users = doc.Head.Canary.ActIDs
	}
	return live, canary, users, nil
}

// storedAwardMax is the largest amount that any version of activity in
// the configuration store offers for award in stage (false: none offers
// it). Redeem asks it only for tokens whose award no served version offers
// (after a rollback); it reads and compiles every version, so it is not for
// a hot path.
func (n *Node) storedAwardMax(ctx context.Context, activity string, stage tokens.Stage, award string) (int64, bool, error) {
	infos, err := n.config.Versions(ctx, activity)
	if errors.Is(err, configstore.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var m int64
	found := false
	for _, info := range infos {
		v, err := n.config.Version(ctx, activity, info.Version)
		if err != nil {
			return 0, false, err
		}
		cv, err := admin.Compile(v)
		if err != nil {
			continue // never served here; it offers nothing
		}
		if ch := cv.Child(stage); ch != nil {
			if w := ch.Award(award); w != nil {
				m, found = max(m, w.MaxAmount()), true
			}
		}
	}
	return m, found, nil
}

// authenticate checks an admin request's signature.
func (n *Node) authenticate(ctx *fasthttp.RequestCtx) (string, error) {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := n.verifier.Verify(c, ctx.Method(), ctx.Request.URI().PathOriginal(), ctx.URI().QueryString(),
		func(name string) []byte { return ctx.Request.Header.Peek(name) }, ctx.PostBody())
	if e := ingress.AuthFailure(err); e != nil {
		return "", e
	}
	return id, nil
}

// budgetAdmin is admin.Budgets over the budget records.
type budgetAdmin struct {
	tikv       *storage.TiKV
	redis      *storage.Pipeliner
	openIssued func() map[string]map[uint64]actors.LeaseIssued
}

func (b *budgetAdmin) Ensure(ctx context.Context, id string, asset ledger.Asset, total int64) error {
	bud := &ledger.Budget{ID: id, Asset: asset, Total: total}
	// Nodes publishing together race to create it; the loser reads it.
	for attempt := 0; ; attempt++ {
		_, err := actors.EnsureBudget(ctx, b.tikv, bud)
		if err == nil || !errors.Is(err, storage.ErrConflict) || attempt == 10 {
			return err
		}
	}
}

func (b *budgetAdmin) SetTotal(ctx context.Context, id string, asset ledger.Asset, total int64) (int64, error) {
	return actors.SetBudgetTotal(ctx, b.tikv, id, asset, total)
}

func (b *budgetAdmin) View(ctx context.Context, id string) (any, error) {
	v, err := actors.ReadBudgetView(ctx, b.tikv, b.redis, id, b.openIssued()[id])
	if errors.Is(err, actors.ErrNoBudget) {
		return nil, errcode.Errorf(errcode.CodeNotFound, "no budget %q", id)
	}
	return v, err
}

func (b *budgetAdmin) List(ctx context.Context, prefix string) (any, error) {
	views, err := actors.ReadBudgetViews(ctx, b.tikv, b.redis, prefix, b.openIssued())
	if err != nil {
		return nil, err
	}
	return map[string]any{"budgets": views}, nil
}
