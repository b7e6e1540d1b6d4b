package ledger_test

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

var seedFlag = flag.Int64("seed", 0, "seed for TestSimulation; 0 picks seeds from the clock and prints them")

// TestSimulation drives the money paths of one budget from a seed: nodes
// lease from the budget and issue grants whose amounts are drawn from their
// idempotency keys, grants travel in encoded records (some produced twice,
// some failing and rolled back), booking applies them in batches to user
// accounts (some commits failing, some redelivered after commit), redeem
// books some before their record under lease 0 (attributed when the record
// is booked), folds move the oldest hot details into the budget and its
// leases, nodes close leases or crash and have their leases recovered with
// issued = booked. Every invariant is checked after every step.
func TestSimulation(t *testing.T) {
	const steps = 4000
	seeds := []int64{*seedFlag}
	if *seedFlag == 0 {
		// Two fresh seeds per run (one with -short) keep it near a second
		// under the race detector; CI runs accumulate coverage over time.
		base := time.Now().UnixNano()
		seeds = []int64{base, base + 1}
		if testing.Short() {
			seeds = seeds[:1]
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (replay with: go test ./ledger -run TestSimulation -seed=%d)", seed, seed)
			newSim(t, seed).run(steps)
		})
	}
}

const (
	simUsers      = 40
	simNodes      = 4
	simAmountMin  = 1
	simAmountMax  = 500
	simRecordMax  = 6 // grants a node packs into one record
	simBookMax    = 4 // records booking takes per batch
	simSalt       = "sim-salt"
	simBudgetID   = "sim-budget"
	simDrainLimit = 10_000
)

// simLease is a lease and what its node acknowledged under it, which the
// node forgets when it crashes (the model keeps it to check recovery).
type simLease struct {
	l             *ledger.Lease
	issued, count int64
}

type simNode struct {
	name        string
	incarnation uint64
	current     *simLease   // where new grants are taken from; may be nil
	open        []*simLease // every open lease of this incarnation, current included
}

// simStored is a user's account as TiKV holds it.
type simStored struct {
	version uint64
	value   []byte
}

type sim struct {
	t    *testing.T
	seed int64
	rng  *rand.Rand
	step int
	op   string

	budget  *ledger.Budget
	budgetV []byte // the budget as stored
	nodes   []*simNode
	leases  []*simLease // every lease ever taken, by ID
	orphans []*simLease // open leases of crashed incarnations

	marks   map[string]int64 // Redis limit marks: limit key -> amount
	topic   [][]byte         // grant records not yet committed by booking
	granted int64            // Σ acknowledged grants

	store    map[uint64]simStored       // TiKV accounts
	history  map[uint64][]ledger.Entry  // TiKV history chunks, per account, in order
	grains   map[uint64]*ledger.Account // user grains' cached accounts
	details  [][]byte                   // TiKV hot details not folded yet, encoded, in the order written
	unfolded int64                      // Σ their amounts
	postings map[string]int64           // every committed posting, summed per account

	// Running sums of everything booked (folded or not), so that a step's
	// check is not quadratic; folds, recovery and the final check recompute
	// them from the budget, the leases and the unfolded details.
	booked, bookedCount int64
	bookedLease         map[uint64]int64

	// checked holds the account each user's last check passed on. Booking
	// works on clones and a commit installs a new account, so a committed
	// account never changes: the same pointer needs no second check.
	checked map[uint64]*ledger.Account

	closedIssued, closedCount int64
}

func newSim(t *testing.T, seed int64) *sim {
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(uint64(seed), 0x5eed)),
		marks: map[string]int64{}, store: map[uint64]simStored{}, history: map[uint64][]ledger.Entry{}, grains: map[uint64]*ledger.Account{},
		postings: map[string]int64{}, bookedLease: map[uint64]int64{}, checked: map[uint64]*ledger.Account{},
	}
	// From a budget that runs dry early (and then lives on returned lease
	// remainders) to one that outlasts the run.
	s.budget = &ledger.Budget{ID: simBudgetID, Asset: ledger.AssetCash, Total: 20_000 + s.rng.Int64N(1_500_000)}
	s.saveBudget()
	s.commitPostings(ledger.FundingPostings(s.budget))
	for i := range simNodes {
		s.nodes = append(s.nodes, &simNode{name: fmt.Sprintf("node-%d", i), incarnation: 1})
	}
	return s
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d, step %d (%s): %s\nreplay with: go test ./ledger -run TestSimulation -seed=%d",
		s.seed, s.step, s.op, fmt.Sprintf(format, args...), s.seed)
}

func (s *sim) run(steps int) {
	s.t.Helper()
	for s.step = 0; s.step < steps; s.step++ {
		switch r := s.rng.IntN(100); {
		case r < 47:
			s.op = "issue"
			s.issue()
		case r < 50:
			s.op = "redeem"
			s.redeem()
		case r < 78:
			s.op = "book"
			s.book(true)
		case r < 83:
			s.op = "fold"
			s.fold(false)
		case r < 93:
			s.op = "close"
			s.closeLease()
		case r < 96:
			s.op = "crash"
			s.crash()
		default:
			s.op = "recover"
			s.recover()
		}
		s.check()
	}
	s.op = "finish"
	s.drain(false)
	s.recover()
	for _, n := range s.nodes {
		for len(n.open) > 0 {
			s.closeOwn(n, n.open[0])
		}
	}
	s.fold(true)
	s.check()
	s.checkFinal()
}

// issue is one node answering a few grant requests that share a record.
func (s *sim) issue() {
	n := s.nodes[s.rng.IntN(len(s.nodes))]
	type reserved struct {
		sl  *simLease
		key string
		g   ledger.Grant
	}
	var batch []reserved
	for range 1 + s.rng.IntN(simRecordMax) {
		act := 1 + uint64(s.rng.IntN(simUsers))
		g := ledger.Grant{
			AppID: 1, ActID: act, UserID: fmt.Sprintf("u%d", act), ActivityID: "sim",
			SceneID: []string{"lobby", "hall"}[s.rng.IntN(2)],
			RainID:  1 + uint64(s.rng.IntN(1+s.step/40)),
			Stage:   tokens.Stage(s.rng.IntN(3)),
			// The award is drawn per request, so a second request for the same
			// limit key may come with another award: it must still collapse.
			AwardType: []string{"cash", "lucky"}[s.rng.IntN(2)],
			Asset:     ledger.AssetCash, BudgetID: simBudgetID,
			OpenTime: 1_700_000_000_000, IssuedAt: 1_700_000_000_000 + int64(s.step),
		}
		key := g.LimitKey()
		if _, claimed := s.marks[key]; claimed {
			continue // AlreadyGranted: no budget spent
		}
		g.Amount = ledger.Draw(ledger.DrawSeed(simSalt, g.IdempotencyKey()), simAmountMin, simAmountMax)
		sl := s.reserve(n, g.Amount)
		if sl == nil {
			continue // BudgetExhausted
		}
		g.LeaseID = sl.l.ID
		s.marks[key] = g.Amount
		batch = append(batch, reserved{sl, key, g})
	}
	if len(batch) == 0 {
		return
	}
	if s.rng.IntN(20) == 0 {
		// The produce failed: every reservation goes back to its lease and
		// every mark is deleted, so nothing changed.
		for _, r := range batch {
			r.sl.issued -= r.g.Amount
			r.sl.count--
			delete(s.marks, r.key)
		}
		return
	}
	gs := make([]ledger.Grant, len(batch))
	for i, r := range batch {
		gs[i] = r.g
		s.granted += r.g.Amount
	}
	rec := ledger.AppendGrantRecord(nil, gs)
	s.topic = append(s.topic, rec)
	if s.rng.IntN(15) == 0 {
		s.topic = append(s.topic, rec) // a producer retry wrote it twice
	}
}

// reserve takes amount from the node's current lease, leasing anew when it
// does not fit. It returns nil when the budget cannot pay.
func (s *sim) reserve(n *simNode, amount int64) *simLease {
	if n.current == nil || n.current.l.Amount-n.current.issued < amount {
		remaining := s.budget.Remaining()
		want := 500 + s.rng.Int64N(4500)
		l := s.budget.TakeLease(want, n.name, n.incarnation)
		if l == nil {
			if remaining > 0 && want > 0 {
				s.fatalf("TakeLease(%d) with %d remaining = nil", want, remaining)
			}
			return nil
		}
		if l.Amount > remaining || l.Amount > want {
			s.fatalf("TakeLease(%d) with %d remaining leased %d", want, remaining, l.Amount)
		}
		s.saveBudget()
		s.roundTripLease(l)
		sl := &simLease{l: l}
		if l.ID != uint64(len(s.leases))+1 { // ids start at 1; 0 means unattributed
			s.fatalf("lease id %d, want %d", l.ID, len(s.leases)+1)
		}
		s.leases = append(s.leases, sl)
		n.open = append(n.open, sl)
		n.current = sl
		if l.Amount < amount {
			return nil // the last crumbs of the budget: too small for this draw
		}
	}
	n.current.issued += amount
	n.current.count++
	return n.current
}

// book is one booking batch: a few records from the front of the topic.
// With faults, the commit may fail (nothing changes and the records stay) or
// succeed without committing the offsets (the records are delivered again).
func (s *sim) book(faults bool) {
	if len(s.topic) == 0 {
		return
	}
	nrec := min(len(s.topic), 1+s.rng.IntN(simBookMax))
	var gs []ledger.Grant
	for _, rec := range s.topic[:nrec] {
		var err error
		if gs, err = ledger.DecodeGrantRecord(gs, rec); err != nil {
			s.fatalf("DecodeGrantRecord: %v", err)
		}
	}
	if !s.bookGrants(gs, faults) {
		return
	}
	if faults && s.rng.IntN(8) == 0 {
		return // crashed before committing the offsets: all of it comes again
	}
	s.topic = s.topic[nrec:]
}

// redeem is a client forcing the booking of tokens it holds: grants of one
// record still in the topic, booked now under lease 0 (a token does not
// name its lease); their stream event attributes them later.
func (s *sim) redeem() {
	if len(s.topic) == 0 {
		return
	}
	gs, err := ledger.DecodeGrantRecord(nil, s.topic[s.rng.IntN(len(s.topic))])
	if err != nil {
		s.fatalf("DecodeGrantRecord: %v", err)
	}
	for i := range gs {
		gs[i].LeaseID = 0
	}
	s.bookGrants(gs, true)
}

// bookGrants is one booking transaction; it reports whether it committed.
func (s *sim) bookGrants(gs []ledger.Grant, faults bool) bool {
	// Group by user in a fixed order: map order would make the run
	// unreplayable.
	byAct := map[uint64][]ledger.Grant{}
	var acts []uint64
	for _, g := range gs {
		if _, ok := byAct[g.ActID]; !ok {
			acts = append(acts, g.ActID)
		}
		byAct[g.ActID] = append(byAct[g.ActID], g)
	}
	slices.Sort(acts)

	// Prepare: each grain books its grants on a clone of its cached account.
	type prepared struct {
		act     uint64
		read    uint64
		account *ledger.Account
		chunks  [][]ledger.Entry // archived by this batch, written with it
	}
	var prep []prepared
	var batch ledger.Batch
	detail := ledger.HotDetail{BudgetID: simBudgetID}
	for _, act := range acts {
		cached := s.grain(act)
		a := cached.Clone()
		var chunks [][]ledger.Entry
		for _, g := range byAct[act] {
			booked, err := a.Book(&g, int64(s.step))
			if err != nil {
				s.fatalf("Book(%+v): %v", g, err)
			}
			if n, chunk, ok := a.TakeSealed(); ok {
				if want := uint64(len(s.history[act])/ledger.ChunkEntries + len(chunks)); n != want {
					s.fatalf("act %d: sealed chunk %d, want %d", act, n, want)
				}
				chunks = append(chunks, chunk)
			}
			if _, seen := s.marks[g.LimitKey()]; !seen {
				s.fatalf("booked %s, which has no limit mark", g.LimitKey())
			}
			if !booked {
				if a.Attribute(&g) {
					if err := detail.Attribute(&g); err != nil {
						s.fatalf("HotDetail.Attribute(%+v): %v", g, err)
					}
				}
				continue
			}
			batch = ledger.GrantPostings(batch, &g)
			if err := detail.Add(&g); err != nil {
				s.fatalf("HotDetail.Add(%+v): %v", g, err)
			}
		}
		if err := a.Check(); err != nil {
			s.fatalf("prepared account: %v", err)
		}
		prep = append(prep, prepared{act, cached.Version, a, chunks})
	}
	if err := batch.Check(); err != nil {
		s.fatalf("booking batch: %v", err)
	}

	if faults && s.rng.IntN(10) == 0 {
		return false // the transaction failed: the clones are dropped, the grains keep their accounts
	}
	// Commit: every write conditional on the version its grain read.
	for _, p := range prep {
		if v := s.store[p.act].version; v != p.read {
			s.fatalf("act %d: grain read version %d, store holds %d", p.act, p.read, v)
		}
		p.account.Version++
		s.store[p.act] = simStored{p.account.Version, ledger.MarshalAccount(nil, p.account)}
		for _, c := range p.chunks {
			s.history[p.act] = append(s.history[p.act], c...)
		}
		s.grains[p.act] = p.account
	}
	if len(detail.Leases) > 0 {
		enc := ledger.MarshalHotDetail(nil, &detail)
		d, err := ledger.UnmarshalHotDetail(enc)
		if err != nil {
			s.fatalf("hot detail %+v: %v", detail, err)
		}
		s.details = append(s.details, enc)
		s.unfolded += d.Amount
		s.booked += d.Amount
		s.bookedCount += d.Count
		for _, u := range d.Leases {
			s.bookedLease[u.LeaseID] += u.Amount
		}
	}
	s.commitPostings(batch)
	return true
}

// grain returns the user's cached account, loading it as a grain does on
// activation; a grain may have been dropped at any time.
func (s *sim) grain(act uint64) *ledger.Account {
	if a, ok := s.grains[act]; ok && s.rng.IntN(20) > 0 {
		return a
	}
	st, ok := s.store[act]
	if !ok {
		a := &ledger.Account{ActID: act}
		s.grains[act] = a
		return a
	}
	a, err := ledger.UnmarshalAccount(st.value)
	if err != nil {
		s.fatalf("act %d: UnmarshalAccount: %v", act, err)
	}
	if err := a.SetArchivedKeys(s.history[act]); err != nil {
		s.fatalf("act %d: SetArchivedKeys: %v", act, err)
	}
	if a.Version != st.version || a.ActID != act {
		s.fatalf("act %d: loaded act %d version %d, stored version %d", act, a.ActID, a.Version, st.version)
	}
	s.grains[act] = a
	return a
}

func (s *sim) commitPostings(b ledger.Batch) {
	if err := b.Check(); err != nil {
		s.fatalf("commit: %v", err)
	}
	for _, p := range b {
		if p.Asset != ledger.AssetCash {
			s.fatalf("posting %+v in a cash-only simulation", p)
		}
		s.postings[p.Account] += p.Amount
	}
}

// drain books until the topic is empty, as recovery waits for.
func (s *sim) drain(faults bool) {
	for i := 0; len(s.topic) > 0; i++ {
		if i == simDrainLimit {
			s.fatalf("topic not drained after %d batches: %d records left", i, len(s.topic))
		}
		s.book(faults)
	}
}

// fold moves the oldest unfolded hot details (all of them, or a random
// number as a fold batch bound would) into the budget and their leases, and
// checks that the sums booked per budget and per lease did not move.
func (s *sim) fold(all bool) {
	n := len(s.details)
	if n == 0 {
		return
	}
	if !all {
		n = 1 + s.rng.IntN(n)
	}
	details := make([]*ledger.HotDetail, n)
	for i, enc := range s.details[:n] {
		d, err := ledger.UnmarshalHotDetail(enc)
		if err != nil {
			s.fatalf("UnmarshalHotDetail: %v", err)
		}
		details[i] = d
	}
	leases := make(map[uint64]*ledger.Lease, len(s.leases))
	for _, sl := range s.leases {
		leases[sl.l.ID] = sl.l
	}
	bookedBefore, countBefore := s.bookedPerLease()
	got, err := s.budget.Fold(details, leases)
	if err != nil {
		s.fatalf("Fold(%d details): %v", n, err)
	}
	var amount int64
	for _, d := range details {
		amount += d.Amount
	}
	if got.Details != n || got.Amount != amount {
		s.fatalf("Fold(%d details of %d) = %+v", n, amount, got)
	}
	s.details = slices.Delete(s.details, 0, n)
	s.unfolded -= amount
	s.saveBudget()
	for _, l := range got.Leases {
		s.roundTripLease(l)
	}
	booked, count := s.bookedPerLease()
	if !maps.Equal(booked, bookedBefore) || !maps.Equal(count, countBefore) {
		s.fatalf("booked per lease %v (%v) before the fold, %v (%v) after", bookedBefore, countBefore, booked, count)
	}
	var sum, sumCount int64
	for _, sl := range s.leases {
		sum += sl.l.Booked
		sumCount += sl.l.BookedCount
	}
	if b := s.budget; b.Folded != sum+b.FoldedUnattributed || b.FoldedCount != sumCount+b.FoldedUnattributedCount {
		s.fatalf("folded %d (%d) != Σ lease booked %d (%d) + unattributed %d (%d)",
			b.Folded, b.FoldedCount, sum, sumCount, b.FoldedUnattributed, b.FoldedUnattributedCount)
	}
}

// closeLease has a live node close one of its leases with its own count.
func (s *sim) closeLease() {
	n := s.nodes[s.rng.IntN(len(s.nodes))]
	if len(n.open) == 0 {
		return
	}
	s.closeOwn(n, n.open[s.rng.IntN(len(n.open))])
}

func (s *sim) closeOwn(n *simNode, sl *simLease) {
	s.close(sl, sl.issued, sl.count)
	n.open = slices.DeleteFunc(n.open, func(o *simLease) bool { return o == sl })
	if n.current == sl {
		n.current = nil
	}
}

func (s *sim) close(sl *simLease, issued, count int64) {
	remaining := s.budget.Remaining()
	if err := s.budget.CloseLease(sl.l, issued, count); err != nil {
		s.fatalf("CloseLease(%+v, %d, %d): %v", *sl.l, issued, count, err)
	}
	if got, want := s.budget.Remaining(), remaining+sl.l.Amount-issued; got != want {
		s.fatalf("CloseLease(%+v, %d) left %d remaining, want %d", *sl.l, issued, got, want)
	}
	// Closing again is refused and changes nothing.
	before := *s.budget
	if err := s.budget.CloseLease(sl.l, issued, count); err == nil || *s.budget != before {
		s.fatalf("second CloseLease(%+v) = %v, budget %+v -> %+v", *sl.l, err, before, *s.budget)
	}
	s.closedIssued += issued
	s.closedCount += count
	s.saveBudget()
	s.roundTripLease(sl.l)
}

// crash loses a node's memory: its open leases wait for recovery.
func (s *sim) crash() {
	n := s.nodes[s.rng.IntN(len(s.nodes))]
	s.orphans = append(s.orphans, n.open...)
	n.open, n.current = nil, nil
	n.incarnation++
}

// recover waits for booking to drain, then closes the crashed incarnations'
// leases with issued = booked under the lease, read from the hot details.
func (s *sim) recover() {
	if len(s.orphans) == 0 {
		return
	}
	s.drain(s.op != "finish")
	booked, count := s.bookedPerLease()
	for _, sl := range s.orphans {
		id := sl.l.ID
		// Every acknowledged grant is in the topic, so once it drained the
		// booked amount is exactly what the lost node had acknowledged.
		if booked[id] != sl.issued || count[id] != sl.count {
			s.fatalf("lease %d: booked %d (%d grants), the crashed node acknowledged %d (%d)",
				id, booked[id], count[id], sl.issued, sl.count)
		}
		s.close(sl, booked[id], count[id])
	}
	s.orphans = nil
}

// bookedPerLease is what booking posted under each lease: what folds moved
// into the lease and its uses in the unfolded details.
// Lease 0 (redeemed, not attributed yet) folds into the budget. Leases
// with nothing booked are left out.
func (s *sim) bookedPerLease() (amount, count map[uint64]int64) {
	amount, count = map[uint64]int64{}, map[uint64]int64{}
	amount[0], count[0] = s.budget.FoldedUnattributed, s.budget.FoldedUnattributedCount
	for _, sl := range s.leases {
		amount[sl.l.ID], count[sl.l.ID] = sl.l.Booked, sl.l.BookedCount
	}
	for _, enc := range s.details {
		d, err := ledger.UnmarshalHotDetail(enc)
		if err != nil {
			s.fatalf("UnmarshalHotDetail: %v", err)
		}
		for _, u := range d.Leases {
			amount[u.LeaseID] += u.Amount
			count[u.LeaseID] += u.Count
		}
	}
	for id := range amount {
		if amount[id] == 0 && count[id] == 0 {
			delete(amount, id)
			delete(count, id)
		}
	}
	return amount, count
}

func (s *sim) saveBudget() {
	if err := s.budget.Check(); err != nil {
		s.fatalf("budget: %v", err)
	}
	s.budget.Version++
	s.budgetV = ledger.MarshalBudget(s.budgetV[:0], s.budget)
	got, err := ledger.UnmarshalBudget(s.budgetV)
	if err != nil || *got != *s.budget {
		s.fatalf("budget round trip: %+v, %v, want %+v", got, err, *s.budget)
	}
}

// roundTripLease checks that the lease survives its encoding; the budget
// figures a fresh lease carries for its holder are not persisted.
func (s *sim) roundTripLease(l *ledger.Lease) {
	want := *l
	want.BudgetOut, want.BudgetTotal = 0, 0
	got, err := ledger.UnmarshalLease(ledger.MarshalLease(nil, l))
	if err != nil || *got != want {
		s.fatalf("lease round trip: %+v, %v, want %+v", got, err, want)
	}
}

// check asserts every invariant of the current state.
func (s *sim) check() {
	b := s.budget
	if err := b.Check(); err != nil {
		s.fatalf("Budget.Check: %v", err)
	}
	if s.granted > b.Total {
		s.fatalf("overspent: granted %d of total %d", s.granted, b.Total)
	}
	// Conservation: total = remaining + Σ open lease amounts + Σ closed issued.
	sum := b.Remaining() + s.closedIssued
	var granted int64
	for _, sl := range s.leases {
		if sl.issued < 0 || sl.issued > sl.l.Amount {
			s.fatalf("lease %d: issued %d of %d", sl.l.ID, sl.issued, sl.l.Amount)
		}
		if !sl.l.Closed {
			sum += sl.l.Amount
		}
		granted += sl.issued
	}
	if sum != b.Total {
		s.fatalf("remaining %d + open + closed issued %d = %d, want total %d", b.Remaining(), s.closedIssued, sum, b.Total)
	}
	if granted != s.granted {
		s.fatalf("Σ issued per lease %d != Σ acknowledged %d", granted, s.granted)
	}

	// Accounts: each checks, the store agrees with the grains, and the
	// balances agree with the committed postings.
	balances, entries := s.checkAccounts(false)

	// Double entry: funding + budget account (total - booked) + users = 0.
	booked, bookedCount := s.booked, s.bookedCount
	if got := s.postings[ledger.FundingAccount(ledger.AssetCash)]; got != -b.Total {
		s.fatalf("funding account %d, want %d", got, -b.Total)
	}
	if got := s.postings[ledger.BudgetAccount(simBudgetID)]; got != b.Total-booked {
		s.fatalf("budget account %d, want total %d - booked %d", got, b.Total, booked)
	}
	var zero int64
	for _, v := range s.postings {
		zero += v
	}
	if zero != 0 || -b.Total+(b.Total-booked)+balances != 0 {
		s.fatalf("postings sum to %d; funding + budget + users = %d", zero, -b.Total+(b.Total-booked)+balances)
	}
	if booked != balances || bookedCount != entries {
		s.fatalf("booked %d (%d grants) but users hold %d (%d entries)", booked, bookedCount, balances, entries)
	}
	if booked > s.granted {
		s.fatalf("booked %d more than granted %d", booked, s.granted)
	}
	if b.Folded+s.unfolded != booked {
		s.fatalf("folded %d + unfolded %d != booked %d", b.Folded, s.unfolded, booked)
	}
	for _, sl := range s.leases {
		if s.bookedLease[sl.l.ID] > sl.issued {
			s.fatalf("lease %d: booked %d more than issued %d", sl.l.ID, s.bookedLease[sl.l.ID], sl.issued)
		}
		if sl.l.Booked > s.bookedLease[sl.l.ID] || (sl.l.Closed && sl.l.Booked > sl.l.Issued) {
			s.fatalf("lease %+v: folded booked over booked %d or issued", *sl.l, s.bookedLease[sl.l.ID])
		}
	}
}

// checkAccounts checks every stored account (all of them when full, else
// those not already checked unchanged) and returns the sums of their cash
// balances and entries.
func (s *sim) checkAccounts(full bool) (balances, entries int64) {
	for act, st := range s.store {
		a := s.grains[act]
		if a == nil || a.Version != st.version {
			s.fatalf("act %d: grain %+v disagrees with the store (version %d)", act, a, st.version)
		}
		bal := a.Balance(ledger.AssetCash)
		if p := s.postings[ledger.UserAccount(act)]; p != bal {
			s.fatalf("act %d: balance %d, postings %d", act, bal, p)
		}
		balances += bal
		entries += int64(a.Archived) + int64(len(a.Entries))
		if !full && s.checked[act] == a {
			continue
		}
		// A commit stores MarshalAccount of the grain's account, so this only
		// finds something at the end, after every kind of reload.
		if full && !bytes.Equal(ledger.MarshalAccount(nil, a), st.value) {
			s.fatalf("act %d: grain %+v disagrees with the store", act, a)
		}
		if err := a.Check(); err != nil {
			s.fatalf("Account.Check: %v", err)
		}
		for _, e := range a.Entries {
			if m, ok := s.marks[e.LimitKey]; !ok || m != e.Amount {
				s.fatalf("act %d: entry %+v, limit mark %d (present %v)", act, e, m, ok)
			}
			// Lease 0: redeemed, its stream event not booked yet; none
			// is left once the topic has drained.
			if (full && e.LeaseID == 0) || e.LeaseID > uint64(len(s.leases)) {
				s.fatalf("act %d: entry %+v paid by no lease", act, e)
			}
		}
		s.checked[act] = a
	}
	return balances, entries
}

// bookedTotal recomputes the running sums from the budget's folded sums and
// the unfolded details.
func (s *sim) bookedTotal() (amount, count int64) {
	amount, count = s.budget.Folded, s.budget.FoldedCount
	for _, enc := range s.details {
		d, err := ledger.UnmarshalHotDetail(enc)
		if err != nil {
			s.fatalf("UnmarshalHotDetail: %v", err)
		}
		amount += d.Amount
		count += d.Count
	}
	return amount, count
}

// checkFinal asserts the end state: everything delivered, every lease closed.
func (s *sim) checkFinal() {
	b := s.budget
	if len(s.topic) != 0 || len(s.orphans) != 0 {
		s.fatalf("%d records and %d orphan leases left", len(s.topic), len(s.orphans))
	}
	var issued, count int64
	for _, sl := range s.leases {
		if !sl.l.Closed {
			s.fatalf("lease %+v still open", *sl.l)
		}
		issued += sl.l.Issued
		count += sl.l.IssuedCount
	}
	booked, bookedCount := s.bookedTotal()
	if booked != s.booked || bookedCount != s.bookedCount {
		s.fatalf("details sum to %d (%d), running sums %d (%d)", booked, bookedCount, s.booked, s.bookedCount)
	}
	balances, _ := s.checkAccounts(true)
	if issued != booked || booked != balances || issued != s.granted || issued != s.closedIssued {
		s.fatalf("Σ lease issued %d, Σ booked %d, Σ balances %d, Σ granted %d: want all equal", issued, booked, balances, s.granted)
	}
	if count != bookedCount || count != int64(len(s.marks)) {
		s.fatalf("Σ lease issued count %d, booked grants %d, limit marks %d: want all equal", count, bookedCount, len(s.marks))
	}
	if b.Total != b.Remaining()+issued {
		s.fatalf("total %d != remaining %d + issued %d", b.Total, b.Remaining(), issued)
	}
	if b.Folded != booked || b.FoldedCount != bookedCount || len(s.details) != 0 {
		s.fatalf("folded %d (%d), booked %d (%d), %d details unfolded", b.Folded, b.FoldedCount, booked, bookedCount, len(s.details))
	}
	perLease, perLeaseCount := s.bookedPerLease()
	for _, sl := range s.leases {
		if sl.l.Issued != perLease[sl.l.ID] || sl.l.IssuedCount != perLeaseCount[sl.l.ID] ||
			sl.l.Booked != sl.l.Issued || sl.l.BookedCount != sl.l.IssuedCount {
			s.fatalf("lease %d closed with %d (%d), booked %d (%d)", sl.l.ID, sl.l.Issued, sl.l.IssuedCount,
				perLease[sl.l.ID], perLeaseCount[sl.l.ID])
		}
	}
	s.t.Logf("total %d, granted %d in %d grants over %d leases, remaining %d, %d users",
		b.Total, s.granted, count, len(s.leases), b.Remaining(), len(s.store))
}
