package booking_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestJournalsUpTo: a partition's journals are scanned from a seq, at most
// max of them, without its neighbours' and without reading its state; a
// gap is ErrCorrupt.
func TestJournalsUpTo(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	put := func(p int32, seqs ...uint64) {
		for _, s := range seqs {
			j := &ledger.Journal{Seq: s, BookedAt: int64(s), Ops: []ledger.Op{{Kind: ledger.OpBind,
				Grant: ledger.Grant{AppID: 1, ActID: uint64(p)*100 + s, UserID: "u"}}}}
			bookingtest.Put(t, kv, storage.JournalKey(p, s), ledger.AppendJournal(nil, j))
		}
	}
	put(0, 1, 2, 3)
	put(1, 1, 2, 3, 4, 5)
	put(2, 1, 2)
	put(3, 1, 3) // a gap
	var dec ledger.TailDecoder
	read := func(p int32, from uint64, max int) ([]uint64, int, error) {
		var seqs []uint64
		var n int
		err := kv.View(func(txn storage.Txn) error {
			var err error
			n, err = booking.JournalsUpTo(txn, p, from, max, &dec, func(j *ledger.Journal) error {
				if j.Ops[0].Grant.ActID != uint64(p)*100+j.Seq || j.Ops[0].Grant.UserID != "" {
					t.Errorf("partition %d journal %d: op %+v", p, j.Seq, j.Ops[0].Grant)
				}
				seqs = append(seqs, j.Seq)
				return nil
			})
			return err
		})
		return seqs, n, err
	}
	for _, tc := range []struct {
		p    int32
		from uint64
		max  int
		want []uint64
	}{
		{1, 1, 10, []uint64{1, 2, 3, 4, 5}},
		{1, 3, 2, []uint64{3, 4}},
		{1, 5, 1, []uint64{5}},
		{1, 6, 10, nil},
		{0, 2, 100, []uint64{2, 3}},
		{2, 1, math.MaxInt, []uint64{1, 2}},
		{1, math.MaxUint64 - 1, 10, nil}, // from + max overflows: to the partition's end
		{1, 1, 0, nil},
	} {
		seqs, n, err := read(tc.p, tc.from, tc.max)
		if err != nil || n != len(tc.want) || !slices.Equal(seqs, tc.want) {
			t.Errorf("JournalsUpTo(partition %d, from %d, max %d) = %v (%d), %v; want %v", tc.p, tc.from, tc.max, seqs, n, err, tc.want)
		}
	}
	if _, _, err := read(3, 1, 10); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("a gap in partition 3's journals: %v, want ErrCorrupt", err)
	}
	// JournalsFrom wants every journal of its range.
	from := func(p int32, lo, hi uint64) ([]uint64, error) {
		var seqs []uint64
		err := kv.View(func(txn storage.Txn) error {
			return booking.JournalsFrom(txn, p, lo, hi, func(j *ledger.Journal) error { seqs = append(seqs, j.Seq); return nil })
		})
		return seqs, err
	}
	if seqs, err := from(1, 2, 4); err != nil || !slices.Equal(seqs, []uint64{2, 3, 4}) {
		t.Errorf("JournalsFrom(partition 1, 2, 4) = %v, %v", seqs, err)
	}
	if seqs, err := from(1, 4, 3); err != nil || seqs != nil {
		t.Errorf("JournalsFrom(partition 1, 4, 3) = %v, %v; want nothing", seqs, err)
	}
	if _, err := from(1, 3, 7); !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "ends at 5, 7 was due") {
		t.Errorf("JournalsFrom past partition 1's last journal: %v, want ErrCorrupt (ends at 5, 7 was due)", err)
	}
}
