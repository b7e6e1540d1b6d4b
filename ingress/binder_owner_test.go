package ingress

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"redrain/storage/storagetest"
)

// TestOwnerBinderRaces: an owner's binder gives each identity one act_id
// however many requests bind it at once, different identities different
// ids, and sends Redis nothing (it is given no pipeliner: a Redis call
// would panic).
func TestOwnerBinderRaces(t *testing.T) {
	b := NewBinder(storagetest.TiKV(t, ""), nil, true, 8)
	ctx := context.Background()
	const racers, users = 8, 500
	got := make([][]uint64, racers)
	var wg sync.WaitGroup
	for r := range racers {
		wg.Go(func() {
			apps := make([]uint32, users)
			names := make([]string, users)
			for i := range names {
				apps[i], names[i] = 1, fmt.Sprintf("u%d", i)
			}
			got[r] = make([]uint64, users)
			if err := b.ResolveMany(ctx, apps, names, got[r]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[uint64]int{}
	for i := range users {
		for r := 1; r < racers; r++ {
			if got[r][i] != got[0][i] {
				t.Fatalf("user %d bound to %d and %d", i, got[0][i], got[r][i])
			}
		}
		if prev, dup := seen[got[0][i]]; dup || got[0][i] == 0 {
			t.Fatalf("users %d and %d share act_id %d", prev, i, got[0][i])
		}
		seen[got[0][i]] = i
		if !b.handedOutHere(got[0][i]) {
			t.Errorf("act_id %d of user %d is not known as handed out", got[0][i], i)
		}
	}
	next, err := ActIDsAllocated(ctx, b.tikv)
	if err != nil || next <= got[0][users-1] {
		t.Errorf("allocated up to %d (%v), below the ids handed out", next, err)
	}
}

// BenchmarkResolveNewUsers: an owner's binder binds requests of 100 new
// users each (ns/op is per user), from an empty map to 4M users as a
// fresh node's burst does: the lookups that miss, the inserts, the tables
// growing. Its act_ids come from a block set beforehand, so no store is
// asked.
func BenchmarkResolveNewUsers(b *testing.B) {
	const batch, total = 100, 4_000_000
	names := make([]string, total)
	for i := range names {
		names[i] = fmt.Sprintf("u%d", 1_000_000_000+i)
	}
	apps := make([]uint32, batch)
	for i := range apps {
		apps[i] = 1
	}
	ids := make([]uint64, batch)
	ctx := context.Background()
	var bd *Binder
	next := total
	b.ReportAllocs()
	for i := 0; i < b.N; i += batch {
		if next == total {
			b.StopTimer()
			bd = NewBinder(nil, nil, true, 8)
			bd.next, bd.end = 1, 1<<40
			next = 0
			b.StartTimer()
		}
		if err := bd.ResolveMany(ctx, apps, names[next:next+batch], ids); err != nil {
			b.Fatal(err)
		}
		next += batch
	}
}
