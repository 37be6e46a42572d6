package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// App is one orchestrator process: the embedded NATS server (when no
// NATS_URL), the store, the workers and the HTTP ingress, per its role.
type App struct {
	cfg    config.Config
	log    *slog.Logger
	ns     *server.Server
	tmpDir string
	nc     *nats.Conn
	js     jetstream.JetStream
	store  store.Store
	worker *worker.Worker
	// reaper dead-letters poison messages (roles all and worker).
	reaper *deadletter.Reaper
	api    *httpapi.Server
	ln     net.Listener
	// ops serves /metrics, /healthz and /readyz on ln in role worker.
	ops *http.Server
	// pprof serves the profiling endpoints on pprofLn (PPROF_ADDR).
	pprof   *http.Server
	pprofLn net.Listener
	// closers run in reverse order at Close (the store).
	closers []func() error
	// ncClosed is closed when the NATS connection is (after Drain).
	ncClosed chan struct{}
}

// Options are what tests may change beyond the configuration.
type Options struct {
	// Consumer, when set, replaces the consumer file's ack wait, back-off and max deliver.
	Consumer func(*jetstream.ConsumerConfig)
	// Fault is handed to the worker (tests only).
	Fault func(worker.FaultPoint, store.Key) error
	// Steps replaces the step client.
	Steps worker.StepCaller
	// DeadLetter tunes the poison-message handler (tests: Observe).
	DeadLetter deadletter.Config
}

// NewApp opens everything the configuration asks for; it listens before it
// returns, so a port conflict fails here.
func NewApp(ctx context.Context, cfg config.Config, log *slog.Logger, opt Options) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	store.RouteRedisLogs(log)
	defer func() {
		if err != nil {
			_ = a.Close() // whatever was opened before the failure
		}
	}()
	if err := a.openNATS(); err != nil {
		return nil, err
	}
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	if opt.Consumer != nil {
		opt.Consumer(&specs.Consumer)
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if cfg.Role == config.RoleIngress {
		// The ingress only looks the streams up: the workers (or `streams
		// apply`) create them, so its NATS user needs no right to change
		// them (deploy/nats/auth.conf).
		if err := a.waitStreams(actx, specs); err != nil {
			return nil, err
		}
	} else if err := a.applyStreams(actx, specs, events.Overrides{DuplicateWindow: cfg.DuplicateWindow, Replicas: cfg.StreamReplicas}); err != nil {
		return nil, fmt.Errorf("apply streams: %w", err)
	}
	if !cfg.Redis.Configured() {
		a.store = store.NewMemory(store.Options{Retention: cfg.CampaignRetention})
		log.Info("store: in-process (one process only; set REDIS_URL for more)")
	} else {
		client, err := connect.Redis(cfg.Redis)
		if err != nil {
			return nil, err
		}
		rs, err := store.NewRedisClient(actx, client, store.Options{Retention: cfg.CampaignRetention})
		if err != nil {
			return nil, connect.ExplainRedis(cfg.Redis, err)
		}
		a.store = rs
		log.Info("store: redis", "redis", connect.RedisWhere(cfg.Redis))
	}
	a.closers = append(a.closers, a.store.Close)
	var wf *workflow.Registry
	if cfg.WorkflowsFile != "" {
		if wf, err = workflow.Load(cfg.WorkflowsFile, cfg.StepsBaseURL, cfg.StepTimeout); err != nil {
			return nil, fmt.Errorf("WORKFLOWS_FILE: %w", err)
		}
	} else {
		wf = workflow.Default(cfg.StepsBaseURL)
	}
	log.Info("workflows loaded", "names", wf.Names())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := a.setupMetrics(actx, reg, wf)
	if err != nil {
		return nil, err
	}

	if cfg.Role != config.RoleIngress {
		steps := opt.Steps
		if steps == nil {
			retries := cfg.StepMaxRetries
			if retries == 0 {
				retries = -1 // stepclient: 0 means its default, negative means none
			}
			steps = stepclient.New(stepclient.Config{MaxRetries: retries, BackoffBase: cfg.StepBackoffBase, Timeout: cfg.StepTimeout, IdleConnsPerHost: cfg.StepsInFlight, H2C: cfg.StepH2C})
		}
		a.worker, err = worker.New(actx, worker.Config{Workers: cfg.Workers, LockTTL: cfg.LockTTL, StepsInFlight: cfg.StepsInFlight, Retention: cfg.CampaignRetention}, worker.Deps{
			JS: a.js, Store: a.store, Steps: steps, Workflows: wf, Logger: log, Fault: opt.Fault, Metrics: m,
		})
		if err != nil {
			return nil, err
		}
		if a.reaper, err = deadletter.New(actx, countMaxDeliveries(opt.DeadLetter, m), deadletter.Deps{JS: a.js, Logger: log,
			Applied: func(ctx context.Context, tenant, campaign, id string) (bool, error) {
				return a.store.Applied(ctx, store.Key{Tenant: tenant, Campaign: campaign}, id)
			}}); err != nil {
			return nil, err
		}
	}
	if cfg.Role != config.RoleWorker {
		tokens, err := loadTokens(cfg)
		if err != nil {
			return nil, err
		}
		// No tokens: httpapi logs the development-mode warning, once.
		var ready func(context.Context) error
		if a.worker != nil {
			ready = func(context.Context) error { return a.worker.Ready() }
		}
		a.api, err = httpapi.NewContext(actx, httpapi.Config{AllowedOrigins: cfg.CORSAllowedOrigins, Tokens: tokens,
			IdempotencySecret: []byte(cfg.IdempotencySecret),
			CommandRate:       cfg.Ingress.CommandRate, CommandBurst: cfg.Ingress.CommandBurst,
			TrustedProxies: cfg.Ingress.TrustedProxies, RequestTimeout: cfg.Ingress.RequestTimeout}, httpapi.Deps{
			JS: a.js, NC: a.nc, Store: a.store, Workflows: wf, Ready: ready, Registry: reg, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		if a.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("HTTP_ADDR: %w", err)
		}
		log.Info("HTTP ingress listening", "addr", a.ln.Addr().String())
	}
	if cfg.Role == config.RoleWorker {
		if err := a.listenOps(reg); err != nil {
			return nil, err
		}
	}
	if err := a.listenPprof(); err != nil {
		return nil, err
	}
	return a, nil
}

// applyStreams creates or updates the streams and the consumer of specs,
// trying again, with back-off until ctx ends, while JetStream cannot do it
// yet: a cluster that is still forming (no meta leader, not enough peers
// for the replicas), a server still starting. Any other refusal (a
// permission, a conflicting configuration) fails at once.
// applyTryTimeout bounds one try of applyStreams.
const applyTryTimeout = 5 * time.Second

func (a *App) applyStreams(ctx context.Context, specs events.Specs, ov events.Overrides) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
	var last string
	for tries := 1; ; tries++ {
		// Each try has its own deadline: without a meta leader a request
		// may get no answer at all.
		tctx, cancel := context.WithTimeout(ctx, applyTryTimeout)
		err := specs.Apply(tctx, a.js, ov)
		timedOut := tctx.Err() != nil
		cancel()
		if err == nil {
			if tries > 1 {
				a.log.Info("streams applied", "tries", tries)
			}
			return nil
		}
		if ctx.Err() != nil || !(timedOut || jetStreamNotReady(err)) {
			return err
		}
		if msg := err.Error(); msg != last {
			a.log.Warn("JetStream cannot create the streams yet: trying again", "err", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (JetStream still not ready when the start-up time ran out)", err)
		case <-time.After(b.NextBackOff()):
		}
	}
}

// jetStreamNotReady reports whether err is JetStream not able to answer or
// to place a stream yet, rather than refusing the request.
func jetStreamNotReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 10008: the cluster is not available (no meta leader yet); 10023:
		// insufficient resources (not enough peers up for the replicas);
		// 10004: incomplete results; 10075: peer remap failed. Everything
		// else (JetStream not enabled, replicas on a single server, a
		// permission) is an answer that trying again cannot change.
		switch apiErr.ErrorCode {
		case 10008, 10023, 10004, 10075:
			return true
		}
		return false
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout)
}

// waitStreams waits until every stream of specs and the consumer exist,
// until ctx ends.
func (a *App) waitStreams(ctx context.Context, specs events.Specs) error {
	names := make([]string, 0, len(specs.Streams))
	for _, s := range specs.Streams {
		names = append(names, s.Name)
	}
	logged := false
	for {
		var missing error
		for _, n := range names {
			if _, err := a.js.Stream(ctx, n); err != nil {
				missing = fmt.Errorf("stream %s: %w", n, err)
				break
			}
		}
		if missing == nil {
			if _, err := a.js.Consumer(ctx, events.StreamCommands, specs.Consumer.Durable); err != nil {
				missing = fmt.Errorf("consumer %s: %w", specs.Consumer.Durable, err)
			}
		}
		if missing == nil {
			return nil
		}
		if !errors.Is(missing, jetstream.ErrStreamNotFound) && !errors.Is(missing, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("look up the streams: %w", missing)
		}
		if !logged {
			a.log.Info("waiting for the streams: a worker (or `orchestrator streams apply`) creates them", "missing", missing.Error())
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("--role ingress: %v, and no worker or `orchestrator streams apply` created it in time", missing)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func loadTokens(cfg config.Config) (map[string]string, error) {
	tokens := map[string]string{}
	if cfg.APITokensFile != "" {
		t, err := httpapi.LoadTokens(cfg.APITokensFile)
		if err != nil {
			return nil, fmt.Errorf("API_TOKENS_FILE: %w", err)
		}
		for k, v := range t {
			tokens[k] = v
		}
	}
	if cfg.APITokens != "" {
		t, err := httpapi.ParseTokens(cfg.APITokens)
		if err != nil {
			return nil, fmt.Errorf("API_TOKENS: %w", err)
		}
		for k, v := range t {
			if was, ok := tokens[k]; ok && was != v {
				return nil, fmt.Errorf("API_TOKENS: a token of tenant %q is also in API_TOKENS_FILE for tenant %q", v, was)
			}
			tokens[k] = v
		}
	}
	return tokens, nil
}

// openNATS connects to NATS_URL or starts the embedded server.
func (a *App) openNATS() error {
	url := a.cfg.NATSURL
	if url == "" {
		dir := a.cfg.NATSStoreDir
		if dir == "" {
			d, err := os.MkdirTemp("", "orchestrator-jetstream-")
			if err != nil {
				return fmt.Errorf("NATS_STORE_DIR: private temporary directory: %w", err)
			}
			a.tmpDir, dir = d, d
		}
		host, port, _ := net.SplitHostPort(a.cfg.EmbeddedNATSAddr)
		p, _ := strconv.Atoi(port)
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts := &server.Options{
			ServerName: "orchestrator-embedded", Host: host, Port: p,
			JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
			SyncInterval: a.cfg.NATSSync,
		}
		if a.cfg.NATSSync == 0 {
			opts.SyncAlways, opts.SyncInterval = true, 2*time.Minute // as the server's "always"
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return fmt.Errorf("EMBEDDED_NATS_ADDR: embedded NATS server not ready on %s (port in use?)", a.cfg.EmbeddedNATSAddr)
		}
		a.ns = ns
		url = ns.ClientURL()
		a.log.Info("embedded NATS server with JetStream", "url", url, "store_dir", dir)
	}
	a.ncClosed = make(chan struct{})
	conn := a.cfg.NATS
	if a.ns != nil {
		conn = config.NATS{URL: url}
	}
	nc, err := connect.NATS(conn, "campaign-orchestrator",
		nats.ClosedHandler(func(*nats.Conn) { close(a.ncClosed) }),
		// No reconnect buffer: a publish while reconnecting fails at once
		// instead of being sent after the ingress answered 503 (nothing
		// half-done); the workers retry theirs.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // our own Drain or Close (shutdown): nothing to warn about
				return
			}
			a.log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { a.log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				a.log.Warn("NATS error", "subject", sub.Subject, "err", err)
			} else {
				a.log.Warn("NATS error", "err", err)
			}
		}))
	if err != nil {
		return err
	}
	a.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	a.js = js
	return nil
}

// HTTPAddr is the address the ingress (role worker: metrics and health)
// listens on.
func (a *App) HTTPAddr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// NATSURL is the URL of the NATS server in use.
func (a *App) NATSURL() string { return a.nc.ConnectedUrl() }

// NATSURLRedacted is NATSURL without its password or token, for logs.
func (a *App) NATSURLRedacted() string { return a.nc.ConnectedUrlRedacted() }

// Store is the app's store (tests read it).
func (a *App) Store() store.Store { return a.store }

// Run serves until ctx ends or a part fails, then stops every part in order:
// the ingress, the workers (finishing or returning what is in flight).
func (a *App) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	if a.api != nil {
		g.Go(func() error {
			err := a.api.Serve(a.ln)
			if errors.Is(err, net.ErrClosed) || gctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("http: %w", err)
		})
		g.Go(func() error {
			<-gctx.Done()
			// Longer than the longest request (an Idempotency-Key wait plus
			// a publish, about 20 s); what is still running then is cut,
			// which is logged, not an exit failure.
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := a.api.Shutdown(sctx); err != nil {
				a.log.Warn("HTTP requests cut at shutdown", "err", err)
			}
			return nil
		})
	}
	if a.worker != nil {
		g.Go(func() error { return a.worker.Run(gctx) })
	}
	if a.reaper != nil {
		g.Go(func() error { return a.reaper.Run(gctx) })
	}
	a.runOps(g, gctx)
	a.runPprof(g, gctx)
	return g.Wait()
}

// Close drains the NATS connection, closes the store and stops the embedded
// server; it is safe after a failed NewApp.
func (a *App) Close() error {
	var errs []error
	if a.nc != nil {
		if err := a.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
		select { // Drain returns at once; the connection closes when drained
		case <-a.ncClosed:
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("NATS connection not drained within 10s"))
			a.nc.Close()
		}
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	if a.ns != nil {
		a.ns.Shutdown()
		a.ns.WaitForShutdown()
	}
	if a.tmpDir != "" {
		errs = append(errs, os.RemoveAll(a.tmpDir))
	}
	return errors.Join(errs...)
}
