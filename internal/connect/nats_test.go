package connect_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/tlstest"
)

func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv
}

func hostPort(srv *server.Server) string {
	_, hp, _ := strings.Cut(srv.ClientURL(), "://")
	return hp
}

// TestNATSUserPassword: user:password@ in the URL is used; none or a wrong
// one is refused at connection with an error naming the setting and
// without the password.
func TestNATSUserPassword(t *testing.T) {
	srv := startNATS(t, &server.Options{Users: []*server.User{{Username: "worker", Password: "right-pass"}}})
	hp := hostPort(srv)
	nc, err := connect.NATS(config.NATS{URL: "nats://worker:right-pass@" + hp}, "test")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	nc.Close()
	for name, url := range map[string]string{
		"none":  "nats://" + hp,
		"wrong": "nats://worker:wrong-pass@" + hp,
		"list":  "nats://worker:wrong-pass@" + hp + ",nats://worker:wrong-pass@" + hp,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := connect.NATS(config.NATS{URL: url}, "test")
			if err == nil || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "NATS_URL") {
				t.Fatalf("err %v, want the credentials refused naming NATS_URL", err)
			}
			if strings.Contains(err.Error(), "wrong-pass") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	srvTok := startNATS(t, &server.Options{Authorization: "s3cret-token"})
	if nc, err := connect.NATS(config.NATS{URL: "nats://s3cret-token@" + hostPort(srvTok)}, "test"); err != nil {
		t.Fatalf("token: %v", err)
	} else {
		nc.Close()
	}
}

// TestNATSNKeySeed: NATS_NKEY_SEED signs the server's challenge; another
// user's seed is refused naming NATS_NKEY_SEED.
func TestNATSNKeySeed(t *testing.T) {
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "user.nk"), filepath.Join(dir, "other.nk")
	_ = os.WriteFile(good, seed, 0o600)
	_ = os.WriteFile(bad, otherSeed, 0o600)
	srv := startNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	nc, err := connect.NATS(config.NATS{URL: srv.ClientURL(), NKeySeed: good}, "test")
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	nc.Close()
	if _, err := connect.NATS(config.NATS{URL: srv.ClientURL(), NKeySeed: bad}, "test"); err == nil || !strings.Contains(err.Error(), "NATS_NKEY_SEED") {
		t.Fatalf("other seed: %v, want an error naming NATS_NKEY_SEED", err)
	}
	if _, err := connect.NATS(config.NATS{URL: srv.ClientURL(), NKeySeed: filepath.Join(dir, "missing")}, "test"); err == nil || !strings.Contains(err.Error(), "NATS_NKEY_SEED") {
		t.Fatalf("missing seed file: %v", err)
	}
}

// TestNATSTLSVerify: a server that requires TLS and verifies client
// certificates (tls verify): CA and client certificate connect over TLS;
// plain, another CA or no client certificate are refused, each naming the
// setting.
func TestNATSTLSVerify(t *testing.T) {
	f := tlstest.New(t)
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	srv := startNATS(t, &server.Options{
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	})
	url := "tls://" + hostPort(srv)
	nc, err := connect.NATS(config.NATS{URL: url, TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}, "test")
	if err != nil {
		t.Fatalf("TLS with CA and client certificate: %v", err)
	}
	if st, err := nc.TLSConnectionState(); err != nil || !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		t.Fatalf("connection not over TLS: %+v, %v", st, err)
	}
	nc.Close()
	for _, tc := range []struct {
		name string
		c    config.NATS
		want string
	}{
		// nats.go upgrades to TLS when the server requires it, with the
		// system roots, which do not know the test CA.
		{"plain", config.NATS{URL: "nats://" + hostPort(srv)}, "NATS_TLS_CA"},
		{"other CA", config.NATS{URL: url, TLSCA: f.OtherCA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}, "NATS_TLS_CA"},
		{"no client certificate", config.NATS{URL: url, TLSCA: f.CA}, "NATS_TLS_CERT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := connect.NATS(tc.c, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestReconnectDelay(t *testing.T) {
	prev := time.Duration(0)
	for i := 1; i <= 20; i++ {
		d := connect.ReconnectDelay(i)
		if d < connect.ReconnectBase || d > connect.ReconnectMax+connect.ReconnectMax/4 {
			t.Fatalf("attempt %d: %s out of [%s, %s]", i, d, connect.ReconnectBase, connect.ReconnectMax*5/4)
		}
		if i <= 3 && d <= prev/2 {
			t.Fatalf("attempt %d: %s does not grow from %s", i, d, prev)
		}
		prev = d
	}
}
