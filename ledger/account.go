package ledger

import (
	"fmt"
	"slices"
)

// Entry is one posting on a user's account: a booked grant credits it.
type Entry struct {
	LimitKey   string // Invariant: unique within an account (exactly once per limit key)
	OutTradeNo string
	AwardType  string
	Asset      Asset
	Amount     int64
	BookedAt   int64 // unix ms
	// LeaseID is the lease that paid. Zero means booked by redeem before its
	// stream event arrived; the event then attributes it (see Attribute).
	// Invariant: once booking has drained, no entry has LeaseID 0.
	LeaseID uint64
}

// Balance is an account's balance in one asset.
type Balance struct {
	Asset  Asset
	Amount int64
}

// Account is a user's book: everything booking needs to post grants exactly
// once, kept as one TiKV value so that booking writes one key per user.
type Account struct {
	ActID   uint64
	Version uint64 // Invariant: grows by one with every committed change
	// Balances are sorted by asset.
	// Invariant: each equals the sum of the entries in its asset.
	Balances []Balance
	Entries  []Entry
	// Apps are the app identities bound to this account, sorted by app id
	// then user id. The account is where a binding made by a grant becomes
	// durable (one key per new user instead of two); Redis's binding index
	// is rebuilt from it.
	Apps    []AppUser
	byLimit map[string]int // index of Entries by LimitKey, built lazily
}

// AppUser is one app's identity of a user.
type AppUser struct {
	AppID  uint32
	UserID string
}

func cmpAppUser(a, b AppUser) int {
	if a.AppID != b.AppID {
		if a.AppID < b.AppID {
			return -1
		}
		return 1
	}
	return cmpString(a.UserID, b.UserID)
}

// Bind records an app identity of the user and reports whether it is new.
func (a *Account) Bind(u AppUser) bool {
	i, found := slices.BinarySearchFunc(a.Apps, u, cmpAppUser)
	if found {
		return false
	}
	a.Apps = slices.Insert(a.Apps, i, u)
	return true
}

// Entry returns the entry booked under limitKey, if any.
func (a *Account) Entry(limitKey string) (Entry, bool) {
	if a.byLimit == nil {
		a.byLimit = make(map[string]int, len(a.Entries))
		for i := range a.Entries {
			a.byLimit[a.Entries[i].LimitKey] = i
		}
	}
	i, ok := a.byLimit[limitKey]
	if !ok {
		return Entry{}, false
	}
	return a.Entries[i], true
}

// Balance returns the balance in asset.
func (a *Account) Balance(asset Asset) int64 {
	i, ok := slices.BinarySearchFunc(a.Balances, asset, func(b Balance, t Asset) int {
		return cmpString(string(b.Asset), string(t))
	})
	if !ok {
		return 0
	}
	return a.Balances[i].Amount
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (a *Account) credit(asset Asset, amount int64) error {
	i, ok := slices.BinarySearchFunc(a.Balances, asset, func(b Balance, t Asset) int {
		return cmpString(string(b.Asset), string(t))
	})
	if !ok {
		a.Balances = slices.Insert(a.Balances, i, Balance{Asset: asset})
	}
	sum, err := Add(a.Balances[i].Amount, amount)
	if err != nil {
		return err
	}
	a.Balances[i].Amount = sum
	return nil
}

// Book posts g to the account unless its limit key is already booked, and
// reports whether it did. It does not bump Version: one commit may book many
// grants. An error leaves the account unchanged.
func (a *Account) Book(g *Grant, now int64) (bool, error) {
	if g.ActID != a.ActID {
		return false, fmt.Errorf("%w: grant for act %d booked to act %d", ErrInvariant, g.ActID, a.ActID)
	}
	if err := g.Asset.CheckGrant(g.Amount); err != nil {
		return false, err
	}
	key := g.LimitKey()
	if _, dup := a.Entry(key); dup {
		return false, nil
	}
	if _, err := Add(a.Balance(g.Asset), g.Amount); err != nil {
		return false, err
	}
	if err := a.credit(g.Asset, g.Amount); err != nil {
		return false, err
	}
	a.Entries = append(a.Entries, Entry{
		LimitKey: key, OutTradeNo: outTradeNo(g), AwardType: g.AwardType,
		Asset: g.Asset, Amount: g.Amount, BookedAt: now, LeaseID: g.LeaseID,
	})
	a.byLimit[key] = len(a.Entries) - 1
	return true, nil
}

// Attribute records that the grant's stream event paid, from g.LeaseID, for
// an entry that redeem booked before the event arrived (LeaseID 0). It
// reports whether it changed the entry; the caller moves the amount from
// lease 0 to g.LeaseID in the budget's hot detail.
func (a *Account) Attribute(g *Grant) bool {
	key := g.LimitKey()
	if _, ok := a.Entry(key); !ok {
		return false
	}
	i := a.byLimit[key]
	// Only the same packet can be attributed: a different amount or asset
	// is left alone, and reconcile reports the lease whose issued and booked
	// then disagree.
	if e := a.Entries[i]; e.LeaseID != 0 || g.LeaseID == 0 || e.Amount != g.Amount || e.Asset != g.Asset {
		return false
	}
	a.Entries[i].LeaseID = g.LeaseID
	return true
}

// Check verifies that every balance equals the sum of its entries, that
// every entry (a booked grant) is positive and that limit keys are unique
// (invariants 2 and 5).
func (a *Account) Check() error {
	sums := make(map[Asset]int64, len(a.Balances))
	seen := make(map[string]struct{}, len(a.Entries))
	for _, e := range a.Entries {
		if _, dup := seen[e.LimitKey]; dup {
			return fmt.Errorf("%w: act %d: limit key %s booked twice", ErrInvariant, a.ActID, e.LimitKey)
		}
		seen[e.LimitKey] = struct{}{}
		if e.Amount <= 0 {
			return fmt.Errorf("%w: act %d: entry %s amount %d", ErrInvariant, a.ActID, e.LimitKey, e.Amount)
		}
		s, err := Add(sums[e.Asset], e.Amount)
		if err != nil {
			return err
		}
		sums[e.Asset] = s
	}
	for i, b := range a.Balances {
		if i > 0 && a.Balances[i-1].Asset >= b.Asset {
			return fmt.Errorf("%w: act %d: balances not sorted", ErrInvariant, a.ActID)
		}
		if sums[b.Asset] != b.Amount {
			return fmt.Errorf("%w: act %d: %s balance %d != sum of postings %d", ErrInvariant, a.ActID, b.Asset, b.Amount, sums[b.Asset])
		}
		delete(sums, b.Asset)
	}
	for asset, s := range sums {
		if s != 0 {
			return fmt.Errorf("%w: act %d: postings in %s sum to %d with no balance", ErrInvariant, a.ActID, asset, s)
		}
	}
	for i := 1; i < len(a.Apps); i++ {
		if cmpAppUser(a.Apps[i-1], a.Apps[i]) >= 0 {
			return fmt.Errorf("%w: act %d: app identities not sorted and unique", ErrInvariant, a.ActID)
		}
	}
	return nil
}

// Clone returns a deep copy, so that a prepared change can be dropped.
func (a *Account) Clone() *Account {
	c := &Account{ActID: a.ActID, Version: a.Version,
		Balances: slices.Clone(a.Balances), Entries: slices.Clone(a.Entries), Apps: slices.Clone(a.Apps)}
	return c
}

const accountVersion = 1

// MarshalAccount appends the encoding of a.
func MarshalAccount(dst []byte, a *Account) []byte {
	dst = append(dst, accountVersion)
	dst = appendUvarint(dst, a.ActID)
	dst = appendUvarint(dst, a.Version)
	dst = appendUvarint(dst, uint64(len(a.Balances)))
	for _, b := range a.Balances {
		dst = appendString(dst, string(b.Asset))
		dst = appendVarint(dst, b.Amount)
	}
	dst = appendUvarint(dst, uint64(len(a.Entries)))
	for _, e := range a.Entries {
		dst = appendString(dst, e.LimitKey)
		dst = appendString(dst, e.OutTradeNo)
		dst = appendString(dst, e.AwardType)
		dst = appendString(dst, string(e.Asset))
		dst = appendVarint(dst, e.Amount)
		dst = appendVarint(dst, e.BookedAt)
		dst = appendUvarint(dst, e.LeaseID)
	}
	dst = appendUvarint(dst, uint64(len(a.Apps)))
	for _, u := range a.Apps {
		dst = appendUvarint(dst, uint64(u.AppID))
		dst = appendString(dst, u.UserID)
	}
	return dst
}

// UnmarshalAccount decodes an account and checks its invariants.
func UnmarshalAccount(src []byte) (*Account, error) {
	d := decoder{b: src}
	if v := d.byte1("version"); d.err == nil && v != accountVersion {
		return nil, fmt.Errorf("%w: account version %d", ErrCorrupt, v)
	}
	a := &Account{ActID: d.uvarint("act_id"), Version: d.uvarint("version")}
	nb := d.count("balances")
	for i := 0; i < nb && d.err == nil; i++ {
		a.Balances = append(a.Balances, Balance{Asset: Asset(d.string("asset")), Amount: d.varint("balance")})
	}
	ne := d.count("entries")
	for i := 0; i < ne && d.err == nil; i++ {
		a.Entries = append(a.Entries, Entry{
			LimitKey: d.string("limit_key"), OutTradeNo: d.string("out_trade_no"),
			AwardType: d.string("award_type"), Asset: Asset(d.string("asset")),
			Amount: d.varint("amount"), BookedAt: d.varint("booked_at"), LeaseID: d.uvarint("lease_id"),
		})
	}
	na := d.count("apps")
	for i := 0; i < na && d.err == nil; i++ {
		app := d.uvarint("app_id")
		if app > 1<<32-1 {
			d.fail("app_id range")
		}
		a.Apps = append(a.Apps, AppUser{AppID: uint32(app), UserID: d.string("user_id")})
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := a.Check(); err != nil {
		return nil, err
	}
	return a, nil
}
