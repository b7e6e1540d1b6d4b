package node_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"redrain/adminauth"
	"redrain/campaign"
	"redrain/dashboard"
	"redrain/errcode"
	"redrain/ingress"
	"redrain/node"
	"redrain/openapi"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/withdraw"
	"redrain/withdraw/paytest"
)

// The OpenAPI document (package openapi) is checked against a running
// node: every route in it is driven with real requests, successes and
// each documented status, and every request and answer is validated
// against the document by kin-openapi (openapi3filter). The test fails
// on any mismatch, on a status the document lists that no request
// produced, and on a status a request produced that the document lists
// only under "default" (which stands for what a healthy node does not
// answer: internal, a backend down, a configuration conflict).

// loadDocument loads and validates the served OpenAPI document.
func loadDocument(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapi.JSON())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json does not validate: %v", err)
	}
	return doc
}

// documentedCodes returns the error codes a response's schema allows
// (the code's const or enum beside the Error schema), nil if it is not
// an error.
func documentedCodes(r *openapi3.Response) []string {
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return nil
	}
	s := mt.Schema.Value
	if len(s.AllOf) != 2 || !strings.HasSuffix(s.AllOf[0].Ref, "/Error") {
		return nil
	}
	code := s.AllOf[1].Value.Properties["code"].Value
	if code.Const != nil {
		return []string{code.Const.(string)}
	}
	var out []string
	for _, v := range code.Enum {
		out = append(out, v.(string))
	}
	return out
}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1, and every
// error code an operation documents under a status has that status in
// the error table (errcode).
func TestOpenAPIDocument(t *testing.T) {
	doc := loadDocument(t)
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, ref := range op.Responses.Map() {
				codes := documentedCodes(ref.Value)
				if status == "default" {
					for _, c := range codes {
						if s := errcode.Code(c).Status(); s != 500 && s != 503 && s != 409 {
							t.Errorf("%s %s default: code %s (%d) is not an unexpected failure", method, path, c, s)
						}
					}
					continue
				}
				for _, c := range codes {
					if s := strconv.Itoa(errcode.Code(c).Status()); s != status {
						t.Errorf("%s %s %s: code %s has status %s in the error table", method, path, status, c, s)
					}
				}
			}
		}
	}
}

// signer signs a request with its body (nil: sent unsigned).
type signer func(req *http.Request, body []byte) error

func asApp(app uint32) signer {
	return (&adminauth.Signer{Key: adminauth.MustParseKey(testAppKey(app))}).Sign
}

var asAdmin signer = adminSigner.Sign

// badSignature signs as s, then alters the signature.
func badSignature(s signer) signer {
	return func(req *http.Request, body []byte) error {
		if err := s(req, body); err != nil {
			return err
		}
		req.Header.Set(adminauth.HeaderSignature, strings.Repeat("0", 64))
		return nil
	}
}

// call is one request of the test: method and path (with its query) on
// the listener the document names for it (ops: the operations listener).
type call struct {
	method, path string
	body         string
	sign         signer
	ops          bool // on the operations listener; else by path (urlOf)
	api          bool // on the API listener
	// invalid says the request does not meet the document (the node
	// refuses it: the validator must too).
	invalid bool
	want    int // the status expected
	// anyOf, when set instead of want, is the statuses any of which the
	// answer may have (a rate that a slow machine may refill meanwhile).
	anyOf  []int
	code   string // the error code expected, if any
	stream bool   // an event stream: only status and headers are read
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
}

// apiCheck drives one node and checks every exchange against the
// document, keeping what it exercised.
type apiCheck struct {
	t      *testing.T
	n      *node.Node
	doc    *openapi3.T
	router routers.Router
	client *http.Client // signs nothing by itself
	// covered holds "METHOD path status" of every exchange the document
	// lists, plus "OTHER path 405" and "LISTENER path 404" of the checks
	// of x-redrain-method-not-allowed and x-redrain-listener.
	covered map[string]bool
	codes   map[string]bool // "METHOD path status code" seen
}

func newAPICheck(t *testing.T, n *node.Node) *apiCheck {
	doc := loadDocument(t)
	// Route on this node's two listeners.
	doc.Servers = openapi3.Servers{{URL: "http://" + n.Addr()}, {URL: "http://" + n.AdminAddr()}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &apiCheck{t: t, n: n, doc: doc, router: router, client: &http.Client{Timeout: 60 * time.Second},
		covered: map[string]bool{}, codes: map[string]bool{}}
}

func (a *apiCheck) url(c call) string {
	switch {
	case c.ops:
		return "http://" + a.n.AdminAddr() + c.path
	case c.api:
		return "http://" + a.n.Addr() + c.path
	case strings.HasPrefix(c.path, "/dashboard"):
		return "http://" + a.n.AdminAddr() + c.path
	}
	return urlOf(a.n, c.path)
}

// The validator decodes the page as text.
func init() { openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder) }

// authenticate stands for the node's signature check in the validator:
// it asks only that the scheme's header or query parameter be there.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s, r := in.SecurityScheme, in.RequestValidationInput.Request
	switch {
	case s.In == "header" && r.Header.Get(s.Name) == "":
		return fmt.Errorf("no header %s", s.Name)
	case s.In == "query" && r.URL.Query().Get(s.Name) == "":
		return fmt.Errorf("no query parameter %s", s.Name)
	}
	return nil
}

// do sends c, validates the request and the answer against the document
// and checks the status (and code) c wants.
func (a *apiCheck) do(c call) answer {
	t := a.t
	t.Helper()
	var body []byte
	if c.body != "" {
		body = []byte(c.body)
	}
	newReq := func(ctx context.Context) *http.Request {
		req, err := http.NewRequestWithContext(ctx, c.method, a.url(c), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := newReq(ctx)
	if c.sign != nil {
		if err := c.sign(req, body); err != nil {
			t.Fatal(err)
		}
	}
	var resp *http.Response
	var err error
	if len(body) > ingress.ListBodyBytesMax {
		resp, err = headersOnly(req, len(body))
	} else {
		resp, err = a.client.Do(req)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	ans := answer{status: resp.StatusCode, header: resp.Header}
	if !c.stream {
		if ans.body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("%s %s: read: %v", c.method, c.path, err)
		}
	}
	resp.Body.Close()
	what := fmt.Sprintf("%s %s %.200s", c.method, c.path, c.body)
	switch {
	case c.anyOf != nil && !slices.Contains(c.anyOf, ans.status):
		t.Errorf("%s: %d %.300s, want one of %v", what, ans.status, ans.body, c.anyOf)
	case c.anyOf == nil && ans.status != c.want:
		t.Errorf("%s: %d %.300s, want %d", what, ans.status, ans.body, c.want)
	}
	var e struct{ Code string }
	if ans.status >= 400 {
		_ = json.Unmarshal(ans.body, &e)
		if c.code != "" && e.Code != c.code {
			t.Errorf("%s: %d %.300s, want code %s", what, ans.status, ans.body, c.code)
		}
	}

	// The validator reads its own copy of the request.
	vreq := newReq(context.Background())
	vreq.Header = req.Header.Clone()
	route, params, err := a.router.FindRoute(vreq)
	if err != nil {
		t.Errorf("%s: no route in the document: %v", what, err)
		return ans
	}
	opts := &openapi3filter.Options{AuthenticationFunc: authenticate, IncludeResponseStatus: true, MultiError: true, ExcludeResponseBody: c.stream}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case c.invalid && err == nil:
		t.Errorf("%s: the document accepts a request the node refuses (%d)", what, ans.status)
	case !c.invalid && err != nil:
		t.Errorf("%s: request does not meet the document: %v", what, err)
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: ans.status, Header: ans.header,
		Body: io.NopCloser(bytes.NewReader(ans.body)), Options: opts})
	if err != nil {
		t.Errorf("%s: answer %d %.300s does not meet the document: %v", what, ans.status, ans.body, err)
	}
	key := route.Method + " " + route.Path + " " + strconv.Itoa(ans.status)
	if route.Operation.Responses.Status(ans.status) == nil {
		t.Errorf("%s: answered %d, which the document lists only as default", what, ans.status)
	}
	a.covered[key] = true
	if e.Code != "" {
		a.codes[key+" "+e.Code] = true
	}
	return ans
}

// errorSchema validates body against a response of components.
func (a *apiCheck) errorBody(what, response string, body []byte) {
	a.t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		a.t.Errorf("%s: %v: %s", what, err, body)
		return
	}
	s := a.doc.Components.Responses[response].Value.Content.Get("application/json").Schema.Value
	if err := s.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		a.t.Errorf("%s: %s does not meet %s: %v", what, body, response, err)
	}
}

// samplePath fills a templated path of the document.
func samplePath(p string) string {
	return strings.NewReplacer("{act_id}", "1", "{id}", "demo", "{activity}", "demo", "{stage}", "formal", "{award}", "cash").Replace(p)
}

func methodsOf(item *openapi3.PathItem) []string {
	return slices.Sorted(maps.Keys(item.Operations()))
}

// generic runs the checks every path gets: its routes on the other
// listener are not found; another method is refused 405 where the
// document says so; each signed operation refuses an unsigned request.
func (a *apiCheck) generic() {
	t := a.t
	for _, path := range a.doc.Paths.InMatchingOrder() {
		item := a.doc.Paths.Value(path)
		methods := methodsOf(item)
		url := samplePath(path)
		isOps := item.Extensions["x-redrain-listener"] == "operations"
		if l := item.Extensions["x-redrain-listener"]; l != "both" {
			other := "http://" + a.n.AdminAddr()
			if isOps {
				other = "http://" + a.n.Addr()
			}
			resp, err := a.client.Get(other + url)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("GET %s on the other listener: %d %s, want 404", path, resp.StatusCode, b)
			}
			a.errorBody("GET "+path+" on the other listener", "NotFound", b)
			a.covered["LISTENER "+path+" 404"] = true
		}
		if item.Extensions["x-redrain-method-not-allowed"] == true {
			req, _ := http.NewRequest(http.MethodDelete, "http://"+a.n.Addr()+url, nil)
			if isOps {
				req, _ = http.NewRequest(http.MethodDelete, "http://"+a.n.AdminAddr()+url, nil)
			}
			if strings.HasPrefix(path, "/admin/") {
				if err := adminSigner.Sign(req, nil); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := a.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			allow := strings.Split(strings.ReplaceAll(resp.Header.Get("Allow"), " ", ""), ",")
			slices.Sort(allow)
			if resp.StatusCode != 405 || !slices.Equal(allow, methods) {
				t.Errorf("DELETE %s: %d Allow %q %s, want 405 Allow %v", path, resp.StatusCode, resp.Header.Get("Allow"), b, methods)
			}
			a.errorBody("DELETE "+path, "MethodNotAllowed", b)
			a.covered["OTHER "+path+" 405"] = true
		}
		for _, m := range methods {
			op := item.GetOperation(m)
			if op.Security == nil || len(*op.Security) == 0 {
				continue
			}
			body := ""
			if op.RequestBody != nil {
				body = "{}"
			}
			a.do(call{method: m, path: url, body: body, ops: isOps, api: !isOps, invalid: true, want: 401, code: "unauthorized"})
		}
	}
}

// assertCovered fails for every status the document lists that no
// request produced, and logs the documented codes never seen.
func (a *apiCheck) assertCovered() {
	t := a.t
	var unseen []string
	for _, path := range a.doc.Paths.InMatchingOrder() {
		item := a.doc.Paths.Value(path)
		if l := item.Extensions["x-redrain-listener"]; l != "both" && !a.covered["LISTENER "+path+" 404"] {
			t.Errorf("%s on the other listener: never checked", path)
		}
		if item.Extensions["x-redrain-method-not-allowed"] == true && !a.covered["OTHER "+path+" 405"] {
			t.Errorf("%s with another method: never checked", path)
		}
		for _, m := range methodsOf(item) {
			for status, ref := range item.GetOperation(m).Responses.Map() {
				if status == "default" {
					continue
				}
				key := m + " " + path + " " + status
				if !a.covered[key] {
					t.Errorf("%s: documented, never answered", key)
					continue
				}
				for _, c := range documentedCodes(ref.Value) {
					if !a.codes[key+" "+c] {
						unseen = append(unseen, key+" "+c)
					}
				}
			}
		}
	}
	slices.Sort(unseen)
	t.Logf("documented codes no request produced (their status was): %s", strings.Join(unseen, "; "))
}

// The test activity: a closed rain, an internal stage for two users and a
// budget of 1 fen.
const oaActivity = `{"id":"oa",
 "rains":[{"scene_id":"lobby","rain_id":1,"always_open":true,"start":"2026-01-01T00:00:00Z"},
          {"scene_id":"lobby","rain_id":2,"start":"2020-01-01T00:00:00Z","end":"2020-01-02T00:00:00Z"}],
 "awards":[{"type":"cash","kind":"money","min":1,"max":1}],
 "stages":[{"stage":"internal","whitelist":["1:vip1","1:vip2"],"budgets":{"cash":1}}]}`

func grantBody(app uint32, user, activity, scene string, rain uint64) string {
	return fmt.Sprintf(`{"app_id":%d,"user_id":%q,"activity_id":%q,"scene_id":%q,"rain_id":%d}`, app, user, activity, scene, rain)
}

// TestOpenAPIAgainstNode drives a node through every route and status of
// the document and validates every request and answer against it.
func TestOpenAPIAgainstNode(t *testing.T) {
	line := newTestLine(t)
	// The spending routes and withdrawals book through the node's own
	// booking (Move; the grant path's Outstanding and Book); the payout
	// channel is the test server over HTTP.
	pay := paytest.New()
	t.Cleanup(pay.Close)
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), configFileWith(t, func(c *campaign.Config) {
		withLine(line.srv.URL)(c)
		c.Activities = append(c.Activities, withdrawActivity(c.Activities[0]))
	}), func(c *node.Config) {
		c.Withdraw = node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}}
	})
	a := newAPICheck(t, n)
	const pad = 70 << 10     // past a grant or bind body's 64 KiB
	const bigPad = 1<<20 + 1 // past every body's 1 MiB
	spaces := func(k int) string { return strings.Repeat(" ", k) }

	// Probes and this document, on both listeners where served.
	for _, ops := range []bool{false, true} {
		ans := a.do(call{method: "GET", path: "/openapi.json", ops: ops, api: !ops, want: 200})
		if !bytes.Equal(ans.body, openapi.JSON()) {
			t.Errorf("GET /openapi.json (ops %v) is not the embedded document", ops)
		}
		a.do(call{method: "GET", path: "/healthz", ops: ops, api: !ops, want: 200})
		a.do(call{method: "GET", path: "/readyz", ops: ops, api: !ops, want: 200})
	}
	a.do(call{method: "GET", path: "/metrics", want: 200})
	a.do(call{method: "GET", path: "/metrics/tikv", want: 200})

	// The wallet's presentation: shown before any put, put, published to
	// a whitelist and to all, rolled back.
	const presentationDoc = `{"slots":[{"id":"cash","asset":"cash","name":"Cash","link":"https://w.example.com/c"},{"id":"coins","asset":"coin:*","name":"Coins","hidden":true}]}`
	a.do(call{method: "GET", path: "/admin/v1/presentation", sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "PUT", path: "/admin/v1/presentation", body: presentationDoc, sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/presentation", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/presentation?version=1", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/presentation?version=x", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/presentation?version=9", sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "PUT", path: "/admin/v1/presentation", body: `{"slots":[{"id":"cash","asset":"cash","name":"Cash","colour":"red"}]}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "PUT", path: "/admin/v1/presentation", body: `{"slots":[{"id":"gems","asset":"gems","name":"Gems"}]}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "PUT", path: "/admin/v1/presentation", body: presentationDoc + spaces(bigPad), sign: asAdmin, want: 413, code: "request_too_large"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/publish", body: `{"version":9}`, sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/publish", body: `{"version":0}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/publish", body: `{"version":1,"whitelist":["nobody"]}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/publish", body: `{"version":1,"whitelist":["1:vip1"]}`, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/presentation/publish", body: `{"version":1}`, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/presentation/rollback", body: `{"version":1,"whitelist":["1:a"]}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/rollback", body: `{"version":9}`, sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "POST", path: "/admin/v1/presentation/rollback", body: `{"version":1}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "PUT", path: "/admin/v1/presentation", body: presentationDoc, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/presentation/rollback", body: `{"version":2}`, sign: asAdmin, want: 200})

	// Activities: put, show, publish, roll back.
	a.do(call{method: "PUT", path: "/admin/v1/activities/oa", body: oaActivity, sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/activities", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/activities/oa", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/activities/oa?version=1", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/activities/oa?version=x", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/activities/nope", sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "PUT", path: "/admin/v1/activities/oa", body: strings.Replace(oaActivity, `"oa"`, `"ob"`, 1), sign: asAdmin, want: 400, code: "malformed_request"})
	a.do(call{method: "PUT", path: "/admin/v1/activities/oa", body: `{"id":"oa","rains":[],"awards":[],"stages":[]}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "PUT", path: "/admin/v1/activities/oa", body: oaActivity + spaces(bigPad), sign: asAdmin, want: 413, code: "request_too_large"})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/publish", body: `{"version":99}`, sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/publish", body: `{"version":0}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/rollback", body: `{"version":1,"whitelist":["1:a"]}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/admin/v1/activities/nope/rollback", body: `{"version":1}`, sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/publish", body: `{"version":1}`, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/publish", body: `{"version":1,"whitelist":["nobody"]}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/rollback", body: `{"version":1}`, sign: asAdmin, want: 422, code: "invalid_config"})
	a.do(call{method: "PUT", path: "/admin/v1/activities/oa", body: oaActivity, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/publish", body: `{"version":2}`, sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/activities/oa/rollback", body: `{"version":1}`, sign: asAdmin, want: 200})
	awaitServed(t, n)

	// Budgets, switches, stats, audit, cluster, parked.
	a.do(call{method: "GET", path: "/admin/v1/budgets", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/budgets?activity=oa", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/budgets/oa/internal/cash", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/budgets/oa/formal/cash", sign: asAdmin, want: 404, code: "not_found"})
	a.do(call{method: "GET", path: "/admin/v1/switches", sign: asAdmin, want: 200})
	a.do(call{method: "PUT", path: "/admin/v1/switches", body: `{"shed_percent":101}`, sign: asAdmin, invalid: true, want: 422, code: "invalid_config"})
	a.do(call{method: "PUT", path: "/admin/v1/switches", body: `{}` + spaces(bigPad), sign: asAdmin, want: 413, code: "request_too_large"})
	a.do(call{method: "GET", path: "/admin/v1/stats", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/stats", sign: badSignature(asAdmin), want: 401, code: "unauthorized"})
	a.do(call{method: "GET", path: "/admin/v1/cluster", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/parked", sign: asAdmin, want: 200})

	// Grants.
	var first, second, third struct {
		Token string `json:"token"`
		ActID uint64 `json:"act_id"`
	}
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "demo", "rain", 1), sign: asApp(1), want: 200}).json(t, &first)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-2", "demo", "rain", 1), sign: asApp(1), want: 200}).json(t, &second)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-3", "demo", "rain", 1), sign: asApp(1), want: 200}).json(t, &third)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "demo", "rain", 1), sign: badSignature(asApp(1)), want: 401, code: "unauthorized"})
	a.do(call{method: "POST", path: "/v1/grants", body: `{"app_id":1,`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/grants", body: `{"app_id":1,"user_id":"o-1","activity_id":"demo","scene_id":"rain","rain_id":1,"x":1}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "demo", "rain", 1) + spaces(pad), sign: asApp(1), want: 413, code: "request_too_large"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(2, "o-1", "demo", "rain", 1), sign: asApp(1), want: 403, code: "forbidden"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "plain", "oa", "lobby", 1), sign: asApp(1), want: 403, code: "not_eligible"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "nope", "rain", 1), sign: asApp(1), want: 404, code: "unknown_activity"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "demo", "rain", 9), sign: asApp(1), want: 404, code: "unknown_rain"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "vip1", "oa", "lobby", 2), sign: asApp(1), want: 409, code: "rain_closed"})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "vip1", "oa", "lobby", 1), sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "vip2", "oa", "lobby", 1), sign: asApp(1), want: 409, code: "budget_exhausted"})
	setSwitches := func(body string) {
		t.Helper()
		a.do(call{method: "PUT", path: "/admin/v1/switches", body: body, sign: asAdmin, want: 200})
		awaitServed(t, n)
	}
	setSwitches(`{"user_rate":0.001,"user_burst":1}`)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-4", "demo", "rain", 1), sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-4", "demo", "rain", 1), sign: asApp(1), want: 429, code: "rate_limited"})
	setSwitches(`{"shed_percent":100,"retry_after_seconds":3}`)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-5", "demo", "rain", 1), sign: asApp(1), want: 503, code: "shed"})
	setSwitches(`{"closed_rains":["demo/rain/1"]}`)
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-5", "demo", "rain", 1), sign: asApp(1), want: 503, code: "rain_switched_off"})
	setSwitches(`{}`)
	a.do(call{method: "POST", path: "/v1/grants/batch", sign: asApp(1), want: 200,
		body: `{"grants":[` + grantBody(1, "o-6", "demo", "rain", 1) + "," + grantBody(2, "o-6", "demo", "rain", 1) + "," + grantBody(1, "o-6", "nope", "rain", 1) + `]}`})
	a.do(call{method: "POST", path: "/v1/grants/batch", body: `{"grants":[]}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/grants/batch", body: `{"grants":[` + grantBody(1, "o-7", "demo", "rain", 1) + `]}` + spaces(bigPad), sign: asApp(1), want: 413, code: "request_too_large"})

	// Business lines' notices.
	notice := func(app uint32, line, user string) string {
		return fmt.Sprintf(`{"line":%q,"app_id":%d,"user_id":%q}`, line, app, user)
	}
	a.do(call{method: "POST", path: "/v1/sync/notify", body: notice(1, "games", "s-1"), sign: asApp(1), want: 202})
	a.do(call{method: "POST", path: "/v1/sync/notify", body: notice(1, "games", "s-1"), sign: badSignature(asApp(1)), want: 401, code: "unauthorized"})
	a.do(call{method: "POST", path: "/v1/sync/notify", body: `{"line":"games","app_id":1}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/sync/notify", body: notice(2, "games", "s-1"), sign: asApp(1), want: 403, code: "forbidden"})
	a.do(call{method: "POST", path: "/v1/sync/notify", body: notice(1, "nope", "s-1"), sign: asApp(1), want: 404, code: "unknown_line"})
	a.do(call{method: "POST", path: "/v1/sync/notify", body: notice(1, "games", "s-1") + spaces(pad), sign: asApp(1), want: 413, code: "request_too_large"})

	// Tokens.
	a.do(call{method: "POST", path: "/v1/tokens/status", body: `{"tokens":["` + first.Token + `","garbage"]}`, sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/tokens/redeem", body: `{"tokens":["` + first.Token + `","garbage"]}`, sign: asApp(1), want: 200})
	for _, p := range []string{"/v1/tokens/status", "/v1/tokens/redeem"} {
		a.do(call{method: "POST", path: p, body: `{"tokens":[]}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
		a.do(call{method: "POST", path: p, body: `{"tokens":["x"]}` + spaces(bigPad), sign: asApp(1), want: 413, code: "request_too_large"})
	}

	// Wallets and binds, once the grants are booked (an account's users
	// are on record then).
	waitDrained(t, n)
	statements(t, a, n, first.ActID)
	// The expiry sweep (no validity in this campaign: nothing expires;
	// TestExpiryThroughBooking books expiries).
	a.do(call{method: "POST", path: "/admin/v1/expiry/run", sign: asAdmin, want: 200})
	a.do(call{method: "POST", path: "/admin/v1/expiry/run?month=2026-01", sign: asAdmin, want: 400, code: "malformed_request"})
	wallet := func(act uint64) string { return "/v1/wallet/" + strconv.FormatUint(act, 10) }
	a.do(call{method: "GET", path: wallet(first.ActID), sign: asApp(1), want: 200})
	a.do(call{method: "GET", path: wallet(first.ActID), sign: asApp(2), want: 403, code: "forbidden"})
	a.do(call{method: "GET", path: wallet(1 << 40), sign: asApp(1), want: 404, code: "not_found"})
	a.do(call{method: "GET", path: "/v1/wallet/x", sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	ledgerOf := func(act uint64, query string) string { return "/v1/ledger/" + strconv.FormatUint(act, 10) + query }
	var page struct {
		Entries    []json.RawMessage `json:"entries"`
		NextCursor *string           `json:"next_cursor"`
	}
	a.do(call{method: "GET", path: ledgerOf(first.ActID, ""), sign: asApp(1), want: 200}).json(t, &page)
	if len(page.Entries) == 0 {
		t.Errorf("ledger of %d: no entries", first.ActID)
	}
	a.do(call{method: "GET", path: ledgerOf(first.ActID, "?asset=cash&limit=1"), sign: asApp(1), want: 200})
	a.do(call{method: "GET", path: ledgerOf(first.ActID, ""), sign: asApp(2), want: 403, code: "forbidden"})
	a.do(call{method: "GET", path: ledgerOf(1<<40, ""), sign: asApp(1), want: 404, code: "not_found"})
	a.do(call{method: "GET", path: "/v1/ledger/x", sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: ledgerOf(first.ActID, "?limit=0"), sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: ledgerOf(first.ActID, "?asset=gold"), sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: ledgerOf(first.ActID, "?asset=coin:nope"), sign: asApp(1), want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: ledgerOf(first.ActID, "?cursor=AQEAAAAA"), sign: asApp(1), want: 400, code: "malformed_request"})
	bindBody := func(app uint32, user string, act uint64) string {
		return fmt.Sprintf(`{"app_id":%d,"user_id":%q,"act_id":%d}`, app, user, act)
	}
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-1", first.ActID), sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-1", first.ActID), sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-1", second.ActID), sign: asApp(1), want: 409, code: "already_bound"})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(2, "b-2", first.ActID), sign: asApp(2), want: 403, code: "forbidden"})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-3", 1<<40), sign: asApp(1), want: 404, code: "not_found"})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: `{"app_id":1}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-3", first.ActID) + spaces(pad), sign: asApp(1), want: 413, code: "request_too_large"})
	// Binds to one account until its rate and then its identities run
	// out.
	limited, full := false, false
	for i := 0; i < 80 && !full; i++ {
		ans := a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "m-"+strconv.Itoa(i), third.ActID), sign: asApp(1),
			anyOf: []int{200, 409, 429}})
		var e struct{ Code string }
		_ = json.Unmarshal(ans.body, &e)
		switch {
		case ans.status == 429 && e.Code == "rate_limited":
			limited = true
			time.Sleep(300 * time.Millisecond)
		case ans.status == 409 && e.Code == "too_many_identities":
			full = true
		case ans.status != 200:
			t.Fatalf("bind %d: %d %s", i, ans.status, ans.body)
		}
	}
	if !limited || !full {
		t.Errorf("binds to one account: rate limited %v, full %v; want both", limited, full)
	}

	// Spending, on the accounts of first and second (users of app 1, on
	// record since their grants were booked), booked by the node.
	a.spending(first.ActID, second.ActID, pad)

	// Withdrawals: of the first user's account (ten packets of ¥1 just
	// granted, outstanding until booking or the withdrawal books them),
	// settled, repeated, left paying (the channel loses every Pay of one
	// drive), refused.
	for r := uint64(1); r <= 10; r++ {
		var g struct {
			ActID uint64 `json:"act_id"`
		}
		a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-1", "wd", "rain", r), sign: asApp(1), want: 200}).json(t, &g)
		if g.ActID != first.ActID {
			t.Fatalf("o-1's packet of wd/rain/%d went to account %d, want %d", r, g.ActID, first.ActID)
		}
	}
	withdrawBody := func(amount int64, channel, request string) string {
		return fmt.Sprintf(`{"act_id":%d,"amount":%d,"channel":%q,"request_id":%q}`, first.ActID, amount, channel, request)
	}
	pay.Script(withdraw.ID(1, "w-slow"), paytest.Step{Drop: true}, paytest.Step{Drop: true}, paytest.Step{Drop: true})
	var settled struct{ ID, State string }
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-1"), sign: asApp(1), want: 200}).json(t, &settled)
	if settled.State != "settled" {
		t.Errorf("withdrawal %+v, want settled", settled)
	}
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-1"), sign: asApp(1), want: 200})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(100, "bank", "w-slow"), sign: asApp(1), want: 202})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(5000, "bank", "w-2"), sign: asApp(1), want: 409, code: "insufficient_funds"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(400, "bank", "w-1"), sign: asApp(1), want: 409, code: "request_id_reused"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "post", "w-3"), sign: asApp(1), want: 400, code: "unknown_channel"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(1, "bank", "w-3"), sign: asApp(1), want: 400, code: "amount_out_of_range"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: `{"act_id":1}`, sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-3"), sign: asApp(2), want: 403, code: "forbidden"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-3"), sign: badSignature(asApp(1)), want: 401, code: "unauthorized"})
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-3") + spaces(pad), sign: asApp(1), want: 413, code: "request_too_large"})
	a.do(call{method: "GET", path: "/v1/withdrawals/" + settled.ID, sign: asApp(1), want: 200})
	a.do(call{method: "GET", path: "/v1/withdrawals/" + settled.ID, sign: asApp(2), want: 404, code: "withdrawal_not_found"})
	a.do(call{method: "GET", path: "/v1/withdrawals/" + settled.ID, sign: badSignature(asApp(1)), want: 401, code: "unauthorized"})
	a.do(call{method: "GET", path: "/v1/withdrawals/x", sign: asApp(1), want: 400, code: "malformed_request"})

	// The dashboard, with a ticket.
	ticket := adminauth.Ticket(adminauth.MustParseKey(testAdminKey), dashboard.TicketScope, time.Now().Add(time.Hour))
	for _, p := range []string{"/dashboard", "/dashboard/frame", "/dashboard/events"} {
		a.do(call{method: "GET", path: p + "?ticket=" + ticket, want: 200, stream: p == "/dashboard/events"})
		a.do(call{method: "GET", path: p + "?ticket=x", want: 401, code: "unauthorized"})
	}

	// Park: a record booking cannot read stops its partition and the node
	// is not ready; the grant routes answer unavailable until it is
	// parked.
	p := grantProducer(t, n)
	_, offset, err := p.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: 0, Value: sarama.ByteEncoder("not a grant record")})
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, false)
	a.do(call{method: "GET", path: "/readyz", want: 503})
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "o-8", "demo", "rain", 1), sign: asApp(1), want: 503, code: "unavailable"})
	a.do(call{method: "POST", path: "/v1/grants/batch", body: `{"grants":[` + grantBody(1, "o-8", "demo", "rain", 1) + `]}`, sign: asApp(1), want: 503, code: "unavailable"})
	a.do(call{method: "POST", path: "/v1/tokens/status", body: `{"tokens":["` + second.Token + `"]}`, sign: asApp(1), want: 503, code: "unavailable"})
	a.do(call{method: "POST", path: "/v1/tokens/redeem", body: `{"tokens":["` + second.Token + `"]}`, sign: asApp(1), want: 503, code: "unavailable"})
	a.do(call{method: "POST", path: "/v1/accounts/bind", body: bindBody(1, "b-9", first.ActID), sign: asApp(1), want: 503, code: "unavailable"})
	for _, r := range spendRoutes {
		a.do(call{method: "POST", path: r.path, body: r.body(1, "p-1", first.ActID, second.ActID, 1, ""), sign: asApp(1), want: 503, code: "unavailable"})
	}
	a.do(call{method: "POST", path: "/v1/withdrawals", body: withdrawBody(300, "bank", "w-9"), sign: asApp(1), want: 503, code: "unavailable"})
	a.do(call{method: "POST", path: "/admin/v1/parked", body: `{"partition":0,"offset":0}`, sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "POST", path: "/admin/v1/parked", body: `{"partition":0,"offset":99999,"reason":"x"}`, sign: asAdmin, want: 404, code: "not_found"})
	if part, off, ok := readableRecord(t, n); ok {
		a.do(call{method: "POST", path: "/admin/v1/parked", body: fmt.Sprintf(`{"partition":%d,"offset":%d,"reason":"x"}`, part, off), sign: asAdmin, want: 409, code: "record_readable"})
	} else {
		t.Error("no booked grant record to refuse parking")
	}
	a.do(call{method: "POST", path: "/admin/v1/parked", body: fmt.Sprintf(`{"partition":0,"offset":%d,"reason":"written by a test"}`, offset), sign: asAdmin, want: 200})
	waitReady(t, n, true)
	a.do(call{method: "GET", path: "/admin/v1/parked", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/audit", sign: asAdmin, want: 200})

	a.generic()
	a.assertCovered()
}

// headersOnly sends req's headers with a Content-Length of size and no
// body: a node refuses a body over its limit from the headers (and closes
// the connection), which a client still writing the body may not read.
func headersOnly(req *http.Request, size int) (*http.Response, error) {
	conn, err := net.DialTimeout("tcp", req.URL.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", req.Method, req.URL.RequestURI(), req.URL.Host, size)
	for k, vs := range req.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	return resp, err
}

// waitReady waits until the node's readiness is ready.
func waitReady(t *testing.T, n *node.Node, ready bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, n, "/readyz")
		if (code == 200) == ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readableRecord finds a grant record booking has read: the first of a
// partition other than 0 that holds any.
func readableRecord(t *testing.T, n *node.Node) (int32, int64, bool) {
	t.Helper()
	c, err := sarama.NewClient(n.Brokers(), storage.SaramaConfig("openapi-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for part := int32(1); part < n.Partitions(); part++ {
		oldest, err1 := c.GetOffset(storage.GrantTopic, part, sarama.OffsetOldest)
		newest, err2 := c.GetOffset(storage.GrantTopic, part, sarama.OffsetNewest)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if newest > oldest {
			return part, oldest, true
		}
	}
	return 0, 0, false
}

// statements drives GET /admin/v1/statements once the grants are booked
// and folded: the demo activity's day (the packets it paid, counted), as
// JSON and CSV, a user's month, and strict query parsing.
func statements(t *testing.T, a *apiCheck, n *node.Node, act uint64) {
	t.Helper()
	if _, err := n.FoldStatements(context.Background()); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	path := "/admin/v1/statements?period=day&date=" + today + "&party=activity:demo"
	var st struct {
		Lines []struct {
			Section, Item string
			Count, Amount int64
		} `json:"lines"`
	}
	a.do(call{method: "GET", path: path, sign: asAdmin, want: 200}).json(t, &st)
	if len(st.Lines) != 1 || st.Lines[0].Item != "grant" || st.Lines[0].Section != "expenditure" || st.Lines[0].Count < 3 || st.Lines[0].Amount >= 0 {
		t.Errorf("demo's statement of %s: %+v, want one expenditure line of 3 or more grants", today, st.Lines)
	}
	if ans := a.do(call{method: "GET", path: path + "&format=csv", sign: asAdmin, want: 200}); !strings.HasPrefix(string(ans.body), "party,period,date,closed,section,item,asset,count,amount,amount_yuan\r\nactivity:demo,day,"+today+",false,expenditure,grant,cash,") {
		t.Errorf("CSV statement: %s", ans.body)
	}
	// An activity without a sponsor is its own.
	var sp struct {
		Lines []struct{ Count int64 } `json:"lines"`
	}
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=" + today + "&party=sponsor:demo", sign: asAdmin, want: 200}).json(t, &sp)
	if len(st.Lines) == 0 || len(sp.Lines) != 1 || sp.Lines[0].Count != st.Lines[0].Count {
		t.Errorf("sponsor demo's statement: %+v, want the activity's", sp.Lines)
	}
	a.do(call{method: "GET", path: "/admin/v1/statements?period=month&date=" + today[:7] + "&party=user:" + strconv.FormatUint(act, 10) + "&format=json", sign: asAdmin, want: 200})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=week&date=2026&party=activity:demo", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=2026-02-30&party=activity:demo", sign: asAdmin, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=2026-02-03&party=shop:1", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=2026-02-03", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=2026-02-03&party=activity:demo&party=activity:x", sign: asAdmin, want: 400, code: "malformed_request"})
	a.do(call{method: "GET", path: "/admin/v1/statements?period=day&date=2026-02-03&party=activity:demo&format=xml", sign: asAdmin, invalid: true, want: 400, code: "malformed_request"})
}

// withdrawActivity is "wd": ten rains of a fixed ¥1 cash packet, the
// withdrawals' money in TestOpenAPIAgainstNode; like demo otherwise.
func withdrawActivity(demo campaign.Activity) campaign.Activity {
	a := campaign.Activity{ID: "wd", Awards: []campaign.Award{{Type: "cash", Kind: campaign.KindMoney, Min: 100, Max: 100}},
		Stages: []campaign.Stage{{Stage: "formal", Budgets: map[string]int64{"cash": 1_000_000}}}}
	for r := uint64(1); r <= 10; r++ {
		a.Rains = append(a.Rains, campaign.Rain{SceneID: "rain", RainID: r, AlwaysOpen: true, Start: demo.Rains[0].Start})
	}
	return a
}

// spendRoute is one spending route and its body.
type spendRoute struct {
	path string
	// format takes request_id, app_id, act_id, amount, then the route's
	// own field (to_act_id, or consumption_id for a refund or reversal).
	format string
}

var spendRoutes = []spendRoute{
	{"/v1/coins/recharge", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"currency":"gold"%.0s}`},
	{"/v1/spend/consume", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold","merchant_id":"shop"%.0s}`},
	{"/v1/spend/refund", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold","merchant_id":"shop","consumption_id":%q}`},
	{"/v1/spend/reverse", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold","merchant_id":"shop","consumption_id":%q}`},
	{"/v1/spend/transfer", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold","to_act_id":%s}`},
	{"/v1/spend/gift", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold","to_act_id":%s}`},
	{"/v1/spend/expire", `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":%d,"asset":"coin:gold"%.0s}`},
}

// body is r's body; a transfer or gift goes to, a refund or reversal
// undoes consumption ("c-1" when empty).
func (r spendRoute) body(app uint32, id string, act, to uint64, amount int64, consumption string) string {
	own := strconv.FormatUint(to, 10)
	if strings.Contains(r.path, "refund") || strings.Contains(r.path, "reverse") {
		own = cmp.Or(consumption, "c-1")
	}
	return fmt.Sprintf(r.format, id, app, act, amount, own)
}

// spending drives every spending route on accounts a and b (users of app
// 1 in the node's booking of moves, holding nothing yet): each
// documented status and code.
func (a *apiCheck) spending(actA, actB uint64, pad int) {
	t := a.t
	t.Helper()
	route := func(name string) spendRoute {
		for _, r := range spendRoutes {
			if strings.HasSuffix(r.path, "/"+name) {
				return r
			}
		}
		t.Fatalf("no spending route %s", name)
		return spendRoute{}
	}
	post := func(name, body string, want int, code string) answer {
		t.Helper()
		return a.do(call{method: "POST", path: route(name).path, body: body, sign: asApp(1), want: want, code: code})
	}
	recharge, consume, refund, reverse := route("recharge"), route("consume"), route("refund"), route("reverse")
	first := post("recharge", recharge.body(1, "r-1", actA, 0, 100, ""), 200, "")
	again := post("recharge", recharge.body(1, "r-1", actA, 0, 100, ""), 200, "")
	if again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(first.body, again.body) {
		t.Errorf("repeated recharge: %s %q, want the first answer %s replayed", again.body, again.header.Get("Idempotent-Replayed"), first.body)
	}
	post("recharge", recharge.body(1, "r-1", actA, 0, 101, ""), 409, "request_id_reused")
	post("consume", consume.body(1, "c-1", actA, 0, 60, ""), 200, "")
	post("consume", consume.body(1, "c-2", actA, 0, 1000, ""), 409, "insufficient_funds")
	post("refund", refund.body(1, "f-1", actA, 0, 10, "c-1"), 200, "")
	post("refund", refund.body(1, "f-2", actA, 0, 51, "c-1"), 409, "refund_exceeds")
	post("reverse", reverse.body(1, "v-1", actA, 0, 60, "c-1"), 409, "refund_exceeds")
	post("consume", consume.body(1, "c-3", actA, 0, 5, ""), 200, "")
	post("reverse", reverse.body(1, "v-2", actA, 0, 5, "c-3"), 200, "")
	for _, name := range []string{"transfer", "gift"} {
		r := route(name)
		var ans struct {
			Moves []struct {
				Balance int64 `json:"balance"`
			} `json:"moves"`
		}
		post(name, r.body(1, name+"-1", actA, actB, 5, ""), 200, "").json(t, &ans)
		if len(ans.Moves) != 2 {
			t.Errorf("%s: %d moves, want the sender's and the receiver's", name, len(ans.Moves))
		}
		post(name, r.body(1, name+"-2", actA, actB, 1000, ""), 409, "insufficient_funds")
		post(name, r.body(1, name+"-1", actA, actB, 6, ""), 409, "request_id_reused")
	}
	post("expire", route("expire").body(1, "e-1", actB, 0, 5, ""), 200, "")
	// Into a budget that does not exist: refused, nothing moved.
	post("expire", strings.Replace(route("expire").body(1, "e-3", actB, 0, 5, ""), `"asset"`, `"budget_id":"no-such","asset"`, 1), 400, "malformed_request")
	post("expire", route("expire").body(1, "e-2", actB, 0, 1000, ""), 409, "insufficient_funds")
	post("expire", route("expire").body(1, "e-1", actB, 0, 6, ""), 409, "request_id_reused")
	post("consume", consume.body(1, "c-1", actA, 0, 61, ""), 409, "request_id_reused")
	post("refund", refund.body(1, "f-1", actA, 0, 11, "c-1"), 409, "request_id_reused")
	post("reverse", reverse.body(1, "v-2", actA, 0, 6, "c-3"), 409, "request_id_reused")
	for _, r := range spendRoutes {
		name := r.path[strings.LastIndexByte(r.path, '/')+1:]
		post(name, r.body(1, "x-1", actA, actB, 1, "")+strings.Repeat(" ", pad), 413, "request_too_large")
		post(name, r.body(2, "x-2", actA, actB, 1, ""), 403, "forbidden")
		a.do(call{method: "POST", path: r.path, body: strings.Replace(r.body(1, "x-3", actA, actB, 1, ""), "{", `{"colour":"red",`, 1),
			sign: asApp(1), invalid: true, want: 400, code: "malformed_request"})
	}
	// An account without a user of the app: no move, and no transfer to it.
	post("consume", consume.body(1, "c-9", 1<<40, 0, 1, ""), 403, "forbidden")
	post("transfer", route("transfer").body(1, "t-9", actA, 1<<40, 1, ""), 403, "forbidden")
}
