package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Defaults of Config.
const (
	DefaultBodyLimit          = 1 << 20 // 1 MiB
	DefaultPublishTimeout     = 5 * time.Second
	DefaultIdempotencyTTL     = 24 * time.Hour
	DefaultHeartbeat          = 15 * time.Second
	DefaultStreamBuffer       = 256
	DefaultStreamWriteTimeout = 10 * time.Second
	DefaultBodyReadTimeout    = 30 * time.Second
)

// Config is the ingress's configuration. The zero value of every field but
// AllowedOrigins and Tokens means its default.
type Config struct {
	// AllowedOrigins are the exact origins (scheme://host[:port]) allowed to
	// call the API from a browser (CORS_ALLOWED_ORIGINS). "*" is refused.
	AllowedOrigins []string
	// Tokens maps HashToken(token) to its tenant (API_TOKENS_FILE,
	// API_TOKENS). Empty: development mode, the tenant comes from
	// X-Tenant-ID or the body's tenant_id, and New logs a warning.
	Tokens map[string]string
	// BodyLimit is the largest request body, in bytes (default 1 MiB).
	BodyLimit int64
	// PublishTimeout bounds the wait for JetStream's PubAck (default 5s);
	// past it the request is 503.
	PublishTimeout time.Duration
	// IdempotencyTTL is how long an answer is kept under its Idempotency-Key
	// (default 24h).
	IdempotencyTTL time.Duration
	// Heartbeat is the interval of comment lines on event streams (default 15s).
	Heartbeat time.Duration
	// BodyReadTimeout bounds the reading of a request body (default 30s): a
	// client trickling its body holds a goroutine no longer than that.
	BodyReadTimeout time.Duration
	// StreamBuffer is how many live events an event stream holds for a slow
	// client before dropping it (default 256).
	StreamBuffer int
	// StreamWriteTimeout bounds one write to an event-stream client (default 10s).
	StreamWriteTimeout time.Duration
	// CommandRate limits the commands each tenant may send, per second
	// (0: no limit; over it: 429); CommandBurst is the bucket size (default
	// the rate, at least 1).
	CommandRate  float64
	CommandBurst int
	// TrustedProxies are the proxies whose X-Forwarded-For gives the
	// client address (TRUSTED_PROXIES); empty: the peer's address.
	TrustedProxies []*net.IPNet
	// RequestTimeout bounds the handling of one request, event streams
	// excepted (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// IdempotencySecret keys the hash that turns an Idempotency-Key into a
	// command id (IDEMPOTENCY_SECRET), at least MinIdempotencySecretLength
	// bytes; every ingress process must use the same. Empty: the secret
	// kept in the store under "idempotency", stored (32 random bytes) by the
	// first process that finds none.
	IdempotencySecret []byte
}

// Workflows is the workflow registry as the ingress uses it: the look-up
// of a create's workflow (shared with the decoding of commands) and the
// list of names.
type Workflows interface {
	events.Workflows
	Names() []string
}

// Store is what the ingress asks of the store: campaigns to read, the
// ledger (to confirm a duplicate command id), idempotency records and their
// secret. store.Store satisfies it.
type Store interface {
	Load(ctx context.Context, k store.Key) (fsm.Campaign, error)
	List(ctx context.Context, tenant string, state fsm.State, cursor string, limit int) (store.Page, error)
	Applied(ctx context.Context, k store.Key, id string) (bool, error)
	ReserveIdem(ctx context.Context, tenant, key string, rec store.IdemRecord, ttl time.Duration) (store.IdemRecord, bool, error)
	CompleteIdem(ctx context.Context, tenant, key string, rec store.IdemRecord, ttl time.Duration) error
	DeleteIdem(ctx context.Context, tenant, key, owner string) error
	Secret(ctx context.Context, name string, candidate []byte) ([]byte, error)
	Ping(ctx context.Context) error
}

var _ Store = store.Store(nil)

// Deps are the ingress's connections to the rest of the service.
type Deps struct {
	JS        jetstream.JetStream
	NC        *nats.Conn
	Store     Store
	Workflows Workflows
	// Ready is an extra readiness check (the workers); nil: none.
	Ready func(ctx context.Context) error
	// Registry receives the HTTP metrics and is served at /metrics; nil: a
	// new registry.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// TracerProvider starts the requests' server spans (nil: the global
	// provider).
	TracerProvider trace.TracerProvider
}

// Route is one registered route, its path in OpenAPI form (/campaigns/{id}).
type Route struct {
	Method, Path string
}

// Server is the HTTP ingress.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	e       *echo.Echo
	origins map[string]bool
	tokens  []tokenEntry
	limiter *tenantLimiter
	metrics *httpMetrics
	// idemSecret keys the command ids derived from Idempotency-Keys.
	idemSecret []byte

	done     chan struct{} // closed by Shutdown: event streams end
	doneOnce sync.Once
	mu       sync.Mutex
	srv      *http.Server
}

// New is NewContext with a background context bounded to 30 s.
func New(cfg Config, deps Deps) (*Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return NewContext(ctx, cfg, deps)
}

// NewContext checks cfg and builds the server. It refuses "*" or a malformed
// entry in AllowedOrigins (naming CORS_ALLOWED_ORIGINS), a negative setting,
// an IdempotencySecret shorter than MinIdempotencySecretLength (naming
// IDEMPOTENCY_SECRET), and missing dependencies. Without IdempotencySecret
// it reads (or first stores) the shared one in the store, within ctx: the
// one store call it makes.
func NewContext(ctx context.Context, cfg Config, deps Deps) (*Server, error) {
	origins, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]int64{
		"body limit": cfg.BodyLimit, "publish timeout": int64(cfg.PublishTimeout),
		"idempotency TTL": int64(cfg.IdempotencyTTL), "heartbeat": int64(cfg.Heartbeat),
		"stream buffer": int64(cfg.StreamBuffer), "stream write timeout": int64(cfg.StreamWriteTimeout),
		"command burst": int64(cfg.CommandBurst), "body read timeout": int64(cfg.BodyReadTimeout),
		"request timeout": int64(cfg.RequestTimeout),
	} {
		if v < 0 {
			return nil, fmt.Errorf("httpapi: %s must not be negative", name)
		}
	}
	if cfg.CommandRate < 0 {
		return nil, errors.New("httpapi: command rate must not be negative")
	}
	switch {
	case deps.JS == nil, deps.NC == nil:
		return nil, errors.New("httpapi: a NATS connection and JetStream are required")
	case deps.Store == nil:
		return nil, errors.New("httpapi: a store is required")
	case deps.Workflows == nil:
		return nil, errors.New("httpapi: a workflow registry is required")
	}
	cfg.BodyLimit = orDefault(cfg.BodyLimit, DefaultBodyLimit)
	cfg.PublishTimeout = orDefault(cfg.PublishTimeout, DefaultPublishTimeout)
	cfg.IdempotencyTTL = orDefault(cfg.IdempotencyTTL, DefaultIdempotencyTTL)
	cfg.Heartbeat = orDefault(cfg.Heartbeat, DefaultHeartbeat)
	cfg.BodyReadTimeout = orDefault(cfg.BodyReadTimeout, DefaultBodyReadTimeout)
	cfg.StreamBuffer = orDefault(cfg.StreamBuffer, DefaultStreamBuffer)
	cfg.StreamWriteTimeout = orDefault(cfg.StreamWriteTimeout, DefaultStreamWriteTimeout)
	cfg.RequestTimeout = orDefault(cfg.RequestTimeout, DefaultRequestTimeout)
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}

	s := &Server{
		cfg: cfg, deps: deps, log: componentLogger(deps.Logger), origins: origins,
		limiter: newTenantLimiter(cfg.CommandRate, cfg.CommandBurst),
		done:    make(chan struct{}),
	}
	if s.idemSecret, err = idempotencySecret(ctx, cfg.IdempotencySecret, deps.Store, s.log); err != nil {
		return nil, err
	}
	hashes := make([]string, 0, len(cfg.Tokens))
	for h := range cfg.Tokens {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	for _, h := range hashes {
		s.tokens = append(s.tokens, tokenEntry{hash: []byte(strings.ToLower(h)), tenant: cfg.Tokens[h]})
	}
	if s.metrics, err = newHTTPMetrics(deps.Registry); err != nil {
		return nil, fmt.Errorf("httpapi: metrics: %w", err)
	}
	if len(s.tokens) == 0 {
		s.log.Warn("no API tokens configured (API_TOKENS_FILE, API_TOKENS): development mode, " +
			"any client may act as any tenant by naming it in X-Tenant-ID or tenant_id")
	}
	s.e = s.routes()
	return s, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// routes builds the Echo instance. Middleware order: tracing (outermost, so
// the server span covers the whole request), metrics (so every answer is
// counted under its route pattern), panic recovery, CORS (before any
// handler), then per-route authentication.
func (s *Server) routes() *echo.Echo {
	e := echo.NewWithConfig(echo.Config{Logger: s.log, HTTPErrorHandler: s.handleError, IPExtractor: ipExtractor(s.cfg.TrustedProxies)})
	e.Use(s.traceRequests())
	e.Use(s.metrics.middleware, middleware.Recover(), s.secureHeaders, s.cors, s.requestTimeout)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{EnableOpenMetrics: true})))
	e.GET("/api/v1/openapi.yaml", s.openAPI)
	e.GET("/api/v1/asyncapi.yaml", s.asyncAPI)
	e.GET("/api/v1/schemas/:name", s.schema)

	e.POST("/api/v1/campaigns", s.createCampaign, s.authenticate)
	e.GET("/api/v1/campaigns", s.listCampaigns, s.authenticate)
	e.GET("/api/v1/campaigns/:id", s.getCampaign, s.authenticate)
	e.GET("/api/v1/campaigns/:id/events", s.getEvents, s.authenticate)
	e.POST("/api/v1/campaigns/:id/:verb", s.campaignVerb, s.authenticate)
	e.GET("/api/v1/workflows", s.listWorkflows, s.authenticate)
	e.GET("/api/v1/dlq", s.listDeadLetters, s.authenticate)
	return e
}

// Handler returns the server's http.Handler (for httptest).
func (s *Server) Handler() http.Handler { return s.e }

// Routes lists the registered routes, paths in OpenAPI form.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.e.Router().Routes() {
		segs := strings.Split(r.Path, "/")
		for i, seg := range segs {
			if name, ok := strings.CutPrefix(seg, ":"); ok {
				segs[i] = "{" + name + "}"
			}
		}
		out = append(out, Route{Method: r.Method, Path: strings.Join(segs, "/")})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// Serve serves HTTP on ln until Shutdown; it returns nil after Shutdown.
// Listen before calling it (synchronously), so that a port conflict fails at
// start-up.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return nil
	default:
	}
	s.srv = srv
	s.mu.Unlock()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown ends the event streams, stops accepting connections and waits,
// up to ctx, for the requests in progress.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.doneOnce.Do(func() { close(s.done) })
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}
