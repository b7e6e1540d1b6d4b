package actors

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
)

// userIdleMax is how long an idle user grain stays in memory.
const userIdleMax = 2 * time.Minute

// userGrain serializes the changes of one user's account. Its state is a
// cache of the TiKV record: it is replaced by what the booking transaction
// read whenever the two differ.
type userGrain struct {
	log    *slog.Logger
	actID  uint64
	acct   *ledger.Account
	stored []byte // the encoding acct was decoded from or last produced
	clock  func() time.Time
}

func newUserKind(log *slog.Logger, clock func() time.Time, live *atomic.Int64) *pcluster.Kind {
	props := actor.PropsFromProducer(func() actor.Actor { return &userGrain{log: log, clock: clock} }, countGrains(live))
	return pcluster.NewKind(KindUser, props)
}

// UserIdentity is the grain identity of a user's account.
func UserIdentity(actID uint64) string { return fmt.Sprintf("%d", actID) }

func (u *userGrain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(userIdleMax)
	case *actor.ReceiveTimeout:
		ctx.Poison(ctx.Self())
	case *wrapperspb.BytesValue:
		if len(m.Value) == 0 || m.Value[0] != msgPrepare {
			ctx.Respond(failure(fmt.Errorf("user grain: unknown message")))
			return
		}
		ctx.Respond(u.prepare(m.Value[1:]))
	}
}

func (u *userGrain) prepare(b []byte) (reply *wrapperspb.BytesValue) {
	// A panic must not answer with half-applied state or be swallowed: log
	// its stack, drop the cache (TiKV is the truth) and fail the request.
	defer func() {
		if r := recover(); r != nil {
			u.log.Error("user grain panic", "act_id", u.actID, "panic", r, "stack", string(debug.Stack()))
			u.acct, u.stored = nil, nil
			reply = failure(fmt.Errorf("user grain panic: %v", r))
		}
	}()
	p, err := decodePrepare(b)
	if err != nil {
		return failure(err)
	}
	if len(p.grants) == 0 {
		return failure(fmt.Errorf("user grain: empty prepare"))
	}
	actID := p.grants[0].ActID
	if u.acct == nil || !bytes.Equal(u.stored, p.stored) {
		if p.stored == nil {
			u.acct = &ledger.Account{ActID: actID}
		} else if u.acct, err = ledger.UnmarshalAccount(p.stored); err != nil {
			u.acct, u.stored = nil, nil
			return failure(err)
		}
		u.actID = actID
		u.stored = append(u.stored[:0], p.stored...)
	}
	// Work on a copy: the transaction may still fail, and the next prepare
	// then arrives with the old record, which must match the cache again.
	next := u.acct.Clone()
	out := &prepared{outcomes: make([]byte, len(p.grants))}
	now := u.clock().UnixMilli()
	changed := false
	for i := range p.grants {
		g := &p.grants[i]
		booked, err := next.Book(g, now)
		if err != nil {
			return failure(err)
		}
		switch {
		case booked:
			out.outcomes[i], changed = outcomeBooked, true
		case next.Attribute(g):
			out.outcomes[i], changed = outcomeAttributed, true
		default:
			continue
		}
		// The binding the grant was issued under becomes durable with the
		// account (redeem does not know the app's user id; its stream
		// event, attributed later, does).
		if g.UserID != "" {
			next.Bind(ledger.AppUser{AppID: g.AppID, UserID: g.UserID})
		}
	}
	if !changed {
		return encodePrepared(out)
	}
	next.Version++
	if err := next.Check(); err != nil {
		u.log.Error("user grain: money invariant broken", "act_id", actID, "err", err)
		u.acct, u.stored = nil, nil
		return failure(err)
	}
	out.record = ledger.MarshalAccount(nil, next)
	// Optimistic: if the commit fails, the next prepare carries the old
	// bytes, which differ from these, and the cache is rebuilt from them.
	u.acct, u.stored = next, append(u.stored[:0], out.record...)
	return encodePrepared(out)
}
