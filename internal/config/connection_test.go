package config_test

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

func TestConnectionSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load([]string{"--role", "worker"}, env(map[string]string{
		"NATS_URL": "tls://a:4222,tls://b:4222", "NATS_CREDS": file, "NATS_TLS_CA": file,
		"REDIS_URL": "rediss://orch:pw@redis.internal/0", "REDIS_CLUSTER_ADDRS": "10.0.0.1:6379, 10.0.0.2:6379", "REDIS_TLS_CA": file,
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != c.NATSURL || c.NATS.Creds != file || c.NATS.TLSCA != file ||
		!slices.Equal(c.Redis.ClusterAddrs, []string{"10.0.0.1:6379", "10.0.0.2:6379"}) || c.Redis.TLSCA != file {
		t.Fatalf("got %+v %+v", c.NATS, c.Redis)
	}
	// Sentinel or Cluster alone is a shared store for the split roles.
	if _, err := config.Load([]string{"--role", "ingress"}, env(map[string]string{"REDIS_SENTINEL_ADDRS": "127.0.0.1:26379", "REDIS_MASTER_NAME": "m"}), io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NATS_URL": "nats://a:4222", "NATS_CREDS": "/does/not/exist.creds"}, "NATS_CREDS"},
		{map[string]string{"NATS_URL": "nats://a:4222", "NATS_CREDS": file, "NATS_NKEY_SEED": file}, "NATS_NKEY_SEED"},
		{map[string]string{"NATS_URL": "nats://a:4222", "NATS_TLS_CERT": file}, "NATS_TLS_CERT"},
		{map[string]string{"NATS_CREDS": file}, "NATS_URL"},
		{map[string]string{"NATS_URL": "nats://a:4222,http://b"}, "NATS_URL"},
		{map[string]string{"REDIS_SENTINEL_ADDRS": "a:1"}, "REDIS_MASTER_NAME"},
		{map[string]string{"REDIS_MASTER_NAME": "m"}, "REDIS_MASTER_NAME"},
		{map[string]string{"REDIS_SENTINEL_ADDRS": "nohost", "REDIS_MASTER_NAME": "m"}, "REDIS_SENTINEL_ADDRS"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "a:1", "REDIS_SENTINEL_ADDRS": "b:1", "REDIS_MASTER_NAME": "m"}, "REDIS_CLUSTER_ADDRS"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "a:99999"}, "REDIS_CLUSTER_ADDRS"},
		{map[string]string{"REDIS_URL": "redis://a:6379/0", "REDIS_TLS_CA": file}, "REDIS_TLS_CA"},
		{map[string]string{"REDIS_URL": "rediss://a:6379/0", "REDIS_TLS_KEY": file}, "REDIS_TLS_CERT"},
	} {
		if _, err := config.Load(nil, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v: error %v, want one naming %s", tc.env, err, tc.want)
		}
	}
}

func TestSentinelPasswordNeverShown(t *testing.T) {
	var usage bytes.Buffer
	c, err := config.Load([]string{"-h"}, env(map[string]string{"REDIS_SENTINEL_PASSWORD": "hunter2-sentinel"}), &usage)
	if err == nil {
		t.Fatalf("-h: %+v", c)
	}
	if strings.Contains(usage.String(), "hunter2") {
		t.Fatalf("--help shows the sentinel password:\n%s", usage.String())
	}
}

func TestNATSFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	set := config.NewSet(fs, env(map[string]string{"NATS_URL": "nats://env:4222", "NATS_TLS_CA": "/does/not/exist"}))
	config.NATSFlags(set, "nats://default:4222")
	if err := fs.Parse([]string{"--nats-url", "nats://u:p@flag:4222"}); err != nil {
		t.Fatal(err)
	}
	if err := set.Resolve(); err == nil || !strings.Contains(err.Error(), "NATS_TLS_CA") {
		t.Fatalf("missing CA file: %v", err)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	set = config.NewSet(fs, env(nil))
	n := config.NATSFlags(set, "nats://default:4222")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := set.Resolve(); err != nil || n.URL != "nats://default:4222" {
		t.Fatalf("default: %+v, %v", n, err)
	}
	if got := (config.NATS{URL: "nats://u:secret@a:4222, nats://tok@b:4222,nats://c:4222"}).String(); strings.Contains(got, "secret") || strings.Contains(got, "tok@") || !strings.Contains(got, "c:4222") {
		t.Fatalf("String() = %q", got)
	}
}
