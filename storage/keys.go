package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Key layout in TiKV; see DESIGN.md. Every key starts with "rr/".

// A partition's accounts (the users whose grants go to one grant topic
// partition) are a state, a journal and pages; see the booking package.

// PartKey holds a partition's ledger.PartState. It sorts before every
// other key a booking transaction writes ("rr/hot/", "rr/jrnl/",
// "rr/page/"): client-go commits the batch holding the transaction's first
// key (its primary) before it answers and the others in the background, so
// the states (and the small hot details after them) are committed when the
// commit returns, and the next transaction's read of a state never meets a
// lock it must resolve (measured: the embedded store's lock resolution,
// which scans its whole region, took 16% of booking's CPU when the states
// sorted last).
func PartKey(part int32) []byte { return fmt.Appendf(nil, "rr/book/%04x", part) }

// PartPrefix bounds the scan of every partition's state.
var PartPrefix = []byte("rr/book/")

// ParsePartKey reads the partition of a PartKey.
func ParsePartKey(k []byte) (int32, bool) {
	rest, ok := bytes.CutPrefix(k, PartPrefix)
	if !ok || len(rest) != 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(rest), 16, 16)
	if err != nil {
		return 0, false
	}
	return int32(v), true
}

// ParkedKey holds a grant record an operator parked: booking skips it
// (booking.Park).
func ParkedKey(part int32, offset int64) []byte {
	return fmt.Appendf(nil, "rr/parked/%04x/%016x", part, offset)
}

// ParkedPrefix bounds the scan of every parked record.
var ParkedPrefix = []byte("rr/parked/")

// StuckKey holds the record a partition's owner waits at because its
// grants break a money check (booking: Park accepts it though it decodes).
func StuckKey(part int32) []byte { return fmt.Appendf(nil, "rr/stuck/%04x", part) }

// FencedKey holds the grants of the record at offset of part that booking
// refused because their lease was fenced (ledger.Fence): the record's
// grants under fenced leases, as a grant record.
func FencedKey(part int32, offset int64) []byte {
	return fmt.Appendf(nil, "rr/fenced/%04x/%016x", part, offset)
}

// FencedPrefix bounds the scan of every refused grant.
var FencedPrefix = []byte("rr/fenced/")

// JournalKey holds one ledger.Journal of a partition.
func JournalKey(part int32, seq uint64) []byte {
	return fmt.Appendf(nil, "rr/jrnl/%04x/%016x", part, seq)
}

// JournalPrefix bounds the scan of a partition's journal.
func JournalPrefix(part int32) []byte { return fmt.Appendf(nil, "rr/jrnl/%04x/", part) }

// PageUsers is the span of act_ids one page covers (act_ids are dense, and
// a partition holds about one in every partition count of them).
const PageUsers = 1024

// PageOf is the page of an act_id within its partition.
func PageOf(actID uint64) uint64 { return actID / PageUsers }

// PageKey holds one ledger.Page of a partition.
func PageKey(part int32, page uint64) []byte {
	return fmt.Appendf(nil, "rr/page/%04x/%012x", part, page)
}

// HistKey holds history chunk n of an account's entries (ledger.AppendChunk):
// written once, by the booking that archived it.
func HistKey(actID, n uint64) []byte { return fmt.Appendf(nil, "rr/hist/%016x/%08x", actID, n) }

// PagePrefix bounds the scan of a partition's pages.
func PagePrefix(part int32) []byte { return fmt.Appendf(nil, "rr/page/%04x/", part) }

// ActAllocKey holds the next unallocated act_id.
var ActAllocKey = []byte("rr/alloc/act")

// BindKey is the durable index of an explicit binding (POST
// /v1/accounts/bind): app user → act_id (ActIDValue). The app id has a
// fixed width, so the user id after it may hold any byte, '/' included.
// Written in one transaction with the account's Apps, and only there.
func BindKey(appID uint32, userID string) []byte {
	return fmt.Appendf(nil, "rr/bind/%08x/%s", appID, userID)
}

// BindPrefix bounds the scan of every explicit binding.
var BindPrefix = []byte("rr/bind/")

// ParseBindKey reads a key written by BindKey.
func ParseBindKey(k []byte) (appID uint32, userID string, ok bool) {
	rest, found := bytes.CutPrefix(k, BindPrefix)
	if !found || len(rest) < 10 || rest[8] != '/' {
		return 0, "", false
	}
	app, err := strconv.ParseUint(string(rest[:8]), 16, 32)
	if err != nil {
		return 0, "", false
	}
	return uint32(app), string(rest[9:]), true
}

// BudgetKey is a budget record.
func BudgetKey(id string) []byte { return []byte("rr/budget/" + id) }

// BudgetPrefix bounds the scan of all budgets.
var BudgetPrefix = []byte("rr/budget/")

// LeasePrefix bounds the leases of one budget.
func LeasePrefix(budgetID string) []byte { return []byte("rr/lease/" + budgetID + "/") }

// LeaseKey is one lease of a budget.
func LeaseKey(budgetID string, id uint64) []byte {
	return fmt.Appendf(LeasePrefix(budgetID), "%016x", id)
}

// HotPrefix bounds the unfolded hot details of one budget.
func HotPrefix(budgetID string) []byte { return []byte("rr/hot/" + budgetID + "/") }

// HotKey is one hot detail; startTS (the writing transaction's) and seq make
// it unique without reading anything.
func HotKey(budgetID string, startTS uint64, seq uint32) []byte {
	k := HotPrefix(budgetID)
	k = binary.BigEndian.AppendUint64(k, startTS)
	return binary.BigEndian.AppendUint32(k, seq)
}

// FundKey is the funding account's balance in an asset.
func FundKey(asset string) []byte { return []byte("rr/fund/" + asset) }

// FundPrefix bounds the funding accounts.
var FundPrefix = []byte("rr/fund/")

// PrefixEnd returns the smallest key after every key with prefix p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// ActIDValue encodes an act_id as a TiKV value.
func ActIDValue(actID uint64) []byte { return binary.BigEndian.AppendUint64(nil, actID) }

// ParseActIDValue decodes ActIDValue.
func ParseActIDValue(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// StoreEpochKey holds a random id made when the store was first used. Redis
// records the id of the store it indexes (RedisEpochKey); a mismatch means
// Redis indexes another store, or an older life of this one.
var StoreEpochKey = []byte("rr/meta/epoch")

// Versioned configuration (package configstore). Values are JSON so that
// operators can read them with tikv-ctl.

// CfgSeqKey holds the change counter of all configuration: every mutation
// bumps it in its own transaction, so nodes poll this one key.
var CfgSeqKey = []byte("rr/cfg/seq")

// CfgSwitchesKey holds the switches document.
var CfgSwitchesKey = []byte("rr/cfg/switches")

// CfgActivityPrefix bounds every activity's head and versions.
var CfgActivityPrefix = []byte("rr/cfg/act/")

// CfgDocumentPrefix bounds every node-wide document's head and versions
// (the wallet's presentation): the layout of an activity's, in a space of
// its own, so that whatever reads the activities (a node of an earlier
// release among them) never meets a document.
var CfgDocumentPrefix = []byte("rr/cfg/doc/")

// CfgPrefixIn bounds one id's head and versions in space
// (CfgActivityPrefix or CfgDocumentPrefix). Ids hold no '/', so the
// prefixes of two ids never nest.
func CfgPrefixIn(space []byte, id string) []byte {
	return append(append(append([]byte(nil), space...), id...), '/')
}

// CfgHeadKeyIn is an id's head in space: latest version, live, canary,
// history. It sorts before the id's versions ('h' < 'v').
func CfgHeadKeyIn(space []byte, id string) []byte {
	return append(CfgPrefixIn(space, id), "head"...)
}

// CfgVersionPrefixIn bounds an id's versions in space.
func CfgVersionPrefixIn(space []byte, id string) []byte {
	return append(CfgPrefixIn(space, id), "v/"...)
}

// CfgVersionKeyIn is one immutable version of an id in space.
func CfgVersionKeyIn(space []byte, id string, version uint64) []byte {
	return fmt.Appendf(CfgVersionPrefixIn(space, id), "%016x", version)
}

// CfgActivityPrefixOf bounds one activity's head and versions.
func CfgActivityPrefixOf(activity string) []byte { return CfgPrefixIn(CfgActivityPrefix, activity) }

// CfgHeadKey is an activity's head.
func CfgHeadKey(activity string) []byte { return CfgHeadKeyIn(CfgActivityPrefix, activity) }

// CfgVersionPrefix bounds an activity's versions.
func CfgVersionPrefix(activity string) []byte { return CfgVersionPrefixIn(CfgActivityPrefix, activity) }

// CfgVersionKey is one immutable version of an activity's configuration.
func CfgVersionKey(activity string, version uint64) []byte {
	return CfgVersionKeyIn(CfgActivityPrefix, activity, version)
}
