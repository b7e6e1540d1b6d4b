package bench

import (
	"math/rand/v2"
	"sync/atomic"
)

// users chooses whom each request is for, shared by all workers without a
// lock. Users are numbered 0..count-1. The first pass offers each user one
// new grant, in a shuffled order; a repeat goes to a user whose grant was
// accepted (its 200 response has arrived), never to one whose first request
// is still in flight, because a concurrent duplicate is a different case
// (the node answers grant_in_progress) from the idempotent repeat the bench
// measures.
//
// Memory is 16 bytes per user: order, granted and tokens.
type users struct {
	order []uint32      // A permutation of 0..count-1: the first pass.
	next  atomic.Uint64 // Index in order of the next new grant; may run past len(order).

	// granted lists user+1 for each user whose grant was accepted, in the
	// order they were accepted. A slot is claimed (grantedCount) before it
	// is written, so a reader may find 0 in a slot below grantedCount for a
	// moment; it then looks at the slot before.
	// Invariant: grantedCount <= len(order), and each user appears at most once.
	granted      []atomic.Uint32
	grantedCount atomic.Uint64

	// tokens holds, per user, the hash of the token of its first accepted
	// grant with the low bit set, or 0 while it has none.
	tokens []atomic.Uint64

	touched atomic.Uint64 // written when pickDistinct's reads ahead sum to 1, so that they are not dropped
}

// newUsers returns count users whose first pass is shuffled by rng.
func newUsers(count int, rng *rand.Rand) *users {
	u := &users{
		order:   make([]uint32, count),
		granted: make([]atomic.Uint32, count),
		tokens:  make([]atomic.Uint64, count),
	}
	for i := range u.order {
		u.order[i] = uint32(i)
	}
	rng.Shuffle(count, func(i, j int) { u.order[i], u.order[j] = u.order[j], u.order[i] })
	return u
}

// pick returns the user of the next request and whether it repeats an
// accepted grant. Once a user has been granted, a request is a repeat with
// probability repeatRatio; otherwise it is the next new grant of the first
// pass. After the first pass every request is a repeat, or, if no grant at
// all was accepted, a new attempt for a random user.
func (u *users) pick(rng *rand.Rand, repeatRatio float64) (user uint32, repeat bool) {
	count := uint64(len(u.order))
	if u.grantedCount.Load() > 0 && rng.Float64() < repeatRatio {
		if user, ok := u.randomGranted(rng); ok {
			return user, true
		}
	}
	// The Load keeps workers off the shared counter once the pass is over.
	if u.next.Load() < count {
		if i := u.next.Add(1) - 1; i < count {
			return u.order[i], false
		}
	}
	if user, ok := u.randomGranted(rng); ok {
		return user, true
	}
	user = uint32(rng.Uint64N(count))
	return user, u.tokens[user].Load() != 0
}

// offer is one grant of a request: its user, and whether it repeats the
// user's accepted grant.
type offer struct {
	user   uint32
	repeat bool
}

// pickDistinct returns offers[:0] with up to n picks appended, as pick
// makes them, for distinct users; seen is scratch space, cleared first.
// A pick of a user already taken is dropped, and after n such picks the
// batch is cut short, which happens only when the users to repeat are
// about as few as n. A user is never offered twice in one batch: the node
// grants a batch's items concurrently, so the second would be a concurrent
// duplicate, not a repeat.
//
// The picks are drawn in a loop of their own, then sifted: a repeat's
// pick reads a random slot of granted, a cache miss among millions of
// users, and with nothing else in the loop the processor has many of
// them in flight at once. Then the repeats' recorded tokens are read
// likewise, so that their answers, which compare against them, find them
// in cache (those two misses, one after another per grant, were a
// quarter of the bench's CPU in a burst of repeats).
func (u *users) pickDistinct(rng *rand.Rand, repeatRatio float64, n int, offers []offer, seen map[uint32]struct{}) []offer {
	clear(seen)
	offers = offers[:0]
	for dropped := 0; len(offers) < n && dropped < n; {
		drawn := len(offers)
		for range n - drawn {
			user, repeat := u.pick(rng, repeatRatio)
			offers = append(offers, offer{user: user, repeat: repeat})
		}
		kept := drawn
		for _, o := range offers[drawn:] {
			if _, ok := seen[o.user]; ok {
				dropped++
				continue
			}
			seen[o.user] = struct{}{}
			offers[kept] = o
			kept++
		}
		offers = offers[:kept]
	}
	var touched uint64
	for _, o := range offers {
		if o.repeat {
			touched += u.tokens[o.user].Load()
		}
	}
	if touched == 1 { // almost never: the reads must not be dropped, and the workers must not share a write per request
		u.touched.Store(touched)
	}
	return offers
}

// randomGranted returns a uniformly chosen user among those granted, or
// false when there is none yet.
func (u *users) randomGranted(rng *rand.Rand) (uint32, bool) {
	n := u.grantedCount.Load()
	if n == 0 {
		return 0, false
	}
	for i := int64(rng.Uint64N(n)); i >= 0; i-- {
		if v := u.granted[i].Load(); v != 0 {
			return v - 1, true
		}
	}
	return 0, false
}

// grant records that user's grant was accepted with a token hashing to
// tokenHash (low bit set). It returns false when the user already had a
// grant, which happens only when two new attempts for the same user race
// after a first pass in which nothing was accepted; the caller then checks
// the token like a repeat's.
func (u *users) grant(user uint32, tokenHash uint64) bool {
	if !u.tokens[user].CompareAndSwap(0, tokenHash) {
		return false
	}
	i := u.grantedCount.Add(1) - 1
	u.granted[i].Store(user + 1)
	return true
}

// tokenMatches reports whether tokenHash is the hash recorded for user's
// first grant.
func (u *users) tokenMatches(user uint32, tokenHash uint64) bool {
	return u.tokens[user].Load() == tokenHash
}
