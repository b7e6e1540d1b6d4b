package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/schema"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// tailLine is a line of `redrain grants tail` as a reader parses it.
type tailLine struct {
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
	Key       string           `json:"key"`
	Version   int              `json:"version"`
	Grants    []map[string]any `json:"grants"`
	Error     string           `json:"error"`
	ValueHex  string           `json:"value_hex"`
}

func parseTail(t *testing.T, out string) []tailLine {
	t.Helper()
	var lines []tailLine
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l tailLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

// tailTestGrant is a grant with every field set, of user n.
func tailTestGrant(n uint64) ledger.Grant {
	return ledger.Grant{AppID: 7, ActID: n, UserID: "u-" + string(rune('a'+n)), ActivityID: "spring", SceneID: "lobby",
		RainID: 3, Stage: tokens.StageGray, AwardType: "cash", Asset: ledger.AssetCash, Amount: int64(100 + n),
		BudgetID: "spring/gray/cash", LeaseID: 9, OpenTime: 1_700_000_000_000, IssuedAt: 1_700_000_000_123}
}

// TestGrantsTail writes records of every version and one that does not
// decode to the embedded broker, and reads them back with `redrain grants
// tail`: each record's grants with every field, the bad one in hex (tail
// goes on, then exits 1), the last -n of each partition by default, one
// partition from an offset, and --follow printing a record written after it
// started.
func TestGrantsTail(t *testing.T) {
	k := storagetest.Kafka(t, "", 2)
	cfg := storage.SaramaConfig("grants-test")
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(k.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	send := func(part int32, value []byte) {
		t.Helper()
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: part,
			Key: sarama.ByteEncoder(storage.ShardKey(part)), Value: sarama.ByteEncoder(value)}); err != nil {
			t.Fatal(err)
		}
	}
	g1, g2, g3, g4 := tailTestGrant(1), tailTestGrant(2), tailTestGrant(3), tailTestGrant(4)
	v1 := append([]byte{1, 1}, ledger.AppendGrant(nil, &g1)[1:]...) // before keys named the activity
	v2 := append([]byte{2, 1}, ledger.AppendGrant(nil, &g2)...)     // the binary layout before protobuf
	v3 := ledger.AppendGrantRecord(nil, []ledger.Grant{g3, g4})     // what nodes write
	junk := []byte("not a grant record")
	send(0, v1)
	send(0, v2)
	send(0, v3)
	send(1, junk)
	send(1, ledger.AppendGrantRecord(nil, []ledger.Grant{g4}))

	broker := strings.Join(k.Brokers, ",")
	exit, stdout, stderr := runTest([]string{"grants", "tail", "--kafka", broker, "--from-beginning"}, nil)
	if exit != 1 || !strings.Contains(stderr, "1 undecodable records") {
		t.Errorf("tail --from-beginning: exit %d, stderr %q; want 1 and the count of undecodable records", exit, stderr)
	}
	lines := parseTail(t, stdout)
	if len(lines) != 5 {
		t.Fatalf("tail --from-beginning printed %d lines, want 5:\n%s", len(lines), stdout)
	}
	for i, want := range []struct {
		part    int32
		offset  int64
		version int
		grants  int
		legacy  bool
	}{{0, 0, 1, 1, true}, {0, 1, 2, 1, false}, {0, 2, 3, 2, false}, {1, 0, 0, 0, false}, {1, 1, 3, 1, false}} {
		l := lines[i]
		if l.Partition != want.part || l.Offset != want.offset || l.Version != want.version || len(l.Grants) != want.grants ||
			l.Key != string(storage.ShardKey(want.part)) {
			t.Errorf("line %d = %+v, want partition %d offset %d version %d with %d grants", i, l, want.part, want.offset, want.version, want.grants)
			continue
		}
		for _, g := range l.Grants {
			if g["legacy_keys"] != want.legacy {
				t.Errorf("line %d: legacy_keys %v, want %v", i, g["legacy_keys"], want.legacy)
			}
		}
	}
	// Every field of a grant, by the schema's names, and its trade number.
	wantGrant := map[string]any{"app_id": json.Number("7"), "act_id": json.Number("3"), "user_id": "u-d", "activity_id": "spring",
		"scene_id": "lobby", "rain_id": json.Number("3"), "stage": "gray", "award_type": "cash", "asset": "cash",
		"amount": json.Number("103"), "budget_id": "spring/gray/cash", "lease_id": json.Number("9"),
		"open_time": json.Number("1700000000000"), "issued_at": json.Number("1700000000123"), "legacy_keys": false,
		"out_trade_no": g3.OutTradeNo()}
	if got := lines[2].Grants[0]; len(got) != len(wantGrant) {
		t.Errorf("grant = %v, want %v", got, wantGrant)
	} else {
		for k, v := range wantGrant {
			if got[k] != v {
				t.Errorf("grant %s = %#v, want %#v", k, got[k], v)
			}
		}
	}
	if bad := lines[3]; bad.Error == "" || bad.ValueHex != hex.EncodeToString(junk) || bad.Grants != nil {
		t.Errorf("undecodable record printed as %+v, want its error and bytes in hex", bad)
	}

	// By default the last records of each partition; -n from the variable.
	exit, stdout, _ = runTest([]string{"grants", "tail"}, map[string]string{"REDRAIN_GRANTS_KAFKA": broker, "REDRAIN_GRANTS_N": "1"})
	if lines := parseTail(t, stdout); exit != 0 || len(lines) != 2 || lines[0].Offset != 2 || lines[1].Partition != 1 || lines[1].Offset != 1 {
		t.Errorf("tail -n 1: exit %d, lines %+v; want the last record of each partition", exit, lines)
	}
	// One partition from an offset, at most -n.
	exit, stdout, _ = runTest([]string{"grants", "tail", "--kafka", broker, "--partition", "0", "--offset", "1", "-n", "1"}, nil)
	if lines := parseTail(t, stdout); exit != 0 || len(lines) != 1 || lines[0].Offset != 1 || lines[0].Version != 2 {
		t.Errorf("tail --partition 0 --offset 1 -n 1: exit %d, lines %+v; want the version 2 record", exit, lines)
	}
	// Usage errors.
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"grants", "tail"}, "no brokers: --kafka host:port,... or $REDRAIN_GRANTS_KAFKA"},
		{[]string{"grants"}, "want 'tail' or 'schema'"},
		{[]string{"grants", "tail", "--kafka", broker, "--offset", "1", "--from-beginning"}, "choose one"},
		{[]string{"grants", "tail", "--kafka", broker, "-n", "0"}, "-n 0: at least 1"},
	} {
		if exit, _, stderr := runTest(tc.args, nil); exit != 2 || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, exit, stderr, tc.stderr)
		}
	}
	if exit, _, stderr := runTest([]string{"grants", "tail", "--kafka", broker, "--partition", "5"}, nil); exit != 1 || !strings.Contains(stderr, "no partition 5") {
		t.Errorf("--partition 5: exit %d, stderr %q", exit, stderr)
	}
	if exit, stdout, _ := runTest([]string{"grants", "schema"}, nil); exit != 0 || stdout != schema.GrantProto || !strings.Contains(stdout, "message GrantRecord") {
		t.Errorf("grants schema: exit %d, %d bytes", exit, len(stdout))
	}

	// --follow: the last record, then one written after tail started.
	var out syncBuffer
	c, _, _ := testCLI(nil, "")
	c.stdout = &out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.grants(ctx, []string{"tail", "--kafka", broker, "--partition", "1", "-n", "1", "--follow"})
	}()
	waitFor := func(lines int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); strings.Count(out.String(), "\n") < lines; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("tail --follow printed %q, want %d lines", out.String(), lines)
			}
		}
	}
	waitFor(1)
	send(1, ledger.AppendGrantRecord(nil, []ledger.Grant{g1}))
	waitFor(2)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("tail --follow ended with %v, want nil when interrupted", err)
	}
	if lines := parseTail(t, out.String()); len(lines) != 2 || lines[1].Offset != 2 || lines[1].Grants[0]["act_id"] != json.Number("1") {
		t.Errorf("tail --follow: %+v", lines)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
