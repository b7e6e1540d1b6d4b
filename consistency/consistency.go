// Package consistency is the consistency service (issue 13, item 5): it
// compares what the grant topic issued with what booking booked into the
// store, the journals with the statements, and money in flight (a
// transfer's two halves, withdrawals held), and repairs what differs
// through the booking path.
//
// Three comparisons, per partition and window of journals:
//
//   - issued vs booked (stream.go): every grant of the records a stream
//     journal names ([From, To)) is an entry of its account, or was
//     refused under a fenced lease (rr/fenced/), or its record was parked
//     (rr/parked/); every grant such a journal booked is in one of its
//     records (redeems under lease 0 and moves excepted). A grant issued
//     and not booked is booked with Booker.Book (exactly once by its
//     limit key).
//   - booked vs statements (statements.go): per UTC day the statements'
//     watermarks cover, the journals' postings (closing.Postings) folded
//     and summed per party kind and asset against the stored day
//     aggregates (rr/stmt/day/); a day that differs is rebuilt from the
//     journals in one transaction that rewrites the watermarks it read.
//   - money in flight (flight.go): a transfer's or gift's sender move
//     booked more than Grace ago whose receiver's move is not booked is
//     completed with the same move the spending service books (same key:
//     it books at most once); withdrawals held and not finished after
//     WithdrawBound are listed (the withdrawal's own recovery finishes
//     them).
//
// Check runs them over a window of journals: Continuous (service.go) over
// the journals of the partitions this node books, shortly after they
// commit; Day over one UTC day (the T+1 job, one node per day by a lease
// in Redis).
//
// It never writes accounts or journals itself: every repair of money goes
// through the booking path.
package consistency

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"redrain/ledger"
	"redrain/statement"
	"redrain/storage"
)

// Booker is the booking path the repairs use (booking.Booker).
type Booker interface {
	Book(ctx context.Context, grants []ledger.Grant) ([]byte, error)
	Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error)
}

// Stream reads the grant topic (Kafka: NewKafkaStream).
type Stream interface {
	// Records calls fn with each record of partition p at offsets
	// [from, to), in order.
	Records(ctx context.Context, p int32, from, to int64, fn func(offset int64, value []byte) error) error
	// Release ends a check: what Records keeps between ranges (a
	// partition consumer) is let go.
	Release()
}

// Config wires a checker.
type Config struct {
	DB    *storage.TiKV
	Parts int32
	// Stream is the grant topic; nil skips issued vs booked.
	Stream Stream
	// Statements is the statements' configuration (the split rules);
	// nil skips booked vs statements.
	Statements *statement.Config
	// KeepStatements lists a statements day that differs and never
	// rebuilds it (Statements does not hold the node's rules: the sums
	// compared do not depend on them, a rebuild would).
	KeepStatements bool
	// Booker repairs; nil: mismatches are listed, never repaired.
	Booker Booker
	// Grace is how long after its sender's move a transfer may still
	// miss its receiver's (0: DefaultGrace).
	Grace time.Duration
	// WithdrawBound is how long a withdrawal may stay held or paying
	// (0: DefaultWithdrawBound).
	WithdrawBound time.Duration
	// Window bounds the grant records read and checked at once (0:
	// DefaultWindow).
	Window int
	Now    func() time.Time
}

// Defaults.
const (
	DefaultGrace         = time.Minute
	DefaultWithdrawBound = time.Hour
	DefaultWindow        = 16384
)

// Kinds of mismatch.
const (
	// KindUnbooked: a grant the topic issued, in a record booking passed,
	// that is in no account, not fenced and not parked.
	KindUnbooked = "grant_unbooked"
	// KindUnissued: a grant a stream journal booked that none of its
	// records issued.
	KindUnissued = "grant_unissued"
	// KindStatement: a statements day whose sums per party kind and asset
	// differ from the journals'.
	KindStatement = "statement_day"
	// KindTransfer: a transfer or gift whose receiver's move is missing.
	KindTransfer = "transfer_half"
	// KindWithdrawal: a withdrawal held and not finished after the bound.
	KindWithdrawal = "withdrawal_open"
)

// Kinds lists every kind of mismatch (metrics' labels).
var Kinds = []string{KindUnbooked, KindUnissued, KindStatement, KindTransfer, KindWithdrawal}

// Mismatch is one difference found.
type Mismatch struct {
	Kind      string `json:"kind"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset,omitempty"` // the grant record's
	Day       string `json:"day,omitempty"`    // a statements day
	ActID     uint64 `json:"act_id,omitempty"`
	// Key is the grant's limit key, the transfer's counter account, the
	// withdrawal's id, or the party kind and asset of a statements day.
	Key    string `json:"key"`
	Amount int64  `json:"amount,omitempty"`
	Detail string `json:"detail"`
	// Repaired says a repair landed (or found it done already).
	Repaired bool `json:"repaired"`

	grant *ledger.Grant
	move  *ledger.Move
	day   statement.Day
}

// Report is one check's result.
type Report struct {
	// From and To bound the journals' booking times checked (unix ms; 0:
	// a window of seqs).
	From int64 `json:"from,omitempty"`
	To   int64 `json:"to,omitempty"`
	// Journals, Records and Grants count what was compared: journals
	// read, grant records read from the topic, grants checked against
	// the accounts.
	Journals int `json:"journals"`
	Records  int `json:"records"`
	Grants   int `json:"grants"`
	// Postings counts the journals' postings compared with the
	// statements; Days the days compared, Uncovered those the
	// statements' watermarks do not cover yet (not compared).
	Postings  int `json:"postings"`
	Days      int `json:"days"`
	Uncovered int `json:"uncovered,omitempty"`
	// Transfers counts the senders' moves checked, Withdrawals the open
	// withdrawals.
	Transfers   int        `json:"transfers"`
	Withdrawals int        `json:"withdrawals"`
	Mismatches  []Mismatch `json:"mismatches"`
	Repaired    int        `json:"repaired"`
}

// OK reports a check that found nothing, or repaired everything it found
// that a repair can reach.
func (r *Report) OK() bool {
	for i := range r.Mismatches {
		if !r.Mismatches[i].Repaired {
			return false
		}
	}
	return true
}

// Count is how many mismatches of kind were found.
func (r *Report) Count(kind string) int {
	n := 0
	for i := range r.Mismatches {
		if r.Mismatches[i].Kind == kind {
			n++
		}
	}
	return n
}

func (r *Report) add(m Mismatch) { r.Mismatches = append(r.Mismatches, m) }

// JSON renders the report.
func (r *Report) JSON() []byte {
	b, _ := json.Marshal(r)
	return b
}

// shownMax bounds the mismatches WriteText lists.
const shownMax = 50

// WriteText renders the report for people (a section of reconcile's).
func (r *Report) WriteText(w io.Writer) {
	verdict := "OK"
	if !r.OK() {
		verdict = "MISMATCHES FOUND"
	}
	fmt.Fprintf(w, "  consistency: %s: journals %d, records %d, grants %d, postings %d over %d days (%d not covered yet), transfers %d, open withdrawals %d; mismatches %d, repaired %d\n",
		verdict, r.Journals, r.Records, r.Grants, r.Postings, r.Days, r.Uncovered, r.Transfers, r.Withdrawals, len(r.Mismatches), r.Repaired)
	for i, m := range r.Mismatches {
		if i == shownMax {
			fmt.Fprintf(w, "         ... %d more\n", len(r.Mismatches)-shownMax)
			break
		}
		state := "open"
		if m.Repaired {
			state = "repaired"
		}
		fmt.Fprintf(w, "         - %s (%s): partition %d", m.Kind, state, m.Partition)
		if m.Offset != 0 || m.Kind == KindUnbooked || m.Kind == KindUnissued {
			fmt.Fprintf(w, " offset %d", m.Offset)
		}
		if m.Day != "" {
			fmt.Fprintf(w, " day %s", m.Day)
		}
		if m.ActID != 0 {
			fmt.Fprintf(w, " act %d", m.ActID)
		}
		fmt.Fprintf(w, " %s", m.Key)
		if m.Amount != 0 {
			fmt.Fprintf(w, " amount %d", m.Amount)
		}
		fmt.Fprintf(w, ": %s\n", m.Detail)
	}
}

// Checker compares and repairs.
type Checker struct {
	cfg Config
}

// New returns a checker of cfg.
func New(cfg Config) (*Checker, error) {
	if cfg.DB == nil || cfg.Parts <= 0 {
		return nil, fmt.Errorf("consistency: a store and a partition count are needed")
	}
	cfg.Grace = cmp.Or(max(cfg.Grace, 0), DefaultGrace)
	cfg.WithdrawBound = cmp.Or(max(cfg.WithdrawBound, 0), DefaultWithdrawBound)
	cfg.Window = cmp.Or(max(cfg.Window, 0), DefaultWindow)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg}, nil
}
