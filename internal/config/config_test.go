package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := config.Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8000" || c.NATSURL != "" || c.RedisURL != "" || c.LockTTL != 30*time.Second ||
		c.StepTimeout != 10*time.Second || c.StepMaxRetries != 2 || c.StepBackoffBase != 500*time.Millisecond ||
		c.Workers != 8 || c.DuplicateWindow != 2*time.Minute || c.StreamReplicas != 1 ||
		c.CampaignRetention != 720*time.Hour || c.StepsBaseURL != "http://127.0.0.1:8081" || c.Role != config.RoleAll ||
		c.NATSSync != 2*time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
	if got := strings.Join(c.CORSAllowedOrigins, ","); got != "http://localhost:3000,http://internal-dashboard" {
		t.Fatalf("origins %q", got)
	}
}

func TestNATSSyncInterval(t *testing.T) {
	for v, want := range map[string]time.Duration{"always": 0, "ALWAYS": 0, "1s": time.Second} {
		c, err := config.Load(nil, env(map[string]string{"NATS_SYNC_INTERVAL": v}), io.Discard)
		if err != nil || c.NATSSync != want {
			t.Errorf("NATS_SYNC_INTERVAL=%s: %v, %v; want %v", v, c.NATSSync, err, want)
		}
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	c, err := config.Load([]string{"--workers", "3"}, env(map[string]string{"WORKERS": "5", "LOCK_TTL": "10s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 3 || c.LockTTL != 10*time.Second {
		t.Fatalf("got workers %d lock %s", c.Workers, c.LockTTL)
	}
}

func TestBadSettingsAreNamed(t *testing.T) {
	tests := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"CORS_ALLOWED_ORIGINS": "*"}, nil, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "http://a.com,https://*.b.com"}, nil, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "a.com"}, nil, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "https://dash.example.com:443"}, nil, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "NATS_STORE_DIR": "/tmp/x"}, nil, "NATS_STORE_DIR"},
		{map[string]string{"LOCK_TTL": "-1s"}, nil, "LOCK_TTL"},
		{map[string]string{"STEP_TIMEOUT": "ten"}, nil, "STEP_TIMEOUT"},
		{map[string]string{"DUPLICATE_WINDOW": "0s"}, nil, "DUPLICATE_WINDOW"},
		{map[string]string{"NATS_SYNC_INTERVAL": "sometimes"}, nil, "NATS_SYNC_INTERVAL"},
		{map[string]string{"NATS_SYNC_INTERVAL": "0s"}, nil, "NATS_SYNC_INTERVAL"},
		{map[string]string{"STEPS_BASE_URL": "ftp://x"}, nil, "STEPS_BASE_URL"},
		{map[string]string{"STEPS_BASE_URL": "not a url"}, nil, "STEPS_BASE_URL"},
		{map[string]string{"REDIS_URL": "http://x:6379"}, nil, "REDIS_URL"},
		{map[string]string{"NATS_URL": "localhost"}, nil, "NATS_URL"},
		{map[string]string{"WORKERS": "0"}, nil, "WORKERS"},
		{map[string]string{"STREAM_REPLICAS": "7"}, nil, "STREAM_REPLICAS"},
		{map[string]string{"HTTP_ADDR": "8000"}, nil, "HTTP_ADDR"},
		{map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{map[string]string{"PPROF_ADDR": ":6060"}, nil, "PPROF_ADDR"},
		{map[string]string{"STEP_PROTOCOL": "h2"}, nil, "STEP_PROTOCOL"},
		{map[string]string{"PPROF_ADDR": "0.0.0.0:6060"}, nil, "PPROF_ADDR"},
		{map[string]string{"PPROF_ADDR": "10.1.2.3:6060"}, nil, "PPROF_ADDR"},
		{map[string]string{"PPROF_ADDR": "6060"}, nil, "PPROF_ADDR"},
		{map[string]string{"WORKFLOWS_FILE": "/does/not/exist.yaml"}, nil, "WORKFLOWS_FILE"},
		{nil, []string{"--role", "ingress"}, "REDIS_URL"},
		{nil, []string{"--role", "boss"}, "--role"},
	}
	for _, tc := range tests {
		_, err := config.Load(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: error %v, want one naming %s", tc.env, tc.args, err, tc.want)
		}
	}
}

func TestIdempotencySecret(t *testing.T) {
	const secret = "0123456789abcdef-a-long-enough-secret"
	c, err := config.Load(nil, env(map[string]string{"IDEMPOTENCY_SECRET": secret}), io.Discard)
	if err != nil || string(c.IdempotencySecret) != secret {
		t.Fatalf("valid secret: %v, got %d bytes", err, len(c.IdempotencySecret))
	}
	// Never printed: not by fmt, slog or JSON, nor by --help (the flag's
	// default would be the variable's value).
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s", c, c, c, c.IdempotencySecret)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cfg", c, "secret", c.IdempotencySecret)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", c, "secret", c.IdempotencySecret)
	b, _ := json.Marshal(c)
	out.Write(b)
	if _, err := config.Load([]string{"--help"}, env(map[string]string{"IDEMPOTENCY_SECRET": secret}), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if strings.Contains(out.String(), secret) || !strings.Contains(out.String(), "idempotency-secret") {
		t.Fatalf("the secret was printed (or --help lacks the flag):\n%s", out.String())
	}

	flagSecret := strings.Repeat("f", 16)
	c, err = config.Load([]string{"--idempotency-secret", flagSecret}, env(map[string]string{"IDEMPOTENCY_SECRET": secret}), io.Discard)
	if err != nil || string(c.IdempotencySecret) != flagSecret {
		t.Fatalf("flag over variable: %v, got %d bytes", err, len(c.IdempotencySecret))
	}

	for _, short := range []string{"s3cr3t", strings.Repeat("x", config.MinSecretLength-1)} {
		_, err = config.Load(nil, env(map[string]string{"IDEMPOTENCY_SECRET": short}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "IDEMPOTENCY_SECRET") || strings.Contains(err.Error(), short) {
			t.Fatalf("%d-byte secret: want an error naming IDEMPOTENCY_SECRET (not quoting it), got %v", len(short), err)
		}
	}

	c, err = config.Load(nil, env(nil), io.Discard)
	if err != nil || c.IdempotencySecret != "" {
		t.Fatalf("unset: %v, got %d bytes", err, len(c.IdempotencySecret))
	}
}

// A command registers only the groups it uses: their flags alone, read from
// their variables alone, so a bad setting of another command cannot stop it.
func TestGroupsReadOnlyTheirSettings(t *testing.T) {
	fs := flag.NewFlagSet("streams apply", flag.ContinueOnError)
	s := config.NewSet(fs, env(map[string]string{"CORS_ALLOWED_ORIGINS": "*", "LOCK_TTL": "x", "DUPLICATE_WINDOW": "5m"}))
	n := config.NATSFlags(s, "nats://127.0.0.1:4222")
	st := config.StreamFlags(s)
	if err := fs.Parse([]string{"--stream-replicas", "3"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Resolve(); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if n.URL != "nats://127.0.0.1:4222" || st.DuplicateWindow != 5*time.Minute || st.Replicas != 3 {
		t.Fatalf("got %+v %+v", n, st)
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if strings.Join(names, ",") != "duplicate-window,nats-context,nats-creds,nats-nkey-seed,nats-tls-ca,nats-tls-cert,nats-tls-key,nats-url,stream-replicas" {
		t.Fatalf("flags %v", names)
	}
	var help bytes.Buffer
	config.PrintFlags(&help, fs)
	for _, want := range []string{"--duplicate-window duration", "($DUPLICATE_WINDOW, default 2m)", "--nats-url url", "default nats://127.0.0.1:4222", "--stream-replicas int"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, help.String())
		}
	}
}

func TestPprofAddr(t *testing.T) {
	for _, v := range []string{"", "127.0.0.1:6060", "[::1]:0", "localhost:6060"} {
		c, err := config.Load(nil, env(map[string]string{"PPROF_ADDR": v}), io.Discard)
		if err != nil || c.PprofAddr != v {
			t.Errorf("PPROF_ADDR=%q: %q, %v", v, c.PprofAddr, err)
		}
	}
}

func TestStepProtocol(t *testing.T) {
	for v, want := range map[string]bool{"": false, "http1": false, "h2c": true} {
		e := map[string]string{}
		if v != "" {
			e["STEP_PROTOCOL"] = v
		}
		c, err := config.Load(nil, env(e), io.Discard)
		if err != nil || c.StepH2C != want {
			t.Errorf("STEP_PROTOCOL=%q: h2c %v, %v; want %v", v, c.StepH2C, err, want)
		}
	}
}
