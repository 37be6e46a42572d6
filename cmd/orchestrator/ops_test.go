package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/tlstest"
)

// Bad command lines of the operator commands fail before connecting, with
// the usage on stderr.
func TestOpsUsageErrors(t *testing.T) {
	tests := []struct {
		args      []string
		wantErr   string
		wantUsage string
	}{
		{[]string{"trace"}, "want one <tenant>/<campaign>", "orchestrator trace <tenant>/<campaign>"},
		{[]string{"trace", "acme"}, "is not <tenant>/<campaign>", "orchestrator trace"},
		{[]string{"trace", "acme/a.b"}, "is not <tenant>/<campaign>", "orchestrator trace"},
		{[]string{"trace", "acme/a", "acme/b"}, "want one", "orchestrator trace"},
		{[]string{"trace", "acme/a", "--bogus"}, "flag provided but not defined", "--follow"},
		{[]string{"dlq"}, "want `dlq list` or `dlq replay`", "orchestrator dlq replay"},
		{[]string{"dlq", "purge"}, "want `dlq list` or `dlq replay`", "orchestrator dlq list"},
		{[]string{"dlq", "list", "extra"}, "unexpected", "orchestrator dlq list"},
		{[]string{"dlq", "replay"}, "want one <seq> or --all", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "3", "--all"}, "want one <seq> or --all", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "three"}, "not a CAMPAIGN_DLQ sequence", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "0"}, "not a CAMPAIGN_DLQ sequence", "orchestrator dlq replay"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(stderr.String(), tt.wantUsage) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantUsage, stderr.String())
			}
		})
	}
}

// Flags may come before, between or after the positional arguments; the
// NATS URL comes from the flag, else NATS_URL, else the default.
func TestCommandParse(t *testing.T) {
	env := func(k string) string { return map[string]string{"NATS_URL": "nats://env:4222"}[k] }
	c, conn := opsCommand("x", "", "", env, io.Discard, io.Discard)
	follow := c.fs.Bool("follow", false, "")
	pos, err := c.parse([]string{"acme/a", "--follow", "b", "--nats-url", "nats://flag:4222"})
	if err != nil || strings.Join(pos, ",") != "acme/a,b" || !*follow || conn.URL != "nats://flag:4222" {
		t.Fatalf("pos %v, follow %v, url %s, err %v", pos, *follow, conn.URL, err)
	}
	c, conn = opsCommand("x", "", "", env, io.Discard, io.Discard)
	if _, err := c.parse(nil); err != nil || conn.URL != "nats://env:4222" {
		t.Fatalf("url from NATS_URL: %s, err %v", conn.URL, err)
	}
	c, conn = opsCommand("x", "", "", func(string) string { return "" }, io.Discard, io.Discard)
	if _, err := c.parse(nil); err != nil || conn.URL != defaultNATSURL {
		t.Fatalf("default url %s, err %v", conn.URL, err)
	}
	c, _ = opsCommand("x", "", "", func(k string) string { return map[string]string{"NATS_URL": "localhost"}[k] }, io.Discard, io.Discard)
	if _, err := c.parse(nil); err == nil || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("bad NATS_URL: error %v, want one naming it", err)
	}
}

// TestOpsCommandsNATSTLS: the operator commands take the NATS security
// flags as serve takes its settings: streams apply, dlq list and rebuild
// reach a JetStream server that requires TLS and verifies client
// certificates with --nats-tls-ca, --nats-tls-cert and --nats-tls-key,
// and without them fail naming NATS_TLS_CA.
func TestOpsCommandsNATSTLS(t *testing.T) {
	f := tlstest.New(t)
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: f.VerifyingServer(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	tlsFlags := []string{"--nats-url", url, "--nats-tls-ca", f.CA, "--nats-tls-cert", f.ClientCert, "--nats-tls-key", f.ClientKey}
	ctx := t.Context()
	rurl, _ := redistest.Start(t)
	for _, args := range [][]string{
		{"streams", "apply"},
		{"dlq", "list"},
		{"rebuild", "--dry-run", "--redis-url", rurl},
	} {
		name := strings.Join(args, " ")
		if out, err := cli(t, ctx, append(args, tlsFlags...)...); err != nil {
			t.Fatalf("%s with the TLS flags: %v\n%s", name, err, out)
		}
		if _, err := cli(t, ctx, append(args, "--nats-url", url)...); err == nil || !strings.Contains(err.Error(), "NATS_TLS_CA") {
			t.Fatalf("%s without the TLS flags: %v, want an error naming NATS_TLS_CA", name, err)
		}
	}
}

// TestOpsCommandsNATSContext: serve and the operator commands take a natscli
// context (--nats-context, NATS_CONTEXT) for a JetStream server that
// requires a user and password, from $XDG_CONFIG_HOME/nats/context; one
// saved by the nats CLI itself works too. A missing context fails naming
// NATS_CONTEXT; --nats-url overrides the context's url.
func TestOpsCommandsNATSContext(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "worker", Password: "ctx-pass-4321"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	xdg := t.TempDir()
	dir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctxJSON := `{"description": "test", "url": "` + srv.ClientURL() + `", "user": "worker", "password": "ctx-pass-4321", "creds": "", "tls_first": false}`
	if err := os.WriteFile(filepath.Join(dir, "orch.json"), []byte(ctxJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"XDG_CONFIG_HOME": xdg}
	getenv := func(k string) string { return vars[k] }
	ctx := t.Context()
	cmd := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, args, getenv, &out, &errOut)
		if strings.Contains(out.String()+errOut.String(), "ctx-pass") || (err != nil && strings.Contains(err.Error(), "ctx-pass")) {
			t.Errorf("%v shows the context's password: %v\n%s%s", args, err, out.String(), errOut.String())
		}
		return out.String(), err
	}
	if out, err := cmd("streams", "apply", "--nats-context", "orch"); err != nil || !strings.Contains(out, "stream CAMPAIGN_COMMANDS: applied") {
		t.Fatalf("streams apply --nats-context orch: %v\n%s", err, out)
	}
	if _, err := cmd("dlq", "list", "--nats-context", "orch"); err != nil {
		t.Fatalf("dlq list --nats-context orch: %v", err)
	}
	// Connected, read CAMPAIGN_EVENTS and found nothing.
	if _, err := cmd("trace", "acme/none", "--nats-context", "orch"); err == nil || !strings.Contains(err.Error(), "no events for acme/none") {
		t.Fatalf("trace --nats-context orch: %v, want no events", err)
	}
	vars["NATS_CONTEXT"] = "orch"
	if _, err := cmd("dlq", "list"); err != nil {
		t.Fatalf("dlq list with NATS_CONTEXT=orch: %v", err)
	}
	// --nats-url overrides the context's url (here with a dead port).
	if _, err := cmd("dlq", "list", "--nats-url", "nats://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("--nats-url over the context: %v, want a failure to reach 127.0.0.1:1", err)
	}
	delete(vars, "NATS_CONTEXT")
	if _, err := cmd("streams", "apply", "--nats-url", srv.ClientURL()); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("without the context: %v, want the credentials refused", err)
	}
	if _, err := cmd("streams", "apply", "--nats-context", "nope"); err == nil || !strings.Contains(err.Error(), "NATS_CONTEXT") {
		t.Fatalf("--nats-context nope: %v, want an error naming NATS_CONTEXT", err)
	}

	// serve connects with the context (the server refuses anyone else).
	app := metricsApp(t, nil, map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": "orch"})
	if got := app.NATSURLRedacted(); !strings.Contains(got, strings.TrimPrefix(srv.ClientURL(), "nats://")) || strings.Contains(got, "ctx-pass") {
		t.Fatalf("serve with NATS_CONTEXT connected to %q", got)
	}

	t.Run("saved by the nats CLI", func(t *testing.T) {
		bin := findNatsCLI(t)
		cliXDG := t.TempDir()
		save := exec.CommandContext(ctx, bin, "context", "save", "saved", "--server", srv.ClientURL(), "--user", "worker", "--password", "ctx-pass-4321")
		save.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cliXDG)
		if out, err := save.CombinedOutput(); err != nil {
			t.Fatalf("nats context save: %v\n%s", err, out)
		}
		vars["XDG_CONFIG_HOME"] = cliXDG
		if out, err := cmd("streams", "apply", "--nats-context", "saved"); err != nil {
			t.Fatalf("streams apply --nats-context saved: %v\n%s", err, out)
		}
		if _, err := cmd("dlq", "list", "--nats-context", filepath.Join(cliXDG, "nats", "context", "saved.json")); err != nil {
			t.Fatalf("dlq list --nats-context <file>: %v", err)
		}
	})
}
