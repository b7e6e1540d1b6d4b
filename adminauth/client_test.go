package adminauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
)

// verifyingServer is an admin API that refuses requests that do not verify
// and answers the others with answer.
func verifyingServer(t *testing.T, status int, answer string) (*httptest.Server, *[]string) {
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey}, Nonces: &adminauth.MemoryNonces{}}
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := v.Verify(r.Context(), []byte(r.Method), []byte(r.URL.EscapedPath()), []byte(r.URL.RawQuery),
			func(name string) []byte { return []byte(r.Header.Get(name)) }, body)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"code": "unauthorized", "message": err.Error()})
			return
		}
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestClientDo(t *testing.T) {
	srv, seen := verifyingServer(t, 200, `{"activity":"a b","version":3}`)
	c := &adminauth.Client{Target: srv.URL + "/", Signer: &adminauth.Signer{Key: testKey}}
	ctx := context.Background()
	var out adminauth.Applied
	q := url.Values{"z": {"1"}, "a": {"x y", "&"}}
	if err := c.Do(ctx, "PUT", adminauth.ActivityPath("a b"), q, map[string]int{"n": 1}, &out); err != nil {
		t.Fatal(err)
	}
	if out != (adminauth.Applied{Activity: "a b", Version: 3}) {
		t.Errorf("answer = %+v", out)
	}
	want := `PUT /admin/v1/activities/a%20b?a=x+y&a=%26&z=1 {"n":1}`
	if len(*seen) != 1 || (*seen)[0] != want {
		t.Errorf("server saw %q, want %q", *seen, want)
	}

	// A wrong key is answered 401, which is an *APIError.
	bad := &adminauth.Client{Target: srv.URL, Signer: &adminauth.Signer{Key: otherKey}}
	var apiErr *adminauth.APIError
	if err := bad.Do(ctx, "GET", adminauth.PathStats, nil, nil, nil); !errors.As(err, &apiErr) ||
		apiErr.Status != 401 || apiErr.Code != "unauthorized" || !strings.Contains(apiErr.Message, "bad_signature") {
		t.Errorf("Do with another secret = %v, want 401 unauthorized bad_signature", err)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	signer := &adminauth.Signer{Key: testKey}
	conflict, _ := verifyingServer(t, 409, `{"code":"version_conflict","message":"version 3 exists"}`)
	plain, _ := verifyingServer(t, 502, "bad gateway\n")
	notJSON, _ := verifyingServer(t, 200, "<html>")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	var out json.RawMessage
	for _, tc := range []struct {
		name, target string
		check        func(error) bool
	}{
		{"api error", conflict.URL, func(err error) bool {
			var e *adminauth.APIError
			return errors.As(err, &e) && e.Status == 409 && e.Code == "version_conflict" && e.Message == "version 3 exists" &&
				err.Error() == "version_conflict: version 3 exists"
		}},
		{"plain error", plain.URL, func(err error) bool {
			var e *adminauth.APIError
			return errors.As(err, &e) && e.Status == 502 && e.Code == "" && e.Message == "bad gateway"
		}},
		{"not json", notJSON.URL, func(err error) bool {
			var e *adminauth.APIError
			return err != nil && !errors.As(err, &e) && !errors.Is(err, adminauth.ErrUnreachable)
		}},
		{"unreachable", closed, func(err error) bool { return errors.Is(err, adminauth.ErrUnreachable) }},
		{"target with path", conflict.URL + "/x", func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "base URL")
		}},
		{"target not http", "ftp://127.0.0.1", func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "base URL")
		}},
	} {
		c := &adminauth.Client{Target: tc.target, Signer: signer}
		if err := c.Do(ctx, "GET", adminauth.PathStats, nil, nil, &out); !tc.check(err) {
			t.Errorf("%s: Do = %v", tc.name, err)
		}
	}
}

// TestFasthttpServer checks the wiring a fasthttp server uses: the raw
// path is URI().PathOriginal() and the raw query URI().QueryString().
func TestFasthttpServer(t *testing.T) {
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey}, Nonces: &adminauth.MemoryNonces{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		_, err := v.Verify(ctx, ctx.Method(), ctx.URI().PathOriginal(), ctx.URI().QueryString(),
			ctx.Request.Header.Peek, ctx.PostBody())
		if err != nil {
			ctx.SetStatusCode(401)
			b, _ := json.Marshal(map[string]string{"code": "unauthorized", "message": err.Error()})
			ctx.SetBody(b)
			return
		}
		ctx.SetBodyString(`{}`)
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	c := &adminauth.Client{Target: "http://" + ln.Addr().String(), Signer: &adminauth.Signer{Key: testKey}}
	ctx := context.Background()
	path, err := adminauth.BudgetPath("spring/formal x/cash")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, adminauth.ActivityPath("a/../b%"), "/admin/v1//x/./y"} {
		err := c.Do(ctx, "POST", p, url.Values{"v": {"1", "a b"}, "w": {"+"}}, []byte(`{"a":1}`), nil)
		if err != nil {
			t.Errorf("POST %s: %v", p, err)
		}
	}
	// The signature binds the body the server reads.
	h, err := c.Signer.Headers("POST", "/admin/v1/x", "", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", c.Target+"/admin/v1/x", bytes.NewReader([]byte("{ }")))
	req.Header = h
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("altered body answered %d, want 401", resp.StatusCode)
	}
}

func TestParseActivities(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantIDs string // comma-separated; "" when an error is expected
	}{
		{`{"id":"spring","rains":[]}`, "spring"},
		{` {"id":"spring"} `, "spring"},
		{`{"activities":[{"id":"a"},{"id":"b","x":1}]}`, "a,b"},
		{`{"id":"a","activities":3}`, "a"},
		{`{"activities":[{"id":"a"},{"id":"a"}]}`, ""},
		{`{"activities":[]}`, ""},
		{`{"activities":[{"id":"a"}],"x":1}`, ""},
		{`{"activities":[{"rains":[]}]}`, ""},
		{`{"id":""}`, ""},
		{`{"id":3}`, ""},
		{`{"rains":[]}`, ""},
		{`[{"id":"a"}]`, ""},
		{`{"id":"a"} {"id":"b"}`, ""},
		{``, ""},
	} {
		docs, err := adminauth.ParseActivities([]byte(tc.in))
		var ids []string
		for _, d := range docs {
			ids = append(ids, d.ID)
			if !json.Valid(d.Body) {
				t.Errorf("ParseActivities(%s): body %q is not JSON", tc.in, d.Body)
			}
		}
		if got := strings.Join(ids, ","); got != tc.wantIDs || (err == nil) != (tc.wantIDs != "") {
			t.Errorf("ParseActivities(%s) = %q, %v; want %q", tc.in, got, err, tc.wantIDs)
		}
	}
}

func TestParseWhitelist(t *testing.T) {
	for _, tc := range []struct {
		list, file string
		want       string // joined by " "; "!" for an error
	}{
		{"", "", ""},
		{"1:u-1,2:u-2", "", "1:u-1 2:u-2"},
		{" 1:u-1 , 1:u-1", "# ops\n\n3:x\n1:u-1\n", "1:u-1 3:x"},
		{"1:u:1", "", "1:u:1"},
		{"u-1", "", "!"},
		{"1:", "", "!"},
		{"x:u", "", "!"},
		{"-1:u", "", "!"},
		{"4294967296:u", "", "!"},
		{"1:u,,2:v", "", "!"},
		{"", "1:a b\n", "!"},
	} {
		var r io.Reader
		if tc.file != "" {
			r = strings.NewReader(tc.file)
		}
		got, err := adminauth.ParseWhitelist(tc.list, r)
		s := strings.Join(got, " ")
		if err != nil {
			s = "!"
		}
		if s != tc.want {
			t.Errorf("ParseWhitelist(%q, %q) = %q, %v; want %q", tc.list, tc.file, got, err, tc.want)
		}
	}
}

func TestWriteTables(t *testing.T) {
	var b strings.Builder
	err := adminauth.WriteActivities(&b, json.RawMessage(
		`{"activities":[{"id":"spring","latest":3,"live":2,"canary":{"version":3}},{"id":"x\ty","latest":1,"live":null}]}`))
	want := "ID      LATEST  LIVE  CANARY\n" +
		"spring  3       2     {\"version\":3}\n" +
		"\"x\\ty\"  1       -     -\n"
	if err != nil || b.String() != want {
		t.Errorf("WriteActivities = %v\n%s\nwant\n%s", err, b.String(), want)
	}
	b.Reset()
	err = adminauth.WriteBudgets(&b, json.RawMessage(`{"budgets":[{"id":"s/formal/cash","asset":"cash","total":100,`+
		`"available":40,"leased":60,"returned":0,"issued":50,"booked":45,"in_flight":5,"ok":true}]}`))
	want = "ID             ASSET  TOTAL  AVAILABLE  LEASED  RETURNED  ISSUED  BOOKED  IN_FLIGHT  OK\n" +
		"s/formal/cash  cash   100    40         60      0         50      45      5          true\n"
	if err != nil || b.String() != want {
		t.Errorf("WriteBudgets = %v\n%s\nwant\n%s", err, b.String(), want)
	}
	for _, bad := range []string{`{"budgets":3}`, `{}`, `[]`, `nope`} {
		if err := adminauth.WriteBudgets(io.Discard, json.RawMessage(bad)); err == nil {
			t.Errorf("WriteBudgets(%s) succeeded", bad)
		}
	}
}
