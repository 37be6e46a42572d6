package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/labstack/echo/v5"
)

// wrkScript posts create requests with unique campaign ids (per wrk thread
// and request) and counts answers other than 202.
const wrkScript = `
n, bad = 0, 0 -- globals: done() reads them with thread:get
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function request()
  n = n + 1
  local body = '{"campaign_id":"w' .. tid .. '-' .. n .. '","name":"load","tenant_id":"acme"}'
  return wrk.format("POST", "/api/v1/campaigns", {["Content-Type"] = "application/json"}, body)
end
function response(status)
  if status ~= 202 then bad = bad + 1 end
end
function done()
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write("not-202: " .. total .. "\n")
end
`

// TestLoadWithWrk measures POST /api/v1/campaigns with wrk against the real
// ingress (embedded JetStream, in-process store) and, in the same run,
// against a bare Echo handler answering the same 202. It only runs when
// HTTPAPI_LOAD=1 (`HTTPAPI_LOAD=1 go test -run LoadWithWrk -v
// ./internal/httpapi`; HTTPAPI_LOAD_STORE=redis for the Redis store,
// HTTPAPI_LOAD_DURATION for another duration than 10s) and wrk is installed;
// it reports, it asserts nothing about speed.
func TestLoadWithWrk(t *testing.T) {
	if os.Getenv("HTTPAPI_LOAD") != "1" {
		t.Skip("set HTTPAPI_LOAD=1 to run the wrk load measurement")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed (apt-get install wrk)")
	}
	script := filepath.Join(t.TempDir(), "post.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o600); err != nil {
		t.Fatal(err)
	}
	duration := os.Getenv("HTTPAPI_LOAD_DURATION")
	if duration == "" {
		duration = "10s"
	}
	run := func(name, url string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, wrk, "-t2", "-c64", "-d"+duration, "-s", script, url).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", name, err, out)
		}
		rate := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
		bad := regexp.MustCompile(`not-202: (\d+)`).FindSubmatch(out)
		if rate == nil || bad == nil {
			t.Fatalf("wrk %s output:\n%s", name, out)
		}
		t.Logf("%-16s %s req/s, %s answers not 202\n%s", name, rate[1], bad[1], out)
		if string(bad[1]) != "0" {
			t.Errorf("%s: %s answers were not 202", name, bad[1])
		}
	}

	kind := storeKinds[0]
	if os.Getenv("HTTPAPI_LOAD_STORE") == "redis" {
		kind = storeKinds[1]
	}
	e := newEnv(t, kind.open(t))
	run("ingress/"+kind.name, e.ts.URL)

	bare := echo.New()
	bare.POST("/api/v1/campaigns", func(c *echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.JSONBlob(http.StatusAccepted, []byte(`{"campaign_id":"x","command_id":"01JD","status":"accepted"}`+"\n"))
	})
	ts := httptest.NewServer(bare)
	defer ts.Close()
	run("bare echo", ts.URL)
}
