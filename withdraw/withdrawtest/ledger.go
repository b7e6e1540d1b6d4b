// Package withdrawtest is a ledger in memory for the withdrawal service's
// tests and for nodes whose booking cannot book moves yet: Outstanding
// (the grant path), Book and Move (booking), each move once per (account,
// key), every batch checked to balance. It must never be wired into a
// node that books real money.
package withdrawtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"redrain/ledger"
)

// Ledger stands in for booking (Book, Move) and the grant path
// (Outstanding): one account map, each move booked once per (account,
// key), every batch checked to balance.
type Ledger struct {
	mu      sync.Mutex
	bal     map[string]map[ledger.Asset]int64
	moves   map[string]ledger.Move // by act_id/key
	booked  map[string]bool        // limit keys
	pending map[uint64][]ledger.Grant
	// credited sums what booked grants credited (the money that entered).
	credited int64
	// down, when set, fails every call (a booking outage).
	down bool
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{bal: map[string]map[ledger.Asset]int64{}, moves: map[string]ledger.Move{},
		booked: map[string]bool{}, pending: map[uint64][]ledger.Grant{}}
}

// ErrDown is every answer of a ledger that is down (SetDown).
var ErrDown = errors.New("withdrawtest: ledger down")

// SetDown makes every call fail (true) or work again.
func (l *Ledger) SetDown(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = down
}

// Credited returns what booked packets credited in all.
func (l *Ledger) Credited() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.credited
}

// Issue adds n outstanding packets of amount fen each to act.
func (l *Ledger) Issue(act uint64, n int, amount int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range n {
		k := len(l.pending[act]) + len(l.booked)
		l.pending[act] = append(l.pending[act], ledger.Grant{AppID: 1, ActID: act, UserID: fmt.Sprint("u", act),
			ActivityID: "a", SceneID: "s", RainID: uint64(k*1000 + i + 1), Asset: ledger.AssetCash, Amount: amount})
	}
}

// Outstanding returns act's packets not booked yet.
func (l *Ledger) Outstanding(_ context.Context, act uint64) ([]ledger.Grant, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, ErrDown
	}
	var out []ledger.Grant
	for _, g := range l.pending[act] {
		if !l.booked[g.LimitKey()] {
			out = append(out, g)
		}
	}
	return out, nil
}

// Book books grants once per limit key, crediting the user from funding.
func (l *Ledger) Book(_ context.Context, grants []ledger.Grant) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, ErrDown
	}
	out := make([]byte, len(grants))
	for i, g := range grants {
		if l.booked[g.LimitKey()] {
			continue
		}
		l.booked[g.LimitKey()] = true
		b := ledger.Batch{{Account: ledger.UserAccount(g.ActID), Asset: g.Asset, Amount: g.Amount},
			{Account: ledger.FundingAccount(g.Asset), Asset: g.Asset, Amount: -g.Amount}}
		if err := b.Check(); err != nil {
			return nil, err
		}
		l.apply(b)
		l.credited += g.Amount
		out[i] = 1
	}
	return out, nil
}

// Move books moves once per (act_id, key): MoveRepeated for the same
// move again, MoveKeyReused for another, MoveInsufficient when a leg would
// take a balance of the user below zero. A withdraw_debt move carries one
// leg, cash -n, and is booked by its kind's rule: cash -min(n, cash),
// cash:debt +rest.
func (l *Ledger) Move(_ context.Context, moves []ledger.Move) ([]ledger.MoveResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, ErrDown
	}
	out := make([]ledger.MoveResult, len(moves))
	for i, m := range moves {
		k := fmt.Sprint(m.ActID, "/", m.Key)
		if prev, ok := l.moves[k]; ok {
			out[i] = ledger.MoveKeyReused
			if fmt.Sprint(prev) == fmt.Sprint(m) {
				out[i] = ledger.MoveRepeated
			}
			continue
		}
		booked := m
		if m.Kind == ledger.MoveWithdrawDebt {
			// The kind's rule at booking time: cash -min(n, cash),
			// cash:debt +rest.
			n := -m.Legs[0].Amount
			take := min(n, l.bal[ledger.UserAccount(m.ActID)][ledger.AssetCash])
			booked.Legs = []ledger.Leg{{Asset: ledger.AssetCash, Amount: -take}}
			if n > take {
				booked.Legs = append(booked.Legs, ledger.Leg{Asset: ledger.AssetDebt, Amount: n - take})
			}
		}
		user := l.bal[ledger.UserAccount(m.ActID)]
		short := false
		for _, leg := range booked.Legs {
			if user[leg.Asset]+leg.Amount < 0 {
				short = true
			}
		}
		if short {
			out[i] = ledger.MoveInsufficient
			continue
		}
		b := ledger.MovePostings(nil, &booked)
		if err := checkMove(&booked, b); err != nil {
			return nil, fmt.Errorf("move %s: %w", k, err)
		}
		l.apply(b)
		l.moves[k] = m
		out[i] = ledger.MoveApplied
	}
	return out, nil
}

// checkMove checks that a move's postings balance: per asset against its
// counter account, or, for a move without one (a hold, a reversal), in
// money across the user's cash sub-accounts. Batch.Check alone refuses
// the latter: cash and cash:transit are two assets.
func checkMove(m *ledger.Move, b ledger.Batch) error {
	if m.Counter != "" {
		return b.Check()
	}
	var sum int64
	for _, p := range b {
		sum += p.Amount
	}
	if sum != 0 {
		return fmt.Errorf("%w: legs sum to %d", ledger.ErrUnbalanced, sum)
	}
	return nil
}

func (l *Ledger) apply(b ledger.Batch) {
	for _, p := range b {
		if l.bal[p.Account] == nil {
			l.bal[p.Account] = map[ledger.Asset]int64{}
		}
		l.bal[p.Account][p.Asset] += p.Amount
	}
}

// Balance returns account's balance of asset.
func (l *Ledger) Balance(account string, asset ledger.Asset) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bal[account][asset]
}

// Take spends n of act's cash outside withdrawals (a consumption).
func (l *Ledger) Take(act uint64, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := ledger.Batch{{Account: ledger.UserAccount(act), Asset: ledger.AssetCash, Amount: -n},
		{Account: "merchant/m", Asset: ledger.AssetCash, Amount: n}}
	if err := b.Check(); err != nil {
		panic(err)
	}
	l.apply(b)
}

// Sums returns, over every user, cash + transit - debt, and over the
// payout accounts the same (a settlement credits them cash:transit, a
// debt cash and the debt's negation).
func (l *Ledger) Sums() (users, payout int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for acct, b := range l.bal {
		switch {
		case len(acct) > 5 && acct[:5] == "user/":
			users += b[ledger.AssetCash] + b[ledger.AssetTransit] - b[ledger.AssetDebt]
		case len(acct) > 7 && acct[:7] == "payout/":
			payout += b[ledger.AssetCash] + b[ledger.AssetTransit] - b[ledger.AssetDebt]
		case acct == "merchant/m":
			users += b[ledger.AssetCash] // what users spent is still theirs in this sum
		}
	}
	return users, payout
}
