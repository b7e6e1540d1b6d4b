// Package holders is the wallet's first read layer: per asset family, the
// exact set of users who hold anything of that family, as a roaring bitmap
// of 32-bit user indexes (issue 12, item 2).
//
// A user's index is the act_id itself while it is below 2^32 (act_ids are
// allocated from 1 upward in blocks of 65,536 per node, dense with gaps, so
// the bitmaps stay small: run containers for dense ranges, array
// containers where few hold). A larger act_id is never indexed: Add and
// Apply refuse it (ErrActRange) and Contains answers Unknown for it, so the
// caller asks the next layer. The set never answers No for a user it does
// not know to hold nothing: Unknown before the first Build, after
// Invalidate, for an act_id beyond the index and for an unknown family.
//
// Each family's bitmap is kept split at roaring's own container
// boundaries: one single-container roaring bitmap per 65,536 act_ids,
// reached through a two-level directory indexed by the act_id's high 16
// bits (a lookup does no binary search over container keys).
//
// One writer applies the booking stream's batches (Apply); any number of
// readers call Contains without a lock or an allocation. Published state
// is never written again: a batch copies each container it changes (at
// most 8 KiB), the directory pages above them (2 KiB each) and the
// directory of each family it touches, then publishes the new state
// through one atomic pointer, so all of a batch's changes become visible
// together.
//
// The package is fed by its caller: it reads no store, network or clock.
package holders

import (
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"

	"redrain/ledger"
)

// Family is an asset family: every asset belongs to one, named by the
// asset's kind (ledger.Asset.Kind).
type Family uint8

// The asset families.
const (
	Money Family = iota // "cash"
	Coin                // "coin:{currency}"
	Item                // "item:{template}"

	// Families is how many families there are.
	Families = 3
)

// String returns the family's name, the ledger's kind of its assets.
func (f Family) String() string {
	switch f {
	case Money:
		return ledger.KindMoney
	case Coin:
		return ledger.KindCoin
	case Item:
		return ledger.KindItem
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Valid reports whether f is one of the families.
func (f Family) Valid() bool { return f < Families }

// FamilyOf returns the family of an asset; false for a malformed asset.
func FamilyOf(a ledger.Asset) (Family, bool) {
	switch a.Kind() {
	case ledger.KindMoney:
		return Money, true
	case ledger.KindCoin:
		return Coin, true
	case ledger.KindItem:
		return Item, true
	}
	return 0, false
}

// MaxAct is the largest act_id the set indexes: its 32-bit user index is
// the act_id itself.
const MaxAct = 1<<32 - 1

// Answer is what the set knows about one user and family.
type Answer uint8

// The answers of Contains. The zero value is Unknown.
const (
	// Unknown: the set cannot say (not built yet, invalidated, act_id
	// beyond MaxAct, unknown family); ask the next layer.
	Unknown Answer = iota
	// No: the user holds nothing of the family.
	No
	// Yes: the user holds something of the family.
	Yes
)

// String returns "unknown", "no" or "yes".
func (a Answer) String() string {
	switch a {
	case No:
		return "no"
	case Yes:
		return "yes"
	}
	return "unknown"
}

// Change names one user and family in a batch: an add (the user now holds
// something of the family) or a remove (nothing any more).
type Change struct {
	Act    uint64
	Family Family
}

// Errors of Add, Apply and Build. A batch with any of them changes nothing.
var (
	// ErrActRange: an act_id beyond MaxAct has no 32-bit index.
	ErrActRange = errors.New("holders: act_id beyond the 32-bit index (2^32-1); it is answered Unknown")
	// ErrFamily: not one of the families.
	ErrFamily = errors.New("holders: unknown asset family")
	// ErrConflict: a batch both adds and removes one user's family; the
	// caller passes each user and family once, with its state after the
	// batch.
	ErrConflict = errors.New("holders: a batch adds and removes the same user and family")
)

// A family's holders are a roaring bitmap split at its containers'
// boundaries: one *roaring.Bitmap per 65,536 act_ids (one container: an
// array, a bitmap or a run container, as the library chooses), found by
// the act_id's high 16 bits through a two-level directory of 256 x 256
// pointers instead of roaring's sorted key array. A lookup indexes twice
// and asks one single-container bitmap; a batch copies only the
// containers it changes and the directory pages above them.
type dir struct{ top [256]*page }

type page [256]*roaring.Bitmap

func (d *dir) contains(x uint32) bool {
	p := d.top[x>>24]
	if p == nil {
		return false
	}
	b := p[x>>16&0xff]
	return b != nil && b.Contains(x)
}

// each calls f with every container bitmap of d.
func (d *dir) each(f func(*roaring.Bitmap)) {
	for _, p := range d.top {
		if p == nil {
			continue
		}
		for _, b := range p {
			if b != nil {
				f(b)
			}
		}
	}
}

// edit changes one family's directory for one batch: it copies the
// published directory, each page and each container bitmap it changes,
// once, and leaves the published ones untouched. A Build's edit owns its
// fresh directory and changes it in place.
type edit struct {
	d     *dir
	owned bool
	pages [256]bool           // pages of d already copied
	bms   map[uint16]struct{} // container bitmaps already copied
}

func (e *edit) reset(d *dir, owned bool) {
	e.d, e.owned, e.pages = d, owned, [256]bool{}
	if e.bms == nil {
		e.bms = map[uint16]struct{}{}
	}
	clear(e.bms)
}

// bitmap returns the writable container bitmap of x, creating it (and its
// page) for an add; nil for a remove where there is none.
func (e *edit) bitmap(x uint32, add bool) *roaring.Bitmap {
	hi, k := x>>24, uint16(x>>16)
	p := e.d.top[hi]
	if p == nil && !add || p != nil && p[k&0xff] == nil && !add {
		return nil
	}
	switch {
	case p == nil:
		p = new(page)
		e.d.top[hi], e.pages[hi] = p, true
	case !e.owned && !e.pages[hi]:
		c := *p
		p = &c
		e.d.top[hi], e.pages[hi] = p, true
	}
	b := p[k&0xff]
	switch {
	case b == nil:
		b = roaring.New()
		p[k&0xff] = b
		e.bms[k] = struct{}{}
	case e.owned:
	default:
		if _, ok := e.bms[k]; !ok {
			b = b.Clone()
			p[k&0xff] = b
			e.bms[k] = struct{}{}
		}
	}
	return b
}

func (e *edit) add(x uint32) { e.bitmap(x, true).Add(x) }

func (e *edit) remove(x uint32) {
	b := e.bitmap(x, false)
	if b == nil {
		return
	}
	b.Remove(x)
	if b.IsEmpty() {
		e.d.top[x>>24][x>>16&0xff] = nil
	}
}

// view is what readers see: immutable once published.
type view struct {
	ready bool
	fams  [Families]*dir
}

var notReady = &view{}

// Set is the exact holders filter. The zero value answers Unknown until
// its first Build. Apply, Add, Remove, Build and Invalidate may be called
// from any goroutine (they take the writer's lock); Contains, Any and
// Snapshot never lock.
type Set struct {
	cur atomic.Pointer[view]

	build sync.Mutex // one Build at a time

	mu      sync.Mutex // the writer's state below
	edits   [Families]edit
	pending map[uint64]struct{} // Apply's conflict check, reused
	log     *[]batch            // batches applied while a Build scans
	beyond  uint64              // act_ids beyond MaxAct the last Build skipped
}

type batch struct{ adds, removes []Change }

// New returns an empty set that answers Unknown until its first Build.
func New() *Set { return &Set{} }

// View is one published state of the set: every lookup through it sees
// the same batches.
type View struct{ v *view }

// Snapshot returns the state published last.
func (s *Set) Snapshot() View {
	v := s.cur.Load()
	if v == nil {
		v = notReady
	}
	return View{v}
}

// Contains says whether act holds anything of fam: Yes or No exactly, or
// Unknown (see the package comment).
func (s *Set) Contains(act uint64, fam Family) Answer { return s.Snapshot().Contains(act, fam) }

// Any says whether act holds anything of any family.
func (s *Set) Any(act uint64) Answer { return s.Snapshot().Any(act) }

// Contains is Set.Contains in this view.
func (w View) Contains(act uint64, fam Family) Answer {
	if !w.v.ready || act > MaxAct || fam >= Families {
		return Unknown
	}
	if w.v.fams[fam].contains(uint32(act)) {
		return Yes
	}
	return No
}

// Holders yields, in ascending order, every act_id the view knows to hold
// something of fam; nothing when the view is not ready (Unknown) or fam
// is not a family. Act_ids beyond MaxAct are never indexed (Stats.Beyond
// counts those the last Build skipped).
func (w View) Holders(fam Family) iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		if !w.v.ready || fam >= Families || w.v.fams[fam] == nil {
			return
		}
		for _, p := range w.v.fams[fam].top {
			if p == nil {
				continue
			}
			for _, b := range p {
				if b == nil {
					continue
				}
				it := b.Iterator()
				for it.HasNext() {
					if !yield(uint64(it.Next())) {
						return
					}
				}
			}
		}
	}
}

// Ready reports whether the view answers exactly (a Build completed and
// nothing invalidated it since).
func (w View) Ready() bool { return w.v.ready }

// Any is Set.Any in this view.
func (w View) Any(act uint64) Answer {
	if !w.v.ready || act > MaxAct {
		return Unknown
	}
	for _, d := range w.v.fams {
		if d.contains(uint32(act)) {
			return Yes
		}
	}
	return No
}

// Add records that act holds something of fam (a batch of one).
func (s *Set) Add(act uint64, fam Family) error {
	return s.Apply([]Change{{Act: act, Family: fam}}, nil)
}

// Remove records that act holds nothing of fam any more (a batch of one).
func (s *Set) Remove(act uint64, fam Family) error {
	return s.Apply(nil, []Change{{Act: act, Family: fam}})
}

// Apply applies one batch of the booking stream: each add and remove is
// the state of a user's family after the batch, so no user and family may
// be in both lists (ErrConflict); within a list one may repeat. Every
// change is checked first; a batch with an act_id beyond MaxAct, an
// unknown family or a conflict changes nothing and returns the error.
// Readers see all of a batch or none of it.
//
// Apply before the first Build changes the working state, which the Build
// then replaces (the set answers Unknown meanwhile); batches applied while
// a Build scans are applied again on top of its result (see Build).
func (s *Set) Apply(adds, removes []Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(adds, removes); err != nil {
		return err
	}
	if len(adds)+len(removes) == 0 {
		return nil
	}
	old := s.current()
	nv := *old
	for f := range s.edits {
		s.edits[f].d = nil
	}
	// Each family touched gets a copy of its directory; its edit copies
	// the pages and containers it changes.
	editOf := func(f Family) *edit {
		e := &s.edits[f]
		if e.d == nil {
			d := *old.fams[f]
			e.reset(&d, false)
			nv.fams[f] = &d
		}
		return e
	}
	for _, c := range adds {
		editOf(c.Family).add(uint32(c.Act))
	}
	for _, c := range removes {
		editOf(c.Family).remove(uint32(c.Act))
	}
	if s.log != nil {
		*s.log = append(*s.log, batch{cloneChanges(adds), cloneChanges(removes)})
	}
	s.cur.Store(&nv)
	return nil
}

func cloneChanges(cs []Change) []Change { return append([]Change(nil), cs...) }

// current returns the published view, publishing an empty one (not ready)
// the first time; the caller holds mu.
func (s *Set) current() *view {
	v := s.cur.Load()
	if v == nil {
		v = &view{}
		for f := range v.fams {
			v.fams[f] = new(dir)
		}
		s.cur.Store(v)
	}
	return v
}

// check validates a batch; the caller holds mu.
func (s *Set) check(adds, removes []Change) error {
	for _, list := range [2][]Change{adds, removes} {
		for _, c := range list {
			if c.Act > MaxAct {
				return fmt.Errorf("%w: act_id %d", ErrActRange, c.Act)
			}
			if !c.Family.Valid() {
				return fmt.Errorf("%w: %d (act_id %d)", ErrFamily, c.Family, c.Act)
			}
		}
	}
	if len(adds) == 0 || len(removes) == 0 {
		return nil
	}
	if s.pending == nil {
		s.pending = make(map[uint64]struct{}, len(removes))
	}
	defer clear(s.pending)
	for _, c := range removes {
		s.pending[c.Act<<2|uint64(c.Family)] = struct{}{}
	}
	for _, c := range adds {
		if _, ok := s.pending[c.Act<<2|uint64(c.Family)]; ok {
			return fmt.Errorf("%w: act_id %d, %s", ErrConflict, c.Act, c.Family)
		}
	}
	return nil
}

// Build replaces the whole set with one scan of the store: iter calls
// yield once per user and family held (in any order, repeats allowed) and
// returns the scan's error. An act_id beyond MaxAct is skipped (it is
// answered Unknown; Stats counts them); an unknown family stops the scan
// with ErrFamily. On any error nothing changes. The new bitmaps are
// run-optimized, then swapped in, and the set answers from them.
//
// Batches may be applied while Build scans: each is applied at once to the
// current set and, once the scan ends, again on top of its result before
// the swap, so nothing is lost however the scan and the batches
// interleave, provided the store holds every batch's effect before the
// batch is applied (the booking stream applies a batch after committing
// it) and the scan reads each key at or after the moment Build is called.
func (s *Set) Build(iter func(yield func(act uint64, fam Family) bool) error) error {
	s.build.Lock()
	defer s.build.Unlock()

	log := new([]batch)
	s.mu.Lock()
	s.log = log
	s.mu.Unlock()

	var fresh [Families]edit
	for f := range fresh {
		fresh[f].reset(new(dir), true)
	}
	var bad error
	var beyond uint64
	err := iter(func(act uint64, fam Family) bool {
		if !fam.Valid() {
			bad = fmt.Errorf("%w: %d (act_id %d)", ErrFamily, fam, act)
			return false
		}
		if act > MaxAct {
			beyond++
			return true
		}
		fresh[fam].add(uint32(act))
		return true
	})
	if err == nil {
		err = bad
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
	if err != nil {
		return err
	}
	nv := &view{ready: true}
	for f := range fresh {
		e := &fresh[f]
		for _, b := range *log {
			for _, c := range b.adds {
				if c.Family == Family(f) {
					e.add(uint32(c.Act))
				}
			}
			for _, c := range b.removes {
				if c.Family == Family(f) {
					e.remove(uint32(c.Act))
				}
			}
		}
		e.d.each((*roaring.Bitmap).RunOptimize)
		nv.fams[f] = e.d
	}
	s.beyond = beyond
	s.cur.Store(nv)
	return nil
}

// Invalidate makes the set answer Unknown until the next Build: for a
// caller that lost a batch (an Apply that failed, a gap in the stream).
func (s *Set) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	nv := *s.current()
	nv.ready = false
	s.cur.Store(&nv)
}

// Stats describes the published state.
type Stats struct {
	Ready bool
	// Holders is each family's count of users holding something of it.
	Holders [Families]uint64
	// Containers is how many 65,536-act_id containers hold someone, over
	// the families.
	Containers int
	// Bytes is the size in memory as the library estimates it
	// (GetSizeInBytes of every container bitmap: payload and headers, not
	// the slack of their slices or the Go heap's rounding), plus 8 bytes
	// per directory slot.
	Bytes uint64
	// SerializedBytes is the containers' size in the portable roaring
	// format, one bitmap per container.
	SerializedBytes uint64
	// Beyond counts the act_ids beyond MaxAct the last Build skipped.
	Beyond uint64
}

// PerUser is Bytes divided by a population (e.g. every act_id allocated,
// or the holders of a family); 0 for an empty population.
func (st Stats) PerUser(population uint64) float64 {
	if population == 0 {
		return 0
	}
	return float64(st.Bytes) / float64(population)
}

// Bytes is Stats().Bytes: the published state's estimated size in memory.
func (s *Set) Bytes() uint64 { return s.Stats().Bytes }

// Stats returns the figures of the published state (it walks every
// container: for reports, not for a hot path).
func (s *Set) Stats() Stats {
	v := s.Snapshot().v
	st := Stats{Ready: v.ready}
	for f, d := range v.fams {
		if d == nil {
			continue
		}
		st.Bytes += uint64(len(d.top)) * 8
		for _, p := range d.top {
			if p != nil {
				st.Bytes += uint64(len(p)) * 8
			}
		}
		d.each(func(b *roaring.Bitmap) {
			st.Containers++
			st.Holders[f] += b.GetCardinality()
			st.Bytes += b.GetSizeInBytes()
			st.SerializedBytes += b.GetSerializedSizeInBytes()
		})
	}
	s.mu.Lock()
	st.Beyond = s.beyond
	s.mu.Unlock()
	return st
}
