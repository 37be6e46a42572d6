package connect_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/store/storetest"
	"github.com/campaign-orchestrator/orchestrator/internal/tlstest"
)

// aclRules is the README's ACL for the orchestrator's Redis user with the
// key pattern given: the store needs reading, writing and scripting on its
// own keys, the connection commands, and nothing dangerous.
func aclRules(keys string) []string {
	return []string{"on", ">s3cret-pass", keys, "resetchannels", "-@all", "+@read", "+@write", "+@scripting", "+@connection", "+@keyspace", "-@dangerous", "+info", "+time"}
}

func newStore(t *testing.T, c config.Redis, prefix string) (*store.Redis, error) {
	t.Helper()
	client, err := connect.Redis(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := store.NewRedisClient(ctx, client, store.Options{Prefix: prefix, Retention: storetest.Retention})
	if err != nil {
		return nil, connect.ExplainRedis(c, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, nil
}

// TestRedisACLUser: the store's contract passes as an ACL user limited to
// the store's keys; outside them (another prefix) Redis answers NOPERM, and
// a wrong password is refused naming REDIS_URL.
func TestRedisACLUser(t *testing.T) {
	srv := redistest.NewWith(t, append([]string{"--user", "orch"}, aclRules("~test-*")...)...)
	url := "redis://orch:s3cret-pass@" + srv.Addr() + "/0"
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := newStore(t, config.Redis{URL: url}, redistest.Prefix(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	t.Run("NOPERM", func(t *testing.T) {
		s, err := newStore(t, config.Redis{URL: url}, "other")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Enqueue(t.Context(), store.Key{Tenant: "acme", Campaign: "c"}, store.Item{ID: "a", Seq: 1}, store.Claim{})
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("Enqueue outside the user's keys: %v, want NOPERM", err)
		}
		ctx := t.Context()
		client, _ := connect.Redis(config.Redis{URL: url})
		defer client.Close()
		if err := client.Set(ctx, "co:x", "1", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("SET outside the user's keys: %v, want NOPERM", err)
		}
		if err := client.FlushAll(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("FLUSHALL: %v, want NOPERM", err)
		}
	})
	t.Run("WrongPassword", func(t *testing.T) {
		_, err := newStore(t, config.Redis{URL: "redis://orch:wrong@" + srv.Addr() + "/0"}, "test-x")
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || !strings.Contains(err.Error(), "credentials") || strings.Contains(err.Error(), "wrong@") {
			t.Fatalf("wrong password: %v, want an error naming REDIS_URL and the credentials, without the password", err)
		}
	})
}

// TestRedisTLS: a redis-server with only a TLS port that verifies clients
// (--tls-auth-clients yes): rediss:// with REDIS_TLS_CA and a client
// certificate works; without the CA, without the client certificate, or
// plain redis://, it does not.
func TestRedisTLS(t *testing.T) {
	f := tlstest.New(t)
	port := redistest.FreePort(t)
	redistest.NewWith(t, "--tls-port", strconv.Itoa(port), "--tls-cert-file", f.ServerCert, "--tls-key-file", f.ServerKey,
		"--tls-ca-cert-file", f.CA, "--tls-auth-clients", "yes")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	good := config.Redis{URL: "rediss://" + addr + "/0", TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}
	s, err := newStore(t, good, "co")
	if err != nil {
		t.Fatalf("TLS with CA and client certificate: %v", err)
	}
	k := store.Key{Tenant: "acme", Campaign: "tls"}
	if _, err := s.Enqueue(t.Context(), k, store.Item{ID: "a", Seq: 1}, store.Claim{}); err != nil {
		t.Fatalf("Enqueue over TLS: %v", err)
	}
	for name, c := range map[string]config.Redis{
		"no CA":                 {URL: good.URL, TLSCert: f.ClientCert, TLSKey: f.ClientKey},
		"other CA":              {URL: good.URL, TLSCA: f.OtherCA, TLSCert: f.ClientCert, TLSKey: f.ClientKey},
		"no client certificate": {URL: good.URL, TLSCA: f.CA},
		"plain":                 {URL: "redis://" + addr + "/0"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newStore(t, c, "co")
			if err == nil {
				t.Fatal("connected")
			}
			if name != "plain" && !strings.Contains(err.Error(), "REDIS_TLS_CA") {
				t.Fatalf("error does not name REDIS_TLS_CA: %v", err)
			}
		})
	}
}

// TestRedisSentinel: with REDIS_SENTINEL_ADDRS and REDIS_MASTER_NAME the
// store finds the master through a real Sentinel.
func TestRedisSentinel(t *testing.T) {
	master := redistest.New(t)
	host, port, _ := strings.Cut(master.Addr(), ":")
	dir := t.TempDir()
	sport := redistest.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor orchestrator %s %s 1\n",
		sport, dir, filepath.Join(dir, "sentinel.log"), host, port), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := config.Redis{SentinelAddrs: []string{"127.0.0.1:" + strconv.Itoa(sport)}, MasterName: "orchestrator"}
	var s *store.Redis
	deadline := time.Now().Add(15 * time.Second)
	for s == nil {
		if s, err = newStore(t, c, "co"); err != nil && time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("through Sentinel: %v\n%s", err, b)
		}
		if s == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	k := store.Key{Tenant: "acme", Campaign: "sentinel"}
	if _, err := s.Enqueue(t.Context(), k, store.Item{ID: "a", Seq: 1}, store.Claim{}); err != nil {
		t.Fatalf("Enqueue through Sentinel: %v", err)
	}
	if ok, err := s.Applied(t.Context(), k, "a"); err != nil || ok {
		t.Fatalf("Applied: %v, %v", ok, err)
	}
	_, err = newStore(t, config.Redis{SentinelAddrs: c.SentinelAddrs, MasterName: "nobody"}, "co")
	if err == nil || !strings.Contains(err.Error(), "REDIS_SENTINEL_ADDRS") {
		t.Fatalf("unknown master: %v, want an error naming REDIS_SENTINEL_ADDRS", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
