package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"redrain/adminauth"
)

// HotConfig compares booking with every grant on one budget account (a hot
// account: every grant debits it) against the same load spread over many
// budget accounts, in one run, so that the ratio is free of the machine's
// drift between runs.
type HotConfig struct {
	// Run is the load of each phase; its ActivityID, SceneID and RainID
	// are set by the comparison.
	Run Config
	// Budgets is how many budget accounts the spread phase uses (default 64).
	Budgets int
	// Rounds alternates the two phases this many times each (default 2):
	// one, many, one, many.
	Rounds int
}

// HotReport is the comparison's result.
type HotReport struct {
	Budgets int       `json:"budgets"`
	One     []*Report `json:"one"`  // every grant on one budget account
	Many    []*Report `json:"many"` // grants spread over Budgets accounts
	// OneBookedPerSec and ManyBookedPerSec average the phases' booked
	// grants per second; Ratio is OneBookedPerSec / ManyBookedPerSec.
	OneBookedPerSec  float64 `json:"one_booked_per_sec"`
	ManyBookedPerSec float64 `json:"many_booked_per_sec"`
	Ratio            float64 `json:"ratio"`
}

// Activities of the comparison, put and published by CompareHot.
const (
	HotOneActivity  = "bench-hot-one"
	HotManyActivity = "bench-hot-many"
)

// hotActivity is an always-open activity with n cash awards of equal
// weight, each with its own (effectively unlimited) formal budget.
func hotActivity(id string, n int) []byte {
	var awards, budgets []string
	for i := range n {
		awards = append(awards, fmt.Sprintf(`{"type":"cash-%d","kind":"money","min":1,"max":200}`, i))
		budgets = append(budgets, fmt.Sprintf(`"cash-%d":1000000000000`, i))
	}
	return fmt.Appendf(nil, `{"id":%q,"rains":[{"scene_id":"hot","rain_id":1,"always_open":true,"start":"2026-01-01T00:00:00Z"}],`+
		`"awards":[%s],"stages":[{"stage":"formal","budgets":{%s}}]}`, id, strings.Join(awards, ","), strings.Join(budgets, ","))
}

// CompareHot puts and publishes the two activities through the first
// target's admin API, waits until every target serves them, and runs the
// phases.
func CompareHot(ctx context.Context, cfg HotConfig) (*HotReport, error) {
	if cfg.Budgets == 0 {
		cfg.Budgets = 64
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 2
	}
	if cfg.Budgets < 2 || cfg.Rounds < 1 {
		return nil, fmt.Errorf("bench: hot comparison needs budgets >= 2 and rounds >= 1")
	}
	base, targets, err := cfg.Run.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Run.refuseFiles("the hot account comparison"); err != nil {
		return nil, err
	}
	key, err := adminauth.ParseKey(base.AdminKey)
	if err != nil {
		return nil, err
	}
	signer, err := base.appSigner() // validated by withDefaults
	if err != nil {
		return nil, err
	}
	c := &adminauth.Client{Target: adminTargetsOf(base, targets)[0].base, Signer: &adminauth.Signer{Key: key}}
	for _, a := range []struct {
		id string
		n  int
	}{{HotOneActivity, 1}, {HotManyActivity, cfg.Budgets}} {
		applied, err := c.PutActivity(ctx, adminauth.ActivityDoc{ID: a.id, Body: hotActivity(a.id, a.n)})
		if err != nil {
			return nil, fmt.Errorf("bench: put %s: %w", a.id, err)
		}
		if _, err := c.Publish(ctx, a.id, applied.Version, nil); err != nil {
			return nil, fmt.Errorf("bench: publish %s: %w", a.id, err)
		}
		for _, t := range targets {
			if err := awaitServed(ctx, t.base, base.AppID, a.id, signer); err != nil {
				return nil, err
			}
		}
	}
	rep := &HotReport{Budgets: cfg.Budgets}
	var oneSum, manySum float64
	for round := 0; round < cfg.Rounds; round++ {
		for _, id := range []string{HotOneActivity, HotManyActivity} {
			run := cfg.Run
			run.ActivityID, run.SceneID, run.RainID = id, "hot", 1
			run.UserPrefix = ""
			if cfg.Run.Progress != nil {
				fmt.Fprintf(cfg.Run.Progress, "round %d: %s\n", round+1, id)
			}
			r, err := Run(ctx, run)
			if err != nil {
				return nil, err
			}
			if err := r.Err(); err != nil {
				return nil, fmt.Errorf("bench: %s round %d: %w", id, round+1, err)
			}
			if id == HotOneActivity {
				rep.One = append(rep.One, r)
				oneSum += r.BookedPerSec
			} else {
				rep.Many = append(rep.Many, r)
				manySum += r.BookedPerSec
			}
		}
	}
	rep.OneBookedPerSec = oneSum / float64(cfg.Rounds)
	rep.ManyBookedPerSec = manySum / float64(cfg.Rounds)
	if rep.ManyBookedPerSec > 0 {
		rep.Ratio = rep.OneBookedPerSec / rep.ManyBookedPerSec
	}
	return rep, nil
}

// awaitServed polls a grant for a probe user until the target serves the
// activity (nodes pick a publish up within a second). Each request is
// signed by signer, unless it is nil. An answer that refuses the request
// itself (401 unauthorized, 403 forbidden) ends the wait at once.
func awaitServed(ctx context.Context, base string, app uint32, activity string, signer *adminauth.Signer) error {
	deadline := time.Now().Add(30 * time.Second)
	body := fmt.Sprintf(`{"app_id":%d,"user_id":"bench-probe","activity_id":%q,"scene_id":"hot","rain_id":1}`, app, activity)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/grants", strings.NewReader(body))
		if err != nil {
			return err
		}
		if signer != nil {
			if err := signer.Sign(req, []byte(body)); err != nil {
				return err
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return nil
			case http.StatusUnauthorized, http.StatusForbidden:
				var e struct {
					Code string `json:"code"`
				}
				_ = json.Unmarshal(answer, &e)
				if resp.StatusCode == http.StatusUnauthorized || e.Code == codeForbidden {
					return fmt.Errorf("bench: grant requests refused: POST %s/v1/grants: status %d: %.200s: %s",
						base, resp.StatusCode, answer, refusalHint(signer, app, e.Code))
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s does not serve activity %s after 30s (last: %v)", base, activity, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WriteText prints the comparison.
func (h *HotReport) WriteText(w io.Writer) {
	for i := range h.One {
		fmt.Fprintf(w, "round %d: one budget account %.0f booked/s (accepted %.0f/s); %d accounts %.0f booked/s (accepted %.0f/s)\n",
			i+1, h.One[i].BookedPerSec, h.One[i].AcceptedPerSec, h.Budgets, h.Many[i].BookedPerSec, h.Many[i].AcceptedPerSec)
	}
	fmt.Fprintf(w, "hot account: one %.0f booked/s vs %d accounts %.0f booked/s: ratio %.2f\n",
		h.OneBookedPerSec, h.Budgets, h.ManyBookedPerSec, h.Ratio)
}

// WriteJSON prints the comparison as JSON.
func (h *HotReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(h)
}
