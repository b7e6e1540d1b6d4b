package grant

import (
	"slices"
	"strings"
	"time"

	"redrain/ledger"
)

// claimState is where a user's packet for one rain stands.
type claimState uint8

const (
	claimPending claimState = iota + 1 // its record may have landed (until the deadline); a batch being issued writes none (shard.claimIssued)
	claimIssued                        // acknowledged on the stream
	claimBooked                        // booked (or restored from the store)
	claimNoAward                       // every award fell back to "no award"
)

// claim is one user's packet for one rain, 16 bytes, its act_id included
// (as its place in its claimSet page).
type claim struct {
	// amount of the packet; for a pending claim, the unix ms after which a
	// retry may issue again (the record may have landed until then).
	amount int64
	app    uint32 // the app of the grant that set it (0: unknown, restored)
	award  uint8  // index into the rain's award names
	state  claimState
	// off is the claim's act_id less its page's first (claimSet's own:
	// set writes it, get answers 0).
	off uint16
}

// rainClaims are the claims of one rain and stage in one shard.
type rainClaims struct {
	awards     []string
	awardIndex map[string]uint8
	// assets and budgets are, per award index, the asset and budget of the
	// packets issued here ("" until one is: an award restored from the
	// store only): what Outstanding rebuilds a packet with. An award's
	// asset is kept for life (admin), and its budget is named by the
	// activity, stage and award, all fixed for a rain key.
	assets  []ledger.Asset
	budgets []string
	// openTime is the rain's start (unix ms) as the first packet issued
	// here sealed it; openTimes holds the users whose packet sealed another
	// one (a version that moved the rain's start), usually none.
	openTime    int64
	openTimes   map[uint64]int64
	users       claimSet
	closedSince time.Time // zero while the rain is open (or unknown)
}

// claimTable is a shard's in-process per-user limit: for every rain (the
// limit key without its act_id: "{activity}_{scene}_{rain}_{stage}", or
// the legacy "{scene}_{rain}_{stage}") the claim of each user. Only the
// shard's goroutine touches it, so it takes no lock.
type claimTable struct {
	rains map[string]*rainClaims
}

func newClaimTable() *claimTable { return &claimTable{rains: map[string]*rainClaims{}} }

// rainOf splits a limit key into its act_id part and its rain part.
func rainOf(limitKey string) string {
	_, rain, _ := strings.Cut(limitKey, "_")
	return rain
}

// rain returns the table of rainKey, creating it.
func (t *claimTable) rain(rainKey string) *rainClaims {
	r := t.rains[rainKey]
	if r == nil {
		r = &rainClaims{awardIndex: map[string]uint8{}}
		// A copy: rainKey is part of a request's keys (one string for
		// all of them), which the table must not keep alive.
		t.rains[strings.Clone(rainKey)] = r
	}
	return r
}

// awardOf interns an award name; a rain has few (a child's awards and
// their fallbacks), at most 255.
func (r *rainClaims) awardOf(name string) uint8 {
	if i, ok := r.awardIndex[name]; ok {
		return i
	}
	i := uint8(len(r.awards))
	r.awards = append(r.awards, name)
	r.assets, r.budgets = append(r.assets, ""), append(r.budgets, "")
	r.awardIndex[name] = i
	return i
}

// issued records what a packet issued for user under award i sealed
// besides its claim: the award's asset and budget, and the rain's start.
// A branch each in the common case (nothing new).
func (r *rainClaims) issued(user uint64, i uint8, asset ledger.Asset, budget string, openTime int64) {
	if r.assets[i] == "" {
		r.assets[i], r.budgets[i] = asset, budget
	}
	switch {
	case r.openTime == 0:
		r.openTime = openTime
	case openTime != r.openTime:
		if r.openTimes == nil {
			r.openTimes = map[uint64]int64{}
		}
		r.openTimes[user] = openTime
	case r.openTimes != nil:
		delete(r.openTimes, user)
	}
}

// openOf is the rain's start as user's packet sealed it.
func (r *rainClaims) openOf(user uint64) int64 {
	if t, ok := r.openTimes[user]; ok {
		return t
	}
	return r.openTime
}

// sweep drops the claims of rains that have been closed for
// releaseAfter (booking has long drained them: a repeat is refused as
// rain_closed before it reaches a shard), and returns how many users'
// claims it dropped. isOpen answers for a rain key; unknown rains (a
// version that no longer serves them) count as open, since a rollback may
// bring them back.
func (t *claimTable) sweep(now time.Time, isOpen func(rainKey string) bool) int64 {
	var dropped int64
	for k, r := range t.rains {
		if isOpen(k) {
			r.closedSince = time.Time{}
			continue
		}
		if r.closedSince.IsZero() {
			r.closedSince = now
			continue
		}
		if now.Sub(r.closedSince) >= releaseAfter {
			dropped += int64(r.users.len())
			delete(t.rains, k)
		}
	}
	return dropped
}

// releaseAfter is how long a rain stays closed before its claims are
// dropped.
const releaseAfter = 10 * time.Minute

// claimPageUsers is the span of act_ids one page of a claimSet covers:
// a shard holds about one in every partition count of them, so a page of
// a rain every user joined holds ~128 claims (8 partitions).
const claimPageUsers = 1024

// claimSet is one rain's claims in one shard, by page of act_ids: a page
// is the claims of claimPageUsers consecutive act_ids, sorted by act_id,
// each holding its act_id's offset in the page. The map holds the pages'
// slices themselves (about a thousand pages per million users of the
// rain: it stays in cache), so a lookup reads one claim out of cache and
// the line or two around it, where pages of act_ids and claims apart
// missed three times (the page, its act_ids, its claims). 16 bytes a
// claim and no pointer but the pages'.
type claimSet struct {
	pages map[uint64][]claim
	n     int
}

func (s *claimSet) get(user uint64) (claim, bool) {
	pg := s.pages[user/claimPageUsers]
	if i, ok := searchPage(pg, uint16(user%claimPageUsers)); ok {
		c := pg[i]
		c.off = 0
		return c, true
	}
	return claim{}, false
}

// touch reads the claim where user's would be in its page, and returns
// its offset: what get reads first, read ahead of it.
func (s *claimSet) touch(user uint64) uint16 {
	pg := s.pages[user/claimPageUsers]
	if len(pg) == 0 {
		return 0
	}
	return pg[pageGuess(len(pg), uint16(user%claimPageUsers))].off
}

// pageGuess is where offset off sits in a page of n claims (n > 0) if
// their offsets are evenly spaced: where touch reads and searchPage
// starts.
func pageGuess(n int, off uint16) int { return int(off) * n / claimPageUsers }

// searchPage returns where off is in a page sorted by offset, or would be
// inserted, and whether it is there. Act_ids are handed out in order and
// users spread over shards by hash, so a page's offsets are close to
// evenly spaced over its span: the search starts where off would sit if
// they were exactly, and gallops from there, touching a cache line or
// two where a binary search touched about log2(n), most of them misses
// in a table of millions of users. Any spacing is answered right, only
// more slowly.
func searchPage(pg []claim, off uint16) (int, bool) {
	n := len(pg)
	if n == 0 {
		return 0, false
	}
	i := pageGuess(n, off)
	lo, hi := 0, n // off's place is in [lo, hi]
	if pg[i].off < off {
		lo = i + 1
		for step := 1; ; step *= 2 {
			j := lo + step - 1
			if j >= n {
				break
			}
			if pg[j].off >= off {
				hi = j
				break
			}
			lo = j + 1
		}
	} else {
		hi = i
		for step := 1; ; step *= 2 {
			j := hi - step
			if j < 0 {
				break
			}
			if pg[j].off < off {
				lo = j + 1
				break
			}
			hi = j
		}
	}
	if hi < n {
		hi++ // pg[hi].off >= off: it may be off
	}
	k, ok := slices.BinarySearchFunc(pg[lo:hi], off, func(c claim, off uint16) int { return int(c.off) - int(off) })
	return lo + k, ok
}

func (s *claimSet) set(user uint64, c claim) {
	k := user / claimPageUsers
	c.off = uint16(user % claimPageUsers)
	pg := s.pages[k]
	i, ok := searchPage(pg, c.off)
	if ok {
		pg[i] = c
		return
	}
	if s.pages == nil {
		s.pages = map[uint64][]claim{}
	}
	s.pages[k] = slices.Insert(pg, i, c)
	s.n++
}

func (s *claimSet) del(user uint64) {
	k := user / claimPageUsers
	pg := s.pages[k]
	if i, ok := searchPage(pg, uint16(user%claimPageUsers)); ok {
		s.n--
		if len(pg) == 1 {
			delete(s.pages, k)
			return
		}
		s.pages[k] = slices.Delete(pg, i, i+1)
	}
}

func (s *claimSet) len() int { return s.n }
