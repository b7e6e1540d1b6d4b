package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"redrain/storage"
)

// TestMemoryStoreTransactions checks the rules the simulation relies on:
// snapshot reads, reads of a transaction's own writes, ordered scans, and
// first committer wins on a key both write.
func TestMemoryStoreTransactions(t *testing.T) {
	ctx := context.Background()
	kv := storage.NewMemoryStore().Client(nil)
	put := func(kv *storage.TiKV, k, v string) error {
		return kv.Update(ctx, func(txn storage.Txn) error { return txn.Set([]byte(k), []byte(v)) })
	}
	for _, k := range []string{"b", "a", "c"} {
		if err := put(kv, k, "v"+k); err != nil {
			t.Fatal(err)
		}
	}
	snap, release, err := kv.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := put(kv, "a", "new"); err != nil {
		t.Fatal(err)
	}
	if v, _ := storage.Get(ctx, snap, []byte("a")); string(v) != "va" {
		t.Fatalf("snapshot read %q, want the value at its start", v)
	}

	// Two writers of one key: the second to commit conflicts and writes
	// nothing; its own reads saw its writes. The first commits only once
	// the second's transaction has begun (else, on a busy machine, the
	// first could commit before the second began and there would be no
	// conflict to find).
	secondBegun := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- kv.Update(ctx, func(txn storage.Txn) error {
			if err := txn.Set([]byte("b"), []byte("first")); err != nil {
				return err
			}
			if err := txn.Set([]byte("z"), []byte("first")); err != nil {
				return err
			}
			<-secondBegun
			return nil
		})
	}()
	err = kv.Update(ctx, func(txn storage.Txn) error {
		if err := txn.Set([]byte("b"), []byte("second")); err != nil {
			return err
		}
		if v, _ := txn.Get(ctx, []byte("b")); string(v) != "second" {
			return fmt.Errorf("own write read as %q", v)
		}
		select {
		case <-secondBegun:
		default:
			close(secondBegun)
		}
		if err := <-errc; err != nil {
			return err
		}
		return txn.Delete([]byte("c"))
	})
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("second writer: %v, want a conflict", err)
	}
	var got string
	if err := kv.Scan(ctx, []byte("a"), nil, func(k, v []byte) (bool, error) {
		got += fmt.Sprintf("%s=%s ", k, v)
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := "a=new b=first c=vc z=first "; got != want {
		t.Fatalf("scan %q, want %q", got, want)
	}
}

// TestMemoryStoreFaults checks each outcome a handle's faults can give.
func TestMemoryStoreFaults(t *testing.T) {
	ctx := context.Background()
	m := storage.NewMemoryStore()
	var next storage.KVOutcome
	kv := m.Client(func(op storage.KVOp) storage.KVOutcome {
		if op.Kind == storage.KVCommit {
			return next
		}
		return storage.KVOK
	})
	set := func(v string) error {
		return kv.Update(ctx, func(txn storage.Txn) error { return txn.Set([]byte("k"), []byte(v)) })
	}
	read := func() string {
		var v []byte
		_ = kv.View(func(txn storage.Txn) (err error) { v, err = storage.Get(ctx, txn, []byte("k")); return err })
		return string(v)
	}
	for _, c := range []struct {
		fault  storage.KVOutcome
		want   error
		stored string
	}{
		{storage.KVDown, storage.ErrUnavailable, ""},
		{storage.KVConflict, storage.ErrConflict, ""},
		{storage.KVLost, storage.ErrUnavailable, "lost"},
		{storage.KVOK, nil, "ok"},
	} {
		next = c.fault
		v := map[storage.KVOutcome]string{storage.KVDown: "down", storage.KVConflict: "conflict", storage.KVLost: "lost", storage.KVOK: "ok"}[c.fault]
		if err := set(v); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Fatalf("fault %d: %v, want %v", c.fault, err, c.want)
		}
		if got := read(); c.stored != "" && got != c.stored || c.stored == "" && got == v {
			t.Fatalf("fault %d: stored %q", c.fault, got)
		}
	}
	down := m.Client(func(storage.KVOp) storage.KVOutcome { return storage.KVDown })
	if err := down.View(func(storage.Txn) error { return nil }); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("begin on a store that is down: %v", err)
	}
}
