package booking

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// Tenure is this node's hold on one partition's accounts, as the grant path
// sees it: the grant shard of the partition decides its users' limits in
// process only while the tenure is valid.
//
// A tenure is valid while booking owns the partition and the store showed
// the owner's epoch less than TenureGrace ago. Booking confirms the epochs
// of every owned partition every confirmEvery, apart from its commits (a
// commit may wait behind the grant path or a slow store). A node paused
// long enough for the booking group to hand its partitions to another
// member (the group's session timeout, 10 s) finds every confirmation stale
// when it resumes, and its grant path decides nothing for those users until
// booking has read whether the partitions are still its own.
type Tenure struct {
	Partition int32
	epoch     uint64
	confirmed atomic.Int64 // monotonic ns (monoNow) when a read that showed our epoch began
	ended     atomic.Bool
}

// TenureGrace is how long a confirmation of a tenure counts.
const TenureGrace = 3 * time.Second

// confirmEvery is how often booking reads the states of its partitions to
// confirm its tenures.
const confirmEvery = 500 * time.Millisecond

// monoBase anchors monoNow: time.Since reads the monotonic clock, which
// runs on while the process is stopped.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// Valid reports whether the tenure is held and recently confirmed.
func (t *Tenure) Valid() bool {
	return !t.ended.Load() && monoNow()-t.confirmed.Load() < int64(TenureGrace)
}

// confirm records that a read begun at at showed the tenure's epoch.
func (t *Tenure) confirm(at int64) {
	for {
		old := t.confirmed.Load()
		if at <= old || t.confirmed.CompareAndSwap(old, at) {
			return
		}
	}
}

// Sessions hears when this node's booking gains and loses partitions; the
// grant path decides a partition's users only in between.
type Sessions interface {
	// Owned says the partition's accounts are this node's and booked up to
	// the end of the grant topic as it was when booking took the partition
	// over: every grant that an earlier owner issued for its users is in
	// the store. It is called on the partition's goroutine and must not
	// block.
	Owned(t *Tenure)
	// Lost says the partition is no longer this node's (its booking session
	// ended, another node fenced it, or booking stopped). It is called
	// before the booking group can hand the partition to another member,
	// after t stopped being valid, and returns once nothing more is decided
	// for the partition's users here.
	Lost(t *Tenure)
}

// Watch makes s hear of the partitions this node gains and loses. Call it
// before Run.
func (b *Booker) Watch(s Sessions) { b.sessions = s }

// confirmLoop confirms the tenures of the owned partitions every
// confirmEvery until ctx ends: one snapshot read of their states. A tenure
// whose epoch moved ends at once (the partition's goroutine finds out on
// its own and gives the partition up).
func (b *Booker) confirmLoop(ctx context.Context) {
	t := time.NewTicker(confirmEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.confirmTenures(ctx)
	}
}

func (b *Booker) confirmTenures(ctx context.Context) {
	b.mu.Lock()
	tenures := make([]*Tenure, 0, len(b.owned))
	for _, o := range b.owned {
		if o.tenure != nil {
			tenures = append(tenures, o.tenure)
		}
	}
	b.mu.Unlock()
	if len(tenures) == 0 {
		return
	}
	at := monoNow()
	err := b.tikv.View(func(txn storage.Txn) error {
		for _, t := range tenures {
			s, err := readPartState(ctx, txn, t.Partition)
			if err != nil {
				return err
			}
			if s.Epoch == t.epoch {
				t.confirm(at)
			} else {
				t.ended.Store(true)
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		b.log.Warn("booking: confirming partition tenures", "err", err)
	}
}

// releaseTimeout bounds writing a partition's release.
const releaseTimeout = 5 * time.Second

// release marks partition p released in the store if its epoch is still
// ours, retrying write conflicts (a redeem written elsewhere); a failure
// only makes the next owner wait (Config.UncleanWait).
func (b *Booker) release(p *part) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		err = b.tikv.Update(ctx, func(txn storage.Txn) error {
			s, err := readPartState(ctx, txn, p.id)
			if err != nil || s.Epoch != p.epoch {
				return err
			}
			s.Released = true
			return txn.Set(storage.PartKey(p.id), ledger.AppendPartState(nil, s))
		})
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.log.Warn("booking: releasing the partition; its next owner will wait", "partition", p.id, "err", err)
}

// awaitPending waits up to d for the committer's answers to the units the
// partition sent before it stopped, so that none of them commits (and
// rewrites the state) after its release.
func (p *part) awaitPending(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(p.pending) > 0 {
		select {
		case r := <-p.results:
			if i := slices.Index(p.pending, r.u); i >= 0 {
				p.pending = slices.Delete(p.pending, i, i+1)
			}
		case <-t.C:
			return
		}
	}
}

// PartOwner returns who owns partition p's accounts as the store says
// ("" when no node ever took it over): the Owner the node gave booking's
// Config.
func PartOwner(ctx context.Context, tikv *storage.TiKV, p int32) (string, error) {
	var owner string
	err := tikv.View(func(txn storage.Txn) error {
		s, err := readPartState(ctx, txn, p)
		if err == nil {
			owner = s.Owner
		}
		return err
	})
	return owner, err
}
