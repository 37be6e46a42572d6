package connect_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
	srv := startNATS(t, &server.Options{
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: f.VerifyingServer(t),
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

// operatorServer runs nats-server in operator (JWT) mode with one account
// preloaded in its memory resolver; it returns the server and the account's
// signing key pair, which issues user JWTs.
func operatorServer(t *testing.T) (*server.Server, nkeys.KeyPair) {
	t.Helper()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "test-operator"
	if _, err := oc.Encode(okp); err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "CAMPAIGNS"
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	res := &server.MemAccResolver{}
	if err := res.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	return startNATS(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: res}), akp
}

// credsFile writes a .creds file (user JWT and seed, as nsc generates) of a
// new user issued by account, and returns its path.
func credsFile(t *testing.T, account nkeys.KeyPair, name string) string {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNATSCreds: NATS_CREDS (a JWT credentials file) authenticates to a
// server in operator mode; no credentials, or a user issued by an account
// the server does not trust, are refused with an error naming NATS_CREDS.
func TestNATSCreds(t *testing.T) {
	srv, account := operatorServer(t)
	nc, err := connect.NATS(config.NATS{URL: srv.ClientURL(), Creds: credsFile(t, account, "worker")}, "test")
	if err != nil {
		t.Fatalf("creds: %v", err)
	}
	if err := nc.Publish("campaign.test", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil || nc.LastError() != nil {
		t.Fatalf("publish as the creds user: %v %v", err, nc.LastError())
	}
	nc.Close()

	stranger, _ := nkeys.CreateAccount()
	if _, err := connect.NATS(config.NATS{URL: srv.ClientURL(), Creds: credsFile(t, stranger, "stranger")}, "test"); err == nil ||
		!strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "NATS_CREDS") {
		t.Fatalf("creds of an untrusted account: %v, want refused naming NATS_CREDS", err)
	}
	if _, err := connect.NATS(config.NATS{URL: srv.ClientURL()}, "test"); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("no credentials: %v, want refused", err)
	}
}

// TestNATSURLList: with a list of cluster URLs the connection is made to
// one that answers when another is down, and the connection is set to
// reconnect forever with the package's back-off: a server stopped and
// started again on its address finds the connection back.
func TestNATSURLList(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	srv := startNATS(t, &server.Options{})
	live := hostPort(srv)
	reconnected := make(chan struct{}, 1)
	nc, err := connect.NATS(config.NATS{URL: "nats://" + dead + ",nats://" + live}, "test",
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatalf("URL list with one server down: %v", err)
	}
	defer nc.Close()
	if got := nc.ConnectedAddr(); got != live {
		t.Fatalf("connected to %s, want %s", got, live)
	}
	if nc.Opts.MaxReconnect != -1 || nc.Opts.CustomReconnectDelayCB == nil {
		t.Fatalf("MaxReconnects %d, custom delay %v: want forever with back-off", nc.Opts.MaxReconnect, nc.Opts.CustomReconnectDelayCB != nil)
	}

	port := srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv2.Start()
	t.Cleanup(srv2.Shutdown)
	if !srv2.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready again")
	}
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatalf("no reconnection to the restarted server (status %s)", nc.Status())
	}
	if !nc.IsConnected() || nc.ConnectedAddr() != live {
		t.Fatalf("after reconnection: status %s, connected to %s", nc.Status(), nc.ConnectedAddr())
	}
}
