package stepclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// testConfig is a fast configuration: small back-off and Retry-After cap.
func testConfig() stepclient.Config {
	return stepclient.Config{
		BackoffBase:   10 * time.Millisecond,
		Timeout:       5 * time.Second,
		MaxRetryAfter: 20 * time.Millisecond,
	}
}

func testRequest(url string) stepclient.Request {
	return stepclient.Request{
		Tenant:      "acme",
		Campaign:    "spring-sale",
		Step:        fsm.Step{Name: "validate", URL: url},
		Run:         2,
		Attempt:     1,
		Params:      json.RawMessage(`{"list":"vip"}`),
		Outputs:     json.RawMessage(`{"prev":{"n":1}}`),
		Fence:       42,
		Traceparent: testTraceparent,
	}
}

// testCtx bounds every call of a test.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// notices records the RetryNotices of a call.
type notices []stepclient.RetryNotice

func (n *notices) record(rn stepclient.RetryNotice) error {
	*n = append(*n, rn)
	return nil
}

func (n notices) attempts() []int {
	out := []int{}
	for _, x := range n {
		out = append(out, x.Attempt)
	}
	return out
}

// server is an httptest server whose handler sees the request number (from
// 1). The body is read before the handler runs, so that the request's context
// ends when the client goes away.
type server struct {
	*httptest.Server
	calls atomic.Int32
}

func newServer(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request body: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(data))
		h(int(s.calls.Add(1)), w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// reset closes the request's connection abruptly (RST, SO_LINGER 0) without
// an answer.
func reset(t *testing.T, w http.ResponseWriter) {
	t.Helper()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func ok(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, body)
}

func TestCallSendsContractRequest(t *testing.T) {
	type seen struct {
		method, path string
		header       http.Header
		body         map[string]any
	}
	got := make(chan seen, 1)
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("decode body: %v", err)
		}
		got <- seen{r.Method, r.URL.Path, r.Header.Clone(), b}
		ok(w, "{\n  \"valid\": true\n}\n")
	})
	req := testRequest(srv.URL + "/validate")
	req.Attempt = 3 // resumed after a crash

	res, err := stepclient.New(testConfig()).Call(testCtx(t), req, nil)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if want := `{"valid":true}`; string(res.Output) != want {
		t.Errorf("Output = %s, want %s", res.Output, want)
	}
	if res.Attempts != 3 {
		t.Errorf("Attempts = %d, want 3", res.Attempts)
	}
	s := <-got
	if s.method != http.MethodPost || s.path != "/validate" {
		t.Errorf("request = %s %s, want POST /validate", s.method, s.path)
	}
	for name, want := range map[string]string{
		"Content-Type":    "application/json",
		"Idempotency-Key": "acme.spring-sale.validate.2",
		"Campaign-Fence":  "42",
		"Traceparent":     testTraceparent,
	} {
		if got := s.header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	wantBody := map[string]any{
		"tenant_id": "acme", "campaign_id": "spring-sale", "step": "validate", "attempt": 3.0,
		"params": map[string]any{"list": "vip"}, "outputs": map[string]any{"prev": map[string]any{"n": 1.0}},
	}
	if !reflect.DeepEqual(s.body, wantBody) {
		t.Errorf("body = %v, want %v", s.body, wantBody)
	}
}

func TestCallDefaultsEmptyJSON(t *testing.T) {
	got := make(chan map[string]any, 1)
	header := make(chan http.Header, 1)
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		got <- b
		header <- r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	})
	req := testRequest(srv.URL + "/x")
	req.Params, req.Outputs, req.Traceparent = nil, nil, ""

	res, err := stepclient.New(testConfig()).Call(testCtx(t), req, nil)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if string(res.Output) != "{}" {
		t.Errorf("Output = %s, want {}", res.Output)
	}
	b := <-got
	if !reflect.DeepEqual(b["params"], map[string]any{}) || !reflect.DeepEqual(b["outputs"], map[string]any{}) {
		t.Errorf("params, outputs = %v, %v, want {}, {}", b["params"], b["outputs"])
	}
	if h := <-header; len(h.Values("Traceparent")) != 0 {
		t.Errorf("traceparent sent without one: %q", h.Values("Traceparent"))
	}
}

// TestCallRetriesReset checks that a reset is retried and counted where it
// happens, on a fresh connection and on a reused keep-alive one (where Go's
// transport would replay a request with an Idempotency-Key by itself).
func TestCallRetriesReset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport *http.Transport
		warmUp    bool
	}{
		{name: "fresh connection", transport: &http.Transport{DisableKeepAlives: true}},
		// One connection per host: the call must wait for and reuse the
		// warm-up's connection.
		{name: "reused connection", transport: &http.Transport{MaxConnsPerHost: 1}, warmUp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(tc.transport.CloseIdleConnections)
			resetAt := 1
			if tc.warmUp {
				resetAt = 2
			}
			var (
				mu    sync.Mutex
				conns = map[string]int{} // requests per client address
			)
			srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				conns[r.RemoteAddr]++
				mu.Unlock()
				if n == resetAt {
					reset(t, w)
					return
				}
				ok(w, `{"n":`+strconv.Itoa(n)+`}`)
			})
			cfg := testConfig()
			cfg.HTTPClient = &http.Client{Transport: tc.transport}
			c := stepclient.New(cfg)
			ctx := testCtx(t)
			if tc.warmUp {
				if _, err := c.Call(ctx, testRequest(srv.URL+"/warm"), nil); err != nil {
					t.Fatalf("warm-up Call: %v", err)
				}
			}
			var ns notices
			res, err := c.Call(ctx, testRequest(srv.URL+"/validate"), ns.record)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if res.Attempts != 2 {
				t.Errorf("Attempts = %d, want 2", res.Attempts)
			}
			if want := []int{1}; !reflect.DeepEqual(ns.attempts(), want) {
				t.Errorf("onRetry attempts = %v, want %v", ns.attempts(), want)
			}
			if len(ns) == 1 && !stepclient.IsRetryable(ns[0].Err) {
				t.Errorf("notice error %v is not retryable", ns[0].Err)
			}
			wantCalls := res.Attempts
			if tc.warmUp {
				wantCalls++
			}
			if got := int(srv.calls.Load()); got != wantCalls {
				t.Errorf("server saw %d requests, want %d (attempts counted where they happen)", got, wantCalls)
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("requests per client connection: %v", conns)
			if tc.warmUp && len(conns) != 2 {
				t.Errorf("connections = %d, want 2 (the warm-up's reused, then a new one)", len(conns))
			}
		})
	}
}

func TestCallRetriesRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/validate"
	_ = ln.Close()

	for _, tc := range []struct {
		name         string
		maxRetries   int
		firstAttempt int
		wantNotices  []int
		wantAttempts int
	}{
		{name: "default budget", maxRetries: 0, firstAttempt: 1, wantNotices: []int{1, 2}, wantAttempts: 3},
		{name: "three retries", maxRetries: 3, firstAttempt: 1, wantNotices: []int{1, 2, 3}, wantAttempts: 4},
		{name: "no retries", maxRetries: -1, firstAttempt: 1, wantNotices: []int{}, wantAttempts: 1},
		{name: "resumed at attempt 2", maxRetries: 0, firstAttempt: 2, wantNotices: []int{2}, wantAttempts: 3},
		{name: "resumed past the budget", maxRetries: 0, firstAttempt: 5, wantNotices: []int{}, wantAttempts: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxRetries = tc.maxRetries
			req := testRequest(url)
			req.Attempt = tc.firstAttempt
			var ns notices
			res, err := stepclient.New(cfg).Call(testCtx(t), req, ns.record)
			if !errors.Is(err, stepclient.ErrRetriesExhausted) {
				t.Fatalf("err = %v, want ErrRetriesExhausted", err)
			}
			if !stepclient.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = false", err)
			}
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err %v looks like a cancelled context", err)
			}
			if !strings.Contains(err.Error(), "refused") {
				t.Errorf("err %q does not name the last cause", err)
			}
			if !reflect.DeepEqual(ns.attempts(), tc.wantNotices) {
				t.Errorf("onRetry attempts = %v, want %v", ns.attempts(), tc.wantNotices)
			}
			if res.Attempts != tc.wantAttempts {
				t.Errorf("Attempts = %d, want %d", res.Attempts, tc.wantAttempts)
			}
			for _, n := range ns {
				if n.Delay <= 0 || n.Delay > time.Second {
					t.Errorf("attempt %d: delay %v, want a small positive back-off", n.Attempt, n.Delay)
				}
			}
		})
	}
}

func TestCallRetriesAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select { // hang until the client gives up
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		ok(w, `{"ok":true}`)
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	req := testRequest(srv.URL + "/validate")
	req.Step.Timeout = 100 * time.Millisecond // overrides Config.Timeout (5s)
	var ns notices
	res, err := stepclient.New(testConfig()).Call(testCtx(t), req, ns.record)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if res.Attempts != 2 || len(ns) != 1 {
		t.Fatalf("Attempts = %d, notices = %v; want 2 and one", res.Attempts, ns)
	}
	if !errors.Is(ns[0].Err, stepclient.ErrAttemptTimeout) {
		t.Errorf("notice error = %v, want ErrAttemptTimeout", ns[0].Err)
	}
	if errors.Is(ns[0].Err, context.DeadlineExceeded) {
		t.Errorf("attempt timeout %v wraps context.DeadlineExceeded", ns[0].Err)
	}
}

func TestCallFailsFastOnStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		header map[string]string
		retry  *fsm.RetryPolicy
	}{
		{name: "500", code: 500},
		{name: "404", code: 404},
		{name: "400", code: 400},
		{name: "429 with Retry-After, not listed", code: 429, header: map[string]string{"Retry-After": "0"}},
		{name: "503 not listed", code: 503, retry: &fsm.RetryPolicy{MaxRetries: 3, RetryOnStatus: []int{429}}},
		{name: "redirect not followed", code: 307, header: map[string]string{"Location": "/elsewhere"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, `{"error":"boom"}`)
			})
			req := testRequest(srv.URL + "/validate")
			req.Step.Retry = tc.retry
			var ns notices
			res, err := stepclient.New(testConfig()).Call(testCtx(t), req, ns.record)
			var se *stepclient.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *StatusError", err)
			}
			if se.Code != tc.code || se.Body != `{"error":"boom"}` {
				t.Errorf("StatusError = %d %q, want %d with the body", se.Code, se.Body, tc.code)
			}
			if stepclient.IsRetryable(err) || errors.Is(err, stepclient.ErrRetriesExhausted) {
				t.Errorf("err %v classified as retryable", err)
			}
			if got := srv.calls.Load(); got != 1 || res.Attempts != 1 || len(ns) != 0 {
				t.Errorf("calls = %d, Attempts = %d, notices = %d; want 1, 1, 0", got, res.Attempts, len(ns))
			}
		})
	}
}

func TestCallRetriesListedStatus(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		switch n {
		case 1:
			w.Header().Set("Retry-After", "0")
		case 2:
			w.Header().Set("Retry-After", "1") // capped by MaxRetryAfter (20ms)
		default:
			ok(w, `{"done":true}`)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	req := testRequest(srv.URL + "/validate")
	req.Step.Retry = &fsm.RetryPolicy{MaxRetries: 3, BackoffBase: 10 * time.Millisecond, RetryOnStatus: []int{429, 503}}
	var ns notices
	res, err := stepclient.New(testConfig()).Call(testCtx(t), req, ns.record)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if string(res.Output) != `{"done":true}` || res.Attempts != 3 || srv.calls.Load() != 3 {
		t.Errorf("Output %s, Attempts %d, calls %d; want {\"done\":true}, 3, 3", res.Output, res.Attempts, srv.calls.Load())
	}
	wantDelays := []time.Duration{0, 20 * time.Millisecond}
	var gotDelays []time.Duration
	for _, n := range ns {
		gotDelays = append(gotDelays, n.Delay)
		var se *stepclient.StatusError
		if !errors.As(n.Err, &se) || se.Code != 503 {
			t.Errorf("notice %d error = %v, want *StatusError 503", n.Attempt, n.Err)
		}
	}
	if !reflect.DeepEqual(gotDelays, wantDelays) {
		t.Errorf("delays = %v, want %v (Retry-After honoured, capped)", gotDelays, wantDelays)
	}
}

func TestCallListedStatusExhausted(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusTooManyRequests)
	})
	req := testRequest(srv.URL + "/validate")
	req.Step.Retry = &fsm.RetryPolicy{MaxRetries: 2, RetryOnStatus: []int{429}}
	var ns notices
	res, err := stepclient.New(testConfig()).Call(testCtx(t), req, ns.record)
	var se *stepclient.StatusError
	if !errors.Is(err, stepclient.ErrRetriesExhausted) || !errors.As(err, &se) || se.Code != 429 {
		t.Fatalf("err = %v, want ErrRetriesExhausted with *StatusError 429", err)
	}
	if res.Attempts != 3 || srv.calls.Load() != 3 {
		t.Errorf("Attempts %d, calls %d; want 3, 3", res.Attempts, srv.calls.Load())
	}
	for _, n := range ns {
		if n.Delay != 20*time.Millisecond {
			t.Errorf("attempt %d: delay %v, want the 20ms cap for an HTTP-date an hour away", n.Attempt, n.Delay)
		}
	}
}

func TestCallResponseBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		wantOut string
		wantErr error
	}{
		{name: "at the limit", body: `{"x":"1234567"}`, wantOut: `{"x":"1234567"}`},
		{name: "over the limit", body: `{"x":"12345678"}`, wantErr: stepclient.ErrResponseTooLarge},
		{name: "not JSON", body: `not json`, wantErr: stepclient.ErrInvalidOutput},
		{name: "empty", body: ``, wantOut: `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { ok(w, tc.body) })
			cfg := testConfig()
			cfg.MaxResponseBytes = 15
			res, err := stepclient.New(cfg).Call(testCtx(t), testRequest(srv.URL+"/validate"), nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || stepclient.IsRetryable(err) {
					t.Errorf("err = %v, want %v, not retryable", err, tc.wantErr)
				}
			} else if err != nil || string(res.Output) != tc.wantOut {
				t.Errorf("Call = %s, %v; want %s", res.Output, err, tc.wantOut)
			}
			if got := srv.calls.Load(); got != 1 {
				t.Errorf("calls = %d, want 1", got)
			}
		})
	}
}

func TestCallParentCancelDuringAttempt(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := newServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	type result struct {
		res stepclient.Result
		err error
	}
	done := make(chan result, 1)
	var ns notices
	go func() {
		res, err := stepclient.New(testConfig()).Call(ctx, testRequest(srv.URL+"/validate"), ns.record)
		done <- result{res, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("request never arrived")
	}
	cancel()
	var got result
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Call did not return after the context was cancelled")
	}
	if !errors.Is(got.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", got.err)
	}
	if stepclient.IsRetryable(got.err) {
		t.Errorf("IsRetryable(%v) = true for a cancelled call", got.err)
	}
	if calls := srv.calls.Load(); calls != 1 || got.res.Attempts != 1 || len(ns) != 0 {
		t.Errorf("calls %d, Attempts %d, notices %d; want 1, 1, 0", calls, got.res.Attempts, len(ns))
	}
}

func TestCallParentCancelDuringBackoff(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { reset(t, w) })
	cfg := testConfig()
	cfg.BackoffBase = time.Hour // the wait would outlast the test
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	res, err := stepclient.New(cfg).Call(ctx, testRequest(srv.URL+"/validate"), func(stepclient.RetryNotice) error {
		cancel() // shutdown begins while the client waits
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if res.Attempts != 1 || srv.calls.Load() != 1 {
		t.Errorf("Attempts %d, calls %d; want 1, 1", res.Attempts, srv.calls.Load())
	}
}

func TestCallOnRetryErrorStops(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { reset(t, w) })
	errStore := errors.New("store down")
	var n int
	res, err := stepclient.New(testConfig()).Call(testCtx(t), testRequest(srv.URL+"/validate"), func(stepclient.RetryNotice) error {
		n++
		return errStore
	})
	if !errors.Is(err, errStore) {
		t.Errorf("err = %v, want the onRetry error", err)
	}
	if n != 1 || res.Attempts != 1 || srv.calls.Load() != 1 {
		t.Errorf("onRetry calls %d, Attempts %d, server calls %d; want 1, 1, 1", n, res.Attempts, srv.calls.Load())
	}
}

func TestCallInvalidRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*stepclient.Request)
	}{
		{name: "no URL", edit: func(r *stepclient.Request) { r.Step.URL = "" }},
		{name: "relative URL", edit: func(r *stepclient.Request) { r.Step.URL = "/validate" }},
		{name: "ftp URL", edit: func(r *stepclient.Request) { r.Step.URL = "ftp://host/validate" }},
		{name: "run 0", edit: func(r *stepclient.Request) { r.Run = 0 }},
		{name: "params not JSON", edit: func(r *stepclient.Request) { r.Params = json.RawMessage("{") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := testRequest("http://127.0.0.1:1/validate")
			tc.edit(&req)
			_, err := stepclient.New(testConfig()).Call(testCtx(t), req, nil)
			if !errors.Is(err, stepclient.ErrInvalidRequest) {
				t.Errorf("err = %v, want ErrInvalidRequest", err)
			}
		})
	}
}

// TestCallsReuseConnections: rounds of 32 calls at once to one step service
// reuse the first round's connections (http.DefaultTransport keeps 2 idle
// per host, so each later round would dial about 30 new ones).
func TestCallsReuseConnections(t *testing.T) {
	const atOnce, rounds = 32, 4
	var dialed atomic.Int32
	var mu sync.Mutex
	release := make(chan struct{})
	gate := func() chan struct{} { mu.Lock(); defer mu.Unlock(); return release }
	var arrived atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		g := gate()
		if arrived.Add(1)%atOnce == 0 {
			close(g)
		}
		<-g // every call of the round in flight at once
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := stepclient.New(testConfig())
	for round := range rounds {
		var wg sync.WaitGroup
		for range atOnce {
			wg.Go(func() {
				if _, err := c.Call(testCtx(t), testRequest(srv.URL+"/validate"), nil); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		mu.Lock()
		release = make(chan struct{})
		mu.Unlock()
	}
	if n := dialed.Load(); n > atOnce+2 {
		t.Errorf("%d connections dialed for %d rounds of %d calls at once, want about %d (the first round's, reused)", n, rounds, atOnce, atOnce)
	}
}

// TestCallLargerThanBuffers: the default transport's connection buffers
// are small (a call in flight holds them), and a request and an answer
// larger than them, with a header line longer than them too, still go
// through whole, also on a reused connection.
func TestCallLargerThanBuffers(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	longHeader := strings.Repeat("h", 8<<10)
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), big) {
			http.Error(w, "request body cut", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Long", longHeader)
		ok(w, `{"echo":"`+big+`"}`)
	})
	c := stepclient.New(testConfig())
	req := testRequest(srv.URL + "/validate")
	req.Params = json.RawMessage(`{"big":"` + big + `"}`)
	for i := range 2 {
		res, err := c.Call(testCtx(t), req, nil)
		if err != nil || string(res.Output) != `{"echo":"`+big+`"}` {
			t.Fatalf("call %d: %d bytes of output, %v; want the %d-byte echo", i+1, len(res.Output), err, len(big)+11)
		}
	}
}

// TestCallsOverH2C: with H2C, calls to an http:// step service go over
// HTTP/2 without TLS, and calls in flight at once share a connection
// instead of holding one each; without it, HTTP/1.1 and a connection per
// call in flight.
func TestCallsOverH2C(t *testing.T) {
	const inFlight = 40
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2c=%v", h2c), func(t *testing.T) {
			var conns, proto2 atomic.Int32
			release := make(chan struct{})
			var arrived sync.WaitGroup
			arrived.Add(inFlight)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor == 2 {
					proto2.Add(1)
				}
				arrived.Done()
				<-release
				ok(w, `{"ok":true}`)
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			cfg := testConfig()
			cfg.H2C = h2c
			c := stepclient.New(cfg)
			errs := make(chan error, inFlight)
			for range inFlight {
				go func() {
					_, err := c.Call(testCtx(t), testRequest(srv.URL+"/validate"), nil)
					errs <- err
				}()
			}
			arrived.Wait() // every call in flight at once
			close(release)
			for range inFlight {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			switch n, p2 := conns.Load(), proto2.Load(); {
			case h2c && (p2 != inFlight || n != 1):
				// Calls that start together wait for one dial, then share it.
				t.Errorf("h2c: %d of %d calls over HTTP/2, on %d connections; want all, on 1", p2, inFlight, n)
			case !h2c && (p2 != 0 || n != inFlight):
				t.Errorf("http1: %d calls over HTTP/2, %d connections; want none, and %d", p2, n, inFlight)
			}
		})
	}
}
