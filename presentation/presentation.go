// Package presentation owns the wallet's presentation: the entry slots a
// wallet shows (which assets and business lines, in what order, with
// their names, copy, links and icons) as an operator writes them (a
// Document, parsed strictly and validated), compiled into the JSON array
// a wallet answer carries (Version), and the value a node serves them
// from (Presentation: the version live for everyone and a canary's for
// its act_ids, swapped whole through one atomic pointer).
//
// It does no I/O and holds no clock: the configuration store versions the
// documents (configstore's document space, under DocumentID), the admin
// API validates them with Parse before storing, and the node compiles
// each snapshot's versions and hands them to Set.
package presentation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"redrain/ledger"
)

// DocumentID is the presentation's id in the configuration store's
// document space.
const DocumentID = "presentation"

var (
	// ErrMalformed wraps a document that is not the JSON the format
	// describes: bad syntax, an unknown field, a wrong type, trailing data.
	ErrMalformed = errors.New("presentation: malformed")
	// ErrInvalid wraps a document that decodes but breaks a rule: a
	// missing or duplicate slot, a bad asset, line or URL, a text too long.
	ErrInvalid = errors.New("presentation: invalid")
)

// Limits. A wallet answer carries every shown slot on each entry, so the
// document stays small.
const (
	SlotsMax     = 32
	idBytesMax   = 64
	nameRunesMax = 32
	copyRunesMax = 200
	urlBytesMax  = 1024
)

// Document is the presentation as an operator writes it: the wallet's
// entry slots, in the order the wallet shows them.
type Document struct {
	Slots []Slot `json:"slots"`
}

// Slot is one entry of the wallet. It shows exactly one of an asset (or a
// family of them) and a business line.
type Slot struct {
	// ID names the slot for the wallet's client: 1-64 of [A-Za-z0-9._-],
	// unique in the document.
	ID string `json:"id"`
	// Asset is "cash", "coin:{currency}", "item:{template}", or a whole
	// family: "coin:*", "item:*".
	Asset string `json:"asset,omitempty"`
	// Line is a business line's id (1-64 of [A-Za-z0-9._-]).
	Line string `json:"line,omitempty"`
	// Name is the slot's title, Copy the line of text under it.
	Name string `json:"name"`
	Copy string `json:"copy,omitempty"`
	// Link and Icon are absolute https URLs.
	Link string `json:"link,omitempty"`
	Icon string `json:"icon,omitempty"`
	// Hidden keeps the slot in the configuration without showing it.
	Hidden bool `json:"hidden,omitempty"`
}

// Parse decodes a document strictly (unknown fields, trailing data and
// wrong types are ErrMalformed) and validates it (ErrInvalid, the message
// naming the slot and the rule).
func Parse(raw []byte) (*Document, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrMalformed)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Validate checks every rule of the format.
func (d *Document) Validate() error {
	switch {
	case len(d.Slots) == 0:
		return fmt.Errorf("%w: no slots; a wallet shows at least one (hide a slot with \"hidden\")", ErrInvalid)
	case len(d.Slots) > SlotsMax:
		return fmt.Errorf("%w: %d slots, at most %d", ErrInvalid, len(d.Slots), SlotsMax)
	}
	ids := make(map[string]int, len(d.Slots))
	shows := make(map[string]int, len(d.Slots))
	for i := range d.Slots {
		s := &d.Slots[i]
		if err := s.validate(); err != nil {
			return fmt.Errorf("%w: slots[%d] (%q): %v", ErrInvalid, i, s.ID, err)
		}
		if j, ok := ids[s.ID]; ok {
			return fmt.Errorf("%w: slots[%d]: id %q is slots[%d]'s too", ErrInvalid, i, s.ID, j)
		}
		ids[s.ID] = i
		what := "asset " + s.Asset
		if s.Line != "" {
			what = "line " + s.Line
		}
		if j, ok := shows[what]; ok {
			return fmt.Errorf("%w: slots[%d] (%q): %s is shown by slots[%d] already", ErrInvalid, i, s.ID, what, j)
		}
		shows[what] = i
	}
	return nil
}

func (s *Slot) validate() error {
	if !validID(s.ID, true) {
		return fmt.Errorf("id %q: want 1-%d of [A-Za-z0-9._-]", s.ID, idBytesMax)
	}
	switch {
	case (s.Asset == "") == (s.Line == ""):
		return errors.New(`want exactly one of "asset" and "line"`)
	case s.Asset != "":
		if err := checkAsset(s.Asset); err != nil {
			return err
		}
	case !validID(s.Line, true):
		return fmt.Errorf("line %q: want 1-%d of [A-Za-z0-9._-]", s.Line, idBytesMax)
	}
	if err := checkText("name", s.Name, 1, nameRunesMax); err != nil {
		return err
	}
	if err := checkText("copy", s.Copy, 0, copyRunesMax); err != nil {
		return err
	}
	if err := checkURL("link", s.Link); err != nil {
		return err
	}
	return checkURL("icon", s.Icon)
}

// checkAsset accepts what booking books ("cash", "coin:{currency}",
// "item:{template}", currency and template as campaign's award ids) and a
// kind's wildcard.
func checkAsset(a string) error {
	kind, rest, _ := strings.Cut(a, ":")
	switch {
	case a == string(ledger.AssetCash):
		return nil
	case (kind == "coin" || kind == "item") && (rest == "*" || validID(rest, false)):
		return nil
	}
	return fmt.Errorf(`asset %q: want "cash", "coin:{currency}", "item:{template}", "coin:*" or "item:*"`, a)
}

// validID reports whether s is 1-64 of [A-Za-z0-9.-], and '_' when
// underscore (campaign's award ids hold no '_').
func validID(s string, underscore bool) bool {
	if len(s) == 0 || len(s) > idBytesMax {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' && underscore) {
			return false
		}
	}
	return true
}

// checkText bounds a text in characters and refuses invalid UTF-8 and
// control characters (a line break included: a slot's text is one line).
func checkText(what, s string, runesMin, runesMax int) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not valid UTF-8", what)
	}
	if n := utf8.RuneCountInString(s); n < runesMin || n > runesMax {
		return fmt.Errorf("%s of %d characters, want %d-%d", what, n, runesMin, runesMax)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%s: control character %q at byte %d", what, s[i], i)
	}
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%s %q: leading or trailing space", what, s)
	}
	return nil
}

// checkURL accepts an empty URL or an absolute https URL of printable
// ASCII (anything else percent-encoded) with a host and no user info.
func checkURL(what, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > urlBytesMax {
		return fmt.Errorf("%s of %d bytes, at most %d", what, len(s), urlBytesMax)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%s %q: byte %d is not printable ASCII (percent-encode it)", what, s, i)
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %v", what, err)
	case u.Scheme != "https" || u.Opaque != "":
		return fmt.Errorf("%s %q: want an https URL", what, s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%s %q: no host", what, s)
	case u.User != nil:
		return fmt.Errorf("%s %q: user info is not allowed", what, s)
	}
	return nil
}

// Version is one compiled presentation version: immutable.
type Version struct {
	Version uint64
	// slots is the JSON array of the shown slots, in order, without their
	// hidden flag: what a wallet answer carries.
	slots json.RawMessage
}

// Compile parses and validates body and encodes the array of its shown
// slots once, for every wallet answer of version.
func Compile(body []byte, version uint64) (*Version, error) {
	d, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("presentation version %d: %w", version, err)
	}
	shown := make([]Slot, 0, len(d.Slots))
	for _, s := range d.Slots {
		if !s.Hidden {
			shown = append(shown, s)
		}
	}
	slots, err := json.Marshal(shown)
	if err != nil {
		return nil, err
	}
	return &Version{Version: version, slots: slots}, nil
}

// Slots returns the version's encoded array (see Presentation.For).
func (v *Version) Slots() json.RawMessage { return clip(v.slots) }

// noSlots is what For answers while nothing is published to a user.
var noSlots = json.RawMessage("[]")

// Presentation is what a node serves: the live version and, during a
// canary, the canary version for its act_ids. The zero value serves
// nothing (an empty array, version 0). Set swaps a whole state in; For
// reads one without a lock.
type Presentation struct {
	state atomic.Pointer[served]
}

// served is one state of a Presentation. Invariant: canaryUsers is empty
// when canary is nil; nothing in it changes once stored.
type served struct {
	live, canary *Version
	canaryUsers  map[uint64]struct{}
}

// Set serves live (nil: nothing published to all) to everyone, and canary
// (nil: none) instead to canaryUsers. A canary without users is a caller's
// bug: it is served to nobody.
func (p *Presentation) Set(live, canary *Version, canaryUsers []uint64) {
	s := &served{live: live}
	if canary != nil && len(canaryUsers) > 0 {
		s.canary = canary
		s.canaryUsers = make(map[uint64]struct{}, len(canaryUsers))
		for _, id := range canaryUsers {
			s.canaryUsers[id] = struct{}{}
		}
	}
	p.state.Store(s)
}

// For returns the wallet's slots for actID, as the JSON array to write
// into its answer, and their version: the canary's for an act_id on its
// list, else the live one's; "[]" and 0 when none is published to it. It
// takes no lock and allocates nothing; the array is shared by every
// caller and must not be changed (its capacity is its length, so an
// append copies it).
func (p *Presentation) For(actID uint64) (slots json.RawMessage, version uint64) {
	s := p.state.Load()
	if s == nil {
		return clip(noSlots), 0
	}
	v := s.live
	if s.canary != nil {
		if _, ok := s.canaryUsers[actID]; ok {
			v = s.canary
		}
	}
	if v == nil {
		return clip(noSlots), 0
	}
	return clip(v.slots), v.Version
}

// Served returns the versions served: live to everyone and the canary's
// (0: none).
func (p *Presentation) Served() (live, canary uint64) {
	s := p.state.Load()
	if s == nil {
		return 0, 0
	}
	if s.live != nil {
		live = s.live.Version
	}
	if s.canary != nil {
		canary = s.canary.Version
	}
	return live, canary
}

func clip(b json.RawMessage) json.RawMessage { return b[:len(b):len(b)] }
