package ledger_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

func TestMonthOf(t *testing.T) {
	for _, tc := range []struct {
		at   int64
		want string
	}{
		{0, "1970-01"},
		{-1, "1969-12"},
		{time.Date(2026, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli(), "2026-12"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), "2027-01"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("CST", 8*3600)).UnixMilli(), "2026-12"},
		{time.Date(1969, 1, 15, 0, 0, 0, 0, time.UTC).UnixMilli(), "1969-01"},
	} {
		if got := ledger.MonthOf(tc.at).String(); got != tc.want {
			t.Errorf("MonthOf(%d) = %s, want %s", tc.at, got, tc.want)
		}
	}
	// Against the time package, over ±1,000 years of milliseconds, and
	// around every month's first millisecond of 1900-2200.
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(ms int64) {
		tm := time.UnixMilli(ms).UTC()
		if got, want := ledger.MonthOf(ms), ledger.Month((tm.Year()-1970)*12+int(tm.Month())-1); got != want {
			t.Fatalf("MonthOf(%d) = %s, want %s (%v)", ms, got, want, tm)
		}
		if got, want := ledger.MonthOf(ms).String(), tm.Format("2006-01"); got != want {
			t.Fatalf("MonthOf(%d).String() = %s, want %s", ms, got, want)
		}
	}
	for range 200_000 {
		check(rng.Int64N(2*1000*365*86_400_000) - 1000*365*86_400_000)
	}
	for y := 1900; y <= 2200; y++ {
		for m := time.January; m <= time.December; m++ {
			first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
			check(first)
			check(first - 1)
		}
	}
}

// monthsModel is what the monthly summaries must be: every entry's amount
// summed per asset and month of its booking time.
func monthsModel(entries []ledger.Entry) []ledger.MonthSum {
	sums := map[ledger.Asset]map[ledger.Month]int64{}
	for _, e := range entries {
		if sums[e.Asset] == nil {
			sums[e.Asset] = map[ledger.Month]int64{}
		}
		sums[e.Asset][ledger.MonthOf(e.BookedAt)] += e.Amount
	}
	var out []ledger.MonthSum
	for asset, ms := range sums {
		for m, v := range ms {
			out = append(out, ledger.MonthSum{Asset: asset, Month: m, Income: v})
		}
	}
	slices.SortFunc(out, func(a, b ledger.MonthSum) int {
		if a.Asset != b.Asset {
			if a.Asset < b.Asset {
				return -1
			}
			return 1
		}
		return int(a.Month - b.Month)
	})
	return out
}

// monthsRig books random grants into a few accounts over many months,
// keeping their history chunks and the journals since the last checkpoint
// as booking does, so that a test can rebuild the accounts from a stored
// page (of either version) and the journals and compare.
type monthsRig struct {
	t       *testing.T
	rng     *rand.Rand
	now     int64
	owner   map[uint64]*ledger.Account
	chunks  map[uint64][]ledger.Entry // archived entries per act, in order
	page    []byte                    // the last checkpoint
	journal [][]byte                  // encoded journals after it
	seq     uint64
	rain    uint64
	redeems []ledger.Grant // booked under lease 0, not yet attributed
}

var monthsAssets = []ledger.Asset{ledger.AssetCash, "coin:gold", "item:card-fu"}

func newMonthsRig(t *testing.T, seed int64, users int) *monthsRig {
	r := &monthsRig{t: t, rng: rand.New(rand.NewPCG(uint64(seed), 12)), owner: map[uint64]*ledger.Account{},
		chunks: map[uint64][]ledger.Entry{}, now: time.Date(2026, 1, 30, 0, 0, 0, 0, time.UTC).UnixMilli()}
	for act := uint64(1); act <= uint64(users); act++ {
		r.owner[act] = &ledger.Account{ActID: act}
	}
	r.checkpoint(true)
	return r
}

// step books one journal of random ops at a time that mostly moves
// forward, by minutes to weeks, and sometimes back (another node's clock).
func (r *monthsRig) step() {
	switch x := r.rng.IntN(10); {
	case x < 6:
		r.now += r.rng.Int64N(int64(36 * time.Hour / time.Millisecond))
	case x < 8:
		r.now += r.rng.Int64N(int64(40 * 24 * time.Hour / time.Millisecond))
	default:
		r.now -= r.rng.Int64N(60_000)
	}
	j := &ledger.Journal{Seq: r.seq + 1, BookedAt: r.now}
	for range 1 + r.rng.IntN(8) {
		act := uint64(1 + r.rng.IntN(len(r.owner)))
		var op ledger.Op
		switch x := r.rng.IntN(10); {
		case x == 0 && len(r.redeems) > 0: // the stream event of a redeemed grant
			k := r.rng.IntN(len(r.redeems))
			g := r.redeems[k]
			r.redeems = slices.Delete(r.redeems, k, k+1)
			g.LeaseID = 5
			op = ledger.Op{Kind: ledger.OpAttribute, Grant: g}
		default:
			r.rain++
			g := grant(act, "lobby", r.rain, tokens.StageFormal, "award", 1+r.rng.Int64N(888))
			g.Asset = monthsAssets[r.rng.IntN(len(monthsAssets))]
			if x == 1 {
				g.LeaseID = 0 // redeemed before its stream event
				r.redeems = append(r.redeems, g)
			}
			op = ledger.Op{Kind: ledger.OpBook, Grant: g}
		}
		a := r.owner[op.Grant.ActID]
		changed, err := op.Apply(a, j.BookedAt)
		if err != nil {
			r.t.Fatalf("Apply: %v", err)
		}
		if n, c, ok := a.TakeSealed(); ok {
			if n != uint64(len(r.chunks[a.ActID]))/ledger.ChunkEntries {
				r.t.Fatalf("act %d sealed chunk %d after %d archived", a.ActID, n, len(r.chunks[a.ActID]))
			}
			r.chunks[a.ActID] = append(r.chunks[a.ActID], c...)
		}
		if changed {
			j.Ops = append(j.Ops, op)
		}
	}
	if len(j.Ops) > 0 {
		r.seq++
		r.journal = append(r.journal, ledger.AppendJournal(nil, j))
	}
	for _, a := range r.owner {
		r.checkModel(a, "owner")
	}
}

func (r *monthsRig) checkModel(a *ledger.Account, what string) {
	r.t.Helper()
	if err := a.Check(); err != nil {
		r.t.Fatalf("%s act %d: %v", what, a.ActID, err)
	}
	all := append(slices.Clone(r.chunks[a.ActID]), a.Entries...)
	for i := 1; i < len(all); i++ {
		if all[i].BookedAt < all[i-1].BookedAt {
			r.t.Fatalf("%s act %d: entry %d booked at %d, before entry %d at %d", what, a.ActID, i, all[i].BookedAt, i-1, all[i-1].BookedAt)
		}
	}
	if want := monthsModel(all); !slices.Equal(a.Months, want) {
		r.t.Fatalf("%s act %d: months %v, want %v", what, a.ActID, a.Months, want)
	}
}

// checkpoint stores the accounts as a page (version 2, before monthly
// summaries, when old) and forgets the journals.
func (r *monthsRig) checkpoint(old bool) {
	p := &ledger.Page{Seq: r.seq}
	for act := uint64(1); act <= uint64(len(r.owner)); act++ {
		p.Accounts = append(p.Accounts, r.owner[act])
	}
	if old {
		r.page = ledger.AppendPageV2(nil, p)
	} else {
		r.page = ledger.AppendPage(nil, p)
	}
	r.journal = nil
}

// reload rebuilds the accounts as a reader or a next owner does: the page,
// the chunks, then the journals replayed; they must equal the owner's.
func (r *monthsRig) reload() {
	p, err := ledger.DecodePage(r.page)
	if err != nil {
		r.t.Fatalf("DecodePage: %v", err)
	}
	got := map[uint64]*ledger.Account{}
	for _, a := range p.Accounts {
		if a.Archived > 0 && r.page[0] == 2 && a.MonthsKnown() {
			r.t.Fatalf("act %d from a version 2 page with archived entries knows its months", a.ActID)
		}
		if err := a.SetArchivedKeys(r.chunks[a.ActID][:a.Archived]); err != nil {
			r.t.Fatalf("SetArchivedKeys: %v", err)
		}
		got[a.ActID] = a
	}
	for _, raw := range r.journal {
		j, err := ledger.DecodeJournal(raw)
		if err != nil {
			r.t.Fatalf("DecodeJournal: %v", err)
		}
		for i := range j.Ops {
			a := got[j.Ops[i].Grant.ActID]
			if changed, err := j.Ops[i].Apply(a, j.BookedAt); !changed || err != nil {
				r.t.Fatalf("replay of journal %d op %d: %v, %v", j.Seq, i, changed, err)
			}
			a.TakeSealed()
		}
	}
	for act, a := range got {
		o := r.owner[act]
		if !slices.Equal(a.Months, o.Months) || !slices.Equal(a.Entries, o.Entries) || a.Archived != o.Archived {
			r.t.Fatalf("act %d replayed: months %v entries %d archived %d; owner: %v %d %d", act, a.Months, len(a.Entries), a.Archived, o.Months, len(o.Entries), o.Archived)
		}
		r.checkModel(a, "replayed")
		// And as a reader gets it from the owner.
		back, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
		if err != nil || !slices.Equal(back.Months, a.Months) {
			r.t.Fatalf("act %d: account round trip: %v, months %v", act, err, back)
		}
	}
}

// TestMonthsModel: under random bookings (redeems attributed later, booking
// times going back a little, many months, archival), every account's
// monthly summaries equal the model of its entries, and so do those of the
// accounts rebuilt from a stored page (version 2, whose accounts with
// archived entries get them from their chunks, or 3) and the journals.
func TestMonthsModel(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newMonthsRig(t, seed, 3)
			for i := range 600 {
				r.step()
				if i%37 == 36 {
					r.reload()
					r.checkpoint(r.rng.IntN(2) == 0)
				}
			}
			r.reload()
			archived := 0
			for _, a := range r.owner {
				archived += int(a.Archived)
			}
			if archived == 0 || len(r.owner[1].Months) < 10 {
				t.Fatalf("the run archived %d entries, %d months: it tests too little", archived, len(r.owner[1].Months))
			}
		})
	}
}

// TestMonthsNotLoaded: an account of a record that predates monthly
// summaries and has archived entries does not book, nor answer a page,
// until its chunks are read; its summaries then are exact; a stored month
// that lost a recent entry's income is refused.
func TestMonthsNotLoaded(t *testing.T) {
	r := newMonthsRig(t, 9, 1)
	for r.owner[1].Archived == 0 {
		r.step()
	}
	a := r.owner[1]
	old, err := ledger.UnmarshalAccount(ledger.MarshalAccountV2(nil, a))
	if err != nil || old.MonthsKnown() || old.Months != nil {
		t.Fatalf("UnmarshalAccount(version 2) = %+v, %v: want its months unknown", old, err)
	}
	if _, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, old)); err != nil {
		t.Fatalf("an account with its months unknown does not round-trip: %v", err)
	}
	g := grant(1, "late", 1, tokens.StageFormal, "award", 1)
	if _, err := old.Book(&g, r.now); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("Book on an account with its months unknown = %v, want ErrInvariant", err)
	}
	if _, err := ledger.ReadDetail(old, ledger.DetailQuery{Before: old.EntryCount(), Limit: 5}, nil, old); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("ReadDetail on an account with its months unknown = %v, want ErrInvariant", err)
	}
	if err := old.SetArchivedKeys(r.chunks[1]); err != nil || !slices.Equal(old.Months, a.Months) {
		t.Fatalf("SetArchivedKeys: %v; months %v, want %v", err, old.Months, a.Months)
	}

	bad := a.Clone()
	last := bad.Entries[len(bad.Entries)-1]
	for i := range bad.Months {
		if bad.Months[i].Asset == last.Asset && bad.Months[i].Month == ledger.MonthOf(last.BookedAt) {
			bad.Months[i].Income = 0 // ...and another month holds it instead
		}
	}
	for i := range bad.Months {
		if bad.Months[i].Asset == last.Asset && bad.Months[i].Income > 0 {
			bad.Months[i].Income += a.Balance(last.Asset) - sumIncome(bad.Months, last.Asset)
			break
		}
	}
	if err := bad.Check(); err != nil {
		t.Fatalf("the tampered months should still add up: %v", err)
	}
	if _, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, bad)); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("UnmarshalAccount of a month short of its recent entries = %v, want ErrInvariant", err)
	}
}

func sumIncome(ms []ledger.MonthSum, asset ledger.Asset) int64 {
	var s int64
	for _, m := range ms {
		if m.Asset == asset {
			s += m.Income - m.Expense
		}
	}
	return s
}

// countingSums counts summary reads.
type countingSums struct {
	a     *ledger.Account
	reads int
}

func (c *countingSums) Month(m ledger.Month) []ledger.MonthSum {
	c.reads++
	return c.a.Month(m)
}

// TestReadDetail pages through random accounts with and without an asset
// filter while booking goes on between pages: the pages hold every entry
// that existed at the first page exactly once, newest first, each with its
// index; each page reads at most two summaries, and its months equal the
// model's (the middle ones computed from the page).
func TestReadDetail(t *testing.T) {
	for seed := int64(1); seed <= 2; seed++ {
		for _, filter := range append([]ledger.Asset{""}, monthsAssets...) {
			for _, limit := range []int{1, 7, ledger.DetailLimitDefault, ledger.DetailLimitMax} {
				r := newMonthsRig(t, seed, 2)
				for range 300 {
					r.step()
				}
				a := r.owner[1]
				all := append(slices.Clone(r.chunks[1]), a.Entries...)
				var want []ledger.DetailEntry
				for i := len(all) - 1; i >= 0; i-- {
					if filter == "" || all[i].Asset == filter {
						want = append(want, ledger.DetailEntry{Index: uint64(i), Entry: all[i]})
					}
				}
				var got []ledger.DetailEntry
				q := ledger.DetailQuery{Asset: filter, Before: a.EntryCount(), Limit: limit}
				for pages := 0; ; pages++ {
					a = r.owner[1]
					chunk := func(n uint64) ([]ledger.Entry, error) {
						return r.chunks[1][n*ledger.ChunkEntries : (n+1)*ledger.ChunkEntries], nil
					}
					sums := &countingSums{a: a}
					d, err := ledger.ReadDetail(a, q, chunk, sums)
					if err != nil {
						t.Fatalf("seed %d %q limit %d page %d: %v", seed, filter, limit, pages, err)
					}
					if sums.reads > 2 {
						t.Fatalf("page read %d summaries", sums.reads)
					}
					if len(d.Entries) > limit {
						t.Fatalf("page of %d entries, limit %d", len(d.Entries), limit)
					}
					checkPageMonths(t, d, filter, append(slices.Clone(r.chunks[1]), a.Entries...))
					got = append(got, d.Entries...)
					if !d.More {
						break
					}
					q.Before = d.Next
					if pages%4 == 0 {
						r.step() // booking goes on between pages
					}
				}
				// A redeemed entry may be attributed between pages: its lease
				// is not what a page shows.
				for i := range got {
					got[i].LeaseID = 0
				}
				for i := range want {
					want[i].LeaseID = 0
				}
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d %q limit %d: pages hold %d entries, want %d", seed, filter, limit, len(got), len(want))
				}
			}
		}
	}
}

// checkPageMonths: the page's months are the months its entries touch,
// newest first, and each is the model's (for the filtered asset, or every
// asset booked in it).
func checkPageMonths(t *testing.T, d *ledger.Detail, filter ledger.Asset, all []ledger.Entry) {
	t.Helper()
	var touched []ledger.Month
	for _, e := range d.Entries {
		if m := ledger.MonthOf(e.BookedAt); !slices.Contains(touched, m) {
			touched = append(touched, m)
		}
	}
	var want []ledger.MonthSum
	model := monthsModel(all)
	for _, m := range touched {
		for _, s := range model {
			if s.Month == m && (filter == "" || s.Asset == filter) {
				want = append(want, s)
			}
		}
	}
	if !slices.Equal(d.Months, want) {
		t.Fatalf("page months %v, want %v", d.Months, want)
	}
}

func TestReadDetailRefuses(t *testing.T) {
	a := &ledger.Account{ActID: 1}
	g := grant(1, "lobby", 1, tokens.StageFormal, "cash", 5)
	book(t, a, g, 1)
	for _, q := range []ledger.DetailQuery{
		{Before: 1, Limit: 0},
		{Before: 1, Limit: ledger.DetailLimitMax + 1},
		{Before: 2, Limit: 1},
	} {
		if _, err := ledger.ReadDetail(a, q, nil, a); !errors.Is(err, ledger.ErrInvariant) {
			t.Errorf("ReadDetail(%+v) = %v, want ErrInvariant", q, err)
		}
	}
	d, err := ledger.ReadDetail(a, ledger.DetailQuery{Before: 0, Limit: 1}, nil, a)
	if err != nil || len(d.Entries) != 0 || d.More || d.Months != nil {
		t.Errorf("ReadDetail(before 0) = %+v, %v, want an empty last page", d, err)
	}
}

// TestReadDetailScanBound: a filter that matches only the oldest of 1,500
// entries ends the first page after 1,024 entries examined, empty, with a
// cursor; the next page holds the entry; no page reads a summary it does
// not show.
func TestReadDetailScanBound(t *testing.T) {
	a := &ledger.Account{ActID: 3}
	var chunks [][]ledger.Entry
	for r := range uint64(1500) {
		g := grant(3, "lobby", r+1, tokens.StageFormal, "award", 1)
		if r == 0 {
			g.Asset = "item:rare"
		}
		book(t, a, g, int64(r))
		if _, c, ok := a.TakeSealed(); ok {
			chunks = append(chunks, c)
		}
	}
	chunk := func(n uint64) ([]ledger.Entry, error) { return chunks[n], nil }
	sums := &countingSums{a: a}
	q := ledger.DetailQuery{Asset: "item:rare", Before: a.EntryCount(), Limit: 5}
	d, err := ledger.ReadDetail(a, q, chunk, sums)
	if err != nil || len(d.Entries) != 0 || !d.More || d.Next != 1500-1024 || d.Months != nil || sums.reads != 0 {
		t.Fatalf("first page = %+v, %v (%d summary reads), want empty with a cursor at %d", d, err, sums.reads, 1500-1024)
	}
	q.Before = d.Next
	d, err = ledger.ReadDetail(a, q, chunk, sums)
	if err != nil || len(d.Entries) != 1 || d.Entries[0].Index != 0 || d.More || sums.reads != 1 ||
		!slices.Equal(d.Months, []ledger.MonthSum{{Asset: "item:rare", Month: 0, Income: 1}}) {
		t.Fatalf("second page = %+v, %v (%d summary reads)", d, err, sums.reads)
	}
}
