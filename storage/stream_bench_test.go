package storage_test

import (
	"sync"
	"testing"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// BenchmarkGrantWriterAppend appends a batch of 32 grants per shard from 8
// shards at once, as the grant path does: ns/op is one round of 8 batches
// acknowledged.
func BenchmarkGrantWriterAppend(b *testing.B) {
	const partitions, batch = 8, 32
	k := storagetest.Kafka(b, "", partitions)
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	batches := make([][]ledger.Grant, partitions)
	for id := uint64(1); ; id++ {
		p := w.Partition(id)
		if len(batches[p]) < batch {
			batches[p] = append(batches[p], testGrant(id))
		}
		full := true
		for _, bb := range batches {
			full = full && len(bb) == batch
		}
		if full {
			break
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for p := range batches {
			wg.Go(func() {
				if _, err := w.Append(int32(p), batches[p]); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
}
