// Package dashboard serves the operator web UI: static HTML, CSS and
// JavaScript embedded in the binary (web/), and /config.json, which tells
// the page where the API is and which verb the state machine allows in
// which state.
//
// It serves nothing else: no API proxy, no session, no cookie. The page calls
// the API's origin straight from the browser, so the API's CORS whitelist
// (CORS_ALLOWED_ORIGINS) must list the dashboard's origin; the page says so
// when the API refuses it. The bearer token (or, in development mode, the
// tenant) is kept in the browser's session storage and sent by the page.
//
// It knows the API only by its URL and the state machine only through
// internal/fsm: it does not import the ingress, NATS or the store.
package dashboard

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

//go:embed web
var webFS embed.FS

// Config is the dashboard's configuration.
type Config struct {
	// API is the base URL of the orchestrator's HTTP API as the browser
	// reaches it (--api), e.g. http://localhost:8000.
	API string
}

// clientConfig is /config.json.
type clientConfig struct {
	API string `json:"api"`
	// Transitions maps each verb a user may send to the states that allow
	// it (CONTRACT section 5), computed from fsm.Apply.
	Transitions map[fsm.Verb][]fsm.State `json:"transitions"`
	States      []fsm.State              `json:"states"`
}

// Handler serves the dashboard.
type Handler struct {
	config []byte
	files  http.Handler
	csp    string
}

// New checks cfg and returns the handler. API must be an absolute http(s)
// URL with a host and no query, fragment or user info (an error naming
// --api otherwise); a trailing slash is dropped.
func New(cfg Config) (*Handler, error) {
	api, origin, err := parseAPI(cfg.API)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(clientConfig{API: api, Transitions: Transitions(), States: fsm.States})
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, err
	}
	return &Handler{
		config: b,
		files:  http.FileServerFS(sub),
		// The page may talk to its own origin (its files) and the API's
		// only; no inline script or style, no frames.
		csp: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self' " + origin + "; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	}, nil
}

// parseAPI validates the API URL and returns it without a trailing slash,
// and its origin.
func parseAPI(s string) (api, origin string, err error) {
	u, err := url.Parse(strings.TrimSpace(s))
	switch {
	case err != nil:
		return "", "", fmt.Errorf("--api: %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", "", fmt.Errorf("--api: %q is not an http(s) URL (want e.g. http://localhost:8000)", s)
	case u.Host == "":
		return "", "", fmt.Errorf("--api: %q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", "", fmt.Errorf("--api: %q: want scheme://host[:port][/path], without user info, query or fragment", s)
	}
	origin = strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
	return origin + strings.TrimRight(u.EscapedPath(), "/"), origin, nil
}

// Transitions returns, for each verb a user may send (start, pause,
// resume, cancel, retry), the states in which the state machine applies it
// rather than rejecting it: the dashboard enables a verb's button in those
// states only. It asks fsm.Apply itself, so it cannot drift from it.
func Transitions() map[fsm.Verb][]fsm.State {
	out := map[fsm.Verb][]fsm.State{}
	for _, v := range fsm.ExternalVerbs {
		if v == fsm.Create {
			continue
		}
		out[v] = []fsm.State{}
		for _, st := range fsm.States {
			c := fsm.Campaign{Tenant: "t", ID: "c", State: st, Version: 1,
				Workflow: fsm.Workflow{Name: "w", Steps: []fsm.Step{{Name: "s"}}}}
			_, err := fsm.Apply(&c, fsm.Command{ID: "probe", Verb: v, Tenant: "t", Campaign: "c"}, time.Unix(0, 0))
			var rej *fsm.RejectedError
			if err == nil {
				out[v] = append(out[v], st)
			} else if !errors.As(err, &rej) {
				panic(fmt.Sprintf("dashboard: fsm.Apply(%s in %s): %v", v, st, err))
			}
		}
	}
	return out
}

// ServeHTTP serves GET and HEAD: /config.json, and the embedded files (/ is
// index.html). Every answer carries the content security policy and is
// revalidated by the browser (no-cache), so a new binary's files are seen
// at once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/config.json" {
		hd.Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			_, _ = w.Write(h.config)
		}
		return
	}
	h.files.ServeHTTP(w, r)
}
