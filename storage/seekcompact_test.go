package storage_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/pingcap/goleveldb/leveldb"
	"github.com/pingcap/goleveldb/leveldb/opt"
	"github.com/pingcap/goleveldb/leveldb/util"

	"redrain/storage"
)

// TestEmbeddedStoreSkipsSeekCompactions: the embedded store's goleveldb
// (third_party/goleveldb) schedules no compaction for a level-0 table that
// reads look past once TuneEmbeddedStore has run, where goleveldb's own
// rule (the control) merges it into level 1 after ~100 such reads.
func TestEmbeddedStoreSkipsSeekCompactions(t *testing.T) {
	storage.TuneEmbeddedStore()
	if !opt.DefaultDisableSeeksCompaction {
		t.Fatal("TuneEmbeddedStore left seek compactions on")
	}
	for _, tc := range []struct {
		name   string
		off    bool
		level0 int // level-0 tables left after the reads
	}{
		{"goleveldb's rule", false, 0},
		{"tuned", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt.DefaultDisableSeeksCompaction = tc.off
			t.Cleanup(func() { opt.DefaultDisableSeeksCompaction = true })
			if got := level0AfterReadsPast(t); got != tc.level0 {
				t.Fatalf("level-0 tables after 1,000 reads past the one there: %d, want %d", got, tc.level0)
			}
		})
	}
}

// level0AfterReadsPast builds a level 1 of 10,000 keys and one level-0
// table whose keys span them, reads 1,000 keys that only level 1 holds
// (each looks past the level-0 table first), lets any compaction those
// reads scheduled run, and returns the level-0 table count.
func level0AfterReadsPast(t *testing.T) int {
	db, err := leveldb.OpenFile(t.TempDir(), &opt.Options{
		WriteBuffer:         256 << 10,
		CompactionL0Trigger: 8,
		CompactionTotalSize: 1 << 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	value := make([]byte, 100)
	key := func(i int, suffix string) []byte { return fmt.Appendf(nil, "k%06d%s", i, suffix) }
	for i := range 10_000 {
		if err := db.Put(key(i, ""), value, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CompactRange(util.Range{}); err != nil {
		t.Fatal(err)
	}
	if n := level0(t, db); n != 0 {
		t.Fatalf("%d level-0 tables after compacting everything", n)
	}
	// A memtable and a little more (2,600 entries of ~108 bytes against
	// 256 KiB, less than two), every third key: one memtable is flushed,
	// and its table, spanning level 1's keys, stays in level 0.
	for i := range 2_600 {
		if err := db.Put(key(3*i, "+"), value, nil); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); level0(t, db) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no memtable flushed in 30 s") // the flush runs in the background
		}
	}
	if n := level0(t, db); n != 1 {
		t.Fatalf("%d level-0 tables after one memtable's writes, want 1", n)
	}
	for i := range 1_000 {
		if _, err := db.Get(key(1+3*i, ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	// A compaction a read scheduled runs on the compaction goroutine after
	// the command it is handling; two range compactions of nothing go
	// through that goroutine in turn, so any such compaction has run when
	// the second returns.
	for range 2 {
		if err := db.CompactRange(util.Range{Start: []byte("z"), Limit: []byte("zz")}); err != nil {
			t.Fatal(err)
		}
	}
	return level0(t, db)
}

func level0(t *testing.T, db *leveldb.DB) int {
	s, err := db.GetProperty("leveldb.num-files-at-level0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
