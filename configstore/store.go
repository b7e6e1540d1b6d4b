// Package configstore keeps redrain's configuration in TiKV: every PUT of an
// activity's configuration is a new immutable version kept forever, a head
// per activity says which version is live for everyone and which one is
// served to a canary set of users, and one change counter (seq) lets every
// node notice any change by polling a single key. The Watcher does that
// polling and hands each new Snapshot to the node.
//
// Node-wide documents (the wallet's presentation) are versioned the same
// way in a space of their own (Store.Documents): the same versions, heads,
// canaries, publish and rollback, under rr/cfg/doc/ instead of
// rr/cfg/act/, and in every Snapshot beside the activities.
//
// The store treats a configuration as an opaque JSON document: validating
// and compiling it is the campaign package's job, done before Put and again
// in the node's Apply. It must never interpret a body, and never change a
// version once written.
//
// Errors (match with errors.Is, never by text):
//
//	ErrNotFound             no such activity, version or switches document
//	ErrInvalid              bad input (id, body, canary, author, note); nothing changed
//	ErrCorrupt              a stored record breaks an invariant; nothing changed
//	storage.ErrConflict     still conflicting after mutateAttemptsMax attempts; nothing changed
//	storage.ErrUnavailable  TiKV unreachable; the caller may retry
package configstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"redrain/storage"
)

var (
	// ErrNotFound is returned for an unknown activity, version or a
	// switches document that was never written.
	ErrNotFound = errors.New("configstore: not found")
	// ErrInvalid wraps every rejected input; the store is unchanged.
	ErrInvalid = errors.New("configstore: invalid")
	// ErrCorrupt is returned when a stored record breaks one of the
	// invariants below; the operation changes nothing.
	ErrCorrupt = errors.New("configstore: corrupt record")
)

// Limits. A head is rewritten by every mutation of its activity and a TiKV
// entry should stay well under the 6 MiB transaction entry limit, so
// everything a head holds is bounded.
const (
	// historyMax bounds Head.History: older events are dropped (the
	// versions themselves are kept forever).
	historyMax = 500
	// bodyBytesMax bounds a version's body and the switches document.
	bodyBytesMax = 1 << 20
	// canaryActIDsMax and canaryWhitelistMax bound a canary.
	canaryActIDsMax    = 10_000
	canaryWhitelistMax = 10_000
	// textBytesMax bounds a whitelist entry and By; noteBytesMax a Note.
	textBytesMax = 256
	noteBytesMax = 1024
	// activityBytesMax bounds an activity id (the campaign's own limit).
	activityBytesMax = 64
	// mutateAttemptsMax bounds the retries of a mutation that lost a write
	// conflict; every mutation writes seq, so all of them contend.
	mutateAttemptsMax = 32
	retryBackoffMin   = time.Millisecond
	retryBackoffMax   = 50 * time.Millisecond
)

// History actions.
const (
	ActionPut           = "put"
	ActionPublishCanary = "publish_canary"
	ActionPublish       = "publish"
	ActionRollback      = "rollback"
)

// Version is one immutable configuration of an activity.
type Version struct {
	Activity string `json:"activity"`
	// Version counts the activity's puts from 1.
	Version uint64 `json:"version"`
	// Body is the document as given to Put in canonical form: compact,
	// with <, > and & escaped (what json.Marshal writes), so that it is
	// byte-identical wherever it is read from, the store or a cache file.
	Body      json.RawMessage `json:"body"`
	CreatedAt time.Time       `json:"created_at"`
	// By is the admin key id that put it.
	By   string `json:"by"`
	Note string `json:"note,omitempty"`
}

// VersionInfo is a Version without its body.
type VersionInfo struct {
	Activity  string    `json:"activity"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	By        string    `json:"by"`
	Note      string    `json:"note,omitempty"`
	// BodyBytes is the length of the stored body.
	BodyBytes int `json:"body_bytes"`
}

// Head is an activity's current state.
type Head struct {
	Activity string `json:"activity"`
	// Latest is the newest version. Invariant: versions 1..Latest exist.
	Latest uint64 `json:"latest"`
	// Live is the version served to everyone; 0 = nothing published.
	// Invariant: Live <= Latest.
	Live uint64 `json:"live"`
	// Canary, when set, is served to its act ids instead of Live.
	// Invariant: 1 <= Canary.Version <= Latest and len(Canary.ActIDs) > 0.
	Canary *Canary `json:"canary,omitempty"`
	// History is the last historyMax events, oldest first.
	History []Event `json:"history"`
}

// Canary is a version served to a set of users ahead of everyone.
type Canary struct {
	Version uint64 `json:"version"`
	// Whitelist is the "app:user" entries the operator gave; ActIDs are
	// what the caller resolved them to, and what a node matches on.
	Whitelist []string `json:"whitelist,omitempty"`
	ActIDs    []uint64 `json:"act_ids"`
}

// Event is one mutation of a head.
type Event struct {
	At      time.Time `json:"at"`
	Action  string    `json:"action"`
	Version uint64    `json:"version"`
	By      string    `json:"by"`
}

// switchesRecord is the value at storage.CfgSwitchesKey.
type switchesRecord struct {
	Body json.RawMessage `json:"body"`
	At   time.Time       `json:"at"`
	By   string          `json:"by"`
}

// Store reads and writes configuration versions in TiKV: those of the
// activities, or (Documents) those of the node-wide documents.
type Store struct {
	kv    *storage.TiKV
	now   func() time.Time
	space space
}

// space is a family of versioned ids under one key prefix. Its ids are
// checked alike (checkID) and its records keep the field names of
// an activity's (Head.Activity holds a document's id).
type space struct {
	prefix []byte
	noun   string // in errors: "activity" or "document"
}

var (
	activities = space{prefix: storage.CfgActivityPrefix, noun: "activity"}
	documents  = space{prefix: storage.CfgDocumentPrefix, noun: "document"}
)

func (sp space) headKey(id string) []byte { return storage.CfgHeadKeyIn(sp.prefix, id) }

func (sp space) versionKey(id string, v uint64) []byte {
	return storage.CfgVersionKeyIn(sp.prefix, id, v)
}

// New returns the Store of the activities over kv; now stamps versions and
// events (time.Now when nil).
func New(kv *storage.TiKV, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{kv: kv, now: now, space: activities}
}

// Documents returns the store of the node-wide documents over the same kv:
// every method of Store (Put, Publish, Rollback, Version, Versions, Head,
// List) works on them as on activities, with a document's id where an
// activity's goes. Seq, Snapshot and the switches are the store's whole
// and the same from either.
func (s *Store) Documents() *Store {
	return &Store{kv: s.kv, now: s.now, space: documents}
}

// Put stores body as the activity's next version and returns its number.
// The body must be one JSON value of at most bodyBytesMax bytes; it is
// stored in canonical form (see Version.Body). Nothing is published.
func (s *Store) Put(ctx context.Context, activity string, body []byte, by, note string) (uint64, error) {
	if err := s.space.checkID(activity); err != nil {
		return 0, err
	}
	if err := checkText("by", by, 1, textBytesMax); err != nil {
		return 0, err
	}
	if err := checkText("note", note, 0, noteBytesMax); err != nil {
		return 0, err
	}
	canon, err := canonical(body)
	if err != nil {
		return 0, err
	}
	var version uint64
	err = s.mutate(ctx, func(txn storage.Txn) error {
		h, err := s.space.getHead(ctx, txn, activity)
		if errors.Is(err, ErrNotFound) {
			h, err = &Head{Activity: activity}, nil
		}
		if err != nil {
			return err
		}
		version = h.Latest + 1
		key := s.space.versionKey(activity, version)
		// Versions are immutable: a version key above Latest means the head
		// and its versions disagree, and writing would lose a version.
		old, err := storage.Get(ctx, txn, key)
		if err != nil {
			return err
		}
		if old != nil {
			return fmt.Errorf("%w: %s exists above the head's latest %d", ErrCorrupt, key, h.Latest)
		}
		at := s.now()
		v, err := json.Marshal(&Version{Activity: activity, Version: version, Body: canon, CreatedAt: at, By: by, Note: note})
		if err != nil {
			return err
		}
		if err := txn.Set(key, v); err != nil {
			return err
		}
		h.Latest = version
		h.record(Event{At: at, Action: ActionPut, Version: version, By: by})
		return s.space.putHead(txn, h)
	})
	if err != nil {
		return 0, fmt.Errorf("configstore: put %s: %w", activity, err)
	}
	return version, nil
}

// Publish makes version v of activity live. With canary nil, v becomes Live
// for everyone and any canary is cleared (action "publish"). With a canary,
// v is served to canary.ActIDs while everyone else keeps Live (action
// "publish_canary"); canary.Version must be 0 or v. An unknown activity or
// version is ErrNotFound, a canary without act ids ErrInvalid; either
// changes nothing.
func (s *Store) Publish(ctx context.Context, activity string, v uint64, canary *Canary, by string) (*Head, error) {
	if err := s.space.checkID(activity); err != nil {
		return nil, err
	}
	if err := checkText("by", by, 1, textBytesMax); err != nil {
		return nil, err
	}
	var c *Canary
	if canary != nil {
		var err error
		if c, err = checkCanary(canary, v); err != nil {
			return nil, err
		}
	}
	head, err := s.setLive(ctx, activity, v, by, func(h *Head) (string, error) {
		if c != nil {
			h.Canary = c
			return ActionPublishCanary, nil
		}
		h.Live, h.Canary = v, nil
		return ActionPublish, nil
	})
	if err != nil {
		return nil, fmt.Errorf("configstore: publish %s v%d: %w", activity, v, err)
	}
	return head, nil
}

// Rollback makes version v Live for everyone and clears any canary (action
// "rollback"). v may be any existing version other than the live one,
// older or newer: "roll back" names the intent (undo the last publish),
// not a direction. Rolling back to the live version is ErrInvalid, an
// unknown one ErrNotFound; either changes nothing.
func (s *Store) Rollback(ctx context.Context, activity string, v uint64, by string) (*Head, error) {
	if err := s.space.checkID(activity); err != nil {
		return nil, err
	}
	if err := checkText("by", by, 1, textBytesMax); err != nil {
		return nil, err
	}
	head, err := s.setLive(ctx, activity, v, by, func(h *Head) (string, error) {
		if h.Live == v {
			return "", fmt.Errorf("%w: version %d is already live", ErrInvalid, v)
		}
		h.Live, h.Canary = v, nil
		return ActionRollback, nil
	})
	if err != nil {
		return nil, fmt.Errorf("configstore: rollback %s to v%d: %w", activity, v, err)
	}
	return head, nil
}

// setLive is Publish and Rollback: in one transaction it reads the head,
// checks that v exists, lets change edit the head and records its action.
func (s *Store) setLive(ctx context.Context, activity string, v uint64, by string, change func(*Head) (string, error)) (*Head, error) {
	var head *Head
	err := s.mutate(ctx, func(txn storage.Txn) error {
		h, err := s.space.getHead(ctx, txn, activity)
		if err != nil {
			return err
		}
		if v == 0 || v > h.Latest {
			return fmt.Errorf("%w: %s %q has versions 1..%d, not %d", ErrNotFound, s.space.noun, activity, h.Latest, v)
		}
		action, err := change(h)
		if err != nil {
			return err
		}
		h.record(Event{At: s.now(), Action: action, Version: v, By: by})
		head = h
		return s.space.putHead(txn, h)
	})
	return head, err
}

// PutSwitches replaces the switches document (one JSON value, stored in
// canonical form like a version's body).
func (s *Store) PutSwitches(ctx context.Context, body []byte, by string) error {
	if err := checkText("by", by, 1, textBytesMax); err != nil {
		return err
	}
	canon, err := canonical(body)
	if err != nil {
		return err
	}
	err = s.mutate(ctx, func(txn storage.Txn) error {
		v, err := json.Marshal(&switchesRecord{Body: canon, At: s.now(), By: by})
		if err != nil {
			return err
		}
		return txn.Set(storage.CfgSwitchesKey, v)
	})
	if err != nil {
		return fmt.Errorf("configstore: put switches: %w", err)
	}
	return nil
}

// Switches returns the switches document; ErrNotFound if never put.
func (s *Store) Switches(ctx context.Context) ([]byte, error) {
	var body []byte
	err := s.read(func(txn storage.Txn) error {
		r, err := getSwitches(ctx, txn)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("%w: no switches", ErrNotFound)
		}
		body = r.Body
		return nil
	})
	return body, err
}

// Version returns version v of activity, with its body.
func (s *Store) Version(ctx context.Context, activity string, v uint64) (*Version, error) {
	if err := s.space.checkID(activity); err != nil {
		return nil, err
	}
	var out *Version
	err := s.read(func(txn storage.Txn) error {
		var err error
		out, err = s.space.getVersion(ctx, txn, activity, v)
		return err
	})
	return out, err
}

// Versions lists every version of activity, oldest first, without bodies.
func (s *Store) Versions(ctx context.Context, activity string) ([]VersionInfo, error) {
	if err := s.space.checkID(activity); err != nil {
		return nil, err
	}
	var out []VersionInfo
	err := s.read(func(txn storage.Txn) error {
		h, err := s.space.getHead(ctx, txn, activity)
		if err != nil {
			return err
		}
		p := storage.CfgVersionPrefixIn(s.space.prefix, activity)
		err = storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(k, val []byte) (bool, error) {
			v, err := s.space.decodeVersion(k, val)
			if err != nil {
				return false, err
			}
			out = append(out, VersionInfo{Activity: v.Activity, Version: v.Version,
				CreatedAt: v.CreatedAt, By: v.By, Note: v.Note, BodyBytes: len(v.Body)})
			return true, nil
		})
		if err != nil {
			return err
		}
		if uint64(len(out)) != h.Latest {
			return fmt.Errorf("%w: %s has %d versions, head says %d", ErrCorrupt, activity, len(out), h.Latest)
		}
		return nil
	})
	return out, err
}

// Head returns activity's head; ErrNotFound if it has no version.
func (s *Store) Head(ctx context.Context, activity string) (*Head, error) {
	if err := s.space.checkID(activity); err != nil {
		return nil, err
	}
	var h *Head
	err := s.read(func(txn storage.Txn) error {
		var err error
		h, err = s.space.getHead(ctx, txn, activity)
		return err
	})
	return h, err
}

// List returns every activity's (or document's) head, ordered by id.
func (s *Store) List(ctx context.Context) ([]*Head, error) {
	var heads []*Head
	err := s.read(func(txn storage.Txn) error {
		var err error
		heads, err = s.space.listHeads(ctx, txn)
		return err
	})
	return heads, err
}

// Seq returns the change counter: it grows by one with every mutation.
func (s *Store) Seq(ctx context.Context) (uint64, error) {
	var seq uint64
	err := s.read(func(txn storage.Txn) error {
		var err error
		seq, err = getSeq(ctx, txn)
		return err
	})
	return seq, err
}

// Snapshot is everything a node serves from, read at one moment.
type Snapshot struct {
	Seq        uint64             `json:"seq"`
	Activities []ActivitySnapshot `json:"activities"`
	// Documents are the node-wide documents (Store.Documents) in the same
	// form; a cache file written before they existed has none.
	Documents []ActivitySnapshot `json:"documents,omitempty"`
	// Switches is nil when none were ever put.
	Switches   json.RawMessage `json:"switches,omitempty"`
	SwitchesAt time.Time       `json:"switches_at"`
	// ReadAt is the reader's clock when the snapshot was read.
	ReadAt time.Time `json:"read_at"`
}

// ActivitySnapshot is one activity's (or document's) head with the
// versions it serves.
type ActivitySnapshot struct {
	Head *Head `json:"head"`
	// Live is nil when Head.Live is 0, Canary when Head.Canary is nil.
	Live   *Version `json:"live,omitempty"`
	Canary *Version `json:"canary,omitempty"`
}

// Document returns the snapshot of document id; nil when it has no head.
func (snap *Snapshot) Document(id string) *ActivitySnapshot {
	for i := range snap.Documents {
		if snap.Documents[i].Head.Activity == id {
			return &snap.Documents[i]
		}
	}
	return nil
}

// Snapshot reads seq, every head of the activities and of the documents,
// the live and canary bodies and the switches in one read-only
// transaction, so that they agree with each other and with Seq.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{}
	err := s.read(func(txn storage.Txn) error {
		var err error
		if snap.Seq, err = getSeq(ctx, txn); err != nil {
			return err
		}
		if snap.Activities, err = activities.served(ctx, txn); err != nil {
			return err
		}
		if snap.Documents, err = documents.served(ctx, txn); err != nil {
			return err
		}
		sw, err := getSwitches(ctx, txn)
		if err != nil {
			return err
		}
		if sw != nil {
			snap.Switches, snap.SwitchesAt = sw.Body, sw.At
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	snap.ReadAt = s.now()
	return snap, nil
}

// served reads every head of the space with the versions it serves.
func (sp space) served(ctx context.Context, txn storage.Txn) ([]ActivitySnapshot, error) {
	heads, err := sp.listHeads(ctx, txn)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, h := range heads {
		if h.Live != 0 {
			keys = append(keys, sp.versionKey(h.Activity, h.Live))
		}
		if h.Canary != nil {
			keys = append(keys, sp.versionKey(h.Activity, h.Canary.Version))
		}
	}
	vals, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	version := func(id string, v uint64) (*Version, error) {
		key := sp.versionKey(id, v)
		val, ok := vals[string(key)]
		if !ok {
			return nil, fmt.Errorf("%w: head of %s %s serves v%d, which is missing", ErrCorrupt, sp.noun, id, v)
		}
		return sp.decodeVersion(key, val)
	}
	var out []ActivitySnapshot
	for _, h := range heads {
		a := ActivitySnapshot{Head: h}
		if h.Live != 0 {
			if a.Live, err = version(h.Activity, h.Live); err != nil {
				return nil, err
			}
		}
		if h.Canary != nil {
			if a.Canary, err = version(h.Activity, h.Canary.Version); err != nil {
				return nil, err
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// mutate runs fn and the seq bump in one transaction, retrying a lost
// write conflict up to mutateAttemptsMax times with jittered backoff. An
// error from fn rolls back and is returned at once.
func (s *Store) mutate(ctx context.Context, fn func(txn storage.Txn) error) error {
	backoff := retryBackoffMin
	for attempt := 1; ; attempt++ {
		err := s.kv.Update(ctx, func(txn storage.Txn) error {
			if err := fn(txn); err != nil {
				return err
			}
			seq, err := getSeq(ctx, txn)
			if err != nil {
				return err
			}
			return txn.Set(storage.CfgSeqKey, strconv.AppendUint(nil, seq+1, 10))
		})
		if !errors.Is(err, storage.ErrConflict) {
			return err
		}
		if attempt == mutateAttemptsMax {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %d attempts, last: %v)", ctx.Err(), attempt, err)
		case <-t.C:
		}
		backoff = min(2*backoff, retryBackoffMax)
	}
}

// read runs fn in a transaction that only reads and is rolled back, so
// everything fn reads is one snapshot.
func (s *Store) read(fn func(txn storage.Txn) error) error {
	txn, release, err := s.kv.Snapshot()
	if err != nil {
		return err
	}
	defer release()
	return fn(txn)
}

func getSeq(ctx context.Context, txn storage.Txn) (uint64, error) {
	v, err := storage.Get(ctx, txn, storage.CfgSeqKey)
	if err != nil || v == nil {
		return 0, err
	}
	seq, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s = %q", ErrCorrupt, storage.CfgSeqKey, v)
	}
	return seq, nil
}

func (sp space) getHead(ctx context.Context, txn storage.Txn, activity string) (*Head, error) {
	key := sp.headKey(activity)
	v, err := storage.Get(ctx, txn, key)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("%w: %s %q", ErrNotFound, sp.noun, activity)
	}
	return decodeHead(key, activity, v)
}

func decodeHead(key []byte, activity string, v []byte) (*Head, error) {
	h := &Head{}
	if err := json.Unmarshal(v, h); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	if err := h.check(activity); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return h, nil
}

// putHead writes h after asserting its invariants: a head that breaks one
// is a bug in this package and must not reach the store.
func (sp space) putHead(txn storage.Txn, h *Head) error {
	if err := h.check(h.Activity); err != nil {
		return err
	}
	v, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return txn.Set(sp.headKey(h.Activity), v)
}

func (sp space) getVersion(ctx context.Context, txn storage.Txn, activity string, version uint64) (*Version, error) {
	key := sp.versionKey(activity, version)
	v, err := storage.Get(ctx, txn, key)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("%w: %s %q version %d", ErrNotFound, sp.noun, activity, version)
	}
	return sp.decodeVersion(key, v)
}

func (sp space) decodeVersion(key, v []byte) (*Version, error) {
	out := &Version{}
	if err := json.Unmarshal(v, out); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	if !bytes.Equal(key, sp.versionKey(out.Activity, out.Version)) || len(out.Body) == 0 {
		return nil, fmt.Errorf("%w: %s holds %q v%d with %d body bytes", ErrCorrupt, key, out.Activity, out.Version, len(out.Body))
	}
	return out, nil
}

func getSwitches(ctx context.Context, txn storage.Txn) (*switchesRecord, error) {
	v, err := storage.Get(ctx, txn, storage.CfgSwitchesKey)
	if err != nil || v == nil {
		return nil, err
	}
	r := &switchesRecord{}
	if err := json.Unmarshal(v, r); err != nil || len(r.Body) == 0 {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, storage.CfgSwitchesKey, err)
	}
	return r, nil
}

// listHeads reads every head and returns them ordered by activity id (key
// order differs: "a-/head" sorts before "a/head"). Versions sit between
// heads (rr/cfg/act/{a}/head, rr/cfg/act/{a}/v/...), so after each head it
// seeks past the rest of that activity instead of reading every version.
func (sp space) listHeads(ctx context.Context, txn storage.Txn) ([]*Head, error) {
	var heads []*Head
	start, end := sp.prefix, storage.PrefixEnd(sp.prefix)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var key, val []byte
		err := storage.ScanTxn(txn, start, end, func(k, v []byte) (bool, error) {
			key, val = k, v
			return false, nil
		})
		if err != nil {
			return nil, err
		}
		if key == nil {
			slices.SortFunc(heads, func(a, b *Head) int { return strings.Compare(a.Activity, b.Activity) })
			return heads, nil
		}
		rest := key[len(sp.prefix):]
		slash := bytes.IndexByte(rest, '/')
		if slash <= 0 {
			return nil, fmt.Errorf("%w: stray key %q", ErrCorrupt, key)
		}
		activity := string(rest[:slash])
		if !bytes.Equal(key, sp.headKey(activity)) {
			// The head sorts first: versions without one are not an id.
			return nil, fmt.Errorf("%w: %q has no head", ErrCorrupt, storage.CfgPrefixIn(sp.prefix, activity))
		}
		h, err := decodeHead(key, activity, val)
		if err != nil {
			return nil, err
		}
		heads = append(heads, h)
		start = storage.PrefixEnd(storage.CfgPrefixIn(sp.prefix, activity))
	}
}

// record appends e to the history, dropping the oldest beyond historyMax.
func (h *Head) record(e Event) {
	h.History = append(h.History, e)
	if n := len(h.History) - historyMax; n > 0 {
		h.History = append(h.History[:0:0], h.History[n:]...)
	}
}

// check asserts the head's invariants.
func (h *Head) check(activity string) error {
	switch {
	case h.Activity != activity:
		return fmt.Errorf("%w: head of %q names %q", ErrCorrupt, activity, h.Activity)
	case h.Latest == 0:
		return fmt.Errorf("%w: head of %q has no version", ErrCorrupt, activity)
	case h.Live > h.Latest:
		return fmt.Errorf("%w: head of %q: live %d > latest %d", ErrCorrupt, activity, h.Live, h.Latest)
	case h.Canary != nil && (h.Canary.Version == 0 || h.Canary.Version > h.Latest || len(h.Canary.ActIDs) == 0):
		return fmt.Errorf("%w: head of %q: canary v%d with %d act ids, latest %d",
			ErrCorrupt, activity, h.Canary.Version, len(h.Canary.ActIDs), h.Latest)
	case len(h.History) > historyMax:
		return fmt.Errorf("%w: head of %q: %d history events", ErrCorrupt, activity, len(h.History))
	}
	return nil
}

// Newest returns the newest history event's time; zero without events.
func (h *Head) Newest() time.Time {
	if len(h.History) == 0 {
		return time.Time{}
	}
	return h.History[len(h.History)-1].At
}

// checkCanary validates c for version v and returns a copy the caller
// cannot change behind the store's back.
func checkCanary(c *Canary, v uint64) (*Canary, error) {
	switch {
	case c.Version != 0 && c.Version != v:
		return nil, fmt.Errorf("%w: canary names version %d, publishing %d", ErrInvalid, c.Version, v)
	case len(c.ActIDs) == 0:
		return nil, fmt.Errorf("%w: canary without act ids", ErrInvalid)
	case len(c.ActIDs) > canaryActIDsMax:
		return nil, fmt.Errorf("%w: %d canary act ids, at most %d", ErrInvalid, len(c.ActIDs), canaryActIDsMax)
	case len(c.Whitelist) > canaryWhitelistMax:
		return nil, fmt.Errorf("%w: %d whitelist entries, at most %d", ErrInvalid, len(c.Whitelist), canaryWhitelistMax)
	}
	for _, w := range c.Whitelist {
		if err := checkText("whitelist entry", w, 1, textBytesMax); err != nil {
			return nil, err
		}
	}
	return &Canary{Version: v, Whitelist: append([]string(nil), c.Whitelist...), ActIDs: append([]uint64(nil), c.ActIDs...)}, nil
}

// checkID accepts the ids campaign accepts (letters, digits, '.', '-'),
// plus '_'; above all no '/', which separates the parts of a key.
func (sp space) checkID(a string) error {
	if len(a) == 0 || len(a) > activityBytesMax {
		return fmt.Errorf("%w: %s id of %d bytes, want 1..%d", ErrInvalid, sp.noun, len(a), activityBytesMax)
	}
	for _, c := range []byte(a) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %s id %q: byte %q is not a letter, digit, '.', '-' or '_'", ErrInvalid, sp.noun, a, c)
		}
	}
	return nil
}

func checkText(what, s string, minBytes, maxBytes int) error {
	if len(s) < minBytes || len(s) > maxBytes {
		return fmt.Errorf("%w: %s of %d bytes, want %d..%d", ErrInvalid, what, len(s), minBytes, maxBytes)
	}
	return nil
}

// canonical validates body as one JSON value and returns it as json.Marshal
// writes a json.RawMessage: compact, with <, > and & escaped. Any later
// json.Marshal of a record holding it leaves those bytes as they are.
func canonical(body []byte) (json.RawMessage, error) {
	if len(body) > bodyBytesMax {
		return nil, fmt.Errorf("%w: body of %d bytes, at most %d", ErrInvalid, len(body), bodyBytesMax)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("%w: body is not one JSON value", ErrInvalid)
	}
	out, err := json.Marshal(json.RawMessage(body))
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return out, nil
}
