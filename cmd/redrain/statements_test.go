package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatementsCommand: the command asks GET /admin/v1/statements signed,
// with the query as given, prints a CSV answer as it is, exits 1 on an
// error answer and 2 on bad usage without asking.
func TestStatementsCommand(t *testing.T) {
	const csv = "party,period,date,closed,section,item,asset,count,amount,amount_yuan\r\nmerchant:m1,day,2026-12-05,true,income,consume,cash,1,10000,100.00\r\n"
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.RequestURI())
		if r.Header.Get("X-Redrain-Signature") == "" || r.URL.Path != "/admin/v1/statements" {
			w.WriteHeader(401)
			return
		}
		if r.URL.Query().Get("party") == "merchant:none" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"code":"malformed_request","message":"no"}`))
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		_, _ = w.Write([]byte(csv))
	}))
	defer srv.Close()
	c, stdout, stderr := testCLI(nil, "")
	exit := runStatements(context.Background(), c, []string{"--target", srv.URL, "--period", "day", "--date", "2026-12-05", "--party", "merchant:m1", "--format", "csv"})
	if exit != 0 || stdout.String() != csv {
		t.Fatalf("exit %d, stdout %q, stderr %q", exit, stdout, stderr)
	}
	if len(asked) != 1 || asked[0] != "/admin/v1/statements?date=2026-12-05&format=csv&party=merchant%3Am1&period=day" {
		t.Errorf("asked %q", asked)
	}
	c, _, stderr = testCLI(nil, "")
	if exit := runStatements(context.Background(), c, []string{"--target", srv.URL, "--period", "day", "--date", "2026-12-05", "--party", "merchant:none"}); exit != 1 || !strings.Contains(stderr.String(), "malformed_request") {
		t.Errorf("error answer: exit %d, stderr %q", exit, stderr)
	}
	for _, args := range [][]string{
		{"--period", "week", "--date", "2026", "--party", "merchant:m1"},
		{"--period", "day", "--date", "2026-12-05", "--party", "shop:1"},
		{"--period", "day", "--date", "2026-12-05", "--party", "merchant:m1", "--format", "xml"},
		{"--period", "day", "--date", "2026-12-05", "--party", "merchant:m1", "extra"},
	} {
		c, _, stderr := testCLI(nil, "")
		if exit := runStatements(context.Background(), c, append([]string{"--target", srv.URL}, args...)); exit != 2 || stderr.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 with a message", args, exit, stderr)
		}
	}
	if len(asked) != 2 {
		t.Errorf("bad usage asked the node: %q", asked)
	}
}
