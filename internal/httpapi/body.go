package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// readBody reads a command request's body, at most Config.BodyLimit bytes.
// A body over the limit is 413, whether or not Content-Length announced it
// (chunked bodies are cut by http.MaxBytesReader). A non-empty body must be
// application/json (415); an empty one may carry any Content-Type or none.
func (s *Server) readBody(c *echo.Context) ([]byte, error) {
	r := c.Request()
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > s.cfg.BodyLimit {
		return nil, errorf(CodeTooLarge, "", "the body is larger than %d bytes", s.cfg.BodyLimit)
	}
	if r.ContentLength > 0 && !isJSON(r.Header.Get("Content-Type")) {
		return nil, unsupportedMedia(r)
	}
	w := c.Response()
	if resp, err := echo.UnwrapResponse(w); err == nil {
		w = resp.ResponseWriter // net/http's own writer: it closes the connection after a too-large body
	}
	// A body trickled in slowly holds a goroutine: bound its reading (only
	// here, not with the server's ReadTimeout, which would also end SSE
	// streams through the request's context).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.BodyLimit))
	if err == nil {
		// On a failure the deadline stays: net/http then gives up on the
		// rest of the body at once and closes the connection.
		_ = rc.SetReadDeadline(time.Time{})
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errorf(CodeTooLarge, "", "the body is larger than %d bytes", s.cfg.BodyLimit)
	case err != nil:
		return nil, errorf(CodeInvalid, "", "reading the body: %v", err)
	}
	if len(body) > 0 && !isJSON(r.Header.Get("Content-Type")) {
		return nil, unsupportedMedia(r)
	}
	return body, nil
}

func unsupportedMedia(r *http.Request) *Error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return errorf(CodeUnsupportedMedia, "Content-Type", "required: the body must be application/json")
	}
	return errorf(CodeUnsupportedMedia, "Content-Type", "%s is not supported: the body must be application/json", events.QuoteBounded(ct))
}

// isJSON reports whether a Content-Type is application/json (parameters
// such as charset allowed).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// decodeJSON decodes body strictly into v: one JSON object, no unknown
// fields, nothing after it. Errors are 400 and name the field.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(CodeInvalid, "body", "unexpected data after the JSON object")
	}
	return nil
}

func jsonError(err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errorf(CodeInvalid, "body", "empty: a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(CodeInvalid, "body", "invalid JSON: unexpected end of input")
	case errors.As(err, &syn):
		return errorf(CodeInvalid, "body", "invalid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errorf(CodeInvalid, "body", "must be a JSON object")
		}
		return errorf(CodeInvalid, typ.Field, "must be %s, not %s", jsonKind(typ.Type.Kind().String()), events.QuoteBounded(typ.Value))
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if u, err := strconv.Unquote(name); err == nil {
			name = u
		}
		if name == "" || len(name) > events.MaxQuotedBytes {
			return errorf(CodeInvalid, "body", "unknown field %s", events.QuoteBounded(name))
		}
		return errorf(CodeInvalid, name, "unknown field")
	}
	return errorf(CodeInvalid, "body", "invalid JSON: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "int", "int64", "uint64", "float64":
		return "a number"
	}
	return fmt.Sprintf("of type %s", k)
}

// peekTenant returns the body's tenant_id when the body is a JSON object
// with a string tenant_id, and "" otherwise; it never fails. It lets the
// tenant (which scopes Idempotency-Key) be known before strict validation.
func peekTenant(body []byte) string {
	var v struct {
		TenantID string `json:"tenant_id"`
	}
	if len(body) == 0 || json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.TenantID
}
