package ledger

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"redrain/tokens"
)

// A partition's accounts are kept by the node that books the partition (its
// owner) and stored as a journal of committed changes plus pages that
// checkpoint many accounts at once (see the booking package). These are
// their encodings and the one function that applies a change, so that the
// owner, a reader replaying the journal and a writer that is not the owner
// all compute the same accounts.

// Kinds of journal operation.
const (
	OpBook      byte = 1 // a grant credited (Account.Book), its app identity bound
	OpAttribute byte = 2 // a redeemed entry attributed to its stream event's lease
	OpBind      byte = 3 // an app identity bound by an explicit bind
	OpMove      byte = 4 // a move (move.go): spending, a transfer's half, expiry, a withdrawal's step
)

// Op is one change to one account.
type Op struct {
	Kind byte
	// Grant is the grant booked or attributed; OpBind uses only its AppID,
	// ActID and UserID; OpMove only its ActID (Move's, so that every
	// reader routes ops by Grant.ActID).
	Grant Grant
	// Move is OpMove's move.
	Move *Move
}

// MoveOp is the op that books m.
func MoveOp(m *Move) Op { return Op{Kind: OpMove, Grant: Grant{ActID: m.ActID}, Move: m} }

// ApplyMove makes an OpMove's change to a (see Account.ApplyMove) and
// returns what it made of the move, with the legs it booked.
func (op *Op) ApplyMove(a *Account, at int64) (MoveResult, []Leg, error) {
	if op.Kind != OpMove || op.Move == nil || op.Move.ActID != op.Grant.ActID {
		return 0, nil, fmt.Errorf("%w: not a move op", ErrInvariant)
	}
	return a.ApplyMove(op.Move, at)
}

// Apply makes op's change to a, whose ActID must be op's, and reports
// whether it changed a. at is the booking time (unix ms) entries record.
// The owner keeps the ops that changed an account; replaying them on the
// same state changes it the same way. An error leaves a unchanged.
func (op *Op) Apply(a *Account, at int64) (bool, error) {
	g := &op.Grant
	if g.ActID != a.ActID {
		return false, fmt.Errorf("%w: op for act %d applied to act %d", ErrInvariant, g.ActID, a.ActID)
	}
	var changed bool
	switch op.Kind {
	case OpMove:
		r, _, err := op.ApplyMove(a, at)
		return r == MoveApplied, err
	case OpBook:
		booked, err := a.Book(g, at)
		if err != nil {
			return false, err
		}
		changed = booked
	case OpAttribute:
		changed = a.Attribute(g)
	case OpBind:
		if g.UserID == "" {
			return false, fmt.Errorf("%w: bind without a user id", ErrInvariant)
		}
		return a.Bind(AppUser{AppID: g.AppID, UserID: g.UserID}), nil
	default:
		return false, fmt.Errorf("%w: op kind %d", ErrCorrupt, op.Kind)
	}
	// The identity a grant was issued under becomes durable with the
	// account (redeem does not know the app's user id; the stream event,
	// attributed later, does).
	if changed && g.UserID != "" {
		a.Bind(AppUser{AppID: g.AppID, UserID: g.UserID})
	}
	return changed, nil
}

// Journal is one committed change of a partition's accounts: the ops of one
// booking batch (or of one redeem or bind), in the order they applied.
type Journal struct {
	Seq      uint64 // Invariant: a partition's journals are numbered 1, 2, 3... without gaps
	BookedAt int64  // unix ms, the BookedAt of the entries it made
	// From and To are the grant topic offsets [From, To) the batch booked;
	// both zero for a journal that booked nothing from the stream.
	From, To int64
	Ops      []Op
}

// Journal versions. Version 1 encoded each op's whole grant (AppendGrant:
// ~80 bytes a grant, its strings repeated in every op). Version 2 writes
// what the grants of one journal share once, at its head: a string table
// (activity, scene, award, asset and budget ids) and a table of grant
// shapes (every field but the account, the app's user id, the amount and
// the issue time), each referenced by index; an op then holds its kind and
// shape, its act_id and issue time as deltas from the previous op's, its
// user id and amount (~18 bytes for the demo campaign). Journals are never
// rewritten, so version 1 ones stay readable.
const journalVersion1, journalVersion = 1, 2

// grantShape is what the grants of one journal mostly share.
type grantShape struct {
	legacy                                   bool
	appID                                    uint32
	activityID, sceneID, awardType, budgetID string
	asset                                    Asset
	rainID, leaseID                          uint64
	stage                                    tokens.Stage
	openTime                                 int64
}

func shapeOf(g *Grant) grantShape {
	return grantShape{legacy: g.Legacy, appID: g.AppID, activityID: g.ActivityID, sceneID: g.SceneID,
		awardType: g.AwardType, budgetID: g.BudgetID, asset: g.Asset, rainID: g.RainID, leaseID: g.LeaseID,
		stage: g.Stage, openTime: g.OpenTime}
}

// opKindBits: an op's kind and shape index share one uvarint,
// shape<<opKindBits | kind. Kind bits 0 (no version before moves wrote
// them) escape: the uvarint is 0<<opKindBits | 0 and the op is an OpMove,
// its move inline (appendMoveOp), using no shape, so journals written
// before moves decode unchanged.
const opKindBits = 2

// opEscapeMove is the kind-and-shape uvarint of an OpMove.
const opEscapeMove = 0

// appendMoveOp appends an OpMove's move after its escape: act_id as a
// delta from the previous op's, kind, key, app, counter, ref, legs.
func appendMoveOp(dst []byte, m *Move, prevAct uint64) []byte {
	dst = appendUvarint(dst, opEscapeMove)
	dst = appendVarint(dst, int64(m.ActID-prevAct))
	dst = append(dst, byte(m.Kind))
	dst = appendString(dst, m.Key)
	dst = appendUvarint(dst, uint64(m.AppID))
	dst = appendString(dst, m.Counter)
	dst = appendString(dst, m.Ref)
	dst = appendUvarint(dst, uint64(len(m.Legs)))
	for _, l := range m.Legs {
		dst = appendAmount(dst, l.Asset, l.Amount)
	}
	return dst
}

// moveOp reads what appendMoveOp wrote after the escape.
func (d *decoder) moveOp(prevAct uint64) *Move {
	m := &Move{ActID: prevAct + uint64(d.varint("act_id"))}
	m.Kind = MoveKind(d.byte1("move kind"))
	m.Key = d.string("move key")
	m.AppID = d.appID()
	m.Counter = d.string("counter")
	m.Ref = d.string("ref")
	n := d.count("legs")
	if d.err == nil && n > moveLegsMax {
		d.fail("legs")
	}
	for i := 0; i < n && d.err == nil; i++ {
		m.Legs = append(m.Legs, Leg{Asset: Asset(d.string("leg asset")), Amount: d.varint("leg amount")})
	}
	// Only valid moves are journaled: anything else is corrupt.
	if d.err == nil && m.Validate() != nil {
		d.fail("move")
	}
	return m
}

// AppendJournal appends the encoding of j (version 2).
func AppendJournal(dst []byte, j *Journal) []byte {
	// Shapes in the order of first use; consecutive ops mostly share one,
	// so the previous op's is compared before the map is asked.
	var (
		shapes  []grantShape
		byShape map[grantShape]uint64
		last    grantShape
		lastIdx uint64
	)
	idx := make([]uint64, len(j.Ops))
	for i := range j.Ops {
		if j.Ops[i].Kind == OpMove {
			continue
		}
		sh := shapeOf(&j.Ops[i].Grant)
		if len(shapes) == 0 || sh != last {
			n, ok := byShape[sh]
			if !ok {
				if byShape == nil {
					byShape = make(map[grantShape]uint64)
				}
				n = uint64(len(shapes))
				byShape[sh] = n
				shapes = append(shapes, sh)
			}
			last, lastIdx = sh, n
		}
		idx[i] = lastIdx
	}
	var strs strTable
	var shapeBytes []byte
	for i := range shapes {
		sh := &shapes[i]
		keys := grantKeysActivity
		if sh.legacy {
			keys = grantKeysLegacy
		}
		shapeBytes = append(shapeBytes, keys)
		shapeBytes = appendUvarint(shapeBytes, uint64(sh.appID))
		shapeBytes = appendUvarint(shapeBytes, strs.ref(sh.activityID))
		shapeBytes = appendUvarint(shapeBytes, strs.ref(sh.sceneID))
		shapeBytes = appendUvarint(shapeBytes, sh.rainID)
		shapeBytes = append(shapeBytes, byte(sh.stage))
		shapeBytes = appendUvarint(shapeBytes, strs.ref(sh.awardType))
		shapeBytes = appendUvarint(shapeBytes, strs.ref(string(sh.asset)))
		shapeBytes = appendUvarint(shapeBytes, strs.ref(sh.budgetID))
		shapeBytes = appendUvarint(shapeBytes, sh.leaseID)
		shapeBytes = appendVarint(shapeBytes, sh.openTime)
	}

	dst = append(dst, journalVersion)
	dst = appendUvarint(dst, j.Seq)
	dst = appendVarint(dst, j.BookedAt)
	dst = appendVarint(dst, j.From)
	dst = appendVarint(dst, j.To)
	dst = appendStrTable(dst, strs.list)
	dst = appendUvarint(dst, uint64(len(shapes)))
	dst = append(dst, shapeBytes...)
	dst = appendUvarint(dst, uint64(len(j.Ops)))
	var act uint64
	issued := j.BookedAt
	for i := range j.Ops {
		op := &j.Ops[i]
		g := &op.Grant
		if op.Kind == OpMove {
			dst = appendMoveOp(dst, op.Move, act)
			act = op.Move.ActID
			continue
		}
		dst = appendUvarint(dst, idx[i]<<opKindBits|uint64(op.Kind))
		dst = appendVarint(dst, int64(g.ActID-act))
		dst = appendString(dst, g.UserID)
		dst = appendVarint(dst, g.Amount)
		dst = appendVarint(dst, int64(uint64(g.IssuedAt)-uint64(issued)))
		act, issued = g.ActID, g.IssuedAt
	}
	return dst
}

// DecodeJournal decodes what AppendJournal writes, or a version 1 journal.
func DecodeJournal(src []byte) (*Journal, error) {
	j := &Journal{}
	if err := decodeJournal(decoder{b: src}, j); err != nil {
		return nil, err
	}
	return j, nil
}

// TailDecoder decodes journals for the readers of the journals' tail (the
// wallet's feed, the statements' folder, the consistency checks), which
// know users by act id and read one journal at a time: the ops' UserID is
// left empty (checked as DecodeJournal checks it), and every Decode
// reuses one Journal and its ops, so a journal of n grants allocates
// neither a string nor an op per grant. The zero value is ready.
type TailDecoder struct{ j Journal }

// Decode decodes src as DecodeJournal does, but for the user ids, into the
// journal the previous Decode returned (which it overwrites).
func (t *TailDecoder) Decode(src []byte) (*Journal, error) {
	ops := t.j.Ops[:0]
	t.j = Journal{Ops: ops}
	if err := decodeJournal(decoder{b: src, noUsers: true}, &t.j); err != nil {
		return nil, err
	}
	return &t.j, nil
}

// decodeJournal decodes src into j, whose Ops it reuses (their capacity).
func decodeJournal(d decoder, j *Journal) error {
	v := d.byte1("version")
	if d.err == nil && v != journalVersion && v != journalVersion1 {
		return fmt.Errorf("%w: journal version %d", ErrCorrupt, v)
	}
	j.Seq, j.BookedAt, j.From, j.To = d.uvarint("seq"), d.varint("booked_at"), d.varint("from"), d.varint("to")
	if v == journalVersion1 {
		d.opsV1(j)
	} else {
		d.ops(j)
	}
	if err := d.end(); err != nil {
		return err
	}
	if j.Seq == 0 || j.To < j.From {
		return fmt.Errorf("%w: journal seq %d offsets [%d, %d)", ErrCorrupt, j.Seq, j.From, j.To)
	}
	return nil
}

// opsOf returns n zero ops in ops's room when it has enough.
func opsOf(ops []Op, n int) []Op {
	if cap(ops) < n {
		return make([]Op, n)
	}
	ops = ops[:n]
	clear(ops)
	return ops
}

// ops decodes the tables and ops of a version 2 journal.
func (d *decoder) ops(j *Journal) {
	strs := d.strTable("journal strings")
	ns := d.count("shapes")
	shapes := make([]grantShape, 0, ns)
	seen := make(map[grantShape]struct{}, ns)
	for i := 0; i < ns && d.err == nil; i++ {
		var g Grant
		d.keyFormat(&g)
		g.AppID = d.appID()
		g.ActivityID = d.strRef(&strs, "activity_id")
		g.SceneID = d.strRef(&strs, "scene_id")
		g.RainID = d.uvarint("rain_id")
		g.Stage = d.stage()
		g.AwardType = d.strRef(&strs, "award_type")
		g.Asset = Asset(d.strRef(&strs, "asset"))
		g.BudgetID = d.strRef(&strs, "budget_id")
		g.LeaseID = d.uvarint("lease_id")
		g.OpenTime = d.varint("open_time")
		sh := shapeOf(&g)
		if _, dup := seen[sh]; dup {
			d.fail("shape duplicate")
		}
		seen[sh] = struct{}{}
		shapes = append(shapes, sh)
	}
	d.strTableEnd(&strs, "journal strings")
	n := d.count("ops")
	j.Ops = opsOf(j.Ops, n)
	var act uint64
	issued := j.BookedAt
	used := 0 // shapes referenced so far, in the order of first use
	for i := 0; i < n && d.err == nil; i++ {
		op := &j.Ops[i]
		ks := d.uvarint("op kind")
		if d.err == nil && ks == opEscapeMove {
			op.Kind, op.Move = OpMove, d.moveOp(act)
			op.Grant.ActID, act = op.Move.ActID, op.Move.ActID
			continue
		}
		// An unknown kind is refused here, not first when the journal is
		// replayed: a reader skips the ops of accounts it does not read.
		switch op.Kind = byte(ks & (1<<opKindBits - 1)); op.Kind {
		case OpBook, OpAttribute, OpBind:
		default:
			d.fail("op kind")
		}
		si := ks >> opKindBits
		if d.err != nil || si > uint64(used) || si >= uint64(len(shapes)) {
			d.fail("op shape")
			break
		}
		if si == uint64(used) {
			used++
		}
		sh := &shapes[si]
		g := &op.Grant
		*g = Grant{Legacy: sh.legacy, AppID: sh.appID, ActivityID: sh.activityID, SceneID: sh.sceneID,
			RainID: sh.rainID, Stage: sh.stage, AwardType: sh.awardType, Asset: sh.asset,
			BudgetID: sh.budgetID, LeaseID: sh.leaseID, OpenTime: sh.openTime}
		g.ActID = act + uint64(d.varint("act_id"))
		if d.noUsers {
			d.skipString("user_id")
		} else {
			g.UserID = d.string("user_id")
		}
		g.Amount = d.varint("amount")
		g.IssuedAt = int64(uint64(issued) + uint64(d.varint("issued_at")))
		act, issued = g.ActID, g.IssuedAt
	}
	if d.err == nil && used != len(shapes) {
		d.fail("shapes unused")
	}
}

// opsV1 decodes the ops of a version 1 journal: whole grants.
func (d *decoder) opsV1(j *Journal) {
	n := d.count("ops")
	j.Ops = opsOf(j.Ops, n)
	for i := 0; i < n && d.err == nil; i++ {
		switch j.Ops[i].Kind = d.byte1("op kind"); j.Ops[i].Kind {
		case OpBook, OpAttribute, OpBind:
		default:
			d.fail("op kind")
		}
		d.grantAny(&j.Ops[i].Grant)
	}
}

// grantAny decodes a grant as AppendGrant wrote it. A bind's grant has no
// amount, so the positive-amount check of records does not apply here;
// Apply checks what each kind needs.
func (d *decoder) grantAny(g *Grant) {
	d.keyFormat(g)
	d.grantFields(g)
}

// PartState is the state of one grant topic partition's accounts: who owns
// them, how far the journal goes and how much of it the pages hold.
type PartState struct {
	// Epoch grows by one each time a node takes the partition over. Every
	// write of the partition's accounts rewrites this state in the same
	// transaction, so a writer whose epoch is stale (an owner paused past
	// a rebalance) conflicts or finds a newer epoch, and writes nothing.
	Epoch   uint64
	Owner   string // node id and incarnation of the epoch's owner, for operators
	NextSeq uint64 // the next journal's seq (the first is 1)
	Booked  int64  // the next grant topic offset to book
	// CkptSeq is how far every page of the partition reflects the journal:
	// an account is its page plus the journals after max(CkptSeq, page.Seq).
	CkptSeq uint64
	// Released says the epoch's owner gave the partition up cleanly: it
	// decides none of its grants any more and none of its records can
	// still land, so the next owner need not wait for them.
	Released bool
	// Fences are the budget leases whose grants this partition books only
	// below an offset (a reclaimed lease: see Fence), sorted by budget and
	// lease.
	Fences []Fence
}

// Fence says that a partition books a lease's grants only from records
// below From: any node may reclaim a lease LeaseReclaimGrace past its
// expiry, and its grants in later records, written by a holder that was
// paused or cut off, were never answered and are refused (and reported)
// so that the lease closes at exactly what was booked under it.
type Fence struct {
	BudgetID string
	LeaseID  uint64
	From     int64 // the first grant topic offset whose grants under the lease are refused
	At       int64 // when it was drawn (unix ms)
}

// cmpFence orders fences by budget and lease.
func cmpFence(a, b Fence) int {
	return cmp.Or(strings.Compare(a.BudgetID, b.BudgetID), cmp.Compare(a.LeaseID, b.LeaseID))
}

// FenceOf returns the fence of a lease, if the state holds one.
func (s *PartState) FenceOf(budgetID string, leaseID uint64) (Fence, bool) {
	i, found := slices.BinarySearchFunc(s.Fences, Fence{BudgetID: budgetID, LeaseID: leaseID}, cmpFence)
	if !found {
		return Fence{}, false
	}
	return s.Fences[i], true
}

// AddFence adds f unless the state holds a fence of its lease already,
// and returns the fence that holds.
func (s *PartState) AddFence(f Fence) Fence {
	i, found := slices.BinarySearchFunc(s.Fences, f, cmpFence)
	if found {
		return s.Fences[i]
	}
	s.Fences = slices.Insert(slices.Clone(s.Fences), i, f)
	return f
}

// Partition state versions: 2 added Released (a version 1 state is not
// released), 3 Fences.
const (
	partStateVersion   = 3
	partStateVersionV2 = 2
	partStateVersionV1 = 1
)

// AppendPartState appends the encoding of s.
func AppendPartState(dst []byte, s *PartState) []byte {
	dst = append(dst, partStateVersion)
	dst = appendUvarint(dst, s.Epoch)
	dst = appendString(dst, s.Owner)
	dst = appendUvarint(dst, s.NextSeq)
	dst = appendVarint(dst, s.Booked)
	dst = appendUvarint(dst, s.CkptSeq)
	released := byte(0)
	if s.Released {
		released = 1
	}
	dst = append(dst, released)
	dst = appendUvarint(dst, uint64(len(s.Fences)))
	for _, f := range s.Fences {
		dst = appendString(dst, f.BudgetID)
		dst = appendUvarint(dst, f.LeaseID)
		dst = appendVarint(dst, f.From)
		dst = appendVarint(dst, f.At)
	}
	return dst
}

// DecodePartState decodes what AppendPartState wrote, or a version 1 state.
func DecodePartState(src []byte) (*PartState, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != partStateVersion && v != partStateVersionV2 && v != partStateVersionV1 {
		return nil, fmt.Errorf("%w: partition state version %d", ErrCorrupt, v)
	}
	s := &PartState{Epoch: d.uvarint("epoch"), Owner: d.string("owner"), NextSeq: d.uvarint("next_seq"),
		Booked: d.varint("booked"), CkptSeq: d.uvarint("ckpt_seq")}
	if v >= partStateVersionV2 {
		switch d.byte1("released") {
		case 0:
		case 1:
			s.Released = true
		default:
			d.fail("released")
		}
	}
	if v >= partStateVersion {
		n := d.uvarint("fences")
		for i := uint64(0); i < n && d.err == nil; i++ {
			f := Fence{BudgetID: d.string("fence_budget"), LeaseID: d.uvarint("fence_lease"), From: d.varint("fence_from"), At: d.varint("fence_at")}
			if d.err == nil && (f.LeaseID == 0 || f.From < 0 || len(s.Fences) > 0 && cmpFence(s.Fences[len(s.Fences)-1], f) >= 0) {
				d.fail("fences")
			}
			s.Fences = append(s.Fences, f)
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if s.NextSeq == 0 || s.CkptSeq >= s.NextSeq || s.Booked < 0 {
		return nil, fmt.Errorf("%w: partition state next %d checkpoint %d booked %d", ErrCorrupt, s.NextSeq, s.CkptSeq, s.Booked)
	}
	return s, nil
}

// Page is a checkpoint of the accounts of one range of act_ids within one
// partition.
type Page struct {
	Seq      uint64     // the last journal it reflects
	Accounts []*Account // Invariant: sorted by ActID, unique
}

// Page versions. Version 1 held each account as MarshalAccount encodes it,
// behind its length (~130 bytes for an account with one entry of the demo
// campaign). Version 2 writes the page's strings once, at its head (assets,
// award types, and limit keys without their "{act_id}_" prefix: the
// accounts of one rain share the rest), and references them by index; an
// act_id is a delta from the previous account's, an out_trade_no in its
// usual form (32 lowercase hex digits) its 16 bytes, a booking time a delta
// from the previous entry's (~50 bytes for the same account). Version 1
// pages stay readable until their next checkpoint rewrites them. Version 3
// appends to an account with archived entries its monthly summaries
// (appendMonths: the asset a reference, ~4-6 bytes a month); those of an
// account with none archived are exactly its entries', derived on decode
// (writing them too cost ~7 more bytes for a one-entry account of ~48).
// An account of a version 1 or 2 page gets its summaries from its entries,
// or when it has archived entries from its chunks (SetArchivedKeys).
// Version 4 writes no out_trade_no for a grant's entry whose trade number
// derives from its limit key and award type (entryTradeDerived; every
// booked grant's does, Entry.TradeNo): ~31 bytes for the same account
// instead of ~48, a third of what a checkpoint writes. A node from before
// it refuses such a page instead of reading an empty trade number; on
// decode, an older page's trade numbers are emptied where they derive
// (Entry.OutTradeNo's invariant).
const pageVersion1, pageVersion2, pageVersion3, pageVersion = 1, 2, 3, 4

// Flags of an entry in a version 2 page.
const (
	entryKeyAct   byte = 1 << iota // the limit key is "{act_id}_" + the string referenced
	entryTradeHex                  // the out_trade_no is hex of the 16 bytes that follow
	// entryMove: a move's entry; its kind byte and move fields
	// (appendMoveFields) follow the lease. Pages before moves never set
	// it, so they decode unchanged.
	entryMove
	// entryTradeDerived (version 4): no out_trade_no follows; it derives
	// from the limit key and award type.
	entryTradeDerived
	entryFlagsV3  = entryKeyAct | entryTradeHex | entryMove
	entryFlagsAll = entryFlagsV3 | entryTradeDerived
)

// tradeNoBytes is how many bytes the usual out_trade_no encodes.
const tradeNoBytes = 16

// AppendPage appends the encoding of p (version 4).
func AppendPage(dst []byte, p *Page) []byte { return appendPage(dst, p, pageVersion) }

// appendPage appends p as version (2 to 4: the tests write older ones; in
// those a derived trade number is written whole).
func appendPage(dst []byte, p *Page, version byte) []byte {
	var strs strTable
	// The accounts are encoded first, for the strings they reference.
	body := make([]byte, 0, 64*len(p.Accounts)+8)
	body = appendUvarint(body, uint64(len(p.Accounts)))
	var act uint64
	var bookedAt int64
	var prefix []byte
	for _, a := range p.Accounts {
		body = appendUvarint(body, a.ActID-act)
		act = a.ActID
		body = appendUvarint(body, a.Version)
		body = appendBalances(body, &strs, a.Balances)
		body = appendUvarint(body, uint64(len(a.Entries)))
		prefix = strconv.AppendUint(prefix[:0], a.ActID, 10)
		prefix = append(prefix, '_')
		for i := range a.Entries {
			e := &a.Entries[i]
			key, flags := e.LimitKey, byte(0)
			if len(key) > len(prefix) && key[:len(prefix)] == string(prefix) {
				key, flags = key[len(prefix):], entryKeyAct
			}
			tradeNo := e.OutTradeNo
			derived := e.Move == nil && (tradeNo == "" || e.tradeNoDerives())
			if derived && version < pageVersion {
				tradeNo, derived = e.TradeNo(), false
			}
			otn, otnHex := tradeBytes(tradeNo)
			switch {
			case derived:
				flags |= entryTradeDerived
			case otnHex:
				flags |= entryTradeHex
			}
			if e.Move != nil {
				flags |= entryMove
			}
			body = append(body, flags)
			body = appendUvarint(body, strs.refIn(slotKey, key))
			switch {
			case derived:
			case otnHex:
				body = append(body, otn[:]...)
			default:
				body = appendString(body, tradeNo)
			}
			body = appendUvarint(body, strs.refIn(slotAward, e.AwardType))
			body = appendUvarint(body, strs.refIn(slotAsset, string(e.Asset)))
			body = appendVarint(body, e.Amount)
			body = appendVarint(body, int64(uint64(e.BookedAt)-uint64(bookedAt)))
			bookedAt = e.BookedAt
			body = appendUvarint(body, e.LeaseID)
			if e.Move != nil {
				body = append(body, byte(e.Move.Kind))
				body = appendMoveFields(body, e.Move)
			}
		}
		body = appendApps(body, a.Apps)
		body = appendUvarint(body, a.Archived)
		body = appendBalances(body, &strs, a.ArchivedSums)
		if version >= pageVersion3 {
			body = appendMonths(body, a, &strs)
		}
	}
	dst = append(dst, version)
	dst = appendUvarint(dst, p.Seq)
	dst = appendStrTable(dst, strs.list)
	return append(dst, body...)
}

func appendBalances(dst []byte, strs *strTable, bs []Balance) []byte {
	dst = appendUvarint(dst, uint64(len(bs)))
	for _, b := range bs {
		dst = appendUvarint(dst, strs.refIn(slotAsset, string(b.Asset)))
		dst = appendVarint(dst, b.Amount)
	}
	return dst
}

// isTradeHex reports whether s is an out_trade_no as tokens.OutTradeNo
// makes it: 32 lowercase hex digits.
func isTradeHex(s string) bool {
	_, ok := tradeBytes(s)
	return ok
}

// tradeBytes returns the 16 bytes of s when it is an out_trade_no
// (isTradeHex), checked and decoded in one pass.
func tradeBytes(s string) (b [tradeNoBytes]byte, ok bool) {
	if len(s) != 2*tradeNoBytes {
		return b, false
	}
	for i := range b {
		hi, lo := lowerHex(s[2*i]), lowerHex(s[2*i+1])
		if hi|lo > 0xf {
			return b, false
		}
		b[i] = hi<<4 | lo
	}
	return b, true
}

// lowerHex is the value of a lowercase hex digit, 0xff for any other byte.
func lowerHex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return 0xff
}

// DecodePage decodes what AppendPage writes, or a version 1 page, and
// checks every account.
func DecodePage(src []byte) (*Page, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && (v < pageVersion1 || v > pageVersion) {
		return nil, fmt.Errorf("%w: page version %d", ErrCorrupt, v)
	}
	p := &Page{Seq: d.uvarint("seq")}
	var err error
	if v == pageVersion1 {
		err = d.accountsV1(p)
	} else {
		err = d.accounts(p, v)
	}
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// accounts decodes the string table and accounts of a version 2, 3 or 4
// page (from 3 the accounts hold their monthly summaries).
func (d *decoder) accounts(p *Page, v byte) error {
	months, flagsAll := v >= pageVersion3, entryFlagsAll
	if v < pageVersion {
		flagsAll = entryFlagsV3
	}
	strs := d.strTable("page strings")
	n := d.count("accounts")
	p.Accounts = make([]*Account, 0, n)
	var act uint64
	var bookedAt int64
	var prefix []byte
	for i := 0; i < n && d.err == nil; i++ {
		delta := d.uvarint("act_id")
		if i > 0 && (delta == 0 || act+delta < act) {
			return fmt.Errorf("%w: page accounts not sorted", ErrCorrupt)
		}
		act += delta
		a := &Account{ActID: act, Version: d.uvarint("version")}
		a.Balances = d.balances(&strs, "balances")
		ne := d.count("entries")
		if ne > 0 {
			a.Entries = make([]Entry, 0, ne)
			prefix = strconv.AppendUint(prefix[:0], act, 10)
			prefix = append(prefix, '_')
		}
		for k := 0; k < ne && d.err == nil; k++ {
			var e Entry
			flags := d.byte1("entry flags")
			if flags&^flagsAll != 0 || flags&entryTradeDerived != 0 && flags&(entryTradeHex|entryMove) != 0 {
				d.fail("entry flags")
			}
			key := d.strRef(&strs, "limit_key")
			switch {
			case flags&entryKeyAct != 0:
				e.LimitKey = string(prefix) + key
			case len(key) > len(prefix) && key[:len(prefix)] == string(prefix):
				d.fail("limit_key prefix") // AppendPage would have taken it off
			default:
				e.LimitKey = key
			}
			switch {
			case flags&entryTradeDerived != 0:
			case flags&entryTradeHex != 0:
				if len(d.b) < tradeNoBytes {
					d.fail("out_trade_no")
					break
				}
				e.OutTradeNo = hex.EncodeToString(d.b[:tradeNoBytes])
				d.b = d.b[tradeNoBytes:]
			default:
				if e.OutTradeNo = d.string("out_trade_no"); isTradeHex(e.OutTradeNo) {
					d.fail("out_trade_no form") // AppendPage would have written its bytes
				}
			}
			e.AwardType = d.strRef(&strs, "award_type")
			e.Asset = Asset(d.strRef(&strs, "asset"))
			e.Amount = d.varint("amount")
			e.BookedAt = int64(uint64(bookedAt) + uint64(d.varint("booked_at")))
			bookedAt = e.BookedAt
			e.LeaseID = d.uvarint("lease_id")
			if flags&entryMove != 0 {
				k := MoveKind(d.byte1("entry kind"))
				if k == 0 {
					d.fail("entry kind")
				}
				e.Move = d.moveFields(k)
			}
			if e.Move == nil && flags&entryTradeDerived == 0 {
				switch {
				case e.OutTradeNo == "":
					d.fail("out_trade_no empty") // a grant's entry has one, derived or whole
				case v < pageVersion:
					e.canonTradeNo()
				case e.tradeNoDerives():
					d.fail("out_trade_no written whole") // AppendPage would have derived it
				}
			}
			a.Entries = append(a.Entries, e)
		}
		a.Apps = d.apps()
		a.Archived = d.uvarint("archived")
		a.ArchivedSums = d.balances(&strs, "archived sums")
		d.months(a, months, &strs)
		if d.err != nil {
			break
		}
		if err := a.Check(); err != nil {
			return err
		}
		p.Accounts = append(p.Accounts, a)
	}
	d.strTableEnd(&strs, "page strings")
	return nil
}

func (d *decoder) balances(strs *strRefs, what string) []Balance {
	n := d.count(what)
	if n == 0 {
		return nil
	}
	bs := make([]Balance, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		bs = append(bs, Balance{Asset: Asset(d.strRef(strs, what+" asset")), Amount: d.varint(what)})
	}
	return bs
}

// accountsV1 decodes the accounts of a version 1 page.
func (d *decoder) accountsV1(p *Page) error {
	n := d.count("accounts")
	p.Accounts = make([]*Account, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		size := d.count("account size")
		if d.err != nil {
			break
		}
		a, err := UnmarshalAccount(d.b[:size])
		if err != nil {
			return err
		}
		d.b = d.b[size:]
		if k := len(p.Accounts); k > 0 && p.Accounts[k-1].ActID >= a.ActID {
			return fmt.Errorf("%w: page accounts not sorted", ErrCorrupt)
		}
		p.Accounts = append(p.Accounts, a)
	}
	return nil
}

// Find returns the page's account of actID, or nil.
func (p *Page) Find(actID uint64) *Account {
	i, ok := slices.BinarySearchFunc(p.Accounts, actID, func(a *Account, id uint64) int {
		switch {
		case a.ActID < id:
			return -1
		case a.ActID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return p.Accounts[i]
}
