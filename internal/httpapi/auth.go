package httpapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// Context keys set by the middleware.
const (
	ctxTenant      = "httpapi.tenant"       // string: the tenant of the request, once known
	ctxTokenTenant = "httpapi.token_tenant" // bool: the tenant comes from a bearer token
	ctxCampaign    = "httpapi.campaign"     // string: the campaign of the request, once known (logs)
)

// HeaderTenant names the tenant in development mode (no tokens configured).
const HeaderTenant = "X-Tenant-ID"

// MinTokenLength is the shortest bearer token ParseTokens accepts.
const MinTokenLength = 16

// HashToken returns the hex SHA-256 of a bearer token: the form in which
// tokens are kept in Config.Tokens and in the tokens file (API_TOKENS_FILE),
// so that the file holds no usable secret. `orchestrator token hash` prints it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ParseTokens parses API_TOKENS: comma-separated "tenant:token" pairs, with
// the tokens in clear (they are hashed here). It returns hash → tenant.
func ParseTokens(s string) (map[string]string, error) {
	out := map[string]string{}
	for i, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		tenant, token, ok := strings.Cut(pair, ":")
		tenant, token = strings.TrimSpace(tenant), strings.TrimSpace(token)
		switch {
		case !ok:
			return nil, fmt.Errorf("API_TOKENS: entry %d: want tenant:token", i+1)
		case !events.ValidToken(tenant):
			return nil, fmt.Errorf("API_TOKENS: entry %d: tenant %q must match %s", i+1, tenant, events.TokenRE)
		case len(token) < MinTokenLength:
			return nil, fmt.Errorf("API_TOKENS: entry %d (tenant %s): token shorter than %d characters", i+1, tenant, MinTokenLength)
		}
		h := HashToken(token)
		if _, dup := out[h]; dup {
			return nil, fmt.Errorf("API_TOKENS: entry %d (tenant %s): token given twice", i+1, tenant)
		}
		out[h] = tenant
	}
	return out, nil
}

// LoadTokens reads an API_TOKENS_FILE and returns hash → tenant. The file
// holds hashed tokens only, in one of two forms:
//
//   - lines "<tenant> sha256:<hex>" (or "<tenant> <hex>"), with blank lines
//     and lines starting with "#" ignored; `orchestrator token hash` prints
//     the hex of a token;
//   - a JSON object {"<hex>": "<tenant>", ...} (the form of Config.Tokens),
//     recognised by its leading "{".
//
// A tenant may have several tokens (rotation); a token belongs to one tenant.
func LoadTokens(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("API_TOKENS_FILE: %w", err)
	}
	out := map[string]string{}
	add := func(where, tenant, hash string) error {
		hash = strings.ToLower(strings.TrimPrefix(hash, "sha256:"))
		if len(hash) != sha256.Size*2 {
			return fmt.Errorf("API_TOKENS_FILE %s: %s: want sha256:<64 hex digits> (see `orchestrator token hash`)", path, where)
		}
		if _, err := hex.DecodeString(hash); err != nil {
			return fmt.Errorf("API_TOKENS_FILE %s: %s: token hash is not hex", path, where)
		}
		if !events.ValidToken(tenant) {
			return fmt.Errorf("API_TOKENS_FILE %s: %s: tenant %q must match %s", path, where, tenant, events.TokenRE)
		}
		if t, dup := out[hash]; dup && t != tenant {
			return fmt.Errorf("API_TOKENS_FILE %s: %s: the same token is given to tenants %s and %s", path, where, t, tenant)
		}
		out[hash] = tenant
		return nil
	}
	if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '{' {
		var m map[string]string
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return nil, fmt.Errorf("API_TOKENS_FILE %s: %w", path, err)
		}
		for hash, tenant := range m {
			if err := add(fmt.Sprintf("key %q", hash), tenant, hash); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("API_TOKENS_FILE %s: line %d: want \"<tenant> sha256:<hex>\"", path, n)
		}
		if err := add(fmt.Sprintf("line %d", n), f[0], f[1]); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("API_TOKENS_FILE %s: %w", path, err)
	}
	return out, nil
}

// tokenEntry is one configured token hash, as bytes for constant-time
// comparison.
type tokenEntry struct {
	hash   []byte // hex digits
	tenant string
}

// tenantOfToken returns the tenant of a presented token. It hashes the token
// and compares the hash with every entry in constant time, without stopping
// at a match, so that the time taken says nothing about which entry matched.
func (s *Server) tenantOfToken(token string) (string, bool) {
	h := []byte(HashToken(token))
	tenant, found := "", 0
	for _, e := range s.tokens {
		eq := subtle.ConstantTimeCompare(h, e.hash)
		if eq == 1 {
			tenant = e.tenant
		}
		found |= eq
	}
	return tenant, found == 1
}

// authenticate runs before every tenant-scoped route. With tokens
// configured it requires "Authorization: Bearer <token>" (401 otherwise) and
// takes the tenant from the token only; an X-Tenant-ID naming another tenant
// is 403. Without tokens (development mode) it takes X-Tenant-ID when given;
// the command endpoints may then still find the tenant in the body.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		hdr := strings.TrimSpace(c.Request().Header.Get(HeaderTenant))
		if len(s.tokens) > 0 {
			scheme, token, _ := strings.Cut(strings.TrimSpace(c.Request().Header.Get("Authorization")), " ")
			token = strings.TrimSpace(token)
			if !strings.EqualFold(scheme, "Bearer") || token == "" {
				return errorf(CodeUnauthorized, "", "a bearer token is required (Authorization: Bearer <token>)")
			}
			tenant, ok := s.tenantOfToken(token)
			if !ok {
				return errorf(CodeUnauthorized, "", "unknown bearer token")
			}
			c.Set(ctxTenant, tenant)
			c.Set(ctxTokenTenant, true)
			if hdr != "" && hdr != tenant {
				return errorf(CodeForbidden, HeaderTenant, "names another tenant than the bearer token")
			}
			return next(c)
		}
		if hdr != "" {
			if !events.ValidToken(hdr) {
				return errorf(CodeInvalid, HeaderTenant, "must match %s", events.TokenRE)
			}
			c.Set(ctxTenant, hdr)
		}
		return next(c)
	}
}

// requestTenant returns the tenant of a request without a body (GET): from
// the token, or from X-Tenant-ID in development mode.
func requestTenant(c *echo.Context) (string, error) {
	if t, _ := c.Get(ctxTenant).(string); t != "" {
		return t, nil
	}
	return "", errorf(CodeInvalid, HeaderTenant, "required: the tenant (the %s header) is not given", HeaderTenant)
}

// commandTenant returns the tenant of a command request given the body's
// tenant_id ("" when absent). With a token, a different tenant_id is 403.
// Without tokens, X-Tenant-ID and tenant_id must agree when both are given
// (400), and one of them must be.
func commandTenant(c *echo.Context, bodyTenant string) (string, error) {
	t, _ := c.Get(ctxTenant).(string)
	fromToken, _ := c.Get(ctxTokenTenant).(bool)
	switch {
	case fromToken:
		if bodyTenant != "" && bodyTenant != t {
			return "", errorf(CodeForbidden, "tenant_id", "names another tenant than the bearer token")
		}
		return t, nil
	case t != "" && bodyTenant != "" && bodyTenant != t:
		return "", errorf(CodeInvalid, "tenant_id", "differs from the %s header", HeaderTenant)
	case t != "":
		return t, nil
	case bodyTenant == "":
		return "", errorf(CodeInvalid, "tenant_id", "required: give the tenant in the %s header or as tenant_id in the body", HeaderTenant)
	case !events.ValidToken(bodyTenant):
		return "", errorf(CodeInvalid, "tenant_id", "must match %s", events.TokenRE)
	}
	c.Set(ctxTenant, bodyTenant)
	return bodyTenant, nil
}
