package connect_test

import (
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/tlstest"
)

// saveContext writes a natscli context file named name under
// xdg/nats/context, as `nats context save` does.
func saveContext(t *testing.T, xdg, name string, fields map[string]any) {
	t.Helper()
	dir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(fields)
	if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// contextSettings resolves an operator command's NATS settings (flag group
// config.NATSFlags) from args over the variables kv (name, value, …), with
// XDG_CONFIG_HOME at xdg.
func contextSettings(t *testing.T, xdg string, args []string, kv ...string) config.NATS {
	t.Helper()
	vars := map[string]string{"XDG_CONFIG_HOME": xdg}
	for i := 0; i+1 < len(kv); i += 2 {
		vars[kv[i]] = kv[i+1]
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	set := config.NewSet(fs, func(k string) string { return vars[k] })
	n := config.NATSFlags(set, "nats://127.0.0.1:1")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := set.Resolve(); err != nil {
		t.Fatal(err)
	}
	return *n
}

// TestNATSContextAuth: a natscli context's url with its user and password,
// token or nkey connects to a server that requires them; a wrong password
// in the context is refused naming NATS_CONTEXT, without the password; a
// user:password@ in NATS_URL, or --nats-url, overrides the context's.
func TestNATSContextAuth(t *testing.T) {
	srv := startNATS(t, &server.Options{Users: []*server.User{{Username: "worker", Password: "right-pass"}}})
	hp := hostPort(srv)
	xdg := t.TempDir()
	saveContext(t, xdg, "good", map[string]any{"url": "nats://" + hp, "user": "worker", "password": "right-pass"})
	saveContext(t, xdg, "wrong", map[string]any{"url": "nats://" + hp, "user": "worker", "password": "wrong-pass"})

	nc, err := connect.NATS(contextSettings(t, xdg, []string{"--nats-context", "good"}), "test")
	if err != nil {
		t.Fatalf("context good: %v", err)
	}
	nc.Close()

	_, err = connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "wrong"), "test")
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "NATS_CONTEXT wrong") {
		t.Fatalf("context wrong: %v, want the credentials refused naming NATS_CONTEXT", err)
	}
	if strings.Contains(err.Error(), "wrong-pass") {
		t.Fatalf("the error shows the password: %v", err)
	}

	// An explicit user@ in NATS_URL wins over the context's user and password.
	if nc, err := connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "wrong", "NATS_URL", "nats://worker:right-pass@"+hp), "test"); err != nil {
		t.Fatalf("NATS_URL with user over context wrong: %v", err)
	} else {
		nc.Close()
	}
	// --nats-url overrides the context's url only: its user and password stay.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	saveContext(t, xdg, "elsewhere", map[string]any{"url": "nats://" + dead, "user": "worker", "password": "right-pass"})
	if nc, err := connect.NATS(contextSettings(t, xdg, []string{"--nats-context", "elsewhere", "--nats-url", "nats://" + hp}), "test"); err != nil {
		t.Fatalf("--nats-url over context elsewhere: %v", err)
	} else {
		nc.Close()
	}

	srvTok := startNATS(t, &server.Options{Authorization: "s3cret-token"})
	saveContext(t, xdg, "token", map[string]any{"url": srvTok.ClientURL(), "token": "s3cret-token"})
	if nc, err := connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "token"), "test"); err != nil {
		t.Fatalf("context token: %v", err)
	} else {
		nc.Close()
	}

	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srvNK := startNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	saveContext(t, xdg, "nkey", map[string]any{"url": srvNK.ClientURL(), "nkey": "file://" + seedFile})
	if nc, err := connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "nkey"), "test"); err != nil {
		t.Fatalf("context nkey: %v", err)
	} else {
		nc.Close()
	}
}

// TestNATSContextTLS: a context's ca, cert and key reach a server that
// requires TLS and verifies clients; a context with another CA fails
// naming the context's ca; NATS_TLS_CA overrides it.
func TestNATSContextTLS(t *testing.T) {
	f := tlstest.New(t)
	srv := startNATS(t, &server.Options{
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: f.VerifyingServer(t),
	})
	url := "tls://" + hostPort(srv)
	xdg := t.TempDir()
	saveContext(t, xdg, "tls", map[string]any{"url": url, "ca": f.CA, "cert": f.ClientCert, "key": f.ClientKey})
	saveContext(t, xdg, "other-ca", map[string]any{"url": url, "ca": f.OtherCA, "cert": f.ClientCert, "key": f.ClientKey})

	nc, err := connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "tls"), "test")
	if err != nil {
		t.Fatalf("context tls: %v", err)
	}
	if st, err := nc.TLSConnectionState(); err != nil || !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		t.Fatalf("connection not over TLS: %+v, %v", st, err)
	}
	nc.Close()

	if _, err := connect.NATS(contextSettings(t, xdg, nil, "NATS_CONTEXT", "other-ca"), "test"); err == nil || !strings.Contains(err.Error(), "the ca of NATS_CONTEXT other-ca") {
		t.Fatalf("context other-ca: %v, want an error naming the context's ca", err)
	}
	if nc, err := connect.NATS(contextSettings(t, xdg, []string{"--nats-tls-ca", f.CA}, "NATS_CONTEXT", "other-ca"), "test"); err != nil {
		t.Fatalf("--nats-tls-ca over context other-ca: %v", err)
	} else {
		nc.Close()
	}
}
