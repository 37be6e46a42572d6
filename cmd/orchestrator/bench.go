package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/bench"
	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

const benchUsage = `usage: orchestrator bench [flags] [-- serve flags]

Runs the orchestrator in this process, as ` + "`orchestrator serve`" + ` does, with an in-process
fake step service on 127.0.0.1 (answering after --step-latency), drives --campaigns campaigns
of the standard workflow through it (create with start=true, on NATS or over HTTP) and reports
campaigns/s, commands/s, events/s, create→completed latency, the per-step orchestration
overhead, CPU per campaign, peak RSS, and Redis round trips and commands and JetStream API
requests per command. A progress line goes to stderr every second.

Closed loop by default (--concurrency campaigns in flight, all of them at once by default);
open loop with --rate (campaigns/s, for --duration or --campaigns), latencies measured from
each campaign's intended send time.

Servers: --redis-url, else a private redis-server on a free loopback port when one is on PATH
(--store memory: the in-process store); --nats-url, else --nats-server (a nats-server binary
run as a child, measured apart), else the embedded NATS server with a private directory.
--baseline then runs the bare pipeline on the same servers (publish with id → fetch → SET NX PX
→ GET → Lua write → Lua release → sync event publish → ack, 256 goroutines) for as many
commands, and prints the ratio of campaigns/s. Arguments after -- are flags of
` + "`orchestrator serve`" + ` (see serve -h), e.g. -- --lock-ttl 10s.

flags:
`

// benchCmd is `orchestrator bench`.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	campaigns := fs.Int("campaigns", 1000, "campaigns to run (open loop with --duration: --rate × --duration)")
	concurrency := fs.Int("concurrency", 0, "closed loop: campaigns in flight (0: all of them at once)")
	rate := fs.Float64("rate", 0, "open loop: campaigns sent per second, each at its intended time (0: closed loop)")
	duration := fs.Duration("duration", 0, "open loop: how long to send (0: --campaigns campaigns)")
	via := fs.String("via", bench.ViaNATS, "how campaigns are created: nats (publish on campaign.cmd.<t>.<c>.create) or http (POST /api/v1/campaigns)")
	workers := fs.Int("workers", 8, "the orchestrator's WORKERS")
	stepLatency := fs.Duration("step-latency", 0, "how long the fake step service takes to answer")
	redisURL := fs.String("redis-url", "", "Redis to use (default: a private redis-server when one is on PATH)")
	storeKind := fs.String("store", "redis", "the orchestrator's store: redis or memory (in-process)")
	natsURL := fs.String("nats-url", "", "NATS server to use (default: --nats-server, else the embedded server)")
	natsServer := fs.String("nats-server", "", "a nats-server binary to run as a child process, measured apart (default: the embedded server)")
	natsMonitor := fs.String("nats-monitor-url", "", "with --nats-url: its monitoring endpoint, for /jsz (default: http://<host>:8222)")
	baseline := fs.Bool("baseline", false, "also run the bare pipeline for as many commands, and print the ratio")
	baselineWorkers := fs.Int("baseline-workers", 256, "goroutines of the bare pipeline")
	jsonOut := fs.Bool("json", false, "print one JSON object with every figure")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the campaigns to end")
	senders := fs.Int("senders", 32, "goroutines sending the creates")
	logLevel := fs.String("log-level", "info", "level of the orchestrator's logs, which go to --log-file (warnings and errors also to stderr)")
	logFile := fs.String("log-file", "", "file for the orchestrator's logs (default: formatted, then discarded)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (go tool pprof) to this file")
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, benchUsage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return nil
		}
		printUsage(stderr)
		return err
	}
	serveArgs := fs.Args()
	switch {
	case *storeKind != "redis" && *storeKind != "memory":
		return fmt.Errorf("bench: --store %q: want redis or memory", *storeKind)
	case *via != bench.ViaNATS && *via != bench.ViaHTTP:
		return fmt.Errorf("bench: --via %q: want nats or http", *via)
	case *natsURL != "" && *natsServer != "":
		return errors.New("bench: --nats-url and --nats-server: give one")
	case *campaigns <= 0 && (*rate <= 0 || *duration <= 0):
		return errors.New("bench: --campaigns must be positive")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("bench: --log-level: %w", err)
	}
	logOut := io.Discard
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			return fmt.Errorf("bench: --log-file: %w", err)
		}
		defer f.Close()
		logOut = f
	}
	// After the report, the shutdown's warnings (NATS disconnected …) go
	// to the log file only.
	var reported atomic.Bool
	log := slog.New(slog.NewMultiHandler(
		slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: lvl}),
		untilHandler{slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), &reported},
	))
	progress := func(f string, a ...any) { fmt.Fprintf(stderr, "bench: "+f+"\n", a...) }

	fake, err := bench.NewFake(*stepLatency)
	if err != nil {
		return fmt.Errorf("bench: fake step service: %w", err)
	}
	defer fake.Close()

	setup := bench.Setup{Campaigns: *campaigns, Concurrency: *concurrency, Rate: *rate, Via: *via, Workflow: events.DefaultWorkflow,
		StepLatency: stepLatency.String(), Workers: *workers, Store: *storeKind, GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU()}
	if *duration > 0 {
		setup.Duration = duration.String()
	}

	// Redis: given, or a private one (for the store, or for the baseline).
	rurl := *redisURL
	if rurl != "" {
		setup.Redis = "--redis-url " + redactURL(rurl)
	} else if *storeKind == "redis" || *baseline {
		if bin := bench.FindRedisServer(); bin != "" {
			c, err := bench.StartRedis(ctx, bin)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			defer c.Stop()
			rurl = c.URL
			setup.Redis = fmt.Sprintf("private redis-server on %s (child process %d)", c.URL, c.PID())
			progress("started %s", setup.Redis)
		} else if *storeKind == "redis" {
			progress("redis-server is not on PATH and no --redis-url: the in-process store is used")
			setup.Store = "memory"
		}
	}
	if setup.Store == "redis" {
		setup.Store = "redis (" + setup.Redis + ")"
	} else {
		setup.Store = "memory (in-process)"
	}

	// NATS: given, a child nats-server, or the embedded one (NewApp).
	nurl, monitor, natsPID := *natsURL, *natsMonitor, 0
	switch {
	case nurl != "":
		setup.NATS = "--nats-url " + redactURL(nurl)
		if monitor == "" {
			monitor = defaultMonitorURL(nurl)
		}
	case *natsServer != "":
		c, err := bench.StartNATS(ctx, *natsServer)
		if err != nil {
			return fmt.Errorf("bench: --nats-server: %w", err)
		}
		defer c.Stop()
		nurl, monitor, natsPID = c.URL, c.MonitorURL, c.PID()
		setup.NATS = fmt.Sprintf("nats-server on %s (child process %d)", c.URL, c.PID())
		progress("started %s", setup.NATS)
	default:
		setup.NATS = "embedded (in this process)"
	}

	sargs := []string{"--http-addr", "127.0.0.1:0", "--embedded-nats-addr", "127.0.0.1:0",
		"--steps-base-url", fake.URL(), "--workers", strconv.Itoa(*workers), "--log-level", lvl.String()}
	if nurl != "" {
		sargs = append(sargs, "--nats-url", nurl)
	}
	if setup.Store != "memory (in-process)" {
		sargs = append(sargs, "--redis-url", rurl)
	}
	cfg, err := config.Load(append(sargs, serveArgs...), func(string) string { return "" }, stderr)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	app, err := NewApp(ctx, cfg, log, Options{})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	runCtx, stopApp := context.WithCancel(context.WithoutCancel(ctx))
	appDone := make(chan error, 1)
	go func() { appDone <- app.Run(runCtx) }()
	defer func() {
		stopApp()
		if err := <-appDone; err != nil {
			log.Warn("orchestrator stopped with an error", "err", err)
		}
		if err := app.Close(); err != nil {
			log.Warn("orchestrator closed with an error", "err", err)
		}
	}()
	if err := waitReady(ctx, app.HTTPAddr(), appDone); err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	nc, err := nats.Connect(app.NATSURL(), nats.Name("orchestrator-bench"))
	if err != nil {
		return fmt.Errorf("bench: NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bench: jetstream: %w", err)
	}

	meters := bench.Meters{NC: nc, NATSServer: natsPID, SelfIncludes: "orchestrator + load generator + fake step service"}
	embedded := ""
	switch {
	case app.ns != nil:
		ns := app.ns
		embedded = " + embedded NATS server"
		meters.SelfIncludes += embedded
		meters.JSAPISource = "embedded server: Jsz().API.Total"
		meters.JSAPI = func(context.Context) (uint64, error) {
			info, err := ns.Jsz(&server.JSzOptions{})
			if err != nil {
				return 0, err
			}
			return info.API.Total, nil
		}
	case monitor != "":
		meters.JSAPISource = redactURL(monitor) + "/jsz api.total"
		meters.JSAPI = bench.MonitorJSAPI(monitor)
	}
	var rc *redis.Client
	if rurl != "" {
		opt, err := redis.ParseURL(rurl)
		if err != nil {
			return fmt.Errorf("bench: --redis-url: %w", err)
		}
		rc = redis.NewClient(opt)
		defer rc.Close()
	}
	svcMeters := meters
	if setup.Store != "memory (in-process)" {
		svcMeters.Redis = rc
	}

	bcfg := bench.Config{Campaigns: *campaigns, Concurrency: *concurrency, Rate: *rate, Duration: *duration, Via: *via,
		Senders: *senders, Timeout: *timeout, Progress: stderr}
	target := bench.Target{NC: nc, JS: js, HTTPURL: "http://" + app.HTTPAddr(), Fake: fake, Meters: svcMeters}
	svc, runErr := bench.Run(ctx, bcfg, target)
	if svc == nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	setup.Campaigns, setup.Concurrency = svc.Campaigns, svc.Concurrency
	rep := &bench.Report{Setup: setup, Service: svc}
	if runErr != nil {
		rep.Error = runErr.Error()
	}
	if *baseline && runErr == nil {
		cpc := svc.CommandsPerCampaign
		if cpc <= 0 {
			cpc = 7
		}
		progress("bare pipeline: %d commands, %d goroutines", svc.Commands, *baselineWorkers)
		blMeters := meters
		blMeters.Redis = rc
		blMeters.SelfIncludes = "bare pipeline + idle orchestrator" + embedded
		bl, err := bench.RunBaseline(ctx, bench.BareConfig{JS: js, RedisURL: rurl, Workers: *baselineWorkers}, blMeters, svc.Commands, cpc)
		if err != nil {
			runErr = fmt.Errorf("baseline: %w", err)
			rep.Error = runErr.Error()
		} else {
			rep.SetBaseline(bl)
		}
	}
	reported.Store(true)
	if *jsonOut {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout)
	}
	return runErr
}

// untilHandler is a slog.Handler that stops once off is set.
type untilHandler struct {
	slog.Handler
	off *atomic.Bool
}

func (h untilHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.off.Load() && h.Handler.Enabled(ctx, l)
}

func (h untilHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return untilHandler{h.Handler.WithAttrs(a), h.off}
}

func (h untilHandler) WithGroup(name string) slog.Handler {
	return untilHandler{h.Handler.WithGroup(name), h.off}
}

// waitReady waits until the app's /readyz answers 200.
func waitReady(ctx context.Context, addr string, appDone <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the orchestrator is not ready after 30 s")
		}
		select {
		case err := <-appDone:
			return fmt.Errorf("the orchestrator stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// defaultMonitorURL is the monitoring endpoint nats-server listens on by
// default (-m 8222) on the host of the first NATS URL.
func defaultMonitorURL(natsURL string) string {
	u, err := url.Parse(firstURL(natsURL))
	if err != nil || u.Hostname() == "" {
		return ""
	}
	return "http://" + net.JoinHostPort(u.Hostname(), "8222")
}

func firstURL(s string) string {
	for i, r := range s {
		if r == ',' {
			return s[:i]
		}
	}
	return s
}

// redactURL hides a URL's credentials (a user may be a token).
func redactURL(s string) string {
	u, err := url.Parse(firstURL(s))
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return u.String()
}
