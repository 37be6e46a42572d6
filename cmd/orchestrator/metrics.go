package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

// setupMetrics creates the orchestrator's metrics on reg, with a zero
// series for every configured step, and registers the collectors read at
// scrape time: the campaigns by state (from the store) and the command
// consumer's counts (from JetStream). Every role registers both: with a
// shared store and consumer, each process reports the same values, which
// the dashboard aggregates with max.
func (a *App) setupMetrics(ctx context.Context, reg *prometheus.Registry, wf *workflow.Registry) (*metrics.Metrics, error) {
	m := metrics.New(reg)
	for _, name := range wf.Names() {
		w, _ := wf.Get(name)
		for _, s := range w.Steps {
			m.InitSteps(s.Name)
		}
	}
	cons, err := a.js.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		return nil, fmt.Errorf("metrics: consumer %s: %w", events.ConsumerName, err)
	}
	for _, c := range []prometheus.Collector{
		metrics.NewCampaignsCollector(a.store, metrics.CollectorOpts{}),
		metrics.NewConsumerCollector(cons, events.StreamCommands, events.ConsumerName, metrics.CollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return m, nil
}

// countMaxDeliveries returns cfg with an Observe that also counts each DLQ
// copy the poison-message handler stored (once per message, whichever
// instance stored it) as orchestrator_commands_dead_lettered_total{reason=
// "max_deliveries"}.
func countMaxDeliveries(cfg deadletter.Config, m *metrics.Metrics) deadletter.Config {
	next := cfg.Observe
	cfg.Observe = func(o deadletter.Outcome) {
		if o.Result == deadletter.Stored {
			m.CommandDeadLettered(metrics.VerbLabel(o.Subject[strings.LastIndexByte(o.Subject, '.')+1:]), metrics.DLQMaxDeliveries)
		}
		if next != nil {
			next(o)
		}
	}
	return cfg
}

// listenOps listens on HTTP_ADDR for a process without the ingress (role
// worker) and prepares a server of /metrics, /healthz and /readyz only, so
// that its workers can be scraped and probed like any other process.
func (a *App) listenOps(reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeOpsJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.opsReady)
	var err error
	if a.ln, err = net.Listen("tcp", a.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("HTTP_ADDR: %w", err)
	}
	a.ops = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	a.log.Info("metrics and health listening (role worker)", "addr", a.ln.Addr().String())
	return nil
}

// opsReady answers /readyz of role worker: 200 when NATS is connected, the
// store answers and the workers are pulling; 503 naming what failed.
func (a *App) opsReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"nats": "ok", "store": "ok", "workers": "ok"}
	status, code := "ready", http.StatusOK
	fail := func(name string, err error) {
		checks[name], status, code = err.Error(), "unavailable", http.StatusServiceUnavailable
	}
	if st := a.nc.Status(); st != nats.CONNECTED {
		fail("nats", errors.New("not connected: "+st.String()))
	}
	if err := a.store.Ping(ctx); err != nil {
		fail("store", err)
	}
	if a.worker != nil {
		if err := a.worker.Ready(); err != nil {
			fail("workers", err)
		}
	}
	writeOpsJSON(w, code, map[string]any{"status": status, "checks": checks})
}

func writeOpsJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// runOps serves the role-worker server in g until gctx ends.
func (a *App) runOps(g *errgroup.Group, gctx context.Context) {
	if a.ops == nil {
		return
	}
	g.Go(func() error {
		err := a.ops.Serve(a.ln)
		if errors.Is(err, http.ErrServerClosed) || gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("http (metrics): %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return a.ops.Shutdown(sctx)
	})
}
