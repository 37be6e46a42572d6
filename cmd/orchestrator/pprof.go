package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"golang.org/x/sync/errgroup"
)

// listenPprof listens on PPROF_ADDR (a loopback address, checked by the
// configuration) with the Go profiling endpoints, when it is set: CPU,
// heap, goroutine and the other runtime profiles of net/http/pprof under
// /debug/pprof/, for `go tool pprof http://<addr>/debug/pprof/profile`.
// They are served on their own listener, never on the ingress's.
func (a *App) listenPprof() error {
	if a.cfg.PprofAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", a.cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("PPROF_ADDR: %w", err)
	}
	a.pprofLn = ln
	// No write timeout: a CPU profile or a trace answers after its seconds.
	a.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	a.log.Info("profiling endpoints listening", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	return nil
}

// PprofAddr is the address of the profiling endpoints, "" when off.
func (a *App) PprofAddr() string {
	if a.pprofLn == nil {
		return ""
	}
	return a.pprofLn.Addr().String()
}

// runPprof serves the profiling endpoints until gctx ends.
func (a *App) runPprof(g *errgroup.Group, gctx context.Context) {
	if a.pprof == nil {
		return
	}
	g.Go(func() error {
		err := a.pprof.Serve(a.pprofLn)
		if errors.Is(err, http.ErrServerClosed) || gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("http (pprof): %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		// A profile still being taken is cut.
		_ = a.pprof.Close()
		return nil
	})
}
