package wallet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
)

// Cache consistency (issue 12, item 6): a check that Redis's summaries
// equal the store for a set of accounts, and repairs what drifted.
//
// For each account the check reads Redis (a missing key or a tombstone is
// consistent by definition: the next read goes to the store), then, for
// the accounts that hold a summary, the store (booking.ReadAccountsAt: the
// account as of its partition's journal m), then, in one pipeline, the
// partitions' watermarks and the summaries again. The watermark w says
// every journal up to w has its tombstone in Redis (the Feed raises it
// only after writing them). A summary written at seq s is then judged:
//
//   - s > m: it reflects more than the read; not judged (newer).
//   - equal to the store's: consistent.
//   - different, w ≥ m: drift. Had journal j in (s, m] changed the account,
//     the Feed, which raises w only after superseding every summary older
//     than a change up to w (the fence keeps later fills of older reads
//     out), would have written its tombstone, and the key would hold seq
//     j > s at the second read; so nothing changed the account in (s, m],
//     the store at s equals the store at m, and the summary is not what
//     the store held at s: a tombstone was lost (Redis restarted from an
//     old snapshot, a tombstone expired under a late fill) or the value
//     was damaged or written outside the read side.
//   - different, w < m: unsettled. The Feed has not written the
//     tombstones up to the read yet; a change in (w, m] will still get
//     one, so this is not drift (yet).
//
// A repair replaces the value the check read (seq s ≤ m) with the store's
// summary at m, by a script that compares and sets: only while the key
// still holds exactly that value, so it never lowers a key's seq, and a
// fill, a tombstone or another node's repair that landed meanwhile wins
// (superseded). It need not pass the fence, unlike a fill: a change after
// m finds the repaired summary (seq m, below the change) and supersedes
// it, whether the Feed looks before or after the repair. Several nodes
// checking at once are harmless. Checks never change the store.

// checkBatch is how many accounts one step of a check reads: a pipeline
// of MGETs of mgetMax keys, one snapshot of the store for those holding a
// summary, one pipeline again. A store read replays the partition's
// journals after its checkpoint, whatever it reads, so reading more
// accounts at once pays off: 100,000 users with summaries checked at
// 19k/s by 512 a read, 49k/s by 4,096 and 88k/s by 16,384
// (BENCHMARKS.md). An MGET stays small, not to hold Redis up.
const checkBatch, mgetMax = 16384, 1024

// mget reads keys in one pipeline of MGETs of at most mgetMax keys, after
// the commands first adds to the pipeline.
func mget(ctx context.Context, rdb *redis.Client, keys []string, first func(redis.Pipeliner)) ([]any, error) {
	pipe := rdb.Pipeline()
	if first != nil {
		first(pipe)
	}
	var cmds []*redis.SliceCmd
	for i := 0; i < len(keys); i += mgetMax {
		cmds = append(cmds, pipe.MGet(ctx, keys[i:min(len(keys), i+mgetMax)]...))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	vals := make([]any, 0, len(keys))
	for _, c := range cmds {
		vals = append(vals, c.Val()...)
	}
	return vals, nil
}

// driftShownMax bounds the drifted accounts a report lists.
const driftShownMax = 20

// Drift is one account whose summary in Redis differed from the store.
type Drift struct {
	ActID    uint64 `json:"act_id"`
	Seq      uint64 `json:"seq"`       // the summary's seq
	StoreSeq uint64 `json:"store_seq"` // the journal seq of the store's read
	Redis    string `json:"redis"`     // what Redis held
	Store    string `json:"store"`     // what the store holds
	Repaired bool   `json:"repaired"`
}

// Report is what a check found.
type Report struct {
	// Scope is what was checked: "changed" (the users the journals booked
	// between Since and Until changed), "all" (every summary in Redis) or
	// "recent" (the accounts the Feed saw change).
	Scope        string    `json:"scope"`
	Since        time.Time `json:"since,omitzero"`
	Until        time.Time `json:"until,omitzero"`
	Journals     int       `json:"journals"`   // journals read to find the users
	Checked      int       `json:"checked"`    // accounts checked (a user changed in two chunks counts twice)
	Missing      int       `json:"missing"`    // no key: consistent
	Tombstones   int       `json:"tombstones"` // a tombstone: consistent
	Summaries    int       `json:"summaries"`  // compared with the store
	Newer        int       `json:"newer"`      // a summary newer than the store's read: not judged
	Unsettled    int       `json:"unsettled"`  // different, but the Feed had not written the tombstones up to the read
	Drifted      int       `json:"drifted"`    // different, with every tombstone up to the read written
	Repaired     int       `json:"repaired"`   // drifted and replaced by the store's summary
	Superseded   int       `json:"superseded"` // drifted, but the key changed before the repair (a fill, a tombstone, another repair)
	Drift        []Drift   `json:"drift"`      // at most driftShownMax of them
	ElapsedMilli int64     `json:"elapsed_ms"`
}

// OK reports whether no drift is left: none found, or every one repaired
// (or replaced by a newer value meanwhile).
func (r *Report) OK() bool { return r.Drifted == r.Repaired+r.Superseded }

// WriteText prints the report for operators.
func (r *Report) WriteText(w io.Writer) {
	switch r.Scope {
	case "changed":
		fmt.Fprintf(w, "wallet cache check: users changed from %s to %s (%d journals)\n",
			r.Since.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339), r.Journals)
	case "all":
		fmt.Fprintf(w, "wallet cache check: every summary in Redis\n")
	default:
		fmt.Fprintf(w, "wallet cache check: %s\n", r.Scope)
	}
	fmt.Fprintf(w, "  checked %d accounts in %v: %d without a key, %d tombstones, %d summaries compared with the store (%d newer than the read, %d unsettled)\n",
		r.Checked, time.Duration(r.ElapsedMilli)*time.Millisecond, r.Missing, r.Tombstones, r.Summaries, r.Newer, r.Unsettled)
	fmt.Fprintf(w, "  drift: %d, repaired %d, superseded by a newer value %d\n", r.Drifted, r.Repaired, r.Superseded)
	for _, d := range r.Drift {
		state := "NOT repaired"
		if d.Repaired {
			state = "repaired"
		}
		fmt.Fprintf(w, "  act %d: Redis at seq %d holds %s; the store at seq %d holds %s (%s)\n", d.ActID, d.Seq, d.Redis, d.StoreSeq, d.Store, state)
	}
	if r.Drifted > len(r.Drift) {
		fmt.Fprintf(w, "  ... and %d more\n", r.Drifted-len(r.Drift))
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintln(w, "DRIFT LEFT: run with --repair")
	}
}

// CheckConfig is what a check needs.
type CheckConfig struct {
	TiKV  *storage.TiKV
	Redis *redis.Client
	Parts int32 // the grant topic's partitions
	// TTL of a repaired summary (default 1 h, as the read side's).
	TTL time.Duration
	// Repair replaces drifted summaries; false only reports them.
	Repair bool
	// Rate bounds the accounts read from the store a second (the
	// summaries compared; keys missing or tombstoned cost no store read);
	// 0: no bound.
	Rate int
}

// Errors of a check's input.
var (
	// ErrWindow: the window to check is empty or reversed.
	ErrWindow = errors.New("wallet: check window")
	// ErrPartitions: the partition count does not match the store's.
	ErrPartitions = errors.New("wallet: partition count")
)

// checker checks batches of accounts.
type checker struct {
	kv     *storage.TiKV
	cache  *cache
	parts  int32
	repair bool
	rate   int // store reads a second; 0: no bound
}

func newChecker(cfg CheckConfig) (*checker, error) {
	if cfg.TiKV == nil || cfg.Redis == nil || cfg.Parts <= 0 {
		return nil, errors.New("wallet: a check needs the store, Redis and the partition count")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = time.Hour
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("wallet: check rate %d: 0 (no bound) or more", cfg.Rate)
	}
	return &checker{kv: cfg.TiKV, cache: &cache{rdb: cfg.Redis, ttl: cfg.TTL}, parts: cfg.Parts, repair: cfg.Repair, rate: cfg.Rate}, nil
}

// Check checks the summaries of every user a journal booked between since
// and until changed (journals booked up to a minute outside the window
// too: booking times follow the clocks of the partitions' successive
// owners). It reads each partition's journals from the first one of the
// window (a binary search over single journals) in pieces, and checks the
// users in chunks of at most 65,536, so its memory is bounded whatever the
// day held.
func Check(ctx context.Context, cfg CheckConfig, since, until time.Time) (Report, error) {
	start := time.Now()
	if !since.Before(until) {
		return Report{}, fmt.Errorf("%w: since %s is not before until %s", ErrWindow, since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	c, err := newChecker(cfg)
	if err != nil {
		return Report{}, err
	}
	r, err := c.window(ctx, since, until)
	r.ElapsedMilli = time.Since(start).Milliseconds()
	return r, err
}

// window checks the users changed between since and until.
func (c *checker) window(ctx context.Context, since, until time.Time) (Report, error) {
	r := Report{Scope: "changed", Since: since, Until: until}
	last, err := c.validateParts(ctx)
	if err != nil {
		return r, err
	}
	lo, hi := since.Add(-windowSlack).UnixMilli(), until.Add(windowSlack).UnixMilli()
	for p := range c.parts {
		if err := c.checkPartition(ctx, p, last[p], lo, hi, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// windowSlack widens a window by what owners' clocks may disagree.
const windowSlack = time.Minute

// chunkMax bounds the distinct users a check holds at once.
const chunkMax = 1 << 16

// piece is how many journals one snapshot of a check reads.
const piece = 1024

var errStop = errors.New("stop")

// checkPartition checks the users of partition p's journals booked in
// [lo, hi) (unix ms), of the journals up to last.
func (c *checker) checkPartition(ctx context.Context, p int32, last uint64, lo, hi int64, r *Report) error {
	first, err := c.firstAt(ctx, p, last, lo)
	if err != nil {
		return err
	}
	set := make(map[uint64]struct{})
	flush := func() error {
		if len(set) == 0 {
			return nil
		}
		acts := make([]uint64, 0, len(set))
		for a := range set {
			acts = append(acts, a)
		}
		slices.Sort(acts)
		clear(set)
		return c.checkActs(ctx, acts, r)
	}
	for seq := first; seq <= last; {
		done := false
		err := c.kv.View(func(txn storage.Txn) error {
			return booking.JournalsFrom(txn, p, seq, min(last, seq+piece-1), func(j *ledger.Journal) error {
				if j.BookedAt >= hi {
					done = true
					return errStop
				}
				r.Journals++
				for i := range j.Ops {
					set[j.Ops[i].Grant.ActID] = struct{}{}
				}
				seq = j.Seq + 1
				if len(set) >= chunkMax {
					return errStop
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errStop) {
			return fmt.Errorf("wallet: check: partition %d journals from %d: %w", p, seq, err)
		}
		if len(set) >= chunkMax || done {
			if err := flush(); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
	return flush()
}

// firstAt is the first journal of partition p (of 1..last) booked at lo
// or later (last+1: none), by binary search: booking times rise with the
// seq (up to the owners' clocks).
func (c *checker) firstAt(ctx context.Context, p int32, last uint64, lo int64) (uint64, error) {
	a, b := uint64(1), last+1 // the answer is in [a, b]
	for a < b {
		mid := a + (b-a)/2
		var at int64
		err := c.kv.View(func(txn storage.Txn) error {
			return booking.JournalsFrom(txn, p, mid, mid, func(j *ledger.Journal) error { at = j.BookedAt; return nil })
		})
		if err != nil {
			return 0, fmt.Errorf("wallet: check: partition %d journal %d: %w", p, mid, err)
		}
		if at >= lo {
			b = mid
		} else {
			a = mid + 1
		}
	}
	return a, ctx.Err()
}

// validateParts refuses a partition count that does not match the store:
// a partition state at or beyond it, or a partition's last journal that
// changed an account the count maps elsewhere (reading a user's account
// from the wrong partition would find none, and a repair would write an
// empty wallet). It returns each partition's last journal seq.
func (c *checker) validateParts(ctx context.Context) ([]uint64, error) {
	var last []uint64
	err := c.kv.View(func(txn storage.Txn) error {
		have, err := booking.PartitionsIn(txn)
		if err != nil {
			return err
		}
		for _, p := range have {
			if p >= c.parts {
				return fmt.Errorf("%w: the store books partition %d, beyond the %d given", ErrPartitions, p, c.parts)
			}
		}
		if last, err = booking.JournalSeqs(ctx, txn, c.parts); err != nil {
			return err
		}
		for p, seq := range last {
			if seq == 0 {
				continue
			}
			err := booking.JournalsFrom(txn, int32(p), seq, seq, func(j *ledger.Journal) error {
				for i := range j.Ops {
					if act := j.Ops[i].Grant.ActID; storage.PartitionOf(act, c.parts) != int32(p) {
						return fmt.Errorf("%w: partition %d's journal %d changed act %d, which %d partitions put in partition %d: give the grant topic's partition count",
							ErrPartitions, p, seq, act, c.parts, storage.PartitionOf(act, c.parts))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return last, err
}

// CheckAll checks every summary in Redis (SCAN rr:w:*, a page at a time).
func CheckAll(ctx context.Context, cfg CheckConfig) (Report, error) {
	start := time.Now()
	c, err := newChecker(cfg)
	if err != nil {
		return Report{}, err
	}
	if _, err := c.validateParts(ctx); err != nil {
		return Report{}, err
	}
	r := Report{Scope: "all"}
	var cursor uint64
	for {
		keys, next, err := c.cache.rdb.Scan(ctx, cursor, "rr:w:*", checkBatch).Result()
		if err != nil {
			return r, fmt.Errorf("wallet: check: scanning Redis: %w", err)
		}
		acts := make([]uint64, 0, len(keys))
		for _, k := range keys {
			if act, err := strconv.ParseUint(strings.TrimPrefix(k, "rr:w:"), 10, 64); err == nil {
				acts = append(acts, act)
			}
		}
		if err := c.checkActs(ctx, acts, &r); err != nil {
			return r, err
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	r.ElapsedMilli = time.Since(start).Milliseconds()
	return r, nil
}

// checkActs checks acts, checkBatch at a time.
func (c *checker) checkActs(ctx context.Context, acts []uint64, r *Report) error {
	for len(acts) > 0 {
		n := min(len(acts), checkBatch)
		if err := c.checkBatch(ctx, acts[:n], r); err != nil {
			return err
		}
		acts = acts[n:]
	}
	return ctx.Err()
}

// entry is a key's value split: its seq, and its summary's JSON ("" for a
// tombstone).
type entry struct {
	seq     uint64
	body    string
	present bool
}

func parseEntry(v any) (entry, bool) {
	raw, ok := v.(string)
	if !ok {
		return entry{}, true // no key
	}
	s, body, ok := strings.Cut(raw, ":")
	if !ok {
		return entry{present: true}, false // no seq: unreadable
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return entry{present: true}, false
	}
	return entry{seq: seq, body: body, present: true}, true
}

// checkBatch checks at most checkBatch accounts (see the comment at the
// top of this file for the order of the reads and why it decides).
func (c *checker) checkBatch(ctx context.Context, acts []uint64, r *Report) error {
	rdb := c.cache.rdb
	keys := make([]string, len(acts))
	for i, a := range acts {
		keys[i] = CacheKey(a)
	}
	vals, err := mget(ctx, rdb, keys, nil)
	if err != nil {
		return fmt.Errorf("wallet: check: reading summaries: %w", err)
	}
	r.Checked += len(acts)
	var cand []uint64
	var candKeys []string
	for i, v := range vals {
		e, ok := parseEntry(v)
		switch {
		case !e.present:
			r.Missing++
		case ok && e.body == "":
			r.Tombstones++
		default:
			cand = append(cand, acts[i])
			candKeys = append(candKeys, keys[i])
		}
	}
	if len(cand) == 0 {
		return nil
	}
	var accounts map[uint64]*ledger.Account
	var seqs map[int32]uint64
	err = c.kv.View(func(txn storage.Txn) error {
		var err error
		accounts, seqs, err = booking.ReadAccountsAt(ctx, txn, c.parts, cand)
		return err
	})
	if err != nil {
		return fmt.Errorf("wallet: check: reading the store: %w", err)
	}
	// The bound on the store's load: n accounts read cost n/rate of a
	// second.
	if c.rate > 0 && !sleep(ctx, time.Duration(len(cand))*time.Second/time.Duration(c.rate)) {
		return ctx.Err()
	}
	parts := make([]int32, 0, len(seqs))
	for p := range seqs {
		parts = append(parts, p)
	}
	// The watermarks before the summaries, in one pipeline: a watermark
	// read first covers every tombstone the second read can miss.
	wmKeys := make([]string, len(parts))
	for i, p := range parts {
		wmKeys[i] = watermarkKey(int(p))
	}
	var wmCmd *redis.SliceCmd
	again, err := mget(ctx, rdb, candKeys, func(pipe redis.Pipeliner) { wmCmd = pipe.MGet(ctx, wmKeys...) })
	if err != nil {
		return fmt.Errorf("wallet: check: reading watermarks and summaries: %w", err)
	}
	marks := make(map[int32]uint64, len(parts))
	settled := make(map[int32]bool, len(parts))
	for i, v := range wmCmd.Val() {
		if s, ok := v.(string); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				marks[parts[i]] = n
				settled[parts[i]] = true
			}
		}
	}
	for i, v := range again {
		act := cand[i]
		e, ok := parseEntry(v)
		switch {
		case !e.present:
			r.Missing++
			continue
		case ok && e.body == "":
			r.Tombstones++
			continue
		}
		p := storage.PartitionOf(act, c.parts)
		m := seqs[p]
		r.Summaries++
		if ok && e.seq > m {
			r.Newer++
			continue
		}
		want := emptySummary(act)
		if a := accounts[act]; a != nil {
			want = summaryOf(a)
		}
		var got Summary
		readable := false
		if ok {
			if got, err = decodeSummary(act, e.body); err == nil {
				readable = true
			}
		}
		if readable && sameSummary(got, want) {
			continue
		}
		if !settled[p] || marks[p] < m {
			r.Unsettled++
			continue
		}
		r.Drifted++
		d := Drift{ActID: act, Seq: e.seq, StoreSeq: m, Store: describeSummary(want)}
		if readable {
			d.Redis = describeSummary(got)
		} else {
			raw, _ := v.(string)
			d.Redis = "unreadable " + strconv.Quote(raw[:min(len(raw), 80)])
		}
		if c.repair {
			raw, _ := v.(string)
			landed, err := c.cache.repair(ctx, want, m, raw)
			if err != nil {
				return fmt.Errorf("wallet: check: repairing act %d: %w", act, err)
			}
			if landed {
				r.Repaired++
				d.Repaired = true
			} else {
				r.Superseded++
			}
		}
		if len(r.Drift) < driftShownMax {
			r.Drift = append(r.Drift, d)
		}
	}
	return nil
}

// repairScript replaces a key's value with a summary while the key holds
// exactly the value a check read. KEYS[1] the key; ARGV the value read,
// seq, summary, ttl (ms).
var repairScript = redis.NewScript(listLua + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[3], 'PX', ARGV[4])
list(KEYS[2], KEYS[3], ARGV[4], ARGV[5])
return 1
`)

// repair writes s at seq in place of read, the value a check judged
// drifted (its seq at most seq); false: the key changed meanwhile.
func (c *cache) repair(ctx context.Context, s Summary, seq uint64, read string) (bool, error) {
	body, err := encodeSummary(s)
	if err != nil {
		return false, err
	}
	n, err := repairScript.Run(ctx, c.rdb, []string{CacheKey(s.ActID), listKey, listTTLKey},
		read, seq, body, c.ttl.Milliseconds(), s.ActID).Int()
	return n == 1, err
}

// emptySummary is the wallet of an account the store has no record of.
func emptySummary(act uint64) Summary { return Summary{ActID: act} }

// sameSummary reports whether a and b show the same balances and app
// identities, whatever their order.
func sameSummary(a, b Summary) bool {
	byAsset := func(x, y ledger.Balance) int { return cmp.Compare(x.Asset, y.Asset) }
	byApp := func(x, y ledger.AppUser) int {
		return cmp.Or(cmp.Compare(x.AppID, y.AppID), cmp.Compare(x.UserID, y.UserID))
	}
	ab, bb := nonZero(a.Balances), nonZero(b.Balances)
	slices.SortFunc(ab, byAsset)
	slices.SortFunc(bb, byAsset)
	aa, ba := slices.Clone(a.Apps), slices.Clone(b.Apps)
	slices.SortFunc(aa, byApp)
	slices.SortFunc(ba, byApp)
	return slices.Equal(ab, bb) && slices.Equal(aa, ba)
}

func nonZero(bs []ledger.Balance) []ledger.Balance {
	out := make([]ledger.Balance, 0, len(bs))
	for _, b := range bs {
		if b.Amount != 0 {
			out = append(out, b)
		}
	}
	return out
}

// describeSummary is a summary in one short line.
func describeSummary(s Summary) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, x := range s.Balances {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", x.Asset, x.Amount)
	}
	if len(s.Apps) > 0 {
		b.WriteString(" apps")
		for _, u := range s.Apps {
			fmt.Fprintf(&b, " %d/%s", u.AppID, u.UserID)
		}
	}
	b.WriteByte('}')
	return b.String()
}
