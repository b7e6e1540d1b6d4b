package grant

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"redrain/campaign"
	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// BenchmarkClaimTableMemory fills one shard's claim table of a rain with a
// million granted users (the act_ids of one partition of 16, as a shard
// holds them) and reports the heap it holds per user ("B/user"): the
// owner's memory for the per-user limit.
func BenchmarkClaimTableMemory(b *testing.B) {
	const users = 1_000_000
	ids := make([]uint64, 0, users)
	for id := uint64(1); len(ids) < users; id++ {
		if storage.PartitionOf(id, 16) == 0 {
			ids = append(ids, id)
		}
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t := newClaimTable()
		r := t.rain("demo_rain_1_formal")
		award := r.awardOf("cash")
		for _, id := range ids {
			r.users.set(id, claim{state: claimIssued, amount: int64(id % 1000), app: 1, award: award})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/users, "B/user")
		runtime.KeepAlive(t)
	}
}

// BenchmarkClaimSetGet looks up granted users in random order in the
// claim sets of a node's shards (the default partitions) holding two
// million users between them (a repeat's question to its shard's
// claims), ns/op per lookup.
func BenchmarkClaimSetGet(b *testing.B) {
	const users, parts = 2_000_000, storage.GrantPartitionsDefault
	sets := make([]claimSet, parts)
	for id := uint64(1); id <= users; id++ {
		sets[storage.PartitionOf(id, parts)].set(id, claim{state: claimBooked, amount: int64(id % 1000)})
	}
	order := rand.New(rand.NewPCG(3, 4)).Perm(users)
	b.ResetTimer()
	var sum int64
	for i := 0; i < b.N; i++ {
		id := uint64(order[i%users]) + 1
		c, ok := sets[storage.PartitionOf(id, parts)].get(id)
		if !ok {
			b.Fatalf("user %d not found", id)
		}
		sum += c.amount
	}
	runtime.KeepAlive(sum)
}

// TestClaimTableSweep drops a rain's claims only after it has been closed
// for releaseAfter, and never an open or unknown one.
func TestClaimTableSweep(t *testing.T) {
	tbl := newClaimTable()
	tbl.rain("a_s_1_formal").users.set(1, claim{state: claimIssued})
	tbl.rain("b_s_1_formal").users.set(2, claim{state: claimIssued})
	open := map[string]bool{"a_s_1_formal": true}
	isOpen := func(k string) bool { return open[k] }
	t0 := time.Unix(1_800_000_000, 0)
	if n := tbl.sweep(t0, isOpen); n != 0 {
		t.Fatalf("first sweep dropped %d, want 0 (closed just now)", n)
	}
	if n := tbl.sweep(t0.Add(releaseAfter-time.Second), isOpen); n != 0 {
		t.Fatalf("sweep before releaseAfter dropped %d, want 0", n)
	}
	if n := tbl.sweep(t0.Add(releaseAfter), isOpen); n != 1 {
		t.Fatalf("sweep after releaseAfter dropped %d, want 1", n)
	}
	if _, ok := tbl.rains["b_s_1_formal"]; ok {
		t.Error("the closed rain is still held")
	}
	if _, ok := tbl.rains["a_s_1_formal"]; !ok {
		t.Error("the open rain was dropped")
	}
}

// TestRainOpen reads a claim table's rain key against the catalog: the
// demo rain is open, unknown activities count as open (a rollback may
// bring them back), legacy keys (no activity) as closed.
func TestRainOpen(t *testing.T) {
	camp, err := campaign.Compile(campaign.Demo())
	if err != nil {
		t.Fatal(err)
	}
	cat, err := camp.SeedCatalog()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{"demo_rain_1_formal", true},
		{"gone_rain_1_formal", true},
		{"rain_1_formal", false},
	} {
		if got := rainOpen(cat, tt.key, now); got != tt.want {
			t.Errorf("rainOpen(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// TestBookedOf: booking's report keeps, per booked or attributed grant, the
// rain its limit key names (legacy keys included) and what it paid; other
// ops carry none; grants of one rain in a row share one string.
func TestBookedOf(t *testing.T) {
	g := func(act uint64, activity string, rain uint64, legacy bool) ledger.Grant {
		return ledger.Grant{AppID: 9, ActID: act, ActivityID: activity, SceneID: "lobby", RainID: rain, Stage: tokens.StageFormal,
			AwardType: "cash", Amount: int64(act), Legacy: legacy}
	}
	gray := g(6, "spring", 1, false)
	gray.Stage = tokens.StageGray
	hall := g(7, "spring", 1, false)
	hall.SceneID = "hall"
	ops := []ledger.Op{
		{Kind: ledger.OpBook, Grant: g(1, "newyear", 1, false)},
		{Kind: ledger.OpBind, Grant: ledger.Grant{AppID: 9, ActID: 5, UserID: "u5"}},
		{Kind: ledger.OpAttribute, Grant: g(22, "newyear", 1, false)},
		{Kind: ledger.OpBook, Grant: g(333, "spring", 1, false)},
		{Kind: ledger.OpBook, Grant: g(4, "", 2, true)},
		{Kind: ledger.OpBook, Grant: g(44, "spring", 2, true)}, // legacy: the activity is not in its key
		{Kind: ledger.OpBook, Grant: g(5, "spring", 2, false)},
		{Kind: ledger.OpBook, Grant: g(55, "spring", 1, false)},
		{Kind: ledger.OpBook, Grant: gray},
		{Kind: ledger.OpBook, Grant: hall},
	}
	got := BookedOf(ops)
	want := []Booked{
		{ActID: 1, Rain: "newyear_lobby_1_formal", AwardType: "cash", Amount: 1, AppID: 9},
		{ActID: 22, Rain: "newyear_lobby_1_formal", AwardType: "cash", Amount: 22, AppID: 9},
		{ActID: 333, Rain: "spring_lobby_1_formal", AwardType: "cash", Amount: 333, AppID: 9},
		{ActID: 4, Rain: "lobby_2_formal", AwardType: "cash", Amount: 4, AppID: 9},
		{ActID: 44, Rain: "lobby_2_formal", AwardType: "cash", Amount: 44, AppID: 9},
		{ActID: 5, Rain: "spring_lobby_2_formal", AwardType: "cash", Amount: 5, AppID: 9},
		{ActID: 55, Rain: "spring_lobby_1_formal", AwardType: "cash", Amount: 55, AppID: 9},
		{ActID: 6, Rain: "spring_lobby_1_gray", AwardType: "cash", Amount: 6, AppID: 9},
		{ActID: 7, Rain: "spring_hall_1_formal", AwardType: "cash", Amount: 7, AppID: 9},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("BookedOf = %+v\nwant %+v", got, want)
	}
	for i, op := range slices.Concat(ops[:1], ops[2:]) {
		if r := rainOf(op.Grant.LimitKey()); got[i].Rain != r {
			t.Errorf("grant %d: rain %q, its limit key's %q", i, got[i].Rain, r)
		}
	}
	if unsafe.StringData(got[0].Rain) != unsafe.StringData(got[1].Rain) {
		t.Error("two grants of one rain in a row hold two strings")
	}
}

// TestClaimSet: a claim set answers as a map would through sets,
// replacements and deletes in any order, within and across pages.
func TestClaimSet(t *testing.T) {
	var s claimSet
	want := map[uint64]claim{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		id := 1 + rng.Uint64N(5*claimPageUsers)
		switch rng.IntN(3) {
		case 0, 1:
			c := claim{amount: int64(i), app: uint32(i), state: claimIssued}
			s.set(id, c)
			want[id] = c
		default:
			s.del(id)
			delete(want, id)
		}
		if s.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", i, s.len(), len(want))
		}
	}
	for id := uint64(0); id <= 5*claimPageUsers+1; id++ {
		c, ok := s.get(id)
		w, wok := want[id]
		if ok != wok || c != w {
			t.Fatalf("get(%d) = %+v %v, want %+v %v", id, c, ok, w, wok)
		}
	}
	for k, pg := range s.pages {
		sorted := slices.IsSortedFunc(pg, func(a, b claim) int { return int(a.off) - int(b.off) })
		if len(pg) == 0 || !sorted {
			t.Fatalf("page %d: %d claims, sorted %v", k, len(pg), sorted)
		}
	}
}

// TestClaimPageSearch: a page's search, which starts where an evenly
// spaced page would hold the offset, answers as a binary search does for
// every offset of its span, on pages empty, full, sparse, and bunched at
// either end or in the middle.
func TestClaimPageSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := map[string]func() uint16{
		"even":   func() uint16 { return uint16(rng.IntN(claimPageUsers)) },
		"low":    func() uint16 { return uint16(rng.IntN(claimPageUsers / 16)) },
		"high":   func() uint16 { return claimPageUsers - 1 - uint16(rng.IntN(claimPageUsers/16)) },
		"middle": func() uint16 { return claimPageUsers/2 + uint16(rng.IntN(8)) },
		"ends": func() uint16 {
			if rng.IntN(2) == 0 {
				return uint16(rng.IntN(4))
			}
			return claimPageUsers - 1 - uint16(rng.IntN(4))
		},
	}
	for name, draw := range shapes {
		for _, n := range []int{0, 1, 2, 3, 7, 64, 300, claimPageUsers} {
			var offs []uint16
			if n == claimPageUsers {
				for i := range uint16(n) {
					offs = append(offs, i)
				}
			} else {
				for range n {
					offs = append(offs, draw())
				}
				slices.Sort(offs)
				offs = slices.Compact(offs)
			}
			pg := make([]claim, len(offs))
			for i, o := range offs {
				pg[i].off = o
			}
			for off := range uint16(claimPageUsers) {
				i, ok := searchPage(pg, off)
				wi, wok := slices.BinarySearch(offs, off)
				if i != wi || ok != wok {
					t.Fatalf("%s, %d claims: searchPage(%d) = %d %v, want %d %v", name, len(pg), off, i, ok, wi, wok)
				}
			}
		}
	}
}

// TestLeadTable: a batch's table finds each act_id's first lead among
// batches of every size (so probes collide and wrap around the slice),
// and is empty again after each.
func TestLeadTable(t *testing.T) {
	var lt leadTable
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 7, 8, 9, 100, 3000, 5} {
		lt.size(n)
		items := make([]item, n)
		for i := range items {
			items[i].g.ActID = 1 + rng.Uint64N(uint64(4*n)) // repeats among them
		}
		first := map[uint64]*item{}
		for i := range items {
			it := &items[i]
			at := lt.slot(it.g.ActID)
			if *at != first[it.g.ActID] {
				t.Fatalf("batch of %d: act_id %d's slot holds %p, want its first lead %p", n, it.g.ActID, *at, first[it.g.ActID])
			}
			if *at == nil {
				*at, first[it.g.ActID] = it, it
			}
		}
		lt.empty()
		for i, s := range lt.slots[:cap(lt.slots)] {
			if s != nil {
				t.Fatalf("after a batch of %d: slot %d holds a lead", n, i)
			}
		}
	}
}

// BenchmarkBookedOf reads what the claim tables keep of a unit of 4,000
// booked grants of one rain, as booking reports a burst's (ns/op per
// grant).
func BenchmarkBookedOf(b *testing.B) {
	ops := make([]ledger.Op, 4000)
	for i := range ops {
		ops[i] = ledger.Op{Kind: ledger.OpBook, Grant: ledger.Grant{AppID: 1, ActID: uint64(1_000_000 + 8*i), ActivityID: "demo",
			SceneID: "rain", RainID: 1, Stage: tokens.StageFormal, AwardType: "cash", Amount: 100}}
	}
	b.ReportAllocs()
	for done := 0; done < b.N; done += len(ops) {
		if got := BookedOf(ops[:min(len(ops), b.N-done)]); len(got) == 0 {
			b.Fatal("nothing booked")
		}
	}
}
