package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"redrain/adminauth"
	"redrain/dashboard"
)

var adminCommand = &command{name: "admin",
	summary:  "signed admin API calls: activities, the wallet's presentation, budgets, switches, stats, audit, parked records, expiry",
	synopsis: "redrain admin [--target URL] [--key ID:HEX] [--timeout 5m] <command> [args]",
	details: `Commands:
  apply FILE|- [--publish]   store each activity of FILE (one activity or {"activities":[...]})
                             as its next version; --publish then publishes it to all
  list                       activities: latest, live and canary versions
  get ID [--version N]       an activity's versions, live, canary and history; or one version
  publish ID --version N [--whitelist app:user,...] [--whitelist-file F]
                             publish a version, to the whitelist only when one is given
  rollback ID --version N    make an earlier version live again
  presentation put FILE|-    store the wallet's presentation (its entry slots) as its next version
  presentation show [--version N]
                             its versions, live, canary and history; or one version
  presentation publish --version N [--whitelist app:user,...] [--whitelist-file F]
                             publish a version, to the whitelist only when one is given
  presentation rollback --version N
                             make an earlier version live again
  budgets ACTIVITY           the activity's budgets as a table
  budget BUDGET_ID           one budget (ids look like spring/formal/cash)
  switches [set FILE|-]      show the switches, or replace them with FILE's JSON
  stats | audit | cluster    the node's stats, the audit report, the cluster view
  park PARTITION OFFSET --reason TEXT
                             set aside the grant record booking cannot read
                             or book at that offset, so that its partition goes
                             on (kept, with the key id, time and reason; a record
                             booking reads and does not wait at is refused)
  parked                     the parked records
  expiry run                 expire now every coin and item past its validity
                             (POST /admin/v1/expiry/run: the report as JSON)
  dashboard [--ttl 12h]      print the URL of the node's live dashboard, with a
                             ticket made with --key that opens it until --ttl
                             from now (at most 24h); nothing is sent

Flags may come before, between or after the arguments. --key defaults to
$REDRAIN_ADMIN_KEY, else the public development key. Point --target at the
node's operations listener (serve --admin-http).
Exit status: 1 when the node answers an error, 2 on bad usage or no answer.`,
	examples: `# store and publish a campaign's activities
redrain admin --target http://127.0.0.1:9300 apply examples/spring.json --publish
# a canary: version 2 to two users only
redrain admin publish spring --version 2 --whitelist 1:staff-1,1:staff-2
# the wallet's presentation: store it, show it to staff first, then to everyone
redrain admin presentation put examples/presentation.json
redrain admin presentation publish --version 1 --whitelist 1:staff-1
redrain admin presentation publish --version 1
# open the live dashboard of a node (its operations listener)
redrain admin --target http://127.0.0.1:9300 dashboard
# the budgets, with the key from the environment
REDRAIN_ADMIN_KEY=$(cat ops.key) REDRAIN_ADMIN_TARGET=http://10.0.0.5:9300 redrain admin budgets spring`}

// runAdmin runs `redrain admin args` and returns the exit status.
func runAdmin(ctx context.Context, c *cli, args []string) int {
	fs := adminCommand.flagSet()
	target := fs.String("target", "http://127.0.0.1:8080", "the node's base URL: its operations listener (serve --admin-http)")
	keyText := fs.String("key", "", "admin key ID:HEX (default $REDRAIN_ADMIN_KEY, else the development key)")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole command")
	var o adminOptions
	fs.Int64Var(&o.version, "version", 0, "get, publish, rollback, presentation: version number")
	fs.BoolVar(&o.publish, "publish", false, "apply: publish each new version to all")
	fs.StringVar(&o.whitelist, "whitelist", "", "publish, presentation publish: app_id:user_id entries, comma-separated")
	fs.StringVar(&o.whitelistFile, "whitelist-file", "", "publish, presentation publish: file of app_id:user_id entries, one a line")
	fs.StringVar(&o.reason, "reason", "", "park: why the record is set aside (required)")
	fs.DurationVar(&o.ttl, "ttl", 12*time.Hour, "dashboard: how long the ticket opens the dashboard (at most 24h)")
	pos, err := parseInterleaved(fs, args)
	if err = adminCommand.parsed(c, fs, err); err == nil {
		err = adminCommand.setFromEnv(c, fs)
	}
	if err != nil {
		return c.exitCode(adminCommand.name, err)
	}
	if len(pos) == 0 {
		adminCommand.writeUsage(c.stderr, fs)
		fmt.Fprintf(c.stderr, "\nredrain admin: no command\n")
		return 2
	}
	client, ok := adminClient(c, *target, *keyText)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	a := &adminRun{c: client, stdin: c.stdin, stdout: c.stdout, stderr: c.stderr, now: time.Now}
	return a.run(ctx, pos[0], pos[1:], o)
}

// adminClient is the signed client of --target and --key; false (the
// error printed) when the key does not parse.
func adminClient(c *cli, target, keyText string) (*adminauth.Client, bool) {
	key, err := adminauth.ParseKey(adminKeyOr(keyText, c.getenv))
	if err != nil {
		fmt.Fprintf(c.stderr, "error: --key: %v\n", err)
		return nil, false
	}
	return &adminauth.Client{Target: target, Signer: &adminauth.Signer{Key: key}, HTTP: &http.Client{}}, true
}

// adminKeyOr returns flag when set, else $REDRAIN_ADMIN_KEY when set, else
// the development key (the node warns when it accepts that one).
func adminKeyOr(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	if env := getenv("REDRAIN_ADMIN_KEY"); env != "" {
		return env
	}
	return adminauth.DevKey
}

// adminRun is one `redrain admin` command.
type adminRun struct {
	c              *adminauth.Client
	stdin          io.Reader
	stdout, stderr io.Writer
	now            func() time.Time
}

// errUsage is a command line that names no valid command; usage was printed.
var errUsage = errors.New("usage")

// adminOptions are the flags of the admin commands.
type adminOptions struct {
	version                          int64
	publish                          bool
	whitelist, whitelistFile, reason string
	ttl                              time.Duration
}

func (a *adminRun) run(ctx context.Context, cmd string, pos []string, o adminOptions) int {
	err := a.dispatch(ctx, cmd, pos, o)
	var api *adminauth.APIError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &api):
		fmt.Fprintf(a.stderr, "error: %v\n", api)
		return 1
	case errors.Is(err, adminauth.ErrUnreachable):
		fmt.Fprintf(a.stderr, "error: %v\n", err)
		return 2
	default:
		fmt.Fprintf(a.stderr, "error: %v\n", err)
		return 1
	}
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (a *adminRun) dispatch(ctx context.Context, cmd string, pos []string, o adminOptions) error {
	version, reason := o.version, o.reason
	want := map[string]int{"apply": 1, "list": 0, "get": 1, "publish": 1, "rollback": 1, "budgets": 1,
		"budget": 1, "stats": 0, "audit": 0, "cluster": 0, "park": 2, "parked": 0, "dashboard": 0, "expiry": 1}
	n, known := want[cmd]
	if cmd == "switches" {
		known, n = true, len(pos)
		if n != 0 && (n != 2 || pos[0] != "set") {
			n = -1
		}
	}
	sub := ""
	if cmd == "presentation" {
		known, n = true, len(pos)
		if n > 0 {
			sub = pos[0]
		}
		if !(sub == "put" && n == 2 || (sub == "show" || sub == "publish" || sub == "rollback") && n == 1) {
			n = -1
		}
	}
	switch {
	case !known:
		fmt.Fprintf(a.stderr, "redrain admin: unknown command %q\nrun 'redrain admin -h' for usage\n", cmd)
		return errUsage
	case len(pos) != n:
		fmt.Fprintf(a.stderr, "redrain admin %s: wrong arguments %q\nrun 'redrain admin -h' for usage\n", cmd, pos)
		return errUsage
	case (cmd == "publish" || cmd == "rollback") && version < 1:
		fmt.Fprintf(a.stderr, "redrain admin %s: --version N (N >= 1) is required\n", cmd)
		return errUsage
	case (sub == "publish" || sub == "rollback") && version < 1:
		fmt.Fprintf(a.stderr, "redrain admin presentation %s: --version N (N >= 1) is required\n", sub)
		return errUsage
	case cmd == "expiry" && pos[0] != "run":
		fmt.Fprintf(a.stderr, "redrain admin expiry: want \"run\", not %q\n", pos[0])
		return errUsage
	case cmd == "park" && reason == "":
		fmt.Fprintf(a.stderr, "redrain admin park: --reason TEXT is required\n")
		return errUsage
	case cmd == "dashboard" && (o.ttl <= 0 || o.ttl > adminauth.TicketTTLMax):
		fmt.Fprintf(a.stderr, "redrain admin dashboard: --ttl %v: more than 0, at most %v\n", o.ttl, adminauth.TicketTTLMax)
		return errUsage
	}
	switch cmd {
	case "apply":
		return a.apply(ctx, pos[0], o.publish)
	case "list":
		raw, err := a.c.Get(ctx, adminauth.PathActivities)
		if err != nil {
			return err
		}
		return adminauth.WriteActivities(a.stdout, raw)
	case "get":
		return a.print(a.c.Activity(ctx, pos[0], version))
	case "publish":
		list, err := a.whitelist(o.whitelist, o.whitelistFile)
		if err != nil {
			return err
		}
		return a.print(a.c.Publish(ctx, pos[0], version, list))
	case "rollback":
		return a.print(a.c.Rollback(ctx, pos[0], version))
	case "presentation":
		return a.presentation(ctx, pos, o)
	case "budgets":
		raw, err := a.c.Budgets(ctx, pos[0])
		if err != nil {
			return err
		}
		return adminauth.WriteBudgets(a.stdout, raw)
	case "budget":
		path, err := adminauth.BudgetPath(pos[0])
		if err != nil {
			return err
		}
		return a.print(a.c.Get(ctx, path))
	case "switches":
		if len(pos) == 0 {
			return a.print(a.c.Get(ctx, adminauth.PathSwitches))
		}
		body, err := a.read(pos[1])
		if err != nil {
			return err
		}
		return a.print(a.c.SetSwitches(ctx, body))
	case "park":
		part, perr := strconv.ParseInt(pos[0], 10, 32)
		offset, oerr := strconv.ParseInt(pos[1], 10, 64)
		if perr != nil || oerr != nil || part < 0 || offset < 0 {
			fmt.Fprintf(a.stderr, "redrain admin park: PARTITION and OFFSET are numbers >= 0, not %q\n", pos)
			return errUsage
		}
		return a.print(a.c.Park(ctx, int32(part), offset, reason))
	case "expiry":
		var out json.RawMessage
		err := a.c.Do(ctx, http.MethodPost, "/admin/v1/expiry/run", nil, nil, &out)
		return a.print(out, err)
	case "dashboard":
		u := strings.TrimSuffix(a.c.Target, "/") + "/dashboard?ticket=" +
			url.QueryEscape(adminauth.Ticket(a.c.Signer.Key, dashboard.TicketScope, a.now().Add(o.ttl)))
		_, err := fmt.Fprintln(a.stdout, u)
		return err
	default: // stats, audit, cluster, parked
		return a.print(a.c.Get(ctx, "/admin/v1/"+cmd))
	}
}

// apply stores every activity of file, and publishes each to all when
// publish is set. The whole file is checked before anything is sent.
func (a *adminRun) apply(ctx context.Context, file string, publish bool) error {
	data, err := a.read(file)
	if err != nil {
		return err
	}
	docs, err := adminauth.ParseActivities(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for _, d := range docs {
		applied, err := a.c.PutActivity(ctx, d)
		if err != nil {
			fmt.Fprintf(a.stderr, "%s: not stored\n", d.ID)
			return err
		}
		fmt.Fprintf(a.stdout, "%s: version %d\n", d.ID, applied.Version)
		if !publish {
			continue
		}
		if _, err := a.c.Publish(ctx, d.ID, applied.Version, nil); err != nil {
			fmt.Fprintf(a.stderr, "%s: version %d stored, not published\n", d.ID, applied.Version)
			return err
		}
		fmt.Fprintf(a.stdout, "%s: version %d published\n", d.ID, applied.Version)
	}
	return nil
}

// presentation runs `presentation put|show|publish|rollback`.
func (a *adminRun) presentation(ctx context.Context, pos []string, o adminOptions) error {
	switch pos[0] {
	case "put":
		body, err := a.read(pos[1])
		if err != nil {
			return err
		}
		v, err := a.c.PutPresentation(ctx, body)
		if err != nil {
			fmt.Fprintf(a.stderr, "presentation: not stored\n")
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "presentation: version %d\n", v)
		return err
	case "show":
		return a.print(a.c.Presentation(ctx, o.version))
	case "publish":
		list, err := a.whitelist(o.whitelist, o.whitelistFile)
		if err != nil {
			return err
		}
		return a.print(a.c.PublishPresentation(ctx, o.version, list))
	default: // rollback
		return a.print(a.c.RollbackPresentation(ctx, o.version))
	}
}

// whitelist reads the entries of --whitelist and --whitelist-file: nil
// when neither is given (publish to all), an error when they are given
// and hold no entry (an empty file must not publish to everyone).
func (a *adminRun) whitelist(list, file string) ([]string, error) {
	if list == "" && file == "" {
		return nil, nil
	}
	var r io.Reader
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	entries, err := adminauth.ParseWhitelist(list, r)
	if err == nil && len(entries) == 0 {
		err = errors.New("the whitelist is empty; give neither --whitelist nor --whitelist-file to publish to all")
	}
	return entries, err
}

// read returns the content of file, or of stdin for "-".
func (a *adminRun) read(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(a.stdin)
	}
	return os.ReadFile(file)
}

// print writes an answer as indented JSON.
func (a *adminRun) print(raw json.RawMessage, err error) error {
	if err != nil {
		return err
	}
	return adminauth.WriteJSON(a.stdout, raw)
}
