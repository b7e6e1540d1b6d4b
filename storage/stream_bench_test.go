package storage_test

import (
	"context"
	"sync"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"redrain/grant/granttest"
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

// BenchmarkSingleRecords: 8 shards at once each append one grant a record
// and wait for its acknowledgement, as the grant path does when grants
// arrive one at a time, through the grant writer (its produce loop on
// sarama's Broker) and, for comparison, sarama's idempotent AsyncProducer
// (the grant writer before the loop) and franz-go's kgo client with the same
// acknowledgements (all in-sync replicas, idempotent by default, no
// linger), against the embedded broker with its log on disk.
// "cpu-ns/rec" is the process's CPU per record, the broker's included.
func BenchmarkSingleRecords(b *testing.B) {
	const partitions = 8
	k := storagetest.Kafka(b, "", partitions)
	g := []ledger.Grant{testGrant(1)}
	run := func(b *testing.B, app func(p int32) error) {
		per := b.N / partitions
		cpu0 := granttest.ProcessCPU()
		b.ResetTimer()
		var wg sync.WaitGroup
		for p := range partitions {
			wg.Go(func() {
				for range per {
					if err := app(int32(p)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(granttest.ProcessCPU()-cpu0)/float64(per*partitions), "cpu-ns/rec")
	}
	b.Run("loop", func(b *testing.B) {
		w, err := storage.NewGrantWriter(k.Brokers, partitions)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		run(b, func(p int32) error { _, err := w.Append(p, g); return err })
	})
	b.Run("sarama-async", func(b *testing.B) {
		// The grant writer before the produce loop: sarama's idempotent
		// AsyncProducer, a result goroutine answering each record.
		cfg := storage.SaramaConfig("bench")
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Producer.Idempotent = true
		cfg.Net.MaxOpenRequests = 1
		cfg.Producer.Return.Successes = true
		cfg.Producer.Partitioner = sarama.NewManualPartitioner
		p, err := sarama.NewAsyncProducer(k.Brokers, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer p.AsyncClose()
		go func() {
			for m := range p.Successes() {
				m.Metadata.(chan error) <- nil
			}
		}()
		go func() {
			for e := range p.Errors() {
				e.Msg.Metadata.(chan error) <- e.Err
			}
		}()
		val := ledger.AppendGrantRecord(nil, g)
		run(b, func(part int32) error {
			done := make(chan error, 1)
			p.Input() <- &sarama.ProducerMessage{Topic: k.Topic, Partition: part, Key: sarama.ByteEncoder(storage.ShardKey(part)),
				Value: sarama.ByteEncoder(val), Metadata: done}
			return <-done
		})
	})
	b.Run("kgo", func(b *testing.B) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.DefaultProduceTopic(k.Topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		val := ledger.AppendGrantRecord(nil, g)
		run(b, func(p int32) error {
			done := make(chan error, 1)
			cl.Produce(context.Background(), &kgo.Record{Partition: p, Key: storage.ShardKey(p), Value: val}, func(_ *kgo.Record, err error) { done <- err })
			return <-done
		})
	})
}
