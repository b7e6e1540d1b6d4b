// Package spendtest is an in-memory stand-in for booking's moves
// (spend.Booker), for tests of the spending domain and its routes while
// booking cannot book moves: it keeps balances per (act_id, asset) and
// moves per (act_id, key), applies the ledger's rules of moves (a repeat
// changes nothing, another move under a key is refused, no balance below
// zero, refunds at most what is left of their consumption and a reversal
// only of a whole unrefunded one) and books the counter side too, so that
// every asset sums to zero over all accounts. It must never be wired into
// a node that serves money.
package spendtest

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"

	"redrain/ledger"
)

// Booker books moves in memory. The zero value is ready.
type Booker struct {
	mu       sync.Mutex
	balances map[string]map[ledger.Asset]int64 // by account name (user/{id} and counters)
	moves    map[uint64]map[string]ledger.Move
	undone   map[uint64]map[string]int64 // refunded so far, by consumption key; -1 reversed
	apps     map[uint64][]ledger.AppUser
	// Fail, when set, is asked before each move is booked; its error
	// fails the call there (the moves before it stay booked), as a crash
	// or a store time-out would.
	Fail func(m *ledger.Move) error
}

func (b *Booker) init() {
	if b.balances == nil {
		b.balances = map[string]map[ledger.Asset]int64{}
		b.moves = map[uint64]map[string]ledger.Move{}
		b.undone = map[uint64]map[string]int64{}
		b.apps = map[uint64][]ledger.AppUser{}
	}
}

// Join puts an identity of app on actID's record (as a booked grant or a
// bind does).
func (b *Booker) Join(actID uint64, app uint32, user string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.apps[actID] = append(b.apps[actID], ledger.AppUser{AppID: app, UserID: user})
}

// Credit gives actID n of asset from its funding account (as a booked
// grant does).
func (b *Booker) Credit(actID uint64, asset ledger.Asset, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.post(ledger.UserAccount(actID), asset, n)
	b.post(ledger.FundingAccount(asset), asset, -n)
	if b.apps[actID] == nil {
		b.apps[actID] = []ledger.AppUser{}
	}
}

func (b *Booker) post(account string, asset ledger.Asset, n int64) {
	if b.balances[account] == nil {
		b.balances[account] = map[ledger.Asset]int64{}
	}
	b.balances[account][asset] += n
}

// Balance is account's balance in asset (any account name: user/{id},
// merchant/{id}, transfer/...).
func (b *Booker) Balance(account string, asset ledger.Asset) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.balances[account][asset]
}

// Sums returns each asset's sum over every account: zero in every asset
// unless a move was booked unbalanced.
func (b *Booker) Sums() map[ledger.Asset]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[ledger.Asset]int64{}
	for _, bs := range b.balances {
		for a, n := range bs {
			out[a] += n
		}
	}
	return out
}

// Move books each move at most once per (account, key), in order.
func (b *Booker) Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	out := make([]ledger.MoveResult, 0, len(moves))
	for i := range moves {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if b.Fail != nil {
			if err := b.Fail(&moves[i]); err != nil {
				return nil, err
			}
		}
		r, err := b.move(&moves[i])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (b *Booker) move(m *ledger.Move) (ledger.MoveResult, error) {
	if prev, ok := b.moves[m.ActID][m.Key]; ok {
		if reflect.DeepEqual(prev, *m) {
			return ledger.MoveRepeated, nil
		}
		return ledger.MoveKeyReused, nil
	}
	user := ledger.UserAccount(m.ActID)
	for _, l := range m.Legs {
		if b.balances[user][l.Asset]+l.Amount < 0 {
			return ledger.MoveInsufficient, nil
		}
	}
	if m.Kind == ledger.MoveRefund || m.Kind == ledger.MoveReverse {
		c, ok := b.moves[m.ActID][m.Ref]
		if !ok || c.Kind != ledger.MoveConsume || c.Counter != m.Counter || len(c.Legs) != 1 || len(m.Legs) != 1 ||
			c.Legs[0].Asset != m.Legs[0].Asset {
			return ledger.MoveRefused, nil
		}
		consumed, done, n := -c.Legs[0].Amount, b.undone[m.ActID][m.Ref], m.Legs[0].Amount
		switch {
		case done < 0, m.Kind == ledger.MoveRefund && n > consumed-done,
			m.Kind == ledger.MoveReverse && (done != 0 || n != consumed):
			return ledger.MoveRefused, nil
		}
		if b.undone[m.ActID] == nil {
			b.undone[m.ActID] = map[string]int64{}
		}
		if m.Kind == ledger.MoveReverse {
			b.undone[m.ActID][m.Ref] = -1
		} else {
			b.undone[m.ActID][m.Ref] = done + n
		}
	}
	postings := ledger.MovePostings(nil, m)
	if err := postings.Check(); err != nil {
		return 0, fmt.Errorf("spendtest: move %s of %d: %w", m.Key, m.ActID, err)
	}
	for _, p := range postings {
		b.post(p.Account, p.Asset, p.Amount)
	}
	if b.moves[m.ActID] == nil {
		b.moves[m.ActID] = map[string]ledger.Move{}
	}
	c := *m
	c.Legs = slices.Clone(m.Legs)
	b.moves[m.ActID][m.Key] = c
	if b.apps[m.ActID] == nil {
		b.apps[m.ActID] = []ledger.AppUser{}
	}
	return ledger.MoveApplied, nil
}

// Accounts returns the accounts of ids that have a record: an identity
// joined, a credit or a move.
func (b *Booker) Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[uint64]*ledger.Account{}
	for _, id := range ids {
		apps, ok := b.apps[id]
		if !ok {
			continue
		}
		a := &ledger.Account{ActID: id, Apps: slices.Clone(apps)}
		bs := b.balances[ledger.UserAccount(id)]
		for _, asset := range slices.Sorted(maps.Keys(bs)) {
			a.Balances = append(a.Balances, ledger.Balance{Asset: asset, Amount: bs[asset]})
		}
		out[id] = a
	}
	return out, nil
}
