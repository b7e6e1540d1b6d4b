package ledger

// Moves are every change of a user's account after a packet credited it
// (issue 13): spending coins and items, refunds and reversals, transfers
// and gifts between users, expiry, and the steps of a withdrawal. A move
// is booked like a grant: by the owner of the user's partition, into its
// journal (op kind OpMove), exactly once per (account, key), as one
// balanced batch (MovePostings). The types are here; applying, encoding
// and booking them are the ledger's and booking's.

// Money sub-accounts of a user, all of kind money and counted in fen.
// Packets credit AssetCash.
const (
	// AssetGeneral is general reward: spendable, not withdrawable.
	AssetGeneral Asset = "cash:general"
	// AssetTransit is reward withdrawal in transit: what a withdrawal
	// holds from AssetCash until its payout settles (to the payout
	// account) or is reversed (back to AssetCash).
	AssetTransit Asset = "cash:transit"
	// AssetDebt is withdrawal debt: what a user owes after a payout the
	// channel confirmed for a withdrawal booking had already reversed,
	// beyond what the user's cash could give back.
	AssetDebt Asset = "cash:debt"
)

// MoveKind says what a move is; it names the move's entries and its
// statement line.
type MoveKind uint8

// Kinds of move. The comment says which legs (the user's side) and which
// counter account (the other side) each has.
const (
	MoveRecharge        MoveKind = iota + 1 // coin:{c} +n; counter recharge/{app}: coins bought with money outside the ledger
	MoveConsume                             // an asset -n; counter merchant/{id}: the user pays a merchant
	MoveRefund                              // the consumed asset +n (at most what is left of the consumption); counter merchant/{id}; Ref: the consumption's key
	MoveReverse                             // the whole consumption back, once; counter merchant/{id}; Ref: the consumption's key
	MoveTransferOut                         // an asset -n; counter transfer/{key}: to another user, in transit between the two partitions
	MoveTransferIn                          // the asset +n; counter transfer/{key} (the sender's move's key)
	MoveGiftOut                             // as MoveTransferOut, for a gift
	MoveGiftIn                              // as MoveTransferIn, for a gift
	MoveExpire                              // an asset -n past its validity; counter budget/{id} (the unspent share returns to its activity) or expired/{asset}
	MoveWithdrawHold                        // cash -n, cash:transit +n; no counter: the withdrawal holds it
	MoveWithdrawSettle                      // cash:transit -n; counter payout/{channel}: paid out
	MoveWithdrawReverse                     // cash:transit -n, cash +n; no counter: the channel did not pay
	MoveWithdrawDebt                        // a payout confirmed after its reversal: cash -min(n, cash), cash:debt +rest; counter payout/{channel}
)

var moveKindNames = [...]string{
	MoveRecharge: "recharge", MoveConsume: "consume", MoveRefund: "refund", MoveReverse: "reverse",
	MoveTransferOut: "transfer_out", MoveTransferIn: "transfer_in", MoveGiftOut: "gift_out", MoveGiftIn: "gift_in",
	MoveExpire: "expire", MoveWithdrawHold: "withdraw_hold", MoveWithdrawSettle: "withdraw_settle",
	MoveWithdrawReverse: "withdraw_reverse", MoveWithdrawDebt: "withdraw_debt",
}

// String is the kind's name in entries, statements and the API ("" for an
// unknown kind).
func (k MoveKind) String() string {
	if int(k) < len(moveKindNames) {
		return moveKindNames[k]
	}
	return ""
}

// MoveKindOf returns the kind named name.
func MoveKindOf(name string) (MoveKind, bool) {
	for k, n := range moveKindNames {
		if n != "" && n == name {
			return MoveKind(k), true
		}
	}
	return 0, false
}

// Leg is one change of a user's balance in one asset (signed).
type Leg struct {
	Asset  Asset
	Amount int64
}

// Move is one change of one user's account.
type Move struct {
	ActID uint64
	Kind  MoveKind
	// Key identifies the move within the account: booked at most once,
	// and a second move under the same key with other content changes
	// nothing (MoveKeyReused). Callers derive it from the app and its
	// request id, or from a withdrawal's id and step.
	Key   string
	AppID uint32
	// Legs are the user's side, signed, each asset at most once.
	Legs []Leg
	// Counter is the account on the other side of the legs (the
	// postings' other half), "" when the legs balance among themselves
	// (a withdrawal's hold and reversal).
	Counter string
	// Ref is what the move refers to: the consumption a refund or
	// reversal undoes, a withdrawal's id, the other user of a transfer.
	Ref string
}

// MoveResult is what booking made of one move.
type MoveResult uint8

const (
	MoveApplied      MoveResult = iota + 1 // booked now
	MoveRepeated                           // the same move was booked before: nothing changed
	MoveKeyReused                          // another move was booked under its key: nothing changed
	MoveInsufficient                       // a leg would take a balance below zero: nothing changed
	MoveRefused                            // not valid against the account (a refund beyond its consumption, a reversal of what is not there): nothing changed
)

// MovePostings appends the double entry of m: each leg on the user's
// account and, when m has a counter account, its negation there. A move
// without a counter balances on its own legs (Batch.Check says whether
// it does).
func MovePostings(dst Batch, m *Move) Batch {
	user := UserAccount(m.ActID)
	for _, l := range m.Legs {
		dst = append(dst, Posting{Account: user, Asset: l.Asset, Amount: l.Amount})
		if m.Counter != "" {
			dst = append(dst, Posting{Account: m.Counter, Asset: l.Asset, Amount: -l.Amount})
		}
	}
	return dst
}
