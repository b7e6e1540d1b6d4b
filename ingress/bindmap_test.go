package ingress

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestBindMapMatchesAMap: bindMap answers as a map[bindKey]uint64 does
// through random puts, overwrites, adds (a binding unless one holds),
// deletes (compactions among them) and clears, with the real hash and
// with one that chains every identity of an app.
func TestBindMapMatchesAMap(t *testing.T) {
	for name, hash := range map[string]func(uint32, string) uint64{
		"maphash": nil,
		"chained": func(app uint32, _ string) uint64 { return uint64(app) },
	} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			m := bindMap{hash: hash}
			want := map[bindKey]uint64{}
			keys := make([]bindKey, 3000)
			for i := range keys {
				keys[i] = bindKey{app: uint32(i % 3), user: fmt.Sprintf("user-%d", i/3)}
			}
			keys = append(keys, bindKey{app: 1, user: ""}, bindKey{app: 2, user: "user-1\x00"})
			for i := range 50 { // long ids, so that deletes leave text to compact
				keys = append(keys, bindKey{app: 1, user: fmt.Sprintf("%0600d", i)})
			}
			check := func(step int) {
				t.Helper()
				if m.len() != len(want) {
					t.Fatalf("step %d: len %d, want %d", step, m.len(), len(want))
				}
				for _, k := range keys {
					got, ok := m.get(k)
					w, wok := want[k]
					if ok != wok || got != w {
						t.Fatalf("step %d: get(%v) = %d, %v; want %d, %v", step, k, got, ok, w, wok)
					}
				}
			}
			for step := range 20000 {
				k := keys[rng.IntN(len(keys))]
				switch r := rng.IntN(100); {
				case r < 40:
					v := rng.Uint64()
					m.put(k, v)
					want[k] = v
				case r < 60:
					v := rng.Uint64()
					w, held := want[k]
					if !held {
						w = v
						want[k] = v
					}
					if got := m.add(m.hashOf(k.app, k.user), k, v); got != w {
						t.Fatalf("step %d: add(%v, %d) = %d, want %d", step, k, v, got, w)
					}
				case r < 99:
					m.del(k)
					delete(want, k)
				default:
					m.clear()
					clear(want)
				}
				if step%997 == 0 {
					check(step)
				}
			}
			check(-1)
			// Deleting most entries compacts what is left.
			for k := range want {
				if rng.IntN(10) > 0 {
					m.del(k)
					delete(want, k)
				}
			}
			check(-2)
			live := 0
			for k := range want {
				live += len(k.user)
			}
			if m.textLen() > 2*live+1<<16+600 {
				t.Fatalf("%d bytes of user ids held for %d live: no compaction", m.textLen(), live)
			}
		})
	}
}

// TestBindMapAcrossChunks: records in many chunks of text are found,
// rebound, deleted and compacted like those of one, none across a chunk's
// end.
func TestBindMapAcrossChunks(t *testing.T) {
	var m bindMap
	want := make(map[bindKey]uint64)
	for i := range 60_000 {
		// User ids of 1 to 128 bytes: records end anywhere in a chunk.
		k := bindKey{app: uint32(i % 3), user: strings.Repeat("u", 1+i%128) + strconv.Itoa(i)}
		if len(k.user) > 128 {
			k.user = k.user[len(k.user)-128:]
		}
		want[k] = uint64(i + 1)
		m.put(k, uint64(i+1))
	}
	if len(m.text) < 4 {
		t.Fatalf("%d chunks of text for %d bytes, want several", len(m.text), m.textLen())
	}
	for i, c := range m.text {
		if len(c) > bindChunk {
			t.Fatalf("chunk %d holds %d bytes, more than %d", i, len(c), bindChunk)
		}
	}
	check := func(when string) {
		t.Helper()
		if m.len() != len(want) {
			t.Fatalf("%s: %d bindings, want %d", when, m.len(), len(want))
		}
		for k, v := range want {
			if got, ok := m.get(k); !ok || got != v {
				t.Fatalf("%s: get(%v) = %d, %v, want %d", when, k, got, ok, v)
			}
		}
	}
	check("bound")
	n := 0
	for k := range want {
		if n++; n%3 == 0 {
			want[k]++
			m.put(k, want[k])
		}
	}
	check("rebound")
	chunks := len(m.text)
	n = 0
	for k := range want {
		if n++; n%10 != 0 {
			m.del(k)
			delete(want, k)
		}
	}
	check("deleted")
	if len(m.text) >= chunks {
		t.Fatalf("%d chunks after deleting 90%%, %d before: no compaction", len(m.text), chunks)
	}
}

// TestBindMapBindsWithoutAllocating: a bound user costs no allocation of
// its own (no string kept) once the map's slices have room.
func TestBindMapBindsWithoutAllocating(t *testing.T) {
	var m bindMap
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
		m.put(bindKey{1, users[i]}, uint64(i+1))
	}
	m.clear()
	allocs := testing.AllocsPerRun(5, func() {
		for i, u := range users {
			m.put(bindKey{1, u}, uint64(i+1))
		}
		m.clear()
	})
	if allocs > 0 {
		t.Errorf("re-binding %d users into a cleared map allocated %.0f times, want 0", len(users), allocs)
	}
}

// bindFixture is n identities bound in a map[bindKey]uint64 (what the
// binder held before bindMap) and in a bindMap.
func bindFixture(n int) ([]bindKey, map[bindKey]uint64, *bindMap) {
	keys := make([]bindKey, n)
	gomap := make(map[bindKey]uint64, n)
	var bm bindMap
	for i := range keys {
		keys[i] = bindKey{app: 1, user: fmt.Sprintf("open-id-%016x", uint64(i)*0x9e3779b97f4a7c15)}
		gomap[keys[i]] = uint64(i + 1)
		bm.put(keys[i], uint64(i+1))
	}
	return keys, gomap, &bm
}

// BenchmarkBindLookup: a known identity's act_id among 1M bound, from a
// Go map keyed by (app, string) and from a bindMap, side by side.
func BenchmarkBindLookup(b *testing.B) {
	keys, gomap, bm := bindFixture(1 << 20)
	rng := rand.New(rand.NewPCG(3, 4))
	// Identities as a request brings them: their own copies of the ids
	// (a map keyed by strings compares the bytes, not the pointers).
	asked := make([]bindKey, 1<<16)
	for i := range asked {
		k := keys[rng.IntN(len(keys))]
		asked[i] = bindKey{app: k.app, user: strings.Clone(k.user)}
	}
	var sink uint64
	b.Run("gomap", func(b *testing.B) {
		for i := range b.N {
			sink += gomap[asked[i&(len(asked)-1)]]
		}
	})
	b.Run("bindmap", func(b *testing.B) {
		for i := range b.N {
			v, _ := bm.get(asked[i&(len(asked)-1)])
			sink += v
		}
	})
	_ = sink
}

// BenchmarkBindGC: a full collection with 1M bindings live (the keys the
// lookups use are dropped first), held by a Go map keyed by strings and
// by a bindMap: what the collector marks per binding.
func BenchmarkBindGC(b *testing.B) {
	for _, kind := range []string{"gomap", "bindmap"} {
		b.Run(kind, func(b *testing.B) {
			_, gomap, bm := bindFixture(1 << 20)
			if kind == "gomap" {
				bm = nil
			} else {
				gomap = nil
			}
			runtime.GC()
			b.ResetTimer()
			for range b.N {
				runtime.GC()
			}
			b.StopTimer()
			runtime.KeepAlive(gomap)
			runtime.KeepAlive(bm)
		})
	}
}

// BenchmarkBindMapGrowth: new identities bound into one map, as a binder shard
// takes a rain's new users: the records' text and the table grow as they
// come (ns/op per identity).
func BenchmarkBindMapGrowth(b *testing.B) {
	keys := make([]bindKey, b.N)
	for i := range keys {
		keys[i] = bindKey{app: 1, user: fmt.Sprintf("open-id-%016x", uint64(i)*0x9e3779b97f4a7c15)}
	}
	var m bindMap
	b.ResetTimer()
	for i, k := range keys {
		m.put(k, uint64(i+1))
	}
}
