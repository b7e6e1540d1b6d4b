package ingress

import (
	"testing"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/ledger"
)

// TestLedgerCursor: a cursor opens only for the act_id and filter it was
// made for, with the index it names; every other text is refused.
func TestLedgerCursor(t *testing.T) {
	for _, before := range []uint64{1, 127, 128, 1 << 40} {
		c := string(appendLedgerCursor(nil, 5, "cash", before))
		if got, ok := decodeLedgerCursor([]byte(c), 5, "cash"); !ok || got != before {
			t.Errorf("cursor %q of %d opens as %d, %v", c, before, got, ok)
		}
		for _, other := range []struct {
			act   uint64
			asset ledger.Asset
		}{{6, "cash"}, {5, ""}, {5, "coin:gold"}} {
			if _, ok := decodeLedgerCursor([]byte(c), other.act, other.asset); ok {
				t.Errorf("cursor %q of act 5, cash opens for %d, %q", c, other.act, other.asset)
			}
		}
	}
	good := appendLedgerCursor(nil, 5, "", 300)
	for _, bad := range []string{"", "=", string(good) + "=", string(good) + "A", string(good[:len(good)-1]),
		string(appendLedgerCursor(nil, 5, "", 0))} {
		if _, ok := decodeLedgerCursor([]byte(bad), 5, ""); ok {
			t.Errorf("cursor %q opens", bad)
		}
	}
}

// FuzzLedgerQuery: whatever query string arrives, the parser answers a
// valid query or a malformed_request, never panics, and a cursor it
// accepts is the one it would write.
func FuzzLedgerQuery(f *testing.F) {
	f.Add("1", "")
	f.Add("42", "limit=100&asset=cash")
	f.Add("42", "asset=item:card-fu&cursor="+string(appendLedgerCursor(nil, 42, "item:card-fu", 7)))
	f.Add("42", "limit=3&limit=3")
	f.Add("x", "page=1")
	f.Fuzz(func(t *testing.T, id, query string) {
		var args fasthttp.Args
		args.Parse(query)
		q, e := parseLedgerQuery([]byte(id), &args)
		if e != nil {
			if e.Code != errcode.CodeMalformed {
				t.Fatalf("parseLedgerQuery(%q, %q) = %v", id, query, e)
			}
			return
		}
		if q.actID == 0 || q.limit < 1 || q.limit > ledger.DetailLimitMax || (q.asset != "" && !validAsset([]byte(q.asset))) {
			t.Fatalf("parseLedgerQuery(%q, %q) accepted %+v", id, query, q)
		}
		if q.cursor && (q.before == 0 || string(appendLedgerCursor(nil, q.actID, q.asset, q.before)) != string(args.Peek("cursor"))) {
			t.Fatalf("parseLedgerQuery(%q, %q) accepted cursor %q as %d", id, query, args.Peek("cursor"), q.before)
		}
	})
}
