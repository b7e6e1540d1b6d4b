package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/campaign"
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
// the records in TiKV and the channel over HTTP, not booking;
// BenchmarkNodeWithdrawalsBooked is the same through the node's own
// booking.
//
//	go test ./node/ -run '^$' -bench 'NodeWithdrawals$' -benchtime 2000x
func BenchmarkNodeWithdrawals(b *testing.B) {
	led, pay := withdrawtest.NewLedger(), paytest.New()
	defer pay.Close()
	n := startBenchNode(b, node.Config{ConfigFile: configFile(b),
		Withdraw: node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}, Ledger: led}})
	const base = 1 << 40 // act_ids of the withdrawal ledger only
	acts := make([]uint64, b.N)
	for i := range b.N {
		acts[i] = uint64(base + i)
		led.Issue(acts[i], 10, 100)
	}
	withdrawAll(b, n, pay, acts, 900)
}

// BenchmarkNodeWithdrawalsBooked is "withdrawals/s on one node when each
// user has 10 outstanding packets" through real booking (no
// WithdrawConfig.Ledger): each of b.N users is granted 10 packets of 100
// fen (rains 1..10) through POST /v1/grants/batch while booking reads no
// grant record (Booker.HoldStream), then each withdraws 900 fen: the node
// books the user's 10 outstanding packets (the grant path's Outstanding,
// booking's Book), holds, pays over HTTP and settles (booking's Move).
// outstanding/user is the packets unbooked when the timer starts, on a
// sample (10: every packet); cpu-ms/withdrawal the process's CPU (node,
// clients and channel) over the timed part.
//
//	go test ./node/ -run '^$' -bench NodeWithdrawalsBooked -benchtime 2000x
func BenchmarkNodeWithdrawalsBooked(b *testing.B) {
	const rains, packet = 10, 100
	pay := paytest.New()
	defer pay.Close()
	cfg := configFileWith(b, func(c *campaign.Config) {
		a := &c.Activities[0]
		start := a.Rains[0].Start
		a.Rains = nil
		for r := uint64(1); r <= rains; r++ {
			a.Rains = append(a.Rains, campaign.Rain{SceneID: "rain", RainID: r, AlwaysOpen: true, Start: start})
		}
		a.Awards = []campaign.Award{{Type: "cash", Kind: campaign.KindMoney, Min: packet, Max: packet}}
	})
	n := startBenchNode(b, node.Config{ConfigFile: cfg,
		Withdraw: node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}, Min: 1}})
	n.Booker().HoldStream(func() bool { return true }) // booking reads no grant record: every packet stays outstanding
	signer := &adminauth.Signer{Key: adminauth.MustParseKey(testAppKey(1))}
	prefix := fmt.Sprintf("wb-%d-", time.Now().UnixNano())
	acts := make([]uint64, b.N)
	const usersPerBatch = 100 // 1000 grants a request
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for first := w * usersPerBatch; first < b.N; first += 8 * usersPerBatch {
				if err := grantPackets(n, signer, prefix, acts, first, min(first+usersPerBatch, b.N), rains, packet); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	// The packets outstanding, on a sample of users (10 each: booking is
	// held).
	ctx := context.Background()
	var outstanding, sampled int
	for i := 0; i < b.N; i += max(b.N/64, 1) {
		gs, err := n.Grants().Outstanding(ctx, acts[i])
		if err != nil {
			b.Fatal(err)
		}
		outstanding, sampled = outstanding+len(gs), sampled+1
	}
	withdrawAll(b, n, pay, acts, 900)
	b.ReportMetric(float64(outstanding)/float64(sampled), "outstanding/user") // after the timer's reset
}

// grantPackets grants users first..last-1 (prefix and the number) rains
// packets each of 100 fen through POST /v1/grants/batch and notes their
// act_ids in acts.
func grantPackets(n *node.Node, signer *adminauth.Signer, prefix string, acts []uint64, first, last, rains int, packet int64) error {
	var body bytes.Buffer
	body.WriteString(`{"grants":[`)
	for u := first; u < last; u++ {
		for r := 1; r <= rains; r++ {
			if u > first || r > 1 {
				body.WriteByte(',')
			}
			body.WriteString(grantBody(1, prefix+strconv.Itoa(u), "demo", "rain", uint64(r)))
		}
	}
	body.WriteString(`]}`)
	var answer struct {
		Results []struct {
			ActID  uint64 `json:"act_id"`
			Amount int64  `json:"amount"`
		} `json:"results"`
	}
	code, raw, err := signedPost(signer, urlOf(n, "/v1/grants/batch"), body.Bytes())
	if err != nil || code != http.StatusOK || json.Unmarshal(raw, &answer) != nil || len(answer.Results) != (last-first)*rains {
		return fmt.Errorf("grants %d..%d: %d %.300s (%v)", first, last, code, raw, err)
	}
	for i, g := range answer.Results {
		if g.Amount != packet || g.ActID == 0 {
			return fmt.Errorf("grant %d of users %d..%d: %+v", i, first, last, g)
		}
		acts[first+i/rains] = g.ActID
	}
	return nil
}

// startBenchNode starts a node on the embedded backends (cfg's DataDir,
// listeners, Redis and Log are the benchmark's) and waits until it is
// ready; it stops with the benchmark.
func startBenchNode(b *testing.B, cfg node.Config) *node.Node {
	cfg.DataDir, cfg.HTTP, cfg.AdminHTTP, cfg.Redis, cfg.Log = b.TempDir(), "127.0.0.1:0", "127.0.0.1:0", storagetest.Redis(b), newTestLog(b)
	n, err := node.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Stop(ctx)
	})
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
	return n
}

// signedPost sends body to url signed by s and returns the answer.
func signedPost(s *adminauth.Signer, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if err := s.Sign(req, body); err != nil {
		return 0, nil, err
	}
	resp, err := benchClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, err
}

var benchClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// withdrawAll times one withdrawal of amount fen from each of acts, from
// 16 parallel clients signed as app 1, each of which must settle, and
// reports withdrawals/s and the process's CPU per withdrawal.
func withdrawAll(b *testing.B, n *node.Node, pay *paytest.Server, acts []uint64, amount int64) {
	signer := &adminauth.Signer{Key: adminauth.MustParseKey(testAppKey(1))}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			act := acts[next.Add(1)-1]
			body := fmt.Appendf(nil, `{"act_id":%d,"amount":%d,"channel":"bank","request_id":"b-%d"}`, act, amount, act)
			code, answer, err := signedPost(signer, urlOf(n, "/v1/withdrawals"), body)
			if err != nil || code != http.StatusOK || !bytes.Contains(answer, []byte(`"state":"settled"`)) {
				b.Errorf("withdrawal of %d: %d %s (%v)", act, code, answer, err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "withdrawals/s")
	b.ReportMetric((processCPU(b)-cpu0).Seconds()*1000/float64(b.N), "cpu-ms/withdrawal")
	if paid := pay.PaidTotal(); paid != int64(b.N)*amount {
		b.Errorf("the channel paid %d fen, want %d", paid, int64(b.N)*amount)
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
