package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v5"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// untraced are the routes that make no span: probes and scrapes, every few
// seconds, would drown the traces of the API.
var untraced = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// traceRequests returns the middleware that makes every request but the
// untraced ones a server span: its parent is the request's traceparent when valid, its name the
// method and route pattern (never the raw path), and it becomes the
// request context's span, so a command published while handling the
// request carries its traceparent. It runs the error handler itself, like
// the metrics middleware, so that the status it records is the one sent.
func (s *Server) traceRequests() echo.MiddlewareFunc {
	tracer := tracing.Tracer(s.deps.TracerProvider)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c *echo.Context) error {
			r := c.Request()
			method := methodLabel(r.Method)
			name, route := method, c.Path()
			if untraced[route] {
				return next(c)
			}
			if route != "" {
				name += " " + route
			}
			ctx := tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			if span.IsRecording() {
				span.SetAttributes(semconv.HTTPRequestMethodKey.String(method), semconv.URLPath(r.URL.Path))
				if route != "" {
					span.SetAttributes(semconv.HTTPRoute(route))
				}
			}
			c.SetRequest(r.WithContext(ctx))
			if err := next(c); err != nil {
				c.Echo().HTTPErrorHandler(c, err)
			}
			_, status := echo.ResolveResponseStatus(c.Response(), nil)
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			return nil
		}
	}
}
