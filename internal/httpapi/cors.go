package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// CORS answers. Echo's own CORS middleware is not used: it accepts "*",
// matches origins case-insensitively, answers a preflight from a refused
// origin with 204, and runs the handler of a simple request from a refused
// origin (PITFALLS.md, HTTP). This one refuses both with 403 and no
// Access-Control-* header, before any handler runs.
const (
	corsAllowMethods  = "GET, POST, OPTIONS"
	corsAllowHeaders  = "Content-Type, Authorization, Idempotency-Key, X-Tenant-ID, traceparent, Last-Event-ID"
	corsExposeHeaders = "Idempotent-Replayed, Location, Retry-After"
	corsMaxAge        = "600"
)

// parseOrigins checks CORS_ALLOWED_ORIGINS entries: each must be an origin
// (scheme://host[:port], no path, query or user info), and "*" is refused.
// Scheme and host are lower-cased, as browsers send them; matching is then
// exact.
func parseOrigins(list []string) (map[string]bool, error) {
	out := make(map[string]bool, len(list))
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if strings.Contains(o, "*") {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %q: wildcards are refused; list each origin exactly", o)
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "/") {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %q is not an origin (want scheme://host[:port], e.g. http://localhost:3000)", o)
		}
		out[strings.ToLower(u.Scheme)+"://"+strings.ToLower(u.Host)] = true
	}
	return out, nil
}

// cors applies the whitelist to every request that carries an Origin header.
//
//   - An allowed origin gets Access-Control-Allow-Origin (the origin itself)
//     and Vary: Origin; its preflight is answered here with 204 and the
//     allowed methods and headers.
//   - Any other origin gets 403 with no Access-Control-* header, preflight
//     or not, and the handler does not run: nothing is published for a
//     cross-origin request the browser would only have hidden the answer of.
//   - A request without Origin (same-origin GET, curl, servers) passes.
//
// A browser sends Origin on every cross-origin request and on same-origin
// POSTs; the API serves no page of its own, so a same-origin browser POST
// can only come from an origin that is listed like any other.
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		r := c.Request()
		h := c.Response().Header()
		h.Add("Vary", "Origin") // every answer depends on Origin: caches must not mix them
		origin := r.Header.Get("Origin")
		if origin == "" {
			return next(c)
		}
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !s.origins[origin] {
			if preflight {
				return errorf(CodeForbidden, "Origin", "cross-origin requests from %s are not allowed", events.QuoteBounded(origin))
			}
			return errorf(CodeForbidden, "Origin", "cross-origin requests from %s are not allowed; the request was not executed", events.QuoteBounded(origin))
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if !preflight {
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
			return next(c)
		}
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", corsAllowMethods)
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAge)
		return c.NoContent(http.StatusNoContent)
	}
}
