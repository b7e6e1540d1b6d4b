package lines

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"

	"redrain/protect"
)

// ErrInvalid wraps every reason Validate refuses a line's configuration.
var ErrInvalid = errors.New("lines: invalid business line")

// Limits and defaults of a line's configuration.
const (
	// LinesMax bounds the business lines one campaign file configures.
	LinesMax = 64
	rateMax  = 1e6
	burstMax = 1_000_000
	// ConcurrencyMax bounds the pulls in flight to one line.
	ConcurrencyMax = 256
	// ConcurrencyDefault is the pulls in flight to a line that names none.
	ConcurrencyDefault = 4
	// WindowDefault is the dedupe window of a line that names none.
	WindowDefault = 10 * time.Second
	windowMax     = 24 * time.Hour
	// TimeoutDefault bounds one pull request of a line that names none.
	TimeoutDefault = 2 * time.Second
	timeoutMax     = time.Minute
)

// Line is one business line as the campaign file configures it
// ("business_lines": [...]). Zero optional fields take their defaults in
// Validate.
type Line struct {
	// ID names the line in notices, keys and metrics: 1..32 bytes of
	// [a-z0-9.-]. Invariant (Validate): unique among the lines.
	ID string `json:"id"`
	// PullURL is where a user's assets are read: GET
	// {pull_url}?app_id=&user_id=. An absolute http or https URL without a
	// query or fragment.
	PullURL string `json:"pull_url"`
	// Rate is the pull requests a second this line accepts (retries
	// included). Invariant: 0 < Rate <= 1e6.
	Rate float64 `json:"rate"`
	// Burst is how many requests may go at once after an idle spell
	// (0: max(1, Rate)). Invariant: 1..1e6 after defaults.
	Burst int `json:"burst,omitempty"`
	// Concurrency bounds the pulls in flight to this line (0:
	// ConcurrencyDefault). Invariant: 1..ConcurrencyMax.
	Concurrency int `json:"concurrency,omitempty"`
	// WindowMs is the dedupe window: at most one pull of a (line, user)
	// starts per window; notices inside it coalesce into one pull at its
	// end (0: WindowDefault). Invariant: 1 ms..24 h.
	WindowMs int64 `json:"window_ms,omitempty"`
	// TimeoutMs bounds one pull request, connection to last byte (0:
	// TimeoutDefault). Invariant: 1 ms..1 min.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
}

// Window is the line's dedupe window.
func (l *Line) Window() time.Duration { return time.Duration(l.WindowMs) * time.Millisecond }

// Timeout bounds one pull request.
func (l *Line) Timeout() time.Duration { return time.Duration(l.TimeoutMs) * time.Millisecond }

// Validate checks every line and fills in the defaults of the optional
// fields. Every error wraps ErrInvalid and names the line and the field.
// No lines at all is valid: the node then serves none.
func Validate(ls []Line) error {
	if len(ls) > LinesMax {
		return fmt.Errorf("%w: %d business lines, more than %d", ErrInvalid, len(ls), LinesMax)
	}
	seen := make(map[string]bool, len(ls))
	for i := range ls {
		l := &ls[i]
		if err := l.validate(); err != nil {
			return fmt.Errorf("%w: business_lines[%d] %q: %v", ErrInvalid, i, l.ID, err)
		}
		if seen[l.ID] {
			return fmt.Errorf("%w: business_lines[%d] %q: id listed twice", ErrInvalid, i, l.ID)
		}
		seen[l.ID] = true
	}
	return nil
}

func (l *Line) validate() error {
	if !ValidID(l.ID) {
		return fmt.Errorf("id: want 1 to %d bytes of a-z, 0-9, '.' and '-'", protect.LineIDLenMax)
	}
	u, err := url.Parse(l.PullURL)
	switch {
	case err != nil:
		return fmt.Errorf("pull_url: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("pull_url %q: want an http or https URL", l.PullURL)
	case u.Host == "":
		return fmt.Errorf("pull_url %q: no host", l.PullURL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("pull_url %q: no query or fragment (app_id and user_id are added)", l.PullURL)
	case u.User != nil:
		return fmt.Errorf("pull_url: no user information in the URL")
	}
	if math.IsNaN(l.Rate) || l.Rate <= 0 || l.Rate > rateMax {
		return fmt.Errorf("rate %g: want more than 0 and at most %g pulls a second", l.Rate, float64(rateMax))
	}
	if l.Burst == 0 {
		l.Burst = int(max(1, math.Floor(l.Rate)))
	}
	if l.Burst < 1 || l.Burst > burstMax {
		return fmt.Errorf("burst %d: want 1 to %d", l.Burst, burstMax)
	}
	if l.Concurrency == 0 {
		l.Concurrency = ConcurrencyDefault
	}
	if l.Concurrency < 1 || l.Concurrency > ConcurrencyMax {
		return fmt.Errorf("concurrency %d: want 1 to %d", l.Concurrency, ConcurrencyMax)
	}
	if l.WindowMs == 0 {
		l.WindowMs = WindowDefault.Milliseconds()
	}
	if l.WindowMs < 1 || l.Window() > windowMax {
		return fmt.Errorf("window_ms %d: want 1 to %d", l.WindowMs, windowMax.Milliseconds())
	}
	if l.TimeoutMs == 0 {
		l.TimeoutMs = TimeoutDefault.Milliseconds()
	}
	if l.TimeoutMs < 1 || l.Timeout() > timeoutMax {
		return fmt.Errorf("timeout_ms %d: want 1 to %d", l.TimeoutMs, timeoutMax.Milliseconds())
	}
	return nil
}

// ValidID reports whether id may name a line: protect.ValidLineID, the
// rule the operator's switches check too.
func ValidID(id string) bool { return protect.ValidLineID(id) }
