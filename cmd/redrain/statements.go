package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"redrain/adminauth"
	"redrain/statement"
)

var statementsCommand = &command{name: "statements",
	summary:  "a party's statement of a UTC day, month or year, as JSON or CSV (signed admin call)",
	synopsis: "redrain statements --period day|month|year --date DATE --party KIND:ID [--format json|csv] [--target URL] [--key ID:HEX]",
	details: `Asks a node's operations listener (GET /admin/v1/statements) for the
statement of one party: activity:ID (the packets its budgets paid, expiry
returned to them), sponsor:ID (its activities summed), user:ACT_ID (every
change of the user's account) or merchant:ID (consumptions, refunds and
reversals, with each fee party's share of the revenue split). --date is
YYYY-MM-DD, YYYY-MM or YYYY by --period (UTC). Lines are signed as their
effect on the party, in the asset's unit (fen for cash, also as exact yuan),
each with its count; "closed" is true once every partition is folded past
the period's end (T+1). Every node folds the journals into the statements
every 10s.
Exit status: 1 when the node answers an error, 2 on bad usage or no answer.`,
	examples: `# a merchant's statement of one day, as CSV
redrain statements --target http://127.0.0.1:9300 --period day --date 2026-12-05 --party merchant:m1 --format csv
# an activity's month, JSON
redrain statements --period month --date 2026-12 --party activity:spring
# a sponsor's year, with the key from the environment
REDRAIN_ADMIN_KEY=$(cat ops.key) redrain statements --period year --date 2026 --party sponsor:acme`}

// runStatements runs `redrain statements args` and returns the exit
// status.
func runStatements(ctx context.Context, c *cli, args []string) int {
	fs := statementsCommand.flagSet()
	target := fs.String("target", "http://127.0.0.1:8080", "the node's base URL: its operations listener (serve --admin-http)")
	keyText := fs.String("key", "", "admin key ID:HEX (default $REDRAIN_ADMIN_KEY, else the development key)")
	timeout := fs.Duration("timeout", time.Minute, "bound on the whole command")
	period := fs.String("period", "", "day, month or year (required)")
	date := fs.String("date", "", "YYYY-MM-DD, YYYY-MM or YYYY by --period (required)")
	party := fs.String("party", "", "activity:ID, sponsor:ID, user:ACT_ID or merchant:ID (required)")
	format := fs.String("format", "json", "json or csv")
	err := statementsCommand.parse(c, fs, args)
	if err == nil && fs.NArg() > 0 {
		err = statementsCommand.usageError(c, "unexpected arguments %q", fs.Args())
	}
	if err == nil {
		_, err = statement.ParsePeriod(*period, *date)
		if err == nil {
			_, err = statement.ParseParty(*party)
		}
		if err == nil && *format != "json" && *format != "csv" {
			err = fmt.Errorf("--format %q: want json or csv", *format)
		}
		if err != nil {
			err = statementsCommand.usageError(c, "%v", err)
		}
	}
	if err != nil {
		return c.exitCode(statementsCommand.name, err)
	}
	client, ok := adminClient(c, *target, *keyText)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var body []byte
	q := url.Values{"period": {*period}, "date": {*date}, "party": {*party}, "format": {*format}}
	err = client.Do(ctx, http.MethodGet, "/admin/v1/statements", q, nil, &body)
	var api *adminauth.APIError
	switch {
	case err == nil:
		if *format == "json" {
			body = append(body, '\n')
		}
		if _, err := c.stdout.Write(body); err != nil {
			fmt.Fprintf(c.stderr, "error: %v\n", err)
			return 1
		}
		return 0
	case errors.As(err, &api):
		fmt.Fprintf(c.stderr, "error: %v\n", api)
		return 1
	default:
		fmt.Fprintf(c.stderr, "error: %v\n", err)
		return 2
	}
}
