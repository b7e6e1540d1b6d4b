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
