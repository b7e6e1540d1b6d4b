package grant_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"redrain/grant"
	"redrain/grant/granttest"
)

// BenchmarkAdmit admits batches of 100 new users from 8 requests at once
// through 8 shards and the embedded broker, as a node's batch route does:
// ns/op and allocs/op are per grant, and "cpu-ns/grant" is the process's
// CPU per grant (the broker's included), "grants/record" how many grants
// shared a grant-stream record. owner=false sends them to a node that owns
// no shard and forwards every batch to the owner (in process: the
// encodings and the owner's Serve, no network).
func BenchmarkAdmit(b *testing.B) {
	for _, owner := range []bool{false, true} {
		b.Run(fmt.Sprintf("owner=%v", owner), func(b *testing.B) {
			f := newFixtureOwner(b, 8, 1<<50, 0, owner)
			const batch, callers = 100, 8
			var next atomic.Int64
			b.ReportAllocs()
			cpu0, records0 := granttest.ProcessCPU(), f.owner.Records()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := max(b.N/(batch*callers), 1)
			for range callers {
				wg.Go(func() {
					reqs := make([]grant.Request, batch)
					res := make([]grant.Result, batch)
					for range per {
						base := next.Add(batch)
						for i := range reqs {
							reqs[i] = grant.Request{AppID: 1, UserID: fmt.Sprintf("b%d", base+int64(i)), ActivityID: "demo", SceneID: "rain", RainID: 1}
						}
						f.adm.Admit(reqs, res)
						for i := range res {
							if res[i].Outcome != grant.Issued {
								b.Errorf("outcome %v", res[i].Outcome)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			grants := float64(per * batch * callers)
			b.ReportMetric(float64(granttest.ProcessCPU()-cpu0)/grants, "cpu-ns/grant")
			b.ReportMetric(grants/b.Elapsed().Seconds(), "grants/s")
			b.ReportMetric(grants/float64(f.owner.Records()-records0), "grants/record")
		})
	}
}
