package holders

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// The benchmarks' populations: n users exist, with act_ids as redrain
// allocates them (from 1 upward), and some of them hold.
//
//   - dense: act_ids 1..n, every user holds.
//   - sparse: act_ids 1..n, 1% hold (most users hold nothing).
//   - gaps: act_ids in blocks of 65,536 (one block per node's allocation)
//     whose last 10% are unused; n users, every one holds.
//   - half: act_ids 1..n, half hold at random (bitmap containers: the
//     most a family can cost per user, 8 KiB per 65,536 act_ids).
//
// A holder holds all three families (the upper bound: in practice coin
// and item holders are fewer), so the figures are of three bitmaps.
type layout struct {
	name string
	// span is the act_ids a population of n users occupies: 1..span.
	span func(n uint64) uint64
	// holds says whether act holds (and exists).
	holds func(act uint64) bool
	// exists says whether act is an allocated user.
	exists func(act uint64) bool
}

const (
	blockSize = 1 << 16
	blockUsed = blockSize - blockSize/10 // 58,983 of each block in use
)

func mix(x uint64) uint64 { // splitmix64's finalizer
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func same(n uint64) uint64    { return n }
func always(uint64) bool      { return true }
func inBlock(act uint64) bool { return (act-1)%blockSize < blockUsed }

var layouts = map[string]layout{
	"dense":  {"dense", same, always, always},
	"sparse": {"sparse", same, func(a uint64) bool { return mix(a)%100 == 0 }, always},
	"gaps": {"gaps", func(n uint64) uint64 {
		return n/blockUsed*blockSize + n%blockUsed
	}, inBlock, inBlock},
	"half": {"half", same, func(a uint64) bool { return mix(a)&1 == 0 }, always},
}

// scan yields every holder of a population of n, in act_id order.
func (l layout) scan(n uint64) func(func(uint64, Family) bool) error {
	return func(yield func(uint64, Family) bool) error {
		for a := uint64(1); a <= l.span(n); a++ {
			if l.holds(a) && (!yield(a, Money) || !yield(a, Coin) || !yield(a, Item)) {
				return nil
			}
		}
		return nil
	}
}

func (l layout) build(tb testing.TB, n uint64) *Set {
	s := New()
	if err := s.Build(l.scan(n)); err != nil {
		tb.Fatal(err)
	}
	return s
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

const (
	tenM     = 10_000_000
	hundredM = 100_000_000
)

// BenchmarkMemory builds each population of 10M and 100M users (100M is
// skipped under -short; run with -benchtime 1x) and reports the bytes of
// the three bitmaps per user of the population (B/user), per holder
// (B/holder), and the Go heap the built set takes per user (heapB/user:
// containers' slices with their slack, the working and published copies'
// headers).
func BenchmarkMemory(b *testing.B) {
	for _, n := range []uint64{tenM, hundredM} {
		for _, name := range []string{"dense", "sparse", "gaps", "half"} {
			l := layouts[name]
			b.Run(fmt.Sprintf("%s/%dM", name, n/1_000_000), func(b *testing.B) {
				skipLarge(b, n)
				for b.Loop() {
					before := heapInUse()
					s := l.build(b, n)
					heap := heapInUse() - before
					st := s.Stats()
					holders := st.Holders[Money]
					b.ReportMetric(float64(st.Bytes)/float64(n), "B/user")
					b.ReportMetric(float64(st.Bytes)/float64(holders), "B/holder")
					b.ReportMetric(float64(heap)/float64(n), "heapB/user")
					b.ReportMetric(float64(st.SerializedBytes)/float64(n), "serB/user")
					b.ReportMetric(float64(holders), "holders")
					runtime.KeepAlive(s)
				}
			})
		}
	}
}

// skipLarge skips a benchmark of more than 10M users under -short.
func skipLarge(b *testing.B, n uint64) {
	if n > tenM && testing.Short() {
		b.Skip("100M users: not under -short")
	}
}

// built caches a population's set for the lookup and apply benchmarks.
var built = struct {
	sync.Mutex
	m map[string]*Set
}{m: map[string]*Set{}}

func cached(b *testing.B, name string, n uint64) *Set {
	skipLarge(b, n)
	built.Lock()
	defer built.Unlock()
	key := fmt.Sprint(name, n)
	if s := built.m[key]; s != nil {
		return s
	}
	s := layouts[name].build(b, n)
	built.m[key] = s
	return s
}

// sample draws k act_ids of the population at random whose holding is
// want: hits (want true) or misses (want false, an existing user who
// holds nothing, or an unallocated act_id in a gap).
func (l layout) sample(n uint64, k int, want bool, seed uint64) []uint64 {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := make([]uint64, 0, k)
	for len(out) < k {
		a := 1 + rng.Uint64N(l.span(n))
		if l.holds(a) == want {
			out = append(out, a)
		}
	}
	return out
}

// BenchmarkContains looks up random act_ids over a population of 10M (and
// 100M without -short): hits and misses, one goroutine and b.RunParallel.
func BenchmarkContains(b *testing.B) {
	for _, n := range []uint64{tenM, hundredM} {
		for _, name := range []string{"sparse", "gaps", "half"} {
			l := layouts[name]
			for _, hit := range []bool{true, false} {
				if name == "gaps" && !hit && n > tenM {
					continue
				}
				kind := map[bool]string{true: "hit", false: "miss"}[hit]
				want := map[bool]Answer{true: Yes, false: No}[hit]
				acts := l.sample(n, 1<<16, hit, n)
				const mask = 1<<16 - 1
				b.Run(fmt.Sprintf("%s/%dM/%s/serial", name, n/1_000_000, kind), func(b *testing.B) {
					s := cached(b, name, n)
					wrong := 0
					i := 0
					for b.Loop() {
						if s.Contains(acts[i&mask], Money) != want {
							wrong++
						}
						i++
					}
					if wrong != 0 {
						b.Fatalf("%d wrong answers", wrong)
					}
				})
				b.Run(fmt.Sprintf("%s/%dM/%s/parallel", name, n/1_000_000, kind), func(b *testing.B) {
					s := cached(b, name, n)
					b.ResetTimer() // RunParallel times from here
					var seed sync.Mutex
					next := 0
					b.RunParallel(func(pb *testing.PB) {
						seed.Lock()
						i := next * 7919
						next++
						seed.Unlock()
						wrong := 0
						for pb.Next() {
							if s.Contains(acts[i&mask], Money) != want {
								wrong++
							}
							i++
						}
						if wrong != 0 {
							b.Errorf("%d wrong answers", wrong)
						}
					})
				})
			}
		}
	}
}

// BenchmarkApply applies batches of 100 and 4096 changes (random users of
// the population who held nothing start holding money, then the next batch
// takes it back) to a built set of 10M (and 100M without -short) users,
// 1% holding; ns/change is the time per change, publication included.
func BenchmarkApply(b *testing.B) {
	for _, n := range []uint64{tenM, hundredM} {
		for _, size := range []int{100, 4096} {
			b.Run(fmt.Sprintf("sparse/%dM/batch%d", n/1_000_000, size), func(b *testing.B) {
				skipLarge(b, n)
				l := layouts["sparse"]
				s := l.build(b, n) // its own: the batches change it
				const batches = 16
				var bs [batches][]Change
				acts := l.sample(n, batches*size, false, uint64(size))
				for i := range bs {
					for _, a := range acts[i*size : (i+1)*size] {
						bs[i] = append(bs[i], Change{a, Money})
					}
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					batch := bs[(i/2)%batches]
					var err error
					if i%2 == 0 {
						err = s.Apply(batch, nil)
					} else {
						err = s.Apply(nil, batch)
					}
					if err != nil {
						b.Fatal(err)
					}
					i++
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/change")
				if st := s.Stats(); i%2 == 0 && st.Holders[Money] != l.sample0(n) {
					b.Fatalf("holders %d after balanced batches", st.Holders[Money])
				}
			})
		}
	}
}

// sample0 counts a population's holders.
func (l layout) sample0(n uint64) uint64 {
	var c uint64
	for a := uint64(1); a <= l.span(n); a++ {
		if l.holds(a) {
			c++
		}
	}
	return c
}

// cowBitmap is the design the set does not use, kept here to measure
// against: one roaring bitmap per family (the library's sorted container
// keys), a private working copy the writer changes, and after each batch a
// copy-on-write clone of it published (the clone shares every container;
// the working copy copies a container before its next change).
type cowBitmap struct {
	work *roaring.Bitmap
	pub  atomic.Pointer[roaring.Bitmap]
}

func newCOW(l layout, n uint64) *cowBitmap {
	c := &cowBitmap{work: roaring.New()}
	for a := uint64(1); a <= l.span(n); a++ {
		if l.holds(a) {
			c.work.Add(uint32(a))
		}
	}
	c.work.RunOptimize()
	c.work.SetCopyOnWrite(true)
	c.pub.Store(c.work.Clone())
	return c
}

func (c *cowBitmap) apply(adds, removes []Change) {
	for _, x := range adds {
		c.work.Add(uint32(x.Act))
	}
	for _, x := range removes {
		c.work.Remove(uint32(x.Act))
	}
	c.pub.Store(c.work.Clone())
}

// BenchmarkDesign measures the set's directory of container bitmaps
// against one copy-on-write bitmap per family (cowBitmap), side by side
// in one run: lookups of random misses and Apply of batches of 100, over
// populations of 10M (and 100M without -short) users, one family.
func BenchmarkDesign(b *testing.B) {
	for _, n := range []uint64{tenM, hundredM} {
		for _, name := range []string{"sparse", "half"} {
			l := layouts[name]
			prefix := fmt.Sprintf("%s/%dM", name, n/1_000_000)
			var set *Set
			var cow *cowBitmap
			setup := func(b *testing.B) {
				skipLarge(b, n)
				if set == nil {
					set, cow = l.build(b, n), newCOW(l, n)
				}
			}
			acts := l.sample(n, 1<<16, false, 11)
			const mask = 1<<16 - 1
			var batches [16][]Change
			for i := range batches {
				for _, a := range acts[i*100 : (i+1)*100] {
					batches[i] = append(batches[i], Change{a, Money})
				}
			}
			for _, design := range []string{"directory", "cow"} {
				b.Run(prefix+"/lookup/"+design, func(b *testing.B) {
					setup(b)
					i, hits := 0, 0
					for b.Loop() {
						a := acts[i&mask]
						if design == "cow" && cow.pub.Load().Contains(uint32(a)) ||
							design == "directory" && set.Contains(a, Money) == Yes {
							hits++
						}
						i++
					}
					if hits != 0 {
						b.Fatalf("%d misses answered as hits", hits)
					}
				})
			}
			for _, design := range []string{"directory", "cow"} {
				b.Run(prefix+"/apply100/"+design, func(b *testing.B) {
					setup(b)
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						batch := batches[(i/2)%len(batches)]
						var adds, removes []Change
						if i%2 == 0 {
							adds = batch
						} else {
							removes = batch
						}
						if design == "cow" {
							cow.apply(adds, removes)
						} else if err := set.Apply(adds, removes); err != nil {
							b.Fatal(err)
						}
						i++
					}
					if i%2 == 1 { // leave the population as built
						if design == "cow" {
							cow.apply(nil, batches[(i/2)%len(batches)])
						} else if err := set.Apply(nil, batches[(i/2)%len(batches)]); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/change")
				})
			}
		}
	}
}
