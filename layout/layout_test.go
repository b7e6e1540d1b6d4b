package layout

import (
	"os/exec"
	"strings"
	"testing"
)

// Libraries that do I/O or belong to one layer, by import path prefix.
var (
	actorLibs   = []string{"github.com/asynkron/protoactor-go"}
	networkLibs = []string{"net/http", "github.com/valyala/fasthttp", "google.golang.org/grpc"}
	storageLibs = []string{"github.com/IBM/sarama", "github.com/twmb/franz-go", "github.com/tikv/client-go", "github.com/redis/go-redis", "github.com/alicebob/miniredis"}
)

// rule says what a package must never import, directly or through others.
type rule struct {
	pkg     string
	never   []string // import path prefixes
	stdOnly bool     // only the standard library
	why     string
}

var rules = []rule{
	{pkg: "redrain/ledger", never: concat(actorLibs, networkLibs, storageLibs), why: "the pure money core"},
	{pkg: "redrain/tokens", stdOnly: true, why: "the token format imports only the standard library"},
	{pkg: "redrain/schema", stdOnly: true, why: "the published record schema: grant.proto embedded, no code"},
	{pkg: "redrain/protect", never: concat(networkLibs, storageLibs, actorLibs), why: "the guard does no I/O"},
	// The grant path reaches net/http only through the storage clients.
	{pkg: "redrain/grant", never: concat([]string{"github.com/valyala/fasthttp"}, actorLibs, []string{"redrain/ingress", "redrain/admin", "redrain/actors"}), why: "the grant domain reads no HTTP and hosts no actor"},
	{pkg: "redrain/booking", never: concat([]string{"github.com/valyala/fasthttp"}, actorLibs, []string{"redrain/ingress", "redrain/admin", "redrain/actors", "redrain/grant"}), why: "booking owns partitions' accounts with plain goroutines, reads no HTTP, and does not decide grants"},
	{pkg: "redrain/errcode", never: []string{"redrain/"}, why: "the error table holds no business rule"},
	{pkg: "redrain/metrics", stdOnly: true, why: "the grant path, booking and the guard count through it: no HTTP or client library comes with it (metrics/promexport serves it)"},
	{pkg: "redrain/admin", never: []string{"redrain/ingress"}, why: "admin routes are served by the ingress, not built on it"},
	{pkg: "redrain/openapi", stdOnly: true, why: "the API's OpenAPI document: openapi.json embedded, no code (its validator is a test dependency)"},
	{pkg: "redrain/adminauth", never: []string{"github.com/valyala/fasthttp"}, why: "signatures do not depend on the server's HTTP library"},
	{pkg: "redrain/reclaim", never: []string{"github.com/valyala/fasthttp", "redrain/ingress", "redrain/admin", "redrain/grant", "redrain/node"}, why: "the reclaim closes leases through booking and the budget grains, and serves no route"},
	{pkg: "redrain/statement", stdOnly: true, why: "the statements' money rules (the revenue split) do no I/O"},
	{pkg: "redrain/closing", never: concat(actorLibs, []string{"github.com/valyala/fasthttp", "redrain/ingress", "redrain/admin", "redrain/node", "redrain/grant", "redrain/actors"}), why: "statements are folded from the store's journals and read from it: no route, actor or grant decision"},
	{pkg: "redrain/consistency", never: concat(actorLibs, []string{"github.com/valyala/fasthttp", "redrain/ingress", "redrain/admin", "redrain/node", "redrain/grant", "redrain/actors", "redrain/reconcile"}), why: "the consistency service compares the stream, the store and the statements and repairs through booking's Book and Move: no route, actor or grant decision, and reconcile lists its report, not the reverse"},
	{pkg: "redrain/holders", never: concat(actorLibs, networkLibs, storageLibs, []string{"redrain/storage", "redrain/booking", "redrain/ingress", "redrain/node", "redrain/grant", "redrain/actors"}), why: "the holders filter is fed by its caller (booking's batches, a store scan the caller iterates): no storage, network or actor library, no package that does I/O"},
	{pkg: "redrain/presentation", never: concat(actorLibs, networkLibs, storageLibs, []string{"redrain/storage", "redrain/configstore", "redrain/ingress", "redrain/admin", "redrain/node"}), why: "the wallet's presentation is validated and served from memory: its caller reads the configuration store and hands it the versions"},
	{pkg: "redrain/spend", never: concat(actorLibs, networkLibs, storageLibs, []string{"redrain/storage", "redrain/booking", "redrain/errcode", "redrain/ingress", "redrain/node", "redrain/grant"}), why: "the spending domain builds moves and books them through its Mover: no HTTP, store or actor, and booking is wired in by the node"},
	{pkg: "redrain/expiry", never: concat(actorLibs, networkLibs, storageLibs, []string{"github.com/valyala/fasthttp", "redrain/storage", "redrain/booking", "redrain/errcode", "redrain/ingress", "redrain/node", "redrain/grant", "redrain/campaign"}), why: "the expiry sweep reads accounts and books moves through its Booker (booking, wired in by the node) and is given its rules and candidates: no store, route or configuration of its own"},
	{pkg: "redrain/withdraw", never: concat([]string{"github.com/valyala/fasthttp"}, actorLibs, []string{"redrain/ingress", "redrain/admin", "redrain/actors", "redrain/node", "redrain/grant", "redrain/booking"}), why: "withdrawals reach booking and the grant path through their interfaces (Packets, Booker, Mover), and serve no route (ingress does)"},
	{pkg: "redrain/bench", never: []string{"redrain/actors", "redrain/admin", "redrain/campaign", "redrain/cluster", "redrain/configstore", "redrain/grant", "redrain/ingress", "redrain/ledger", "redrain/node", "redrain/reconcile", "redrain/storage", "redrain/tokens"}, why: "the load generator is a client of the HTTP API only"},
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestImportRules lists every package's transitive imports with the go
// tool and checks each rule.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "redrain/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	for _, r := range rules {
		ds, ok := deps[r.pkg]
		if !ok {
			t.Errorf("rule for %s: no such package", r.pkg)
			continue
		}
		for _, d := range ds {
			if r.stdOnly && !isStd(d) {
				t.Errorf("%s imports %s: %s", r.pkg, d, r.why)
			}
			for _, p := range r.never {
				if d == p || strings.HasPrefix(d, strings.TrimSuffix(p, "/")+"/") {
					t.Errorf("%s imports %s: %s", r.pkg, d, r.why)
				}
			}
		}
	}
}

// isStd reports whether an import path is the standard library's: its
// first element has no dot, and it is not this module's.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".") && first != "redrain"
}
