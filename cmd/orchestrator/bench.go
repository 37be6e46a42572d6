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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/bench"
	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/streams"
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
commands, and prints the ratio of campaigns/s.

--processes N runs N ` + "`orchestrator serve`" + ` child processes (this binary, or
--orchestrator-bin) on the same servers instead of the orchestrator in this process (NATS:
--nats-url, --nats-server, else a server embedded in this process on a free port, shared by
them) and reports each one's CPU and peak RSS. --ingress measures accepted POST
/api/v1/campaigns per second of an ` + "`orchestrator serve --role ingress`" + ` child, closed loop from
--ingress-clients clients, then of a bare Echo handler from the same clients, and prints the
ratio. Arguments after -- are flags of
` + "`orchestrator serve`" + ` (see serve -h), e.g. -- --lock-ttl 10s.

flags:
`

// benchCmd is `orchestrator bench`.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned, usage printed below
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
	memProfile := fs.String("memprofile", "", "write a heap profile of this process (the in-process orchestrator: not with --processes) to this file when every campaign is in flight, else at the end")
	processes := fs.Int("processes", 0, "run this many `orchestrator serve` child processes on the same servers instead of the orchestrator in this process, each measured apart (CPU, peak RSS)")
	orchBin := fs.String("orchestrator-bin", "", "with --processes or --ingress: the orchestrator binary the children run (default: this one)")
	stepsInFlight := fs.Int("steps-in-flight", 0, "the orchestrators' STEPS_IN_FLIGHT (0: serve's default)")
	ingress := fs.Bool("ingress", false, "measure accepted POST /api/v1/campaigns per second of an `orchestrator serve --role ingress` child, then of a bare Echo handler, closed loop, and print the ratio (no campaigns are run)")
	ingressClients := fs.Int("ingress-clients", 32, "with --ingress: concurrent HTTP clients")
	ingressDuration := fs.Duration("ingress-duration", 10*time.Second, "with --ingress: how long each target is measured (after 1 s of warm-up)")
	ingressIdem := fs.Bool("ingress-idempotency-key", true, "with --ingress: send a fresh Idempotency-Key with each request")
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, benchUsage)
		config.PrintFlags(w, fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return err
		}
		printUsage(stderr)
		fmt.Fprintln(stderr)
		return &usageError{fmt.Errorf("bench: %w", err)}
	}
	serveArgs := fs.Args()
	switch {
	case *storeKind != "redis" && *storeKind != "memory":
		return &usageError{fmt.Errorf("bench: --store %q: want redis or memory", *storeKind)}
	case *via != bench.ViaNATS && *via != bench.ViaHTTP:
		return &usageError{fmt.Errorf("bench: --via %q: want nats or http", *via)}
	case *natsURL != "" && *natsServer != "":
		return &usageError{errors.New("bench: --nats-url and --nats-server: give one")}
	case *campaigns <= 0 && (*rate <= 0 || *duration <= 0):
		return &usageError{errors.New("bench: --campaigns must be positive")}
	case *processes < 0:
		return &usageError{errors.New("bench: --processes must not be negative")}
	case *processes > 1 && *storeKind == "memory":
		return &usageError{errors.New("bench: --processes above 1 needs the Redis store (the in-process store is one process's)")}
	case *memProfile != "" && (*processes > 0 || *ingress):
		return &usageError{errors.New("bench: --memprofile profiles this process: run the orchestrator in it (no --processes, no --ingress)")}
	case *ingress && (*ingressClients <= 0 || *ingressDuration <= 0):
		return &usageError{errors.New("bench: --ingress-clients and --ingress-duration must be positive")}
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

	setup := bench.Setup{Campaigns: *campaigns, Concurrency: *concurrency, Rate: *rate, Via: *via, Workflow: fsm.DefaultWorkflow,
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

	// NATS: given, a child nats-server, or the embedded one (NewApp; with
	// child orchestrators, in this process on a port).
	nurl, monitor, natsPID := *natsURL, *natsMonitor, 0
	var sharedNS *server.Server
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
	case *processes > 0 || *ingress:
		// The children share one server: an embedded one in this process,
		// on a free port.
		ns, dir, err := startEmbeddedNATS()
		if err != nil {
			return fmt.Errorf("bench: embedded NATS server: %w", err)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown(); _ = os.RemoveAll(dir) }()
		nurl = ns.ClientURL()
		setup.NATS = "embedded in the bench process on " + nurl + " (shared by the children; its CPU is the bench's)"
		sharedNS = ns
	default:
		setup.NATS = "embedded (in this process)"
	}

	if *processes > 0 || *ingress {
		sp := spawn{ctx: ctx, stdout: stdout, stderr: stderr, progress: progress, setup: setup, fake: fake,
			natsURL: nurl, monitor: monitor, natsPID: natsPID, ns: sharedNS, jsonOut: *jsonOut, serveArgs: serveArgs,
			bin: *orchBin, processes: *processes, lvl: lvl, logFile: *logFile, workers: *workers, stepsInFlight: *stepsInFlight,
			bcfg: bench.Config{Campaigns: *campaigns, Concurrency: *concurrency, Rate: *rate, Duration: *duration, Via: *via,
				Senders: *senders, Timeout: *timeout, Progress: stderr},
			baseline: *baseline, baselineWorkers: *baselineWorkers, reported: &reported}
		if setup.Store != "memory (in-process)" {
			sp.redisURL = rurl
		}
		if *baseline {
			sp.baselineRedisURL = rurl
		}
		if *ingress {
			return sp.ingress(bench.IngressConfig{Clients: *ingressClients, Duration: *ingressDuration, IdempotencyKey: *ingressIdem})
		}
		return sp.campaigns()
	}

	sargs := []string{"--http-addr", "127.0.0.1:0", "--embedded-nats-addr", "127.0.0.1:0",
		"--steps-base-url", fake.URL(), "--workers", strconv.Itoa(*workers), "--log-level", lvl.String()}
	if *stepsInFlight > 0 {
		sargs = append(sargs, "--steps-in-flight", strconv.Itoa(*stepsInFlight))
	}
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
	if *stepsInFlight > 0 {
		bcfg.AllInFlightCalls = *stepsInFlight
	} else {
		bcfg.AllInFlightCalls = defaultStepsInFlight
	}
	heapWritten := false
	var heapErr error
	if *memProfile != "" {
		bcfg.OnAllInFlight = func() {
			progress("every campaign in flight: heap profile to %s, goroutines to %s.goroutine", *memProfile, *memProfile)
			heapErr, heapWritten = writeHeapProfile(*memProfile), true
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak, now, _ := bench.PeakRSS()
			progress("memory now: RSS %.1f MiB (peak %.1f), heap in use %.1f MiB, goroutine stacks %.1f MiB, %d goroutines, runtime total %.1f MiB",
				float64(now)/(1<<20), float64(peak)/(1<<20), float64(ms.HeapInuse)/(1<<20), float64(ms.StackInuse)/(1<<20),
				runtime.NumGoroutine(), float64(ms.Sys)/(1<<20))
			if f, err := os.Create(*memProfile + ".goroutine"); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 0)
				f.Close()
			}
		}
		defer func() {
			if !heapWritten {
				progress("not every campaign was in flight at once: heap profile at the end to %s", *memProfile)
				heapErr = writeHeapProfile(*memProfile)
			}
			if heapErr != nil {
				log.Warn("heap profile", "err", heapErr)
			}
		}()
	}
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

// defaultStepsInFlight is serve's STEPS_IN_FLIGHT default (config).
const defaultStepsInFlight = 4096

// writeHeapProfile writes this process's heap profile (after a GC, so that
// it shows what is live) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startEmbeddedNATS runs a NATS server with JetStream in this process on a
// free loopback port, its data in a private directory.
func startEmbeddedNATS() (*server.Server, string, error) {
	dir, err := os.MkdirTemp("", "orchestrator-bench-nats-")
	if err != nil {
		return nil, "", err
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		os.RemoveAll(dir)
		return nil, "", errors.New("not ready after 10 s")
	}
	return ns, dir, nil
}

// spawn is a bench run whose orchestrators are `orchestrator serve` child
// processes on shared servers (--processes, --ingress).
type spawn struct {
	ctx              context.Context
	stdout, stderr   io.Writer
	progress         func(string, ...any)
	setup            bench.Setup
	fake             *bench.Fake
	natsURL          string
	monitor          string
	natsPID          int
	ns               *server.Server // the embedded server in this process, if any
	redisURL         string         // the children's store ("": in-process)
	baselineRedisURL string
	jsonOut          bool
	serveArgs        []string
	bin              string
	processes        int
	lvl              slog.Level
	logFile          string
	workers          int
	stepsInFlight    int
	bcfg             bench.Config
	baseline         bool
	baselineWorkers  int
	reported         *atomic.Bool
}

// connect is the load generator's connection, with the streams applied (an
// ingress does not create them).
func (sp *spawn) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(sp.natsURL, nats.Name("orchestrator-bench"))
	if err != nil {
		return nil, nil, fmt.Errorf("bench: NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: jetstream: %w", err)
	}
	specs, err := events.LoadSpecs(streams.FS)
	if err == nil {
		actx, cancel := context.WithTimeout(sp.ctx, 30*time.Second)
		err = specs.Apply(actx, js, events.Overrides{})
		cancel()
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: streams: %w", err)
	}
	return nc, js, nil
}

// start runs n orchestrators with role and returns them; stop ends them.
func (sp *spawn) start(n int, role string) (children []*bench.Child, stop func(), err error) {
	bin := sp.bin
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, nil, fmt.Errorf("bench: --orchestrator-bin: %w", err)
		}
	}
	args := []string{"--role", role, "--nats-url", sp.natsURL, "--steps-base-url", sp.fake.URL(),
		"--workers", strconv.Itoa(sp.workers), "--log-level", sp.lvl.String()}
	if sp.redisURL != "" {
		args = append(args, "--redis-url", sp.redisURL)
	}
	if sp.stepsInFlight > 0 {
		args = append(args, "--steps-in-flight", strconv.Itoa(sp.stepsInFlight))
	}
	args = append(args, sp.serveArgs...)
	var files []*os.File
	stop = func() {
		var wg sync.WaitGroup
		for _, c := range children {
			wg.Go(func() { _ = c.Stop() })
		}
		wg.Wait()
		for _, f := range files {
			f.Close()
		}
	}
	// Started together: each applies the streams and connects.
	type started struct {
		i   int
		c   *bench.Child
		err error
	}
	out := make(chan started, n)
	for i := range n {
		var w io.Writer
		if sp.logFile != "" {
			f, err := os.Create(fmt.Sprintf("%s.%s-%d", sp.logFile, role, i+1))
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("bench: --log-file: %w", err)
			}
			files = append(files, f)
			w = f
		}
		go func() {
			c, err := bench.StartOrchestrator(sp.ctx, bench.OrchestratorSpec{Bin: bin, Args: args, Output: w})
			out <- started{i, c, err}
		}()
	}
	children = make([]*bench.Child, n)
	var errs []error
	for range n {
		s := <-out
		children[s.i] = s.c
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	children = slices.DeleteFunc(children, func(c *bench.Child) bool { return c == nil })
	if err := errors.Join(errs...); err != nil {
		stop()
		return nil, nil, fmt.Errorf("bench: orchestrator %s: %w", bin, err)
	}
	for _, c := range children {
		sp.progress("started orchestrator serve --role %s on %s (child process %d)", role, c.URL, c.PID())
	}
	return children, stop, nil
}

// meters are the measures of a run on the shared servers.
func (sp *spawn) meters(nc *nats.Conn, rc *redis.Client, children []*bench.Child) bench.Meters {
	m := bench.Meters{NC: nc, NATSServer: sp.natsPID, Redis: rc, SelfIncludes: "load generator + fake step service"}
	for _, c := range children {
		m.Orchestrators = append(m.Orchestrators, c.PID())
	}
	switch {
	case sp.ns != nil:
		ns := sp.ns
		m.SelfIncludes += " + NATS server"
		m.JSAPISource = "embedded server: Jsz().API.Total"
		m.JSAPI = func(context.Context) (uint64, error) {
			info, err := ns.Jsz(&server.JSzOptions{})
			if err != nil {
				return 0, err
			}
			return info.API.Total, nil
		}
	case sp.monitor != "":
		m.JSAPISource = redactURL(sp.monitor) + "/jsz api.total"
		m.JSAPI = bench.MonitorJSAPI(sp.monitor)
	}
	return m
}

func (sp *spawn) redisClient(u string) (*redis.Client, error) {
	if u == "" {
		return nil, nil
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		return nil, fmt.Errorf("bench: --redis-url: %w", err)
	}
	return redis.NewClient(opt), nil
}

// campaigns is --processes N: the campaigns through N child orchestrators.
func (sp *spawn) campaigns() error {
	nc, js, err := sp.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	children, stop, err := sp.start(sp.processes, "all")
	if err != nil {
		return err
	}
	defer stop()
	rc, err := sp.redisClient(sp.redisURL)
	if err != nil {
		return err
	}
	if rc != nil {
		defer rc.Close()
	}
	sp.setup.Processes = len(children)
	sif := sp.stepsInFlight
	if sif <= 0 {
		sif = defaultStepsInFlight
	}
	sp.bcfg.AllInFlightCalls = sif * len(children)
	sp.bcfg.OnAllInFlight = func() {
		var sum uint64
		for _, c := range children {
			if _, now, err := bench.ProcPeakRSS(c.PID()); err == nil {
				sum += now
			}
		}
		sp.progress("every campaign in flight; the orchestrators' RSS now: %.1f MiB", float64(sum)/(1<<20))
	}
	m := sp.meters(nc, rc, children)
	target := bench.Target{NC: nc, JS: js, HTTPURL: children[0].URL, Fake: sp.fake, Meters: m}
	svc, runErr := bench.Run(sp.ctx, sp.bcfg, target)
	if svc == nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	for _, c := range children {
		select {
		case <-c.Exited():
			runErr = errors.Join(runErr, fmt.Errorf("orchestrator process %d exited during the run", c.PID()))
		default:
		}
	}
	sp.setup.Campaigns, sp.setup.Concurrency = svc.Campaigns, svc.Concurrency
	rep := &bench.Report{Setup: sp.setup, Service: svc}
	if runErr != nil {
		rep.Error = runErr.Error()
	}
	if sp.baseline && runErr == nil {
		cpc := svc.CommandsPerCampaign
		if cpc <= 0 {
			cpc = 7
		}
		brc, err := sp.redisClient(sp.baselineRedisURL)
		if err != nil {
			return err
		}
		if brc != nil {
			defer brc.Close()
		}
		sp.progress("bare pipeline: %d commands, %d goroutines", svc.Commands, sp.baselineWorkers)
		bm := sp.meters(nc, brc, children)
		bm.SelfIncludes = "bare pipeline (" + strings.TrimPrefix(bm.SelfIncludes, "load generator + fake step service") + ")"
		bl, err := bench.RunBaseline(sp.ctx, bench.BareConfig{JS: js, RedisURL: sp.baselineRedisURL, Workers: sp.baselineWorkers}, bm, svc.Commands, cpc)
		if err != nil {
			runErr = fmt.Errorf("baseline: %w", err)
			rep.Error = runErr.Error()
		} else {
			rep.SetBaseline(bl)
		}
	}
	if err := sp.write(rep); err != nil {
		return err
	}
	return runErr
}

// ingress is --ingress: POST /api/v1/campaigns against an ingress child,
// then against the bare Echo handler, from the same clients.
func (sp *spawn) ingress(cfg bench.IngressConfig) error {
	nc, _, err := sp.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	children, stop, err := sp.start(1, "ingress")
	if err != nil {
		return err
	}
	defer stop()
	bare, err := bench.NewBareEcho()
	if err != nil {
		return fmt.Errorf("bench: bare Echo handler: %w", err)
	}
	defer bare.Close()
	c := children[0]
	rc, err := sp.redisClient(sp.redisURL)
	if err != nil {
		return err
	}
	if rc != nil {
		defer rc.Close()
	}
	m := bench.Meters{NATSServer: sp.natsPID, Redis: rc, Orchestrators: []int{c.PID()}}
	st := bench.IngressSetup{Clients: cfg.Clients, Duration: cfg.Duration.String(), IdempotencyKey: cfg.IdempotencyKey,
		Store: sp.setup.Store, NATS: sp.setup.NATS, GOMAXPROCS: sp.setup.GOMAXPROCS, CPUs: sp.setup.CPUs}
	st.IngressProcess = fmt.Sprintf("orchestrator serve --role ingress on %s (child process %d)", c.URL, c.PID())
	rep := &bench.IngressReport{Setup: st}
	sp.progress("ingress: %d clients for %s", cfg.Clients, cfg.Duration)
	in, err := bench.RunIngress(sp.ctx, cfg, "ingress (orchestrator serve --role ingress)", c.URL, m)
	rep.Ingress = in
	var runErr error
	if err != nil {
		runErr = fmt.Errorf("ingress: %w", err)
	}
	if sp.ctx.Err() == nil {
		sp.progress("bare Echo handler: %d clients for %s", cfg.Clients, cfg.Duration)
		b, err := bench.RunIngress(sp.ctx, cfg, "bare Echo v5 handler (in this process)", bare.URL(), bench.Meters{NATSServer: sp.natsPID, Redis: rc})
		rep.Bare = b
		if err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("bare handler: %w", err))
		}
	}
	rep.SetRatio()
	if runErr != nil {
		rep.Error = runErr.Error()
	}
	if err := sp.write(rep); err != nil {
		return err
	}
	return runErr
}

// write prints rep, as JSON with --json, and records that it was printed.
func (sp *spawn) write(rep interface {
	WriteJSON(io.Writer) error
	WriteText(io.Writer)
}) error {
	sp.reported.Store(true)
	if sp.jsonOut {
		return rep.WriteJSON(sp.stdout)
	}
	rep.WriteText(sp.stdout)
	return nil
}
