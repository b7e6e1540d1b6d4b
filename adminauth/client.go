package adminauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ResponseBytesMax bounds the body of an admin answer that a Client reads
// (an audit of a large store is the largest).
const ResponseBytesMax = 64 << 20

// ErrUnreachable wraps the failures of a Client to get an answer at all
// (connection refused, timeout, a connection cut mid-answer), as opposed
// to an answer that is an error (*APIError) or cannot be decoded.
var ErrUnreachable = errors.New("adminauth: no answer")

// APIError is a non-2xx answer of the admin API.
type APIError struct {
	Status  int    // HTTP status.
	Code    string // The answer's "code"; empty when the body is not an error object.
	Message string // The answer's "message", or the start of the body when it is not an error object.
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("status %d: %s", e.Status, e.Message)
	}
	return e.Code + ": " + e.Message
}

// Client sends signed requests to one node's admin API.
type Client struct {
	// Target is the node's base URL, such as http://127.0.0.1:8080.
	Target string
	Signer *Signer
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client
}

// Do sends a signed request to path (which starts with '/' and is already
// percent-encoded: see ActivityPath) with query, and decodes a 2xx answer's
// JSON into out unless out is nil (a *json.RawMessage gets the body as it
// is, a *[]byte too without being decoded: a CSV answer). body is sent as JSON: a []byte or json.RawMessage as it is, nil as
// no body, anything else through json.Marshal. A non-2xx answer is an
// *APIError; no answer at all wraps ErrUnreachable.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	base, err := url.Parse(strings.TrimSuffix(c.Target, "/"))
	switch {
	case err != nil:
		return fmt.Errorf("adminauth: target %q: %w", c.Target, err)
	case base.Scheme != "http" && base.Scheme != "https", base.Host == "", base.Path != "", base.RawQuery != "":
		return fmt.Errorf("adminauth: target %q is not an http or https base URL (scheme://host:port)", c.Target)
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("adminauth: path %q does not start with '/'", path)
	}
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case json.RawMessage:
		raw = b
	default:
		if raw, err = json.Marshal(body); err != nil {
			return fmt.Errorf("adminauth: %s %s: encode body: %w", method, path, err)
		}
	}
	u := base.Scheme + "://" + base.Host + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("adminauth: %s %s: %w", method, path, err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Signer == nil {
		return fmt.Errorf("adminauth: %s %s: client has no signer", method, path)
	}
	if err := c.Signer.Sign(req, raw); err != nil {
		return err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, u, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, ResponseBytesMax+1))
	if err != nil {
		return fmt.Errorf("%w: %s %s: read answer: %w", ErrUnreachable, method, u, err)
	}
	if len(answer) > ResponseBytesMax {
		return fmt.Errorf("adminauth: %s %s: answer is over %d bytes", method, u, ResponseBytesMax)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp.StatusCode, answer)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = answer
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("adminauth: %s %s: decode answer: %w: %.200q", method, u, err, answer)
	}
	return nil
}

// apiError builds the *APIError of a non-2xx answer.
func apiError(status int, body []byte) *APIError {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return &APIError{Status: status, Code: e.Code, Message: e.Message}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &APIError{Status: status, Message: msg}
}
