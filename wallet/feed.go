package wallet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"redrain/booking"
	"redrain/holders"
	"redrain/ledger"
	"redrain/storage"
)

// The Feed: every Poll, one snapshot of the store gives each partition's
// last journal seq and the journals after the ones already applied (at
// most journalsPerPoll a poll, the rest at the next). Their book ops are
// the users who now hold something of the asset's family (a grant only
// credits: amounts are positive), applied to the holders set as one batch
// after their commit; every account a journal changed (book, attribute,
// bind) gets a tombstone in Redis at that journal's seq. Tombstones Redis
// did not take stay pending, and reads of those users skip Redis until
// they are written. Journals are never deleted, so the Feed has no gaps to
// fear; a batch the holders set refuses invalidates it until it is built
// again.

// journalsPerPoll bounds the journals one poll applies.
const journalsPerPoll = 4096

// pendingMax bounds the tombstones kept while Redis fails; past it the
// whole second layer is distrusted until it is emptied (see Run).
const pendingMax = 1 << 21

// Run builds the holders set from the store and feeds it and Redis until
// ctx ends. It retries what fails.
func (w *Wallets) Run(ctx context.Context) {
	parts := w.cfg.Parts
	var have []uint64
	for {
		err := w.cfg.TiKV.View(func(txn storage.Txn) error {
			var err error
			have, err = booking.JournalSeqs(ctx, txn, parts)
			return err
		})
		if err == nil {
			break
		}
		w.feedErrors.Inc()
		w.log.Warn("wallet: reading the partitions' journal positions; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}
	w.feedOK.Store(w.cfg.Clock().UnixNano())
	rebuild := make(chan struct{}, 1)
	rebuild <- struct{}{}
	done := make(chan struct{})
	go func() { defer close(done); w.buildLoop(ctx, rebuild) }()
	defer func() { <-done }()
	defer w.checks.start(ctx)() // the continuous cache check (recheck.go)
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	f := &feedState{have: have}
	for {
		if w.cache != nil && f.target == nil {
			w.resume(ctx, f)
		}
		gen := w.pollGen.Add(1)
		more, err := w.poll(ctx, f.have)
		if err != nil {
			w.feedErrors.Inc()
			w.log.Warn("wallet: feed poll", "err", err)
			gen = 0 // holds nothing released
		}
		if w.set.Any(1) == holders.Unknown && w.builtOnce.Load() {
			select {
			case rebuild <- struct{}{}:
			default:
			}
		}
		w.flushPending(ctx, f, gen)
		if more {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// feedState is where the Feed stands: have, the last journal applied per
// partition; marked, the watermarks it wrote; target, the positions it
// found at its start, which the tombstones must reach before Redis is
// trusted (nil until the watermarks were read).
type feedState struct {
	have, marked, target []uint64
	// fenced are the fences it raised, refreshed every fenceEvery (a
	// Redis that lost them refuses every fill until then).
	fenced   []uint64
	fencedAt time.Time
}

// fenceEvery is how often the Feed writes every partition's fence again.
const fenceEvery = time.Second

// resume reads the watermarks in Redis and moves the Feed back to them
// where they are behind it, so that it writes the tombstones of the
// journals booked while no Feed ran; a partition without one (Redis new
// or emptied: it holds no summary either) starts where it is.
func (w *Wallets) resume(ctx context.Context, f *feedState) {
	// Before any fence of this Feed: a list that begins with no fence
	// up names every summary from its start.
	if _, _, err := w.cache.listStart(ctx); err != nil {
		w.log.Warn("wallet: reading the start of the list of summaries in Redis; reads skip Redis until it is read", "err", err)
		return
	}
	marks, err := w.cache.watermarks(ctx, len(f.have))
	if err != nil {
		w.log.Warn("wallet: reading the tombstone watermarks in Redis; reads skip Redis until they are read", "err", err)
		return
	}
	f.target = slices.Clone(f.have)
	f.marked = make([]uint64, len(f.have))
	for p, m := range marks {
		if m >= 0 && uint64(m) < f.have[p] {
			f.have[p] = uint64(m)
		}
		f.marked[p] = f.have[p]
		if m < 0 {
			f.marked[p] = 0 // written at the first flush
		}
	}
}

// buildLoop builds the holders set whenever asked, retrying failures.
func (w *Wallets) buildLoop(ctx context.Context, rebuild <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-rebuild:
		}
		for {
			start := w.cfg.Clock()
			err := w.build(ctx)
			if err == nil {
				w.builtOnce.Store(true)
				w.builds.Inc()
				w.log.Info("wallet: holders built from the store", "took", w.cfg.Clock().Sub(start).Round(time.Millisecond), "bytes", w.set.Bytes())
				break
			}
			w.feedErrors.Inc()
			w.log.Warn("wallet: building holders from the store; retrying (reads go to Redis and the store meanwhile)", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
		}
	}
}

// build swaps in a holders set scanned from the store.
func (w *Wallets) build(ctx context.Context) error {
	return w.set.Build(func(yield func(act uint64, fam holders.Family) bool) error {
		return booking.ScanAccounts(ctx, w.cfg.TiKV, func(a *ledger.Account) (bool, error) {
			for _, b := range a.Balances {
				if b.Amount == 0 {
					continue
				}
				fam, ok := holders.FamilyOf(b.Asset)
				if !ok {
					return false, fmt.Errorf("%w: act %d holds asset %q of no family", ledger.ErrCorrupt, a.ActID, b.Asset)
				}
				if !yield(a.ActID, fam) {
					return false, nil
				}
			}
			return true, nil
		})
	})
}

// poll applies the journals committed since have (updated in place) and
// reports whether more were left for the next poll.
func (w *Wallets) poll(ctx context.Context, have []uint64) (bool, error) {
	// Sized as the last poll's: a poll under a steady rate changes about
	// as many accounts as the one before (grown key by key, the maps were
	// most of a poll's CPU). adds may name a user and family more than
	// once (holders.Set.Apply takes repeats; a set of them cost a map
	// insert per grant).
	changed := make(map[uint64]uint64, w.lastChanged)
	adds := make([]holders.Change, 0, w.lastChanged)
	// debited are the users and families a move took from: whether they
	// still hold anything of it is read from their accounts.
	debited := map[holders.Change]struct{}{}
	var removes []holders.Change
	to := make([]uint64, len(have))
	copy(to, have)
	more := false
	journals, read := 0, 0
	// The journals this node's booking committed since the last poll, taken
	// before the snapshot below begins: it holds each of them.
	tapped := w.tap.take()
	err := w.cfg.TiKV.View(func(txn storage.Txn) error {
		// apply applies journal seq of partition p; held: the holders set
		// already took its grants (Journal).
		apply := func(p int32, seq uint64, ops []ledger.Op, held bool) error {
			for i := range ops {
				g := &ops[i].Grant
				changed[g.ActID] = seq
				if ops[i].Kind == ledger.OpMove && g.ActID <= holders.MaxAct {
					if err := moveChanges(ops[i].Move, &adds, debited); err != nil {
						return fmt.Errorf("partition %d journal %d: %w", p, seq, err)
					}
					continue
				}
				if held || ops[i].Kind != ledger.OpBook || g.ActID > holders.MaxAct {
					continue
				}
				fam, ok := holders.FamilyOf(g.Asset)
				if !ok {
					return fmt.Errorf("%w: partition %d journal %d books asset %q of no family", ledger.ErrCorrupt, p, seq, g.Asset)
				}
				adds = append(adds, holders.Change{Act: g.ActID, Family: fam})
			}
			return nil
		}
		// Each partition's journals after the last applied: first those
		// the tap holds from there on.
		for p := range w.cfg.Parts {
			for _, t := range tapped.run(p, to[p]+1, journalsPerPoll-journals) {
				if err := apply(p, t.seq, t.ops, t.held); err != nil {
					return err
				}
				to[p]++
				journals++
			}
		}
		// Then the store's (unless the tap filled the poll).
		more = journals == journalsPerPoll
		var err error
		if !more {
			more, read, err = w.scanAfter(ctx, txn, to, journalsPerPoll-journals, apply)
			journals += read
		}
		if err != nil {
			return err
		}
		removes, err = stillHeld(ctx, txn, w.cfg.Parts, &adds, debited)
		return err
	})
	if err != nil {
		return false, err
	}
	w.feedOK.Store(w.cfg.Clock().UnixNano())
	if journals == 0 {
		return false, nil
	}
	if err := w.set.Apply(adds, removes); err != nil {
		// The set cannot take it: answer Unknown until built again.
		w.set.Invalidate()
		w.log.Error("wallet: holders refused a batch of the feed; rebuilding", "err", err)
	}
	copy(have, to)
	w.lastChanged = len(changed)
	w.journals.Add(int64(journals))
	w.journalsRead.Add(int64(read))
	w.checks.saw(changed)
	if w.cache != nil && len(changed) > 0 {
		w.pendMu.Lock()
		if w.distrust.Load() || len(w.pending)+len(changed) > pendingMax {
			w.distrust.Store(true)
			clear(w.pending)
			w.hold.clear()
		} else if len(w.pending) == 0 {
			w.pending = changed // the tombstones of this poll alone
		} else {
			for act, seq := range changed {
				w.pending[act] = max(w.pending[act], seq)
			}
		}
		w.pendings.Store(int64(len(w.pending) + w.hold.len()))
		w.pendMu.Unlock()
	}
	return more, nil
}

// scanAfter applies, in txn, at most max of the store's journals after
// the positions to (updated in place), and reports whether it stopped at
// max and how many it read. One read of every partition's next journal
// key says which partitions have one (an idle partition, or one whose
// journals all came through the tap, costs no scan), and those are
// scanned from there (a partition's state key, rewritten by every commit,
// is not read: DESIGN.md, *Booking under a sustained rate*).
func (w *Wallets) scanAfter(ctx context.Context, txn storage.Txn, to []uint64, max int, apply func(p int32, seq uint64, ops []ledger.Op, held bool) error) (more bool, read int, err error) {
	next := make([][]byte, w.cfg.Parts)
	for p := range w.cfg.Parts {
		next[p] = storage.JournalKey(p, to[p]+1)
	}
	found, err := storage.BatchGet(ctx, txn, next)
	if err != nil {
		return false, 0, err
	}
	for p := range w.cfg.Parts {
		if found[string(next[p])] == nil {
			continue
		}
		left := max - read
		if left == 0 {
			return true, read, nil
		}
		n, err := booking.JournalsUpTo(txn, p, to[p]+1, left, &w.tail, func(j *ledger.Journal) error {
			return apply(p, j.Seq, j.Ops, false)
		})
		if err != nil {
			return false, read, err
		}
		read += n
		to[p] += uint64(n)
		if n == left {
			more = true // perhaps
		}
	}
	return more, read, nil
}

// flushPending writes the pending tombstones, releases the holds of the
// polls up to gen (0: none), then raises the watermarks to where the Feed
// stands. After an overflow it removes every summary from
// Redis instead (the tombstones past pendingMax were not kept); reads skip
// Redis until then. Only Run's goroutine changes pending, so it is read
// here without the lock.
func (w *Wallets) flushPending(ctx context.Context, f *feedState, gen uint64) {
	if w.cache == nil || f.target == nil {
		return
	}
	// The fences first: no fill of a read older than what the tombstones
	// below cover may land once they are up.
	fences := map[int]uint64{}
	refresh := f.fenced == nil || w.cfg.Clock().Sub(f.fencedAt) >= fenceEvery
	if f.fenced == nil {
		f.fenced = make([]uint64, len(f.have))
	}
	for p, seq := range f.have {
		if refresh || seq > f.fenced[p] {
			fences[p] = seq
		}
	}
	err := w.cache.fence(ctx, fences)
	if len(fences) > 0 {
		w.redisDown.Store(err != nil)
	}
	if err != nil {
		w.log.Warn("wallet: raising the fences in Redis; retrying (reads of changed users skip Redis meanwhile)", "err", err)
		return
	}
	for p, seq := range fences {
		f.fenced[p] = seq
	}
	if refresh {
		f.fencedAt = w.cfg.Clock()
	}
	switch {
	case w.distrust.Load():
		if err := w.cache.dropAll(ctx); err != nil {
			w.log.Warn("wallet: removing every summary from Redis after too many pending tombstones; retrying (reads skip Redis meanwhile)", "err", err)
			return
		}
		w.distrust.Store(false)
	case w.pendings.Load() > 0:
		if err := w.cache.drop(ctx, w.pending); err != nil {
			w.log.Warn("wallet: writing tombstones to Redis; retrying (reads of those users skip Redis meanwhile)", "pending", len(w.pending), "err", err)
			return
		}
		w.pendMu.Lock()
		clear(w.pending)
		w.pendings.Store(int64(w.hold.len()))
		w.pendMu.Unlock()
	}
	if gen > 0 && w.pendings.Load() > 0 {
		w.pendMu.Lock()
		w.hold.release(gen)
		w.pendings.Store(int64(len(w.pending) + w.hold.len()))
		w.pendMu.Unlock()
	}
	raise := map[int]uint64{}
	for p, seq := range f.have {
		if seq > f.marked[p] {
			raise[p] = seq
		}
	}
	if err := w.cache.mark(ctx, raise); err != nil {
		w.log.Warn("wallet: raising the tombstone watermarks in Redis; retrying", "err", err)
		return
	}
	for p, seq := range raise {
		f.marked[p] = seq
	}
	if !w.cacheReady.Load() {
		for p, seq := range f.have {
			if seq < f.target[p] {
				return
			}
		}
		w.cacheReady.Store(true)
		w.log.Info("wallet: Redis's summaries trusted: tombstones written up to where the feed started")
	}
}

// sleep waits d or until ctx ends, reporting whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// moveChanges notes what a booked move means to the holders: a credit
// makes the user a holder of the leg's family, a debit may end it (asked
// of the account: stillHeld).
func moveChanges(m *ledger.Move, adds *[]holders.Change, debited map[holders.Change]struct{}) error {
	for _, l := range m.Legs {
		fam, ok := holders.FamilyOf(l.Asset)
		if !ok {
			return fmt.Errorf("%w: a move of asset %q of no family", ledger.ErrCorrupt, l.Asset)
		}
		c := holders.Change{Act: m.ActID, Family: fam}
		if l.Amount > 0 {
			*adds = append(*adds, c)
		} else {
			debited[c] = struct{}{}
		}
	}
	// A withdrawal debt's journaled leg is the payout (cash -n); the
	// cash:debt it may book is money too, so the account decides.
	return nil
}

// stillHeld reads, in the poll's snapshot, the accounts that moves debited
// and decides each debited family: held (some balance of it above zero:
// an add) or no longer (a remove, and no add). The snapshot holds at least
// the journals polled, so a later credit it already holds keeps the user
// a holder, and one it does not hold yet comes with a later poll.
func stillHeld(ctx context.Context, txn storage.Txn, parts int32, adds *[]holders.Change, debited map[holders.Change]struct{}) ([]holders.Change, error) {
	if len(debited) == 0 {
		return nil, nil
	}
	ids := make([]uint64, 0, len(debited))
	seen := make(map[uint64]bool, len(debited))
	for c := range debited {
		if !seen[c.Act] {
			seen[c.Act] = true
			ids = append(ids, c.Act)
		}
	}
	accounts, _, err := booking.ReadAccountsAt(ctx, txn, parts, ids)
	if err != nil {
		return nil, err
	}
	var removes []holders.Change
	gone := map[holders.Change]bool{}
	for c := range debited {
		held := false
		if a := accounts[c.Act]; a != nil {
			for _, b := range a.Balances {
				if f, ok := holders.FamilyOf(b.Asset); ok && f == c.Family && b.Amount > 0 {
					held = true
					break
				}
			}
		}
		if held {
			*adds = append(*adds, c)
		} else {
			gone[c] = true
			removes = append(removes, c)
		}
	}
	if len(gone) > 0 {
		*adds = slices.DeleteFunc(*adds, func(c holders.Change) bool { return gone[c] })
	}
	return removes, nil
}
