package config_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

// writeContext writes a natscli context file, as `nats context save` does,
// named name under xdg/nats/context, and returns its path.
func writeContext(t *testing.T, xdg, name string, fields map[string]any) string {
	t.Helper()
	dir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(fields, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// natsSettings resolves the NATS flag group of an operator command with
// args over vars.
func natsSettings(t *testing.T, vars map[string]string, args ...string) (config.NATS, error) {
	t.Helper()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	set := config.NewSet(fs, env(vars))
	n := config.NATSFlags(set, "nats://default:4222")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	err := set.Resolve()
	return *n, err
}

// TestNATSContext: NATS_CONTEXT names a natscli context, looked up under
// $XDG_CONFIG_HOME/nats/context (or given as a .json file), which supplies
// the URL, the user and password and the TLS files, with ~ and $VAR
// expanded in its paths as natscli does.
func TestNATSContext(t *testing.T) {
	xdg, home := t.TempDir(), t.TempDir()
	ca := filepath.Join(home, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeContext(t, xdg, "prod", map[string]any{
		"description": "production", "url": "tls://nats-1:4222,tls://nats-2:4222", "user": "worker", "password": "ctx-pass-1234",
		"ca": "~/ca.pem", "cert": "", "color_scheme": "", "tls_first": false, "windows_ca_certs_match": nil,
	})
	vars := map[string]string{"XDG_CONFIG_HOME": xdg, "HOME": home, "NATS_CONTEXT": "prod"}
	for name, vars := range map[string]map[string]string{
		"name": vars,
		"file": {"HOME": home, "NATS_CONTEXT": path},
	} {
		t.Run(name, func(t *testing.T) {
			n, err := natsSettings(t, vars)
			if err != nil {
				t.Fatal(err)
			}
			if n.URL != "tls://nats-1:4222,tls://nats-2:4222" || n.User != "worker" || string(n.Password) != "ctx-pass-1234" || n.TLSCA != ca ||
				n.Context != vars["NATS_CONTEXT"] || !slices.Equal(n.FromContext, []string{"NATS_URL", "NATS_TLS_CA"}) {
				t.Fatalf("got %+v", n)
			}
			if s := fmt.Sprintf("%v %+v %#v", n, n, n); strings.Contains(s, "ctx-pass") {
				t.Fatalf("the password shows: %s", s)
			}
			if got := n.Source("NATS_TLS_CA"); got != "the ca of NATS_CONTEXT "+vars["NATS_CONTEXT"] {
				t.Fatalf("Source(NATS_TLS_CA) = %q", got)
			}
		})
	}
	// The flag works as the variable does; a context without a url means
	// natscli's default, not the command's.
	writeContext(t, xdg, "local", map[string]any{"token": "tok-5678"})
	n, err := natsSettings(t, map[string]string{"XDG_CONFIG_HOME": xdg}, "--nats-context", "local")
	if err != nil || n.URL != "nats://127.0.0.1:4222" || string(n.Token) != "tok-5678" || n.User != "" {
		t.Fatalf("--nats-context local: %+v, %v", n, err)
	}
	// Without XDG_CONFIG_HOME, ~/.config/nats.
	writeContext(t, filepath.Join(home, ".config"), "dev", map[string]any{"url": "nats://dev:4222"})
	if n, err := natsSettings(t, map[string]string{"HOME": home, "NATS_CONTEXT": "dev"}); err != nil || n.URL != "nats://dev:4222" {
		t.Fatalf("~/.config/nats/context/dev.json: %+v, %v", n, err)
	}
	// serve: the context's url instead of the embedded server.
	c, err := config.Load(nil, env(vars), io.Discard)
	if err != nil || c.NATSURL != "tls://nats-1:4222,tls://nats-2:4222" || c.NATS.User != "worker" {
		t.Fatalf("serve with NATS_CONTEXT: %+v, %v", c.NATS, err)
	}
}

// TestNATSContextOverridden: the other NATS settings override the
// context's fields one by one, as natscli's flags override its context: the
// URL, the CA, the client certificate pair, and the way to authenticate
// (NATS_CREDS, NATS_NKEY_SEED or a user@ in NATS_URL replace the
// context's user and password).
func TestNATSContextOverridden(t *testing.T) {
	xdg, dir := t.TempDir(), t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctxCA, ctxCert, ctxKey, myCA, myCert, myKey, creds := file("ctx-ca"), file("ctx-cert"), file("ctx-key"), file("ca"), file("cert"), file("key"), file("creds")
	writeContext(t, xdg, "prod", map[string]any{"url": "nats://ctx:4222", "user": "worker", "password": "ctx-pass", "ca": ctxCA, "cert": ctxCert, "key": ctxKey})
	base := map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": "prod"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		vars  map[string]string
		args  []string
		check func(config.NATS) bool
	}{
		{"url flag", base, []string{"--nats-url", "nats://flag:4222"}, func(n config.NATS) bool {
			return n.URL == "nats://flag:4222" && n.User == "worker" && n.TLSCA == ctxCA && !slices.Contains(n.FromContext, "NATS_URL")
		}},
		{"url variable", with("NATS_URL", "nats://env:4222"), nil, func(n config.NATS) bool { return n.URL == "nats://env:4222" && n.User == "worker" }},
		{"user in url", with("NATS_URL", "nats://me:mine@env:4222"), nil, func(n config.NATS) bool { return n.User == "" && n.Password == "" }},
		{"creds", with("NATS_CREDS", creds), nil, func(n config.NATS) bool {
			return n.Creds == creds && n.User == "" && n.Password == "" && n.URL == "nats://ctx:4222" && n.Source("NATS_CREDS") == "NATS_CREDS"
		}},
		{"ca", with("NATS_TLS_CA", myCA), nil, func(n config.NATS) bool {
			return n.TLSCA == myCA && n.TLSCert == ctxCert && n.Source("NATS_TLS_CA") == "NATS_TLS_CA"
		}},
		{"cert and key", base, []string{"--nats-tls-cert", myCert, "--nats-tls-key", myKey}, func(n config.NATS) bool {
			return n.TLSCert == myCert && n.TLSKey == myKey && n.TLSCA == ctxCA
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := natsSettings(t, tc.vars, tc.args...)
			if err != nil || !tc.check(n) {
				t.Fatalf("got %+v, %v", n, err)
			}
		})
	}
}

// TestNATSContextRefused: a missing or invalid context, or one that uses
// what this service does not support (natscli's secret look-ups, a SOCKS
// proxy, a JetStream domain …), stops start-up with an error naming
// NATS_CONTEXT and never showing a password, token or seed.
func TestNATSContextRefused(t *testing.T) {
	xdg := t.TempDir()
	bad := filepath.Join(xdg, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"url": "nats://a:4222", "password": "secret-pass-1`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		fields map[string]any // nil: no file written
		ref    string
		want   string
	}{
		{"missing name", nil, "nope", "no natscli context \"nope\""},
		{"missing file", nil, filepath.Join(xdg, "nope.json"), "no such file"},
		{"not JSON", nil, bad, "is not a natscli context"},
		{"dot dot", nil, "..x", "not a context name"},
		{"op password", map[string]any{"user": "u", "password": "op://vault/nats/secret-pass-1"}, "", "op:// look-up"},
		{"env token", map[string]any{"token": "env://SECRET_TOKEN_1"}, "", "env:// look-up"},
		{"nsc creds", map[string]any{"creds": "nsc://operator/account/user"}, "", "nsc:// reference"},
		{"data nkey", map[string]any{"nkey": "data:;base64,U1VBQkNERUY="}, "", "data: reference"},
		{"legacy nsc", map[string]any{"nsc": "nsc://operator/account/user"}, "", "nsc is set"},
		{"user_jwt", map[string]any{"user_jwt": "eyJ0eXAi", "user_seed": "SUAsecret-seed-1"}, "", "user_jwt is set"},
		{"socks", map[string]any{"socks_proxy": "127.0.0.1:1080"}, "", "socks_proxy is set"},
		{"js domain", map[string]any{"jetstream_domain": "hub"}, "", "jetstream_domain is set"},
		{"inbox prefix", map[string]any{"inbox_prefix": "_I.me"}, "", "inbox_prefix is set"},
		{"tls first", map[string]any{"tls_first": true}, "", "tls_first is set"},
		{"two ways", map[string]any{"user": "u", "password": "secret-pass-1", "token": "secret-token-1"}, "", "one way to authenticate"},
		{"password alone", map[string]any{"password": "secret-pass-1"}, "", "password without user"},
		{"cert alone", map[string]any{"cert": filepath.Join(xdg, "bad.json")}, "", "cert and key go together"},
		{"missing creds", map[string]any{"creds": filepath.Join(xdg, "none.creds")}, "", "creds: stat"},
		{"bad url", map[string]any{"url": "http://u:secret-pass-1@a:80"}, "", "must be nats://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := tc.ref
			if tc.fields != nil {
				ref = strings.ReplaceAll(tc.name, " ", "-")
				writeContext(t, xdg, ref, tc.fields)
			}
			_, err := natsSettings(t, map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": ref})
			if err == nil || !strings.Contains(err.Error(), "NATS_CONTEXT (--nats-context)") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming NATS_CONTEXT with %q", err, tc.want)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "secret-") {
				t.Fatalf("the error shows a secret: %v", err)
			}
			// serve stops the same way.
			if _, err := config.Load(nil, env(map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": ref}), io.Discard); err == nil || !strings.Contains(err.Error(), "NATS_CONTEXT") {
				t.Fatalf("serve: %v", err)
			}
		})
	}
}
