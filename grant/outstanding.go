package grant

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"redrain/ledger"
	"redrain/tokens"
)

// A user's outstanding packets are those issued (acknowledged on the
// stream, answered to the client) and not yet booked: a withdrawal books
// them first, so that the asynchronous booking is never visible where
// money leaves. The owner of the user's shard knows them without any I/O:
// its claim table holds every issued claim until booking reports it.
//
// Pending claims (a record that may or may not have landed) are never
// outstanding: their grant was answered unavailable, so the client never
// saw the packet; its amount counts as issued on a lease marked uncertain;
// and booking it under lease 0 before knowing it landed could credit a
// packet that does not exist, an entry no stream event would ever
// attribute. If its record landed, booking books it from the stream. Nor
// are claims restored from the store (booked) or "no award".

// Outstanding's errors. Callers map them to the API's codes
// (ingress.OutstandingError): errcode itself is out of this package's
// reach (it writes fasthttp answers).
var (
	// ErrUnavailable: no node can answer for the user's shard now (no
	// owner that decides it, one that cannot be reached, this node
	// stopping, the caller's context ended). Retry.
	ErrUnavailable = errors.New("grant: the user's outstanding packets are unavailable; retry")
	// ErrNoUser: act_id 0 names no user.
	ErrNoUser = errors.New("grant: act_id 0 names no user")
)

// ask is one question to a shard for the outstanding packets of some of
// its users: Outstanding's (one user) or a message another node forwarded.
// The shard answers it after its next batch (at once when idle), on its
// goroutine, so the claim table takes no lock.
type ask struct {
	ids       []uint64
	forwarded bool // another node sent it: answered, never forwarded again
	// Set by the shard before done is closed: per id its packets, or why
	// there is no answer.
	grants [][]ledger.Grant
	errs   []error
	done   chan struct{}
}

func newAsk(ids []uint64, forwarded bool) *ask {
	return &ask{ids: ids, forwarded: forwarded, grants: make([][]ledger.Grant, len(ids)),
		errs: make([]error, len(ids)), done: make(chan struct{})}
}

func (q *ask) failAll(err error) {
	for i := range q.errs {
		q.grants[i], q.errs[i] = nil, err
	}
}

// Outstanding returns the user's outstanding packets (issued, acknowledged
// on the stream, not yet booked), each as its token and stream event book
// it: the same limit key, out_trade_no, award, asset, amount, budget,
// stage, activity, scene, rain, rain start and app, with lease 0 and no
// app user id, like redeem (its stream event attributes it later, and
// binds the app user). Booking them with booking.Booker.Book is
// idempotent: one the stream booked meanwhile is booked before.
//
// The owner of the user's shard answers, after the batch it is deciding
// (a packet that batch issues is outstanding); a node that does not own
// the shard asks the owner, one message for every question the shard has
// when it asks. No owner that decides the shard now (moving, restoring,
// not confirmed), an owner that cannot be reached, this node stopping or
// the end of ctx: an error wrapping ErrUnavailable (retryable). act_id 0:
// ErrNoUser. An issued claim the owner cannot rebuild: ledger.ErrInvariant.
func (a *Admission) Outstanding(ctx context.Context, actID uint64) ([]ledger.Grant, error) {
	if actID == 0 {
		return nil, ErrNoUser
	}
	if a.closing.Load() {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, errClosed)
	}
	q := newAsk([]uint64{actID}, false)
	a.shards[a.stream.Partition(actID)].pushAsk(q)
	select {
	case <-q.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	switch err := q.errs[0]; {
	case errors.Is(err, ledger.ErrInvariant):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return q.grants[0], nil
}

// asksMax bounds the asks a shard's queue holds; past it an ask is
// answered unavailable at once. Each waits for one batch, so only a shard
// stalled on its stream fills it.
const asksMax = 4096

var errAsksFull = errors.New("grant: too many questions for the user's shard in flight")

// pushAsk queues q for the shard's goroutine.
func (s *shard) pushAsk(q *ask) {
	s.mu.Lock()
	if s.stopped || len(s.asks) >= asksMax {
		err := errClosed
		if !s.stopped {
			err = errAsksFull
		}
		s.mu.Unlock()
		q.failAll(err)
		close(q.done)
		return
	}
	s.asks = append(s.asks, q)
	s.mu.Unlock()
	s.wakeUp()
}

// answer answers asks on the shard's goroutine: from the claim table when
// the shard is decided here, else from its owner.
func (s *shard) answer(asks []*ask) {
	defer func() {
		for _, q := range asks {
			close(q.done)
		}
	}()
	switch {
	case s.table == nil && s.a.peers != nil:
		s.forwardAsks(asks)
		return
	case s.table == nil, s.restoring, s.tenure != nil && !s.tenure.Valid():
		// As a grant: nobody may know the shard's claims here now.
		for _, q := range asks {
			err := errMoving
			if q.forwarded && s.table == nil {
				err = ErrNotOwner
			}
			q.failAll(err)
		}
		return
	}
	for _, q := range asks {
		for i, id := range q.ids {
			q.grants[i], q.errs[i] = s.table.outstanding(id, nil)
		}
	}
}

// outstanding appends to dst user's issued claims as the packets they
// are, in the order of their activity, scene, rain and stage. It costs a
// map lookup per rain the shard holds claims of (rains closed for
// releaseAfter are gone).
func (t *claimTable) outstanding(user uint64, dst []ledger.Grant) ([]ledger.Grant, error) {
	start := len(dst)
	for key, r := range t.rains {
		c, ok := r.users.get(user)
		if !ok || c.state != claimIssued {
			continue
		}
		g, err := r.packet(key, user, c)
		if err != nil {
			return nil, err
		}
		dst = append(dst, g)
	}
	slices.SortFunc(dst[start:], func(a, b ledger.Grant) int {
		return cmp.Or(strings.Compare(a.ActivityID, b.ActivityID), strings.Compare(a.SceneID, b.SceneID),
			cmp.Compare(a.RainID, b.RainID), cmp.Compare(a.Stage, b.Stage))
	})
	return dst, nil
}

// packet rebuilds the packet of user's issued claim c in the rain of key
// ("{activity}_{scene}_{rain}_{stage}": a claim is issued only under the
// current keys, never the legacy ones). An issued claim the table cannot
// rebuild breaks the table's invariants.
func (r *rainClaims) packet(key string, user uint64, c claim) (ledger.Grant, error) {
	bad := func(what string) (ledger.Grant, error) {
		return ledger.Grant{}, fmt.Errorf("%w: claim table: issued claim of act %d in rain %q: %s", ledger.ErrInvariant, user, key, what)
	}
	activity, rest, ok1 := strings.Cut(key, "_")
	scene, rest, ok2 := strings.Cut(rest, "_")
	rainText, stageText, ok3 := strings.Cut(rest, "_")
	if !ok1 || !ok2 || !ok3 {
		return bad("not a current rain key")
	}
	rain, err := strconv.ParseUint(rainText, 10, 64)
	if err != nil {
		return bad("rain id")
	}
	stage, err := tokens.ParseStage(stageText)
	if err != nil {
		return bad("stage")
	}
	if int(c.award) >= len(r.awards) || r.assets[c.award] == "" || c.amount <= 0 {
		return bad("award, asset or amount")
	}
	return ledger.Grant{
		AppID: c.app, ActID: user, ActivityID: activity, SceneID: scene, RainID: rain, Stage: stage,
		AwardType: r.awards[c.award], Asset: r.assets[c.award], Amount: c.amount, BudgetID: r.budgets[c.award],
		OpenTime: r.openOf(user),
	}, nil
}

// askForShards asks the shards of ids (on another node's behalf when
// forwarded) and waits for every answer: per id its packets or an error.
func (a *Admission) askForShards(ids []uint64, forwarded bool) ([][]ledger.Grant, []error) {
	grants, errs := make([][]ledger.Grant, len(ids)), make([]error, len(ids))
	if a.closing.Load() {
		for i := range errs {
			errs[i] = errClosed
		}
		return grants, errs
	}
	byShard := map[int32][]int{}
	for i, id := range ids {
		p := a.stream.Partition(id)
		byShard[p] = append(byShard[p], i)
	}
	type sent struct {
		q   *ask
		idx []int
	}
	var all []sent
	for p, idx := range byShard {
		sub := make([]uint64, len(idx))
		for j, i := range idx {
			sub[j] = ids[i]
		}
		q := newAsk(sub, forwarded)
		a.shards[p].pushAsk(q)
		all = append(all, sent{q, idx})
	}
	for _, s := range all {
		<-s.q.done
		for j, i := range s.idx {
			grants[i], errs[i] = s.q.grants[j], s.q.errs[j]
		}
	}
	return grants, errs
}

// serveOutstanding answers an ask another node forwarded (AppendAsk's
// encoding) with AppendAskAnswers's; nil when unreadable.
func (a *Admission) serveOutstanding(body []byte) []byte {
	_, ids, err := DecodeAsk(body)
	if err != nil {
		a.log.Warn("grant: unreadable forwarded ask", "err", err)
		return nil
	}
	grants, errs := a.askForShards(ids, true)
	return AppendAskAnswers(nil, grants, errs)
}

// forwardAsks asks the shard's owner for the outstanding packets of the
// asks' users, in one message; asks forwarded here are answered
// ErrNotOwner. Like a batch of grants, it is sent once more, to the owner
// the store names then, after an answer "not owner" or none.
func (s *shard) forwardAsks(asks []*ask) {
	a := s.a
	var out []*ask
	var ids []uint64
	for _, q := range asks {
		if q.forwarded {
			q.failAll(ErrNotOwner)
			continue
		}
		out = append(out, q)
		ids = append(ids, q.ids...)
	}
	if len(out) == 0 {
		return
	}
	fail := func(err error) {
		for _, q := range out {
			q.failAll(err)
		}
	}
	for try := 0; ; try++ {
		addr, err := s.owner(try > 0)
		switch {
		case err != nil:
			fail(err)
			return
		case addr == "" || addr == a.self:
			s.remote = ""
			fail(errMoving)
			return
		}
		s.body = AppendAsk(s.body[:0], s.id, ids)
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		reply, err := a.peers.Forward(ctx, addr, s.body)
		cancel()
		var grants [][]ledger.Grant
		var errs []error
		if err == nil {
			grants, errs, err = DecodeAskAnswers(reply, len(ids))
		}
		if err != nil {
			s.remote = ""
			if try == 0 {
				continue
			}
			fail(fmt.Errorf("grant: asking the shard's owner %s: %w", addr, err))
			return
		}
		moved := false
		k := 0
		for _, q := range out {
			for i, id := range q.ids {
				for j := range grants[k] {
					grants[k][j].ActID = id // the answer names users by position
				}
				q.grants[i], q.errs[i] = grants[k], errs[k]
				moved = moved || errors.Is(errs[k], ErrNotOwner)
				k++
			}
		}
		if !moved {
			return
		}
		s.remote = ""
		if try > 0 {
			for _, q := range out {
				for i := range q.errs {
					if errors.Is(q.errs[i], ErrNotOwner) {
						q.errs[i] = errMoving
					}
				}
			}
			return
		}
	}
}

// Wire format of an ask for outstanding packets, a message kind of its own
// beside a batch of grants (its first byte is askKind where a batch has
// forwardVersion, so a node that does not know it cannot read it, and
// answers nothing: the asker answers unavailable):
//
//	request: askKind, partition uvarint, count uvarint, act_ids uvarint
//	answer:  askKind, the strings the packets share (activity and scene
//	  ids, award types, assets, budget ids), count uvarint, then per act_id
//	  of the request: flags byte (flagNotOwner, flagErr, flagErr with
//	  flagInvariant); with flagErr the error text, else the packet count uvarint and per packet: app_id
//	  uvarint, activity and scene as string indexes, rain_id uvarint, stage
//	  byte, award, asset and budget as string indexes, amount varint,
//	  open_time varint
const askKind byte = 0x81

// flagInvariant, with flagErr in an ask's answer: the owner found its
// claim table broken (ledger.ErrInvariant), not a retryable failure.
const flagInvariant = 1 << 4

// AppendAsk appends the encoding of an ask for the outstanding packets of
// ids, users of partition p.
func AppendAsk(dst []byte, p int32, ids []uint64) []byte {
	dst = append(dst, askKind)
	dst = binary.AppendUvarint(dst, uint64(p))
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, id)
	}
	return dst
}

func (r *reader) kind(want byte) {
	if v := r.byte1("kind"); r.err == nil && v != want {
		r.err = fmt.Errorf("grant: forwarded message kind %d, want %d", v, want)
	}
}

// DecodeAsk decodes AppendAsk's encoding.
func DecodeAsk(src []byte) (p int32, ids []uint64, err error) {
	r := newReader(src)
	r.kind(askKind)
	part := r.uvarint("partition")
	if part > 1<<31-1 {
		r.fail("partition")
	}
	n := r.count("count")
	if r.err == nil && n > r.rest() {
		r.fail("count")
	}
	if r.err == nil {
		ids = make([]uint64, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		id := r.uvarint("act_id")
		if id == 0 {
			r.fail("act_id")
		}
		ids = append(ids, id)
	}
	if r.err == nil && r.rest() != 0 {
		r.fail("length")
	}
	if r.err != nil {
		return 0, nil, r.err
	}
	return int32(part), ids, nil
}

// AppendAskAnswers appends the encoding of an ask's answers: per act_id
// its packets, or errs[i] when not nil.
func AppendAskAnswers(dst []byte, grants [][]ledger.Grant, errs []error) []byte {
	var t strTable
	t.reset()
	for i := range grants {
		for j := range grants[i] {
			g := &grants[i][j]
			t.of(g.ActivityID)
			t.of(g.SceneID)
			t.of(g.AwardType)
			t.of(string(g.Asset))
			t.of(g.BudgetID)
		}
	}
	dst = t.appendHead(dst, askKind, len(grants))
	for i := range grants {
		switch err := errs[i]; {
		case errors.Is(err, ErrNotOwner):
			dst = append(dst, flagNotOwner)
			continue
		case errors.Is(err, ledger.ErrInvariant):
			dst = append(dst, flagErr|flagInvariant)
			dst = appendStr(dst, err.Error())
			continue
		case err != nil:
			dst = append(dst, flagErr)
			dst = appendStr(dst, err.Error())
			continue
		}
		dst = append(dst, 0)
		dst = binary.AppendUvarint(dst, uint64(len(grants[i])))
		for j := range grants[i] {
			g := &grants[i][j]
			dst = binary.AppendUvarint(dst, uint64(g.AppID))
			dst = binary.AppendUvarint(dst, t.of(g.ActivityID))
			dst = binary.AppendUvarint(dst, t.of(g.SceneID))
			dst = binary.AppendUvarint(dst, g.RainID)
			dst = append(dst, byte(g.Stage))
			dst = binary.AppendUvarint(dst, t.of(g.AwardType))
			dst = binary.AppendUvarint(dst, t.of(string(g.Asset)))
			dst = binary.AppendUvarint(dst, t.of(g.BudgetID))
			dst = binary.AppendVarint(dst, g.Amount)
			dst = binary.AppendVarint(dst, g.OpenTime)
		}
	}
	return dst
}

// DecodeAskAnswers decodes AppendAskAnswers's encoding of the answers to
// an ask of n act_ids, whose ids the asker fills in (the answer carries
// them by position).
func DecodeAskAnswers(src []byte, n int) (grants [][]ledger.Grant, errs []error, err error) {
	r := newReader(src)
	r.kind(askKind)
	t := r.table()
	if m := r.count("count"); r.err == nil && m != n {
		return nil, nil, fmt.Errorf("grant: %d forwarded answers for %d users", m, n)
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	grants, errs = make([][]ledger.Grant, n), make([]error, n)
	for i := 0; i < n && r.err == nil; i++ {
		switch flags := r.byte1("flags"); {
		case r.err != nil:
		case flags == flagNotOwner:
			errs[i] = ErrNotOwner
		case flags == flagErr:
			errs[i] = &remoteError{text: r.str("error")}
		case flags == flagErr|flagInvariant:
			errs[i] = fmt.Errorf("%w: on the shard's owner: %s", ledger.ErrInvariant, r.str("error"))
		case flags != 0:
			r.fail("flags")
		default:
			k := r.count("packet count")
			if r.err == nil && k > r.rest() {
				r.fail("packet count")
			}
			for j := 0; j < k && r.err == nil; j++ {
				var g ledger.Grant
				app := r.uvarint("app_id")
				if app > 1<<32-1 {
					r.fail("app_id")
				}
				g.AppID = uint32(app)
				g.ActivityID, g.SceneID, g.RainID = r.ref(t, "activity_id"), r.ref(t, "scene_id"), r.uvarint("rain_id")
				g.Stage = tokens.Stage(r.byte1("stage"))
				if g.Stage > tokens.StageInternal {
					r.fail("stage")
				}
				g.AwardType, g.Asset, g.BudgetID = r.ref(t, "award"), ledger.Asset(r.ref(t, "asset")), r.ref(t, "budget")
				g.Amount, g.OpenTime = r.varint("amount"), r.varint("open_time")
				if r.err == nil && g.Amount <= 0 {
					r.fail("amount")
				}
				grants[i] = append(grants[i], g)
			}
		}
	}
	if r.err == nil && r.rest() != 0 {
		r.fail("length")
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	return grants, errs, nil
}
