package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v5"
)

// IngressConfig is one closed-loop run of POST /api/v1/campaigns.
type IngressConfig struct {
	// Clients is the number of concurrent HTTP clients, each sending its
	// next request when the last one was answered (default 32).
	Clients int
	// Duration is how long each target is measured (default 10 s), after
	// Warmup (default 1 s) of the same load, not counted.
	Duration, Warmup time.Duration
	// Tenant of the campaigns (default "bench-<random>"): sent as X-Tenant-ID
	// (the ingress in development mode, without tokens).
	Tenant string
	// Token, when set, is sent as a bearer token instead.
	Token string
	// IdempotencyKey sends a fresh Idempotency-Key with each request, as a
	// client that retries safely does (the ingress then records it).
	IdempotencyKey bool
	// Workflow of the campaigns (default standard).
	Workflow string
}

// Ingress is what one target answered.
type Ingress struct {
	Target    string  `json:"target"`
	Clients   int     `json:"clients"`
	ElapsedS  float64 `json:"elapsed_s"`
	Accepted  int64   `json:"accepted"`
	PerS      float64 `json:"accepted_per_s"`
	Errors    int64   `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
	Latency   Dist    `json:"latency_ms"`
	Resources CPU     `json:"cpu_s"`
	// CPUPerRequestMS is the CPU per accepted request (ms), of this process
	// (the clients, and the bare handler when it is the target) and of the
	// ingress child process when it is.
	CPUPerRequestMS CPU `json:"cpu_per_request_ms"`
}

// IngressReport is an ingress run: the ingress, then the bare handler, on
// the same client; Ratio is their accepted/s ratio.
type IngressReport struct {
	Setup   IngressSetup `json:"setup"`
	Ingress *Ingress     `json:"ingress"`
	Bare    *Ingress     `json:"bare_echo"`
	Ratio   *float64     `json:"ratio,omitempty"`
	Error   string       `json:"error,omitempty"`
}

// IngressSetup describes an ingress run.
type IngressSetup struct {
	Clients        int    `json:"clients"`
	Duration       string `json:"duration"`
	IdempotencyKey bool   `json:"idempotency_key"`
	IngressProcess string `json:"ingress_process"`
	Store          string `json:"store"`
	NATS           string `json:"nats"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	CPUs           int    `json:"cpus"`
}

// SetRatio computes Ratio.
func (r *IngressReport) SetRatio() {
	if r.Ingress != nil && r.Bare != nil && r.Bare.PerS > 0 {
		v := r.Ingress.PerS / r.Bare.PerS
		r.Ratio = &v
	}
}

// WriteText writes the report for people.
func (r *IngressReport) WriteText(w io.Writer) {
	st := r.Setup
	fmt.Fprintf(w, "orchestrator bench --ingress: POST /api/v1/campaigns, closed loop, %d clients, %s per target; Idempotency-Key %v; ingress %s; store %s; NATS %s; %d CPUs, GOMAXPROCS %d\n",
		st.Clients, st.Duration, st.IdempotencyKey, st.IngressProcess, st.Store, st.NATS, st.CPUs, st.GOMAXPROCS)
	for _, in := range []*Ingress{r.Ingress, r.Bare} {
		if in == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d accepted (202), %d errors, in %.2f s\n", in.Target, in.Accepted, in.Errors, in.ElapsedS)
		fmt.Fprintf(w, "  accepted/s           %10.1f\n", in.PerS)
		fmt.Fprintf(w, "  latency (ms)                p50        p90        p99        max\n")
		writeDist(w, "request→202", in.Latency, "closed loop")
		self := "this process: the clients"
		if in.Resources.OrchestratorsTotal == nil {
			self += " and the bare handler"
		}
		writeCPU(w, "CPU per request (ms)", in.CPUPerRequestMS, self)
		if in.FirstErr != "" {
			fmt.Fprintf(w, "  first error: %s\n", in.FirstErr)
		}
	}
	if r.Ratio != nil {
		fmt.Fprintf(w, "\nratio: ingress accepted/s ÷ bare Echo accepted/s = %.1f ÷ %.1f = %.3f\n", r.Ingress.PerS, r.Bare.PerS, *r.Ratio)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "\nincomplete: %s\n", r.Error)
	}
}

// WriteJSON writes the report as one indented JSON object.
func (r *IngressReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// createBody is the body the load sends (CONTRACT section 7), and what the
// bare handler decodes.
type createBody struct {
	CampaignID string          `json:"campaign_id,omitempty"`
	Name       string          `json:"name"`
	Workflow   string          `json:"workflow,omitempty"`
	Params     json.RawMessage `json:"params,omitempty"`
	Start      bool            `json:"start,omitempty"`
	TenantID   string          `json:"tenant_id,omitempty"`
}

// BareEcho is the reference for the ingress: an Echo v5 server on
// 127.0.0.1 whose POST /api/v1/campaigns decodes the JSON body and answers
// 202 with the ingress's answer shape, storing nothing.
type BareEcho struct {
	ln  net.Listener
	srv *http.Server
	n   atomic.Int64
}

// NewBareEcho starts the bare handler on a free loopback port.
func NewBareEcho() (*BareEcho, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &BareEcho{ln: ln}
	e := echo.New()
	e.POST("/api/v1/campaigns", func(c *echo.Context) error {
		var body createBody
		if err := json.NewDecoder(c.Request().Body).Decode(&body); err != nil {
			return c.JSON(http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "invalid", "message": err.Error()}})
		}
		if body.Name == "" {
			return c.JSON(http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "invalid", "message": "name: required"}})
		}
		n := b.n.Add(1)
		id := body.CampaignID
		if id == "" {
			id = "c" + strconv.FormatInt(n, 10)
		}
		return c.JSON(http.StatusAccepted, map[string]string{"campaign_id": id, "command_id": strconv.FormatInt(n, 10), "status": "accepted"})
	})
	b.srv = &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// URL is its base URL.
func (b *BareEcho) URL() string { return "http://" + b.ln.Addr().String() }

// Close stops it.
func (b *BareEcho) Close() error { return b.srv.Close() }

// RunIngress sends POST /api/v1/campaigns to baseURL from cfg.Clients
// clients in closed loop for cfg.Warmup, then measures cfg.Duration.
// m says what is measured (Orchestrators: the ingress child; NATSServer,
// Redis: the servers behind it); name is the target's name in the report.
func RunIngress(ctx context.Context, cfg IngressConfig, name, baseURL string, m Meters) (*Ingress, error) {
	if cfg.Clients <= 0 {
		cfg.Clients = 32
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = time.Second
	}
	if cfg.Tenant == "" {
		cfg.Tenant = "bench-" + randomHex(4)
	}
	if cfg.Workflow == "" {
		cfg.Workflow = "standard"
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: cfg.Clients, MaxIdleConnsPerHost: cfg.Clients, IdleConnTimeout: time.Minute,
	}}
	defer client.CloseIdleConnections()
	url := strings.TrimRight(baseURL, "/") + "/api/v1/campaigns"
	run := randomHex(4) // campaign ids unique across the targets and runs
	var seq atomic.Int64
	post := func(ctx context.Context) error {
		n := seq.Add(1)
		id := "i" + run + "-" + strconv.FormatInt(n, 10)
		body, _ := json.Marshal(createBody{CampaignID: id, Name: "bench", Workflow: cfg.Workflow, Start: true}) // cannot fail
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if cfg.Token != "" {
			req.Header.Set("Authorization", "Bearer "+cfg.Token)
		} else {
			req.Header.Set("X-Tenant-ID", cfg.Tenant)
		}
		if cfg.IdempotencyKey {
			req.Header.Set("Idempotency-Key", id)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return nil
	}

	m.NC, m.JSAPI = nil, nil // requests are not counted here
	mt, err := newMeter(m)
	if err != nil {
		return nil, err
	}
	defer mt.close()
	var (
		measuring         atomic.Bool
		accepted, errs    atomic.Int64
		mu                sync.Mutex
		firstErr          error
		lat               = newRecorder()
		wg                sync.WaitGroup
		rctx, cancel      = context.WithCancel(ctx)
		before, after     snapshot
		measuredFrom, end time.Time
	)
	defer cancel()
	for range cfg.Clients {
		wg.Go(func() {
			for rctx.Err() == nil {
				t0 := time.Now()
				err := post(rctx)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					if rctx.Err() != nil {
						return
					}
					errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				accepted.Add(1)
				mu.Lock()
				lat.record(d)
				mu.Unlock()
			}
		})
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
	}
	before = mt.snapshot(ctx)
	measuredFrom = time.Now()
	measuring.Store(true)
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	measuring.Store(false)
	end = time.Now()
	n, e := accepted.Load(), errs.Load()
	after = mt.snapshot(context.WithoutCancel(ctx))
	cancel()
	wg.Wait()

	in := &Ingress{Target: name, Clients: cfg.Clients, ElapsedS: end.Sub(measuredFrom).Seconds(), Accepted: n, Errors: e}
	if in.ElapsedS > 0 {
		in.PerS = float64(n) / in.ElapsedS
	}
	mu.Lock()
	in.Latency = lat.dist()
	if firstErr != nil {
		in.FirstErr = firstErr.Error()
	}
	mu.Unlock()
	in.Resources = mt.diff(before, after, 0).CPU
	if n > 0 {
		in.CPUPerRequestMS = in.Resources.scaled(1000 / float64(n))
	}
	if err := ctx.Err(); err != nil {
		return in, err
	}
	if n == 0 {
		return in, errors.New(name + ": no request accepted: " + in.FirstErr)
	}
	return in, nil
}
