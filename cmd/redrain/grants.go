package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/schema"
	"redrain/storage"
)

var grantsCommand = &command{name: "grants",
	summary: "read the grant topic: its records decoded as JSON lines, or the records' schema",
	synopsis: "redrain grants tail --kafka host:port,... [--topic redrain.grants] [--partition P]\n" +
		"                   [--from-beginning | --offset N] [-n N] [--follow]\n" +
		"redrain grants schema",
	details: `tail prints records of the grant topic, one JSON object a line: partition,
offset, key (the shard), timestamp, version (1, 2 or 3) and grants, each with
every field of the record (app_id, act_id, user_id, activity_id, scene_id,
rain_id, stage, award_type, asset, amount in minor units, budget_id, lease_id,
open_time and issued_at in unix ms, legacy_keys) and its out_trade_no
(derived). Partitions are read one after another, each in offset order.
Without --from-beginning or --offset it prints the last -n records (10) of
each partition; with them, at most -n from there (default all). It stops at
the end the topic had when it began, or with --follow goes on printing new
records until interrupted. A record that does not decode is printed with
"error" and its bytes in "value_hex", and tail goes on; it then exits 1.

A node on embedded defaults logs its broker's address at start
(kafka="embedded 127.0.0.1:PORT"); redrain dev prints its own.

schema prints schema/grant.proto, the protocol buffers schema of version 3
records (what nodes write), for protoc --decode redrain.v1.GrantRecord.`,
	examples: `# the last 10 records of every partition
redrain grants tail --kafka 127.0.0.1:9092
# everything on partition 3, then new records as they come
redrain grants tail --kafka k1:9092 --partition 3 --from-beginning --follow
# one record, and its grants' amounts with jq
redrain grants tail --kafka k1:9092 --partition 0 --offset 1200 -n 1 | jq '.grants[].amount'
# the schema, for kcat and protoc
redrain grants schema > grant.proto
kcat -C -b k1:9092 -t redrain.grants -p 0 -o -1 -c 1 -e -q -f '%s' | protoc --decode redrain.v1.GrantRecord grant.proto`}

// grantsOptions are the flags of `redrain grants tail`.
type grantsOptions struct {
	brokers       []string
	topic         string
	partition     int   // -1: every partition
	offset        int64 // -1: not given
	fromBeginning bool
	n             int // -1: not given
	follow        bool
}

// tailDefault is how many records of each partition tail prints without
// a start or -n.
const tailDefault = 10

// tailReadTimeout bounds the wait for a record below the end a partition
// had when tail began.
const tailReadTimeout = 30 * time.Second

func (c *cli) grants(ctx context.Context, args []string) error {
	fs := grantsCommand.flagSet()
	kafka := fs.String("kafka", "", "Kafka brokers, comma-separated (required)")
	var o grantsOptions
	fs.StringVar(&o.topic, "topic", storage.GrantTopic, "the grant topic's name (serve --grant-topic)")
	fs.IntVar(&o.partition, "partition", -1, "read this partition only (default: every partition)")
	fs.BoolVar(&o.fromBeginning, "from-beginning", false, "start at each partition's oldest record")
	fs.Int64Var(&o.offset, "offset", -1, "start at this offset of each partition read (default: the last -n records)")
	fs.IntVar(&o.n, "n", -1, "records per partition: the last N (default 10), or with --from-beginning or --offset the first N from there (default all)")
	fs.BoolVar(&o.follow, "follow", false, "after the end, print new records as they come until interrupted")
	pos, err := parseInterleaved(fs, args)
	if err = grantsCommand.parsed(c, fs, err); err == nil {
		err = grantsCommand.setFromEnv(c, fs)
	}
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && pos[0] == "schema":
		_, err := io.WriteString(c.stdout, schema.GrantProto)
		return err
	case len(pos) != 1 || pos[0] != "tail":
		return grantsCommand.usageError(c, "want 'tail' or 'schema', not %q", pos)
	case o.fromBeginning && o.offset >= 0:
		return grantsCommand.usageError(c, "--from-beginning and --offset: choose one")
	case o.n < -1 || o.n == 0:
		return grantsCommand.usageError(c, "-n %d: at least 1", o.n)
	case o.offset < -1:
		return grantsCommand.usageError(c, "--offset %d: 0 or more", o.offset)
	}
	if o.brokers = list(*kafka); len(o.brokers) == 0 {
		return grantsCommand.usageError(c, "no brokers: --kafka host:port,... or $%s (a node on embedded defaults logs its broker's address at start)",
			envName(grantsCommand.name, "kafka"))
	}
	bad, err := tailGrants(ctx, o, c.stdout)
	if err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(c.stderr, "redrain grants: %d undecodable records (printed with their bytes in value_hex)\n", bad)
		return exitError(1)
	}
	return nil
}

// tailRecord is one line of `redrain grants tail`.
type tailRecord struct {
	Partition int32       `json:"partition"`
	Offset    int64       `json:"offset"`
	Key       string      `json:"key"`
	Timestamp time.Time   `json:"timestamp"`
	Version   int         `json:"version"`
	Grants    []tailGrant `json:"grants,omitempty"`
	// Error and ValueHex are set for a record that does not decode.
	Error    string `json:"error,omitempty"`
	ValueHex string `json:"value_hex,omitempty"`
}

// tailGrant is a grant with the field names of schema/grant.proto.
type tailGrant struct {
	AppID      uint32 `json:"app_id"`
	ActID      uint64 `json:"act_id"`
	UserID     string `json:"user_id"`
	ActivityID string `json:"activity_id"`
	SceneID    string `json:"scene_id"`
	RainID     uint64 `json:"rain_id"`
	Stage      string `json:"stage"`
	AwardType  string `json:"award_type"`
	Asset      string `json:"asset"`
	Amount     int64  `json:"amount"`
	BudgetID   string `json:"budget_id"`
	LeaseID    uint64 `json:"lease_id"`
	OpenTime   int64  `json:"open_time"`
	IssuedAt   int64  `json:"issued_at"`
	LegacyKeys bool   `json:"legacy_keys"`
	OutTradeNo string `json:"out_trade_no"`
}

// recordLine decodes one message of the grant topic into its line.
func recordLine(m *sarama.ConsumerMessage) (tailRecord, bool) {
	r := tailRecord{Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Timestamp: m.Timestamp.UTC(),
		Version: ledger.GrantRecordVersion(m.Value)}
	gs, err := ledger.DecodeGrantRecord(nil, m.Value)
	if err != nil {
		r.Error, r.ValueHex = err.Error(), hex.EncodeToString(m.Value)
		return r, false
	}
	r.Grants = make([]tailGrant, len(gs))
	for i := range gs {
		g := &gs[i]
		r.Grants[i] = tailGrant{AppID: g.AppID, ActID: g.ActID, UserID: g.UserID, ActivityID: g.ActivityID,
			SceneID: g.SceneID, RainID: g.RainID, Stage: g.Stage.String(), AwardType: g.AwardType, Asset: string(g.Asset),
			Amount: g.Amount, BudgetID: g.BudgetID, LeaseID: g.LeaseID, OpenTime: g.OpenTime, IssuedAt: g.IssuedAt,
			LegacyKeys: g.Legacy, OutTradeNo: g.OutTradeNo()}
	}
	return r, true
}

// tailRange is where tail reads one partition: from start, at most limit
// records (0: no limit) below end (the partition's end when tail began).
type tailRange struct {
	part              int32
	start, end, limit int64
}

// tailGrants prints the records o asks for to w and returns how many did
// not decode.
func tailGrants(ctx context.Context, o grantsOptions, w io.Writer) (int, error) {
	client, err := sarama.NewClient(o.brokers, storage.SaramaConfig("redrain-grants-tail"))
	if err != nil {
		return 0, fmt.Errorf("kafka %v: %w", o.brokers, err)
	}
	defer client.Close()
	parts, err := client.Partitions(o.topic)
	if err != nil {
		return 0, fmt.Errorf("topic %s: %w", o.topic, err)
	}
	slices.Sort(parts)
	if o.partition >= 0 {
		if !slices.Contains(parts, int32(o.partition)) {
			return 0, fmt.Errorf("topic %s has no partition %d (it has %d)", o.topic, o.partition, len(parts))
		}
		parts = []int32{int32(o.partition)}
	}
	ranges := make([]tailRange, len(parts))
	for i, p := range parts {
		oldest, err := client.GetOffset(o.topic, p, sarama.OffsetOldest)
		if err != nil {
			return 0, fmt.Errorf("partition %d: %w", p, err)
		}
		end, err := client.GetOffset(o.topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, fmt.Errorf("partition %d: %w", p, err)
		}
		r := tailRange{part: p, end: end, limit: int64(max(o.n, 0))}
		switch {
		case o.fromBeginning:
			r.start = oldest
		case o.offset >= 0:
			r.start = min(max(o.offset, oldest), end)
		default:
			r.start = max(end-int64(orDefault(o.n, tailDefault)), oldest)
			r.limit = 0
		}
		ranges[i] = r
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return 0, fmt.Errorf("kafka consumer: %w", err)
	}
	defer consumer.Close()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	bad := 0
	emit := func(m *sarama.ConsumerMessage) error {
		line, ok := recordLine(m)
		if !ok {
			bad++
		}
		return enc.Encode(line)
	}
	if !o.follow {
		for _, r := range ranges {
			if err := tailPartition(ctx, consumer, o.topic, r, emit); err != nil {
				return bad, err
			}
		}
		return bad, nil
	}
	return bad, followPartitions(ctx, consumer, o.topic, ranges, emit)
}

// orDefault is n, or def when n is not given (-1).
func orDefault(n, def int) int {
	if n < 0 {
		return def
	}
	return n
}

// tailPartition prints the records of r, in offset order.
func tailPartition(ctx context.Context, consumer sarama.Consumer, topic string, r tailRange, emit func(*sarama.ConsumerMessage) error) error {
	if r.start >= r.end {
		return nil
	}
	pc, err := consumer.ConsumePartition(topic, r.part, r.start)
	if err != nil {
		return fmt.Errorf("partition %d at %d: %w", r.part, r.start, err)
	}
	defer pc.Close()
	timer := time.NewTimer(tailReadTimeout)
	defer timer.Stop()
	for n := int64(0); r.limit == 0 || n < r.limit; n++ {
		select {
		case m := <-pc.Messages():
			if err := emit(m); err != nil {
				return err
			}
			if m.Offset >= r.end-1 {
				return nil
			}
			timer.Reset(tailReadTimeout)
		case err := <-pc.Errors():
			return fmt.Errorf("partition %d: %w", r.part, err)
		case <-timer.C:
			return fmt.Errorf("partition %d: no record up to offset %d within %v", r.part, r.end-1, tailReadTimeout)
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// followPartitions prints every partition's records from its start, as
// they come, until ctx ends (at most limit records of a partition when it
// has one).
func followPartitions(ctx context.Context, consumer sarama.Consumer, topic string, ranges []tailRange, emit func(*sarama.ConsumerMessage) error) error {
	msgs := make(chan *sarama.ConsumerMessage)
	errs := make(chan error, len(ranges))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, r := range ranges {
		pc, err := consumer.ConsumePartition(topic, r.part, r.start)
		if err != nil {
			return fmt.Errorf("partition %d at %d: %w", r.part, r.start, err)
		}
		defer pc.Close()
		go func() {
			for n := int64(0); r.limit == 0 || n < r.limit; n++ {
				select {
				case m := <-pc.Messages():
					select {
					case msgs <- m:
					case <-ctx.Done():
						return
					}
				case err := <-pc.Errors():
					errs <- fmt.Errorf("partition %d: %w", r.part, err)
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case m := <-msgs:
			if err := emit(m); err != nil {
				return err
			}
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil // interrupted: the way --follow ends
		}
	}
}
