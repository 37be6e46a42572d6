package httpapi

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/labstack/echo/v5"
)

// DefaultRequestTimeout bounds a request's handling (REQUEST_TIMEOUT); event
// streams are not bounded by it.
const DefaultRequestTimeout = 30 * time.Second

// secureHeaders sets, on every answer, the headers that keep a browser from
// sniffing, framing or leaking it: the API answers JSON and YAML only, so
// nothing it serves needs scripts, frames or a referrer. API answers are
// never cached (they carry one tenant's data).
func (s *Server) secureHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		if strings.HasPrefix(c.Request().URL.Path, "/api/") {
			h.Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

// requestTimeout bounds each request's context by Config.RequestTimeout,
// except an event stream (Accept: text/event-stream), which lasts as long
// as its client stays; a handler that meets the deadline answers 503.
func (s *Server) requestTimeout(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		if strings.Contains(c.Request().Header.Get("Accept"), "text/event-stream") {
			return next(c)
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.RequestTimeout)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		err := next(c)
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return errorf(CodeUnavailable, "", "the request took longer than %s", s.cfg.RequestTimeout)
		}
		return err
	}
}

// ipExtractor is where the client address (rate limits, logs) comes from:
// the peer, unless the peer is a trusted proxy, in which case the nearest
// untrusted address of X-Forwarded-For. Nothing is trusted by default (not
// even loopback or private networks, which Echo trusts unless told).
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
