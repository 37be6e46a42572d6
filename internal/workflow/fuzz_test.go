package workflow_test

// FuzzLoad (issue 9, part 3): the workflows file loader on any YAML or JSON
// input. Its seed corpus (minimal and maximal files, the contract's example,
// hostile inputs) is in testdata/fuzz/FuzzLoad/.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

// fuzzNameRE is what workflow and step names must match (CONTRACT section 2
// tokens; section 6).
var fuzzNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// fuzzBases are the STEPS_BASE_URL values the loader is fuzzed with.
var fuzzBases = []string{"http://steps.test:8081", "https://steps.example/api/", "", "not a url"}

const fuzzDefaultTimeout = 10 * time.Second

// FuzzLoad: Load never panics; it either returns workflows that a campaign
// can run — every name valid, at least one step, step names unique and
// non-empty, absolute http(s) URLs, positive timeouts, retry policies in
// range, exactly the workflows the file names (plus the built-in standard) —
// or an error that names the file and the problem. What it loads is a fixed
// point: the loaded workflows written back as a file load the same.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("workflows:\n  standard:\n    steps:\n      - name: validate\n"), false, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool, baseSel uint8) {
		ext := ".yaml"
		if isJSON {
			ext = ".json"
		}
		stepsBase := fuzzBases[int(baseSel)%len(fuzzBases)]
		path := filepath.Join(t.TempDir(), "workflows"+ext)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		reg, err := workflow.Load(path, stepsBase, fuzzDefaultTimeout)
		if err != nil {
			if reg != nil {
				t.Errorf("Load returned a registry with the error %v", err)
			}
			msg := err.Error()
			prefix := "workflows file " + path + ": "
			if !strings.HasPrefix(msg, prefix) || strings.TrimSpace(strings.TrimPrefix(msg, prefix)) == "" {
				t.Fatalf("error %.300q does not name the file and the problem", msg)
			}
			return
		}
		got := fuzzCheckRegistry(t, reg)

		// Exactly the workflows the file names (a workflow is never
		// dropped or renamed), plus standard when the file has none.
		if names, ok := fuzzFileWorkflowNames(data, isJSON); ok {
			if _, has := names[fsm.DefaultWorkflow]; !has {
				names[fsm.DefaultWorkflow] = struct{}{}
			}
			want := slices.Sorted(maps.Keys(names))
			if !slices.Equal(reg.Names(), want) {
				t.Fatalf("loaded workflows %q, the file names %q", reg.Names(), want)
			}
		}

		// Fixed point: write what was loaded as a JSON file and load it.
		again := filepath.Join(t.TempDir(), "again.json")
		if err := os.WriteFile(again, fuzzFile(got), 0o600); err != nil {
			t.Fatal(err)
		}
		reg2, err := workflow.Load(again, stepsBase, fuzzDefaultTimeout)
		if err != nil {
			t.Fatalf("the loaded workflows, written back, do not load: %v\n%s", err, fuzzFile(got))
		}
		if got2 := fuzzCheckRegistry(t, reg2); !reflect.DeepEqual(got, got2) {
			t.Fatalf("loading the loaded workflows again changed them:\n got %+v\nwant %+v", got2, got)
		}
	})
}

// fuzzCheckRegistry checks every workflow of reg and returns them by name.
func fuzzCheckRegistry(t *testing.T, reg *workflow.Registry) map[string]fsm.Workflow {
	t.Helper()
	out := map[string]fsm.Workflow{}
	names := reg.Names()
	if len(names) == 0 {
		t.Fatal("no workflow loaded")
	}
	for _, name := range names {
		w, ok := reg.Get(name)
		if !ok {
			t.Fatalf("Names() lists %q, Get does not find it", name)
		}
		if w.Name != name || !fuzzNameRE.MatchString(name) {
			t.Fatalf("workflow %q registered as %q", w.Name, name)
		}
		if len(w.Steps) == 0 {
			t.Fatalf("workflow %q has no step", name)
		}
		seen := map[string]bool{}
		for i, s := range w.Steps {
			where := fmt.Sprintf("workflow %q step %d (%q)", name, i+1, s.Name)
			if s.Name == "" || !fuzzNameRE.MatchString(s.Name) || seen[s.Name] {
				t.Fatalf("%s: empty, invalid or repeated name", where)
			}
			seen[s.Name] = true
			if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("%s: url %q is not an absolute http(s) URL", where, s.URL)
			}
			if s.Timeout <= 0 {
				t.Fatalf("%s: timeout %s", where, s.Timeout)
			}
			if p := s.Retry; p != nil {
				if p.MaxRetries < 0 || p.MaxRetries > 100 || p.BackoffBase < 0 ||
					(p.MaxRetries == 0 && p.BackoffBase == 0 && len(p.RetryOnStatus) == 0) {
					t.Fatalf("%s: retry policy %+v", where, *p)
				}
				codes := map[int]bool{}
				for _, c := range p.RetryOnStatus {
					if c < 400 || c > 599 || codes[c] {
						t.Fatalf("%s: retry_on_status %v", where, p.RetryOnStatus)
					}
					codes[c] = true
				}
			}
		}
		out[name] = w
	}
	return out
}

// fuzzFileWorkflowNames returns the keys of the file's "workflows" mapping
// as written (the names a campaign is created with), and false when the
// file's shape does not let them be read plainly (aliases, merge keys, a
// key that is not a scalar).
func fuzzFileWorkflowNames(data []byte, isJSON bool) (map[string]struct{}, bool) {
	names := map[string]struct{}{}
	if isJSON {
		var doc struct {
			Workflows map[string]json.RawMessage `json:"workflows"`
		}
		if json.Unmarshal(data, &doc) != nil {
			return nil, false
		}
		for n := range doc.Workflows {
			names[n] = struct{}{}
		}
		return names, true
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, false
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, false
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return nil, false
		}
		if k.Value != "workflows" {
			continue
		}
		if v.Kind != yaml.MappingNode {
			return nil, false
		}
		for j := 0; j+1 < len(v.Content); j += 2 {
			wk := v.Content[j]
			if wk.Kind != yaml.ScalarNode || wk.Tag == "!!merge" {
				return nil, false
			}
			names[wk.Value] = struct{}{}
		}
		return names, true
	}
	return nil, false
}

// fuzzFile writes workflows as a workflows file (JSON), every field explicit.
func fuzzFile(wfs map[string]fsm.Workflow) []byte {
	type retry struct {
		MaxRetries    int    `json:"max_retries,omitempty"`
		BackoffBase   string `json:"backoff_base,omitempty"`
		RetryOnStatus []int  `json:"retry_on_status,omitempty"`
	}
	type step struct {
		Name    string `json:"name"`
		URL     string `json:"url"`
		Timeout string `json:"timeout"`
		Retry   *retry `json:"retry,omitempty"`
	}
	type wf struct {
		Steps []step `json:"steps"`
	}
	file := struct {
		Workflows map[string]wf `json:"workflows"`
	}{Workflows: map[string]wf{}}
	for name, w := range wfs {
		var out wf
		for _, s := range w.Steps {
			st := step{Name: s.Name, URL: s.URL, Timeout: s.Timeout.String()}
			if p := s.Retry; p != nil {
				st.Retry = &retry{MaxRetries: p.MaxRetries, RetryOnStatus: p.RetryOnStatus}
				if p.BackoffBase > 0 {
					st.Retry.BackoffBase = p.BackoffBase.String()
				}
			}
			out.Steps = append(out.Steps, st)
		}
		file.Workflows[name] = out
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(file); err != nil {
		panic(err)
	}
	return b.Bytes()
}
