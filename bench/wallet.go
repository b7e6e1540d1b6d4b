package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
)

// Wallet reads (issue 12, item 2): how many GET /v1/wallet/{act_id} a node
// answers a second when most users hold nothing. The set-up grants one
// packet to each of Holders users and waits until their wallets show it;
// the load then reads a holder with probability 1-EmptyRatio, else an act_id
// that was handed out but holds nothing, and checks every answer.
//
// Empty users. A node allocates act_ids in blocks of actBlock (1..65536,
// 65537..131072, ...), and a wallet read of an id below the allocation is
// an empty wallet, not 404. So the ids after the largest holder's, up to
// the end of its block, were handed out and (while nobody else grants on
// the node) hold nothing: the load reads
// (max holder, max holder + Holders·(1/(1-EmptyRatio) - 1)], cut at the
// end of that block. With 650 holders at 0.99 that is 64,350 ids, which
// fit in a fresh node's first block.

// Defaults of WalletConfig.
const (
	DefaultWalletHolders = 650
	DefaultEmptyRatio    = 0.99
	// WalletHoldersMax bounds Holders: the grants of the set-up and the
	// holders' table.
	WalletHoldersMax = 1 << 20
	// actBlock is the size of a node's act_id blocks (the binder's).
	actBlock = 1 << 16
	// walletGrantBatch is how many grants a set-up request holds.
	walletGrantBatch = 500
	// walletSample is how many holders the set-up reads until their
	// wallets show their packet.
	walletSample = 16
)

// WalletConfig is a run of wallet reads.
type WalletConfig struct {
	// Run holds the targets, Duration, Conns, Pipeline, the keys (AppKey
	// signs the grants of the set-up and every read), the grants' ids
	// (AppID, ActivityID, SceneID, RainID, UserPrefix), DrainTimeout (the
	// bound on the wait for booking, and again on the wait for the
	// holders' wallets), ReadyTimeout, RequestTimeout, Seed, Progress and
	// the HDR, series and plot files. Users, Rate, Batch, RepeatRatio and
	// Audit are not used (the load is flat out).
	Run Config
	// Holders is the number of users granted one packet each (default
	// 650), 1..WalletHoldersMax.
	Holders int
	// EmptyRatio is the share of reads that go to empty users, in [0, 1)
	// (default 0.99). Zero selects the default; a negative value reads
	// holders only.
	EmptyRatio float64
}

// withDefaults returns c with its defaults applied and validated.
func (c WalletConfig) withDefaults() (WalletConfig, []target, error) {
	setDefault(&c.Holders, DefaultWalletHolders)
	switch {
	case c.EmptyRatio == 0:
		c.EmptyRatio = DefaultEmptyRatio
	case c.EmptyRatio < 0:
		c.EmptyRatio = 0
	}
	switch {
	case c.Holders < 1 || c.Holders > WalletHoldersMax:
		return c, nil, fmt.Errorf("bench: holders is %d, want 1..%d", c.Holders, WalletHoldersMax)
	case math.IsNaN(c.EmptyRatio) || c.EmptyRatio >= 1:
		return c, nil, fmt.Errorf("bench: empty ratio is %v, want 0..1 (1 excluded: the holders are read too)", c.EmptyRatio)
	case c.Run.Rate != 0 || c.Run.Batch > 1:
		return c, nil, errors.New("bench: wallet reads run flat out, one read a request: no rate or batch")
	case c.Run.Audit:
		return c, nil, errors.New("bench: wallet reads run no audit")
	}
	c.Run.Users, c.Run.Batch = 1, 1 // the grant load's, unused here
	var targets []target
	var err error
	c.Run, targets, err = c.Run.withDefaults()
	return c, targets, err
}

// Validate reports the first problem that ReadWallets would find with c.
func (c WalletConfig) Validate() error {
	_, _, err := c.withDefaults()
	return err
}

// WalletReport is what ReadWallets measured.
type WalletReport struct {
	Seed       uint64  `json:"seed"`
	Holders    int     `json:"holders"`
	EmptyRatio float64 `json:"empty_ratio"`
	// HolderMin and HolderMax are the smallest and largest holder act_ids;
	// EmptyFrom..EmptyTo (both included) the empty ones read (none when
	// EmptyRatio is 0).
	HolderMin uint64 `json:"holder_min"`
	HolderMax uint64 `json:"holder_max"`
	EmptyFrom uint64 `json:"empty_from,omitempty"`
	EmptyTo   uint64 `json:"empty_to,omitempty"`
	// Setup is the time of the grants, the drain and the wait for the
	// holders' wallets.
	Setup time.Duration `json:"setup_ns"`

	// Duration is the load's window; Reads counts the answers in it (and
	// right after it, to reads sent in it), ReadsPerSec is Reads/Duration.
	Duration    time.Duration `json:"duration_ns"`
	Sent        int64         `json:"sent"`
	Reads       int64         `json:"reads"`
	ReadsPerSec float64       `json:"reads_per_sec"`
	// HolderReads and EmptyReads split Sent by what was read.
	HolderReads int64 `json:"holder_reads"`
	EmptyReads  int64 `json:"empty_reads"`
	// Verified counts the 200 answers that showed what was granted: no
	// balance for an empty user, the packet's amount for a holder.
	Verified int64 `json:"verified"`
	// Statuses counts the answers by HTTP status; Sources the 200 answers
	// by their X-Redrain-Wallet-Source (holders, cache, store, fallback;
	// "none" when absent).
	Statuses map[string]int64 `json:"statuses"`
	Sources  map[string]int64 `json:"sources"`
	// Errors counts the reads that were not Verified, by the answer's
	// error code, "http_<status>", "mismatch" (a 200 that showed another
	// wallet than granted), "bad_response", "timeout" or "transport".
	Errors map[string]int64 `json:"errors"`
	// Mismatches is Errors["mismatch"]; MismatchFirst describes the first.
	// Anything but 0 is a wrong wallet: Err reports it.
	Mismatches    int64  `json:"mismatches"`
	MismatchFirst string `json:"mismatch_first,omitempty"`
	// Latencies from send to answer, over every answer.
	LatencyP50  time.Duration `json:"latency_p50_ns"`
	LatencyP99  time.Duration `json:"latency_p99_ns"`
	LatencyP999 time.Duration `json:"latency_p999_ns"`
	LatencyMax  time.Duration `json:"latency_max_ns"`
	// NodeCPUSeconds is the targets' CPU over the window (their
	// cpu_seconds), CPUPerRead that over Reads; 0 when the stats could not
	// be read.
	NodeCPUSeconds float64       `json:"node_cpu_seconds"`
	CPUPerRead     time.Duration `json:"cpu_per_read_ns"`
	Problems       []string      `json:"problems,omitempty"`

	load *Report // the window's figures, for the HDR, series and plot files
}

// walletHolder is a holder's act_id and the amount of its packet.
type walletHolder struct {
	act    uint64
	amount int64
	user   int // the user's number in its user_id
}

// walletReads is what every worker of a wallet load shares.
type walletReads struct {
	holders    []walletHolder
	emptyFrom  uint64 // The empty ids read are emptyFrom..emptyFrom+emptyCount-1.
	emptyCount uint64
	ratio      float64
	signer     *adminauth.Signer
	app        uint32
	// refuse ends the load when an answer refuses every read (401, or 403
	// forbidden): the run's refuse.
	refuse func(error)
}

// walletWorker is one worker's read in flight and its counts, written by
// the worker alone and read once it has returned.
type walletWorker struct {
	base     string // The target's base URL.
	uri      []byte // The read's URL,
	path     []byte // and its path, what the signature covers.
	holder   int    // Index in holders of the read in flight; -1: an empty id.
	act      uint64
	holders  int64
	empties  int64
	statuses map[int]int64
	sources  [len(walletSources) + 1]int64 // The last one counts answers without the header.
	mismatch string                        // The first mismatch.
	balances []int64                       // The last answer's, reused.
}

// walletPath is the wallet route, before the act_id.
const walletPath = "/v1/wallet/"

// walletSources are the values of X-Redrain-Wallet-Source.
var walletSources = [...]string{"holders", "cache", "store", "fallback"}

// prepare sets req to the next read of w.
func (wr *walletReads) prepare(w *worker, rng *rand.Rand, req *fasthttp.Request) error {
	ww := w.wallet
	if wr.emptyCount > 0 && rng.Float64() < wr.ratio {
		ww.holder, ww.act = -1, wr.emptyFrom+rng.Uint64N(wr.emptyCount)
		ww.empties++
	} else {
		ww.holder = rng.IntN(len(wr.holders))
		ww.act = wr.holders[ww.holder].act
		ww.holders++
	}
	ww.uri = strconv.AppendUint(append(append(ww.uri[:0], ww.base...), walletPath...), ww.act, 10)
	ww.path = ww.uri[len(ww.base):]
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURIBytes(ww.uri)
	if wr.signer != nil {
		h, err := wr.signer.Headers(fasthttp.MethodGet, string(ww.path), "", nil)
		if err != nil {
			return err
		}
		for name, v := range h {
			req.Header.Set(name, v[0])
		}
	}
	return nil
}

// answer checks the answer to w's read and counts it.
func (wr *walletReads) answer(w *worker, resp *fasthttp.Response) {
	ww := w.wallet
	status := resp.StatusCode()
	ww.statuses[status]++
	if status != fasthttp.StatusOK {
		var f grantFields
		if parseGrantFields(resp.Body(), &f) && len(f.code) > 0 {
			w.fail(string(f.code), 1)
		} else {
			w.fail("http_"+strconv.Itoa(status), 1)
		}
		if code := string(f.code); status == fasthttp.StatusUnauthorized || code == codeUnauthorized || code == codeForbidden {
			wr.refuse(fmt.Errorf("wallet reads refused: GET %s: status %d: %.200s: %s",
				ww.uri, status, resp.Body(), wr.refusalHint(code)))
		}
		return
	}
	source, header := len(walletSources), resp.Header.Peek("X-Redrain-Wallet-Source")
	for i, s := range walletSources {
		if string(header) == s {
			source = i
			break
		}
	}
	ww.sources[source]++
	balances, ok := parseWalletBalances(resp.Body(), ww.balances)
	ww.balances = balances
	if !ok {
		w.fail("bad_response", 1)
		return
	}
	want := int64(-1) // no balance
	if ww.holder >= 0 {
		want = wr.holders[ww.holder].amount
	}
	if problem := checkWallet(balances, want); problem != "" {
		if ww.mismatch == "" {
			ww.mismatch = fmt.Sprintf("act_id %d (source %s): %s: %.300s",
				ww.act, resp.Header.Peek("X-Redrain-Wallet-Source"), problem, resp.Body())
		}
		w.fail("mismatch", 1)
		return
	}
	w.accepted.Add(1)
}

// refusalHint says what to change when a node refused a read with code.
func (wr *walletReads) refusalHint(code string) string {
	if code == codeForbidden {
		return fmt.Sprintf("the node says the account holds no user of the signing app, but the holders were granted for app %d "+
			"with this key: was the key changed or the account bound to another app meanwhile?", wr.app)
	}
	return refusalHint(wr.signer, wr.app, code)
}

// checkWallet says what is wrong with balances, a wallet's, for a user who
// should hold want (-1: nothing), or "" when nothing is.
func checkWallet(balances []int64, want int64) string {
	switch {
	case want < 0 && len(balances) > 0:
		return fmt.Sprintf("an empty user shows %d balances", len(balances))
	case want >= 0 && len(balances) != 1:
		return fmt.Sprintf("a holder of one packet of %d shows %d balances", want, len(balances))
	case want >= 0 && balances[0] != want:
		return fmt.Sprintf("a holder of one packet of %d shows %d", want, balances[0])
	}
	return ""
}

// parseWalletBalances reads the "balance" of each item of the "balances"
// array of a wallet answer, a JSON object, into balances[:0]; false when
// the body is not an object, or has no such array of objects with integer
// balances. Like parseGrantFields, it walks the members rather than decode
// them all (a wallet answer is read for each of up to 100k reads a second,
// in the process meant to measure the node), and does not validate the
// values it skips.
func parseWalletBalances(b []byte, balances []int64) ([]int64, bool) {
	found := false
	ok := walkObject(b, skipSpace(b, 0), func(name []byte, i int) (int, bool) {
		if string(name) != "balances" {
			return skipAny(b, i)
		}
		found, balances = true, balances[:0]
		if b[i] != '[' {
			return 0, false
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for i < len(b) {
			balance, seen := int64(0), false
			next, ok := walkMembers(b, i, func(name []byte, j int) (int, bool) {
				if string(name) != "balance" {
					return skipAny(b, j)
				}
				end, ok := skipValue(b, j)
				if !ok {
					return 0, false
				}
				n, err := strconv.ParseInt(string(b[j:end]), 10, 64)
				balance, seen = n, err == nil
				return end, err == nil
			})
			if !ok || !seen {
				return 0, false
			}
			balances = append(balances, balance)
			i = skipSpace(b, next)
			switch {
			case i < len(b) && b[i] == ']':
				return i + 1, true
			case i < len(b) && b[i] == ',':
				i = skipSpace(b, i+1)
			default:
				return 0, false
			}
		}
		return 0, false
	}) == len(b) && found
	return balances, ok
}

// walkObject walks the object at b[i], handing each member's name and the
// index of its value to member, which returns the index after the value.
// It returns the index after the object and its trailing space, or -1.
func walkObject(b []byte, i int, member func(name []byte, value int) (int, bool)) int {
	next, ok := walkMembers(b, i, member)
	if !ok {
		return -1
	}
	return skipSpace(b, next)
}

// walkMembers is walkObject without the trailing space. It is
// scanObject's walk with a callback per member: scanObject stays unrolled
// for the grant path, where a callback measured 4% slower (see its
// comment); a wallet answer is read once per read and holds nested
// objects, which only a callback reaches.
func walkMembers(b []byte, i int, member func(name []byte, value int) (int, bool)) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, false
		}
		name, next, ok := scanString(b, i)
		if !ok {
			return 0, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		if i = skipSpace(b, i+1); i >= len(b) {
			return 0, false
		}
		if i, ok = member(name, i); !ok {
			return 0, false
		}
		i = skipSpace(b, i)
		switch {
		case i < len(b) && b[i] == '}':
			return i + 1, true
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		default:
			return 0, false
		}
	}
}

// ReadWallets grants one packet to each of cfg.Holders users, waits until
// booking drained and their wallets show it, checks that the empty ids
// answer empty wallets, and reads wallets flat out for cfg.Run.Duration;
// see the file's comment. It fails when the set-up does (an error saying
// what was wrong); after that it returns a report, whose Err fails on
// mismatches and problems.
func ReadWallets(ctx context.Context, cfg WalletConfig) (*WalletReport, error) {
	cfg, targets, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rc := cfg.Run
	seed := pickSeed(rc.Seed)
	adm, err := newAdminFor(rc, targets)
	if err != nil {
		return nil, err
	}
	defer adm.client.CloseIdleConnections()
	out, err := createOutputs(rc)
	if err != nil {
		return nil, err
	}
	setupStart := time.Now()
	wr, err := setUpWallets(ctx, cfg, targets, adm)
	if err != nil {
		out.close(true)
		return nil, err
	}
	rep := &WalletReport{Seed: seed, Holders: cfg.Holders, EmptyRatio: cfg.EmptyRatio,
		HolderMin: wr.holders[0].act, HolderMax: wr.holders[len(wr.holders)-1].act, Setup: time.Since(setupStart)}
	if wr.emptyCount > 0 {
		rep.EmptyFrom, rep.EmptyTo = wr.emptyFrom, wr.emptyFrom+wr.emptyCount-1
	}
	before, errs := adm.statsAll(ctx, statsTimeout)
	if err := errors.Join(errs...); err != nil {
		out.close(true)
		return nil, fmt.Errorf("bench: stats before the reads: %w", err)
	}

	r := newRun(rc, targets, seed)
	r.reads = wr
	wr.refuse = r.refuse
	for _, w := range r.workers {
		w.wallet = &walletWorker{base: strings.TrimSuffix(w.uri, w.path), statuses: map[int]int64{}}
	}
	load := &Report{Seed: seed}
	canceled, stopProgress := r.send(ctx, nil, nil)
	load.Duration = r.end.Sub(r.start)
	r.fill(load)
	after, errs := statsAfterWindow(ctx, adm)
	stopProgress()
	load.Series = r.series
	rep.load = load
	rep.fillLoad(r, load)
	if errors.Join(errs...) == nil {
		c := newBookedCounter(before)
		c.update(after, errs)
		rep.NodeCPUSeconds = c.cpu()
		if rep.Reads > 0 {
			rep.CPUPerRead = time.Duration(rep.NodeCPUSeconds / float64(rep.Reads) * 1e9)
		}
	}
	if refused := r.refusal(); refused != nil {
		rep.Problems = append(rep.Problems, refused.Error())
	}
	if canceled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled %v into the reads: %v",
			rep.Duration.Round(time.Millisecond), context.Cause(ctx)))
	}
	rep.Problems = append(rep.Problems, out.write(load)...)
	return rep, nil
}

// fillLoad sets rep's figures of the load from the workers and load (the
// run's Report of it).
func (rep *WalletReport) fillLoad(r *run, load *Report) {
	rep.Duration, rep.Sent, rep.Reads, rep.ReadsPerSec = load.Duration, load.Offered, load.Requests, load.RequestsPerSec
	rep.Verified, rep.Errors = load.Accepted, load.Errors
	rep.Mismatches = load.Errors["mismatch"]
	rep.LatencyP50, rep.LatencyP99, rep.LatencyP999, rep.LatencyMax = load.LatencyP50, load.LatencyP99, load.LatencyP999, load.LatencyMax
	rep.Statuses, rep.Sources = map[string]int64{}, map[string]int64{}
	for _, w := range r.workers {
		ww := w.wallet
		rep.HolderReads += ww.holders
		rep.EmptyReads += ww.empties
		for status, n := range ww.statuses {
			rep.Statuses[strconv.Itoa(status)] += n
		}
		for i, n := range ww.sources {
			if n == 0 {
				continue
			}
			name := "none"
			if i < len(walletSources) {
				name = walletSources[i]
			}
			rep.Sources[name] += n
		}
		if rep.MismatchFirst == "" {
			rep.MismatchFirst = ww.mismatch
		}
	}
	if load.TransportErrorFirst != "" {
		rep.Problems = append(rep.Problems, "first transport error: "+load.TransportErrorFirst)
	}
}

// setUpWallets grants the holders' packets, waits for booking and for
// their wallets, chooses the empty ids and checks that they answer empty
// wallets.
func setUpWallets(ctx context.Context, cfg WalletConfig, targets []target, adm *admin) (*walletReads, error) {
	rc := cfg.Run
	if _, err := waitReady(ctx, adm, rc.ReadyTimeout); err != nil {
		return nil, err
	}
	signer, _ := rc.appSigner() // validated by withDefaults
	wc := &walletClient{client: adm.client, signer: signer, base: targets[0].base, app: rc.AppID, timeout: rc.RequestTimeout}
	holders, err := wc.grantBooked(ctx, adm, rc, cfg.Holders)
	if err != nil {
		return nil, err
	}
	if err := wc.awaitHolders(ctx, holders, rc.DrainTimeout); err != nil {
		return nil, err
	}
	wr := &walletReads{holders: holders, ratio: cfg.EmptyRatio, signer: signer, app: rc.AppID}
	if cfg.EmptyRatio == 0 {
		return wr, nil
	}
	wr.emptyFrom, wr.emptyCount, err = emptyRange(holders[len(holders)-1].act, cfg.Holders, cfg.EmptyRatio)
	if err != nil {
		return nil, err
	}
	last := wr.emptyFrom + wr.emptyCount - 1
	for _, act := range []uint64{wr.emptyFrom, wr.emptyFrom + wr.emptyCount/2, last} {
		if err := wc.checkEmpty(ctx, act, wr.emptyFrom, last); err != nil {
			return nil, err
		}
	}
	return wr, nil
}

// emptyRange returns the empty act_ids to read, from..from+count-1: the
// ids after maxHolder, as many as holders·(1/(1-ratio)-1), cut at the end
// of maxHolder's block.
func emptyRange(maxHolder uint64, holders int, ratio float64) (from, count uint64, err error) {
	blockEnd := (maxHolder + actBlock - 1) / actBlock * actBlock       // blocks are 1..65536, 65537..131072, ...
	want := uint64(math.Ceil(float64(holders)*(1/(1-ratio)-1) - 1e-6)) // 1e-6: 40·(1/0.1-1) is 360.00000000000006
	if want > blockEnd-maxHolder {
		want = blockEnd - maxHolder
	}
	if want == 0 {
		return 0, 0, fmt.Errorf("bench: the largest holder act_id %d ends its block of %d act_ids: no act_id after it "+
			"is known to be handed out, so there are no empty users to read; run again (the next users start a new block)",
			maxHolder, actBlock)
	}
	return maxHolder + 1, want, nil
}

// walletClient makes the set-up's requests to the first target.
type walletClient struct {
	client  *fasthttp.Client
	signer  *adminauth.Signer
	base    string
	app     uint32
	timeout time.Duration
}

// do sends a request of method to path with body (nil for a GET), signed
// when c.signer is set, and returns the answer's status, source header and
// body.
func (c *walletClient) do(ctx context.Context, method, path string, body []byte) (int, string, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, "", nil, err
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.base + path)
	req.Header.SetMethod(method)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if c.signer != nil {
		h, err := c.signer.Headers(method, path, "", body)
		if err != nil {
			return 0, "", nil, err
		}
		for name, v := range h {
			req.Header.Set(name, v[0])
		}
	}
	if err := c.client.DoTimeout(req, resp, c.timeout); err != nil {
		return 0, "", nil, fmt.Errorf("%s %s%s: %w", method, c.base, path, err)
	}
	return resp.StatusCode(), string(resp.Header.Peek("X-Redrain-Wallet-Source")), append([]byte(nil), resp.Body()...), nil
}

// grantHolders grants one packet to each of n users through
// POST /v1/grants/batch and returns their act_ids and amounts, in act_id
// order. Every grant must succeed.
func (c *walletClient) grantHolders(ctx context.Context, rc Config, n int) ([]walletHolder, error) {
	head, tail := rc.grantJSON()
	holders := make([]walletHolder, 0, n)
	for first := 0; first < n; first += walletGrantBatch {
		body := []byte(batchHead)
		for u := first; u < min(first+walletGrantBatch, n); u++ {
			if u > first {
				body = append(body, ',')
			}
			body = append(strconv.AppendInt(append(body, head...), int64(u), 10), tail...)
		}
		body = append(body, batchTail...)
		status, _, answer, err := c.do(ctx, fasthttp.MethodPost, "/v1/grants/batch", body)
		if err != nil {
			return nil, fmt.Errorf("bench: granting the holders: %w", err)
		}
		var a struct {
			Code    string `json:"code"`
			Results []struct {
				Code   string `json:"code"`
				ActID  uint64 `json:"act_id"`
				Amount int64  `json:"amount"`
				Status string `json:"status"`
			} `json:"results"`
		}
		jerr := json.Unmarshal(answer, &a)
		if status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden {
			return nil, fmt.Errorf("bench: granting the holders: status %d: %.200s: %s", status, answer, refusalHint(c.signer, c.app, a.Code))
		}
		if status != fasthttp.StatusOK || jerr != nil || len(a.Results) != min(walletGrantBatch, n-first) {
			return nil, fmt.Errorf("bench: granting the holders: status %d: %.300s", status, answer)
		}
		for i, g := range a.Results {
			if g.Code != "" || g.ActID == 0 || (g.Status != "issued" && g.Status != "booked") {
				if g.Code == codeForbidden {
					return nil, fmt.Errorf("bench: granting the holders: %s", refusalHint(c.signer, c.app, g.Code))
				}
				return nil, fmt.Errorf("bench: granting holder %s%d: code %q status %q act_id %d: every holder needs its packet",
					rc.UserPrefix, first+i, g.Code, g.Status, g.ActID)
			}
			holders = append(holders, walletHolder{act: g.ActID, amount: g.Amount, user: first + i})
		}
	}
	slices.SortFunc(holders, func(a, b walletHolder) int { return cmp.Compare(a.act, b.act) })
	for i := 1; i < len(holders); i++ {
		if holders[i].act == holders[i-1].act {
			return nil, fmt.Errorf("bench: two holders were given act_id %d", holders[i].act)
		}
	}
	return holders, nil
}

// grantBooked is grantHolders, then a wait until booking drained on
// every target (at most rc.DrainTimeout).
func (c *walletClient) grantBooked(ctx context.Context, adm *admin, rc Config, n int) ([]walletHolder, error) {
	holders, err := c.grantHolders(ctx, rc, n)
	if err != nil {
		return nil, err
	}
	stats, errs := adm.statsAll(ctx, statsTimeout)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench: stats after the holders' grants: %w", err)
	}
	if _, err := drain(ctx, adm, newBookedCounter(stats), time.Now(), rc.DrainTimeout); err != nil {
		return nil, fmt.Errorf("bench: the holders' grants: %w", err)
	}
	return holders, nil
}

// awaitHolders reads a sample of the holders' wallets (walletSample of
// them, spread over the set, the first and last among them) until each
// shows its packet, or fails after timeout.
func (c *walletClient) awaitHolders(ctx context.Context, holders []walletHolder, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	step := max(len(holders)/walletSample, 1)
	var sample []walletHolder
	for i := 0; i < len(holders); i += step {
		sample = append(sample, holders[i])
	}
	sample = append(sample, holders[len(holders)-1])
	for _, h := range sample {
		for {
			status, source, answer, err := c.do(ctx, fasthttp.MethodGet, "/v1/wallet/"+strconv.FormatUint(h.act, 10), nil)
			var problem string
			switch {
			case err != nil:
				problem = err.Error()
			case status != fasthttp.StatusOK:
				problem = fmt.Sprintf("status %d: %.200s", status, answer)
			default:
				balances, ok := parseWalletBalances(answer, nil)
				if !ok {
					problem = fmt.Sprintf("a wallet answer without balances: %.200s", answer)
				} else if problem = checkWallet(balances, h.amount); problem == "" {
					break
				}
				problem += " (source " + source + ")"
			}
			if problem == "" {
				break
			}
			if !time.Now().Before(deadline) {
				return fmt.Errorf("bench: holder act_id %d's wallet does not show its packet of %d within %v of booking's drain: %s",
					h.act, h.amount, timeout, problem)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}

// checkEmpty reads act, one of the empty ids from..to, and fails unless
// it answers an empty wallet.
func (c *walletClient) checkEmpty(ctx context.Context, act, from, to uint64) error {
	status, source, answer, err := c.do(ctx, fasthttp.MethodGet, "/v1/wallet/"+strconv.FormatUint(act, 10), nil)
	switch {
	case err != nil:
		return fmt.Errorf("bench: reading an empty user: %w", err)
	case status == fasthttp.StatusNotFound:
		return fmt.Errorf("bench: GET /v1/wallet/%d answered 404 (%.200s): the node says act_id %d was never handed out. "+
			"The empty users are the act_ids %d..%d, after the largest holder's up to the end of its block of %d: "+
			"a node hands act_ids out in such blocks (1..65536, 65537..131072, ...), and a wallet read of an id in a block "+
			"taken answers an empty wallet. A 404 means the node allocates otherwise (a smaller block?): lower --empty-ratio "+
			"or --holders so that the empty ids stay within the holders' own ids", act, answer, act, from, to, actBlock)
	case status != fasthttp.StatusOK:
		return fmt.Errorf("bench: GET /v1/wallet/%d of an empty user: status %d: %.200s", act, status, answer)
	}
	balances, ok := parseWalletBalances(answer, nil)
	switch {
	case !ok:
		return fmt.Errorf("bench: GET /v1/wallet/%d of an empty user: no balances in %.200s", act, answer)
	case len(balances) > 0:
		return fmt.Errorf("bench: act_id %d, after the holders', holds something (source %s): %.200s: "+
			"someone else is granting on the node; bench a node nobody else uses", act, source, answer)
	}
	return nil
}

// Err returns nil when the reads completed cleanly: no mismatch and no
// problem. Errors from the node (timeouts, unavailable) are results, not
// failures.
func (rep *WalletReport) Err() error {
	var errs []error
	for _, p := range rep.Problems {
		errs = append(errs, errors.New(p))
	}
	if rep.Mismatches > 0 {
		errs = append(errs, fmt.Errorf("%d wallet answers showed another wallet than granted; the first: %s",
			rep.Mismatches, rep.MismatchFirst))
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench: %w", errors.Join(errs...))
	}
	return nil
}

// WriteText writes rep for a reader, one figure a line.
func (rep *WalletReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "holders      %d (act_ids %d..%d), set up in %v\n", rep.Holders, rep.HolderMin, rep.HolderMax,
		rep.Setup.Round(time.Millisecond))
	if rep.EmptyTo > 0 {
		fmt.Fprintf(w, "empty users  act_ids %d..%d (%d), read with probability %g\n",
			rep.EmptyFrom, rep.EmptyTo, rep.EmptyTo-rep.EmptyFrom+1, rep.EmptyRatio)
	}
	fmt.Fprintf(w, "duration     %v (seed %d)\n", rep.Duration.Round(time.Millisecond), rep.Seed)
	fmt.Fprintf(w, "reads        %d (%.0f/s): %d of holders, %d of empty users; %d verified\n",
		rep.Reads, rep.ReadsPerSec, rep.HolderReads, rep.EmptyReads, rep.Verified)
	fmt.Fprintf(w, "statuses     %s\n", formatErrors(rep.Statuses))
	fmt.Fprintf(w, "sources      %s\n", formatErrors(rep.Sources))
	fmt.Fprintf(w, "errors       %s\n", formatErrors(rep.Errors))
	if rep.Mismatches > 0 {
		fmt.Fprintf(w, "MISMATCHED   %d answers; the first: %s\n", rep.Mismatches, rep.MismatchFirst)
	}
	fmt.Fprintf(w, "latency      p50=%s p99=%s p99.9=%s max=%s (from send to answer)\n",
		formatLatency(rep.LatencyP50), formatLatency(rep.LatencyP99), formatLatency(rep.LatencyP999), formatLatency(rep.LatencyMax))
	if rep.NodeCPUSeconds > 0 {
		fmt.Fprintf(w, "node cpu     %.1fs, %v per read\n", rep.NodeCPUSeconds, rep.CPUPerRead.Round(time.Microsecond/10))
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "PROBLEM      %s\n", p)
	}
}

// WriteJSON writes rep as JSON.
func (rep *WalletReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}
