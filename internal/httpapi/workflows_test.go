package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/docs"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

func TestWorkflowsList(t *testing.T) {
	wfs := testWorkflows{
		"standard": workflows["standard"],
		"quick": {Name: "quick", Steps: []fsm.Step{{Name: "only", URL: "http://internal-host:9/only", Timeout: 5 * time.Second,
			Retry: &fsm.RetryPolicy{MaxRetries: 3, BackoffBase: 250 * time.Millisecond, RetryOnStatus: []int{429, 503}}}}},
	}
	e := newEnv(t, storeKinds[0].open(t), func(_ *httpapi.Config, d *httpapi.Deps) { d.Workflows = wfs })
	r := e.do("GET", "/api/v1/workflows", nil, "X-Tenant-ID", "acme", "Origin", "http://localhost:3000")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("GET /api/v1/workflows: %s %v", r, r.header)
	}
	conformsToOpenAPI(t, "/api/v1/workflows", "get", r)
	var got struct {
		Default   string `json:"default"`
		Workflows []struct {
			Name  string `json:"name"`
			Steps []struct {
				Name      string `json:"name"`
				TimeoutMS int64  `json:"timeout_ms"`
				Retry     *struct {
					MaxRetries    int   `json:"max_retries"`
					BackoffBaseMS int64 `json:"backoff_base_ms"`
					RetryOnStatus []int `json:"retry_on_status"`
				} `json:"retry"`
			} `json:"steps"`
		} `json:"workflows"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Default != "standard" || len(got.Workflows) != 2 || got.Workflows[0].Name != "quick" || got.Workflows[1].Name != "standard" {
		t.Fatalf("workflows %s", r.body)
	}
	var names []string
	for _, s := range got.Workflows[1].Steps {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "validate,segment,render,schedule,dispatch" {
		t.Fatalf("standard steps %v", names)
	}
	q := got.Workflows[0].Steps[0]
	if q.Name != "only" || q.TimeoutMS != 5000 || q.Retry == nil || q.Retry.MaxRetries != 3 || q.Retry.BackoffBaseMS != 250 || fmt.Sprint(q.Retry.RetryOnStatus) != "[429 503]" {
		t.Fatalf("quick's step %+v", q)
	}
	if strings.Contains(string(r.body), "internal-host") || strings.Contains(string(r.body), "127.0.0.1") {
		t.Fatalf("step URLs are shown: %s", r.body)
	}

	// The same authentication as the campaign routes.
	wantError(t, e.do("GET", "/api/v1/workflows", nil), 400, "X-Tenant-ID")
	te := tokenEnv(t, storeKinds[0])
	wantError(t, te.do("GET", "/api/v1/workflows", nil, "X-Tenant-ID", "acme"), 401, "")
	wantError(t, te.do("GET", "/api/v1/workflows", nil, "Authorization", "Bearer "+acmeToken, "X-Tenant-ID", "globex"), 403, "X-Tenant-ID")
	if r := te.do("GET", "/api/v1/workflows", nil, "Authorization", "Bearer "+acmeToken); r.status != 200 {
		t.Fatalf("with a token: %s", r)
	}
	// A refused origin gets nothing.
	r = e.do("GET", "/api/v1/workflows", nil, "X-Tenant-ID", "acme", "Origin", "http://evil.example")
	wantError(t, r, 403, "Origin")
	noAccessControl(t, r)
}

// conformsToOpenAPI checks a live answer against the schema docs/openapi.yaml
// gives for that path, method and status (application/json): types, enums,
// required properties, and no property the schema does not name (where it
// lists properties and says nothing of additionalProperties).
func conformsToOpenAPI(t testing.TB, path, method string, r resp) {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	op, _ := dig(doc, "paths", path, method).(map[string]any)
	if op == nil {
		t.Fatalf("docs/openapi.yaml has no %s %s", method, path)
	}
	res, _ := dig(op, "responses", fmt.Sprint(r.status)).(map[string]any)
	if res == nil {
		t.Fatalf("docs/openapi.yaml: %s %s has no %d answer", method, path, r.status)
	}
	if ref, ok := res["$ref"].(string); ok {
		res = resolveRef(t, doc, ref)
	}
	schema, _ := dig(res, "content", "application/json", "schema").(map[string]any)
	if schema == nil {
		t.Fatalf("docs/openapi.yaml: %s %s %d has no application/json schema", method, path, r.status)
	}
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%s %s: not JSON: %v", method, path, err)
	}
	if err := conforms(t, doc, schema, v, "$"); err != nil {
		t.Fatalf("%s %s %d does not conform to docs/openapi.yaml: %v\n%s", method, path, r.status, err, r.body)
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func resolveRef(t testing.TB, doc map[string]any, ref string) map[string]any {
	t.Helper()
	if file, ptr, ok := strings.Cut(ref, "#"); ok && file != "" {
		// schemas/<name>.json#/<pointer>: a docs/schemas file (whose
		// referenced part must hold no reference of its own).
		b, err := fs.ReadFile(docs.Schemas, strings.TrimPrefix(file, "schemas/"))
		var ext map[string]any
		if err != nil || json.Unmarshal(b, &ext) != nil {
			t.Fatalf("docs/openapi.yaml: unresolved %s: %v", ref, err)
		}
		doc, ref = ext, ptr
	}
	m, _ := dig(doc, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...).(map[string]any)
	if m == nil {
		t.Fatalf("docs/openapi.yaml: unresolved %s", ref)
	}
	return m
}

func conforms(t testing.TB, doc, schema map[string]any, v any, at string) error {
	if ref, ok := schema["$ref"].(string); ok {
		schema = resolveRef(t, doc, ref)
	}
	if types := schemaTypes(schema["type"]); len(types) > 0 {
		ok := false
		for _, ty := range types {
			ok = ok || jsonTypeIs(ty, v)
		}
		if !ok {
			return fmt.Errorf("%s: %T is not %v", at, v, types)
		}
	}
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			found = found || fmt.Sprint(e) == fmt.Sprint(v)
		}
		if !found {
			return fmt.Errorf("%s: %v not in %v", at, v, enum)
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		for _, r := range asSlice(schema["required"]) {
			if _, ok := x[fmt.Sprint(r)]; !ok {
				return fmt.Errorf("%s: required %q missing", at, r)
			}
		}
		for k, val := range x {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if ap := schema["additionalProperties"]; props != nil && (ap == nil || ap == false) {
					return fmt.Errorf("%s: property %q is not in the schema", at, k)
				}
				continue
			}
			if err := conforms(t, doc, ps, val, at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		if items, ok := schema["items"].(map[string]any); ok {
			for i, it := range x {
				if err := conforms(t, doc, items, it, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func schemaTypes(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func jsonTypeIs(ty string, v any) bool {
	switch ty {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "number":
		_, ok := v.(float64)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	}
	return false
}
