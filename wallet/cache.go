package wallet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/ledger"
	"redrain/storage"
)

// The second layer: `rr:w:{act_id}` holds "{seq}:{summary JSON}", where
// seq is the last journal of the account's partition that the read behind
// it reflected, or "{seq}:" alone, a tombstone: the journal seq changed the
// account, and no summary reflecting less may be written. Both scripts
// keep the higher seq, so the key is a max register: a summary read before
// a change never replaces the change's tombstone, whichever reaches Redis
// first, on however many nodes.
//
// Most accounts a booking changes have no summary (nobody read them
// since), so the Feed writes tombstones only where a summary is (an MGET
// first, no script for the rest). That is safe because of the fence,
// `rr:wfence:{partition}`: before it looks, the Feed raises the fence to
// the last journal it is about to cover, and a fill lands only when its
// read reflected at least the fence (and the fence exists). A fill that
// lands before the Feed looks is seen and superseded; one that would land
// after it was read before the change and is refused.
//
// And the Feed looks only at the accounts that may hold a summary: every
// script that writes one also lists its act id in the stream `rr:wlist`
// (the entry's id is Redis's clock), trimmed to the longest TTL any writer
// uses (`rr:wlistttl`), past which every summary it lists has expired.
// The Feed reads the entries added since its last read after raising the
// fences, so a summary it does not know of landed after them and needs no
// tombstone. Its cost follows the summaries written, not the accounts
// booked. The list is complete once it began before any fence existed (no
// summary could be written before it) or more than that TTL ago
// (`rr:wlistfrom`: summaries of writers that did not list them have
// expired); until then the Feed looks at every changed account.

// CacheKey is the Redis key of act's summary.
func CacheKey(act uint64) string { return "rr:w:" + strconv.FormatUint(act, 10) }

// The list of summaries' keys.
const (
	listKey     = "rr:wlist"
	listTTLKey  = "rr:wlistttl"
	listFromKey = "rr:wlistfrom"
)

// listLua lists act (a summary written with ttl ms) in the stream
// lk, trimmed to the longest ttl held in tk.
const listLua = `
local function list(lk, tk, ttl, act)
  local h = tonumber(redis.call('GET', tk) or '0')
  if tonumber(ttl) > h then
    h = tonumber(ttl)
    redis.call('SET', tk, h)
  end
  local id = redis.call('XADD', lk, '*', 'a', act)
  local ms = tonumber(string.match(id, '^(%d+)-'))
  redis.call('XTRIM', lk, 'MINID', tostring(ms - h))
end
`

// fillScript writes a summary unless the partition's fence is above its
// seq (or absent) or the key holds a higher seq, and lists it. KEYS[1] the
// key, KEYS[2] the fence, KEYS[3] and KEYS[4] the list and its ttl; ARGV
// seq, summary, ttl (ms), act.
var fillScript = redis.NewScript(listLua + `
local f = redis.call('GET', KEYS[2])
if not f or tonumber(f) > tonumber(ARGV[1]) then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur then
  local s = tonumber(string.match(cur, '^(%d+):'))
  if s and s > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
list(KEYS[3], KEYS[4], ARGV[3], ARGV[4])
return 1
`)

// listFromScript returns when the list began (ms of Redis's clock, or 0
// when no fence existed then: no summary could be written before it),
// recording it at the first call, and Redis's clock now. KEYS[1] the
// record, KEYS[2...] the fences.
var listFromScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = redis.call('GET', KEYS[1])
if not from then
  from = 0
  for i = 2, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      from = now
      break
    end
  end
  redis.call('SET', KEYS[1], from)
end
return {tonumber(from), now}
`)

// dropScript writes tombstones: KEYS the keys, ARGV their seqs, then the
// ttl (ms). A key that holds its seq or a higher one is left alone.
var dropScript = redis.NewScript(`
local ttl = ARGV[#ARGV]
local n = 0
for i, k in ipairs(KEYS) do
  local s = tonumber(ARGV[i])
  local cur = redis.call('GET', k)
  local c = cur and tonumber(string.match(cur, '^(%d+):'))
  if not c or c < s then
    redis.call('SET', k, ARGV[i] .. ':', 'PX', ttl)
    n = n + 1
  end
end
return n
`)

type cache struct {
	rdb   *redis.Client
	ttl   time.Duration
	parts int32
	// The list as the Feed read it (only the Feed's goroutine uses
	// these): listed, the acts it names -> the ms of their latest entry;
	// order, the entries in the order read, to forget them past the
	// list's TTL; pos, the id of the last entry read; from, when the list
	// began (-1: not read yet); full, whether it names every summary.
	listed map[uint64]int64
	order  []listEntry
	pos    string
	from   int64
	full   bool
	// looked counts the accounts drop looked up in Redis, skipped those
	// it did not need to (no summary listed).
	looked, skipped atomic.Int64
}

type listEntry struct {
	act uint64
	ms  int64
}

func newCache(rdb *redis.Client, ttl time.Duration, parts int32) *cache {
	return &cache{rdb: rdb, ttl: ttl, parts: parts, from: -1}
}

// fenceKey is partition p's fence.
func fenceKey(p int) string { return "rr:wfence:" + strconv.Itoa(p) }

// stored is a summary's JSON in Redis.
type stored struct {
	Balances []storedBalance `json:"b,omitempty"`
	Apps     []storedApp     `json:"a,omitempty"`
}

type storedBalance struct {
	Asset  string `json:"s"`
	Amount int64  `json:"n"`
}

type storedApp struct {
	App  uint32 `json:"i"`
	User string `json:"u"`
}

func encodeSummary(s Summary) ([]byte, error) {
	st := stored{Balances: make([]storedBalance, len(s.Balances)), Apps: make([]storedApp, len(s.Apps))}
	for i, b := range s.Balances {
		st.Balances[i] = storedBalance{string(b.Asset), b.Amount}
	}
	for i, u := range s.Apps {
		st.Apps[i] = storedApp{u.AppID, u.UserID}
	}
	return json.Marshal(st)
}

// decodeSummary reads a summary written by encodeSummary (a bad one is an
// error: the caller treats it as a miss).
func decodeSummary(act uint64, raw string) (Summary, error) {
	var st stored
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return Summary{}, err
	}
	s := Summary{ActID: act, Recorded: true}
	for _, b := range st.Balances {
		a := ledger.Asset(b.Asset)
		if a.Kind() == "" {
			return Summary{}, fmt.Errorf("unknown asset %q", b.Asset)
		}
		s.Balances = append(s.Balances, ledger.Balance{Asset: a, Amount: b.Amount})
	}
	for _, u := range st.Apps {
		s.Apps = append(s.Apps, ledger.AppUser{AppID: u.App, UserID: u.User})
	}
	return s, nil
}

// get returns act's summary; hit false on a miss or a tombstone.
func (c *cache) get(ctx context.Context, act uint64) (Summary, bool, error) {
	raw, err := c.rdb.Get(ctx, CacheKey(act)).Result()
	if errors.Is(err, redis.Nil) {
		return Summary{}, false, nil
	}
	if err != nil {
		return Summary{}, false, err
	}
	_, body, ok := strings.Cut(raw, ":")
	if !ok || body == "" {
		return Summary{}, false, nil
	}
	s, err := decodeSummary(act, body)
	if err != nil {
		return Summary{}, false, nil // unreadable: read the store, and the fill replaces it
	}
	return s, true, nil
}

// fill writes s, read at the partition's journal seq, unless a higher seq
// is there.
func (c *cache) fill(ctx context.Context, s Summary, seq uint64) error {
	body, err := encodeSummary(s)
	if err != nil {
		return err
	}
	p := int(storage.PartitionOf(s.ActID, c.parts))
	return fillScript.Run(ctx, c.rdb, []string{CacheKey(s.ActID), fenceKey(p), listKey, listTTLKey},
		seq, body, c.ttl.Milliseconds(), s.ActID).Err()
}

// dropBatch is how many keys one MGET reads and one script call writes.
const dropBatch = 512

// drop writes the tombstones of changed (act -> the seq of the journal that
// changed it) where a summary older than the change is; the caller raised
// the fences over these journals first.
func (c *cache) drop(ctx context.Context, changed map[uint64]uint64) error {
	if err := c.readList(ctx); err != nil {
		return fmt.Errorf("wallet: reading the list of summaries: %w", err)
	}
	acts := make([]uint64, 0, len(changed))
	for act := range changed {
		if _, ok := c.listed[act]; ok || !c.full {
			acts = append(acts, act)
		}
	}
	c.looked.Add(int64(len(acts)))
	c.skipped.Add(int64(len(changed) - len(acts)))
	keys := make([]string, 0, dropBatch)
	var stale []string
	var seqs []any
	for start := 0; start < len(acts); start += dropBatch {
		batch := acts[start:min(start+dropBatch, len(acts))]
		keys = keys[:0]
		for _, act := range batch {
			keys = append(keys, CacheKey(act))
		}
		vals, err := c.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("wallet: reading summaries to supersede: %w", err)
		}
		for i, v := range vals {
			raw, ok := v.(string)
			if !ok {
				continue // no summary: the fence keeps a late fill out
			}
			seq := changed[batch[i]]
			if head, _, _ := strings.Cut(raw, ":"); head != "" {
				if have, err := strconv.ParseUint(head, 10, 64); err == nil && have >= seq {
					continue // it reflects the change already
				}
			}
			stale, seqs = append(stale, keys[i]), append(seqs, seq)
		}
	}
	for start := 0; start < len(stale); start += dropBatch {
		end := min(start+dropBatch, len(stale))
		err := dropScript.Run(ctx, c.rdb, stale[start:end], append(seqs[start:end:end], c.ttl.Milliseconds())...).Err()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("wallet: tombstones: %w", err)
		}
	}
	return nil
}

// listPage is how many entries of the list one XRANGE reads.
const listPage = 4096

// readList reads the entries added to the list since the last read (all
// of them at the first) and forgets acts whose latest entry is older than
// the list's TTL. If the list began again (Redis emptied), it is read
// from its start.
func (c *cache) readList(ctx context.Context) error {
	now, horizon, err := c.listStart(ctx)
	if err != nil {
		return err
	}
	for {
		start := "-"
		if c.pos != "" {
			start = "(" + c.pos
		}
		page, err := c.rdb.XRangeN(ctx, listKey, start, "+", listPage).Result()
		if err != nil {
			return err
		}
		for _, e := range page {
			ms, _, _ := strings.Cut(e.ID, "-")
			at, err1 := strconv.ParseInt(ms, 10, 64)
			s, _ := e.Values["a"].(string)
			act, err2 := strconv.ParseUint(s, 10, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("%w: list entry %s %v", ledger.ErrCorrupt, e.ID, e.Values)
			}
			c.listed[act] = at
			c.order = append(c.order, listEntry{act, at})
			c.pos = e.ID
		}
		if len(page) < listPage {
			break
		}
	}
	// Forget what expired: an act stays while any entry of it is within
	// the horizon (its latest is in listed). Appends move the entries
	// left when order outgrows its array.
	n := 0
	for n < len(c.order) && c.order[n].ms < now-horizon {
		if e := c.order[n]; c.listed[e.act] == e.ms {
			delete(c.listed, e.act)
		}
		n++
	}
	c.order = c.order[n:]
	return nil
}

// listStart reads when the list began, recording it at the first call
// (the Feed makes that call before it raises a fence: resume), and
// whether it is complete; it returns Redis's clock and the list's TTL
// (ms). When the list began again (Redis emptied), what was read of it
// is dropped.
func (c *cache) listStart(ctx context.Context) (now, horizon int64, err error) {
	keys := make([]string, 0, 1+c.parts)
	keys = append(keys, listFromKey)
	for p := range int(c.parts) {
		keys = append(keys, fenceKey(p))
	}
	r, err := listFromScript.Run(ctx, c.rdb, keys).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(r) != 2 {
		return 0, 0, fmt.Errorf("the list's start: %v", r)
	}
	from, now := r[0], r[1]
	if from != c.from {
		c.listed, c.order, c.pos, c.from = map[uint64]int64{}, nil, "", from
	}
	horizon, err = c.rdb.Get(ctx, listTTLKey).Int64()
	if errors.Is(err, redis.Nil) {
		horizon, err = 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	horizon = max(horizon, c.ttl.Milliseconds())
	c.full = from == 0 || now-from > horizon
	return now, horizon, nil
}

// dropAll removes every summary (SCAN and UNLINK, a page at a time).
func (c *cache) dropAll(ctx context.Context) error {
	var cursor uint64
	for {
		keys, next, err := c.rdb.Scan(ctx, cursor, "rr:w:*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := c.rdb.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// Watermarks: `rr:wseq:{partition}` says that the tombstones of every
// journal of the partition up to the seq it holds were written. A Feed
// that starts resumes each partition from it, so journals booked while no
// Feed ran (every node serving wallets down) still supersede the summaries
// written before them. A max register, like the summaries.
func watermarkKey(p int) string { return "rr:wseq:" + strconv.Itoa(p) }

var markScript = redis.NewScript(`
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if not cur or tonumber(ARGV[i]) > tonumber(cur) then redis.call('SET', k, ARGV[i]) end
end
return 0
`)

// watermarks reads every partition's watermark; absent ones are -1.
func (c *cache) watermarks(ctx context.Context, parts int) ([]int64, error) {
	keys := make([]string, parts)
	for p := range keys {
		keys[p] = watermarkKey(p)
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]int64, parts)
	for p, v := range vals {
		out[p] = -1
		if s, ok := v.(string); ok {
			n, err := strconv.ParseUint(s, 10, 63)
			if err != nil {
				return nil, fmt.Errorf("wallet: watermark of partition %d: %q", p, s)
			}
			out[p] = int64(n)
		}
	}
	return out, nil
}

// mark raises the watermarks of seqs (partition -> seq).
func (c *cache) mark(ctx context.Context, seqs map[int]uint64) error {
	return c.raise(ctx, watermarkKey, seqs)
}

// fence raises the fences of seqs (partition -> seq).
func (c *cache) fence(ctx context.Context, seqs map[int]uint64) error {
	return c.raise(ctx, fenceKey, seqs)
}

// raise raises the max registers key(p) to seqs[p] (creating them).
func (c *cache) raise(ctx context.Context, key func(int) string, seqs map[int]uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	keys := make([]string, 0, len(seqs))
	args := make([]any, 0, len(seqs))
	for p, seq := range seqs {
		keys = append(keys, key(p))
		args = append(args, seq)
	}
	err := markScript.Run(ctx, c.rdb, keys, args...).Err()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}
