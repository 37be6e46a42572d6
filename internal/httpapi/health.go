package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/nats-io/nats.go"
)

// readyTimeout bounds each readiness check.
const readyTimeout = 2 * time.Second

// healthz handles GET /healthz: the process is alive and serving.
func (s *Server) healthz(c *echo.Context) error {
	return writeJSON(c, http.StatusOK, map[string]string{"status": "ok"})
}

// readyBody is the answer of GET /readyz: "ok" or the failure of each check.
type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
	Error  *errorDetail      `json:"error,omitempty"`
}

// readyz handles GET /readyz: 200 when NATS is connected, JetStream answers
// (account info), the store answers (Ping) and the extra check (workers), if
// any, passes; 503 naming what failed otherwise.
func (s *Server) readyz(c *echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	body := readyBody{Status: "ready", Checks: map[string]string{}}
	fail := func(name string, err error) {
		body.Checks[name] = err.Error()
		body.Status = "unavailable"
	}
	if st := s.deps.NC.Status(); st != nats.CONNECTED {
		body.Checks["nats"] = "not connected: " + st.String()
		body.Status = "unavailable"
	} else {
		body.Checks["nats"] = "ok"
	}
	if _, err := s.deps.JS.AccountInfo(ctx); err != nil {
		fail("jetstream", err)
	} else {
		body.Checks["jetstream"] = "ok"
	}
	if err := s.deps.Store.Ping(ctx); err != nil {
		fail("store", err)
	} else {
		body.Checks["store"] = "ok"
	}
	if s.deps.Ready != nil {
		if err := s.deps.Ready(ctx); err != nil {
			fail("workers", err)
		} else {
			body.Checks["workers"] = "ok"
		}
	}
	if body.Status != "ready" {
		body.Error = &errorDetail{Code: CodeUnavailable, Message: "not ready"}
		return writeJSON(c, http.StatusServiceUnavailable, body)
	}
	return writeJSON(c, http.StatusOK, body)
}
