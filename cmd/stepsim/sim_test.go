package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestHandler(t *testing.T) {
	newServer := func(t *testing.T, opts Options) (*httptest.Server, *lockedBuffer) {
		t.Helper()
		logs := &lockedBuffer{}
		opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
		opts.Now = func() time.Time { return time.Date(2026, 11, 27, 10, 0, 30, 0, time.UTC) }
		srv := httptest.NewServer(NewHandler(opts))
		t.Cleanup(srv.Close)
		return srv, logs
	}
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(t *testing.T, url, key, body string) (int, http.Header, string, error) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Campaign-Fence", "7")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, strings.TrimSpace(string(b)), err
	}
	body := func(step, outputs string) string {
		return `{"tenant_id":"acme","campaign_id":"spring","step":"` + step + `","attempt":1,"params":{},"outputs":` + outputs + `}`
	}

	t.Run("outputs per step", func(t *testing.T) {
		srv, _ := newServer(t, Options{})
		for _, tc := range []struct{ step, outputs, want string }{
			{"validate", `{}`, `{"valid":true}`},
			{"schedule", `{}`, `{"send_at":"2026-11-27T11:00:00Z"}`},
			{"dispatch", `{"segment":{"audience_size":1234}}`, `{"sent":1234}`},
			{"anything-else", `{}`, `{"ok":true}`},
		} {
			code, _, got, err := post(t, srv.URL+"/"+tc.step, "", body(tc.step, tc.outputs))
			if err != nil || code != http.StatusOK || got != tc.want {
				t.Errorf("POST /%s = %d %s, %v; want 200 %s", tc.step, code, got, err, tc.want)
			}
		}
	})

	t.Run("same key, same answer", func(t *testing.T) {
		srv, logs := newServer(t, Options{Latency: time.Millisecond})
		const key = "acme.spring.segment.1"
		code1, h1, first, err1 := post(t, srv.URL+"/segment", key, body("segment", `{}`))
		code2, h2, second, err2 := post(t, srv.URL+"/segment", key, body("segment", `{}`))
		if err1 != nil || err2 != nil || code1 != 200 || code2 != 200 {
			t.Fatalf("calls = %d %v, %d %v; want 200, 200", code1, err1, code2, err2)
		}
		if first != second || !strings.Contains(first, `"audience_size":`) {
			t.Errorf("answers %s then %s, want the same audience_size twice", first, second)
		}
		if h1.Get("Idempotent-Replayed") != "" || h2.Get("Idempotent-Replayed") != "true" {
			t.Errorf("Idempotent-Replayed = %q, %q; want empty, true", h1.Get("Idempotent-Replayed"), h2.Get("Idempotent-Replayed"))
		}
		if l := logs.String(); !strings.Contains(l, "key="+key) || !strings.Contains(l, "fence=7") {
			t.Errorf("logs lack the key and fence:\n%s", l)
		}
	})

	t.Run("simulated failures", func(t *testing.T) {
		failing, _ := newServer(t, Options{FailRate: 1})
		if code, _, _, err := post(t, failing.URL+"/render", "k", body("render", `{}`)); err != nil || code != http.StatusInternalServerError {
			t.Errorf("fail-rate 1: %d, %v; want 500", code, err)
		}
		resetting, _ := newServer(t, Options{ResetRate: 1})
		if code, _, _, err := post(t, resetting.URL+"/render", "k", body("render", `{}`)); err == nil {
			t.Errorf("reset-rate 1: got %d, want a connection error", code)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		srv, _ := newServer(t, Options{})
		if code, _, _, _ := post(t, srv.URL+"/validate", "", "not json"); code != http.StatusBadRequest {
			t.Errorf("bad JSON: %d, want 400", code)
		}
		if code, _, _, _ := post(t, srv.URL+"/a/b", "", body("x", `{}`)); code != http.StatusNotFound {
			t.Errorf("nested path: %d, want 404", code)
		}
		resp, err := client.Get(srv.URL + "/validate")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /validate: %d, want 405", resp.StatusCode)
		}
	})
}
