package grant

import (
	"strings"
	"time"
)

// claimState is where a user's packet for one rain stands.
type claimState uint8

const (
	claimPending claimState = iota + 1 // its record may have landed (until the deadline); a batch being issued writes none (shard.claimIssued)
	claimIssued                        // acknowledged on the stream
	claimBooked                        // booked (or restored from the store)
	claimNoAward                       // every award fell back to "no award"
)

// claim is one user's packet for one rain, 16 bytes. In a Go swiss-table
// map keyed by act_id (8 bytes) it costs ~24 bytes a slot; at the maps'
// load it is about 40 bytes per granted user.
type claim struct {
	// amount of the packet; for a pending claim, the unix ms after which a
	// retry may issue again (the record may have landed until then).
	amount int64
	app    uint32 // the app of the grant that set it (0: unknown, restored)
	award  uint8  // index into the rain's award names
	state  claimState
}

// rainClaims are the claims of one rain and stage in one shard.
type rainClaims struct {
	awards      []string
	awardIndex  map[string]uint8
	users       map[uint64]claim
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
		r = &rainClaims{awardIndex: map[string]uint8{}, users: map[uint64]claim{}}
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
	r.awardIndex[name] = i
	return i
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
			dropped += int64(len(r.users))
			delete(t.rains, k)
		}
	}
	return dropped
}

// releaseAfter is how long a rain stays closed before its claims are
// dropped.
const releaseAfter = 10 * time.Minute
