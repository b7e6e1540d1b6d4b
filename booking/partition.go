package booking

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/storage"
)

// Outcomes of booking one grant.
const (
	BookedBefore byte = 0 // its limit key was already booked: nothing changed
	BookedNow    byte = 1
	BookedAttrib byte = 2 // booked earlier by redeem; now its lease is known
)

// How often an owner checkpoints its dirty pages: after ckptJournals
// journals or ckptEvery, whichever comes first. A reader that is not the
// owner replays at most that much journal on top of a page.
const (
	ckptJournals = 64
	ckptEvery    = 5 * time.Second
)

// journalBytesPerOp is what an encoded journal op takes, about (a grant to
// a new user in BenchmarkOwnerBooks: 18 bytes, 13 of them the app's user
// id; the journal's string and shape tables are few bytes more), so that a
// journal's buffer is allocated once.
const journalBytesPerOp = 32

// accountBytes is what an account with one entry takes in a page, about
// (48 bytes in BenchmarkOwnerBooks), for a page's buffer.
const accountBytes = 64

// pipelineDepth bounds the units of one partition applied in memory and
// not yet committed: the next batch is decoded and applied while the
// previous one commits.
const pipelineDepth = 2

// resultsMax bounds the commit results a partition has not read yet, so
// that the committer never waits on a partition (whose goroutine may be
// waiting to send the committer units, behind other partitions' units: a
// deadlock of every partition). A partition has at most pipelineDepth+1
// units in flight (the last a timed checkpoint); when a write elsewhere
// fails them, reading the first failure sends them all again, and those
// may be answered before the other stale failures are read.
const resultsMax = 2 * (pipelineDepth + 1)

// errFenced reports that another node took the partition over.
var errFenced = errors.New("booking: partition taken over by another owner")

// part is one partition's accounts on the node that books the partition.
// Only the partition's goroutine touches it. Accounts are never changed in
// place: a unit replaces each account it changes with a changed copy and
// keeps the one it replaced, so uncommitted units roll back exactly.
type part struct {
	b  *Booker
	id int32
	// stuck is a record booking cannot read or book, not parked yet: the
	// partition takes no record after it until Park sets it aside. held
	// are records taken from the stream after it (booked once it is
	// parked); skip is the offset of a parked record that decodes (its
	// grants broke a money check), never booked.
	stuck    *sarama.ConsumerMessage
	held     []*sarama.ConsumerMessage
	skip     int64
	stuckWhy error // why, when stuck's grants break a money check
	marked   bool  // the store names stuck and why (markStuck)
	epoch    uint64
	// pages hold the partition's accounts, by page (storage.PageOf): a
	// lookup is a probe of this map of pages (a thousand or so a million
	// users, small enough to stay in cache) and a binary search of one
	// page's ~64 act_ids, never a probe of a map of every user.
	pages map[uint64]*pageMem
	// hotPages are the pages not frozen, each once (pageMem.listed): the
	// ones sweep looks at.
	hotPages []uint64

	committed ledger.PartState // as the store holds it after our last known commit
	next      ledger.PartState // after every applied unit
	pending   []*unit          // applied and sent to the committer, oldest first
	gen       uint64           // bumped whenever pending units are dropped

	// spare are the grant slices of settled units, for gather to decode
	// into (each unit's grants stay its own until it settles).
	spare [][]ledger.Grant
	// spareTouched is a settled unit's touched set, cleared: sized once
	// for a burst's units of ~4,000 grants instead of made for every unit.
	spareTouched touchedSet

	results chan result
	ops     chan *opsReq
	reads   chan *readReq
	gone    chan struct{} // closed when the partition's goroutine stopped

	sinceCkpt int // journals applied since the last checkpoint started
	lastCkpt  time.Time
	lastSweep int64      // monoNow's clock at the last sweep
	round     *ckptRound // a checkpoint under way, nil if none

	tenure *Tenure
	// target is the topic's end read once the previous owner's records can
	// no longer land (at targetAt, monoNow's clock), -1 until then.
	target   int64
	targetAt int64
	told     bool // Sessions.Owned was called
}

// tellOwned tells the sessions listener that the partition is this node's
// once the store holds everything up to target.
func (p *part) tellOwned() {
	if p.told {
		return
	}
	if p.target < 0 {
		if monoNow() < p.targetAt {
			return
		}
		p.target = 0
		if p.b.tail != nil {
			end, err := p.b.tail(p.id)
			if err != nil {
				p.target = -1
				p.b.log.Warn("booking: reading the partition's end; retrying", "partition", p.id, "err", err)
				return
			}
			p.target = end
		}
	}
	if p.committed.Booked < p.target {
		return
	}
	p.told = true
	if s := p.b.sessions; s != nil {
		p.b.log.Info("booking: partition booked to its end; its grants are decided here", "partition", p.id, "offset", p.committed.Booked)
		s.Owned(p.tenure)
	}
}

// fenced reports whether a grant in the record at offset is under a
// lease the partition fenced at or before offset. Fences are in next, the
// state after every applied unit: a reset of next to what the store holds
// re-applies the uncommitted units, fence requests among them.
func (p *part) fenced(g *ledger.Grant, offset int64) bool {
	if g.LeaseID == 0 {
		return false
	}
	f, ok := p.next.FenceOf(g.BudgetID, g.LeaseID)
	return ok && offset >= f.From
}

// refuseFenced removes from grants[n0:] (the record at offset) the grants
// under fenced leases, reports them and appends the record of them to
// refused, to be kept with the unit.
func (p *part) refuseFenced(grants []ledger.Grant, n0 int, offset int64, refused *[]pageWrite) []ledger.Grant {
	if len(p.next.Fences) == 0 {
		return grants
	}
	var out []ledger.Grant
	kept := grants[:n0]
	for _, g := range grants[n0:] {
		if p.fenced(&g, offset) {
			out = append(out, g)
			continue
		}
		kept = append(kept, g)
	}
	if len(out) == 0 {
		return grants
	}
	var sum int64
	for _, g := range out {
		sum += g.Amount
	}
	p.b.fencedGrants.Add(int64(len(out)))
	p.b.log.Warn("booking: refused grants under a fenced lease (their holder wrote them after the lease was reclaimed; they were never answered)",
		"partition", p.id, "offset", offset, "grants", len(out), "amount", sum, "budget", out[0].BudgetID, "lease", out[0].LeaseID)
	*refused = append(*refused, pageWrite{key: storage.FencedKey(p.id, offset), value: ledger.AppendGrantRecord(nil, out)})
	return kept
}

// drawFence adds a fence of f's lease from max(f.From, the next offset
// to book) to the partition's next state, unless one holds already, and
// returns the fence that holds.
func (p *part) drawFence(f ledger.Fence) ledger.Fence {
	f.From = max(f.From, p.next.Booked)
	return p.next.AddFence(f)
}

type pageMem struct {
	ids     []uint64          // act_ids of the page's accounts, sorted
	accts   []*ledger.Account // their accounts, in the same order (nil while cold)
	dirtyAt uint64            // seq of the newest journal not checkpointed (0: clean)
	// frozen is the page encoded as its accounts are now, or nil; cold: its
	// accounts are only there, accts is nil; seen: an account of it was
	// looked up since the last sweep (frozen.go).
	frozen []byte
	cold   bool
	seen   bool
	listed bool // in part.hotPages
	// newAccts hands out the page's new accounts, many to an allocation
	// (dropped when the page freezes, with the accounts).
	newAccts ledger.AccountChunk
}

// unit is one change of a partition: applied in memory, then committed.
type unit struct {
	p     *part
	gen   uint64
	epoch uint64
	// reported: its commit succeeded and OnBooked heard of it, before the
	// partition's goroutine settles it; reads count it committed (set by
	// the committer, read by the partition's goroutine).
	reported atomic.Bool
	first    uint64           // the store's NextSeq this unit expects before it
	state    ledger.PartState // the partition's state after it

	journal []byte      // encoded journal, nil when it booked nothing
	chunks  []pageWrite // history chunks its bookings archived
	pages   []pageWrite
	ckpt    uint64   // the journal seq the pages reflect
	pageIDs []uint64 // the pages it writes

	// ops are its journal's ops (what it booked and attributed, in order);
	// booked counts its OpBook ones; bookedAt is the journal's booking
	// time.
	ops      []ledger.Op
	booked   int
	bookedAt int64
	// moves are the moves it booked with the legs they booked (a
	// withdrawal debt's split), for its postings; results answer its
	// request's moves, one each.
	moves   []ledger.Move
	results []ledger.MoveResult
	touched touchedSet // the accounts it replaced
	// deltas is what the unit moved on its accounts' balances, per asset,
	// computed from the accounts (not from the grants): the committer
	// compares it with the budgets' debits.
	deltas assetSums

	// Its inputs, applied again after a failure.
	grants []ledger.Grant
	// refused are the records of grants it refused under fenced leases,
	// kept in the store with the unit (storage.FencedKey).
	refused  []pageWrite
	from, to int64
	last     *sarama.ConsumerMessage
	req      *opsReq
	outcomes []byte
}

type pageWrite struct {
	key, value []byte
}

type result struct {
	u   *unit
	err error
}

// opsReq asks a partition's owner to book grants at once (redeem), or
// moves (Booker.Move).
type opsReq struct {
	grants   []ledger.Grant
	outcomes []byte
	moves    []ledger.Move
	results  []ledger.MoveResult
	done     chan error
	// fence, when set, asks the owner to fence a lease (Booker.Fence):
	// the unit carries no grants, its state the fence, and fence is set to
	// the fence that holds once it is committed.
	fence *ledger.Fence
}

// readReq asks a partition's owner for committed accounts.
type readReq struct {
	ids []uint64
	out map[uint64]*ledger.Account
	// at, when set, is the partition's state as a reader on another node
	// read it from the store: the owner answers only if its committed
	// accounts are at least that new, and sets status.
	at     *ledger.PartState
	status byte
	done   chan struct{}
}

// takeOver makes this node the partition's owner: it bumps the epoch (which
// fences the previous owner) and loads every account of the partition.
func (b *Booker) takeOver(ctx context.Context, id int32) (*part, error) {
	var v *view
	var released bool
	err := b.tikv.Update(ctx, func(txn storage.Txn) error {
		var err error
		if v, err = loadPartition(ctx, txn, id); err != nil {
			return err
		}
		released = v.state.Epoch == 0 || v.state.Released
		v.state.Epoch++
		v.state.Owner = b.owner
		v.state.Released = false
		return txn.Set(storage.PartKey(id), ledger.AppendPartState(nil, v.state))
	})
	if err != nil {
		return nil, err
	}
	p := &part{b: b, id: id, epoch: v.state.Epoch, pages: map[uint64]*pageMem{}, skip: -1,
		committed: *v.state, next: *v.state,
		results: make(chan result, resultsMax), ops: make(chan *opsReq), reads: make(chan *readReq),
		lastCkpt: b.clock(), target: -1, targetAt: monoNow()}
	if !released {
		p.targetAt += int64(b.wait)
	}
	p.putAll(v.accounts)
	// What the journals after the checkpoint changed is in no page yet.
	for k, seq := range v.touched {
		p.markDirty(k, seq)
	}
	b.log.Info("booking: took partition over", "partition", id, "epoch", p.epoch, "released", released,
		"accounts", len(v.accounts), "booked_offset", v.state.Booked, "journal", v.state.NextSeq-1)
	return p, nil
}

// put makes a the account of id (a new one or a replacement).
func (p *part) put(id uint64, a *ledger.Account) {
	pg, i, found := p.locate(id, true)
	if found {
		pg.accts[i] = a
		return
	}
	pg.insert(i, id, a)
}

// putAll puts accounts (a loaded partition's), in act_id order so that
// each page is built by appends.
func (p *part) putAll(accounts map[uint64]*ledger.Account) {
	for _, id := range slices.Sorted(maps.Keys(accounts)) {
		p.put(id, accounts[id])
	}
}

// remove drops the account of id (one a unit created, undone: its page is
// hot, thawed here all the same).
func (p *part) remove(id uint64) {
	if pg, i, found := p.locate(id, false); found {
		pg.ids = slices.Delete(pg.ids, i, i+1)
		pg.accts = slices.Delete(pg.accts, i, i+1)
	}
}

func (p *part) newUnit() *unit {
	return &unit{p: p, gen: p.gen, epoch: p.epoch, first: p.next.NextSeq}
}

// touchedSet is what a unit replaced: each account it touched, once, in
// the order it first touched it, and an index of them by act_id. A unit
// finds an account it touched again, and marks it changed, through the
// one index, and walks the list for what it changed (its versions, its
// money's second computation, its dirty pages) and what it puts back:
// one map for all of it, where a map of the replaced accounts and a
// second of the changed ones each took an insert and probes per grant.
type touchedSet struct {
	at    map[uint64]int32 // act_id → its place in accts; dropped once put back
	accts []touchedAcct
}

// touchedAcct is one account a unit touched.
type touchedAcct struct {
	id      uint64
	prev    *ledger.Account // the account it replaced, nil when the unit made it
	cur     *ledger.Account // the unit's copy, the partition's account now
	changed bool            // an op of the unit changed it
	back    bool            // unchanged, and prev put back in its place
}

// touch returns the account of id that unit u may change, a copy of the
// current one (or a new one) that replaces it, and its place in
// u.touched.accts. The page is looked up and searched once.
func (p *part) touch(u *unit, id uint64) (*ledger.Account, int32) {
	if i, ok := u.touched.at[id]; ok {
		return u.touched.accts[i].cur, i
	}
	t := touchedAcct{id: id}
	if pg, i, found := p.locate(id, true); found {
		t.prev = pg.accts[i]
		t.cur = t.prev.Clone()
		pg.accts[i] = t.cur
	} else {
		t.cur = pg.newAccts.New(id)
		pg.insert(i, id, t.cur)
	}
	i := int32(len(u.touched.accts))
	u.touched.at[id] = i
	u.touched.accts = append(u.touched.accts, t)
	return t.cur, i
}

// apply applies u's inputs in memory and fills its journal, state and
// outcomes. It fails only on a broken money invariant, after undoing u.
func (p *part) apply(u *unit) error {
	now := p.b.clock().UnixMilli()
	gs := u.grants
	if u.req != nil {
		gs = u.req.grants
		if u.req.fence != nil {
			*u.req.fence = p.drawFence(*u.req.fence)
		}
	}
	j := ledger.Journal{BookedAt: now, From: u.from, To: u.to, Ops: make([]ledger.Op, 0, len(gs))}
	u.outcomes = make([]byte, len(gs))
	// The unit's touched set sized for its grants and moves, each touching
	// an account at most once (a map grown key by key rehashed a dozen
	// times over a burst's units of ~4,000 grants).
	touches := len(gs)
	if u.req != nil {
		touches += len(u.req.moves)
	}
	if u.touched.at == nil {
		u.touched = p.newTouched(touches)
	}
	for i := range gs {
		g := &gs[i]
		a, t := p.touch(u, g.ActID)
		// The op is made in its place in the journal (a grant is ~170
		// bytes: copied once, not into a local and again by append), and
		// dropped from it if it changes nothing.
		j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpBook, Grant: *g})
		op := &j.Ops[len(j.Ops)-1]
		ok, err := op.Apply(a, now)
		if err == nil && !ok && g.LeaseID != 0 {
			op.Kind = ledger.OpAttribute
			ok, err = op.Apply(a, now)
		}
		if err != nil {
			p.undo(u)
			return &grantError{index: i, err: fmt.Errorf("partition %d act %d: %w", p.id, g.ActID, err)}
		}
		if !ok {
			j.Ops = j.Ops[:len(j.Ops)-1]
			continue
		}
		if n, entries, sealed := a.TakeSealed(); sealed {
			u.chunks = append(u.chunks, pageWrite{key: storage.HistKey(a.ActID, n), value: ledger.AppendChunk(nil, a.ActID, n, entries)})
		}
		u.touched.accts[t].changed = true
		if op.Kind == ledger.OpBook {
			u.outcomes[i] = BookedNow
			u.booked++
		} else {
			u.outcomes[i] = BookedAttrib
		}
	}
	if u.req != nil && len(u.req.moves) > 0 {
		if err := p.applyMoves(u, &j, now); err != nil {
			p.undo(u)
			return err
		}
	}
	u.ops, u.bookedAt = j.Ops, j.BookedAt
	// A changed account's version moves; one it looked at and left
	// unchanged keeps the copy it replaced.
	for i := range u.touched.accts {
		t := &u.touched.accts[i]
		if t.changed {
			t.cur.Version++
			continue
		}
		p.restore(t.id, t.prev)
		delete(u.touched.at, t.id)
		t.back = true
	}
	if err := p.checkDeltas(u); err != nil {
		p.undo(u)
		return err
	}
	if len(j.Ops) > 0 {
		j.Seq = p.next.NextSeq
		p.next.NextSeq++
		u.journal = ledger.AppendJournal(make([]byte, 0, journalBytesPerOp*len(j.Ops)+32), &j)
		p.sinceCkpt++
		for i := range u.touched.accts {
			if t := &u.touched.accts[i]; t.changed {
				p.markDirty(storage.PageOf(t.id), j.Seq)
			}
		}
	}
	if u.to > p.next.Booked {
		p.next.Booked = u.to
	}
	u.state = p.next
	return nil
}

// applyMoves applies the moves of u's request after its grants: each is
// booked (its op in the journal, the legs it booked in u.moves) or
// answered for what it changed nothing. Moves were validated before they
// were sent (Booker.Move), so an error is a broken invariant.
func (p *part) applyMoves(u *unit, j *ledger.Journal, now int64) error {
	moves := u.req.moves
	u.results = make([]ledger.MoveResult, len(moves))
	u.moves = u.moves[:0]
	for i := range moves {
		m := &moves[i]
		a, t := p.touch(u, m.ActID)
		r, legs, err := a.ApplyMove(m, now)
		if err != nil {
			return fmt.Errorf("partition %d act %d move %q: %w", p.id, m.ActID, m.Key, err)
		}
		u.results[i] = r
		if r != ledger.MoveApplied {
			continue
		}
		if n, entries, sealed := a.TakeSealed(); sealed {
			u.chunks = append(u.chunks, pageWrite{key: storage.HistKey(a.ActID, n), value: ledger.AppendChunk(nil, a.ActID, n, entries)})
		}
		u.touched.accts[t].changed = true
		// The journal holds the move as booked (a withdrawal debt's
		// split), so its readers (statements, the wallet) post what the
		// account did, and a replay makes the same split.
		booked := new(ledger.Move)
		*booked = *m
		booked.Legs = legs
		u.moves = append(u.moves, *booked)
		j.Ops = append(j.Ops, ledger.MoveOp(booked))
	}
	return nil
}

// checkDeltas is the second computation of a unit's money: the change of
// every balance it made, summed per asset from the accounts (each
// account's after minus before), must equal the grants it booked plus the
// legs of the moves it booked, summed from the grants and moves. A unit
// holds few assets, so the sums are short lists. The accounts it changed,
// and those they replaced, are in u.touched.
func (p *part) checkDeltas(u *unit) error {
	var byGrants, byAccounts assetSums
	for i := range u.ops {
		if g := &u.ops[i].Grant; u.ops[i].Kind == ledger.OpBook {
			if err := byGrants.add(g.Asset, g.Amount); err != nil {
				return err
			}
		}
	}
	for i := range u.moves {
		for _, l := range u.moves[i].Legs {
			if err := byGrants.add(l.Asset, l.Amount); err != nil {
				return err
			}
		}
	}
	for i := range u.touched.accts {
		t := &u.touched.accts[i]
		if !t.changed {
			continue
		}
		for _, bal := range t.cur.Balances {
			d := bal.Amount
			if t.prev != nil {
				d -= t.prev.Balance(bal.Asset)
			}
			if err := byAccounts.add(bal.Asset, d); err != nil {
				return err
			}
		}
	}
	u.deltas = byAccounts
	for _, a := range byAccounts {
		if g := byGrants.of(a.Asset); a.Amount != g {
			return fmt.Errorf("%w: partition %d: balances moved %d %s, booked grants and moves sum to %d", ledger.ErrUnbalanced, p.id, a.Amount, a.Asset, g)
		}
	}
	for _, g := range byGrants {
		if g.Amount != 0 && byAccounts.of(g.Asset) == 0 {
			return fmt.Errorf("%w: partition %d: grants and moves of %d %s moved no balance", ledger.ErrUnbalanced, p.id, g.Amount, g.Asset)
		}
	}
	return nil
}

// assetSums are sums per asset, in the order the assets came.
type assetSums []ledger.Balance

func (s *assetSums) add(asset ledger.Asset, v int64) error {
	for i := range *s {
		if (*s)[i].Asset == asset {
			sum, err := ledger.Add((*s)[i].Amount, v)
			(*s)[i].Amount = sum
			return err
		}
	}
	*s = append(*s, ledger.Balance{Asset: asset, Amount: v})
	return nil
}

func (s assetSums) of(asset ledger.Asset) int64 {
	for _, b := range s {
		if b.Asset == asset {
			return b.Amount
		}
	}
	return 0
}

func (p *part) restore(id uint64, prev *ledger.Account) {
	if prev == nil {
		p.remove(id)
		return
	}
	p.put(id, prev)
}

// undo puts back every account u replaced.
func (p *part) undo(u *unit) {
	for i := len(u.touched.accts) - 1; i >= 0; i-- {
		if t := &u.touched.accts[i]; !t.back {
			p.restore(t.id, t.prev)
		}
	}
	u.touched = touchedSet{}
}

// ckptPagesPerUnit bounds the pages one unit carries: a checkpoint is
// spread over as many units as it needs, so that no commit stalls the
// partition (measured: every dirty page in one unit, each checkpoint every
// 5 s held booking up for a second or more at 15k grants/s).
const ckptPagesPerUnit = 32

// ckptRound is a checkpoint under way: the pages dirty when it started, to
// be written by the units that follow, and the journal seq every page will
// reflect once they are.
type ckptRound struct {
	start uint64
	todo  []uint64
}

// checkpoint attaches to u up to ckptPagesPerUnit of the pages of the
// round under way (starting one if none is), each as it is after u. The
// unit that writes the round's last pages moves the partition's checkpoint
// to the round's start: its earlier units commit before it or with it.
func (p *part) checkpoint(u *unit) {
	seq := p.next.NextSeq - 1
	if p.round == nil {
		r := &ckptRound{start: seq}
		for k, pg := range p.pages {
			if pg.dirtyAt != 0 {
				r.todo = append(r.todo, k)
			}
		}
		slices.Sort(r.todo)
		p.round = r
		p.sinceCkpt = 0
		p.lastCkpt = p.b.clock()
	}
	n := min(len(p.round.todo), ckptPagesPerUnit)
	for _, k := range p.round.todo[:n] {
		pg := p.pages[k]
		value := pg.frozen
		if !pg.cold {
			page := ledger.Page{Seq: seq, Accounts: pg.accts}
			value = ledger.AppendPage(make([]byte, 0, accountBytes*len(page.Accounts)+16), &page)
		}
		// A cold page (frozen once its changes committed, or clean since
		// an earlier round) is written as it froze (frozen.go).
		u.pages = append(u.pages, pageWrite{key: storage.PageKey(p.id, k), value: value})
		u.pageIDs = append(u.pageIDs, k)
	}
	u.ckpt = seq
	p.round.todo = p.round.todo[n:]
	if len(p.round.todo) == 0 {
		p.next.CkptSeq = max(p.next.CkptSeq, p.round.start)
		p.round = nil
	}
	u.state = p.next
}

// ckptDue reports whether the next unit should carry checkpoint pages.
func (p *part) ckptDue() bool {
	return p.round != nil || p.next.NextSeq-1 > p.next.CkptSeq &&
		(p.sinceCkpt >= ckptJournals || p.b.clock().Sub(p.lastCkpt) >= ckptEvery)
}

// send applies u and hands it to the committer; a broken money invariant
// stops the partition.
func (p *part) send(ctx context.Context, u *unit) error {
	if err := p.apply(u); err != nil {
		return err
	}
	if p.ckptDue() {
		p.checkpoint(u)
	}
	if u.journal == nil && u.pages == nil && u.state.Booked == p.committed.Booked && len(p.pending) == 0 &&
		(u.req == nil || u.req.fence == nil) && len(u.refused) == 0 {
		// Nothing to write (every grant a duplicate of a stored offset).
		p.finish(u)
		return nil
	}
	p.pending = append(p.pending, u)
	select {
	case p.b.commits[int(p.id)%len(p.b.commits)] <- u:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle takes the committer's answer for a unit.
func (p *part) settle(ctx context.Context, sess sarama.ConsumerGroupSession, r result) error {
	if r.u.gen != p.gen {
		return nil // dropped by an earlier failure; its inputs were applied again
	}
	if r.err != nil {
		return p.recover(ctx, r.err)
	}
	if len(p.pending) == 0 || p.pending[0] != r.u {
		return fmt.Errorf("booking: partition %d committed out of order", p.id)
	}
	p.pending = p.pending[1:]
	p.committed = r.u.state
	p.tellOwned()
	for i, k := range r.u.pageIDs {
		// Written as it was at u.ckpt: clean unless changed since, and then
		// those bytes are the page as it is.
		if pg := p.pages[k]; pg != nil && pg.dirtyAt <= r.u.ckpt {
			pg.dirtyAt = 0
			p.written(k, r.u.pages[i].value)
		}
	}
	if r.u.last != nil && sess != nil {
		sess.MarkMessage(r.u.last, "")
	}
	p.finish(r.u)
	p.recycle(r.u)
	if e := p.b.sweepEvery; e > 0 && monoNow()-p.lastSweep >= int64(e) {
		p.sweep() // under load, between the loop's ticks
	}
	return nil
}

// recycle keeps a settled unit's grant slice for gather: a burst decoded
// ~4,000 grants a unit into a new slice each time (a third of booking's
// allocated bytes, with the slices it outgrew).
func (p *part) recycle(u *unit) {
	if u.req == nil && cap(u.grants) > 0 && len(p.spare) <= pipelineDepth {
		clear(u.grants) // their strings go with the unit
		p.spare = append(p.spare, u.grants[:0])
	}
	u.grants = nil
}

// grantSlice returns a slice for gather to decode a unit's records into,
// of at least n grants' room: a spare one or a new one.
func (p *part) grantSlice(n int) []ledger.Grant {
	for len(p.spare) > 0 {
		g := p.spare[len(p.spare)-1]
		p.spare = p.spare[:len(p.spare)-1]
		if cap(g) >= n {
			return g
		}
	}
	return make([]ledger.Grant, 0, n)
}

// newTouched returns an empty set for a unit's replaced accounts: a
// settled unit's (finish), or a new one sized for n.
func (p *part) newTouched(n int) touchedSet {
	if s := p.spareTouched; s.at != nil {
		p.spareTouched = touchedSet{}
		return s
	}
	return touchedSet{at: make(map[uint64]int32, n), accts: make([]touchedAcct, 0, n)}
}

// finish answers a unit's waiter.
func (p *part) finish(u *unit) {
	if s := u.touched; s.at != nil && p.spareTouched.at == nil {
		clear(s.at)
		clear(s.accts) // the accounts go with the unit
		p.spareTouched = touchedSet{at: s.at, accts: s.accts[:0]}
	}
	u.touched = touchedSet{}
	if u.req != nil {
		u.req.outcomes, u.req.results = u.outcomes, u.results
		u.req.done <- nil
	}
}

// recover handles a failed commit: money errors stop the partition, a
// newer epoch ends its ownership; otherwise a write made elsewhere (redeem
// or bind on a node that does not own the partition) is read from the
// journal and every uncommitted input is applied again on top of it.
func (p *part) recover(ctx context.Context, cause error) error {
	inputs := p.pending
	for i := len(inputs) - 1; i >= 0; i-- {
		p.undo(inputs[i])
	}
	p.pending, p.next = nil, p.committed
	p.gen++
	p.round = nil // its pages are still dirty: the next round writes them
	err := cause
	if !isMoneyErr(cause) && !errors.Is(cause, errFenced) {
		err = p.catchUp(ctx, cause)
	}
	if err != nil {
		for _, u := range inputs {
			if u.req != nil {
				u.req.done <- err
			}
		}
		return err
	}
	for _, old := range inputs {
		u := p.newUnit()
		u.grants, u.from, u.to, u.last, u.req, u.refused = old.grants, old.from, old.to, old.last, old.req, old.refused
		if err := p.send(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// catchUp applies the journals written elsewhere since the last commit,
// retrying while the store is unavailable.
func (p *part) catchUp(ctx context.Context, cause error) error {
	for attempt := 0; ; attempt++ {
		foreign, state, err := p.readForeign(ctx)
		if err == nil {
			for _, j := range foreign {
				if err := p.replayForeign(j); err != nil {
					return err
				}
			}
			// What another node booked into the partition is news to the
			// grant path here, as this node's own bookings are.
			for _, j := range foreign {
				p.b.report(p.id, j.Seq, j.BookedAt, j.Ops)
			}
			p.committed, p.next = *state, *state
			p.b.log.Info("booking: caught up with writes made elsewhere", "partition", p.id, "journals", len(foreign), "cause", cause)
			return nil
		}
		if errors.Is(err, errFenced) || isMoneyErr(err) || ctx.Err() != nil {
			return err
		}
		p.b.log.Warn("booking: reading the partition's journal", "partition", p.id, "err", err, "attempt", attempt)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(attempt+1)*50*time.Millisecond, time.Second)):
		}
	}
}

// refresh catches an idle partition up with writes made elsewhere. A
// partition with units in flight finds them when those commit; an idle one
// would otherwise keep answering Booker.Accounts (wallets, token status)
// without a redeem or bind another node committed, for as long as no
// record arrives. One read of the partition's state per tick.
func (p *part) refresh(ctx context.Context) error {
	if len(p.pending) > 0 {
		return nil
	}
	var s *ledger.PartState
	err := p.b.tikv.View(func(txn storage.Txn) error {
		var err error
		s, err = readPartState(ctx, txn, p.id)
		return err
	})
	if err != nil {
		if isMoneyErr(err) {
			return err
		}
		p.b.log.Warn("booking: reading the partition's state", "partition", p.id, "err", err)
		return nil // the next tick tries again
	}
	if s.Epoch == p.epoch && s.NextSeq == p.committed.NextSeq {
		return nil
	}
	return p.catchUp(ctx, errMoved)
}

// readForeign reads the partition's state and the journals after our last
// commit.
func (p *part) readForeign(ctx context.Context) ([]*ledger.Journal, *ledger.PartState, error) {
	var foreign []*ledger.Journal
	var state *ledger.PartState
	err := p.b.tikv.View(func(txn storage.Txn) error {
		var err error
		if state, err = readPartState(ctx, txn, p.id); err != nil {
			return err
		}
		if state.Epoch != p.epoch {
			return fmt.Errorf("%w: epoch %d, ours %d", errFenced, state.Epoch, p.epoch)
		}
		// Under our epoch only we move the booked offset: ahead of what we
		// know, it is a transaction of ours that committed although its
		// commit reported an error (an undetermined result), and its
		// journals are replayed like foreign ones (its inputs then book
		// nothing again). Giving the partition up as fenced would leave it
		// unbooked until the group's next rebalance.
		if state.Booked < p.committed.Booked {
			return fmt.Errorf("%w: partition %d booked offset moved back from %d to %d under our epoch %d", errFenced, p.id, p.committed.Booked, state.Booked, p.epoch)
		}
		start, end := storage.JournalKey(p.id, p.committed.NextSeq), storage.JournalKey(p.id, state.NextSeq)
		return storage.ScanTxn(txn, start, end, func(_, raw []byte) (bool, error) {
			j, err := ledger.DecodeJournal(raw)
			if err != nil {
				return false, err
			}
			foreign = append(foreign, j)
			return true, nil
		})
	})
	return foreign, state, err
}

// replayForeign applies a journal another writer committed.
func (p *part) replayForeign(j *ledger.Journal) error {
	if j.Seq != p.next.NextSeq {
		return fmt.Errorf("%w: partition %d journal %d where %d was due", ledger.ErrCorrupt, p.id, j.Seq, p.next.NextSeq)
	}
	bumped := map[uint64]bool{}
	for i := range j.Ops {
		op := &j.Ops[i]
		id := op.Grant.ActID
		a := p.account(id)
		if a == nil {
			a = ledger.NewAccount(id)
		} else if !bumped[id] {
			a = a.Clone()
		}
		p.put(id, a)
		if err := replayOp(p.id, j, i, a, bumped); err != nil {
			return err
		}
		p.markDirty(storage.PageOf(id), j.Seq)
	}
	p.next.NextSeq++
	p.sinceCkpt++
	return nil
}

// read answers committed accounts: an account a pending unit replaced is
// read as that unit found it.
func (p *part) read(r *readReq) {
	if r.at != nil {
		// A later epoch took over at least the state the reader saw (the
		// journal seq only grows); within its epoch, the committed seq must
		// have reached the reader's, or a journal written elsewhere is not
		// in memory yet (refresh or the next commit catches up).
		switch {
		case p.epoch > r.at.Epoch || p.epoch == r.at.Epoch && p.committed.NextSeq >= r.at.NextSeq:
			r.status = readServed
		case p.epoch < r.at.Epoch:
			r.status = readNotOwner
		default:
			r.status = readBehind
		}
		if r.status != readServed {
			close(r.done)
			return
		}
	}
	for _, id := range r.ids {
		a := p.account(id)
		for _, u := range p.pending {
			if u.reported.Load() {
				// Committed and reported booked: a reader told so sees it.
				continue
			}
			if i, ok := u.touched.at[id]; ok {
				a = u.touched.accts[i].prev
				break
			}
		}
		if a != nil {
			// Readers get their own copy: an account's entry index is
			// built lazily on read.
			r.out[id] = a.Clone()
		}
	}
	close(r.done)
}

// grantError is a grant of a unit that booking cannot book: its index in
// the unit's grants, and why (a broken money invariant).
type grantError struct {
	index int
	err   error
}

func (e *grantError) Error() string { return e.err.Error() }
func (e *grantError) Unwrap() error { return e.err }

// isMoneyErr reports a broken money invariant: never retried with the same
// memory.
func isMoneyErr(err error) bool {
	for _, e := range []error{ledger.ErrInvariant, ledger.ErrCorrupt, ledger.ErrOverflow, ledger.ErrUnbalanced} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
