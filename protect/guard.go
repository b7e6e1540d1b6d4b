package protect

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"redrain/metrics"
)

// Reason says why a grant request was refused, or that it was admitted.
type Reason uint8

// The verdicts of Admit.
const (
	Admitted      Reason = iota
	Shed                 // refused by ShedPercent
	LimitedUser          // the user's bucket is empty
	LimitedClient        // the client app's bucket is empty
)

// Verdict is Admit's answer.
type Verdict struct {
	Reason Reason
	// RetryAfter is how long the client should wait before trying again:
	// until a token is back for a rate limit, the switches'
	// RetryAfterSeconds for a shed. Zero when admitted.
	RetryAfter time.Duration
}

// OK reports whether the request was admitted.
func (v Verdict) OK() bool { return v.Reason == Admitted }

// Key caps of the limiters a Guard builds.
const (
	// UserKeysMax bounds the users with a live bucket on one node. Each
	// costs ~100 bytes with its map slot, so ~100 MiB at the cap.
	UserKeysMax = 1 << 20
	// clientKeysMax bounds the client apps with a live bucket.
	clientKeysMax = 1 << 14
)

// Guard holds the switches in force and the limiters they configure, and
// answers the HTTP layer for every grant request. Set swaps the whole state
// in one atomic store, so a request sees either the old switches or the
// new ones, never half of each; readers take no lock. A nil *Guard admits
// everything and closes nothing.
type Guard struct {
	state   atomic.Pointer[guardState]
	shedSeq atomic.Uint64 // grant requests that met a shed percentage

	limitedUser, limitedClient, shed, closed, evicted *metrics.Counter
}

// guardState is one immutable configuration; only the limiters inside it
// change (they are safe for concurrent use).
type guardState struct {
	sw           Switches
	retry        time.Duration
	user, client *Limiter // nil = unlimited
	rains, acts  map[string]bool
}

// NewGuard returns a guard with nothing switched off and no limits, whose
// counters and gauges are registered in reg (nil: not exported).
func NewGuard(reg *metrics.Registry) *Guard {
	if reg == nil {
		reg = &metrics.Registry{}
	}
	g := &Guard{
		limitedUser:   reg.Counter("redrain_rate_limited_total", "Grant requests refused by a rate limit, by the limit's scope.", "scope", "user"),
		limitedClient: reg.Counter("redrain_rate_limited_total", "Grant requests refused by a rate limit, by the limit's scope.", "scope", "client"),
		shed:          reg.Counter("redrain_shed_total", "Grant requests refused by the shed percentage."),
		closed:        reg.Counter("redrain_switch_closed_total", "Grant requests refused because their rain or activity is switched off."),
		evicted:       reg.Counter("redrain_rate_limit_evictions_total", "Active rate-limit buckets evicted because a limiter held its maximum of keys."),
	}
	g.state.Store(&guardState{retry: time.Second})
	reg.GaugeFunc("redrain_shed_percent", "Percentage of grant requests being shed.", func() int64 {
		return int64(g.state.Load().sw.ShedPercent)
	})
	reg.GaugeFunc("redrain_closed_rains", "Rains switched off (not counting those of closed activities).", func() int64 {
		return int64(len(g.state.Load().sw.ClosedRains))
	})
	reg.GaugeFunc("redrain_closed_activities", "Activities switched off.", func() int64 {
		return int64(len(g.state.Load().sw.ClosedActivities))
	})
	return g
}

// Set puts s in force (nil: nothing switched off, no limits). Invalid
// switches are refused and the ones in force stay. Limiters whose rate and
// burst are unchanged keep their buckets; a changed limit starts with
// every bucket full.
func (g *Guard) Set(s *Switches) error {
	if s == nil {
		s = &Switches{}
	}
	if err := s.Validate(); err != nil {
		return err
	}
	old := g.state.Load()
	st := &guardState{sw: *s, retry: time.Duration(max(s.RetryAfterSeconds, 1)) * time.Second,
		rains: set(s.ClosedRains), acts: set(s.ClosedActivities)}
	// The caller keeps s: hold copies of its lists.
	st.sw.ClosedRains, st.sw.ClosedActivities, st.sw.LinesOff = slices.Clone(s.ClosedRains), slices.Clone(s.ClosedActivities), slices.Clone(s.LinesOff)
	st.user = g.limiter(old.user, old.sw.UserRate, old.sw.UserBurst, s.UserRate, s.UserBurst, UserKeysMax)
	st.client = g.limiter(old.client, old.sw.ClientRate, old.sw.ClientBurst, s.ClientRate, s.ClientBurst, clientKeysMax)
	g.state.Store(st)
	return nil
}

func (g *Guard) limiter(old *Limiter, oldRate, oldBurst, rate, burst float64, keysMax int) *Limiter {
	switch {
	case rate == 0:
		return nil
	case old != nil && oldRate == rate && oldBurst == burst:
		return old
	}
	l := NewLimiter(rate, burst, keysMax)
	l.evicted = g.evicted
	return l
}

func set(list []string) map[string]bool {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[v] = true
	}
	return m
}

// Switches returns a copy of the switches in force.
func (g *Guard) Switches() Switches {
	if g == nil {
		return Switches{}
	}
	s := g.state.Load().sw
	s.ClosedRains, s.ClosedActivities, s.LinesOff = slices.Clone(s.ClosedRains), slices.Clone(s.ClosedActivities), slices.Clone(s.LinesOff)
	return s
}

// RetryAfter is how long shed and switched-off answers tell clients to wait.
func (g *Guard) RetryAfter() time.Duration {
	if g == nil {
		return time.Second
	}
	return g.state.Load().retry
}

// Admit decides whether one grant request of user (app, user) may go on at
// time now: first the shed percentage, then the user's bucket, then the
// client app's. The shed is exact and lock-free: of the requests numbered
// n = 1, 2, ... by an atomic counter, request n is shed when it carries
// floor(n*p/100) past floor((n-1)*p/100), so any 100 consecutive requests
// shed exactly p of them, spread evenly rather than in a run. The user is
// checked before the client so that one user over its limit does not spend
// its app's tokens; a request the client limit refuses has spent a user
// token (limits are protection, not accounting).
func (g *Guard) Admit(app uint32, user string, now time.Time) Verdict {
	if g == nil {
		return Verdict{}
	}
	st := g.state.Load()
	if p := uint64(st.sw.ShedPercent); p > 0 {
		n := g.shedSeq.Add(1)
		if n*p/100 != (n-1)*p/100 {
			g.shed.Inc()
			return Verdict{Reason: Shed, RetryAfter: st.retry}
		}
	}
	if st.user != nil {
		if ok, wait := st.user.Allow(Key{App: app, User: user}, now); !ok {
			g.limitedUser.Inc()
			return Verdict{Reason: LimitedUser, RetryAfter: wait}
		}
	}
	if st.client != nil {
		if ok, wait := st.client.Allow(Key{App: app}, now); !ok {
			g.limitedClient.Inc()
			return Verdict{Reason: LimitedClient, RetryAfter: wait}
		}
	}
	return Verdict{}
}

// RainOpen reports whether the operator leaves the rain on: neither its
// activity nor the rain itself is switched off. A closed answer is counted.
func (g *Guard) RainOpen(activity, scene string, rain uint64) bool {
	if g == nil {
		return true
	}
	st := g.state.Load()
	closed := st.acts[activity]
	if !closed && st.rains != nil {
		// The key is built on the stack; a map index by string(bytes)
		// does not allocate.
		var buf [2*idLenMax + 24]byte
		closed = st.rains[string(appendRainKey(buf[:0], activity, scene, rain))]
	}
	if closed {
		g.closed.Inc()
	}
	return !closed
}

// String describes a verdict for logs and messages.
func (v Verdict) String() string {
	switch v.Reason {
	case Admitted:
		return "admitted"
	case Shed:
		return fmt.Sprintf("shed (retry after %v)", v.RetryAfter)
	case LimitedUser:
		return fmt.Sprintf("user rate limited (retry after %v)", v.RetryAfter)
	case LimitedClient:
		return fmt.Sprintf("client rate limited (retry after %v)", v.RetryAfter)
	}
	return fmt.Sprintf("reason %d", v.Reason)
}
