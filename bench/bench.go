// Package bench is the load generator behind `redrain bench`: it offers
// grants to one or more nodes over pipelined HTTP connections at a steady
// rate, measures what the nodes answer and how fast, waits for booking to
// drain and runs the audit, and reports all of it as text or JSON.
//
// It talks to the nodes only through their HTTP API (POST /v1/grants or
// POST /v1/grants/batch, signed with Config.AppKey when it is set;
// GET /admin/v1/stats and GET /admin/v1/audit, signed with
// Config.AdminKey), like any client, and must never reach into a node's
// storage or import the packages that implement it.
//
// A workload is a Config passed to Run; cmd/redrain only binds flags to the
// Config's fields. Comparisons run the same load in alternating phases of
// one run, so that a ratio is free of the shared machine's drift:
// CompareHot (one hot budget account against many) and CompareCeiling (the
// node against an empty fasthttp handler that the bench serves itself).
//
// ReadWallets (wallet.go) measures GET /v1/wallet/{act_id} instead, on
// the same workers: reads of users who hold a packet the set-up granted,
// mixed with reads of users who hold nothing, every answer checked.
package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"redrain/adminauth"
)

// Defaults for the zero values of Config's fields.
const (
	DefaultUsers          = 10000
	DefaultDuration       = 10 * time.Second
	DefaultConns          = 64
	DefaultPipeline       = 16
	DefaultRepeatRatio    = 0.1
	DefaultAppID          = 1
	DefaultActivityID     = "demo"
	DefaultSceneID        = "rain"
	DefaultRainID         = 1
	DefaultDrainTimeout   = 60 * time.Second
	DefaultReadyTimeout   = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// Limits that Validate enforces.
const (
	// UsersMax keeps user numbers in a uint32 (with room for user+1) and
	// the bench's per-user state (16 bytes a user) under 4 GiB.
	UsersMax = 1 << 28
	// WorkersMax bounds targets × Conns × Pipeline, the number of requests
	// in flight and of worker goroutines, each with a 25 KiB histogram
	// (two under Rate: latency from schedule and service time).
	WorkersMax = 1 << 14
	// BatchMax bounds Config.Batch: the node's limit on the grants of one
	// batch request (ingress.GrantsPerBatchMax).
	BatchMax = 1000
	// idLenMax is the node's limit on user_id, activity_id and scene_id in
	// bytes (ingress.IDLenMax); a longer one would only measure errors.
	idLenMax = 64
	// batchBodyBytesMax is the node's limit on the body of a batch request
	// (ingress.ListBodyBytesMax); a larger one would only measure errors.
	batchBodyBytesMax = 1 << 20
)

// Config is one bench run. The zero value of each field selects its
// default, except where a field says otherwise.
type Config struct {
	// Targets are the nodes' base URLs, such as http://127.0.0.1:8080
	// (http or https, no path). Each gets Conns connections, and every
	// connection gets the same share of the load.
	Targets []string
	// AdminTargets are the nodes' operations listeners (--admin-http),
	// where the admin requests (stats, audit, activities) go: one per
	// target, in the same order. Empty: the targets themselves (nodes that
	// serve both on one listener).
	AdminTargets []string
	// Users is the number of distinct users, 1..UsersMax (default 10000).
	Users int
	// Duration is how long requests are sent (default 10s).
	Duration time.Duration
	// Rate is the number of grants offered per second over all targets
	// together, spaced evenly: Rate requests a second, or Rate/Batch batch
	// requests a second. 0 sends as fast as the connections allow.
	Rate int
	// Conns is the number of connections per target (default 64).
	Conns int
	// Pipeline is the number of requests in flight on each connection
	// (default 16). Each one is a worker goroutine that sends its next
	// request when the previous one is answered.
	Pipeline int
	// Batch is the number of grants in each request, 0..BatchMax. 0 and 1
	// send each grant alone to POST /v1/grants; from 2 on, each request is
	// a POST /v1/grants/batch with Batch grants for Batch distinct users.
	// The Report counts grants either way, but its latencies are per
	// request.
	//
	// Batch mode needs Users >= targets × Conns × Pipeline × Batch, the
	// grants in flight at once, so that no worker runs out of new users
	// before its first answer is back: a repeat must go to a user already
	// answered, never to one whose grant is in flight. A batch is cut short
	// only when, after the first pass, about Batch users or fewer have been
	// granted: too few to repeat without picking one twice.
	Batch int
	// RepeatRatio is the probability that a grant repeats the grant of a
	// user already granted, in [0, 1] (default 0.1). Zero selects the
	// default; a negative value sends no repeats.
	RepeatRatio float64
	// AppID, ActivityID, SceneID and RainID are sent in every grant
	// request (defaults 1, "demo", "rain", 1).
	AppID      uint32
	ActivityID string
	SceneID    string
	RainID     uint64
	// UserPrefix starts every user_id, which ends with the user's number
	// (default "bench-" and 6 random hex digits and "-", so that a run does
	// not find the users of earlier runs already granted).
	UserPrefix string
	// DrainTimeout bounds the wait for booking_lag to reach 0 on every
	// target, counted from the end of the send window (default 60s).
	DrainTimeout time.Duration
	// ReadyTimeout bounds the wait before the run for every target to
	// answer its stats with ready (default 30s).
	ReadyTimeout time.Duration
	// RequestTimeout bounds each grant request; one that is not answered
	// in time counts as a "timeout" error (default 5s). After the run, or
	// when ctx is canceled, Run waits at most this long for requests still
	// in flight.
	RequestTimeout time.Duration
	// AdminKey signs the admin requests (stats and audit), written ID:HEX
	// (default adminauth.DevKey, the public development key).
	AdminKey string
	// AppKey signs every grant request (/v1/...) with a fresh nonce: a key
	// of the nodes' "app_keys" for app AppID, written APP:HEX or
	// APP.LABEL:HEX (adminauth.ParseAppKeys). A key that does not parse or
	// signs for another app fails the run before anything is sent. Empty
	// sends the grant requests unsigned, which only a node without app
	// keys (the embedded demo) accepts. A node that answers a grant 401
	// unauthorized or 403 forbidden ends the run at once (Run).
	AppKey string
	// Audit runs GET /admin/v1/audit on the first target once booking has
	// drained. The zero value is false: the audit is not run.
	Audit bool
	// Seed makes the order of the first pass and the choice of repeats
	// reproducible; 0 picks one at random, and the report says which.
	// Timing, and so the interleaving of workers, is never reproducible.
	Seed uint64
	// Progress, when not nil, gets one line a second while the run and the
	// drain go on; see Run.
	Progress io.Writer

	// Files Run writes once the run is over (created, or truncated, before
	// anything is sent; empty: not written). CompareHot and CompareCeiling
	// refuse them.
	//
	// HDRFile gets the latency distribution (Report.WriteHDR) in
	// HdrHistogram's percentile distribution text format, in
	// milliseconds, for HdrHistogram's plotter; under Rate the service
	// times go beside it too, with ".service" before the extension
	// (lat.hgrm, lat.service.hgrm).
	HDRFile string
	// SeriesFile gets the per-second series as JSON lines (see Second).
	SeriesFile string
	// PlotFile gets a self-contained HTML page that plots the series
	// (throughput and latency percentiles over time) and the latency
	// distribution (Report.WritePlot).
	PlotFile string
}

// refuseFiles fails when c asks for the files only Run writes, for the
// comparisons, whose phases would overwrite them.
func (c *Config) refuseFiles(comparison string) error {
	if c.HDRFile != "" || c.SeriesFile != "" || c.PlotFile != "" {
		return fmt.Errorf("bench: the HDR, series and plot files are written by a plain run, not by %s", comparison)
	}
	return nil
}

// target is a parsed Config.Targets entry.
type target struct {
	base  string // scheme://host:port, without a trailing slash.
	addr  string // host:port to dial.
	isTLS bool
}

// withDefaults returns c with the defaults applied and validated, and its
// targets parsed.
func (c Config) withDefaults() (Config, []target, error) {
	setDefault(&c.Users, DefaultUsers)
	setDefault(&c.Duration, DefaultDuration)
	setDefault(&c.Conns, DefaultConns)
	setDefault(&c.Pipeline, DefaultPipeline)
	setDefault(&c.Batch, 1)
	setDefault(&c.AppID, DefaultAppID)
	setDefault(&c.ActivityID, DefaultActivityID)
	setDefault(&c.SceneID, DefaultSceneID)
	setDefault(&c.RainID, DefaultRainID)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&c.RequestTimeout, DefaultRequestTimeout)
	setDefault(&c.AdminKey, adminauth.DevKey)
	switch {
	case c.RepeatRatio == 0:
		c.RepeatRatio = DefaultRepeatRatio
	case c.RepeatRatio < 0:
		c.RepeatRatio = 0
	}
	if c.UserPrefix == "" {
		var b [3]byte
		rand.Read(b[:])
		c.UserPrefix = "bench-" + hex.EncodeToString(b[:]) + "-"
	}
	targets, err := c.validate()
	return c, targets, err
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports the first problem that Run would find with c, such as no
// targets, a target that is not an http or https base URL, or a count or a
// duration out of range.
func (c Config) Validate() error {
	_, _, err := c.withDefaults()
	return err
}

// validate checks a Config whose defaults have been applied.
func (c *Config) validate() ([]target, error) {
	if len(c.Targets) == 0 {
		return nil, errors.New("bench: no targets")
	}
	targets := make([]target, len(c.Targets))
	for i, s := range c.Targets {
		t, err := parseTarget(s)
		if err != nil {
			return nil, fmt.Errorf("bench: target %q: %w", s, err)
		}
		targets[i] = t
	}
	if len(c.AdminTargets) != 0 && len(c.AdminTargets) != len(c.Targets) {
		return nil, fmt.Errorf("bench: %d admin targets for %d targets, want one each (or none)", len(c.AdminTargets), len(c.Targets))
	}
	for _, s := range c.AdminTargets {
		if _, err := parseTarget(s); err != nil {
			return nil, fmt.Errorf("bench: admin target %q: %w", s, err)
		}
	}
	switch {
	case c.Users < 1 || c.Users > UsersMax:
		return nil, fmt.Errorf("bench: users is %d, want 1..%d", c.Users, UsersMax)
	case c.Duration < 0:
		return nil, fmt.Errorf("bench: duration is %v, want > 0", c.Duration)
	case c.Rate < 0:
		return nil, fmt.Errorf("bench: rate is %d/s, want >= 0 (0 for as fast as possible)", c.Rate)
	case c.Conns < 0:
		return nil, fmt.Errorf("bench: conns is %d, want > 0", c.Conns)
	case c.Pipeline < 0:
		return nil, fmt.Errorf("bench: pipeline is %d, want > 0", c.Pipeline)
	case len(targets)*c.Conns*c.Pipeline > WorkersMax:
		return nil, fmt.Errorf("bench: targets × conns × pipeline is %d×%d×%d, want at most %d requests in flight",
			len(targets), c.Conns, c.Pipeline, WorkersMax)
	case c.Batch < 1 || c.Batch > BatchMax:
		return nil, fmt.Errorf("bench: batch is %d, want 0..%d (0 or 1 for one grant a request)", c.Batch, BatchMax)
	case c.Batch > 1 && len(targets)*c.Conns*c.Pipeline*c.Batch > c.Users:
		// Not checked for single grants, so that every run that was valid
		// before batches stays valid; Config.Batch says why batches need it.
		return nil, fmt.Errorf("bench: targets × conns × pipeline × batch is %d×%d×%d×%d = %d grants in flight, "+
			"more than the %d users: repeats would go to users whose first grant is still in flight; "+
			"raise users or lower conns, pipeline or batch",
			len(targets), c.Conns, c.Pipeline, c.Batch, len(targets)*c.Conns*c.Pipeline*c.Batch, c.Users)
	case math.IsNaN(c.RepeatRatio) || c.RepeatRatio > 1:
		return nil, fmt.Errorf("bench: repeat ratio is %v, want 0..1", c.RepeatRatio)
	case c.DrainTimeout < 0:
		return nil, fmt.Errorf("bench: drain timeout is %v, want > 0", c.DrainTimeout)
	case c.ReadyTimeout < 0:
		return nil, fmt.Errorf("bench: ready timeout is %v, want > 0", c.ReadyTimeout)
	case c.RequestTimeout < 0:
		return nil, fmt.Errorf("bench: request timeout is %v, want > 0", c.RequestTimeout)
	}
	if _, err := adminauth.ParseKey(c.AdminKey); err != nil {
		return nil, fmt.Errorf("bench: admin key: %w", err)
	}
	if _, err := c.appSigner(); err != nil {
		return nil, err
	}
	if err := checkID(c.ActivityID); err != nil {
		return nil, fmt.Errorf("bench: activity id %q: %w", c.ActivityID, err)
	}
	if err := checkID(c.SceneID); err != nil {
		return nil, fmt.Errorf("bench: scene id %q: %w", c.SceneID, err)
	}
	lastUser := c.UserPrefix + strconv.Itoa(c.Users-1)
	if err := checkID(lastUser); err != nil {
		return nil, fmt.Errorf("bench: user prefix %q: user id %q: %w", c.UserPrefix, lastUser, err)
	}
	if c.Batch > 1 {
		head, tail := c.grantJSON()
		grantLen := len(head) + len(strconv.Itoa(c.Users-1)) + len(tail)
		if n := len(batchHead) + c.Batch*(grantLen+1) - 1 + len(batchTail); n > batchBodyBytesMax {
			return nil, fmt.Errorf("bench: a batch of %d grants of %d bytes is %d bytes long, want at most %d: "+
				"lower batch or shorten the ids", c.Batch, grantLen, n, batchBodyBytesMax)
		}
	}
	return targets, nil
}

// appSigner returns the signer of the grant requests, or nil when
// c.AppKey is empty (they go unsigned). It fails on a key that does not
// parse, whose id names no app, or that signs for another app than
// c.AppID: a node would refuse every grant signed with it.
func (c *Config) appSigner() (*adminauth.Signer, error) {
	if c.AppKey == "" {
		return nil, nil
	}
	key, app, err := adminauth.ParseAppKey(c.AppKey)
	if err != nil {
		return nil, fmt.Errorf("bench: app key: %w", err)
	}
	if app != c.AppID {
		return nil, fmt.Errorf("bench: app key %q signs for app %d, but the grants are for app_id %d: "+
			"a node refuses a grant signed by another app (403 forbidden); pass --app %d, or a key of app %d",
			key.ID, app, c.AppID, app, c.AppID)
	}
	return &adminauth.Signer{Key: key}, nil
}

// The body of a batch request is batchHead, grant request bodies separated
// by commas, and batchTail.
const (
	batchHead = `{"grants":[`
	batchTail = `]}`
)

// grantJSON returns the body of a grant request, without the user's number
// that goes between head and tail.
func (c *Config) grantJSON() (head, tail []byte) {
	prefix, _ := json.Marshal(c.UserPrefix)
	activity, _ := json.Marshal(c.ActivityID)
	scene, _ := json.Marshal(c.SceneID)
	head = fmt.Appendf(nil, `{"app_id":%d,"user_id":%s`, c.AppID, prefix[:len(prefix)-1])
	tail = fmt.Appendf(nil, `","activity_id":%s,"scene_id":%s,"rain_id":%d}`, activity, scene, c.RainID)
	return head, tail
}

// parseTarget parses a base URL such as http://127.0.0.1:8080.
func parseTarget(s string) (target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return target{}, err
	}
	var port string
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return target{}, errors.New("want an http:// or https:// URL")
	}
	switch {
	case u.Hostname() == "":
		return target{}, errors.New("no host")
	case u.Path != "" && u.Path != "/":
		return target{}, fmt.Errorf("want a base URL without a path, not %q", u.Path)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return target{}, errors.New("want a base URL without user, query or fragment")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return target{}, fmt.Errorf("port %q out of range", p)
		}
		port = p
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	return target{base: u.Scheme + "://" + addr, addr: addr, isTLS: u.Scheme == "https"}, nil
}

// checkID applies the node's rules for an ID: 1..idLenMax bytes of valid
// UTF-8 without control characters.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("empty")
	case len(id) > idLenMax:
		return fmt.Errorf("%d bytes long, want at most %d", len(id), idLenMax)
	case !utf8.ValidString(id):
		return errors.New("not valid UTF-8")
	case strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }):
		return errors.New("holds a control character")
	}
	return nil
}
