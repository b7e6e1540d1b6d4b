// Package spend is the spending domain (issue 13, item 2): it turns an
// app's typed request (recharge coins, consume, refund or reverse a
// consumption, transfer or gift to another user, expire) into the
// ledger.Moves that book it, keyed by the app and the caller's request id
// so that a repeat books nothing twice, asks booking to book them (Mover)
// and answers a typed Outcome. It must never speak HTTP (ingress maps its
// outcomes to codes), never touch a store itself, and never decide a
// balance: the ledger applies every rule of money (funds, repeats, what is
// left of a consumption) where the account is owned.
package spend

import (
	"context"
	"fmt"
	"strconv"

	"redrain/ledger"
)

// Mover books moves: booking.Booker.Move. Each move is booked at most once
// per (account, key); the results are in the order of moves. An error is
// operational (nothing or not everything was booked): the same moves may
// be sent again.
type Mover interface {
	Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error)
}

// Accounts reads accounts as booked (booking.Booker.Accounts): an account
// with no record is absent from the map.
type Accounts interface {
	Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error)
}

// Booker is what the service needs of booking.
type Booker interface {
	Mover
	Accounts
}

// Op is the operation a request asks for.
type Op uint8

// Operations.
const (
	OpRecharge Op = iota + 1 // coins bought: coin:{c} +n
	OpConsume                // the user pays a merchant: asset -n
	OpRefund                 // part of a consumption back: asset +n
	OpReverse                // a whole consumption back, once
	OpTransfer               // to another user: two moves
	OpGift                   // as OpTransfer, for a gift
	OpExpire                 // past its validity: asset -n
)

var opNames = [...]string{OpRecharge: "recharge", OpConsume: "consume", OpRefund: "refund", OpReverse: "reverse",
	OpTransfer: "transfer", OpGift: "gift", OpExpire: "expire"}

// String is the operation's name in the API ("" for an unknown one).
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return ""
}

// Limits on a request, checked by Validate.
const (
	// IDLenMax bounds request_id, merchant_id, budget_id and an asset's
	// name after its prefix. IDs are 1..IDLenMax bytes of [A-Za-z0-9._-]
	// (keys and counter account names are built from them, so nothing
	// that could read as a separator or need escaping).
	IDLenMax = 64
	// AmountMax bounds one request's amount (fen, coins or pieces): ten
	// billion yuan, far from int64 overflow when added to any balance the
	// ledger allows.
	AmountMax = 1_000_000_000_000
)

// Request is one spending request of an app.
type Request struct {
	Op        Op
	AppID     uint32 // the app that asks; Invariant: >= 1
	RequestID string // the caller's id of the request: a repeat books nothing twice
	ActID     uint64 // the user; the sender of a transfer or gift
	ToActID   uint64 // the receiver of a transfer or gift; else 0
	Asset     ledger.Asset
	Amount    int64 // Invariant: 1..AmountMax
	// MerchantID is the merchant paid (consume) or paying back (refund,
	// reverse).
	MerchantID string
	// Consumption is the request id of the consumption a refund or
	// reversal undoes (the same app's).
	Consumption string
	// BudgetID is, for an expiry, the budget whose unspent share returns
	// (its activity's account budget/{id}); "" books it to expired/{asset}.
	BudgetID string
}

// InvalidError says which field of a request breaks which rule.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("field %q: %s", e.Field, e.Reason) }

func invalid(field, format string, args ...any) *InvalidError {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// CheckID reports whether id is a valid id (see IDLenMax).
func CheckID(id string) bool {
	if len(id) == 0 || len(id) > IDLenMax {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Which assets each operation moves.
const (
	moneyOK = 1 << iota // cash (reward cash) and cash:general (general reward)
	coinOK              // coin:{currency}
	itemOK              // item:{template}
)

// assetsOf says which kinds of asset op moves: coins are bought by
// recharge; reward cash, general reward, coins and items are spent;
// coins and items go from user to user and expire. Reward cash leaves to
// another user only as a withdrawal (a transfer of withdrawable money is a
// payment, which this API does not make).
func assetsOf(op Op) int {
	switch op {
	case OpRecharge:
		return coinOK
	case OpConsume, OpRefund, OpReverse:
		return moneyOK | coinOK | itemOK
	}
	return coinOK | itemOK
}

// checkAsset reports whether a names an asset op may move.
func checkAsset(op Op, a ledger.Asset) *InvalidError {
	ok := assetsOf(op)
	s := string(a)
	var name string
	switch {
	case a == ledger.AssetCash || a == ledger.AssetGeneral:
		if ok&moneyOK != 0 {
			return nil
		}
	case len(s) > len("coin:") && s[:len("coin:")] == "coin:":
		name = s[len("coin:"):]
		if ok&coinOK != 0 && CheckID(name) {
			return nil
		}
	case len(s) > len("item:") && s[:len("item:")] == "item:":
		name = s[len("item:"):]
		if ok&itemOK != 0 && CheckID(name) {
			return nil
		}
	}
	var want []string
	if ok&moneyOK != 0 {
		want = append(want, `"cash", "cash:general"`)
	}
	if ok&coinOK != 0 {
		want = append(want, `"coin:{currency}"`)
	}
	if ok&itemOK != 0 {
		want = append(want, `"item:{template}"`)
	}
	return invalid("asset", "%q: %s moves %s (names of 1..%d bytes of [A-Za-z0-9._-])", s, op, join(want), IDLenMax)
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		switch {
		case i == 0:
		case i == len(ss)-1:
			out += " or "
		default:
			out += ", "
		}
		out += s
	}
	return out
}

// Validate checks r against the rules of its operation; the error is an
// *InvalidError.
func Validate(r *Request) error {
	if r.Op.String() == "" {
		return invalid("op", "unknown operation %d", r.Op)
	}
	if r.AppID == 0 {
		return invalid("app_id", "want a positive integer")
	}
	if !CheckID(r.RequestID) {
		return invalid("request_id", "want 1..%d bytes of [A-Za-z0-9._-]", IDLenMax)
	}
	if r.ActID == 0 {
		return invalid("act_id", "want a positive integer")
	}
	if r.Amount <= 0 || r.Amount > AmountMax {
		return invalid("amount", "%d: want 1..%d", r.Amount, int64(AmountMax))
	}
	if err := checkAsset(r.Op, r.Asset); err != nil {
		return err
	}
	transfer := r.Op == OpTransfer || r.Op == OpGift
	switch {
	case transfer && r.ToActID == 0:
		return invalid("to_act_id", "want a positive integer")
	case transfer && r.ToActID == r.ActID:
		return invalid("to_act_id", "%d: the sender's own account", r.ToActID)
	case !transfer && r.ToActID != 0:
		return invalid("to_act_id", "only a transfer or gift has a receiver")
	}
	merchant := r.Op == OpConsume || r.Op == OpRefund || r.Op == OpReverse
	switch {
	case merchant && !CheckID(r.MerchantID):
		return invalid("merchant_id", "want 1..%d bytes of [A-Za-z0-9._-]", IDLenMax)
	case !merchant && r.MerchantID != "":
		return invalid("merchant_id", "only a consumption, refund or reversal names a merchant")
	}
	undo := r.Op == OpRefund || r.Op == OpReverse
	switch {
	case undo && !CheckID(r.Consumption):
		return invalid("consumption_id", "want the consumption's request_id, 1..%d bytes of [A-Za-z0-9._-]", IDLenMax)
	case undo && r.Consumption == r.RequestID:
		return invalid("consumption_id", "%q is this request's own id", r.Consumption)
	case !undo && r.Consumption != "":
		return invalid("consumption_id", "only a refund or reversal names a consumption")
	}
	switch {
	case r.BudgetID != "" && r.Op != OpExpire:
		return invalid("budget_id", "only an expiry returns to a budget")
	case r.BudgetID != "" && !CheckID(r.BudgetID):
		return invalid("budget_id", "want 1..%d bytes of [A-Za-z0-9._-]", IDLenMax)
	}
	return nil
}

// Key is the key of the move an app's request books on its user's
// account: "{app_id}:{request_id}", so two apps never share a key and a
// repeat of a request finds its move.
func Key(app uint32, requestID string) string {
	return strconv.FormatUint(uint64(app), 10) + ":" + requestID
}

// InKey is the key of a transfer's or gift's move on the receiver's
// account: the sender's key and account ("{key}<{from}"), unique among
// every receiver's keys (a key is unique on its sender's account), so the
// receiver's move books at most once whoever repeats the request, and
// never collides with the receiver's own requests (whose keys hold no
// '<').
func InKey(key string, from uint64) string {
	return key + "<" + strconv.FormatUint(from, 10)
}

// TransferAccount is the counter account of both moves of a transfer or
// gift: transfer/{from}/{key}. Once both are booked it balances to zero in
// every asset; one that does not is a transfer whose receiver's move is
// not booked yet (a crash between the two), which the consistency service
// finds and a repeat of the request completes.
func TransferAccount(from uint64, key string) string {
	return "transfer/" + strconv.FormatUint(from, 10) + "/" + key
}

// The counter accounts of the other operations.
func rechargeAccount(app uint32) string    { return "recharge/" + strconv.FormatUint(uint64(app), 10) }
func merchantAccount(id string) string     { return "merchant/" + id }
func expiredAccount(a ledger.Asset) string { return "expired/" + string(a) }

// Moves returns the moves that book r (validated), in the order they must
// be booked: one, or for a transfer or gift the sender's then the
// receiver's (which must wait for the sender's: see Service.Do).
func Moves(r *Request) []ledger.Move {
	key := Key(r.AppID, r.RequestID)
	m := ledger.Move{ActID: r.ActID, Key: key, AppID: r.AppID}
	leg := func(sign int64) []ledger.Leg { return []ledger.Leg{{Asset: r.Asset, Amount: sign * r.Amount}} }
	switch r.Op {
	case OpRecharge:
		m.Kind, m.Legs, m.Counter = ledger.MoveRecharge, leg(1), rechargeAccount(r.AppID)
	case OpConsume:
		m.Kind, m.Legs, m.Counter = ledger.MoveConsume, leg(-1), merchantAccount(r.MerchantID)
	case OpRefund, OpReverse:
		m.Kind = ledger.MoveRefund
		if r.Op == OpReverse {
			m.Kind = ledger.MoveReverse
		}
		m.Legs, m.Counter, m.Ref = leg(1), merchantAccount(r.MerchantID), Key(r.AppID, r.Consumption)
	case OpExpire:
		m.Kind, m.Legs, m.Counter = ledger.MoveExpire, leg(-1), expiredAccount(r.Asset)
		if r.BudgetID != "" {
			m.Counter = ledger.BudgetAccount(r.BudgetID)
		}
	case OpTransfer, OpGift:
		out, in := ledger.MoveTransferOut, ledger.MoveTransferIn
		if r.Op == OpGift {
			out, in = ledger.MoveGiftOut, ledger.MoveGiftIn
		}
		counter := TransferAccount(r.ActID, key)
		m.Kind, m.Legs, m.Counter, m.Ref = out, leg(-1), counter, strconv.FormatUint(r.ToActID, 10)
		recv := ledger.Move{ActID: r.ToActID, Kind: in, Key: InKey(key, r.ActID), AppID: r.AppID,
			Legs: leg(1), Counter: counter, Ref: strconv.FormatUint(r.ActID, 10)}
		return []ledger.Move{m, recv}
	}
	return []ledger.Move{m}
}
