package lines

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
	"unicode/utf8"
)

// What a line's answer may hold.
const (
	// AnswerBytesMax bounds the body read from a line; a longer one is a
	// failed pull (not retried: the line would answer it again).
	AnswerBytesMax = 64 << 10
	// AssetsMax bounds the assets of one user on one line.
	AssetsMax    = 256
	assetIDMax   = 64
	assetNameMax = 128
)

// The line's answer: {"assets":[{"id":"gold","name":"Gold","amount":120}]}.
type answer struct {
	Assets *[]Asset `json:"assets"`
}

// pullError is a failed pull attempt; retry says whether another attempt
// may succeed (the line timed out, was unreachable, or answered 5xx/429).
type pullError struct {
	retry bool
	err   error
}

func (e *pullError) Error() string { return e.err.Error() }
func (e *pullError) Unwrap() error { return e.err }

func retryable(err error) bool {
	var pe *pullError
	return errors.As(err, &pe) && pe.retry
}

// pullOnce asks the line for user's assets once, within the line's
// timeout.
func pullOnce(ctx context.Context, client *http.Client, l *Line, app uint32, user string) ([]Asset, error) {
	ctx, cancel := context.WithTimeout(ctx, l.Timeout())
	defer cancel()
	q := url.Values{"app_id": {strconv.FormatUint(uint64(app), 10)}, "user_id": {user}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.PullURL+"?"+q.Encode(), nil)
	if err != nil {
		return nil, &pullError{err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// Unreachable, refused, or past the timeout: a later try may do.
		return nil, &pullError{retry: true, err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, AnswerBytesMax+1))
	switch {
	case err != nil:
		return nil, &pullError{retry: true, err: fmt.Errorf("read answer: %w", err)}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, &pullError{retry: true, err: fmt.Errorf("line answered %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return nil, &pullError{err: fmt.Errorf("line answered %d", resp.StatusCode)}
	case len(body) > AnswerBytesMax:
		return nil, &pullError{err: fmt.Errorf("answer longer than %d bytes", AnswerBytesMax)}
	}
	assets, err := ParseAnswer(body)
	if err != nil {
		return nil, &pullError{err: err}
	}
	return assets, nil
}

// ParseAnswer reads a line's answer strictly: one object with "assets", an
// array of at most AssetsMax objects {"id", "name", "amount"} (id 1..64
// bytes of UTF-8 and unique, name at most 128, amount an integer that fits
// int64), no unknown fields, nothing after it.
func ParseAnswer(body []byte) ([]Asset, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var a answer
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("answer: data after the object")
	}
	if a.Assets == nil {
		return nil, errors.New(`answer: no "assets"`)
	}
	assets := *a.Assets
	if len(assets) > AssetsMax {
		return nil, fmt.Errorf("answer: %d assets, more than %d", len(assets), AssetsMax)
	}
	seen := make(map[string]bool, len(assets))
	for i, as := range assets {
		switch {
		case len(as.ID) == 0 || len(as.ID) > assetIDMax || !utf8.ValidString(as.ID):
			return nil, fmt.Errorf("answer: assets[%d].id %q: want 1 to %d bytes of UTF-8", i, truncate(as.ID, assetIDMax), assetIDMax)
		case len(as.Name) > assetNameMax || !utf8.ValidString(as.Name):
			return nil, fmt.Errorf("answer: assets[%d].name: want at most %d bytes of UTF-8", i, assetNameMax)
		case seen[as.ID]:
			return nil, fmt.Errorf("answer: assets[%d].id %q listed twice", i, as.ID)
		}
		seen[as.ID] = true
	}
	if assets == nil {
		assets = []Asset{}
	}
	return assets, nil
}
