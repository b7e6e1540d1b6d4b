package wallet_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/holders"
	"redrain/ledger"
	"redrain/storage"
	"redrain/wallet"
)

// journal is one journal of the store, as the booking would hand it to
// the tap.
type journal struct {
	part int32
	seq  uint64
	ops  []ledger.Op
}

// journalsAfter reads every journal of the store after have.
func journalsAfter(t *testing.T, r *rig, have []uint64) []journal {
	t.Helper()
	var out []journal
	var dec ledger.TailDecoder
	err := r.f.KV.View(func(txn storage.Txn) error {
		for p := range int32(parts) {
			if _, err := booking.JournalsUpTo(txn, p, have[p]+1, 1<<20, &dec, func(j *ledger.Journal) error {
				out = append(out, journal{part: p, seq: j.Seq, ops: slices.Clone(j.Ops)})
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func seqs(t *testing.T, r *rig) []uint64 {
	t.Helper()
	var have []uint64
	if err := r.f.KV.View(func(txn storage.Txn) error {
		var err error
		have, err = booking.JournalSeqs(context.Background(), txn, parts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return have
}

func miniClient(t *testing.T) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestFeedTakesTappedJournals: the journals the booking handed the tap are
// applied without a store read; from a journal the tap missed (a gap) on,
// the partition is read from the store; and the Feed's results (holders,
// tombstones, positions) are those of a Feed that read everything from the
// store. A journal handed again after the Feed passed it changes nothing.
func TestFeedTakesTappedJournals(t *testing.T) {
	r := newRig(t, miniClient(t), wallet.Config{})
	users := r.users(48)
	plain := wallet.New(wallet.Config{TiKV: r.f.KV, Parts: parts, Redis: miniClient(t), Log: quiet})
	for _, w := range []*wallet.Wallets{r.w, plain} {
		if err := w.BuildHolders(r.ctx); err != nil { // before the bookings: the polls add their users
			t.Fatal(err)
		}
	}
	start := seqs(t, r)
	for i, u := range users {
		r.book(u, int64(10+i))
	}
	js := journalsAfter(t, r, start)
	if len(js) != len(users) {
		t.Fatalf("%d journals for %d bookings", len(js), len(users))
	}
	// The tap misses the second journal of the first partition that has
	// three or more: that one and the partition's later ones are read.
	perPart := map[int32]int{}
	for _, j := range js {
		perPart[j.part]++
	}
	gapPart := int32(-1)
	for p := range int32(parts) {
		if perPart[p] >= 3 {
			gapPart = p
			break
		}
	}
	if gapPart < 0 {
		t.Fatalf("no partition has three journals: %v", perPart)
	}
	wantRead := perPart[gapPart] - 1
	for _, j := range js {
		if j.part == gapPart && j.seq == start[gapPart]+2 {
			continue
		}
		r.w.Journal(j.part, j.seq, j.ops)
	}

	tappedHave, plainHave := slices.Clone(start), slices.Clone(start)
	for name, w := range map[string]*wallet.Wallets{"tapped": r.w, "plain": plain} {
		have := map[string][]uint64{"tapped": tappedHave, "plain": plainHave}[name]
		if more, err := w.Poll(r.ctx, have); err != nil || more {
			t.Fatalf("%s: Poll = %v, %v", name, more, err)
		}
	}
	if got := r.w.JournalsRead(); got != int64(wantRead) {
		t.Fatalf("tapped feed read %d journals from the store, want %d (the gap's partition from the gap on)", got, wantRead)
	}
	if got := plain.JournalsRead(); got != int64(len(js)) {
		t.Fatalf("plain feed read %d journals from the store, want %d", got, len(js))
	}
	if r.w.Applied() != int64(len(js)) || plain.Applied() != int64(len(js)) {
		t.Fatalf("applied %d and %d journals, want %d", r.w.Applied(), plain.Applied(), len(js))
	}
	if end := seqs(t, r); !slices.Equal(tappedHave, end) || !slices.Equal(plainHave, end) {
		t.Fatalf("positions after the poll: tapped %v, plain %v, store %v", tappedHave, plainHave, end)
	}
	tp, pp := r.w.PendingTombstones(), plain.PendingTombstones()
	if len(tp) != len(users) || !maps.Equal(tp, pp) {
		t.Fatalf("tombstones: tapped %v, plain %v", tp, pp)
	}
	for _, u := range users {
		if a, b := r.w.Holders().Any(u), plain.Holders().Any(u); a != holders.Yes || b != holders.Yes {
			t.Fatalf("act %d: holders say %v (tapped) and %v (plain), want yes", u, a, b)
		}
	}

	// Handed again, behind the Feed: skipped.
	for _, j := range js {
		r.w.Journal(j.part, j.seq, j.ops)
	}
	if _, err := r.w.Poll(r.ctx, tappedHave); err != nil {
		t.Fatal(err)
	}
	if r.w.Applied() != int64(len(js)) || r.w.JournalsRead() != int64(wantRead) {
		t.Fatalf("after journals handed again: applied %d, read %d", r.w.Applied(), r.w.JournalsRead())
	}
}
