package ingress

import (
	"context"
	"errors"
	"fmt"

	"redrain/booking"
	"redrain/campaign"
	"redrain/errcode"
	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// BookNow books grants at once (the booker); redeem uses it so that an
// asynchronous delay is never visible where money leaves.
type BookNow interface {
	Book(ctx context.Context, grants []ledger.Grant) ([]byte, error)
	// Accounts returns committed accounts (absent: none yet), from the
	// owner of their partition or the store.
	Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error)
}

// Tokens answers token status and redeem.
type Tokens struct {
	camp    *campaign.Campaign
	catalog func() *campaign.Catalog
	tikv    *storage.TiKV
	book    BookNow
	// StoredAwardMax bounds the amount of a token whose award no served
	// version offers (after a rollback): the largest amount that any stored
	// version of the activity offers it (false: none does). Nil: such
	// tokens are invalid.
	StoredAwardMax func(ctx context.Context, activity string, stage tokens.Stage, award string) (int64, bool, error)
}

// NewTokens builds the token service. catalog is what the node serves now
// (an award's asset and budget are looked up there); book answers what the
// ledger holds (the partition's owner, or the store).
func NewTokens(camp *campaign.Campaign, catalog func() *campaign.Catalog, tikv *storage.TiKV, book BookNow) *Tokens {
	return &Tokens{camp: camp, catalog: catalog, tikv: tikv, book: book}
}

// tokenState is one presented token on its way to a result.
type tokenState struct {
	claims tokens.Claims
	grant  ledger.Grant
	result TokenResult
}

// Status reports issued, booked or invalid for each token, changing nothing.
// With app not 0 (the app that signed the request), a token sealed for
// another app is invalid.
func (t *Tokens) Status(ctx context.Context, raw [][]byte, app uint32) ([]TokenResult, error) {
	states, err := t.resolve(ctx, raw, app)
	if err != nil {
		return nil, err
	}
	return results(states), nil
}

// Redeem books every valid, not yet booked token now (idempotently) and
// reports each token's status afterwards. Invalid tokens touch nothing;
// with app not 0, neither do tokens sealed for another app.
func (t *Tokens) Redeem(ctx context.Context, raw [][]byte, app uint32) ([]TokenResult, error) {
	states, err := t.resolve(ctx, raw, app)
	if err != nil {
		return nil, err
	}
	var todo []ledger.Grant
	var again [][]byte // tokens booked now, resolved again afterwards
	var where []int
	seen := map[string]bool{}
	for i, s := range states {
		if s.result.Status != "issued" {
			continue
		}
		if !seen[s.claims.OutTradeNo] {
			seen[s.claims.OutTradeNo] = true
			todo = append(todo, s.grant)
		}
		again = append(again, raw[i])
		where = append(where, i)
	}
	if len(todo) == 0 {
		return results(states), nil
	}
	if _, err := t.book.Book(ctx, todo); err != nil {
		return nil, unavailable(err)
	}
	// Report what the store now holds rather than assume: a token whose
	// limit key another packet took meanwhile is reported invalid.
	after, err := t.resolve(ctx, again, app)
	if err != nil {
		return nil, err
	}
	for j, i := range where {
		states[i] = after[j]
	}
	return results(states), nil
}

func results(states []*tokenState) []TokenResult {
	out := make([]TokenResult, len(states))
	for i, s := range states {
		out[i] = s.result
	}
	return out
}

// resolve opens every token and finds its status in the ledger (the
// partition's owner, or the store). A token of an app other than app (not
// 0) is invalid: an app reaches only its own users' packets.
func (t *Tokens) resolve(ctx context.Context, raw [][]byte, app uint32) ([]*tokenState, error) {
	states := make([]*tokenState, len(raw))
	var valid []*tokenState
	for i, r := range raw {
		s := &tokenState{}
		states[i] = s
		c, err := t.camp.Ring.Open(r)
		if err != nil {
			s.result = TokenResult{Status: "invalid", Error: tokenError(err)}
			continue
		}
		if app != 0 && c.AppID != app {
			s.result = TokenResult{Status: "invalid", Error: fmt.Sprintf("the token is app %d's; this request is signed by app %d", c.AppID, app)}
			continue
		}
		s.claims, s.grant = c, t.grantOf(&c)
		s.result = TokenResult{OutTradeNo: c.OutTradeNo, Status: "issued", ActID: c.ActID, AwardType: c.AwardType, Amount: c.Amount}
		valid = append(valid, s)
	}
	// A token of an award no served version offers any more (a rollback,
	// a stage removed) is still good: its budget record says what it books
	// into.
	if err := t.assetsFromBudgets(ctx, valid); err != nil {
		return nil, err
	}
	kept := valid[:0]
	for _, s := range valid {
		if s.grant.Asset == "" {
			s.result = TokenResult{Status: "invalid", Error: "the token's activity or award has no budget"}
			continue
		}
		if msg, err := t.checkAmount(ctx, &s.claims); err != nil {
			return nil, err
		} else if msg != "" {
			s.result = TokenResult{Status: "invalid", Error: msg}
			continue
		}
		kept = append(kept, s)
	}
	return states, t.resolveBooked(ctx, kept)
}

// checkAmount returns why c's amount cannot be booked ("" when it can):
// above the most that any version of its activity offers for its award
// (the served versions, else the stored ones), or not positive. Whoever
// holds a token key can seal any amount; this bounds what a forged token
// books to what a real grant could have drawn.
func (t *Tokens) checkAmount(ctx context.Context, c *tokens.Claims) (string, error) {
	if c.Amount <= 0 {
		return fmt.Sprintf("amount %d is not positive", c.Amount), nil
	}
	m, ok := t.catalog().AwardMax(c.ActivityID, c.Stage, c.AwardType)
	if !ok && t.StoredAwardMax != nil {
		var err error
		if m, ok, err = t.StoredAwardMax(ctx, c.ActivityID, c.Stage, c.AwardType); err != nil {
			return "", unavailable(err)
		}
	}
	switch {
	case !ok:
		return "no version of the activity offers the token's award", nil
	case c.Amount > m:
		return fmt.Sprintf("amount %d is above the award's maximum %d", c.Amount, m), nil
	}
	return "", nil
}

// resolveBooked marks booked the tokens whose packet the ledger holds (or
// invalid, when another packet holds the user's limit for the rain).
func (t *Tokens) resolveBooked(ctx context.Context, check []*tokenState) error {
	if len(check) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(check))
	for _, s := range check {
		ids = append(ids, s.claims.ActID)
	}
	accounts, err := t.book.Accounts(ctx, ids)
	if err != nil {
		return unavailable(err)
	}
	for _, s := range check {
		a := accounts[s.claims.ActID]
		if a == nil {
			continue
		}
		e, ok, err := booking.EntryOf(ctx, t.tikv, a, s.claims.LimitKey())
		if err != nil {
			return unavailable(err)
		}
		if ok {
			if e.TradeNo() == s.claims.OutTradeNo {
				s.result.Status = "booked"
			} else {
				// Authentic, but another packet holds this user's limit for the rain.
				s.result = TokenResult{Status: "invalid", Error: "another packet was booked for this user and rain"}
			}
		}
	}
	return nil
}

// grantOf rebuilds the grant a token stands for, as redeem books it: lease
// 0 (unknown until its stream event arrives) and no app user id. Its Asset
// is empty when no served version offers the award any more. A version 1
// token's grant is Legacy, so it books (and dedupes) under the legacy limit
// key its stream event and the account entry use.
func (t *Tokens) grantOf(c *tokens.Claims) ledger.Grant {
	g := ledger.Grant{
		AppID: c.AppID, ActID: c.ActID, ActivityID: c.ActivityID, SceneID: c.SceneID,
		RainID: c.RainID, Stage: c.Stage, AwardType: c.AwardType,
		Amount: c.Amount, BudgetID: campaign.BudgetID(c.ActivityID, c.Stage, c.AwardType), OpenTime: c.OpenTime,
		Legacy: c.Legacy,
	}
	if w := t.catalog().Award(c.ActivityID, c.Stage, c.AwardType); w != nil {
		g.Asset = w.Asset
	}
	return g
}

// assetsFromBudgets fills in the asset of grants whose award no served
// version offers, from their budget records (one read for all of them).
func (t *Tokens) assetsFromBudgets(ctx context.Context, states []*tokenState) error {
	var keys [][]byte
	for _, s := range states {
		if s.grant.Asset == "" {
			keys = append(keys, storage.BudgetKey(s.grant.BudgetID))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	var budgets map[string][]byte
	err := t.tikv.Update(ctx, func(txn storage.Txn) error {
		var err error
		budgets, err = storage.BatchGet(ctx, txn, keys)
		return err
	})
	if err != nil {
		return unavailable(err)
	}
	for _, s := range states {
		raw := budgets[string(storage.BudgetKey(s.grant.BudgetID))]
		if s.grant.Asset != "" || raw == nil {
			continue
		}
		b, err := ledger.UnmarshalBudget(raw)
		if err != nil {
			return errcode.Errorf(errcode.CodeInternal, "budget %s: %v", s.grant.BudgetID, err)
		}
		s.grant.Asset = b.Asset
	}
	return nil
}

func tokenError(err error) string {
	switch {
	case errors.Is(err, tokens.ErrUnknownKey):
		return "unknown key"
	case errors.Is(err, tokens.ErrForged):
		return "authentication failed"
	default:
		return "malformed token"
	}
}
