package ledger

import (
	"encoding/binary"
	"fmt"
)

// stringLenMax bounds every string a decoder accepts, so a corrupt length
// cannot make it allocate without limit.
const stringLenMax = 1 << 10

func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }
func appendVarint(dst []byte, v int64) []byte   { return binary.AppendVarint(dst, v) }
func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads what the append helpers wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
	// noUsers: a journal's ops are decoded without their user ids
	// (checked, not copied: TailDecoder).
	noUsers bool
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || !minimal(d.b[:n]) {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || !minimal(d.b[:n]) {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// minimal reports whether the (u)varint in b is minimally encoded: only the
// value 0 may end in a zero byte. binary.Uvarint also accepts padded forms
// such as 0x81 0x00 for 1, which would give one record two encodings, so
// an accepted record could re-encode to different bytes.
func minimal(b []byte) bool { return len(b) == 1 || b[len(b)-1] != 0 }

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) string(what string) string { return d.stringAs(what, "") }

// stringAs reads a length-prefixed string, returning same (no allocation)
// when the bytes read equal it.
func (d *decoder) stringAs(what, same string) string {
	b := d.stringBytes(what)
	if string(b) == same {
		return same
	}
	return string(b)
}

// skipString passes over a length-prefixed string, checked as string
// checks it.
func (d *decoder) skipString(what string) { d.stringBytes(what) }

// stringBytes reads a length-prefixed string's bytes (nil on error).
func (d *decoder) stringBytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > stringLenMax || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

// count reads a collection length and bounds it by the bytes left, since
// every element takes at least one byte.
func (d *decoder) count(what string) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail(what)
		return 0
	}
	return int(n)
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// strTable interns the strings of one encoded value (a journal or a page)
// in the order of their first use, so that a string its grants or entries
// repeat (an activity, an asset, a budget id) is written once, at the
// value's head, and referenced by its index.
type strTable struct {
	index map[string]uint64
	list  []string
	// last is the string each slot (a field: an entry's limit key, its
	// asset...) referenced last and its index: neighbouring entries mostly
	// repeat them, and comparing two strings costs less than hashing one
	// (AppendPage of 512 one-entry accounts: 110 µs with the map alone, 67 µs).
	last [strSlots]struct {
		s  string
		i  uint64
		ok bool
	}
}

// Slots of strTable.refIn.
const (
	slotKey = iota
	slotAward
	slotAsset
	strSlots
)

// refIn is ref for a string of the field slot.
func (t *strTable) refIn(slot int, s string) uint64 {
	h := &t.last[slot]
	if !h.ok || h.s != s {
		h.s, h.i, h.ok = s, t.ref(s), true
	}
	return h.i
}

// ref returns s's index, adding s if it is new.
func (t *strTable) ref(s string) uint64 {
	if i, ok := t.index[s]; ok {
		return i
	}
	if t.index == nil {
		t.index = make(map[string]uint64)
	}
	i := uint64(len(t.list))
	t.index[s] = i
	t.list = append(t.list, s)
	return i
}

func appendStrTable(dst []byte, list []string) []byte {
	dst = appendUvarint(dst, uint64(len(list)))
	for _, s := range list {
		dst = appendString(dst, s)
	}
	return dst
}

// strRefs is a decoded string table and how many of its strings were
// referenced so far. A value has one encoding: strings are distinct, each
// is referenced, and they are numbered in the order of their first use
// (a reference is at most one past the highest so far), as strTable does.
type strRefs struct {
	list []string
	used int
}

func (d *decoder) strTable(what string) strRefs {
	n := d.count(what)
	t := strRefs{list: make([]string, 0, n)}
	seen := make(map[string]struct{}, n)
	for i := 0; i < n && d.err == nil; i++ {
		s := d.string(what)
		if _, dup := seen[s]; dup {
			d.fail(what + " duplicate")
		}
		seen[s] = struct{}{}
		t.list = append(t.list, s)
	}
	return t
}

func (d *decoder) strRef(t *strRefs, what string) string {
	i := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if i > uint64(t.used) || i >= uint64(len(t.list)) {
		d.fail(what)
		return ""
	}
	if i == uint64(t.used) {
		t.used++
	}
	return t.list[i]
}

// strTableEnd fails unless every string of t was referenced.
func (d *decoder) strTableEnd(t *strRefs, what string) {
	if d.err == nil && t.used != len(t.list) {
		d.fail(what + " unused")
	}
}
