package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/dashboard"
)

// The dashboard's defaults, those of make run: the page at
// http://localhost:3000, which the API's default CORS_ALLOWED_ORIGINS lists,
// and the API at its default HTTP_ADDR (:8000) on the same machine.
const (
	dashboardDefaultAddr = "127.0.0.1:3000"
	dashboardDefaultAPI  = "http://localhost:8000"
)

const dashboardHelp = `
Serves the operator web UI; the browser calls the API directly (add the
dashboard's origin to the API's CORS_ALLOWED_ORIGINS).`

// dashboardCmd serves the web dashboard until ctx ends. The page calls the
// API at --api from the browser: the API's CORS_ALLOWED_ORIGINS must list
// the dashboard's origin (http://localhost:3000 by default, which the API's
// default whitelist has).
func dashboardCmd(ctx context.Context, args []string, e *cmdEnv) error {
	c := newCommand("dashboard", "[--addr "+dashboardDefaultAddr+"] [--api "+dashboardDefaultAPI+"]", dashboardHelp, e.stdout, e.stderr)
	addr := c.fs.String("addr", dashboardDefaultAddr, "address to serve the dashboard on (host:port)")
	apiURL := c.fs.String("api", dashboardDefaultAPI, "the orchestrator API's base URL, as the browser reaches it")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("unexpected arguments: %v", pos)
	}
	stderr := e.stderr
	h, err := dashboard.New(dashboard.Config{API: *apiURL})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	log := newLogger(stderr, slog.LevelInfo).With("component", "dashboard")
	log.Info("dashboard listening", "url", dashboardURL(ln.Addr()), "api", *apiURL,
		"cors", "the API's CORS_ALLOWED_ORIGINS must list the origin the browser shows")
	return serveDashboard(ctx, ln, h)
}

// dashboardURL is the address to open the dashboard at, as the log prints
// it. A loopback or wildcard listener is named localhost, not 127.0.0.1 or
// [::]: the page's origin is what the browser's address bar shows, and the
// API's default CORS_ALLOWED_ORIGINS lists http://localhost:3000, not
// http://127.0.0.1:3000 (opened there, the page would be refused).
func dashboardURL(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP.IsLoopback() || tcp.IP.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// serveDashboard serves h on ln until ctx ends, then shuts down gracefully.
func serveDashboard(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("dashboard: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
