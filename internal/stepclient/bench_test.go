package stepclient_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
)

// BenchmarkCall measures one step call against a local downstream that
// reads the request and answers 200 with a small JSON body at once: the
// client's own cost (request body, headers, span, response read and
// compaction) plus a loopback HTTP round trip on a kept-alive connection.
func BenchmarkCall(b *testing.B) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ok(w, `{"segment": "vip", "count": 1200}`)
	}))
	defer ts.Close()
	c := stepclient.New(testConfig())
	req := testRequest(ts.URL + "/steps/validate")
	ctx := context.Background()
	res, err := c.Call(ctx, req, nil)
	if err != nil || string(res.Output) != `{"segment":"vip","count":1200}` || res.Attempts != req.Attempt {
		b.Fatalf("Call = %+v, %v", res, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Call(ctx, req, nil)
	}
}
