package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"redrain/adminauth"
	"redrain/dashboard"
	"redrain/ledger"
	"redrain/storage"
)

// chromium finds the headless browser (Debian's chromium; make test-deps
// installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: make test-deps installs it (Debian package chromium)")
	return ""
}

// TestDashboard drives the dashboard in a real browser (headless
// Chromium through chromedp) against three nodes on `redrain dev`: the
// page lists the three members, ready; its numbers move while bench
// grants; and once the store is corrupted (a budget whose figures no
// longer add up), the audit's budget_conservation row turns red.
func TestDashboard(t *testing.T) {
	r := newRig(t, 10, 1)
	n := r.nodes[0]
	key := adminauth.MustParseKey(testAdminKey)
	url := "http://" + n.adminAddr + "/dashboard?ticket=" + adminauth.Ticket(key, dashboard.TicketScope, time.Now().Add(time.Hour))

	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-dev-shm-usage", true))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	// eval polls a script until ok accepts its value.
	eval := func(what, script string, within time.Duration, ok func(v any) bool) any {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			v, err := chromedp.Run(ctx, chromedp.Evaluate[any](script))
			if err == nil && ok(v) {
				return v
			}
			if time.Now().After(deadline) {
				page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
				t.Fatalf("%s: last value %v (err %v); the page reads:\n%s", what, v, err, page)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	eval("three ready members", `[...document.querySelectorAll("#members tbody tr")].filter(r => r.textContent.includes("ready") && !r.classList.contains("bad")).length`,
		30*time.Second, func(v any) bool { return v == float64(3) })
	eval("the stream is live", `document.getElementById("conn").textContent`, 10*time.Second, func(v any) bool { return v == "live" })

	// Bench grants through the three nodes; the page's figures move.
	var targets, admins []string
	for _, m := range r.nodes {
		targets, admins = append(targets, "http://"+m.addr), append(admins, "http://"+m.adminAddr)
	}
	benchDone := make(chan []byte, 1)
	go func() {
		out, err := exec.Command(r.bin, "bench", "--target", strings.Join(targets, ","), "--admin-target", strings.Join(admins, ","),
			"--activity", "e2e", "--scene", "rain", "--rain", "1", "--rate", "2000", "--duration", "25s", "--users", "60000", "--audit=false").CombinedOutput()
		if err != nil {
			out = append(out, fmt.Sprintf("\nbench: %v", err)...)
		}
		benchDone <- out
	}()
	number := func(id string) string {
		return `Number(document.getElementById("` + id + `").textContent.replace(/,/g, ""))`
	}
	first := eval("grants accepted per second shown", number("accepted"), 60*time.Second, func(v any) bool { f, _ := v.(float64); return f > 0 })
	eval("the accepted rate moves", number("accepted"), 20*time.Second, func(v any) bool { f, _ := v.(float64); return f > 0 && f != first })
	eval("grants booked per second shown", number("booked"), 30*time.Second, func(v any) bool { f, _ := v.(float64); return f > 0 })
	eval("a grant latency percentile shown", number("p99"), 10*time.Second, func(v any) bool { f, _ := v.(float64); return f > 0 })
	eval("budgets listed", `document.querySelectorAll("#budgets tbody tr").length`, 10*time.Second, func(v any) bool { f, _ := v.(float64); return f >= 3 })
	if out := <-benchDone; strings.Contains(string(out), "bench: ") {
		t.Fatalf("bench failed:\n%s", out)
	}
	eval("every invariant holds", `[...document.querySelectorAll("#audit tbody tr")].map(r => r.dataset.check + (r.classList.contains("bad") ? ":bad" : ":ok")).join(" ")`,
		30*time.Second, func(v any) bool {
			s, _ := v.(string)
			return strings.Contains(s, "budget_conservation:ok") && !strings.Contains(s, ":bad")
		})

	// Corrupt the store: a budget's leased figure without a lease.
	kv, err := storage.OpenTiKV([]string{flagValue(r.st.flags, "pd")}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	err = kv.Update(context.Background(), func(txn storage.Txn) error {
		raw, err := txn.Get(context.Background(), storage.BudgetKey("closed/formal/cash"))
		if err != nil || raw == nil {
			return fmt.Errorf("read budget: %v (found %v)", err, raw != nil)
		}
		b, err := ledger.UnmarshalBudget(raw)
		if err != nil {
			return err
		}
		b.Leased += 7
		return txn.Set(storage.BudgetKey(b.ID), ledger.MarshalBudget(nil, b))
	})
	if err != nil {
		t.Fatalf("corrupt the budget: %v", err)
	}
	eval("the broken invariant's row is red", `(() => { const r = document.querySelector('#audit tr[data-check="budget_conservation"]'); return r ? r.className : "none"; })()`,
		30*time.Second, func(v any) bool { return v == "bad" })
	eval("the corrupted budget's row is red", `(() => { const r = document.querySelector('#budgets tr[data-budget="closed/formal/cash"]'); return r ? r.className : "none"; })()`,
		15*time.Second, func(v any) bool { return v == "bad" })

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.dir, "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes; REDRAIN_E2E_KEEP=1 keeps it)", path, len(shot))
}
