// Command redrain issues red packets and books them into a double-entry
// ledger. Subcommands: serve, reconcile, bench, dev, admin, grants, keygen,
// sign, help, version. This file only binds flags (cli.go: usage, environment
// variables, logging, version); the work is in packages node, reconcile,
// bench and adminauth.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"redrain/bench"
	"redrain/booking"
	"redrain/consistency"
	"redrain/ingress"
	"redrain/node"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/devstack"
	"redrain/wallet"
	"redrain/withdraw/paytest"
)

// The commands, in the order the top-level usage lists them.
var (
	serveCommand = &command{name: "serve",
		summary: "run a node: the grant API, booking into the ledger and the admin API",
		synopsis: "redrain serve [--data-dir ./data] [--http :8080] [--admin-http ADDR] [--config FILE]\n" +
			"              [--kafka host:port,...] [--pd host:port,...] [--redis host:port] [flags]",
		details: `With no flags it runs the demo campaign on embedded backends (a Kafka-protocol
broker, a TiKV test cluster and a Redis server in process, their data under
--data-dir). --kafka, --pd and --redis point it at real servers; a node on
real backends or with cluster members needs --admin-http and a --config with
keys of its own. It stops gracefully on SIGINT or SIGTERM and then exits 0:
/readyz answers 503 at once while it serves on for --stop-grace, then its
listeners close, open leases are settled and it leaves the cluster (an idle
node in about a second). It exits 1 when it cannot start or when an HTTP
listener fails.`,
		examples: `# a complete node on embedded defaults: http://127.0.0.1:8080
redrain serve
# on real backends, the operations routes on a listener of their own, JSON logs
redrain serve --config campaign.json --kafka k1:9092 --pd pd1:2379 --redis r1:6379 \
  --admin-http 127.0.0.1:9300 --log-format json
# the same from the environment (a flag on the command line wins)
REDRAIN_SERVE_KAFKA=k1:9092 REDRAIN_SERVE_PD=pd1:2379 REDRAIN_SERVE_REDIS=r1:6379 \
  REDRAIN_SERVE_ADMIN_HTTP=127.0.0.1:9300 redrain serve --config campaign.json`}
	reconcileCommand = &command{name: "reconcile",
		summary: "audit the store of record against invariants 1-6, or the wallet's Redis cache against the store; exit 1 on any violation",
		synopsis: "redrain reconcile [--data-dir ./data | --pd host:port,...] [--json]\n" +
			"redrain reconcile --redis host:port [--repair] [--since 24h | --all] [--partitions N] [--rate 0] [--data-dir ./data | --pd host:port,...] [--json]\n" +
			"redrain reconcile --consistency [--kafka host:port,...] [--campaign FILE] [--repair] [--since 24h] [--partitions N] [--data-dir ./data | --pd host:port,...] [--json]",
		details: `Checks no overspend, exactly once, double entry, budget conservation,
balances equal postings and bookings match their tokens, and prints a report.
With --data-dir the node must be stopped (it opens the embedded store).

With --redis it checks the wallet's cache instead (issue 12, item 6): the
summary rr:w:{act_id} of every user a journal changed in the last --since
(or of every summary in Redis with --all) against the store; a summary that
differs while every tombstone up to the store's read was written is drift.
--repair replaces each drifted summary with the store's, only while the key
still holds the value it judged (it never lowers a key's seq, so it is safe
while nodes serve). It prints what it checked, the drift it found and what it
fixed, and exits 1 when drift is left unrepaired. --partitions must be the
grant topic's partition count (checked against the store's journals).

With --consistency the audit is followed by the consistency service's check
(issue 13, item 5) of every UTC day from --since ago to today: the grants the
topic (--kafka, or the embedded broker of --data-dir; without either that
part is skipped) issued in the records
booking passed against the accounts, each day the statements cover against
its journals (sums per party kind and asset), transfers missing their
receiver's move, withdrawals held over an hour. --repair books a grant issued
and not booked (Booker.Book, once by its limit key) and completes a transfer
(the spending service's own receiver move), straight into the store as a
node that does not own the partition would; a statements day is rebuilt from
its journals only with --campaign (its split rules and sponsors). It exits 1
when a mismatch is left unrepaired.`,
		examples: `# the embedded store of a stopped node
redrain reconcile --data-dir ./data
# a TiKV cluster, the report as JSON
redrain reconcile --pd pd1:2379,pd2:2379 --json
# the wallet cache of the users changed in the last day, repairing drift
redrain reconcile --pd pd1:2379 --redis r1:6379 --repair
# every summary in Redis, only reported
redrain reconcile --pd pd1:2379 --redis r1:6379 --all --json
# the stream, the store and the statements of the last two days, repaired
redrain reconcile --pd pd1:2379 --consistency --kafka k1:9092 --campaign campaign.json --since 48h --repair`}
	benchCommand = &command{name: "bench",
		summary:  "drive a node or cluster with grants, wait for booking to drain and audit the result",
		synopsis: "redrain bench [--target URL,...] [--admin-target URL,...] [--users N] [--duration D] [--rate R] [flags]",
		details: `Offers grants to the nodes of --target for --duration, waits for booking to
drain, runs the audit and reports it all; exits 1 when the audit fails.

Every grant request (/v1/grants, /v1/grants/batch) is signed with --app-key
(default $REDRAIN_APP_KEY): a key "APP:HEX" or "APP.LABEL:HEX" of the nodes'
app_keys for the app of --app. A key for another app is refused before
anything is sent. Without a key the requests go unsigned, which only a node
without app_keys (the embedded demo) accepts; a node that answers 401
unauthorized or 403 forbidden ends the run at once with what to change.
The stats and audit requests are signed with --admin-key (default
$REDRAIN_ADMIN_KEY, else the public development key).

--wallet-reads measures GET /v1/wallet/{act_id} instead (issue 12): it
grants one packet to each of --holders users, waits for booking to drain
and for their wallets to show it, then reads flat out for --duration, a
holder with probability 1 - --empty-ratio, else an act_id handed out after
the largest holder's in its block of 65,536 (an empty wallet), and checks
every answer (a wrong wallet exits 1). It reports reads/s, latency, the
answers by X-Redrain-Wallet-Source and the node's CPU per read; --rate,
--batch, --users and the audit do not apply. Bench a node nobody else
grants on: a user granted meanwhile may be one of the empty act_ids.`,
		examples: `# flat out for 10 s against the embedded demo
redrain bench --target http://127.0.0.1:8080
# paced, in batches of 100, signed for app 7
redrain bench --target http://127.0.0.1:8080 --app 7 --app-key "$REDRAIN_APP_KEY" --rate 20000 --batch 100
# paced, with the latency distribution, a per-second series and their plot
redrain bench --rate 5000 --duration 30s --hdr bench.hgrm --series bench.jsonl --plot bench.html
# the node against the ingress ceiling, alternating twice
redrain bench --ceiling --batch 100 --conns 8 --pipeline 4 --users 400000 --duration 5s --rounds 2
# grants, spending and withdrawals mixed for 10 s, then the audit
redrain bench --mix grants=70,spend=20,withdraw=10 --users 400 --workers 8 --rains 1
# wallet reads, 99% of them of users who hold nothing (650 holders)
redrain bench --wallet-reads --empty-ratio 0.99 --conns 16 --pipeline 4 --duration 10s`}
	devCommand = &command{name: "dev",
		summary:  "run the backends several nodes share, on loopback ports (development only)",
		synopsis: "redrain dev [--data-dir ./dev-data] [--control 127.0.0.1:PORT] [--log-format text|json]",
		details: `Runs the Kafka-protocol broker, Redis and a TiKV-protocol development server
on ports it keeps in --data-dir, and a payout test channel that pays every
withdrawal (redrain paytest) on a free loopback port, prints the flags to
hand to serve on stdout (the channel's as --payout-channel=test=URL) and
runs until SIGINT or SIGTERM. --control serves fault injection:
POST /broker/restart?down=3s and POST /tikv/restart?down=20s.`,
		examples: `# the backends, then a node on them
redrain dev --data-dir /tmp/dev > /tmp/dev.flags &
redrain serve $(cat /tmp/dev.flags) --config campaign.json --data-dir /tmp/n1 --admin-http 127.0.0.1:9301
# with fault injection: stop TiKV for 20 s
redrain dev --control 127.0.0.1:9400 & curl -XPOST '127.0.0.1:9400/tikv/restart?down=20s'`}
	helpCommand = &command{name: "help",
		summary:  "show a command's usage, examples and flags",
		synopsis: "redrain help [COMMAND]",
		examples: "redrain help\nredrain help serve"}
	versionCommand = &command{name: "version",
		summary:  "print the version: release, commit and Go release",
		synopsis: "redrain version\nredrain --version",
		examples: "redrain --version\n# a release build names its version\ngo build -ldflags \"-X main.version=v1.4.0\" -o bin/redrain ./cmd/redrain"}
	commands = []*command{serveCommand, reconcileCommand, benchCommand, devCommand, paytestCommand, adminCommand, statementsCommand, grantsCommand, keygenCommand, signCommand,
		helpCommand, versionCommand}
)

// writeTopUsage prints the command list.
func writeTopUsage(w io.Writer) {
	fmt.Fprint(w, "redrain issues red packets and books them into a double-entry ledger.\n\n"+
		"Usage:\n  redrain <command> [flags]\n  redrain --version\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, "\nEvery flag can also be set by an environment variable: REDRAIN_, the command,\n"+
		"'_' and the flag's name, upper-cased with '-' as '_' (serve's --admin-http:\n"+
		"REDRAIN_SERVE_ADMIN_HTTP); a flag on the command line wins.\n\n"+
		"Run 'redrain <command> -h' for its usage, examples and flags.\n")
}

func main() {
	os.Exit(run(os.Args[1:], &cli{getenv: os.Getenv, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

// run runs `redrain args` and returns the exit status.
func run(args []string, c *cli) int {
	if len(args) == 0 {
		writeTopUsage(c.stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		writeTopUsage(c.stdout)
		return 0
	case "-version", "--version":
		name = "version"
	}
	i := slices.IndexFunc(commands, func(cmd *command) bool { return cmd.name == name })
	if i < 0 {
		writeTopUsage(c.stderr)
		fmt.Fprintf(c.stderr, "\nredrain: unknown command %q\n", name)
		return 2
	}
	var err error
	switch cmd, args := commands[i], args[1:]; cmd {
	case serveCommand:
		err = c.serve(args)
	case reconcileCommand:
		err = c.reconcile(args)
	case benchCommand:
		err = c.bench(args)
	case devCommand:
		err = c.dev(args)
	case paytestCommand:
		err = c.paytest(args)
	case adminCommand:
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer cancel()
		return runAdmin(ctx, c, args)
	case statementsCommand:
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer cancel()
		return runStatements(ctx, c, args)
	case grantsCommand:
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer cancel()
		err = c.grants(ctx, args)
	case keygenCommand:
		err = c.keygen(args)
	case signCommand:
		return runSign(c, args, time.Now)
	case helpCommand:
		err = c.help(args)
	case versionCommand:
		fs := cmd.flagSet()
		if err = cmd.parse(c, fs, args); err == nil {
			info, ok := debug.ReadBuildInfo()
			fmt.Fprintln(c.stdout, versionText(version, info, ok))
		}
	}
	return c.exitCode(name, err)
}

// help prints the usage of the command it names, or the command list.
func (c *cli) help(args []string) error {
	fs := helpCommand.flagSet()
	if err := helpCommand.parse(c, fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		writeTopUsage(c.stdout)
		return nil
	case 1:
		// Every command answers -h with its usage on stdout.
		if name := fs.Arg(0); slices.ContainsFunc(commands, func(cmd *command) bool { return cmd.name == name }) {
			return exitError(run([]string{name, "-h"}, c))
		}
		return helpCommand.usageError(c, "unknown command %q", fs.Arg(0))
	default:
		return helpCommand.usageError(c, "one command at most, not %q", fs.Args())
	}
}

// devControl is `redrain dev --control`: POST /broker/restart?down=D and
// POST /tikv/restart?down=D stop that part, wait D (at most 5 min) and
// start it again on its ports and data, answering once it is back.
func devControl(s *devstack.Stack, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	restart := func(part string, do func(time.Duration) error) {
		mux.HandleFunc("POST /"+part+"/restart", func(w http.ResponseWriter, r *http.Request) {
			down, err := time.ParseDuration(r.URL.Query().Get("down"))
			if err != nil || down < 0 || down > 5*time.Minute {
				http.Error(w, `{"code":"malformed_request","message":"down: want a duration from 0s to 5m, such as 20s"}`, http.StatusBadRequest)
				return
			}
			log.Warn("fault injection: stopping "+part, "down", down)
			if err := do(down); err != nil {
				log.Error("fault injection: "+part+" did not come back", "err", err)
				http.Error(w, fmt.Sprintf(`{"code":"internal","message":%q}`, err.Error()), http.StatusInternalServerError)
				return
			}
			log.Warn("fault injection: " + part + " back")
			fmt.Fprintf(w, `{"restarted":%q,"down":%q}`+"\n", part, down)
		})
	}
	restart("broker", s.RestartBroker)
	restart("tikv", s.RestartTiKV)
	return mux
}

// backendFlags are the flags serve and reconcile share.
type backendFlags struct {
	dataDir, kafka, pd, redis string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	b.registerStore(fs)
	fs.StringVar(&b.kafka, "kafka", "", "Kafka brokers, comma-separated (default: embedded broker)")
	fs.StringVar(&b.redis, "redis", "", "Redis address host:port (default: embedded server)")
}

// registerStore registers the flags of the store of record alone.
func (b *backendFlags) registerStore(fs *flag.FlagSet) {
	fs.StringVar(&b.dataDir, "data-dir", "./data", "directory of the embedded backends' data")
	fs.StringVar(&b.pd, "pd", "", "TiKV PD endpoints, comma-separated (default: embedded TiKV test cluster)")
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *cli) serve(args []string) error {
	fs := serveCommand.flagSet()
	var b backendFlags
	b.register(fs)
	var lf logFlags
	lf.register(fs)
	httpAddr := fs.String("http", ":8080", "HTTP listen address")
	adminHTTP := fs.String("admin-http", "", "operations listen address: the admin API, /metrics and /debug/pprof/ (default: on --http, which only a node on embedded defaults may do)")
	config := fs.String("config", "", "campaign config file (default: the built-in demo campaign)")
	keysFile := fs.String("keys", "", "the campaign's keys (token_keys, active_token_key, draw_salt, admin_keys, app_keys) from a JSON file of their own, such as a mounted Kubernetes Secret; the --config file then leaves them out")
	partitions := fs.Int("partitions", storage.GrantPartitionsDefault, "partitions of the grant topic when it is created")
	grantTopic := fs.String("grant-topic", storage.GrantTopic, "the grant topic's name (created when missing); every node of a cluster names the same")
	bookingGroup := fs.String("booking-group", booking.Group, "booking's Kafka consumer group; every node of a cluster names the same")
	seeds := fs.String("cluster-seeds", "", "membership addresses (host:port) of the other cluster members, comma-separated")
	clusterAddr := fs.String("cluster-addr", "127.0.0.1:0", "this member's membership address (host:port) that other members list in --cluster-seeds")
	clusterEtcd := fs.String("cluster-etcd", "", "etcd endpoints (host:port,...) for membership instead of --cluster-seeds; --cluster-addr is then the remoting address other members dial (default: automanaged)")
	auditEvery := fs.Duration("audit-every", 0, "audit the store live this often (the invariants of GET /admin/v1/audit; the last result per invariant in redrain_audit_check_ok); each audit reads every account, so one or two nodes of a cluster are enough; 0: only when asked")
	stopGrace := fs.Duration("stop-grace", time.Second, "on SIGTERM, how long /readyz answers 503 while the node still serves, before its listeners close (load balancers stop sending meanwhile); 0: none")
	role := fs.String("role", "all", "which side of the API this node serves: read (wallets and ledgers from the store and Redis alone: no broker, booking or grant path, so it keeps answering while they are down), write (grants, binds, tokens and booking; no wallet) or all")
	walletStoreRate := fs.Int("wallet-store-rate", 2000, "while Redis fails, reads of wallets from the store a second at most (beyond it: the node's last copy, marked stale, or 503)")
	walletCheckDaily := fs.Bool("wallet-check-daily", true, "on a node serving wallets (role read or all) with Redis: 10 minutes after each UTC midnight, check the Redis summary of every user changed the day before against the store and repair drift (one node of those with it checks each day: the first to claim it in Redis)")
	lagMax := fs.Duration("booking-lag-max", booking.DefaultLagMax, "while the grant path is busy, booking gives way to it until its oldest unbooked grant is this old (larger: more grants accepted in a burst, booked later; 0 or negative: booking never gives way)")
	payoutChannels := fs.String("payout-channel", "", "withdrawals' payout channels, comma-separated name=url (each a payout API: POST {url}/pay, GET {url}/payouts/{id}); none on real backends: every withdrawal is unknown_channel; none on embedded defaults: a payout test channel \"test\" in process that pays every withdrawal (redrain paytest)")
	payoutTimeout := fs.Duration("payout-timeout", 5*time.Second, "how long one request to a payout channel may take (past it the outcome is unknown, and the node asks the channel before deciding)")
	withdrawMin := fs.Int64("withdraw-min", 100, "the least one withdrawal may take, in fen")
	withdrawMax := fs.Int64("withdraw-max", 5_000_000, "the most one withdrawal may take, in fen")
	if err := serveCommand.parse(c, fs, args); err != nil {
		return err
	}
	wcfg := node.WithdrawConfig{Timeout: *payoutTimeout, Min: *withdrawMin, Max: *withdrawMax}
	for _, p := range list(*payoutChannels) {
		name, url, err := node.ParsePayoutChannel(p)
		if err != nil {
			return serveCommand.usageError(c, "--payout-channel: %v", err)
		}
		if wcfg.Channels == nil {
			wcfg.Channels = map[string]string{}
		}
		wcfg.Channels[name] = url
	}
	if wcfg.Channels == nil && b.kafka == "" && b.pd == "" && b.redis == "" {
		// The embedded demo pays out too (make run): through a payout test
		// channel in process, which pays nothing anywhere.
		pay, err := paytest.Listen("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer pay.Close()
		wcfg.Channels = map[string]string{"test": pay.URL}
		lf.logger(c.stderr).Info("embedded defaults: withdrawals pay through a payout test channel in process (NOT FOR PRODUCTION); name it \"test\"", "url", pay.URL)
	}
	if *withdrawMin < 1 || *withdrawMax < *withdrawMin || *payoutTimeout <= 0 {
		return serveCommand.usageError(c, "--withdraw-min %d, --withdraw-max %d, --payout-timeout %v: want 1 <= min <= max and a positive timeout", *withdrawMin, *withdrawMax, *payoutTimeout)
	}
	if *lagMax == 0 {
		*lagMax = -1 // zero: never give way
	}
	if *auditEvery < 0 {
		return serveCommand.usageError(c, "--audit-every %v: a duration of 0 (off) or more", *auditEvery)
	}
	nodeRole, err := ingress.ParseRole(*role)
	if err != nil {
		return serveCommand.usageError(c, "--role: %v", err)
	}
	if *walletStoreRate <= 0 {
		return serveCommand.usageError(c, "--wallet-store-rate %d: at least 1", *walletStoreRate)
	}
	log := lf.logger(c.stderr)
	start := c.start
	if start == nil {
		start = func(cfg node.Config) (servingNode, error) {
			n, err := node.Start(cfg)
			if err != nil {
				return nil, err
			}
			return n, nil
		}
	}
	n, err := start(node.Config{DataDir: b.dataDir, HTTP: *httpAddr, AdminHTTP: *adminHTTP, Kafka: list(b.kafka), PD: list(b.pd),
		Redis: b.redis, ConfigFile: *config, KeysFile: *keysFile, Partitions: int32(*partitions), GrantTopic: *grantTopic, BookingGroup: *bookingGroup, Seeds: list(*seeds), Etcd: list(*clusterEtcd), ClusterAddr: *clusterAddr,
		BookingLagMax: *lagMax, AuditEvery: *auditEvery, StopGrace: *stopGrace, Role: nodeRole, WalletStoreRate: *walletStoreRate, WalletCheckDaily: *walletCheckDaily,
		Withdraw: wcfg, Log: log})
	if err != nil {
		return err
	}
	sig, release := c.stopSignals()
	defer release()
	var failed error
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-n.Served():
		// A listener failed: the node no longer answers there. Stop it and
		// exit non-zero, so that a supervisor restarts it.
		log.Error("http server stopped; stopping the node", "err", err)
		failed = fmt.Errorf("http server stopped: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Stop(ctx)
	log.Info("stopped")
	return failed
}

func (c *cli) reconcile(args []string) error {
	fs := reconcileCommand.flagSet()
	var b backendFlags
	b.registerStore(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	redisAddr := fs.String("redis", "", "check the wallet's cache in this Redis (host:port) against the store instead of the audit")
	repair := fs.Bool("repair", false, "with --redis: replace every drifted summary with the store's")
	since := fs.Duration("since", 24*time.Hour, "with --redis: check the users changed this long before now")
	all := fs.Bool("all", false, "with --redis: check every summary in Redis instead of the users changed in --since")
	partitions := fs.Int("partitions", storage.GrantPartitionsDefault, "with --redis: the grant topic's partitions")
	rate := fs.Int("rate", 0, "with --redis: accounts read from the store a second at most (those holding a summary; 0: no bound)")
	var cf consistencyFlags
	cf.register(fs)
	if err := reconcileCommand.parse(c, fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cacheFlags := set["repair"] || set["since"] || set["all"] || set["partitions"] || set["rate"]
	if cf.on {
		cacheFlags = set["all"] || set["rate"]
	}
	switch {
	case cf.on && *redisAddr != "":
		return reconcileCommand.usageError(c, "--consistency and --redis are two checks: give one")
	case !cf.on && (set["kafka"] || set["campaign"]):
		return reconcileCommand.usageError(c, "--kafka and --campaign are for --consistency")
	case cacheFlags && *redisAddr == "":
		return reconcileCommand.usageError(c, "--repair, --since, --all, --partitions and --rate check the wallet's cache: give its --redis")
	case *rate < 0:
		return reconcileCommand.usageError(c, "--rate %d: 0 (no bound) or more", *rate)
	case set["since"] && *all:
		return reconcileCommand.usageError(c, "--since and --all choose what to check: give one")
	case *since <= 0:
		return reconcileCommand.usageError(c, "--since %v: a duration above 0", *since)
	case *partitions <= 0 || *partitions > 1<<15:
		return reconcileCommand.usageError(c, "--partitions %d: from 1 to 32768", *partitions)
	}
	kv, err := storage.OpenTiKV(list(b.pd), b.dataDir)
	if err != nil {
		return err
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if *redisAddr != "" {
		return c.reconcileCache(ctx, kv, *redisAddr, wallet.CheckConfig{Parts: int32(*partitions), Repair: *repair, Rate: *rate}, *since, *all, *asJSON)
	}
	r, err := reconcile.Run(ctx, kv)
	if err != nil {
		return err
	}
	var cr *consistency.Report
	if cf.on {
		embedded := ""
		if b.pd == "" {
			embedded = b.dataDir
		}
		if cr, err = cf.run(ctx, kv, embedded, int32(*partitions), *repair, *since); err != nil {
			return err
		}
		r.Consistency = cr.JSON()
	}
	if *asJSON {
		c.stdout.Write(append(r.JSON(), '\n'))
	} else {
		r.WriteText(c.stdout)
		if cr != nil {
			cr.WriteText(c.stdout)
		}
	}
	if !r.OK || (cr != nil && !cr.OK()) {
		return exitError(1)
	}
	return nil
}

// reconcileCache is `redrain reconcile --redis`: the wallet's cache
// checked against the store (wallet.Check, wallet.CheckAll).
func (c *cli) reconcileCache(ctx context.Context, kv *storage.TiKV, addr string, cfg wallet.CheckConfig, since time.Duration, all, asJSON bool) error {
	rdb, err := storage.OpenRedis(addr, 4)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cfg.TiKV, cfg.Redis = kv, rdb.Client
	var r wallet.Report
	if all {
		r, err = wallet.CheckAll(ctx, cfg)
	} else {
		now := time.Now()
		r, err = wallet.Check(ctx, cfg, now.Add(-since), now)
	}
	if err != nil {
		return err
	}
	if asJSON {
		out, err := json.Marshal(r)
		if err != nil {
			return err
		}
		c.stdout.Write(append(out, '\n'))
	} else {
		r.WriteText(c.stdout)
	}
	if !r.OK() {
		return exitError(1)
	}
	return nil
}

func (c *cli) bench(args []string) error {
	fs := benchCommand.flagSet()
	targets := fs.String("target", "http://127.0.0.1:8080", "node base URLs, comma-separated")
	adminTargets := fs.String("admin-target", "", "the nodes' operations listeners (--admin-http), comma-separated, one per --target in the same order, for the stats and audit requests (default: the targets)")
	users := fs.Int("users", 10000, "distinct users (with --mix: 1000 by default)")
	duration := fs.Duration("duration", 10*time.Second, "how long to offer load")
	rate := fs.Int("rate", 0, "grants/s to offer over all targets, on a fixed schedule; latency is then counted from each request's slot in it, waits to send included; 0 = flat out")
	conns := fs.Int("conns", 64, "connections per target")
	pipeline := fs.Int("pipeline", 16, "requests in flight per connection")
	batch := fs.Int("batch", 0, "grants per request through POST /v1/grants/batch (0: one grant per POST /v1/grants)")
	repeat := fs.Float64("repeat", 0.1, "fraction of requests that repeat an already granted user (negative: none)")
	activity := fs.String("activity", "demo", "activity id")
	scene := fs.String("scene", "rain", "scene id")
	rain := fs.Uint64("rain", 1, "rain id")
	app := fs.Uint("app", 1, "app id of every grant; --app-key must be a key of this app")
	prefix := fs.String("user-prefix", "", "user id prefix (default: a fresh random one per run)")
	drain := fs.Duration("drain-timeout", 120*time.Second, "how long to wait for booking to catch up")
	audit := fs.Bool("audit", true, "run the audit after booking drained")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	hdr := fs.String("hdr", "", "write the latency distribution to this file in HdrHistogram's percentile format (.hgrm, ms); with --rate the service times go beside it (FILE.service.hgrm)")
	series := fs.String("series", "", "write a per-second series to this file as JSON lines (rates, errors, booked, latency percentiles)")
	plot := fs.String("plot", "", "write a self-contained HTML page plotting throughput and latency percentiles over time to this file")
	hot := fs.Int("compare-hot", 0, "compare booking with every grant on one budget account against grants spread over this many (puts and publishes its own activities; --activity is ignored)")
	ceiling := fs.Bool("ceiling", false, "alternate the load between the targets and an empty fasthttp handler the bench serves on 127.0.0.1 (the ingress ceiling), and print both accepted rates and their ratio per round; booking drains and the audit runs after the last node phase")
	walletReads := fs.Bool("wallet-reads", false, "measure wallet reads instead of grants: grant one packet to each of --holders users, wait for their wallets, "+
		"then read GET /v1/wallet/{act_id} flat out for --duration, a holder with probability 1 - --empty-ratio, else a user who holds nothing, checking every answer")
	holders := fs.Int("holders", bench.DefaultWalletHolders, "with --wallet-reads: users granted one packet each")
	emptyRatio := fs.Float64("empty-ratio", bench.DefaultEmptyRatio, "with --wallet-reads: share of reads of users who hold nothing, 0..1 (1 excluded; 0: holders only)")
	mix := fs.String("mix", "", "run a mixed load instead of grants, weighted kind=weight,...: grants (each user's next rain), spend (recharge, consume, refund, transfer coins), withdraw (POST /v1/withdrawals); e.g. grants=70,spend=20,withdraw=10")
	workers := fs.Int("workers", bench.DefaultMixWorkers, "with --mix: requests in flight, each worker with its own users")
	rains := fs.Int("rains", 1, "with --mix: rains 1..N of --activity granted to each user (a packet each)")
	withdrawAmount := fs.Int64("withdraw-amount", bench.DefaultWithdrawAmount, "with --mix: fen per withdrawal")
	channel := fs.String("channel", bench.DefaultPayoutChannel, "with --mix: the withdrawals' payout channel (a node on embedded defaults, or given redrain paytest's flag, calls it test)")
	rounds := fs.Int("rounds", 2, "with --compare-hot or --ceiling: how many times each phase runs, alternating")
	adminKey := fs.String("admin-key", "", "admin key ID:HEX that signs the stats and audit requests (default $REDRAIN_ADMIN_KEY, else the development key)")
	appKey := fs.String("app-key", "", "app key APP:HEX (or APP.LABEL:HEX) of the nodes' app_keys for the app of --app, that signs every grant request (and wallet read) "+
		"(default $REDRAIN_APP_KEY; neither: unsigned, which only a node without app_keys accepts)")
	if err := benchCommand.parse(c, fs, args); err != nil {
		return err
	}
	if *repeat == 0 {
		*repeat = -1 // bench.Config reads 0 as "the default"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	cfg := bench.Config{
		Targets: list(*targets), AdminTargets: list(*adminTargets), Users: *users, Duration: *duration, Rate: *rate, Conns: *conns,
		Pipeline: *pipeline, Batch: *batch, RepeatRatio: *repeat, AppID: uint32(*app), ActivityID: *activity,
		SceneID: *scene, RainID: *rain, UserPrefix: *prefix, DrainTimeout: *drain, Audit: *audit,
		AdminKey: adminKeyOr(*adminKey, c.getenv), AppKey: appKeyOr(*appKey, c.getenv), Progress: c.stderr,
		HDRFile: *hdr, SeriesFile: *series, PlotFile: *plot,
	}
	if *hot > 0 && *ceiling {
		return benchCommand.usageError(c, "--compare-hot and --ceiling are two comparisons: choose one")
	}
	if *mix != "" {
		if *hot > 0 || *ceiling || *walletReads {
			return benchCommand.usageError(c, "--mix runs its own load: no --compare-hot, --ceiling or --wallet-reads")
		}
		m, err := bench.ParseMix(*mix)
		if err != nil {
			return benchCommand.usageError(c, "--mix: %v", err)
		}
		if *batch > 1 || *rate != 0 {
			return benchCommand.usageError(c, "--mix is flat out, one operation a request: no --rate or --batch")
		}
		if !*audit {
			return benchCommand.usageError(c, "--mix always audits: no --audit=false")
		}
		cfg.Users, cfg.Audit = 0, false // --users when given, else bench's default for a mix
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "users" {
				cfg.Users = *users
			}
		})
		r, err := bench.RunMix(ctx, bench.MixConfig{Run: cfg, Mix: m, Workers: *workers, Rains: *rains, WithdrawAmount: *withdrawAmount, Channel: *channel})
		if err != nil {
			return err
		}
		return c.benchReport(r, r.Err, *asJSON)
	}
	if *walletReads {
		if *hot > 0 || *ceiling {
			return benchCommand.usageError(c, "--wallet-reads measures reads, not grants: no --compare-hot or --ceiling")
		}
		if *emptyRatio == 0 {
			*emptyRatio = -1 // bench.WalletConfig reads 0 as "the default"
		}
		cfg.Users, cfg.Audit = 0, false // not used; --rate and --batch are refused
		r, err := bench.ReadWallets(ctx, bench.WalletConfig{Run: cfg, Holders: *holders, EmptyRatio: *emptyRatio})
		if err != nil {
			return err
		}
		return c.benchReport(r, r.Err, *asJSON)
	}
	if *ceiling {
		r, err := bench.CompareCeiling(ctx, bench.CeilingConfig{Run: cfg, Rounds: *rounds})
		if err != nil {
			return err
		}
		return c.benchReport(r, r.Err, *asJSON)
	}
	if *hot > 0 {
		r, err := bench.CompareHot(ctx, bench.HotConfig{Run: cfg, Budgets: *hot, Rounds: *rounds})
		if err != nil {
			return err
		}
		return c.benchReport(r, func() error { return nil }, *asJSON)
	}
	r, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return c.benchReport(r, r.Err, *asJSON)
}

// benchReport prints a bench report as text or JSON; a run that failed
// (failed returns why) exits 1.
func (c *cli) benchReport(r interface {
	WriteText(io.Writer)
	WriteJSON(io.Writer) error
}, failed func() error, asJSON bool) error {
	if asJSON {
		if err := r.WriteJSON(c.stdout); err != nil {
			return err
		}
	} else {
		r.WriteText(c.stdout)
	}
	if err := failed(); err != nil {
		fmt.Fprintf(c.stderr, "redrain bench: %v\n", err)
		return exitError(1)
	}
	return nil
}

func (c *cli) dev(args []string) error {
	fs := devCommand.flagSet()
	dataDir := fs.String("data-dir", "./dev-data", "directory of the stack's data (and its chosen ports)")
	partitions := fs.Int("partitions", storage.GrantPartitionsDefault, "partitions of the grant topic when it is created")
	control := fs.String("control", "", "loopback address of a fault-injection listener (failure tests): POST /broker/restart?down=5s, POST /tikv/restart?down=20s")
	var lf logFlags
	lf.register(fs)
	if err := devCommand.parse(c, fs, args); err != nil {
		return err
	}
	log := lf.logger(c.stderr)
	var ctl net.Listener
	if *control != "" {
		if host, _, err := net.SplitHostPort(*control); err != nil || !net.ParseIP(host).IsLoopback() {
			return fmt.Errorf("--control %q: want a loopback address such as 127.0.0.1:9400 (it restarts the backends, unauthenticated)", *control)
		}
		l, err := net.Listen("tcp", *control)
		if err != nil {
			return fmt.Errorf("--control: %w", err)
		}
		ctl = l
	}
	s, err := devstack.Start(devstack.Config{DataDir: *dataDir, Partitions: int32(*partitions), Log: log})
	if err != nil {
		return err
	}
	sig, release := c.stopSignals()
	defer release()
	if ctl != nil {
		srv := &http.Server{Handler: devControl(s, log), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ctl) }()
		defer srv.Close()
		log.Info("fault-injection listener", "addr", ctl.Addr().String())
	}
	log.Info("development stack running (NOT FOR PRODUCTION); start nodes with the flags on stdout",
		"data_dir", *dataDir, "redis", s.RedisKind)
	pay, err := devPaytest(*dataDir)
	if err != nil {
		s.Close()
		return err
	}
	defer pay.Close()
	fmt.Fprintln(c.stdout, s.Flags()+" "+paytestFlag(pay))
	log.Info("stopping", "signal", (<-sig).String())
	s.Close()
	log.Info("stopped")
	return nil
}
