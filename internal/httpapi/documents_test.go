package httpapi_test

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/docs"
)

// The ingress serves the AsyncAPI document and the JSON Schemas both
// documents refer to (as schemas/<name>, relative to /api/v1/), without
// authentication; nothing else of the file system.
func TestDocumentsServed(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	r := e.do("GET", "/api/v1/asyncapi.yaml", nil)
	if r.status != 200 || string(r.body) != string(docs.AsyncAPI) || !strings.Contains(r.header.Get("Content-Type"), "yaml") {
		t.Fatalf("GET /api/v1/asyncapi.yaml: %d %q", r.status, r.header.Get("Content-Type"))
	}
	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
	}
	if err := yaml.Unmarshal(r.body, &doc); err != nil || doc.AsyncAPI != "3.0.0" {
		t.Fatalf("asyncapi %q %v", doc.AsyncAPI, err)
	}
	// Every schema a document refers to is served where the reference
	// points.
	for _, src := range [][]byte{docs.AsyncAPI, docs.OpenAPI} {
		for _, ref := range schemaRefs(string(src)) {
			r := e.do("GET", "/api/v1/"+ref, nil)
			want, err := fs.ReadFile(docs.Schemas, strings.TrimPrefix(ref, "schemas/"))
			if err != nil {
				t.Fatalf("a document refers to %s, which docs/schemas does not hold", ref)
			}
			if r.status != 200 || string(r.body) != string(want) || r.header.Get("Content-Type") != "application/schema+json" || !json.Valid(r.body) {
				t.Fatalf("GET /api/v1/%s: %d %q", ref, r.status, r.header.Get("Content-Type"))
			}
		}
	}
	for _, p := range []string{"/api/v1/schemas/nope.json", "/api/v1/schemas/..%2fopenapi.yaml", "/api/v1/schemas/docs.go", "/api/v1/schemas/%2e%2e"} {
		wantError(t, e.do("GET", p, nil), 404, "")
	}
}

// schemaRefs lists the distinct schemas/<file>.json a document refers to.
func schemaRefs(doc string) []string {
	seen := map[string]bool{}
	var out []string
	for _, part := range strings.Split(doc, "schemas/")[1:] {
		end := strings.Index(part, ".json")
		if end < 0 || strings.ContainsAny(part[:end], " '\"/#") {
			continue
		}
		ref := "schemas/" + part[:end] + ".json"
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	return out
}
