package httpapi_test

import (
	"context"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

const chromiumPath = "/usr/bin/chromium"

// pageTemplate is a dashboard page: its script calls the API and writes what
// it could read into the DOM. %[1]s is the API's URL, %[2]s the campaign id.
const pageTemplate = `<!doctype html>
<html><head><meta charset="utf-8"><title>dashboard</title></head>
<body><pre id="json">pending</pre><pre id="simple">pending</pre>
<script>
const api = %[1]q, id = %[2]q;
function show(el, text) { document.getElementById(el).textContent = text; }
// A JSON request with custom headers: the browser sends a preflight first.
fetch(api + "/api/v1/campaigns", {
  method: "POST",
  headers: {"Content-Type": "application/json", "X-Tenant-ID": "acme", "Idempotency-Key": "browser-" + id},
  body: JSON.stringify({campaign_id: id, name: "from the browser"}),
}).then(r => r.text().then(t => show("json", "status=" + r.status + " replayed=" + r.headers.get("Idempotent-Replayed") + " body=" + t)))
  .catch(e => show("json", "error=" + e));
// A simple request (no preflight): the browser sends it and hides the answer
// from a refused origin; the API must not execute it either.
fetch(api + "/api/v1/campaigns", {method: "POST", body: JSON.stringify({campaign_id: id + "-simple", name: "simple", tenant_id: "acme"})})
  .then(r => r.text().then(t => show("simple", "status=" + r.status + " body=" + t)))
  .catch(e => show("simple", "error=" + e));
</script></body></html>`

// servePage serves one page on a new loopback port and returns its origin.
func servePage(t *testing.T, ln net.Listener, page string) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// dumpDOM loads url in headless Chromium and returns the DOM once the
// page's network activity is over (virtual time).
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=20000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr)
	}
	return string(out)
}

func preText(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`<pre id="` + id + `">([^<]*)</pre>`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no <pre id=%q> in the DOM:\n%s", id, dom)
	}
	return html.UnescapeString(m[1])
}

// TestBrowserCORS proves in a real browser that a page from an allowed
// origin can create a campaign, and a page from any other origin can
// neither read the answer nor get anything published.
func TestBrowserCORS(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s not installed (apt-get install chromium): %v", chromiumPath, err)
	}
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	allowedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowedOrigin := "http://" + allowedLn.Addr().String()
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) { c.AllowedOrigins = []string{allowedOrigin} }))

	servePage(t, allowedLn, fmt.Sprintf(pageTemplate, e.ts.URL, "from-allowed"))
	refusedOrigin := servePage(t, refusedLn, fmt.Sprintf(pageTemplate, e.ts.URL, "from-refused"))

	dom := dumpDOM(t, allowedOrigin+"/")
	got := preText(t, dom, "json")
	if !strings.HasPrefix(got, "status=202 replayed=null") || !strings.Contains(got, `"campaign_id":"from-allowed"`) {
		t.Fatalf("allowed origin %s: the page read %q", allowedOrigin, got)
	}
	if got := preText(t, dom, "simple"); !strings.HasPrefix(got, "status=415") {
		// The simple request (text/plain) reaches the handler from an allowed origin and is refused as not JSON.
		t.Fatalf("allowed origin, simple request: %q", got)
	}

	dom = dumpDOM(t, refusedOrigin+"/")
	for _, id := range []string{"json", "simple"} {
		if got := preText(t, dom, id); !strings.HasPrefix(got, "error=TypeError") {
			t.Fatalf("refused origin %s (%s): the page read %q", refusedOrigin, id, got)
		}
	}

	msgs := e.commands()
	if len(msgs) != 1 || commandEnvelope(t, msgs[0]).CampaignID != "from-allowed" {
		var ids []string
		for _, m := range msgs {
			ids = append(ids, commandEnvelope(t, m).CampaignID)
		}
		t.Fatalf("stored commands %v, want only from-allowed", ids)
	}
	// The refused page's requests did reach the API (and were refused there).
	metrics := string(e.do("GET", "/metrics", nil).body)
	for _, want := range []string{
		`http_requests_total{code="403",method="OPTIONS",route="/api/v1/campaigns"} 1`,
		`http_requests_total{code="403",method="POST",route="/api/v1/campaigns"} 1`,
		`http_requests_total{code="204",method="OPTIONS",route="/api/v1/campaigns"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(metrics, "http_requests_total"))
		}
	}
}
