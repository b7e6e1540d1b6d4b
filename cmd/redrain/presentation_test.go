package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"redrain/node"
)

// TestAdminPresentationAgainstNode drives `redrain admin presentation`
// against a node on embedded defaults (which takes the development key):
// a refused document stores nothing, a version published to a whitelist
// reaches only that user, then everyone, and a rollback brings the
// earlier one back.
func TestAdminPresentationAgainstNode(t *testing.T) {
	n, err := node.Start(node.Config{DataDir: t.TempDir(), HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Stop(ctx)
	})
	await := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	await("ready", func() bool {
		resp, err := http.Get("http://" + n.Addr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	admin := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		c, stdout, stderr := testCLI(nil, stdin)
		exit := runAdmin(context.Background(), c, append([]string{"--target", "http://" + n.AdminAddr()}, args...))
		return exit, stdout.String(), stderr.String()
	}
	file := func(name, first string) string {
		p := filepath.Join(t.TempDir(), name)
		doc := `{"slots":[{"id":"cash","asset":"cash","name":"` + first + `","link":"https://w.example.com/cash"},{"id":"coins","asset":"coin:*","name":"Coins"}]}`
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// served is the first slot's name and the version the node serves act.
	served := func(act uint64) (string, uint64) {
		raw, v := n.Presentation.For(act)
		var slots []struct{ Name string }
		if err := json.Unmarshal(raw, &slots); err != nil {
			t.Fatalf("For(%d) = %s: %v", act, raw, err)
		}
		if len(slots) == 0 {
			return "", v
		}
		return slots[0].Name, v
	}
	awaitServed := func(act uint64, name string, version uint64) {
		t.Helper()
		await("act_id served "+name, func() bool { got, v := served(act); return got == name && v == version })
	}
	const someone = 1 << 40

	if exit, _, stderr := admin(`{"slots":[{"id":"cash","asset":"cash","name":"Cash","link":"http://w.example.com/"}]}`, "presentation", "put", "-"); exit != 1 ||
		!strings.Contains(stderr, "presentation: not stored") || !strings.Contains(stderr, `invalid_config: presentation: invalid: slots[0] ("cash"): link "http://w.example.com/": want an https URL`) {
		t.Errorf("put of an http link: exit %d, stderr %q", exit, stderr)
	}
	if exit, _, stderr := admin("", "presentation", "show"); exit != 1 || !strings.Contains(stderr, "not_found") {
		t.Errorf("show after a refused put: exit %d, stderr %q; want not_found", exit, stderr)
	}
	for i, name := range []string{"Cash", "Cash 2"} {
		exit, stdout, stderr := admin("", "presentation", "put", file("p.json", name))
		if want := "presentation: version " + string(rune('1'+i)) + "\n"; exit != 0 || stdout != want {
			t.Fatalf("put %s: exit %d, stdout %q, stderr %q; want %q", name, exit, stdout, stderr, want)
		}
	}

	// Version 1 to one user first: nobody else is served anything yet.
	exit, stdout, stderr := admin("", "presentation", "publish", "--version", "1", "--whitelist", "1:cli-vip")
	var published struct {
		Head struct {
			Canary struct {
				ActIDs []uint64 `json:"act_ids"`
			} `json:"canary"`
		} `json:"head"`
	}
	if exit != 0 || json.Unmarshal([]byte(stdout), &published) != nil || len(published.Head.Canary.ActIDs) != 1 {
		t.Fatalf("publish to a whitelist: exit %d, stdout %s, stderr %q", exit, stdout, stderr)
	}
	vip := published.Head.Canary.ActIDs[0]
	awaitServed(vip, "Cash", 1)
	if name, v := served(someone); name != "" || v != 0 {
		t.Errorf("while version 1 is a canary, everyone else is served %q version %d, want nothing", name, v)
	}
	for _, step := range []struct {
		args    []string
		name    string
		version uint64
	}{
		{[]string{"publish", "--version", "1"}, "Cash", 1},
		{[]string{"publish", "--version", "2"}, "Cash 2", 2},
		{[]string{"rollback", "--version", "1"}, "Cash", 1},
	} {
		if exit, _, stderr := admin("", append([]string{"presentation"}, step.args...)...); exit != 0 {
			t.Fatalf("%v: exit %d, stderr %q", step.args, exit, stderr)
		}
		awaitServed(someone, step.name, step.version)
		awaitServed(vip, step.name, step.version)
	}
	exit, stdout, _ = admin("", "presentation", "show")
	if exit != 0 || !strings.Contains(stdout, `"latest": 2`) || !strings.Contains(stdout, `"live": 1`) || !strings.Contains(stdout, `"action": "rollback"`) {
		t.Errorf("show: exit %d, stdout %s", exit, stdout)
	}
	exit, stdout, _ = admin("", "presentation", "show", "--version", "2")
	if exit != 0 || !strings.Contains(stdout, `"name": "Cash 2"`) {
		t.Errorf("show --version 2: exit %d, stdout %s", exit, stdout)
	}
	if exit, _, stderr := admin("", "presentation", "rollback", "--version", "1"); exit != 1 || !strings.Contains(stderr, "invalid_config") {
		t.Errorf("rollback to the live version: exit %d, stderr %q; want invalid_config", exit, stderr)
	}
}
