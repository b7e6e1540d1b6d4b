package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/dashboard"
)

const testKey = "ops:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// adminServer is an admin API that verifies every request with
// adminauth.Verifier, records the ones that verify as
// "METHOD REQUEST-URI BODY", and answers each route with a canned body.
type adminServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newAdminServer(t *testing.T) *adminServer {
	key, err := adminauth.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{key.ID: key}, Nonces: &adminauth.MemoryNonces{}}
	s := &adminServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := v.Verify(r.Context(), []byte(r.Method), []byte(r.URL.EscapedPath()), []byte(r.URL.RawQuery),
			func(n string) []byte { return []byte(r.Header.Get(n)) }, body); err != nil {
			answer(w, 401, map[string]string{"code": "unauthorized", "message": err.Error()})
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+string(body)))
		s.mu.Unlock()
		route := r.Method + " " + r.URL.EscapedPath()
		switch {
		case strings.HasSuffix(route, "/missing"):
			answer(w, 404, map[string]string{"code": "not_found", "message": "no activity missing"})
		case r.Method == "PUT" && strings.HasPrefix(route, "PUT /admin/v1/activities/"):
			answer(w, 200, map[string]any{"activity": strings.TrimPrefix(r.URL.Path, "/admin/v1/activities/"), "version": 3})
		case route == "PUT /admin/v1/presentation":
			answer(w, 200, map[string]any{"version": 4})
		case route == "GET /admin/v1/activities":
			answer(w, 200, map[string]any{"activities": []map[string]any{{"id": "spring", "latest": 3, "live": 2, "canary": nil}}})
		case route == "GET /admin/v1/budgets":
			answer(w, 200, map[string]any{"budgets": []map[string]any{{"id": "spring/formal/cash", "asset": "cash",
				"total": 1000, "available": 400, "leased": 600, "returned": 0, "issued": 500, "booked": 480, "in_flight": 20, "ok": true}}})
		default:
			answer(w, 200, map[string]any{"route": route})
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func TestAdminCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one := write("one.json", `{"id":"spring","rains":[]}`)
	two := write("two.json", `{"activities":[{"id":"spring"},{"id":"summer"}]}`)
	dup := write("dup.json", `{"activities":[{"id":"spring"},{"id":"spring"}]}`)
	wl := write("wl.txt", "# canary users\n1:u-1\n2:u-2\n")
	empty := write("empty.txt", "\n# nobody\n")
	switches := write("switches.json", `{"grants":true}`)
	pres := write("presentation.json", `{"slots":[{"id":"cash","asset":"cash","name":"Cash"}]}`)

	for _, tc := range []struct {
		name   string
		args   []string
		env    string // REDRAIN_ADMIN_KEY
		stdin  string
		exit   int
		seen   []string // requests the server verified, in order
		stdout string   // a substring of stdout
		stderr string   // a substring of stderr
	}{
		{name: "apply one", args: []string{"apply", one},
			seen: []string{`PUT /admin/v1/activities/spring {"id":"spring","rains":[]}`}, stdout: "spring: version 3\n"},
		{name: "apply list and publish", args: []string{"apply", "--publish", two},
			seen: []string{`PUT /admin/v1/activities/spring {"id":"spring"}`, `POST /admin/v1/activities/spring/publish {"version":3}`,
				`PUT /admin/v1/activities/summer {"id":"summer"}`, `POST /admin/v1/activities/summer/publish {"version":3}`},
			stdout: "spring: version 3\nspring: version 3 published\nsummer: version 3\nsummer: version 3 published\n"},
		{name: "apply stdin", args: []string{"apply", "-"}, stdin: `{"id":"autumn"}`,
			seen: []string{`PUT /admin/v1/activities/autumn {"id":"autumn"}`}, stdout: "autumn: version 3"},
		{name: "apply duplicate ids sends nothing", args: []string{"apply", dup}, exit: 1, stderr: `id "spring" is given twice`},
		{name: "apply missing file", args: []string{"apply", filepath.Join(dir, "nope.json")}, exit: 1, stderr: "no such file"},
		{name: "apply refused", args: []string{"apply", "-"}, stdin: `{"id":"missing"}`, exit: 1,
			seen: []string{`PUT /admin/v1/activities/missing {"id":"missing"}`}, stderr: "missing: not stored\nerror: not_found: no activity missing\n"},
		{name: "list", args: []string{"list"}, seen: []string{"GET /admin/v1/activities"},
			stdout: "ID      LATEST  LIVE  CANARY\nspring  3       2     -\n"},
		{name: "get", args: []string{"get", "spring"}, seen: []string{"GET /admin/v1/activities/spring"},
			stdout: "{\n  \"route\": \"GET /admin/v1/activities/spring\"\n}\n"},
		{name: "get version", args: []string{"get", "spring", "--version", "2"}, seen: []string{"GET /admin/v1/activities/spring?version=2"}},
		{name: "get not found", args: []string{"get", "missing"}, exit: 1, seen: []string{"GET /admin/v1/activities/missing"},
			stderr: "error: not_found: no activity missing\n"},
		{name: "publish to all", args: []string{"publish", "spring", "--version", "3"},
			seen: []string{`POST /admin/v1/activities/spring/publish {"version":3}`}},
		{name: "publish to whitelist", args: []string{"publish", "--version=4", "spring", "--whitelist", "1:u-9,1:u-1", "--whitelist-file", wl},
			seen: []string{`POST /admin/v1/activities/spring/publish {"version":4,"whitelist":["1:u-9","1:u-1","2:u-2"]}`}},
		{name: "publish empty whitelist file", args: []string{"publish", "spring", "--version", "3", "--whitelist-file", empty},
			exit: 1, stderr: "whitelist is empty"},
		{name: "publish bad whitelist", args: []string{"publish", "spring", "--version", "3", "--whitelist", "u-1"},
			exit: 1, stderr: `"u-1" is not app_id:user_id`},
		{name: "publish without version", args: []string{"publish", "spring"}, exit: 2, stderr: "--version N (N >= 1) is required"},
		{name: "rollback", args: []string{"rollback", "spring", "--version", "1"},
			seen: []string{`POST /admin/v1/activities/spring/rollback {"version":1}`}},
		{name: "presentation put", args: []string{"presentation", "put", pres},
			seen: []string{`PUT /admin/v1/presentation {"slots":[{"id":"cash","asset":"cash","name":"Cash"}]}`}, stdout: "presentation: version 4\n"},
		{name: "presentation put not json", args: []string{"presentation", "put", "-"}, stdin: `{"slots":`, exit: 1, stderr: "not valid JSON"},
		{name: "presentation show", args: []string{"presentation", "show"}, seen: []string{"GET /admin/v1/presentation"}},
		{name: "presentation show version", args: []string{"presentation", "show", "--version", "2"}, seen: []string{"GET /admin/v1/presentation?version=2"}},
		{name: "presentation publish to whitelist", args: []string{"presentation", "publish", "--version", "2", "--whitelist", "1:u-1", "--whitelist-file", wl},
			seen: []string{`POST /admin/v1/presentation/publish {"version":2,"whitelist":["1:u-1","2:u-2"]}`}},
		{name: "presentation publish to all", args: []string{"presentation", "publish", "--version=2"},
			seen: []string{`POST /admin/v1/presentation/publish {"version":2}`}},
		{name: "presentation publish empty whitelist file", args: []string{"presentation", "publish", "--version", "2", "--whitelist-file", empty},
			exit: 1, stderr: "whitelist is empty"},
		{name: "presentation rollback", args: []string{"presentation", "rollback", "--version", "1"},
			seen: []string{`POST /admin/v1/presentation/rollback {"version":1}`}},
		{name: "presentation rollback without version", args: []string{"presentation", "rollback"}, exit: 2,
			stderr: "redrain admin presentation rollback: --version N (N >= 1) is required"},
		{name: "presentation without command", args: []string{"presentation"}, exit: 2, stderr: "wrong arguments"},
		{name: "presentation put without file", args: []string{"presentation", "put"}, exit: 2, stderr: "wrong arguments"},
		{name: "presentation unknown command", args: []string{"presentation", "delete"}, exit: 2, stderr: "wrong arguments"},
		{name: "budgets", args: []string{"budgets", "spring"}, seen: []string{"GET /admin/v1/budgets?activity=spring"},
			stdout: "ID                  ASSET  TOTAL  AVAILABLE  LEASED  RETURNED  ISSUED  BOOKED  IN_FLIGHT  OK\n" +
				"spring/formal/cash  cash   1000   400        600     0         500     480     20         true\n"},
		{name: "budget", args: []string{"budget", "spring/formal/cash"}, seen: []string{"GET /admin/v1/budgets/spring/formal/cash"}},
		{name: "budget bad id", args: []string{"budget", "spring//cash"}, exit: 1, stderr: "empty part"},
		{name: "switches", args: []string{"switches"}, seen: []string{"GET /admin/v1/switches"}},
		{name: "switches set file", args: []string{"switches", "set", switches}, seen: []string{`PUT /admin/v1/switches {"grants":true}`}},
		{name: "switches set stdin", args: []string{"switches", "set", "-"}, stdin: `{"grants":false}`,
			seen: []string{`PUT /admin/v1/switches {"grants":false}`}},
		{name: "switches set not json", args: []string{"switches", "set", "-"}, stdin: `{`, exit: 1, stderr: "not valid JSON"},
		{name: "switches bad", args: []string{"switches", "get"}, exit: 2, stderr: "wrong arguments"},
		{name: "stats", args: []string{"stats"}, seen: []string{"GET /admin/v1/stats"}, stdout: `"GET /admin/v1/stats"`},
		{name: "audit", args: []string{"audit"}, seen: []string{"GET /admin/v1/audit"}},
		{name: "cluster", args: []string{"cluster"}, seen: []string{"GET /admin/v1/cluster"}},
		{name: "expiry run", args: []string{"expiry", "run"}, seen: []string{"POST /admin/v1/expiry/run"}, stdout: `"POST /admin/v1/expiry/run"`},
		{name: "expiry without run", args: []string{"expiry", "now"}, exit: 2, stderr: `want "run"`},
		{name: "expiry without command", args: []string{"expiry"}, exit: 2, stderr: "wrong arguments"},
		{name: "unknown command", args: []string{"frobnicate"}, exit: 2, stderr: `unknown command "frobnicate"`},
		{name: "missing argument", args: []string{"get"}, exit: 2, stderr: "wrong arguments"},
		{name: "extra argument", args: []string{"stats", "x"}, exit: 2, stderr: "wrong arguments"},
		{name: "bad flag", args: []string{"stats", "--nope"}, exit: 2, stderr: "flag provided but not defined"},
		{name: "key from env", args: []string{"stats"}, env: testKey, seen: []string{"GET /admin/v1/stats"}},
		{name: "default dev key refused", args: []string{"stats"}, env: "-", exit: 1, stderr: `error: unauthorized: unknown_key: key "dev"`},
		{name: "bad key", args: []string{"--key", "ops:00", "stats"}, env: "-", exit: 2, stderr: "error: --key:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAdminServer(t)
			args := append([]string{"--target", srv.URL}, tc.args...)
			env := ""
			switch tc.env {
			case "":
				args = append([]string{"--key", testKey}, args...)
			case "-": // neither --key nor the environment: the development key
			default:
				env = tc.env
			}
			c, stdout, stderr := testCLI(map[string]string{"REDRAIN_ADMIN_KEY": env}, tc.stdin)
			exit := runAdmin(context.Background(), c, args)
			srv.mu.Lock()
			seen := srv.seen
			srv.mu.Unlock()
			if exit != tc.exit {
				t.Errorf("exit %d, want %d; stderr:\n%s", exit, tc.exit, stderr.String())
			}
			if strings.Join(seen, "\n") != strings.Join(tc.seen, "\n") {
				t.Errorf("server saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(tc.seen, "\n"))
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout:\n%s\nwant it to contain:\n%s", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr:\n%s\nwant it to contain:\n%s", stderr.String(), tc.stderr)
			}
		})
	}
}

func TestAdminUnreachable(t *testing.T) {
	target := deadAddr(t)
	c, _, stderr := testCLI(nil, "")
	exit := runAdmin(context.Background(), c, []string{"--target", target, "stats"})
	if exit != 2 || !strings.Contains(stderr.String(), "error: adminauth: no answer: GET "+target+"/admin/v1/stats") {
		t.Errorf("exit %d, stderr %q; want 2 and no answer", exit, stderr.String())
	}
}

// TestAdminDashboard: the printed URL is the target's dashboard with a
// ticket that the node's verifier accepts for the dashboard, within --ttl;
// a --ttl past the maximum is a usage error.
func TestAdminDashboard(t *testing.T) {
	c, stdout, stderr := testCLI(nil, "")
	exit := runAdmin(context.Background(), c, []string{"--target", "http://10.0.0.5:9300/", "--key", testKey, "dashboard", "--ttl", "2h"})
	if exit != 0 || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", exit, stderr.String())
	}
	u, err := url.Parse(strings.TrimSpace(stdout.String()))
	if err != nil || u.Scheme+"://"+u.Host+u.Path != "http://10.0.0.5:9300/dashboard" {
		t.Fatalf("printed %q (%v)", stdout.String(), err)
	}
	key := adminauth.MustParseKey(testKey)
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{key.ID: key}}
	if id, err := v.VerifyTicket(dashboard.TicketScope, u.Query().Get("ticket")); err != nil || id != key.ID {
		t.Errorf("ticket: %q, %v", id, err)
	}
	v.Now = func() time.Time { return time.Now().Add(2*time.Hour + time.Minute) }
	if _, err := v.VerifyTicket(dashboard.TicketScope, u.Query().Get("ticket")); err == nil {
		t.Error("the ticket outlives its --ttl")
	}
	c, _, stderr = testCLI(nil, "")
	if exit := runAdmin(context.Background(), c, []string{"--key", testKey, "dashboard", "--ttl", "48h"}); exit != 2 || !strings.Contains(stderr.String(), "--ttl 48h0m0s: more than 0, at most 24h0m0s") {
		t.Errorf("--ttl 48h: exit %d, stderr %q", exit, stderr.String())
	}
}
