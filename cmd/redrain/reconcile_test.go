package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/spend"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

// TestReconcileWalletCache runs `redrain reconcile --redis` against a
// stopped store and a redis-server: a summary that differs from the store
// at the store's own seq is reported (exit 1) and left alone, repaired with
// --repair (exit 0, the key then holds the store's balance), and a run
// after finds nothing; consistent, tombstoned and missing keys are never
// drift; bad flags are refused before anything is read.
func TestReconcileWalletCache(t *testing.T) {
	const parts = 4
	dir := t.TempDir()
	addr := storagetest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	f := bookingtest.New(t, kv, parts, 1<<40)
	b := booking.New(booking.Config{Log: slog.New(slog.DiscardHandler), TiKV: kv, Partitions: parts, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "test"})
	good, bad, tomb, none := f.User(), f.User(), f.User(), f.User()
	var grants []ledger.Grant
	for i, u := range []uint64{good, bad, tomb, none} {
		grants = append(grants, f.Grant(u, uint64(i+1), f.Lease(f.Budget, 100), 100+int64(i)))
	}
	bookingtest.WantOutcomes(t, bookingtest.Book(t, b, grants), booking.BookedNow)
	var seqs []uint64
	if err := kv.View(func(txn storage.Txn) error {
		seqs, err = booking.JournalSeqs(ctx, txn, parts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	accounts := f.Accounts([]uint64{good, bad})
	seqOf := func(u uint64) uint64 { return seqs[storage.PartitionOf(u, parts)] }
	for p, seq := range seqs { // the Feed wrote every tombstone
		if err := rdb.Set(ctx, "rr:wseq:"+strconv.Itoa(p), seq, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The summaries as the wallet writes them: "{seq}:{JSON}", "{seq}:" a
	// tombstone.
	put := func(u uint64, v string) {
		if err := rdb.Set(ctx, wallet.CacheKey(u), v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	summary := func(u uint64, amount int64) string {
		return fmt.Sprintf(`%d:{"b":[{"s":"%s","n":%d}],"a":[{"i":7,"u":"user-%d"}]}`, seqOf(u), f.Asset, amount, u)
	}
	if a := accounts[good]; len(a.Balances) != 1 || a.Balances[0].Amount != 100 || len(a.Apps) != 1 {
		t.Fatalf("account booked: %+v", a)
	}
	put(good, summary(good, 100))
	put(bad, summary(bad, 1))
	put(tomb, fmt.Sprintf("%d:", seqOf(tomb)))
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	badKey := func() string { return rdb.Get(ctx, wallet.CacheKey(bad)).Val() }
	before := badKey()

	base := []string{"reconcile", "--data-dir", dir, "--redis", addr, "--partitions", strconv.Itoa(parts)}
	exit, stdout, stderr := runTest(base, nil)
	if exit != 1 || !strings.Contains(stdout, "checked 4 accounts") || !strings.Contains(stdout, "drift: 1, repaired 0") ||
		!strings.Contains(stdout, fmt.Sprintf("act %d: Redis at seq %d holds {%s:1", bad, seqOf(bad), f.Asset)) || !strings.Contains(stdout, "NOT repaired") {
		t.Fatalf("reconcile --redis: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	if badKey() != before {
		t.Fatalf("reconcile without --repair changed the key: %q, was %q", badKey(), before)
	}

	exit, stdout, stderr = runTest(append(base, "--repair", "--json"), nil)
	var r wallet.Report
	if err := json.Unmarshal([]byte(stdout), &r); exit != 0 || err != nil || r.Checked != 4 || r.Drifted != 1 || r.Repaired != 1 ||
		r.Missing != 1 || r.Tombstones != 1 || len(r.Drift) != 1 || r.Drift[0].ActID != bad || !r.Drift[0].Repaired {
		t.Fatalf("reconcile --redis --repair --json: exit %d (%v)\nstdout:\n%s\nstderr:\n%s", exit, err, stdout, stderr)
	}
	if want := fmt.Sprintf(`%d:{"b":[{"s":"%s","n":101}]`, seqOf(bad), f.Asset); !strings.HasPrefix(badKey(), want) {
		t.Fatalf("after the repair the key holds %q, want it to start %q", badKey(), want)
	}

	exit, stdout, stderr = runTest(append(base, "--rate", "1000"), nil)
	if exit != 0 || !strings.Contains(stdout, "drift: 0") || !strings.HasSuffix(stdout, "OK\n") {
		t.Fatalf("reconcile --redis after the repair: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	exit, stdout, stderr = runTest(append(base, "--all"), nil)
	if exit != 0 || !strings.Contains(stdout, "every summary in Redis") || !strings.Contains(stdout, "checked 3 accounts") {
		t.Fatalf("reconcile --redis --all: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}

	for _, c := range []struct {
		args []string
		exit int
		want string
	}{
		{[]string{"reconcile", "--data-dir", dir, "--repair"}, 2, "give its --redis"},
		{[]string{"reconcile", "--data-dir", dir, "--all"}, 2, "give its --redis"},
		{append(base[:len(base):len(base)], "--all", "--since", "1h"), 2, "give one"},
		{append(base[:len(base):len(base)], "--since", "-1h"), 2, "a duration above 0"},
		{append(base[:len(base):len(base)], "--rate", "-1"), 2, "--rate -1"},
		{[]string{"reconcile", "--data-dir", dir, "--rate", "100"}, 2, "give its --redis"},
		{[]string{"reconcile", "--data-dir", dir, "--redis", addr, "--partitions", "3"}, 1, "partition count"},
		{[]string{"reconcile", "--data-dir", dir, "--redis", "127.0.0.1:1"}, 1, "redis 127.0.0.1:1"},
	} {
		exit, stdout, stderr := runTest(c.args, nil)
		if exit != c.exit || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q (stdout %q)", c.args, exit, stderr, c.exit, c.want, stdout)
		}
	}
}

// TestReconcileConsistency runs `redrain reconcile --consistency` against a
// stopped store holding a transfer whose receiver's move is missing: it is
// listed (exit 1), completed with --repair, and a run after finds nothing.
func TestReconcileConsistency(t *testing.T) {
	const parts = 4
	dir := t.TempDir()
	ctx := context.Background()
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	f := bookingtest.New(t, kv, parts, 1<<40)
	past := time.Now().Add(-time.Hour)
	b := booking.New(booking.Config{Log: slog.New(slog.DiscardHandler), TiKV: kv, Partitions: parts, Metrics: &metrics.Registry{},
		Clock: func() time.Time { return past }, Owner: "test"})
	from, to := f.User(), f.User()
	bookingtest.WantOutcomes(t, bookingtest.Book(t, b, []ledger.Grant{f.Grant(from, 1, nil, 500)}), booking.BookedNow)
	half := spend.Moves(&spend.Request{Op: spend.OpTransfer, AppID: 7, ActID: from, ToActID: to, Asset: f.Asset, Amount: 40, RequestID: "t-1"})[:1]
	if res, err := b.Move(ctx, half); err != nil || res[0] != ledger.MoveApplied {
		t.Fatalf("sender's move: %v %v", res, err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	base := []string{"reconcile", "--data-dir", dir, "--consistency", "--partitions", strconv.Itoa(parts)}
	exit, stdout, stderr := runTest(base, nil)
	if exit != 1 || !strings.Contains(stdout, "transfer_half (open)") || !strings.Contains(stdout, "MISMATCHES FOUND") {
		t.Fatalf("reconcile --consistency: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	exit, stdout, stderr = runTest(append(base, "--repair"), nil)
	if !strings.Contains(stdout, "transfer_half (repaired)") {
		t.Fatalf("reconcile --consistency --repair: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	exit, stdout, stderr = runTest(append(base, "--json"), nil)
	if exit != 0 || !strings.Contains(stdout, `"consistency":{`) || !strings.Contains(stdout, `"transfers":1,`) {
		t.Fatalf("reconcile --consistency after the repair: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base[:len(base):len(base)], "--redis", "127.0.0.1:1"), "give one"},
		{[]string{"reconcile", "--data-dir", dir, "--kafka", "k1:9092"}, "are for --consistency"},
	} {
		if exit, stdout, stderr := runTest(c.args, nil); exit != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q (stdout %q)", c.args, exit, stderr, c.want, stdout)
		}
	}
}
