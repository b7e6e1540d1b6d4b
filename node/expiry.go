package node

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/booking"
	"redrain/campaign"
	"redrain/errcode"
	"redrain/expiry"
	"redrain/holders"
	"redrain/ledger"
	"redrain/storage"
)

// pathExpiryRun is the operators' trigger of the expiry sweep.
const pathExpiryRun = "/admin/v1/expiry/run"

// expiryTimeout bounds one sweep the route runs.
const expiryTimeout = 10 * time.Minute

// ExpiryReport is what a sweep did, and how many users the holders set
// could not list (act_ids beyond holders.MaxAct: not swept).
type ExpiryReport struct {
	expiry.Report
	Unindexed uint64 `json:"unindexed"`
}

// errNoHolders: the sweep's candidates are the holders set of the node's
// wallets.
var errNoHolders = errcode.Errorf(errcode.CodeUnavailable, "expiry: this node keeps no ready holders set (a node of --role write, or wallets still building): run the sweep on a node that serves wallets")

// expiryEveryDefault is how often sweepExpiryMonthly looks for owned
// partitions not swept this month.
const expiryEveryDefault = time.Hour

// SweepExpiry books the expiry of every coin and item past its validity
// (the campaign file's "validity") held by a user of the holders set,
// through the node's Booker: the moves go to each partition's owner in
// batches. Run again, it books nothing twice.
func (n *Node) SweepExpiry(ctx context.Context) (ExpiryReport, error) {
	return n.sweepExpiry(ctx, nil)
}

// sweepExpiryMonthly sweeps, every period, the partitions this node owns that it
// has not swept in the current month (once per month boundary per
// partition and process; a partition that changes owner is swept again
// by the new one, which books nothing twice).
func (n *Node) sweepExpiryMonthly(ctx context.Context, period time.Duration) {
	if len(n.Campaign.Config.Validity) == 0 {
		return
	}
	swept := map[int32]ledger.Month{}
	sweep := func() {
		month := ledger.MonthOf(n.clock().UnixMilli())
		todo := map[int32]bool{}
		for _, p := range n.booker.Claims() {
			if m, ok := swept[p]; !ok || m != month {
				todo[p] = true
			}
		}
		if len(todo) == 0 {
			return
		}
		r, err := n.sweepExpiry(ctx, func(act uint64) bool { return todo[storage.PartitionOf(act, n.cfg.Partitions)] })
		if err != nil {
			// No holders yet (wallets still building): the next period.
			if ctx.Err() == nil && !errors.Is(err, errNoHolders) {
				n.log.Warn("expiry: sweep failed (retried)", "err", err)
			}
			return
		}
		for p := range todo {
			swept[p] = month
		}
		if r.Applied > 0 || r.Refused > 0 {
			n.log.Info("expiry: swept", "month", r.Month, "partitions", len(todo), "accounts", r.Accounts, "applied", r.Applied, "refused", r.Refused)
		}
	}
	sweep()
	every(ctx, period, sweep)
}

// sweepExpiry is SweepExpiry over the candidates keep accepts (nil: all).
func (n *Node) sweepExpiry(ctx context.Context, keep func(act uint64) bool) (ExpiryReport, error) {
	rules := n.Campaign.Config.ValidityRules()
	var out ExpiryReport
	if n.wallets == nil {
		return out, errNoHolders
	}
	set := n.wallets.Holders()
	view := set.Snapshot()
	if !view.Ready() {
		return out, errNoHolders
	}
	s := &expiry.Sweeper{Booker: n.booker, Rules: rules, Sources: campaign.ItemSources(n.activitySpecs()), MoveBatch: booking.MovesMax}
	var err error
	ids := expiryCandidates(view, rules)
	if keep != nil {
		all := ids
		ids = func(yield func(uint64) bool) {
			for act := range all {
				if keep(act) && !yield(act) {
					return
				}
			}
		}
	}
	out.Report, err = s.Sweep(ctx, ids, n.clock().UnixMilli())
	out.Unindexed = set.Stats().Beyond
	return out, err
}

// expiryCandidates are the holders of the families that have an asset
// with a validity: coins, then items (a user holding both listed once).
func expiryCandidates(v holders.View, rules map[ledger.Asset]int) iter.Seq[uint64] {
	var coins, items bool
	for asset := range rules {
		coins = coins || asset.Kind() == ledger.KindCoin
		items = items || asset.Kind() == ledger.KindItem
	}
	return func(yield func(uint64) bool) {
		if coins {
			for act := range v.Holders(holders.Coin) {
				if !yield(act) {
					return
				}
			}
		}
		if items {
			for act := range v.Holders(holders.Item) {
				if coins && v.Contains(act, holders.Coin) == holders.Yes {
					continue // listed with the coins
				}
				if !yield(act) {
					return
				}
			}
		}
	}
}

// activitySpecs are every version of every activity the node serves.
func (n *Node) activitySpecs() []*campaign.Activity {
	cat := n.grants.Catalog()
	var acts []*campaign.Activity
	for _, id := range cat.IDs() {
		for _, v := range cat.Activity(id).Versions() {
			acts = append(acts, v.Spec)
		}
	}
	return acts
}

// serveExpiry answers POST /admin/v1/expiry/run: one sweep now, its
// report.
func (n *Node) serveExpiry(ctx *fasthttp.RequestCtx) bool {
	if string(ctx.Path()) != pathExpiryRun {
		return false
	}
	if !ctx.IsPost() {
		errcode.MethodNotAllowed(ctx, "POST")
		return true
	}
	if ctx.QueryArgs().Len() > 0 || len(ctx.PostBody()) > 0 {
		errcode.Write(ctx, errcode.Errorf(errcode.CodeMalformed, "expiry: the sweep takes no parameters and no body"))
		return true
	}
	c, cancel := context.WithTimeout(context.Background(), expiryTimeout)
	defer cancel()
	r, err := n.SweepExpiry(c)
	if err != nil {
		if e := (*errcode.Error)(nil); !errors.As(err, &e) {
			err = errcode.Errorf(errcode.CodeUnavailable, "%v (what was booked stays booked; run it again)", err)
		}
		errcode.Write(ctx, err)
		return true
	}
	body, err := json.Marshal(r)
	if err != nil {
		errcode.Write(ctx, err)
		return true
	}
	errcode.WriteJSON(ctx, fasthttp.StatusOK, body)
	return true
}
