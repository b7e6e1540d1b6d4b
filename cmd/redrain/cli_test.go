package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"redrain/node"
)

// testCLI returns a cli with the variables of env (the others unset) and
// stdin, and the buffers its stdout and stderr write to.
func testCLI(env map[string]string, stdin string) (c *cli, stdout, stderr *strings.Builder) {
	stdout, stderr = &strings.Builder{}, &strings.Builder{}
	return &cli{getenv: func(name string) string { return env[name] }, stdin: strings.NewReader(stdin),
		stdout: stdout, stderr: stderr}, stdout, stderr
}

// runTest runs `redrain args` with the variables of env.
func runTest(args []string, env map[string]string) (exit int, stdout, stderr string) {
	c, out, errOut := testCLI(env, "")
	exit = run(args, c)
	return exit, out.String(), errOut.String()
}

func TestHelp(t *testing.T) {
	for _, cmd := range commands {
		for _, args := range [][]string{{cmd.name, "-h"}, {cmd.name, "--help"}, {"help", cmd.name}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				exit, stdout, stderr := runTest(args, nil)
				if exit != 0 || stderr != "" {
					t.Fatalf("exit %d, stderr %q; want 0 and nothing", exit, stderr)
				}
				for _, want := range []string{"redrain " + cmd.name + ": " + cmd.summary + "\n", "\nUsage:\n  redrain " + cmd.name,
					"\nExamples:\n", "\n  redrain " + cmd.name} {
					if !strings.Contains(stdout, want) {
						t.Errorf("stdout:\n%s\nwant it to contain %q", stdout, want)
					}
				}
				if cmd != helpCommand && cmd != versionCommand && !strings.Contains(stdout, "\nFlags (each also from its variable in brackets: REDRAIN_"+strings.ToUpper(cmd.name)+"_") {
					t.Errorf("stdout:\n%s\nwant the flags and their variables", stdout)
				}
			})
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		exit, stdout, stderr := runTest(args, nil)
		if exit != 0 || stderr != "" || !strings.Contains(stdout, "Usage:\n  redrain <command> [flags]") {
			t.Errorf("redrain %s: exit %d, stdout %q, stderr %q; want 0 and the command list", args, exit, stdout, stderr)
		}
		for _, cmd := range commands {
			if !strings.Contains(stdout, "\n  "+cmd.name+" ") {
				t.Errorf("redrain %s does not list %s:\n%s", args, cmd.name, stdout)
			}
		}
	}
	// Flags of every kind in the usage, with their variables.
	_, stdout, _ := runTest([]string{"serve", "-h"}, nil)
	for _, want := range []string{"-admin-http string", "[$REDRAIN_SERVE_ADMIN_HTTP]", "-log-format text|json", "[$REDRAIN_SERVE_LOG_FORMAT] (default text)",
		"-log-level level", "-booking-lag-max duration"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("serve -h:\n%s\nwant it to contain %q", stdout, want)
		}
	}
	// An admin command's -h is admin's.
	if exit, stdout, _ := runTest([]string{"admin", "publish", "spring", "-h"}, nil); exit != 0 || !strings.Contains(stdout, "publish ID --version N") {
		t.Errorf("admin publish spring -h: exit %d, stdout:\n%s", exit, stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, cmd := range commands {
		t.Run(cmd.name, func(t *testing.T) {
			exit, stdout, stderr := runTest([]string{cmd.name, "--no-such-flag"}, nil)
			if exit != 2 || stdout != "" {
				t.Fatalf("exit %d, stdout %q; want 2 and nothing", exit, stdout)
			}
			for _, want := range []string{"Usage:\n  redrain " + cmd.name, "\nredrain " + cmd.name + ": flag provided but not defined: -no-such-flag\n"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, want)
				}
			}
		})
	}
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{nil, "Usage:\n  redrain <command> [flags]"},
		{[]string{"frobnicate"}, `redrain: unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `redrain help: unknown command "frobnicate"`},
		{[]string{"admin"}, "redrain admin: no command"},
		{[]string{"keygen", "--bytes", "16"}, "redrain keygen: --bytes 16: at least 32"},
		{[]string{"serve", "--audit-every", "-1s"}, "redrain serve: --audit-every -1s: a duration of 0 (off) or more"},
	} {
		exit, stdout, stderr := runTest(tc.args, nil)
		if exit != 2 || stdout != "" || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("redrain %q: exit %d, stdout %q, stderr:\n%s\nwant 2 and %q", tc.args, exit, stdout, stderr, tc.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		exit, stdout, stderr := runTest(args, nil)
		if exit != 0 || stderr != "" || !strings.HasPrefix(stdout, "redrain ") || !strings.HasSuffix(stdout, " "+runtime.Version()+"\n") {
			t.Errorf("redrain %s: exit %d, stdout %q, stderr %q; want 0 and redrain VERSION ... %s", args, exit, stdout, stderr, runtime.Version())
		}
	}
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "redrain", Version: "v0.0.0-20261204-55ab9b58a363+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "55ab9b58a3636e2fe171ea6e52f03cb69d32fd7b"}, {Key: "vcs.modified", Value: "true"}}}
	clean := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "redrain", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "55ab9b58a3636e2fe171ea6e52f03cb69d32fd7b"}, {Key: "vcs.modified", Value: "false"}}}
	for _, tc := range []struct {
		version string
		info    *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"", info, true, "redrain v0.0.0-20261204-55ab9b58a363+dirty commit 55ab9b58a363+modified go1.26.8"},
		{"v1.4.0", clean, true, "redrain v1.4.0 commit 55ab9b58a363 go1.26.8"},
		{"", &debug.BuildInfo{GoVersion: "go1.26.8"}, true, "redrain (devel) go1.26.8"},
		{"v1.4.0", nil, false, "redrain v1.4.0"},
		{"", nil, false, "redrain unknown"},
	} {
		if got := versionText(tc.version, tc.info, tc.ok); got != tc.want {
			t.Errorf("versionText(%q) = %q, want %q", tc.version, got, tc.want)
		}
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ command, flag, want string }{
		{"serve", "kafka", "REDRAIN_SERVE_KAFKA"},
		{"serve", "admin-http", "REDRAIN_SERVE_ADMIN_HTTP"},
		{"admin", "key", "REDRAIN_ADMIN_KEY"}, // the variable admin always read
		{"sign", "act-id", "REDRAIN_SIGN_ACT_ID"},
	} {
		if got := envName(tc.command, tc.flag); got != tc.want {
			t.Errorf("envName(%q, %q) = %q, want %q", tc.command, tc.flag, got, tc.want)
		}
	}
}

func TestEnvSetsFlags(t *testing.T) {
	env := map[string]string{"REDRAIN_KEYGEN_ID": "ops", "REDRAIN_KEYGEN_BYTES": "40"}
	for _, tc := range []struct {
		args []string
		want string // id and hex digits
	}{
		{nil, "ops:80"},
		{[]string{"--bytes", "33"}, "ops:66"}, // the command line wins
		{[]string{"--id=7", "--bytes=48"}, "7:96"},
	} {
		exit, stdout, stderr := runTest(append([]string{"keygen"}, tc.args...), env)
		id, secret, _ := strings.Cut(strings.TrimSpace(stdout), ":")
		if got := id + ":" + strconv.Itoa(len(secret)); exit != 0 || got != tc.want {
			t.Errorf("keygen %q: exit %d, stdout %q, stderr %q; want %s", tc.args, exit, stdout, stderr, tc.want)
		}
	}

	// admin: $REDRAIN_ADMIN_TARGET, and a --target that overrides it.
	srv := newAdminServer(t)
	dead := deadAddr(t)
	for _, tc := range []struct {
		env  string
		args []string
	}{
		{srv.URL, []string{"stats"}},
		{dead, []string{"--target", srv.URL, "stats"}},
		{dead, []string{"stats", "--target", srv.URL}},
	} {
		c, stdout, stderr := testCLI(map[string]string{"REDRAIN_ADMIN_TARGET": tc.env, "REDRAIN_ADMIN_KEY": testKey}, "")
		if exit := runAdmin(context.Background(), c, tc.args); exit != 0 || !strings.Contains(stdout.String(), `"GET /admin/v1/stats"`) {
			t.Errorf("admin %q with $REDRAIN_ADMIN_TARGET=%s: exit %d, stdout %q, stderr %q", tc.args, tc.env, exit, stdout, stderr)
		}
	}

	// sign: $REDRAIN_SIGN_KEY before $REDRAIN_APP_KEY, --key before both;
	// consent's flags from the environment.
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string // the key id in the headers
	}{
		{map[string]string{"REDRAIN_SIGN_KEY": testAppKeyLabel, "REDRAIN_APP_KEY": testAppKey}, nil, "7.2027"},
		{map[string]string{"REDRAIN_SIGN_KEY": testAppKeyLabel}, []string{"--key", testAppKey}, "1"},
	} {
		c, stdout, stderr := testCLI(tc.env, "")
		exit := runSign(c, append(tc.args, "GET", "/v1/wallet/1"), signNow)
		if exit != 0 || !strings.Contains(stdout.String(), "X-Redrain-Key: "+tc.want+"\n") {
			t.Errorf("sign %q with %v: exit %d, stdout %q, stderr %q; want key %s", tc.args, tc.env, exit, stdout, stderr, tc.want)
		}
	}
	c, stdout, stderr := testCLI(map[string]string{"REDRAIN_APP_KEY": testAppKey, "REDRAIN_SIGN_APP": "2", "REDRAIN_SIGN_USER": "b-1",
		"REDRAIN_SIGN_ACT_ID": "17"}, "")
	if exit := runSign(c, []string{"consent"}, signNow); exit != 0 || !strings.Contains(stdout.String(), `"key":"1"`) {
		t.Errorf("sign consent from the environment: exit %d, stdout %q, stderr %q", exit, stdout, stderr)
	}
	// Consent's variables do not make a request's command line wrong.
	c, stdout, stderr = testCLI(map[string]string{"REDRAIN_APP_KEY": testAppKey, "REDRAIN_SIGN_USER": "b-1"}, "")
	if exit := runSign(c, []string{"GET", "/v1/wallet/1"}, signNow); exit != 0 {
		t.Errorf("sign with $REDRAIN_SIGN_USER: exit %d, stdout %q, stderr %q", exit, stdout, stderr)
	}
}

func TestEnvInvalid(t *testing.T) {
	noStart := func(node.Config) (servingNode, error) { return nil, errors.New("started despite a bad variable") }
	for _, tc := range []struct {
		args   []string
		env    map[string]string
		stderr string
	}{
		{[]string{"keygen"}, map[string]string{"REDRAIN_KEYGEN_BYTES": "many"}, `$REDRAIN_KEYGEN_BYTES="many": invalid value for --bytes`},
		{[]string{"serve"}, map[string]string{"REDRAIN_SERVE_LOG_FORMAT": "xml"}, `$REDRAIN_SERVE_LOG_FORMAT="xml": invalid value for --log-format: "xml": want text or json`},
		{[]string{"serve"}, map[string]string{"REDRAIN_SERVE_PARTITIONS": "8x", "REDRAIN_SERVE_LOG_LEVEL": "loud"}, "$REDRAIN_SERVE_LOG_LEVEL=\"loud\": invalid value for --log-level"},
		{[]string{"serve"}, map[string]string{"REDRAIN_SERVE_PARTITIONS": "8x", "REDRAIN_SERVE_LOG_LEVEL": "loud"}, "$REDRAIN_SERVE_PARTITIONS=\"8x\": invalid value for --partitions"},
		{[]string{"bench"}, map[string]string{"REDRAIN_BENCH_DURATION": "soon"}, `$REDRAIN_BENCH_DURATION="soon": invalid value for --duration`},
		{[]string{"dev"}, map[string]string{"REDRAIN_DEV_PARTITIONS": "-"}, `$REDRAIN_DEV_PARTITIONS="-"`},
		{[]string{"reconcile"}, map[string]string{"REDRAIN_RECONCILE_JSON": "maybe"}, `$REDRAIN_RECONCILE_JSON="maybe": invalid value for --json`},
		{[]string{"admin", "stats"}, map[string]string{"REDRAIN_ADMIN_TIMEOUT": "1"}, `$REDRAIN_ADMIN_TIMEOUT="1": invalid value for --timeout`},
		{[]string{"sign", "consent"}, map[string]string{"REDRAIN_SIGN_TTL": "1 hour"}, `$REDRAIN_SIGN_TTL="1 hour": invalid value for --ttl`},
	} {
		c, stdout, stderr := testCLI(tc.env, "")
		c.start = noStart
		if exit := run(tc.args, c); exit != 2 || stdout.String() != "" || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("redrain %q with %v: exit %d, stdout %q, stderr:\n%s\nwant 2 and %q", tc.args, tc.env, exit, stdout, stderr, tc.stderr)
		}
	}
	// A flag on the command line is not read from its variable at all.
	c, _, stderr := testCLI(map[string]string{"REDRAIN_SERVE_LOG_FORMAT": "xml"}, "")
	c.start = noStart
	if exit := run([]string{"serve", "--log-format", "json"}, c); exit != 1 || !strings.Contains(stderr.String(), "started despite a bad variable") {
		t.Errorf("serve --log-format json with $REDRAIN_SERVE_LOG_FORMAT=xml: exit %d, stderr %q; want it to start", exit, stderr)
	}
}

// fakeNode is a started node whose HTTP server exits with err at once.
type fakeNode struct {
	served  chan error
	stopped bool
}

func (f *fakeNode) Served() <-chan error { return f.served }
func (f *fakeNode) Stop(context.Context) { f.stopped = true }

func TestServeExitsWhenListenerDies(t *testing.T) {
	f := &fakeNode{served: make(chan error, 1)}
	f.served <- errors.New("accept tcp 127.0.0.1:8080: use of closed network connection")
	var got node.Config
	c, _, stderr := testCLI(map[string]string{"REDRAIN_SERVE_HTTP": "127.0.0.1:7", "REDRAIN_SERVE_PARTITIONS": "5",
		"REDRAIN_SERVE_KAFKA": "k1:9092,k2:9092"}, "")
	c.signals = make(chan os.Signal) // never
	c.start = func(cfg node.Config) (servingNode, error) { got = cfg; return f, nil }
	exit := run([]string{"serve", "--partitions", "3", "--data-dir", t.TempDir()}, c)
	if exit != 1 || !f.stopped {
		t.Errorf("exit %d, node stopped %v; want 1 and stopped", exit, f.stopped)
	}
	if want := "redrain serve: http server stopped: accept tcp 127.0.0.1:8080: use of closed network connection\n"; !strings.HasSuffix(stderr.String(), want) {
		t.Errorf("stderr:\n%s\nwant it to end with %q", stderr, want)
	}
	// The node's configuration: the variables, and --partitions over its variable.
	if got.HTTP != "127.0.0.1:7" || got.Partitions != 3 || strings.Join(got.Kafka, " ") != "k1:9092 k2:9092" {
		t.Errorf("node config HTTP %q, partitions %d, Kafka %q; want 127.0.0.1:7, 3 and both brokers", got.HTTP, got.Partitions, got.Kafka)
	}
}

// TestServeJSONLog starts a whole node on embedded defaults, stops it
// with a signal that is already waiting, and reads its log.
func TestServeJSONLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	c, _, _ := testCLI(nil, "")
	// A file: the node's goroutines write it at once, and may go on after
	// serve returned.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	c.stderr = stderr
	sig := make(chan os.Signal, 1)
	sig <- os.Interrupt
	c.signals = sig
	exit := run([]string{"serve", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--log-format", "json"}, c)
	b, err := os.ReadFile(stderr.Name())
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if exit != 0 {
		t.Fatalf("exit %d; log:\n%s", exit, log)
	}
	var msgs []string
	for _, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		var rec struct{ Time, Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time == "" || rec.Level == "" || rec.Msg == "" {
			t.Fatalf("log line %q is not a JSON record (%v); log:\n%s", line, err, log)
		}
		msgs = append(msgs, rec.Msg)
	}
	if len(msgs) < 3 || msgs[len(msgs)-1] != "stopped" {
		t.Errorf("log messages %q; want the node's, ending with stopped", msgs)
	}
}

func TestLogFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "level=WARN msg=hello n=1\n"},
		{[]string{"--log-format", "text"}, "level=WARN msg=hello n=1\n"},
		{[]string{"--log-format", "json"}, `"level":"WARN","msg":"hello","n":1}` + "\n"},
		{[]string{"--log-format", "json", "--log-level", "error"}, ""},
		{[]string{"--log-level", "debug"}, "level=WARN msg=hello n=1\n"},
	} {
		var lf logFlags
		fs := serveCommand.flagSet()
		lf.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		lf.logger(&out).Warn("hello", "n", 1)
		if got := out.String(); !strings.HasSuffix(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%q: logged %q, want it to end with %q", tc.args, got, tc.want)
		}
	}
}

// deadAddr is a URL nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}
