package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"redrain/booking"
	"redrain/grant"
	"redrain/ledger"
	"redrain/withdraw"
)

// WithdrawConfig is a node's withdrawal rules and payout channels (redrain
// serve --payout-channel, --payout-timeout, --withdraw-min, --withdraw-max).
type WithdrawConfig struct {
	// Channels are the payout channels by name: the base URL of each
	// (withdraw.HTTPChannel). None: every withdrawal is unknown_channel.
	Channels map[string]string
	// Timeout bounds one request to a channel (0: 5 s).
	Timeout time.Duration
	// Min and Max bound one withdrawal in fen (0: 100 and 5,000,000).
	Min, Max int64
	// Ledger, when set, lists users' outstanding packets and books
	// withdrawals (a withdrawtest.Ledger: tests and the benchmark harness).
	// Unset, the node's own (withdrawLedger).
	Ledger WithdrawLedger
}

// WithdrawLedger is what withdrawals book through.
type WithdrawLedger interface {
	withdraw.Packets
	withdraw.Booker
	withdraw.Mover
}

// Defaults of WithdrawConfig.
const (
	payoutTimeoutDefault = 5 * time.Second
	withdrawMinDefault   = 100       // fen: ¥1
	withdrawMaxDefault   = 5_000_000 // fen: ¥50,000
)

// ParsePayoutChannel reads a --payout-channel value, name=url.
func ParsePayoutChannel(s string) (name, url string, err error) {
	name, url, ok := strings.Cut(s, "=")
	if !ok || name == "" || !(strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://")) {
		return "", "", fmt.Errorf("payout channel %q: want name=http(s)://host[:port][/path]", s)
	}
	return name, strings.TrimSuffix(url, "/"), nil
}

// withdrawLedger is what this node's withdrawals book through: a
// configured Ledger (tests), else the grant path's Outstanding with
// booking's Book and Move.
func (n *Node) withdrawLedger() WithdrawLedger {
	if l := n.cfg.Withdraw.Ledger; l != nil {
		return l
	}
	if n.grants == nil || n.booker == nil {
		return nil
	}
	return nodeLedger{n.grants, n.booker}
}

// nodeLedger is a node's WithdrawLedger: a user's outstanding packets from
// the grant path, booked and moved by booking.
type nodeLedger struct {
	grants *grant.Admission
	booker *booking.Booker
}

func (l nodeLedger) Outstanding(ctx context.Context, actID uint64) ([]ledger.Grant, error) {
	return l.grants.Outstanding(ctx, actID)
}

func (l nodeLedger) Book(ctx context.Context, grants []ledger.Grant) ([]byte, error) {
	return l.booker.Book(ctx, grants)
}

func (l nodeLedger) Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error) {
	return l.booker.Move(ctx, moves)
}

// startWithdrawals builds the node's withdrawal service (nil: the routes
// answer 503) and its recovery loop runs in the node's background.
func (n *Node) startWithdrawals() error {
	l := n.withdrawLedger()
	if l == nil {
		n.log.Info("withdrawals: off on a node that neither grants nor books")
		return nil
	}
	c := n.cfg.Withdraw
	if c.Timeout <= 0 {
		c.Timeout = payoutTimeoutDefault
	}
	if c.Min == 0 {
		c.Min = withdrawMinDefault
	}
	if c.Max == 0 {
		c.Max = withdrawMaxDefault
	}
	channels := map[string]withdraw.Channel{}
	for name, url := range c.Channels {
		channels[name] = withdraw.NewHTTPChannel(url, c.Timeout)
	}
	s, err := withdraw.New(n.tikv, l, l, l, withdraw.Config{AmountMin: c.Min, AmountMax: c.Max, Channels: channels,
		Node: fmt.Sprintf("%s/%d", n.ID, n.Incarnation), Log: n.log, Metrics: n.Metrics})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.withdrawals = s
	return nil
}
