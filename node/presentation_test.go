package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/configstore"
	"redrain/node"
	"redrain/presentation"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// presentationDoc is a valid presentation whose first slot is named name.
func presentationDoc(name string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"slots":[
	 {"id":"cash","asset":"cash","name":%q,"copy":"Withdraw any time","link":"https://wallet.example.com/cash","icon":"https://cdn.example.com/cash.png"},
	 {"id":"coins","asset":"coin:*","name":"Coins"},
	 {"id":"mall","line":"mall","name":"Mall points","hidden":true}]}`, name))
}

// slotNames decodes what For answers into its slots' names.
func slotNames(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var slots []struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Hidden *bool  `json:"hidden"`
	}
	if err := json.Unmarshal(raw, &slots); err != nil {
		t.Fatalf("For answered %s: %v", raw, err)
	}
	var out []string
	for _, s := range slots {
		if s.Hidden != nil || s.ID == "mall" {
			t.Errorf("For answered a hidden slot: %s", raw)
		}
		out = append(out, s.Name)
	}
	return out
}

// awaitPresentation waits until the node answers act with version want
// whose first slot is named name ("" for the empty array of version 0).
func awaitPresentation(t *testing.T, n *node.Node, act, want uint64, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		slots, v := n.Presentation.For(act)
		names := slotNames(t, slots)
		if v == want && (name == "" && len(names) == 0 || len(names) == 2 && names[0] == name && names[1] == "Coins") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("act_id %d is served version %d %s, want version %d with %q", act, v, slots, want, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPresentationThroughAdmin: the wallet's presentation is put, refused
// when it does not validate (storing nothing), published to a whitelist
// (its act_ids served the canary, everyone else live), to all and rolled
// back through the admin routes, and a stored version this node cannot
// compile leaves the last good one served.
func TestPresentationThroughAdmin(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	const someone = 1 << 40 // never whitelisted
	awaitPresentation(t, n, someone, 0, "")
	var apiErr *adminauth.APIError
	if _, err := c.Presentation(ctx, 0); !errors.As(err, &apiErr) || apiErr.Code != "not_found" {
		t.Fatalf("presentation before any put: %v, want not_found", err)
	}

	// Refused documents store nothing.
	seq := configSeq(t, n)
	tooMany := `{"slots":[` + strings.Repeat(`{"id":"x","asset":"cash","name":"x"},`, presentation.SlotsMax) + `{"id":"x","asset":"cash","name":"x"}]}`
	for _, bad := range []struct{ body, code, msg string }{
		{`{"slots":[{"id":"cash","asset":"cash","name":"Cash","colour":"red"}]}`, "malformed_request", `unknown field "colour"`},
		{`{"slots":[{"id":"cash","asset":"cash","name":"Cash"}]} []`, "malformed_request", "trailing data"},
		{`{"slots":[{"id":"cash","asset":"cash","name":"Cash","link":"http://wallet.example.com/"}]}`, "invalid_config", `slots[0] ("cash"): link "http://wallet.example.com/": want an https URL`},
		{`{"slots":[{"id":"cash","asset":"cash","name":"Cash"},{"id":"cash","asset":"coin:*","name":"Coins"}]}`, "invalid_config", `id "cash" is slots[0]'s too`},
		{`{"slots":[{"id":"a","asset":"gems","name":"Gems"}]}`, "invalid_config", `asset "gems"`},
		{tooMany, "invalid_config", "33 slots, at most 32"},
	} {
		// Sent as it is: the client checks for JSON first.
		err := c.Do(ctx, "PUT", adminauth.PathPresentation, nil, []byte(bad.body), nil)
		if !errors.As(err, &apiErr) || apiErr.Code != bad.code || !strings.Contains(apiErr.Message, bad.msg) {
			t.Errorf("put %.80s: %v, want %s naming %q", bad.body, err, bad.code, bad.msg)
		}
	}
	if _, err := c.Presentation(ctx, 0); !errors.As(err, &apiErr) || apiErr.Code != "not_found" {
		t.Errorf("presentation after refused puts: %v, want not_found", err)
	}
	if got := configSeq(t, n); got != seq {
		t.Errorf("refused puts moved the configuration seq from %d to %d", seq, got)
	}

	put := func(name string) int64 {
		t.Helper()
		v, err := c.PutPresentation(ctx, presentationDoc(name))
		if err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
		return v
	}
	v1, v2 := put("Cash"), put("Cash (new)")
	if v1 != 1 || v2 != 2 {
		t.Fatalf("versions %d, %d; want 1, 2", v1, v2)
	}
	awaitServed(t, n)
	awaitPresentation(t, n, someone, 0, "") // stored, not published
	raw, err := c.Presentation(ctx, 2)
	if err != nil || !strings.Contains(string(raw), `"name":"Cash (new)"`) {
		t.Errorf("presentation version 2 = %s, %v", raw, err)
	}

	// Version 1 to everyone, then version 2 to one whitelisted user.
	if _, err := c.PublishPresentation(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	awaitPresentation(t, n, someone, 1, "Cash")
	raw, err = c.PublishPresentation(ctx, v2, []string{"1:pres-vip"})
	if err != nil {
		t.Fatal(err)
	}
	vip := canaryUser(t, raw)
	awaitPresentation(t, n, vip, 2, "Cash (new)")
	awaitPresentation(t, n, someone, 1, "Cash")
	// The wallet answers carry the slots each user is served.
	other := grantAll(t, n, []string{"pres-other"})[0].ActID
	for act, want := range map[uint64]string{vip: `"presentation_version":2`, other: `"presentation_version":1`} {
		code, body := get(t, n, "/v1/wallet/"+strconv.FormatUint(act, 10))
		name := map[uint64]string{vip: `"name":"Cash (new)"`, other: `"name":"Cash"`}[act]
		if code != http.StatusOK || !strings.Contains(string(body), want) || !strings.Contains(string(body), name) {
			t.Errorf("wallet of act_id %d = %d %s, want %s with %s", act, code, body, want, name)
		}
	}
	awaitMetric(t, n, "redrain_presentation_live_version 1")
	awaitMetric(t, n, "redrain_presentation_canary_version 2")

	// To everyone, then back.
	if _, err := c.PublishPresentation(ctx, v2, nil); err != nil {
		t.Fatal(err)
	}
	awaitPresentation(t, n, someone, 2, "Cash (new)")
	awaitPresentation(t, n, vip, 2, "Cash (new)")
	if _, err := c.RollbackPresentation(ctx, v1); err != nil {
		t.Fatal(err)
	}
	awaitPresentation(t, n, someone, 1, "Cash")
	awaitPresentation(t, n, vip, 1, "Cash")
	awaitMetric(t, n, "redrain_presentation_canary_version 0")
	if _, err := c.RollbackPresentation(ctx, v1); !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" {
		t.Errorf("rollback to the live version: %v, want invalid_config", err)
	}
	if _, err := c.PublishPresentation(ctx, 9, nil); !errors.As(err, &apiErr) || apiErr.Code != "not_found" {
		t.Errorf("publish of an unknown version: %v, want not_found", err)
	}
	if _, err := c.PublishPresentation(ctx, v2, []string{"nobody"}); !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" {
		t.Errorf("publish to a bad whitelist: %v, want invalid_config", err)
	}

	// A version this node cannot compile, written past the admin API's
	// checks, is refused whole: the last good presentation (and catalog)
	// keep serving until a good one is published.
	docs := configstore.New(n.Store(), time.Now).Documents()
	bad, err := docs.Put(ctx, presentation.DocumentID, []byte(`{"slots":[{"id":"x","asset":"cash","name":"x","link":"ftp://x"}]}`), "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := docs.Publish(ctx, presentation.DocumentID, bad, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishPresentation(ctx, int64(bad), nil); !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" {
		t.Errorf("publish of a version that does not compile: %v, want invalid_config", err)
	}
	badSeq, err := docs.Seq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	awaitMetric(t, n, "redrain_config_stale 1")
	if got := configSeq(t, n); got >= int64(badSeq) {
		t.Errorf("the node applied seq %d, which holds a presentation that does not compile (published at seq %d)", got, badSeq)
	}
	awaitPresentation(t, n, someone, 1, "Cash")
	if _, err := c.RollbackPresentation(ctx, v2); err != nil {
		t.Fatal(err)
	}
	awaitPresentation(t, n, someone, 2, "Cash (new)")
	awaitServed(t, n)
	awaitMetric(t, n, "redrain_config_stale 0")
}

// canaryUser returns the one act_id of the canary a publish answered.
func canaryUser(t *testing.T, answer json.RawMessage) uint64 {
	t.Helper()
	var published struct {
		Head configstore.Head `json:"head"`
	}
	if err := json.Unmarshal(answer, &published); err != nil || published.Head.Canary == nil || len(published.Head.Canary.ActIDs) != 1 {
		t.Fatalf("canary publish answered %s, %v; want one act_id", answer, err)
	}
	return published.Head.Canary.ActIDs[0]
}

// awaitMetric waits until the node's /metrics holds line.
func awaitMetric(t *testing.T, n *node.Node, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, n, "/metrics")
		if strings.Contains("\n"+string(body), "\n"+line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q after 10s", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPresentationRestartsFromCache: a node that restarts while the store
// cannot give it a configuration snapshot (here the presentation's head
// is unreadable) serves the catalog and presentation of its cache file,
// canary included, and the store's once the store can give one again.
func TestPresentationRestartsFromCache(t *testing.T) {
	dir, addr := t.TempDir(), storagetest.Redis(t)
	n1 := startNode(t, dir, addr)
	c := adminClient(t, n1)
	ctx := context.Background()
	v1, err := c.PutPresentation(ctx, presentationDoc("Cash"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := c.PutPresentation(ctx, presentationDoc("Cash (canary)"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishPresentation(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := c.PublishPresentation(ctx, v2, []string{"1:cache-vip"})
	if err != nil {
		t.Fatal(err)
	}
	vip := canaryUser(t, raw)
	const someone = 1 << 40
	awaitServed(t, n1) // and so written to the cache file
	awaitPresentation(t, n1, vip, 2, "Cash (canary)")

	// The head becomes unreadable (without a change of seq, which no
	// mutation would leave), and the node restarts.
	key := storage.CfgHeadKeyIn(storage.CfgDocumentPrefix, presentation.DocumentID)
	var head []byte
	setHead := func(v []byte) {
		t.Helper()
		err := n1.Store().Update(ctx, func(txn storage.Txn) error {
			if head == nil {
				var err error
				if head, err = storage.Get(ctx, txn, key); err != nil || head == nil {
					return fmt.Errorf("head %s: %q, %v", key, head, err)
				}
			}
			return txn.Set(key, v)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setHead([]byte("not a head"))
	stopNode(t, n1)
	n2 := startNode(t, dir, addr)
	awaitMetric(t, n2, "redrain_config_from_cache 1")
	awaitPresentation(t, n2, vip, 2, "Cash (canary)")
	awaitPresentation(t, n2, someone, 1, "Cash")
	if code, g := grantAs(t, n2, 1, "cache-user", "demo", "rain", 1); code != 200 || g.Token == "" {
		t.Errorf("a grant while serving the cached catalog: %d %+v", code, g)
	}

	// The store gives a snapshot again: the node leaves the cache.
	err = n2.Store().Update(ctx, func(txn storage.Txn) error { return txn.Set(key, head) })
	if err != nil {
		t.Fatal(err)
	}
	awaitMetric(t, n2, "redrain_config_from_cache 0")
	awaitMetric(t, n2, "redrain_config_stale 0")
	awaitPresentation(t, n2, vip, 2, "Cash (canary)")
	awaitPresentation(t, n2, someone, 1, "Cash")
}
