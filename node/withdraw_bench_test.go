package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/node"
	"redrain/storage/storagetest"
	"redrain/withdraw/paytest"
	"redrain/withdraw/withdrawtest"
)

// BenchmarkNodeWithdrawals is the harness of "withdrawals/s on one node
// when each user has 10 outstanding packets": one node on the embedded
// backends, a payout test server over HTTP, and signed POST
// /v1/withdrawals from parallel clients, each for a user with 10
// outstanding packets. The packets and the moves are still in the
// withdrawal ledger in memory (withdrawtest), so this measures the route,
// the records in TiKV and the channel over HTTP, not booking; with
// booking's moves in, the next step drops WithdrawConfig.Ledger and
// issues the packets through POST /v1/grants instead (DESIGN.md, The flow
// of a withdrawal: Measuring).
//
//	go test ./node/ -run '^$' -bench NodeWithdrawals -benchtime 2000x
func BenchmarkNodeWithdrawals(b *testing.B) {
	led, pay := withdrawtest.NewLedger(), paytest.New()
	defer pay.Close()
	n, err := node.Start(node.Config{DataDir: b.TempDir(), HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		Redis: storagetest.Redis(b), ConfigFile: configFile(b), Log: newTestLog(b),
		Withdraw: node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}, Ledger: led}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Stop(ctx)
	}()
	for deadline := time.Now().Add(readyWithin); ; {
		resp, err := http.Get(urlOf(n, "/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("node not ready within %v", readyWithin)
		}
		time.Sleep(50 * time.Millisecond)
	}
	const base = 1 << 40 // act_ids of the withdrawal ledger only
	for i := range b.N {
		led.Issue(uint64(base+i), 10, 100)
	}
	signer := &adminauth.Signer{Key: adminauth.MustParseKey(testAppKey(1))}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			act := base + next.Add(1) - 1
			body := fmt.Appendf(nil, `{"act_id":%d,"amount":900,"channel":"bank","request_id":"b-%d"}`, act, act)
			req, err := http.NewRequest("POST", urlOf(n, "/v1/withdrawals"), bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			if err := signer.Sign(req, body); err != nil {
				b.Error(err)
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Contains(answer, []byte(`"state":"settled"`)) {
				b.Errorf("withdrawal of %d: %d %s", act, resp.StatusCode, answer)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "withdrawals/s")
	if paid := pay.PaidTotal(); paid != int64(b.N)*900 {
		b.Errorf("the channel paid %d fen, want %d", paid, int64(b.N)*900)
	}
}
