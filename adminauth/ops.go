package adminauth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
)

// This file holds the operations of `redrain admin` on top of Client.Do:
// the routes, the request bodies, and the tables and JSON they print, so
// that the command only binds flags.

// Admin routes.
const (
	PathActivities = "/admin/v1/activities"
	PathBudgets    = "/admin/v1/budgets"
	PathSwitches   = "/admin/v1/switches"
	PathStats      = "/admin/v1/stats"
	PathAudit      = "/admin/v1/audit"
	PathCluster    = "/admin/v1/cluster"
	// PathPresentation is the wallet's presentation: GET, PUT, and
	// /publish, /rollback below it.
	PathPresentation = "/admin/v1/presentation"
)

// ActivityPath returns the escaped path of activity id.
func ActivityPath(id string) string { return PathActivities + "/" + url.PathEscape(id) }

// BudgetPath returns the escaped path of budget id (such as
// spring/formal/cash): each '/'-separated part is escaped on its own, so
// the id's slashes stay path separators.
func BudgetPath(id string) (string, error) {
	parts := strings.Split(id, "/")
	for i, p := range parts {
		if p == "" {
			return "", fmt.Errorf("budget id %q has an empty part", id)
		}
		parts[i] = url.PathEscape(p)
	}
	return PathBudgets + "/" + strings.Join(parts, "/"), nil
}

// ActivityDoc is one activity of a file given to apply: its id and the
// activity object as written.
type ActivityDoc struct {
	ID   string
	Body json.RawMessage
}

// ParseActivities reads a file of activities: either one activity object
// (with a string "id") or {"activities":[...]} of them. Ids must be
// distinct and not empty; nothing else of an activity is checked here (the
// node validates it).
func ParseActivities(data []byte) ([]ActivityDoc, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	list, isList := top["activities"]
	_, hasID := top["id"]
	var raws []json.RawMessage
	switch {
	case isList && !hasID:
		if len(top) != 1 {
			return nil, errors.New(`a list of activities is {"activities":[...]} with no other field`)
		}
		if err := json.Unmarshal(list, &raws); err != nil {
			return nil, fmt.Errorf("activities: %w", err)
		}
		if len(raws) == 0 {
			return nil, errors.New("activities: the list is empty")
		}
	default:
		raws = []json.RawMessage{bytes.TrimSpace(data)}
	}
	docs := make([]ActivityDoc, len(raws))
	seen := make(map[string]bool, len(raws))
	for i, raw := range raws {
		var a struct {
			ID *string `json:"id"`
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("activity %d: %w", i, err)
		}
		if a.ID == nil || *a.ID == "" {
			return nil, fmt.Errorf("activity %d: no \"id\"", i)
		}
		if seen[*a.ID] {
			return nil, fmt.Errorf("activity %d: id %q is given twice", i, *a.ID)
		}
		seen[*a.ID] = true
		docs[i] = ActivityDoc{ID: *a.ID, Body: raw}
	}
	return docs, nil
}

// Applied is the answer to PUT /admin/v1/activities/{id}.
type Applied struct {
	Activity string `json:"activity"`
	Version  int64  `json:"version"`
}

// PutActivity stores doc as the activity's next version.
func (c *Client) PutActivity(ctx context.Context, doc ActivityDoc) (Applied, error) {
	var a Applied
	err := c.Do(ctx, http.MethodPut, ActivityPath(doc.ID), nil, doc.Body, &a)
	return a, err
}

// Publish publishes version of activity id, to the users of whitelist
// ("app_id:user_id" each), or to all when whitelist is nil.
func (c *Client) Publish(ctx context.Context, id string, version int64, whitelist []string) (json.RawMessage, error) {
	return c.publishAt(ctx, ActivityPath(id), version, whitelist)
}

// Rollback makes version of activity id the live one again.
func (c *Client) Rollback(ctx context.Context, id string, version int64) (json.RawMessage, error) {
	return c.rollbackAt(ctx, ActivityPath(id), version)
}

// Activity returns GET /admin/v1/activities/{id}, or the body of one
// version when version > 0.
func (c *Client) Activity(ctx context.Context, id string, version int64) (json.RawMessage, error) {
	return c.showAt(ctx, ActivityPath(id), version)
}

// PutPresentation stores body as the wallet presentation's next version
// and returns its number.
func (c *Client) PutPresentation(ctx context.Context, body json.RawMessage) (int64, error) {
	if !json.Valid(body) {
		return 0, errors.New("presentation: not valid JSON")
	}
	var a struct {
		Version int64 `json:"version"`
	}
	err := c.Do(ctx, http.MethodPut, PathPresentation, nil, body, &a)
	return a.Version, err
}

// Presentation returns GET /admin/v1/presentation (head, history and
// versions), or one version with its body when version > 0.
func (c *Client) Presentation(ctx context.Context, version int64) (json.RawMessage, error) {
	return c.showAt(ctx, PathPresentation, version)
}

// PublishPresentation publishes version of the presentation, to the
// users of whitelist, or to all when whitelist is nil.
func (c *Client) PublishPresentation(ctx context.Context, version int64, whitelist []string) (json.RawMessage, error) {
	return c.publishAt(ctx, PathPresentation, version, whitelist)
}

// RollbackPresentation makes version of the presentation live again.
func (c *Client) RollbackPresentation(ctx context.Context, version int64) (json.RawMessage, error) {
	return c.rollbackAt(ctx, PathPresentation, version)
}

// publishAt posts a publish of version to path + "/publish".
func (c *Client) publishAt(ctx context.Context, path string, version int64, whitelist []string) (json.RawMessage, error) {
	if version < 1 {
		return nil, fmt.Errorf("version is %d, want >= 1", version)
	}
	body := struct {
		Version   int64    `json:"version"`
		Whitelist []string `json:"whitelist,omitempty"`
	}{version, whitelist}
	var out json.RawMessage
	err := c.Do(ctx, http.MethodPost, path+"/publish", nil, body, &out)
	return out, err
}

// rollbackAt posts a rollback to version to path + "/rollback".
func (c *Client) rollbackAt(ctx context.Context, path string, version int64) (json.RawMessage, error) {
	if version < 1 {
		return nil, fmt.Errorf("version is %d, want >= 1", version)
	}
	var out json.RawMessage
	err := c.Do(ctx, http.MethodPost, path+"/rollback", nil, map[string]int64{"version": version}, &out)
	return out, err
}

// showAt gets path, with ?version when version > 0.
func (c *Client) showAt(ctx context.Context, path string, version int64) (json.RawMessage, error) {
	var q url.Values
	if version < 0 {
		return nil, fmt.Errorf("version is %d, want >= 1", version)
	}
	if version > 0 {
		q = url.Values{"version": {strconv.FormatInt(version, 10)}}
	}
	var out json.RawMessage
	err := c.Do(ctx, http.MethodGet, path, q, nil, &out)
	return out, err
}

// Budgets returns GET /admin/v1/budgets?activity=id.
func (c *Client) Budgets(ctx context.Context, activity string) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.Do(ctx, http.MethodGet, PathBudgets, url.Values{"activity": {activity}}, nil, &out)
	return out, err
}

// PathParked lists the parked grant records (GET) and parks one (POST).
const PathParked = "/admin/v1/parked"

// Park asks the node to set aside the grant record at offset of partition
// part, which booking cannot read or book, so that the partition goes on; reason
// is kept with it.
func (c *Client) Park(ctx context.Context, part int32, offset int64, reason string) (json.RawMessage, error) {
	if reason == "" {
		return nil, errors.New("park: a reason is required")
	}
	body := struct {
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
		Reason    string `json:"reason"`
	}{part, offset, reason}
	var out json.RawMessage
	err := c.Do(ctx, http.MethodPost, PathParked, nil, body, &out)
	return out, err
}

// Get returns the JSON answer of GET path (already escaped).
func (c *Client) Get(ctx context.Context, path string) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.Do(ctx, http.MethodGet, path, nil, nil, &out)
	return out, err
}

// SetSwitches sends PUT /admin/v1/switches with body, which must be JSON.
func (c *Client) SetSwitches(ctx context.Context, body []byte) (json.RawMessage, error) {
	if !json.Valid(body) {
		return nil, errors.New("switches: not valid JSON")
	}
	var out json.RawMessage
	err := c.Do(ctx, http.MethodPut, PathSwitches, nil, json.RawMessage(body), &out)
	return out, err
}

// WhitelistEntriesMax bounds a whitelist read by ParseWhitelist.
const WhitelistEntriesMax = 100_000

// ParseWhitelist reads whitelist entries "app_id:user_id" from list
// (comma-separated) and from r when not nil (one a line; blank lines and
// lines starting with '#' are skipped). Duplicates are dropped; the order
// of first appearance is kept.
func ParseWhitelist(list string, r io.Reader) ([]string, error) {
	var entries []string
	seen := map[string]bool{}
	add := func(where, s string) error {
		s = strings.TrimSpace(s)
		app, user, ok := strings.Cut(s, ":")
		if _, err := strconv.ParseUint(app, 10, 32); !ok || err != nil || user == "" || strings.ContainsAny(user, " \t,") {
			return fmt.Errorf("whitelist %s: %q is not app_id:user_id", where, s)
		}
		if !seen[s] {
			if len(entries) == WhitelistEntriesMax {
				return fmt.Errorf("whitelist: more than %d entries", WhitelistEntriesMax)
			}
			seen[s] = true
			entries = append(entries, s)
		}
		return nil
	}
	if list != "" {
		for i, s := range strings.Split(list, ",") {
			if err := add("entry "+strconv.Itoa(i+1), s); err != nil {
				return nil, err
			}
		}
	}
	if r != nil {
		sc := bufio.NewScanner(r)
		for line := 1; sc.Scan(); line++ {
			s := strings.TrimSpace(sc.Text())
			if s == "" || strings.HasPrefix(s, "#") {
				continue
			}
			if err := add("line "+strconv.Itoa(line), s); err != nil {
				return nil, err
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("whitelist: %w", err)
		}
	}
	return entries, nil
}

// WriteJSON writes raw indented, with a final newline.
func WriteJSON(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// Columns of the tables.
var (
	activityColumns = []string{"id", "latest", "live", "canary"}
	budgetColumns   = []string{"id", "asset", "total", "available", "leased", "returned", "issued", "booked", "in_flight", "ok"}
)

// WriteActivities writes the answer of GET /admin/v1/activities as a table.
func WriteActivities(w io.Writer, answer json.RawMessage) error {
	return writeTable(w, answer, "activities", activityColumns)
}

// WriteBudgets writes the answer of GET /admin/v1/budgets as a table.
func WriteBudgets(w io.Writer, answer json.RawMessage) error {
	return writeTable(w, answer, "budgets", budgetColumns)
}

// writeTable writes the objects of answer's field list as a table of
// columns: strings unquoted, other values as JSON, absent or null as "-".
func writeTable(w io.Writer, answer json.RawMessage, list string, columns []string) error {
	var top map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(answer, &top); err != nil {
		return fmt.Errorf("answer is not {%q:[objects]}: %w", list, err)
	}
	rows, ok := top[list]
	if !ok {
		return fmt.Errorf("answer has no %q", list)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(columns, "\t")))
	for _, row := range rows {
		for i, col := range columns {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, cell(row[col]))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func cell(v json.RawMessage) string {
	var s string
	switch {
	case len(v) == 0 || string(v) == "null":
		return "-"
	case json.Unmarshal(v, &s) == nil && !strings.ContainsAny(s, "\t\r\n"):
		return s
	case s != "":
		return strconv.Quote(s)
	}
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	return b.String()
}
