package ledger

import (
	"encoding/binary"
	"fmt"
	"slices"

	"redrain/tokens"
)

// Entry is one posting on a user's account: a booked grant credits it.
type Entry struct {
	LimitKey string // Invariant: unique within an account (exactly once per limit key)
	// OutTradeNo is empty for a grant's entry whose trade number derives
	// from its limit key and award type, as every booked grant's does
	// (TradeNo derives it): booking computes none and a ledger page stores
	// none. Set only for one that does not derive (none is booked so).
	// Invariant: decoders leave it empty wherever it derives, so that one
	// entry has one form.
	OutTradeNo string
	AwardType  string
	Asset      Asset
	Amount     int64
	BookedAt   int64 // unix ms
	// LeaseID is the lease that paid. Zero means booked by redeem before its
	// stream event arrived; the event then attributes it (see Attribute).
	// Invariant: once booking has drained, no grant entry has LeaseID 0
	// (a move's entries have none).
	LeaseID uint64
	// Move is nil for a booked grant. A move's entries (one per leg, in
	// the move's leg order) share what the move is; their LimitKey is
	// MoveEntryKey(move key, leg), AwardType the kind's name, OutTradeNo
	// empty, Amount signed (never zero). A pointer, so that a grant's
	// entry, copied with every account a booking changes, grows by 8
	// bytes, not 48.
	Move *MoveEntry
}

// MoveEntry is what a move's entries hold of the move: its kind, app,
// counter account and reference, and the digest of the whole move
// (MoveDigest). Never changed once booked (entries share it).
type MoveEntry struct {
	Kind    MoveKind
	AppID   uint32
	Counter string
	Ref     string
	Digest  uint64
}

// TradeNo returns e's out_trade_no: a grant's, derived from its limit key
// and award type unless OutTradeNo holds it; "" for a move's entry.
func (e *Entry) TradeNo() string {
	if e.OutTradeNo != "" || e.Move != nil {
		return e.OutTradeNo
	}
	otn, _ := tokens.OutTradeNoOfLimit(e.LimitKey, e.AwardType)
	return otn
}

// canonTradeNo empties the out_trade_no of a grant's entry whose trade
// number derives (Entry.OutTradeNo's invariant): what the decoders of
// forms that carry it whole (account records, chunks, pages before
// version 4) do to each entry.
func (e *Entry) canonTradeNo() {
	if e.tradeNoDerives() {
		e.OutTradeNo = ""
	}
}

// tradeNoDerives reports whether e is a grant's entry that holds its
// trade number whole where it derives.
func (e *Entry) tradeNoDerives() bool {
	if e.OutTradeNo == "" || e.Move != nil {
		return false
	}
	otn, ok := tokens.OutTradeNoOfLimit(e.LimitKey, e.AwardType)
	return ok && otn == e.OutTradeNo
}

// MoveKind is the kind of the move that booked e, 0 for a grant's entry.
func (e *Entry) MoveKind() MoveKind {
	if e.Move == nil {
		return 0
	}
	return e.Move.Kind
}

// Balance is an account's balance in one asset.
type Balance struct {
	Asset  Asset
	Amount int64
}

// A user's entries are kept in booking order: the newest in the account
// itself (Entries), older ones in immutable history chunks of ChunkEntries
// each (chunk i holds entries [i*ChunkEntries, (i+1)*ChunkEntries)), written
// once by the booking that filled them. The account record keeps of its
// archived entries only their count and sum per asset, so it stops
// growing, and booking a user with thousands of entries copies, checks and
// encodes about what a new user's takes. Booking (the only writer that
// must know every limit key) loads the hashes of the archived limit keys
// from the chunks when it loads such an account (SetArchivedKeys).
const (
	ChunkEntries = 32
	// entriesKept is how many recent entries trigger archival of the
	// oldest ChunkEntries.
	entriesKept = 2 * ChunkEntries
)

// Account is a user's book: everything booking needs to post grants exactly
// once.
type Account struct {
	ActID   uint64
	Version uint64 // Invariant: grows by one with every committed change
	// Balances are sorted by asset.
	// Invariant: each equals the sum of the entries in its asset, archived
	// ones included.
	Balances []Balance
	// Entries are the recent entries, oldest first.
	Entries []Entry
	// Archived counts the entries in history chunks (a multiple of
	// ChunkEntries); ArchivedSums are their sums per asset, sorted by
	// asset.
	Archived     uint64
	ArchivedSums []Balance
	// Months are the account's monthly summaries (income and expense per
	// asset and month of booking time, archived entries included), sorted
	// by asset then month; Book keeps them.
	// Invariant: per asset, the sum over months of Income - Expense is the
	// balance (unless monthsPending).
	Months []MonthSum
	// Apps are the app identities bound to this account, sorted by app id
	// then user id. The account is where a binding made by a grant becomes
	// durable (one key per new user instead of two); Redis's binding index
	// is rebuilt from it.
	Apps []AppUser
	// rare is what only some accounts hold (nil: none of it).
	rare *accountRare
}

// accountRare is what an account holds only once it has archived entries,
// many recent ones or a record that predates monthly summaries: behind one
// pointer, nil for the many users with a packet or two, so that an
// account is 152 bytes instead of 232, its first allocation with its first
// balance, entry, month and identity 336 instead of 416 (a node holds every
// account of its partitions' hot pages; BENCHMARKS.md, *An account's rare
// fields behind a pointer*).
type accountRare struct {
	// monthsPending: decoded from a record that predates Months while it
	// has archived entries; SetArchivedKeys fills them from the chunks.
	monthsPending bool
	// archivedKeys are the LimitKeyHash of the archived entries, in memory
	// only (not in the record), once loaded; never changed in place
	// (copies of an account share them).
	archivedKeys keyRuns
	// archivedMoves are the moveMark of the archived moves (their first
	// entries), loaded with archivedKeys, likewise shared by copies.
	archivedMoves keyRuns
	byLimit       map[string]int // index of Entries by LimitKey, built lazily
	// sealed is the chunk the last Book archived, until TakeSealed.
	sealed []Entry
}

// more returns the account's rare fields, allocating them on first use.
func (a *Account) more() *accountRare {
	if a.rare == nil {
		a.rare = &accountRare{}
	}
	return a.rare
}

// tidy drops the rare fields when none is set, so that an account that
// no longer holds any compares equal to one decoded afresh.
func (a *Account) tidy() {
	if r := a.rare; r != nil && !r.monthsPending && r.archivedKeys == nil && r.archivedMoves == nil && r.byLimit == nil && r.sealed == nil {
		a.rare = nil
	}
}

// monthsPending reports whether the monthly summaries are not loaded yet.
func (a *Account) monthsPending() bool { return a.rare != nil && a.rare.monthsPending }

// setMonthsPending records whether the monthly summaries are loaded.
func (a *Account) setMonthsPending(pending bool) {
	if pending || a.rare != nil {
		a.more().monthsPending = pending
		a.tidy()
	}
}

// archivedKeys are the rare fields' archivedKeys (nil: none).
func (a *Account) archivedKeys() keyRuns {
	if a.rare == nil {
		return nil
	}
	return a.rare.archivedKeys
}

// archivedMoves are the rare fields' archivedMoves (nil: none).
func (a *Account) archivedMoves() keyRuns {
	if a.rare == nil {
		return nil
	}
	return a.rare.archivedMoves
}

// byLimit is the index of Entries by LimitKey, nil until built.
func (a *Account) byLimit() map[string]int {
	if a.rare == nil {
		return nil
	}
	return a.rare.byLimit
}

// accountSlab is a new account with room for its first balance, entry,
// monthly summary and app identity: one object for the collector to mark
// where there were five. A node keeps every account of the partitions it
// owns in memory, most of them a user with one packet, and marking them
// was the collector's largest share of a node's CPU under load.
type accountSlab struct {
	a   Account
	bal [1]Balance
	ent [1]Entry
	mon [1]MonthSum
	app [1]AppUser
}

// NewAccount returns the empty account of act, its first balance, entry,
// monthly summary and app identity in its own allocation (a second one
// of each grows the slice as usual).
func NewAccount(act uint64) *Account {
	return (&accountSlab{}).init(act)
}

func (s *accountSlab) init(act uint64) *Account {
	s.a = Account{ActID: act, Balances: s.bal[:0], Entries: s.ent[:0], Months: s.mon[:0], Apps: s.app[:0]}
	return &s.a
}

// AccountChunk hands out new accounts as NewAccount does, carved from
// allocations of AccountChunkSize accounts: one allocation per chunk
// instead of one per account (a burst of new users allocated an account
// per grant). An account keeps its whole chunk alive, so a chunk suits
// accounts that live and die together (booking's accounts of one page).
// The zero value is ready; not safe for concurrent use.
type AccountChunk struct {
	slabs []accountSlab
}

// AccountChunkSize is how many accounts one allocation of a chunk holds.
const AccountChunkSize = 32

// New returns the empty account of act, as NewAccount does.
func (c *AccountChunk) New(act uint64) *Account {
	if len(c.slabs) == 0 {
		c.slabs = make([]accountSlab, AccountChunkSize)
	}
	s := &c.slabs[0]
	c.slabs = c.slabs[1:]
	return s.init(act)
}

// LimitKeyHash is the hash of a limit key that an account keeps for each
// archived entry (FNV-1a, 64 bits: stable across processes and versions).
func LimitKeyHash(limitKey string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(limitKey); i++ {
		h ^= uint64(limitKey[i])
		h *= 1099511628211
	}
	return h
}

// Booked reports whether an entry under limitKey is recent or archived (the
// archived keys must be loaded). A match in the archived hashes is taken as
// booked: two limit keys of one user whose 64-bit hashes collide (about
// n²/2⁶⁵ for n entries) would refuse the second packet, never pay it twice.
func (a *Account) Booked(limitKey string) (bool, error) {
	if _, ok := a.Entry(limitKey); ok {
		return true, nil
	}
	if !a.ArchivedKeysLoaded() {
		return false, fmt.Errorf("%w: act %d: the keys of its %d archived entries are not loaded", ErrInvariant, a.ActID, a.Archived)
	}
	return a.archivedHas(limitKey), nil
}

func (a *Account) archivedHas(limitKey string) bool {
	return a.archivedKeys().has(LimitKeyHash(limitKey))
}

// ArchivedKeysLoaded reports whether the account knows every archived
// limit key (none archived, or SetArchivedKeys done).
func (a *Account) ArchivedKeysLoaded() bool { return uint64(a.archivedKeys().len()) == a.Archived }

// keyRuns is a set of hashes as sorted runs of decreasing length, each at
// least twice the next (a binary counter of merges): adding a chunk's keys
// merges only runs no longer than the new one, so archiving costs
// O(log n) amortized per key and a lookup O(log² n), and a copy of an
// account shares every run (runs are never changed once built).
type keyRuns [][]uint64

func (r keyRuns) has(k uint64) bool {
	for _, run := range r {
		if _, found := slices.BinarySearch(run, k); found {
			return true
		}
	}
	return false
}

func (r keyRuns) len() int {
	n := 0
	for _, run := range r {
		n += len(run)
	}
	return n
}

// with returns the set with keys added (keys is sorted and owned by it).
func (r keyRuns) with(keys []uint64) keyRuns {
	out := slices.Clone(r)
	for len(out) > 0 && len(out[len(out)-1]) <= 2*len(keys) {
		last := out[len(out)-1]
		merged := make([]uint64, 0, len(last)+len(keys))
		i, j := 0, 0
		for i < len(last) && j < len(keys) {
			if last[i] <= keys[j] {
				merged = append(merged, last[i])
				i++
			} else {
				merged = append(merged, keys[j])
				j++
			}
		}
		merged = append(append(merged, last[i:]...), keys[j:]...)
		keys, out = merged, out[:len(out)-1]
	}
	return append(out, keys)
}

// SetArchivedKeys loads the limit keys of the archived entries, read from
// the account's history chunks, and checks they are the ones it counts. An
// account decoded from a record that predates monthly summaries gets them
// here, exactly, from its archived and recent entries.
func (a *Account) SetArchivedKeys(archived []Entry) error {
	if uint64(len(archived)) != a.Archived {
		return fmt.Errorf("%w: act %d: history holds %d entries, the account counts %d", ErrInvariant, a.ActID, len(archived), a.Archived)
	}
	if a.monthsPending() {
		months, err := foldMonths(nil, archived)
		if err == nil {
			months, err = foldMonths(months, a.Entries)
		}
		if err != nil {
			return err
		}
		a.Months = months
		a.setMonthsPending(false)
		if err := a.checkMonths(); err != nil {
			a.Months = nil
			a.setMonthsPending(true)
			return err
		}
	}
	keys := make([]uint64, len(archived))
	var marks []uint64
	for i := range archived {
		keys[i] = LimitKeyHash(archived[i].LimitKey)
		if isMoveLeg0(&archived[i]) {
			marks = append(marks, moveMark(keys[i], archived[i].Move.Digest))
		}
	}
	slices.Sort(keys)
	slices.Sort(marks)
	var runs, moves keyRuns
	if len(keys) > 0 {
		runs = keyRuns{keys}
	}
	if len(marks) > 0 {
		moves = keyRuns{marks}
	}
	for _, e := range a.Entries {
		if runs.has(LimitKeyHash(e.LimitKey)) {
			return fmt.Errorf("%w: act %d: limit key %s booked twice", ErrInvariant, a.ActID, e.LimitKey)
		}
	}
	if runs != nil || moves != nil || a.rare != nil {
		r := a.more()
		r.archivedKeys, r.archivedMoves = runs, moves
		a.tidy()
	}
	return nil
}

// archive moves the oldest ChunkEntries recent entries into a sealed chunk
// once entriesKept are recent, unless one of them still awaits attribution
// (a grant's lease 0: the chunk is immutable, the entry would change) or,
// while fewer than entriesHeldMax are recent, is a consumption booked
// less than RefundWindowMs before the newest entry (refunds and reversals
// find it among the recent entries). It is deterministic (booking times
// are the entries'), so replaying the same bookings archives the same
// chunks.
func (a *Account) archive() error {
	if len(a.Entries) < entriesKept {
		return nil
	}
	newest := a.Entries[len(a.Entries)-1].BookedAt
	held := len(a.Entries) < entriesHeldMax
	for _, e := range a.Entries[:ChunkEntries] {
		if e.Move == nil && e.LeaseID == 0 || held && e.MoveKind() == MoveConsume && newest-e.BookedAt < RefundWindowMs {
			return nil
		}
	}
	chunk := slices.Clone(a.Entries[:ChunkEntries])
	sums := slices.Clone(a.ArchivedSums)
	keys := make([]uint64, 0, ChunkEntries)
	var marks []uint64
	for i := range chunk {
		e := &chunk[i]
		var err error
		if sums, err = addBalance(sums, e.Asset, e.Amount); err != nil {
			return err
		}
		h := LimitKeyHash(e.LimitKey)
		keys = append(keys, h)
		if isMoveLeg0(e) {
			marks = append(marks, moveMark(h, e.Move.Digest))
		}
	}
	slices.Sort(keys)
	r := a.more()
	if len(marks) > 0 {
		slices.Sort(marks)
		r.archivedMoves = r.archivedMoves.with(marks)
	}
	a.Entries = slices.Clone(a.Entries[ChunkEntries:])
	a.ArchivedSums, r.archivedKeys = sums, r.archivedKeys.with(keys)
	a.Archived += ChunkEntries
	r.byLimit = nil
	r.sealed = chunk
	return nil
}

// TakeSealed returns the chunk the last Book archived, if any, with its
// number, and forgets it: booking writes it once, with the booking.
func (a *Account) TakeSealed() (n uint64, entries []Entry, ok bool) {
	if a.rare == nil || a.rare.sealed == nil {
		return 0, nil, false
	}
	entries, a.rare.sealed = a.rare.sealed, nil
	a.tidy()
	return a.Archived/ChunkEntries - 1, entries, true
}

// addBalance adds amount to asset's balance in a sorted list.
func addBalance(list []Balance, asset Asset, amount int64) ([]Balance, error) {
	i, ok := slices.BinarySearchFunc(list, asset, func(b Balance, t Asset) int {
		return cmpString(string(b.Asset), string(t))
	})
	if !ok {
		list = slices.Insert(list, i, Balance{Asset: asset})
	}
	sum, err := Add(list[i].Amount, amount)
	if err != nil {
		return nil, err
	}
	list[i].Amount = sum
	return list, nil
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

// entriesScanned is how many recent entries Entry searches one by one
// before it builds an index: every account holds fewer once archival runs,
// and a copy then costs no map.
const entriesScanned = 2 * entriesKept

// Entry returns the recent entry booked under limitKey, if any.
func (a *Account) Entry(limitKey string) (Entry, bool) {
	i := a.entryIndex(limitKey)
	if i < 0 {
		return Entry{}, false
	}
	return a.Entries[i], true
}

// entryIndex is the index in Entries of limitKey's entry, or -1.
func (a *Account) entryIndex(limitKey string) int {
	if len(a.Entries) <= entriesScanned {
		for i := range a.Entries {
			if a.Entries[i].LimitKey == limitKey {
				return i
			}
		}
		return -1
	}
	r := a.more()
	if r.byLimit == nil {
		r.byLimit = make(map[string]int, len(a.Entries))
		for i := range a.Entries {
			r.byLimit[a.Entries[i].LimitKey] = i
		}
	}
	if i, ok := r.byLimit[limitKey]; ok {
		return i
	}
	return -1
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
// grants. An error leaves the account unchanged. The entry is booked at now,
// or at the previous entry's time if that is later (a redeem written by a
// node whose clock runs ahead): an account's booking times never decrease
// in booking order, which a ledger page's months rely on (ReadDetail). The
// previous entry is always a recent one: archival leaves ChunkEntries.
func (a *Account) Book(g *Grant, now int64) (bool, error) {
	if g.ActID != a.ActID {
		return false, fmt.Errorf("%w: grant for act %d booked to act %d", ErrInvariant, g.ActID, a.ActID)
	}
	if err := g.Asset.CheckGrant(g.Amount); err != nil {
		return false, err
	}
	if a.monthsPending() {
		return false, fmt.Errorf("%w: act %d: its monthly summaries are not loaded", ErrInvariant, a.ActID)
	}
	// The entry's strings first (one allocation): its limit key is the
	// one to look up.
	key, award := entryStrings(g)
	if dup, err := a.Booked(key); dup || err != nil {
		return false, err
	}
	if _, err := Add(a.Balance(g.Asset), g.Amount); err != nil {
		return false, err
	}
	if n := len(a.Entries); n > 0 && a.Entries[n-1].BookedAt > now {
		now = a.Entries[n-1].BookedAt
	}
	month := MonthOf(now)
	if err := monthAddable(a.Months, g.Asset, month, g.Amount, 0); err != nil {
		return false, err
	}
	if err := a.credit(g.Asset, g.Amount); err != nil {
		return false, err
	}
	a.Months = addMonth(a.Months, g.Asset, month, g.Amount, 0)
	a.Entries = append(a.Entries, Entry{
		LimitKey: key, AwardType: award,
		Asset: g.Asset, Amount: g.Amount, BookedAt: now, LeaseID: g.LeaseID,
	})
	if idx := a.byLimit(); idx != nil {
		idx[key] = len(a.Entries) - 1
	}
	return true, a.archive()
}

// Attribute records that the grant's stream event paid, from g.LeaseID, for
// an entry that redeem booked before the event arrived (LeaseID 0). It
// reports whether it changed the entry; the caller moves the amount from
// lease 0 to g.LeaseID in the budget's hot detail.
func (a *Account) Attribute(g *Grant) bool {
	i := a.entryIndex(g.LimitKey())
	if i < 0 {
		return false
	}
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
// every entry (a booked grant) is positive, that limit keys are unique
// (invariants 2 and 5) and that the monthly summaries add up to the
// balances.
func (a *Account) Check() error {
	sums := make(map[Asset]int64, len(a.Balances))
	if a.Archived%ChunkEntries != 0 {
		return fmt.Errorf("%w: act %d: %d archived entries, not whole chunks", ErrInvariant, a.ActID, a.Archived)
	}
	for i, b := range a.ArchivedSums {
		if i > 0 && a.ArchivedSums[i-1].Asset >= b.Asset {
			return fmt.Errorf("%w: act %d: archived sums not sorted", ErrInvariant, a.ActID)
		}
		sums[b.Asset] = b.Amount
	}
	seen := make(map[string]struct{}, len(a.Entries))
	for _, e := range a.Entries {
		if _, dup := seen[e.LimitKey]; dup || a.archivedHas(e.LimitKey) {
			return fmt.Errorf("%w: act %d: limit key %s booked twice", ErrInvariant, a.ActID, e.LimitKey)
		}
		seen[e.LimitKey] = struct{}{}
		if !checkEntry(&e) {
			return fmt.Errorf("%w: act %d: entry %s (kind %d) amount %d", ErrInvariant, a.ActID, e.LimitKey, e.MoveKind(), e.Amount)
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
	return a.checkMonths()
}

// Clone returns a deep copy, so that a prepared change can be dropped.
func (a *Account) Clone() *Account {
	c := &Account{ActID: a.ActID, Version: a.Version,
		Balances: slices.Clone(a.Balances), Entries: slices.Clone(a.Entries), Apps: slices.Clone(a.Apps),
		Archived: a.Archived, ArchivedSums: slices.Clone(a.ArchivedSums), Months: slices.Clone(a.Months)}
	if r := a.rare; r != nil && (r.monthsPending || r.archivedKeys != nil || r.archivedMoves != nil) {
		c.rare = &accountRare{monthsPending: r.monthsPending, archivedKeys: r.archivedKeys, archivedMoves: r.archivedMoves}
	}
	return c
}

// Account record versions: version 2 appends the archived entries' count
// and sums; a version 1 record has none archived. Version 3 appends the
// monthly summaries of an account with archived entries (appendMonths);
// those of any other account are exactly its entries' (MonthsOf), derived
// on decode, as for every account of an older record with none archived.
// Version 4 follows each entry with a kind byte and a move's entry with
// its fields (appendMoveFields); it is written only for an account with
// move entries (MarshalAccount).
const accountVersion1, accountVersion2, accountVersion3, accountVersion = 1, 2, 3, 4

// MarshalAccount appends the encoding of a: version 3 unless it has a
// move's entry among its recent ones (version 4), so that a node from
// before moves still reads the accounts of grants alone (owner reads over
// remoting during a rolling upgrade), and they take no byte more.
func MarshalAccount(dst []byte, a *Account) []byte {
	if hasMoves(a.Entries) {
		return marshalAccount(dst, a, accountVersion)
	}
	return marshalAccount(dst, a, accountVersion3)
}

// hasMoves reports whether entries hold a move's entry.
func hasMoves(entries []Entry) bool {
	for i := range entries {
		if entries[i].Move != nil {
			return true
		}
	}
	return false
}

// MarshalAccountVersion appends a as an older record version (2 to 4), as
// a node that predates a version wrote it, for tests of compatibility; an
// account with move entries needs version 4.
func MarshalAccountVersion(dst []byte, a *Account, version byte) []byte {
	return marshalAccount(dst, a, version)
}

// marshalAccount appends a as version (2 to 4: the tests write older ones;
// an account with move entries needs 4).
func marshalAccount(dst []byte, a *Account, version byte) []byte {
	dst = append(dst, version)
	dst = appendUvarint(dst, a.ActID)
	dst = appendUvarint(dst, a.Version)
	dst = appendUvarint(dst, uint64(len(a.Balances)))
	for _, b := range a.Balances {
		dst = appendAmount(dst, b.Asset, b.Amount)
	}
	dst = appendUvarint(dst, uint64(len(a.Entries)))
	for i := range a.Entries {
		dst = appendEntry(dst, &a.Entries[i], version >= accountVersion)
	}
	dst = appendApps(dst, a.Apps)
	dst = appendUvarint(dst, a.Archived)
	dst = appendUvarint(dst, uint64(len(a.ArchivedSums)))
	for _, b := range a.ArchivedSums {
		dst = appendAmount(dst, b.Asset, b.Amount)
	}
	if version < accountVersion3 {
		return dst
	}
	return appendMonths(dst, a, nil)
}

// appendMonths appends an account's monthly summaries when it has archived
// entries (nothing otherwise: they are its entries'): their count plus one,
// or 0 while they are not loaded, then each as asset (a reference into
// strs, or the string when strs is nil), month, income and expense.
func appendMonths(dst []byte, a *Account, strs *strTable) []byte {
	if a.Archived == 0 {
		return dst
	}
	if a.monthsPending() {
		return append(dst, 0)
	}
	dst = appendUvarint(dst, uint64(len(a.Months))+1)
	for _, m := range a.Months {
		if strs != nil {
			dst = appendUvarint(dst, strs.refIn(slotAsset, string(m.Asset)))
		} else {
			dst = appendString(dst, string(m.Asset))
		}
		dst = appendVarint(dst, int64(m.Month))
		dst = appendVarint(dst, m.Income)
		dst = appendVarint(dst, m.Expense)
	}
	return dst
}

// months reads what appendMonths wrote (v: the record's version has them)
// or derives them, and checks them against the recent entries.
func (d *decoder) months(a *Account, v bool, strs *strRefs) {
	if d.err != nil {
		return
	}
	if !v || a.Archived == 0 {
		if err := a.deriveMonths(); err != nil {
			d.err = err
		}
		return
	}
	n := d.count("months")
	if n == 0 {
		a.setMonthsPending(true)
		return
	}
	a.Months = make([]MonthSum, 0, n-1)
	for i := 0; i < n-1 && d.err == nil; i++ {
		var m MonthSum
		if strs != nil {
			m.Asset = Asset(d.strRef(strs, "month asset"))
		} else {
			m.Asset = Asset(d.string("month asset"))
		}
		month := d.varint("month")
		if month != int64(Month(month)) {
			d.fail("month")
		}
		m.Month = Month(month)
		m.Income, m.Expense = d.varint("income"), d.varint("expense")
		a.Months = append(a.Months, m)
	}
	if d.err == nil {
		d.err = a.checkMonthsCover()
	}
}

// UnmarshalAccount decodes an account and checks its invariants.
func UnmarshalAccount(src []byte) (*Account, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && (v < accountVersion1 || v > accountVersion) {
		return nil, fmt.Errorf("%w: account version %d", ErrCorrupt, v)
	}
	a := &Account{ActID: d.uvarint("act_id"), Version: d.uvarint("version")}
	nb := d.count("balances")
	for i := 0; i < nb && d.err == nil; i++ {
		a.Balances = append(a.Balances, Balance{Asset: Asset(d.string("asset")), Amount: d.varint("balance")})
	}
	ne := d.count("entries")
	for i := 0; i < ne && d.err == nil; i++ {
		a.Entries = append(a.Entries, d.entry(v >= accountVersion))
	}
	a.Apps = d.apps()
	if v >= accountVersion2 {
		a.Archived = d.uvarint("archived")
		ns := d.count("archived sums")
		for i := 0; i < ns && d.err == nil; i++ {
			a.ArchivedSums = append(a.ArchivedSums, Balance{Asset: Asset(d.string("asset")), Amount: d.varint("archived sum")})
		}
	}
	d.months(a, v >= accountVersion3, nil)
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := a.Check(); err != nil {
		return nil, err
	}
	return a, nil
}

// Chunk versions: 2 follows each entry with a kind byte and a move's
// entry with its fields; written only for a chunk with move entries.
const chunkVersion1, chunkVersion = 1, 2

// AppendChunk appends the encoding of history chunk n of an account:
// version 1 when it holds no move's entry (as before moves), else 2.
func AppendChunk(dst []byte, actID, n uint64, entries []Entry) []byte {
	if hasMoves(entries) {
		return appendChunk(dst, actID, n, entries, chunkVersion)
	}
	return appendChunk(dst, actID, n, entries, chunkVersion1)
}

// appendChunk appends a chunk as version (the tests write version 1).
func appendChunk(dst []byte, actID, n uint64, entries []Entry, version byte) []byte {
	dst = append(dst, version)
	dst = appendUvarint(dst, actID)
	dst = appendUvarint(dst, n)
	dst = appendUvarint(dst, uint64(len(entries)))
	for i := range entries {
		dst = appendEntry(dst, &entries[i], version >= chunkVersion)
	}
	return dst
}

// DecodeChunk decodes what AppendChunk wrote; it must hold ChunkEntries
// positive entries with distinct limit keys.
func DecodeChunk(src []byte) (actID, n uint64, entries []Entry, err error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != chunkVersion && v != chunkVersion1 {
		return 0, 0, nil, fmt.Errorf("%w: chunk version %d", ErrCorrupt, v)
	}
	actID, n = d.uvarint("act_id"), d.uvarint("chunk")
	count := d.count("entries")
	if d.err == nil && count != ChunkEntries {
		d.fail("chunk size")
	}
	for i := 0; i < count && d.err == nil; i++ {
		entries = append(entries, d.entry(v >= chunkVersion))
	}
	if err := d.end(); err != nil {
		return 0, 0, nil, err
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if !checkEntry(&e) || seen[e.LimitKey] {
			return 0, 0, nil, fmt.Errorf("%w: chunk %d of act %d: entry %s", ErrCorrupt, n, actID, e.LimitKey)
		}
		seen[e.LimitKey] = true
	}
	return actID, n, entries, nil
}

func appendApps(dst []byte, apps []AppUser) []byte {
	dst = appendUvarint(dst, uint64(len(apps)))
	for _, u := range apps {
		dst = appendUvarint(dst, uint64(u.AppID))
		dst = appendString(dst, u.UserID)
	}
	return dst
}

func (d *decoder) apps() []AppUser {
	n := d.count("apps")
	var apps []AppUser
	for i := 0; i < n && d.err == nil; i++ {
		apps = append(apps, AppUser{AppID: d.appID(), UserID: d.string("user_id")})
	}
	return apps
}

// appendAmount appends an asset's amount: a balance, a sum, a move's leg.
func appendAmount(dst []byte, asset Asset, amount int64) []byte {
	return appendVarint(appendString(dst, string(asset)), amount)
}

// appendEntry appends e; moves: the record's version has move fields.
func appendEntry(dst []byte, e *Entry, moves bool) []byte {
	dst = appendString(dst, e.LimitKey)
	dst = appendString(dst, e.TradeNo())
	dst = appendString(dst, e.AwardType)
	dst = appendString(dst, string(e.Asset))
	dst = appendVarint(dst, e.Amount)
	dst = appendVarint(dst, e.BookedAt)
	dst = appendUvarint(dst, e.LeaseID)
	if !moves {
		return dst
	}
	if e.Move == nil {
		return append(dst, 0)
	}
	return appendMoveFields(append(dst, byte(e.Move.Kind)), e.Move)
}

// appendMoveFields appends a move entry's app, counter, reference and
// digest.
func appendMoveFields(dst []byte, e *MoveEntry) []byte {
	dst = appendUvarint(dst, uint64(e.AppID))
	dst = appendString(dst, e.Counter)
	dst = appendString(dst, e.Ref)
	return binary.LittleEndian.AppendUint64(dst, e.Digest)
}

func (d *decoder) entry(moves bool) Entry {
	e := Entry{
		LimitKey: d.string("limit_key"), OutTradeNo: d.string("out_trade_no"),
		AwardType: d.string("award_type"), Asset: Asset(d.string("asset")),
		Amount: d.varint("amount"), BookedAt: d.varint("booked_at"), LeaseID: d.uvarint("lease_id"),
	}
	if moves {
		if k := MoveKind(d.byte1("entry kind")); k != 0 {
			e.Move = d.moveFields(k)
		}
	}
	e.canonTradeNo()
	return e
}

// moveFields reads what appendMoveFields wrote, of a move of kind k.
func (d *decoder) moveFields(k MoveKind) *MoveEntry {
	e := &MoveEntry{Kind: k}
	e.AppID = d.appID()
	e.Counter = d.string("counter")
	e.Ref = d.string("ref")
	if d.err == nil && len(d.b) < 8 {
		d.fail("digest")
	}
	if d.err == nil {
		e.Digest = binary.LittleEndian.Uint64(d.b)
		d.b = d.b[8:]
	}
	return e
}
