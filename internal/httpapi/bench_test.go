package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v5"
)

// benchClients is how many concurrent clients each benchmark runs per CPU
// (b.SetParallelism).
const benchClients = 16

// postLoop runs POST requests from parallel clients; body returns the i-th
// body, hdr (if not nil) the i-th request's extra headers.
func postLoop(b *testing.B, url string, body func(i int64) []byte, hdr func(i int64) []string) {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var n atomic.Int64
	b.SetParallelism(benchClients)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body(i)))
			req.Header.Set("Content-Type", "application/json")
			if hdr != nil {
				h := hdr(i)
				for j := 0; j+1 < len(h); j += 2 {
					req.Header.Set(h[j], h[j+1])
				}
			}
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkCreate measures POST /api/v1/campaigns end to end: validation,
// the store's existence check, JetStream publish and PubAck on a real
// embedded server (file storage), over loopback HTTP.
func BenchmarkCreate(b *testing.B) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			e := newEnv(b, k.open(b))
			run := fmt.Sprintf("%p", b)
			postLoop(b, e.ts.URL+"/api/v1/campaigns", func(i int64) []byte {
				return fmt.Appendf(nil, `{"campaign_id":"b%s-%d","name":"bench","tenant_id":"acme"}`, run[2:], i)
			}, nil)
		})
		b.Run(k.name+"/idempotency-key", func(b *testing.B) {
			e := newEnv(b, k.open(b))
			run := fmt.Sprintf("%p", b)
			postLoop(b, e.ts.URL+"/api/v1/campaigns", func(i int64) []byte {
				return fmt.Appendf(nil, `{"campaign_id":"k%s-%d","name":"bench","tenant_id":"acme"}`, run[2:], i)
			}, func(i int64) []string { return []string{"Idempotency-Key", fmt.Sprintf("key-%s-%d", run[2:], i)} })
		})
	}
}

// BenchmarkBareEcho is the baseline: an Echo v5 handler that reads the same
// body and answers the same 202, with nothing behind it.
func BenchmarkBareEcho(b *testing.B) {
	e := echo.New()
	e.POST("/api/v1/campaigns", func(c *echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.JSONBlob(http.StatusAccepted, []byte(`{"campaign_id":"x","command_id":"01JD","status":"accepted"}`+"\n"))
	})
	ts := httptest.NewServer(e)
	defer ts.Close()
	postLoop(b, ts.URL+"/api/v1/campaigns", func(i int64) []byte {
		return fmt.Appendf(nil, `{"campaign_id":"bare-%d","name":"bench","tenant_id":"acme"}`, i)
	}, nil)
}
