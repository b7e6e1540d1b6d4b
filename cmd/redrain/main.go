// Command redrain issues red packets and books them into a double-entry
// ledger. Subcommands: serve, reconcile, bench, dev, admin, keygen, sign.
// This file only binds flags; the work is in packages node, reconcile,
// bench and adminauth.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"redrain/bench"
	"redrain/booking"
	"redrain/node"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/devstack"
)

const usage = `usage: redrain <command> [flags]

commands:
  serve      run a node (embedded Kafka, TiKV and Redis unless pointed at servers)
  reconcile  audit the store of record against every invariant
  bench      drive a node or cluster with grants (signed with --app-key) and audit the result
  dev        run the backends several nodes share (development only)
  admin      signed admin API calls: activities, budgets, switches, stats
  keygen     print a fresh secret key for admin_keys, app_keys or token_keys
  sign       print the signature headers of one client API (/v1) request, or a bind consent

Run 'redrain <command> -h' for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "reconcile":
		err = reconcileCmd(os.Args[2:])
	case "bench":
		err = benchCmd(os.Args[2:])
	case "dev":
		err = devCmd(os.Args[2:])
	case "admin":
		err = adminCmd(os.Args[2:])
	case "keygen":
		err = keygenCmd(os.Args[2:])
	case "sign":
		err = signCmd(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "redrain: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(int(exit))
		}
		fmt.Fprintf(os.Stderr, "redrain %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// exitError is a quiet non-zero exit (the command already reported why).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

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
	fs.StringVar(&b.dataDir, "data-dir", "./data", "directory of the embedded backends' data")
	fs.StringVar(&b.kafka, "kafka", "", "Kafka brokers, comma-separated (default: embedded broker)")
	fs.StringVar(&b.pd, "pd", "", "TiKV PD endpoints, comma-separated (default: embedded TiKV test cluster)")
	fs.StringVar(&b.redis, "redis", "", "Redis address host:port (default: embedded server)")
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

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var b backendFlags
	b.register(fs)
	httpAddr := fs.String("http", ":8080", "HTTP listen address")
	adminHTTP := fs.String("admin-http", "", "operations listen address: the admin API, /metrics and /debug/pprof/ (default: on --http, which only a node on embedded defaults may do)")
	config := fs.String("config", "", "campaign config file (default: the built-in demo campaign)")
	partitions := fs.Int("partitions", storage.GrantPartitionsDefault, "partitions of the grant topic when it is created")
	seeds := fs.String("cluster-seeds", "", "membership addresses (host:port) of the other cluster members, comma-separated")
	clusterAddr := fs.String("cluster-addr", "127.0.0.1:0", "this member's membership address (host:port) that other members list in --cluster-seeds")
	clusterEtcd := fs.String("cluster-etcd", "", "etcd endpoints (host:port,...) for membership instead of --cluster-seeds; --cluster-addr is then the remoting address other members dial (default: automanaged)")
	lagMax := fs.Duration("booking-lag-max", booking.DefaultLagMax, "while the grant path is busy, booking gives way to it until its oldest unbooked grant is this old (larger: more grants accepted in a burst, booked later; 0 or negative: booking never gives way)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	_ = fs.Parse(args)
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if *lagMax == 0 {
		*lagMax = -1 // zero: never give way
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	n, err := node.Start(node.Config{DataDir: b.dataDir, HTTP: *httpAddr, AdminHTTP: *adminHTTP, Kafka: list(b.kafka), PD: list(b.pd),
		Redis: b.redis, ConfigFile: *config, Partitions: int32(*partitions), Seeds: list(*seeds), Etcd: list(*clusterEtcd), ClusterAddr: *clusterAddr,
		BookingLagMax: *lagMax, Log: log})
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-n.Served():
		log.Error("http server stopped", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Stop(ctx)
	log.Info("stopped")
	return nil
}

func reconcileCmd(args []string) error {
	fs := flag.NewFlagSet("reconcile", flag.ExitOnError)
	var b backendFlags
	b.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	_ = fs.Parse(args)
	kv, err := storage.OpenTiKV(list(b.pd), b.dataDir)
	if err != nil {
		return err
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, err := reconcile.Run(ctx, kv)
	if err != nil {
		return err
	}
	if *asJSON {
		os.Stdout.Write(append(r.JSON(), '\n'))
	} else {
		r.WriteText(os.Stdout)
	}
	if !r.OK {
		return exitError(1)
	}
	return nil
}

const benchUsage = `usage: redrain bench [flags]

Offers grants to the nodes of --target for --duration, waits for booking to
drain, runs the audit and reports it all.

Every grant request (/v1/grants, /v1/grants/batch) is signed with --app-key
(default $REDRAIN_APP_KEY): a key "APP:HEX" or "APP.LABEL:HEX" of the nodes'
app_keys for the app of --app. A key for another app is refused before
anything is sent. Without a key the requests go unsigned, which only a node
without app_keys (the embedded demo) accepts; a node that answers 401
unauthorized or 403 forbidden ends the run at once with what to change.
The stats and audit requests are signed with --admin-key (default
$REDRAIN_ADMIN_KEY, else the public development key).

  redrain bench --target http://127.0.0.1:8080 --app 7 --app-key "$REDRAIN_APP_KEY" --rate 20000

Flags:
`

func benchCmd(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	targets := fs.String("target", "http://127.0.0.1:8080", "node base URLs, comma-separated")
	adminTargets := fs.String("admin-target", "", "the nodes' operations listeners (--admin-http), comma-separated, one per --target in the same order, for the stats and audit requests (default: the targets)")
	users := fs.Int("users", 10000, "distinct users")
	duration := fs.Duration("duration", 10*time.Second, "how long to offer load")
	rate := fs.Int("rate", 0, "grants/s to offer over all targets; 0 = flat out")
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
	hot := fs.Int("compare-hot", 0, "compare booking with every grant on one budget account against grants spread over this many (puts and publishes its own activities; --activity is ignored)")
	ceiling := fs.Bool("ceiling", false, "alternate the load between the targets and an empty fasthttp handler the bench serves on 127.0.0.1 (the ingress ceiling), and print both accepted rates and their ratio per round; booking drains and the audit runs after the last node phase")
	rounds := fs.Int("rounds", 2, "with --compare-hot or --ceiling: how many times each phase runs, alternating")
	adminKey := fs.String("admin-key", "", "admin key ID:HEX that signs the stats and audit requests (default $REDRAIN_ADMIN_KEY, else the development key)")
	appKey := fs.String("app-key", "", "app key APP:HEX (or APP.LABEL:HEX) of the nodes' app_keys for the app of --app, that signs every grant request "+
		"(default $REDRAIN_APP_KEY; neither: unsigned, which only a node without app_keys accepts)")
	_ = fs.Parse(args)
	if *repeat == 0 {
		*repeat = -1 // bench.Config reads 0 as "the default"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	cfg := bench.Config{
		Targets: list(*targets), AdminTargets: list(*adminTargets), Users: *users, Duration: *duration, Rate: *rate, Conns: *conns,
		Pipeline: *pipeline, Batch: *batch, RepeatRatio: *repeat, AppID: uint32(*app), ActivityID: *activity,
		SceneID: *scene, RainID: *rain, UserPrefix: *prefix, DrainTimeout: *drain, Audit: *audit,
		AdminKey: adminKeyOr(*adminKey, os.Getenv), AppKey: appKeyOr(*appKey, os.Getenv), Progress: os.Stderr,
	}
	if *hot > 0 && *ceiling {
		return errors.New("--compare-hot and --ceiling are two comparisons: choose one")
	}
	if *ceiling {
		c, err := bench.CompareCeiling(ctx, bench.CeilingConfig{Run: cfg, Rounds: *rounds})
		if err != nil {
			return err
		}
		if *asJSON {
			if err := c.WriteJSON(os.Stdout); err != nil {
				return err
			}
		} else {
			c.WriteText(os.Stdout)
		}
		if err := c.Err(); err != nil {
			fmt.Fprintf(os.Stderr, "redrain bench: %v\n", err)
			return exitError(1)
		}
		return nil
	}
	if *hot > 0 {
		h, err := bench.CompareHot(ctx, bench.HotConfig{Run: cfg, Budgets: *hot, Rounds: *rounds})
		if err != nil {
			return err
		}
		if *asJSON {
			return h.WriteJSON(os.Stdout)
		}
		h.WriteText(os.Stdout)
		return nil
	}
	r, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := r.WriteJSON(os.Stdout); err != nil {
			return err
		}
	} else {
		r.WriteText(os.Stdout)
	}
	if err := r.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "redrain bench: %v\n", err)
		return exitError(1)
	}
	return nil
}

func devCmd(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ExitOnError)
	dataDir := fs.String("data-dir", "./dev-data", "directory of the stack's data (and its chosen ports)")
	partitions := fs.Int("partitions", storage.GrantPartitionsDefault, "partitions of the grant topic when it is created")
	control := fs.String("control", "", "loopback address of a fault-injection listener (failure tests): POST /broker/restart?down=5s, POST /tikv/restart?down=20s")
	_ = fs.Parse(args)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
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
	if ctl != nil {
		srv := &http.Server{Handler: devControl(s, log), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ctl) }()
		defer srv.Close()
		log.Info("fault-injection listener", "addr", ctl.Addr().String())
	}
	log.Info("development stack running (NOT FOR PRODUCTION); start nodes with the flags on stdout",
		"data_dir", *dataDir, "redis", s.RedisKind)
	fmt.Println(s.Flags())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	log.Info("stopping", "signal", (<-sig).String())
	s.Close()
	log.Info("stopped")
	return nil
}
