package node_test

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/campaign"
	"redrain/node"
	"redrain/storage/storagetest"
)

// TestStartFails: a node that cannot start returns an error (it does not
// panic) and releases what it had started, so the same data dir can be
// used again at once.
func TestStartFails(t *testing.T) {
	dir := t.TempDir()

	// Redis unreachable: fails before the cluster member starts.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisAddr := closed.Addr().String()
	closed.Close()
	if n, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0", Redis: redisAddr, ConfigFile: configFile(t), Log: newTestLog(t)}); err == nil {
		stopNode(t, n)
		t.Fatalf("Start with Redis at %s (nothing listening) succeeded", redisAddr)
	}

	// HTTP address taken: fails last, after everything else started.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if n, err := node.Start(node.Config{DataDir: dir, HTTP: taken.Addr().String(), Log: newTestLog(t)}); err == nil {
		stopNode(t, n)
		t.Fatalf("Start on a taken HTTP address %s succeeded", taken.Addr())
	}

	// Everything was released: the data dir opens again.
	n := startNode(t, dir, "")
	stopNode(t, n)
}

// TestRefusesPublicKeysOnRealBackends: a node with a real Redis refuses to
// start with no admin keys, with the public development admin key, with no
// app keys (unsigned client requests), or with a public token key (the demo campaign's without --config, an example
// file's), says which, and writes nothing into its data dir; with keys of
// its own it starts. On embedded defaults the demo keys still serve.
func TestRefusesPublicKeysOnRealBackends(t *testing.T) {
	redisAddr := storagetest.Redis(t)
	file := func(edit func(c *campaign.Config)) string { return configFileWith(t, edit) }
	for _, c := range []struct {
		name, config, want string
	}{
		{"no --config", "", "token_keys[0] (id 1) is a public token key"},
		{"no admin keys", file(func(c *campaign.Config) { c.AdminKeys = nil }), "no admin_keys"},
		{"no app keys", file(func(c *campaign.Config) { c.AppKeys = nil }), "no app_keys"},
		{"the development admin key", file(func(c *campaign.Config) {
			c.AdminKeys = []string{"ops:" + strings.SplitN(adminauth.DevKey, ":", 2)[1]}
		}), "admin_keys[0] (id ops) is the public development key"},
		{"an example's token key", file(func(c *campaign.Config) {
			c.TokenKeys = append(c.TokenKeys, "2:5E1F0C9A7D3B2A6E8F4C1D0B9A8E7F6C5D4E3F2A1B0C9D8E7F6A5B4C3D2E1F0A")
		}), "token_keys[1] (id 2) is a public token key"},
	} {
		dir := t.TempDir()
		n, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0", Redis: redisAddr, ConfigFile: c.config, Log: newTestLog(t)})
		if err == nil {
			stopNode(t, n)
			t.Fatalf("%s: a node on a real Redis started", c.name)
		}
		if !errors.Is(err, node.ErrPublicKeys) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--redis") {
			t.Fatalf("%s: Start = %v, want ErrPublicKeys naming --redis and %q", c.name, err, c.want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("%s: the refused node wrote %d entries into its data dir", c.name, len(entries))
		}
	}
	// Embedded defaults keep the demo keys.
	n, err := node.Start(node.Config{DataDir: t.TempDir(), HTTP: "127.0.0.1:0", Log: newTestLog(t)})
	if err != nil {
		t.Fatalf("embedded node with the demo keys: %v", err)
	}
	stopNode(t, n)
}

// TestOperationsListenerApart: with --admin-http the admin API, /metrics
// and /debug/pprof/ answer only there and the API only on --http (each
// answers the other's routes 404 not_found); /readyz is on both. A node on
// a real backend without --admin-http refuses to start and says why.
func TestOperationsListenerApart(t *testing.T) {
	redisAddr := storagetest.Redis(t)
	_, err := node.Start(node.Config{DataDir: t.TempDir(), HTTP: "127.0.0.1:0", Redis: redisAddr, ConfigFile: configFile(t), Log: newTestLog(t)})
	if !errors.Is(err, node.ErrOpsPlane) || !strings.Contains(err.Error(), "--admin-http") {
		t.Fatalf("Start on a real Redis without --admin-http = %v, want ErrOpsPlane", err)
	}
	n := startNode(t, t.TempDir(), redisAddr)
	if n.AdminAddr() == n.Addr() {
		t.Fatalf("the operations listener is the API's (%s)", n.Addr())
	}
	status := func(addr, method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if strings.HasPrefix(path, "/admin/") {
			if err := adminSigner.Sign(req, []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, addr, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	grant := `{"app_id":1,"user_id":"ops-1","activity_id":"demo","scene_id":"rain","rain_id":1}`
	for _, c := range []struct {
		addr, method, path, body string
		want                     int
	}{
		{n.Addr(), "POST", "/v1/grants", grant, 200},
		{n.Addr(), "GET", "/readyz", "", 200},
		{n.Addr(), "GET", "/metrics", "", 404},
		{n.Addr(), "GET", "/admin/v1/stats", "", 404},
		{n.Addr(), "GET", "/debug/pprof/cmdline", "", 404},
		{n.AdminAddr(), "GET", "/metrics", "", 200},
		{n.AdminAddr(), "GET", "/admin/v1/stats", "", 200},
		{n.AdminAddr(), "GET", "/debug/pprof/cmdline", "", 200},
		{n.AdminAddr(), "GET", "/debug/pprof/", "", 200},
		{n.Addr(), "GET", "/debug/pprof/", "", 404},
		{n.AdminAddr(), "GET", "/readyz", "", 200},
		{n.AdminAddr(), "POST", "/v1/grants", grant, 404},
		{n.AdminAddr(), "GET", "/v1/wallet/1", "", 404},
	} {
		if got := status(c.addr, c.method, c.path, c.body); got != c.want {
			t.Errorf("%s %s on %s = %d, want %d", c.method, c.path, map[bool]string{true: "the API listener", false: "the operations listener"}[c.addr == n.Addr()], got, c.want)
		}
	}
}

// TestDuplicateNodeID: a second process with a node's id (a copied data
// dir) on the same shared Redis refuses to start and says why, while the
// first serves on; once the first is gone, a node with its id starts
// (after telling a crashed incarnation from a live one).
func TestDuplicateNodeID(t *testing.T) {
	redisAddr := storagetest.Redis(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	n1 := startNode(t, dir1, redisAddr)
	id, err := os.ReadFile(filepath.Join(dir1, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, "node-id"), id, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // n1 published its status
	n2, err := node.Start(node.Config{DataDir: dir2, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0", Redis: redisAddr, ConfigFile: configFile(t), Log: newTestLog(t)})
	if err == nil {
		stopNode(t, n2)
		t.Fatal("a second node with the same id started")
	}
	if !errors.Is(err, node.ErrDuplicateNode) || !strings.Contains(err.Error(), n1.Addr()) {
		t.Fatalf("Start with a duplicate id = %v, want ErrDuplicateNode naming %s", err, n1.Addr())
	}
	if code, _ := get(t, n1, "/readyz"); code != http.StatusOK {
		t.Fatalf("the first node is not ready after the duplicate was refused: %d", code)
	}
	// n1 is gone but its last status is still in Redis: a node with its
	// id starts and stays ready (a crashed incarnation is no duplicate).
	stopNode(t, n1)
	n3 := startNode(t, dir2, redisAddr)
	time.Sleep(3 * time.Second)
	if code, body := get(t, n3, "/readyz"); code != http.StatusOK {
		t.Fatalf("a node started after its id's last process stopped is not ready: %d %s", code, body)
	}
	stopNode(t, n3)
}
