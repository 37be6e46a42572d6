package httpapi_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

const (
	acmeToken   = "acme-token-0123456789abcdef"
	globexToken = "globex-token-0123456789abcdef"
)

func tokenEnv(t *testing.T, k storeKind) *env {
	tokens, err := httpapi.ParseTokens("acme:" + acmeToken + ", globex:" + globexToken)
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, k.open(t), withConfig(func(c *httpapi.Config) { c.Tokens = tokens }))
}

func TestBearerTokens(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := tokenEnv(t, k)
		body := []byte(`{"campaign_id":"c1","name":"n"}`)
		for _, auth := range []string{"", "Bearer", "Bearer wrong-token-0123456789", "Basic " + acmeToken, "Bearer " + acmeToken + "x"} {
			r := e.do("POST", "/api/v1/campaigns", body, "Authorization", auth, "X-Tenant-ID", "acme")
			wantError(t, r, 401, "")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatalf("401 without WWW-Authenticate")
			}
			wantError(t, e.do("GET", "/api/v1/campaigns", nil, "Authorization", auth), 401, "")
		}
		// The tenant comes from the token only.
		accepted(t, e.do("POST", "/api/v1/campaigns", body, "Authorization", "bearer "+acmeToken))
		accepted(t, e.do("POST", "/api/v1/campaigns", []byte(`{"campaign_id":"c2","name":"n","tenant_id":"acme"}`), "Authorization", "Bearer "+acmeToken))
		wantError(t, e.do("POST", "/api/v1/campaigns", []byte(`{"campaign_id":"c3","name":"n","tenant_id":"globex"}`), "Authorization", "Bearer "+acmeToken), 403, "tenant_id")
		wantError(t, e.do("POST", "/api/v1/campaigns", body, "Authorization", "Bearer "+acmeToken, "X-Tenant-ID", "globex"), 403, "X-Tenant-ID")
		for _, m := range e.commands() {
			if env := commandEnvelope(t, m); env.TenantID != "acme" || !strings.HasPrefix(m.Subject, "campaign.cmd.acme.") {
				t.Fatalf("command for %s on %s", env.TenantID, m.Subject)
			}
		}
		if n := len(e.commands()); n != 2 {
			t.Fatalf("%d commands, want 2", n)
		}
		// Another tenant's campaign does not exist for the token's tenant.
		seed(t, e.st, "acme", "mine", fsm.Pending)
		if r := e.do("GET", "/api/v1/campaigns/mine", nil, "Authorization", "Bearer "+acmeToken); r.status != 200 {
			t.Fatalf("own campaign: %s", r)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns/mine", nil, "Authorization", "Bearer "+globexToken), 404, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns/mine/cancel", nil, "Authorization", "Bearer "+globexToken), 404, "campaign_id")
		// Operations endpoints need no token.
		for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/openapi.yaml", "/api/v1/asyncapi.yaml", "/api/v1/schemas/command.json"} {
			if r := e.do("GET", p, nil); r.status != 200 {
				t.Fatalf("GET %s: %s", p, r)
			}
		}
	})
}

func TestTokenParsing(t *testing.T) {
	// SHA-256 of "abc".
	if got := httpapi.HashToken("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("HashToken: %s", got)
	}
	m, err := httpapi.ParseTokens(" acme:" + acmeToken + " ,, globex:" + globexToken)
	if err != nil || len(m) != 2 || m[httpapi.HashToken(acmeToken)] != "acme" || m[httpapi.HashToken(globexToken)] != "globex" {
		t.Fatalf("ParseTokens: %v %v", m, err)
	}
	for _, bad := range []string{"acme", "a.b:" + acmeToken, "acme:short", "acme:" + acmeToken + ",globex:" + acmeToken} {
		if _, err := httpapi.ParseTokens(bad); err == nil || !strings.Contains(err.Error(), "API_TOKENS") {
			t.Fatalf("ParseTokens(%q): %v", bad, err)
		}
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	content := "# tenant  token hash\nacme sha256:" + httpapi.HashToken(acmeToken) + "\n\nglobex " + strings.ToUpper(httpapi.HashToken(globexToken)) + "\nacme sha256:" + httpapi.HashToken("rotated-token-0123456789") + "\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err = httpapi.LoadTokens(file)
	if err != nil || len(m) != 3 || m[httpapi.HashToken(globexToken)] != "globex" || m[httpapi.HashToken("rotated-token-0123456789")] != "acme" {
		t.Fatalf("LoadTokens: %v %v", m, err)
	}
	jsonFile := filepath.Join(dir, "tokens.json")
	_ = os.WriteFile(jsonFile, []byte(`{"`+httpapi.HashToken(acmeToken)+`":"acme"}`), 0o600)
	if m, err = httpapi.LoadTokens(jsonFile); err != nil || m[httpapi.HashToken(acmeToken)] != "acme" {
		t.Fatalf("LoadTokens JSON: %v %v", m, err)
	}
	for i, bad := range []string{
		"acme " + acmeToken + "\n",                        // a clear token, not a hash
		"acme sha256:zz" + strings.Repeat("0", 62) + "\n", // not hex
		"a.b sha256:" + httpapi.HashToken(acmeToken) + "\n",
		"acme\n",
		"acme sha256:" + httpapi.HashToken(acmeToken) + "\nglobex sha256:" + httpapi.HashToken(acmeToken) + "\n",
	} {
		f := filepath.Join(dir, "bad")
		_ = os.WriteFile(f, []byte(bad), 0o600)
		if _, err := httpapi.LoadTokens(f); err == nil || !strings.Contains(err.Error(), "API_TOKENS_FILE") {
			t.Fatalf("bad file %d: %v", i, err)
		}
	}
	if _, err := httpapi.LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}
