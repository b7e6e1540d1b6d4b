package node_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"redrain/adminauth"
)

// The test nodes have app keys (a node on real backends refuses to start
// without), and httpClient signs every /v1 request it sends for the app
// it acts for, as an app's client library would.

// testAppsMax is how many apps the test nodes have keys for: apps
// 1..testAppsMax.
const testAppsMax = 9

// testAppKey returns app's test key, its secret derived from the app id.
func testAppKey(app uint32) string {
	return fmt.Sprintf("%d:%x", app, sha256.Sum256([]byte("redrain node test app "+strconv.FormatUint(uint64(app), 10))))
}

func testAppKeys() []string {
	keys := make([]string, 0, testAppsMax)
	for app := uint32(1); app <= testAppsMax; app++ {
		keys = append(keys, testAppKey(app))
	}
	return keys
}

// headerTestApp names the app a request acts for when its body does not
// (tokens, wallets); the signing transport removes it. Default: app 1.
const headerTestApp = "X-Test-App"

// appIDInBody finds the first "app_id" of a JSON body (a grant, a bind or
// a batch's first grant).
var appIDInBody = regexp.MustCompile(`"app_id"\s*:\s*([0-9]+)`)

// signingTransport signs each /v1 request that is not signed already with
// the key of the app it acts for: the body's first app_id, else the
// X-Test-App header, else app 1.
type signingTransport struct{}

func (signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/v1/") || req.Header.Get(adminauth.HeaderSignature) != "" {
		return http.DefaultTransport.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
	}
	app := uint64(1)
	if m := appIDInBody.FindSubmatch(body); m != nil {
		app, _ = strconv.ParseUint(string(m[1]), 10, 32)
	} else if h := req.Header.Get(headerTestApp); h != "" {
		app, _ = strconv.ParseUint(h, 10, 32)
	}
	signed := req.Clone(req.Context())
	signed.Header.Del(headerTestApp)
	signed.Body = io.NopCloser(bytes.NewReader(body))
	signed.ContentLength = int64(len(body))
	s := adminauth.Signer{Key: adminauth.MustParseKey(testAppKey(uint32(app)))}
	if err := s.Sign(signed, body); err != nil {
		return nil, err
	}
	return http.DefaultTransport.RoundTrip(signed)
}

var httpClient = &http.Client{Timeout: 30 * time.Second, Transport: signingTransport{}}

// consentOf is app by's consent that app's user joins act, for a bind.
func consentOf(by, app uint32, user string, act uint64) *consent {
	c := adminauth.SignConsent(adminauth.MustParseKey(testAppKey(by)), app, user, act, time.Now().Add(time.Hour))
	return &consent{Key: c.KeyID, Expires: c.Expires, Signature: c.Signature}
}

type consent struct {
	Key       string `json:"key"`
	Expires   int64  `json:"expires"`
	Signature string `json:"signature"`
}
