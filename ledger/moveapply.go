package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrMoveInvalid is returned for a move that is malformed whatever the
// account holds (unknown kind, wrong legs or counter, a key too long): the
// caller's input error. Nothing is changed.
var ErrMoveInvalid = errors.New("ledger: invalid move")

// Bounds of a move's strings: its entries' limit keys and the journal must
// stay within stringLenMax.
const (
	MoveKeyLenMax     = 200
	MoveCounterLenMax = 200
	MoveRefLenMax     = 200
	// moveLegsMax: no kind has more than two legs.
	moveLegsMax = 2
)

// RefundWindowMs is how long after its booking a consumption is held back
// from archival (while the account holds fewer than entriesHeldMax recent
// entries), so that it can still be refunded or reversed exactly: a
// refund or reversal must find its consumption among the recent entries.
const RefundWindowMs = 30 * msPerDay

// entriesHeldMax bounds the recent entries an account keeps while
// consumptions hold archival back: past it, the oldest chunk is archived
// anyway (its consumptions can no longer be refunded). It is 1.5 times
// what grants alone keep at most, because a checkpoint page holds up to
// 1,024 accounts' recent entries in one value of the store (a raft entry
// of at most 8 MB): 8 times, tried first, made a page of 1,024 heavy
// spenders ~13 MB, which the store refused (BenchmarkOwnerMoves).
const entriesHeldMax = 3 * ChunkEntries

// moveKeyPrefix starts every move entry's limit key; a grant's starts with
// its act_id's digits.
const moveKeyPrefix = "move:"

// MoveEntryKey is the limit key of leg i's entry of the move keyed key:
// "move:{i}:{key}" (the leg first, so no key can collide with another
// key's leg).
func MoveEntryKey(key string, leg int) string {
	return moveKeyPrefix + strconv.Itoa(leg) + ":" + key
}

// IsMoveEntryKey reports whether limitKey names a move's entry.
func IsMoveEntryKey(limitKey string) bool { return strings.HasPrefix(limitKey, moveKeyPrefix) }

// MoveDigest hashes everything of m but its account (FNV-1a, 64 bits): a
// second move under a booked key is a repeat when its digest is the
// booked one's.
func MoveDigest(m *Move) uint64 {
	h := uint64(14695981039346656037)
	var buf [binary.MaxVarintLen64]byte
	add := func(b []byte) {
		for _, c := range b {
			h ^= uint64(c)
			h *= 1099511628211
		}
	}
	str := func(s string) {
		add(binary.AppendUvarint(buf[:0], uint64(len(s))))
		add([]byte(s))
	}
	add([]byte{byte(m.Kind)})
	str(m.Key)
	add(binary.AppendUvarint(buf[:0], uint64(m.AppID)))
	add(binary.AppendUvarint(buf[:0], uint64(len(m.Legs))))
	for _, l := range m.Legs {
		str(string(l.Asset))
		add(binary.AppendVarint(buf[:0], l.Amount))
	}
	str(m.Counter)
	str(m.Ref)
	return h
}

// moveMark is what an account keeps in memory of an archived move: its
// first entry's key hash mixed with its digest.
func moveMark(key0Hash, digest uint64) uint64 {
	h := key0Hash
	for i := 0; i < 8; i++ {
		h ^= digest >> (8 * i) & 0xff
		h *= 1099511628211
	}
	return h
}

// IsMoney reports whether the asset counts money (fen).
func (a Asset) IsMoney() bool { return a.Kind() == KindMoney }

// Validate checks what m must be whatever the account holds (see the kinds
// in move.go): a known kind, a key, each leg non-zero in a valid asset and
// each asset once, the legs and counter account the kind names, a
// reference where the kind undoes or refers to something, and a move
// without counter balancing on its legs. The error wraps ErrMoveInvalid.
func (m *Move) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s %q: %s", ErrMoveInvalid, m.Kind, m.Key, fmt.Sprintf(format, args...))
	}
	if m.Kind.String() == "" {
		return fmt.Errorf("%w: kind %d", ErrMoveInvalid, m.Kind)
	}
	switch {
	case m.Key == "" || len(m.Key) > MoveKeyLenMax:
		return bad("key of %d bytes (1 to %d)", len(m.Key), MoveKeyLenMax)
	case len(m.Counter) > MoveCounterLenMax:
		return bad("counter of %d bytes (at most %d)", len(m.Counter), MoveCounterLenMax)
	case len(m.Ref) > MoveRefLenMax:
		return bad("ref of %d bytes (at most %d)", len(m.Ref), MoveRefLenMax)
	case len(m.Legs) == 0 || len(m.Legs) > moveLegsMax:
		return bad("%d legs", len(m.Legs))
	}
	for i, l := range m.Legs {
		if l.Amount == 0 {
			return bad("leg %d is zero", i)
		}
		if l.Asset.Kind() == "" {
			return bad("unknown asset %q", l.Asset)
		}
		for _, o := range m.Legs[:i] {
			if o.Asset == l.Asset {
				return bad("asset %s twice", l.Asset)
			}
		}
	}
	one := func(sign int64) error {
		if len(m.Legs) != 1 {
			return bad("%d legs, want one", len(m.Legs))
		}
		if m.Legs[0].Amount*sign < 0 || m.Legs[0].Amount == minInt64 {
			return bad("leg %s %d has the wrong sign", m.Legs[0].Asset, m.Legs[0].Amount)
		}
		return nil
	}
	counter := func(prefixes ...string) error {
		for _, p := range prefixes {
			if strings.HasPrefix(m.Counter, p) && len(m.Counter) > len(p) {
				return nil
			}
		}
		return bad("counter %q, want %s...", m.Counter, strings.Join(prefixes, "... or "))
	}
	legs := func(want ...Leg) error {
		// want's amounts are signs.
		if len(m.Legs) != len(want) {
			return bad("%d legs, want %d", len(m.Legs), len(want))
		}
		for i, w := range want {
			if l := m.Legs[i]; l.Asset != w.Asset || l.Amount*w.Amount < 0 || l.Amount == minInt64 {
				return bad("leg %d is %s %d, want %s of sign %d", i, l.Asset, l.Amount, w.Asset, w.Amount)
			}
		}
		return nil
	}
	needRef := func() error {
		if m.Ref == "" {
			return bad("no ref")
		}
		return nil
	}
	var err error
	switch m.Kind {
	case MoveRecharge:
		if err = one(1); err == nil && m.Legs[0].Asset.Kind() != KindCoin {
			err = bad("recharge of %s, not a coin", m.Legs[0].Asset)
		}
		if err == nil {
			err = counter("recharge/")
		}
	case MoveConsume:
		if err = one(-1); err == nil {
			err = counter("merchant/")
		}
	case MoveRefund, MoveReverse:
		if err = one(1); err == nil {
			err = counter("merchant/")
		}
		if err == nil {
			err = needRef()
		}
	case MoveTransferOut, MoveGiftOut:
		if err = one(-1); err == nil {
			err = counter("transfer/")
		}
	case MoveTransferIn, MoveGiftIn:
		if err = one(1); err == nil {
			err = counter("transfer/")
		}
	case MoveExpire:
		if err = one(-1); err == nil {
			err = counter("budget/", "expired/")
		}
	case MoveWithdrawHold:
		err = legs(Leg{AssetCash, -1}, Leg{AssetTransit, 1})
	case MoveWithdrawSettle:
		if err = legs(Leg{AssetTransit, -1}); err == nil {
			err = counter("payout/")
		}
	case MoveWithdrawReverse:
		err = legs(Leg{AssetTransit, -1}, Leg{AssetCash, 1})
	case MoveWithdrawDebt:
		// The caller names what was paid out (cash -n); the account
		// decides how much its cash gives back and how much becomes debt.
		// The journal holds the split it booked (cash -a, cash:debt +r,
		// either alone when the other is zero), which replays the same.
		switch {
		case len(m.Legs) == 2:
			err = legs(Leg{AssetCash, -1}, Leg{AssetDebt, 1})
		case m.Legs[0].Asset == AssetDebt:
			err = legs(Leg{AssetDebt, 1})
		default:
			err = legs(Leg{AssetCash, -1})
		}
		if err == nil {
			if _, e := debtPayout(m.Legs); e != nil {
				err = bad("%v", e)
			}
		}
		if err == nil {
			err = counter("payout/")
		}
	}
	if err != nil {
		return err
	}
	if m.Counter == "" {
		if err := CheckMove(m); err != nil {
			return bad("%v", err)
		}
	} else if m.Kind == MoveWithdrawHold || m.Kind == MoveWithdrawReverse {
		return bad("a counter account %q on a move that balances on its legs", m.Counter)
	}
	return nil
}

const minInt64 = -1 << 63

// debtPayout is the payout a withdrawal debt's legs name: n of cash -n,
// or a + r of a booked split (cash -a, cash:debt +r).
func debtPayout(legs []Leg) (int64, error) {
	var n int64
	for _, l := range legs {
		var err error
		if n, err = Add(n, max(l.Amount, -l.Amount)); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// payoutForm is a withdrawal debt as its caller names it (cash -n), the
// form its digest is of whether it comes as asked or as booked.
func payoutForm(m *Move) *Move {
	if m.Kind != MoveWithdrawDebt || len(m.Legs) == 1 && m.Legs[0].Asset == AssetCash {
		return m
	}
	n, _ := debtPayout(m.Legs) // Validate checked it
	c := *m
	c.Legs = []Leg{{Asset: AssetCash, Amount: -n}}
	return &c
}

// moveState is what an account knows of a move key.
type moveState uint8

const (
	moveNew moveState = iota
	moveSame
	moveOther
)

// moveBooked reports whether m's key is booked in the account, and with
// the same content (digest) or another. The archived keys must be loaded.
func (a *Account) moveBooked(m *Move, digest uint64) (moveState, error) {
	key0 := MoveEntryKey(m.Key, 0)
	if i := a.entryIndex(key0); i >= 0 {
		if a.Entries[i].Move != nil && a.Entries[i].Move.Digest == digest {
			return moveSame, nil
		}
		return moveOther, nil
	}
	if !a.ArchivedKeysLoaded() {
		return 0, fmt.Errorf("%w: act %d: the keys of its %d archived entries are not loaded", ErrInvariant, a.ActID, a.Archived)
	}
	h := LimitKeyHash(key0)
	if !a.archivedKeys().has(h) {
		return moveNew, nil
	}
	// A 64-bit collision of two distinct moves' marks would answer a
	// repeat: nothing changes, never booked twice.
	if a.archivedMoves().has(moveMark(h, digest)) {
		return moveSame, nil
	}
	return moveOther, nil
}

// consumption is what a refund or reversal finds of the consumption it
// undoes among the recent entries.
type consumption struct {
	entry    *Entry
	refunded int64 // by refunds so far
	reversed bool
}

// findConsumption looks up the consumption keyed ref among the recent
// entries, with what refunds and a reversal took of it.
func (a *Account) findConsumption(ref string) (consumption, bool) {
	i := a.entryIndex(MoveEntryKey(ref, 0))
	if i < 0 || a.Entries[i].MoveKind() != MoveConsume {
		return consumption{}, false
	}
	c := consumption{entry: &a.Entries[i]}
	// Refunds come after their consumption, so they are recent too.
	for k := i + 1; k < len(a.Entries); k++ {
		e := &a.Entries[k]
		if e.Move == nil || e.Move.Ref != ref {
			continue
		}
		switch e.Move.Kind {
		case MoveRefund:
			c.refunded += e.Amount // bounded by the consumption: no overflow
		case MoveReverse:
			c.reversed = true
		}
	}
	return c, true
}

// ApplyMove books m into the account unless it changes nothing, and says
// what it made of it, with the legs it booked (MoveWithdrawDebt's are the
// account's split of the payout; every other kind's are m's). Rules:
//
//   - m must Validate (else an error wrapping ErrMoveInvalid).
//   - Exactly once per (account, key): a move whose key is booked is
//     MoveRepeated when it is the same move (MoveDigest), else
//     MoveKeyReused; archived moves included.
//   - No balance goes below zero: MoveInsufficient, nothing changed.
//   - A refund names its consumption (Ref: the consume move's key), which
//     must be among the recent entries, in the same asset and with the same
//     counter, not reversed; the refunds of it, this one included, add up
//     to at most what it consumed. A reversal returns exactly what it
//     consumed, once, and only when nothing of it was refunded. Otherwise
//     MoveRefused. Consumptions are held back from archival for
//     RefundWindowMs (see archive).
//   - An expiry past validity (Ref "before:YYYY-MM", ExpireRef) takes at
//     most what of its asset was credited before that cutoff month and is
//     unspent (Expirable), and its cutoff is not after the month it is
//     booked in; otherwise MoveRefused.
//   - MoveWithdrawDebt of n takes min(n, cash) from cash and books the rest
//     as cash:debt (a positive balance: what the user owes). It may also
//     come as the split it booked (cash -a, cash:debt +r: a journal's
//     op), which must be the split the account makes now (else
//     MoveRefused); its key's digest is of the payout either way.
//
// Entries are booked at "at" (or the previous entry's time if later), one
// per leg; a negative leg is its month's expense. It does not bump
// Version. An error or a result other than MoveApplied leaves the account
// unchanged.
func (a *Account) ApplyMove(m *Move, at int64) (MoveResult, []Leg, error) {
	if m.ActID != a.ActID {
		return 0, nil, fmt.Errorf("%w: move for act %d applied to act %d", ErrInvariant, m.ActID, a.ActID)
	}
	if err := m.Validate(); err != nil {
		return 0, nil, err
	}
	if a.monthsPending() {
		return 0, nil, fmt.Errorf("%w: act %d: its monthly summaries are not loaded", ErrInvariant, a.ActID)
	}
	asked := m
	m = payoutForm(m)
	digest := MoveDigest(m)
	switch st, err := a.moveBooked(m, digest); {
	case err != nil:
		return 0, nil, err
	case st == moveSame:
		return MoveRepeated, nil, nil
	case st == moveOther:
		return MoveKeyReused, nil, nil
	}
	legs := m.Legs
	switch m.Kind {
	case MoveExpire:
		if a.expiryRefused(m, at) {
			return MoveRefused, nil, nil
		}
	case MoveRefund, MoveReverse:
		c, ok := a.findConsumption(m.Ref)
		if !ok || c.reversed || c.entry.Asset != m.Legs[0].Asset || c.entry.Move.Counter != m.Counter {
			return MoveRefused, nil, nil
		}
		consumed := -c.entry.Amount
		n := m.Legs[0].Amount
		if m.Kind == MoveRefund && n > consumed-c.refunded || m.Kind == MoveReverse && (c.refunded != 0 || n != consumed) {
			return MoveRefused, nil, nil
		}
	case MoveWithdrawDebt:
		n := -m.Legs[0].Amount
		take := min(n, a.Balance(AssetCash))
		legs = make([]Leg, 0, 2)
		if take > 0 {
			legs = append(legs, Leg{AssetCash, -take})
		}
		if n-take > 0 {
			legs = append(legs, Leg{AssetDebt, n - take})
		}
		// A booked split (a journal replayed) must be the one made now.
		if asked != m && !slices.Equal(asked.Legs, legs) {
			return MoveRefused, nil, nil
		}
	}
	if n := len(a.Entries); n > 0 && a.Entries[n-1].BookedAt > at {
		at = a.Entries[n-1].BookedAt
	}
	month := MonthOf(at)
	for _, l := range legs {
		sum, err := Add(a.Balance(l.Asset), l.Amount)
		if err != nil {
			return 0, nil, err
		}
		if sum < 0 {
			return MoveInsufficient, nil, nil
		}
		if err := monthAddable(a.Months, l.Asset, month, max(l.Amount, 0), max(-l.Amount, 0)); err != nil {
			return 0, nil, err
		}
	}
	// Every check passed: nothing below fails (the assets differ, so the
	// sums checked above are the ones made).
	me := &MoveEntry{Kind: m.Kind, AppID: m.AppID, Counter: m.Counter, Ref: m.Ref, Digest: digest}
	for i, l := range legs {
		if err := a.credit(l.Asset, l.Amount); err != nil {
			return 0, nil, fmt.Errorf("%w: act %d: a checked move failed: %v", ErrInvariant, a.ActID, err)
		}
		a.Months = addMonth(a.Months, l.Asset, month, max(l.Amount, 0), max(-l.Amount, 0))
		key := MoveEntryKey(m.Key, i)
		a.Entries = append(a.Entries, Entry{
			LimitKey: key, AwardType: m.Kind.String(), Asset: l.Asset, Amount: l.Amount, BookedAt: at, Move: me,
		})
		if idx := a.byLimit(); idx != nil {
			idx[key] = len(a.Entries) - 1
		}
	}
	if err := a.archive(); err != nil {
		return 0, nil, err
	}
	return MoveApplied, legs, nil
}

// checkMoveEntry checks a move's entry as records hold it.
func checkMoveEntry(e *Entry) bool {
	return e.Move.Kind.String() != "" && e.Amount != 0 && IsMoveEntryKey(e.LimitKey) && e.OutTradeNo == "" && e.LeaseID == 0
}

// checkEntry checks one entry of a record: a grant's is positive under a
// grant's limit key, one its trade number can derive from unless it holds
// one (Entry.TradeNo); a move's as checkMoveEntry.
func checkEntry(e *Entry) bool {
	if e.Move != nil {
		return checkMoveEntry(e)
	}
	return e.Amount > 0 && !IsMoveEntryKey(e.LimitKey) && (e.OutTradeNo != "" || strings.IndexByte(e.LimitKey, '_') >= 0)
}

// isMoveLeg0 reports whether e is the first entry of a move (the one its
// key is found by).
func isMoveLeg0(e *Entry) bool {
	return e.Move != nil && strings.HasPrefix(e.LimitKey, moveKeyPrefix+"0:")
}

// CheckMove checks that m's double entry balances: its postings
// (MovePostings) per asset when it has a counter account, or, for a move
// without one (a withdrawal's hold or reversal), its legs in money summed
// across the user's money sub-accounts, which count fen alike (per asset
// they cannot balance: cash and cash:transit are two assets).
func CheckMove(m *Move) error {
	if m.Counter != "" {
		return MovePostings(nil, m).Check()
	}
	var sum int64
	for _, l := range m.Legs {
		if l.Asset.Kind() != KindMoney {
			return fmt.Errorf("%w: %s leg of %s in a move without a counter account", ErrUnbalanced, l.Asset, m.Kind)
		}
		var err error
		if sum, err = Add(sum, l.Amount); err != nil {
			return err
		}
	}
	if sum != 0 {
		return fmt.Errorf("%w: %s legs sum to %d fen", ErrUnbalanced, m.Kind, sum)
	}
	return nil
}
