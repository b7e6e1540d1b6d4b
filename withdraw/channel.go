package withdraw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Channel pays withdrawals out (a bank, a wallet provider). The
// withdrawal's id is the channel's idempotency key: a Pay of an id the
// channel already has pays nothing more and answers what it did.
type Channel interface {
	// Pay asks the channel to pay p. An error means the answer is
	// unknown (a time-out, a broken connection, a 5xx): the channel may
	// or may not have paid, and only Query tells.
	Pay(ctx context.Context, p Payout) (Answer, error)
	// Query asks what the channel did with payout id: Paid, Refused, or
	// Unknown when it never received it. An error means no answer.
	Query(ctx context.Context, id string) (Answer, error)
}

// Payout is one payment asked of a channel.
type Payout struct {
	ID     string `json:"id"`
	ActID  uint64 `json:"act_id"`
	Amount int64  `json:"amount"` // fen
}

// Outcome is a channel's answer about a payout.
type Outcome string

// Outcomes.
const (
	Paid    Outcome = "paid"
	Refused Outcome = "refused"
	Unknown Outcome = "unknown" // Query only: the channel has no such payout
)

// Answer is a channel's word on a payout.
type Answer struct {
	Outcome Outcome `json:"status"`
	Ref     string  `json:"ref,omitempty"`    // the channel's reference of a paid payout
	Reason  string  `json:"reason,omitempty"` // why it refused
}

// HTTPChannel is a Channel over HTTP:
//
//	POST {base}/pay  {"id","act_id","amount"}
//	     200 {"status":"paid","ref":"..."} | 200 {"status":"refused","reason":"..."}
//	GET  {base}/payouts/{id}
//	     200 {"status":"paid"|"refused",...} | 404 (never received)
//
// Any other answer, and every transport error or time-out, is an unknown
// outcome (an error).
type HTTPChannel struct {
	Base   string       // e.g. http://payout.internal:8080
	Client *http.Client // its Timeout bounds each request
}

// answerBytesMax bounds a channel's answer.
const answerBytesMax = 64 << 10

// NewHTTPChannel returns a channel at base whose requests each take at
// most timeout.
func NewHTTPChannel(base string, timeout time.Duration) *HTTPChannel {
	return &HTTPChannel{Base: base, Client: &http.Client{Timeout: timeout}}
}

// Pay posts p.
func (c *HTTPChannel) Pay(ctx context.Context, p Payout) (Answer, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return Answer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/pay", bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	a, status, err := c.do(req)
	if err != nil {
		return Answer{}, err
	}
	if status != http.StatusOK || (a.Outcome != Paid && a.Outcome != Refused) {
		return Answer{}, fmt.Errorf("channel: pay %s: status %d, outcome %q", p.ID, status, a.Outcome)
	}
	return a, nil
}

// Query gets payout id.
func (c *HTTPChannel) Query(ctx context.Context, id string) (Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/payouts/"+url.PathEscape(id), nil)
	if err != nil {
		return Answer{}, err
	}
	a, status, err := c.do(req)
	switch {
	case err != nil:
		return Answer{}, err
	case status == http.StatusNotFound:
		return Answer{Outcome: Unknown}, nil
	case status != http.StatusOK || (a.Outcome != Paid && a.Outcome != Refused):
		return Answer{}, fmt.Errorf("channel: query %s: status %d, outcome %q", id, status, a.Outcome)
	}
	return a, nil
}

func (c *HTTPChannel) do(req *http.Request) (Answer, int, error) {
	resp, err := c.Client.Do(req)
	if err != nil {
		return Answer{}, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, answerBytesMax+1))
	if err != nil {
		return Answer{}, 0, err
	}
	if len(raw) > answerBytesMax {
		return Answer{}, 0, errors.New("channel: answer too large")
	}
	var a Answer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &a); err != nil {
			return Answer{}, 0, fmt.Errorf("channel: answer %s: %w", strconv.Quote(string(raw)), err)
		}
	}
	return a, resp.StatusCode, nil
}
