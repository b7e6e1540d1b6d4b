package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"redrain/booking"
	"redrain/campaign"
	"redrain/consistency"
	"redrain/metrics"
	"redrain/statement"
	"redrain/storage"
)

// consistencyFlags are reconcile's --consistency flags.
type consistencyFlags struct {
	on       bool
	kafka    string
	campaign string
}

func (f *consistencyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "consistency", false, "after the audit, compare the grant topic, the store and the statements (and repair with --repair)")
	fs.StringVar(&f.kafka, "kafka", "", "with --consistency: Kafka brokers, comma-separated (default: the embedded broker of --data-dir when the store is embedded, else the topic is not compared)")
	fs.StringVar(&f.campaign, "campaign", "", "with --consistency: the campaign file whose split rules and sponsors rebuild a statements day (none: days are listed, not rebuilt)")
}

// run checks every UTC day from since ago to today; dataDir is the
// embedded backends' directory ("": the store is a TiKV cluster).
func (f *consistencyFlags) run(ctx context.Context, kv *storage.TiKV, dataDir string, parts int32, repair bool, since time.Duration) (*consistency.Report, error) {
	cfg := consistency.Config{DB: kv, Parts: parts, Statements: &statement.Config{}, KeepStatements: true}
	if f.campaign != "" {
		c, err := campaign.Load(f.campaign)
		if err != nil {
			return nil, err
		}
		cfg.Statements, cfg.KeepStatements = c.Config.Statements.StatementConfig(c.Seeds), false
	}
	brokers := list(f.kafka)
	if len(brokers) == 0 && dataDir != "" {
		// The stopped node's embedded broker, as it opens it.
		k, err := storage.OpenKafka(nil, dataDir, parts)
		if err != nil {
			return nil, err
		}
		defer k.Close()
		brokers = k.Brokers
	}
	if len(brokers) > 0 {
		s, err := consistency.NewKafkaStream(brokers, "")
		if err != nil {
			return nil, err
		}
		defer s.Close()
		cfg.Stream = s
	}
	if repair {
		// Not run: it books straight into the store, as a node that does
		// not own the partition, and the owner catches up.
		cfg.Booker = booking.New(booking.Config{Log: slog.Default(), TiKV: kv, Partitions: parts, Metrics: &metrics.Registry{},
			Clock: time.Now, Owner: "reconcile"})
	}
	c, err := consistency.New(cfg)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return c.Days(ctx, statement.DayOf(now.Add(-since).UnixMilli()), statement.DayOf(now.UnixMilli())+1, repair)
}
