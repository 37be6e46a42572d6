package workflow_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

const base = "http://steps.test:8081"

// mustWrite writes content to a file named name in a temporary directory.
func mustWrite(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func standardWith(timeout time.Duration) fsm.Workflow {
	w := workflow.Standard(base)
	for i := range w.Steps {
		w.Steps[i].Timeout = timeout
	}
	return w
}

func TestStandard(t *testing.T) {
	for _, b := range []string{"http://steps:8081", "http://steps:8081/"} {
		w := workflow.Standard(b)
		var got []string
		for _, s := range w.Steps {
			got = append(got, s.URL)
			if s.Timeout != 0 || s.Retry != nil {
				t.Errorf("step %s has its own policy: %+v", s.Name, s)
			}
		}
		want := []string{
			"http://steps:8081/validate", "http://steps:8081/segment", "http://steps:8081/render",
			"http://steps:8081/schedule", "http://steps:8081/dispatch",
		}
		if w.Name != "standard" || !reflect.DeepEqual(got, want) {
			t.Errorf("Standard(%q) = %s %v, want standard %v", b, w.Name, got, want)
		}
	}
}

func TestDefault(t *testing.T) {
	r := workflow.Default(base)
	if got := r.Names(); !reflect.DeepEqual(got, []string{"standard"}) {
		t.Errorf("Names() = %v, want [standard]", got)
	}
	got, ok := r.Get("standard")
	if !ok || !reflect.DeepEqual(got, workflow.Standard(base)) {
		t.Errorf("Get(standard) = %+v, %t", got, ok)
	}
	if _, ok := r.Get("nope"); ok {
		t.Error("Get(nope) found a workflow")
	}
}

func TestLoad(t *testing.T) {
	const timeout = 10 * time.Second
	validate := fsm.Step{
		Name: "validate", URL: "http://validator:8080/validate", Timeout: 5 * time.Second,
		Retry: &fsm.RetryPolicy{MaxRetries: 2, BackoffBase: 500 * time.Millisecond, RetryOnStatus: []int{429, 503}},
	}
	for _, tc := range []struct {
		name, file, content string
		want                map[string]fsm.Workflow
	}{
		{
			name: "contract example, YAML",
			file: "workflows.yaml",
			content: `
workflows:
  standard:
    steps:
      - name: validate            # unique within the workflow
        url: http://validator:8080/validate   # optional: default STEPS_BASE_URL/<name>
        timeout: 5s               # optional: default STEP_TIMEOUT
        retry: {max_retries: 2, backoff_base: 500ms, retry_on_status: [429, 503]}   # optional
      - name: segment
`,
			want: map[string]fsm.Workflow{"standard": {Name: "standard", Steps: []fsm.Step{
				validate,
				{Name: "segment", URL: base + "/segment", Timeout: timeout},
			}}},
		},
		{
			// Keys are names as written, never YAML numbers or dates.
			name: "names that YAML would read as numbers",
			file: "workflows.yaml",
			content: `
workflows:
  007:
    steps: [{name: "1e3"}]
  "7":
    steps: [{name: "2024_01"}]
`,
			want: map[string]fsm.Workflow{
				"007": {Name: "007", Steps: []fsm.Step{{Name: "1e3", URL: base + "/1e3", Timeout: timeout}}},
				"7":   {Name: "7", Steps: []fsm.Step{{Name: "2024_01", URL: base + "/2024_01", Timeout: timeout}}},
				"standard": func() fsm.Workflow { // the built-in one, with the file's default timeout
					w := workflow.Standard(base)
					for i := range w.Steps {
						w.Steps[i].Timeout = timeout
					}
					return w
				}(),
			},
		},
		{
			name: "anchors and merge keys",
			file: "workflows.yaml",
			content: `
workflows:
  base:
    steps:
      - &validate {name: validate, url: http://validator:8080/validate, timeout: 5s,
                   retry: {max_retries: 2, backoff_base: 500ms, retry_on_status: [429, 503]}}
  standard:
    steps:
      - <<: *validate
      - {name: segment}
`,
			want: map[string]fsm.Workflow{
				"base": {Name: "base", Steps: []fsm.Step{validate}},
				"standard": {Name: "standard", Steps: []fsm.Step{
					validate,
					{Name: "segment", URL: base + "/segment", Timeout: timeout},
				}},
			},
		},
		{
			name: "same in JSON",
			file: "workflows.json",
			content: `{"workflows": {"standard": {"steps": [
  {"name": "validate", "url": "http://validator:8080/validate", "timeout": "5s",
   "retry": {"max_retries": 2, "backoff_base": "500ms", "retry_on_status": [429, 503]}},
  {"name": "segment"}]}}}`,
			want: map[string]fsm.Workflow{"standard": {Name: "standard", Steps: []fsm.Step{
				validate,
				{Name: "segment", URL: base + "/segment", Timeout: timeout},
			}}},
		},
		{
			name: "no standard: the built-in one is added",
			file: "w.yml",
			content: `
workflows:
  quick_send:
    steps:
      - {name: render, timeout: 1m30s}
      - name: dispatch
        url: https://mailer.example/send
        retry: {retry_on_status: [502]}
`,
			want: map[string]fsm.Workflow{
				"quick_send": {Name: "quick_send", Steps: []fsm.Step{
					{Name: "render", URL: base + "/render", Timeout: 90 * time.Second},
					{Name: "dispatch", URL: "https://mailer.example/send", Timeout: timeout,
						Retry: &fsm.RetryPolicy{RetryOnStatus: []int{502}}},
				}},
				"standard": standardWith(timeout),
			},
		},
		{
			name:    "empty retry is no policy",
			file:    "w.YAML",
			content: "workflows:\n  a:\n    steps:\n      - name: x\n        retry: {}\n",
			want: map[string]fsm.Workflow{
				"a":        {Name: "a", Steps: []fsm.Step{{Name: "x", URL: base + "/x", Timeout: timeout}}},
				"standard": standardWith(timeout),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := workflow.Load(mustWrite(t, tc.file, tc.content), base, timeout)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var wantNames []string
			for n := range tc.want {
				wantNames = append(wantNames, n)
			}
			if got := r.Names(); !sameSet(got, wantNames) {
				t.Errorf("Names() = %v, want %v", got, wantNames)
			}
			for name, want := range tc.want {
				got, ok := r.Get(name)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("Get(%q) =\n%+v, %t\nwant\n%+v", name, got, ok, want)
				}
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range b {
		found := false
		for _, y := range a {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

func TestLoadErrors(t *testing.T) {
	// steps wraps one step's YAML in a workflow "w".
	steps := func(s string) string { return "workflows:\n  w:\n    steps:\n" + s }
	for _, tc := range []struct {
		name, file, content string
		base                string
		want                []string // substrings of the error
	}{
		{name: "unknown extension", file: "w.toml", content: "x", want: []string{`unknown extension ".toml"`}},
		{name: "empty YAML", file: "w.yaml", content: "", want: []string{"empty file"}},
		{name: "empty JSON", file: "w.json", content: " \n", want: []string{"empty file"}},
		{name: "YAML syntax", file: "w.yaml", content: "workflows: [\n", want: []string{"parse YAML", "line"}},
		{name: "JSON syntax", file: "w.json", content: "{\n\"workflows\": {,}}", want: []string{"parse JSON", "line 2"}},
		{name: "JSON trailing data", file: "w.json", content: `{"workflows": {}} {}`, want: []string{"after the top-level value"}},
		{name: "YAML two documents", file: "w.yaml", content: "workflows: {}\n---\nx: 1\n", want: []string{"more than one document"}},
		{name: "YAML duplicate key", file: "w.yaml", content: steps("      - name: a\n        name: b\n"), want: []string{`"name" already defined`}},
		{name: "JSON duplicate workflow", file: "w.json",
			content: `{"workflows": {"w": {"steps": [{"name": "a"}]}, "w": {"steps": [{"name": "b"}]}}}`,
			want:    []string{`duplicate key "w"`}},
		{name: "top level not a mapping", file: "w.yaml", content: "- a\n", want: []string{"top level: want a mapping"}},
		{name: "unknown top-level field", file: "w.yaml", content: "workflow:\n  w: {}\n",
			want: []string{`top level: unknown field "workflow"`, `"workflows" is missing`}},
		{name: "no workflow", file: "w.yaml", content: "workflows: {}\n", want: []string{"no workflow defined"}},
		{name: "bad workflow name", file: "w.yaml", content: "workflows:\n  a.b:\n    steps: [{name: x}]\n",
			want: []string{`workflow "a.b": name must match`}},
		{name: "unknown workflow field", file: "w.yaml", content: "workflows:\n  w:\n    stepz: []\n",
			want: []string{`workflow "w": unknown field "stepz"`, `workflow "w": "steps" is missing`}},
		{name: "no steps", file: "w.yaml", content: "workflows:\n  w:\n    steps: []\n", want: []string{`workflow "w": "steps" is empty`}},
		{name: "steps not a list", file: "w.yaml", content: "workflows:\n  w:\n    steps: {name: x}\n",
			want: []string{`workflow "w": "steps": want a list, got a mapping`}},
		{name: "step without name", file: "w.yaml", content: steps("      - url: http://x/y\n"),
			want: []string{`workflow "w": step 1: name is missing`}},
		{name: "bad step name", file: "w.yaml", content: steps("      - name: bad name\n"),
			want: []string{`workflow "w": step 1: name "bad name" must match`}},
		{name: "duplicate step name", file: "w.yaml", content: steps("      - name: a\n      - name: b\n      - name: a\n"),
			want: []string{`workflow "w": step 3: name "a" already used by step 1`}},
		{name: "unknown step field", file: "w.yaml", content: steps("      - name: a\n        timout: 5s\n"),
			want: []string{`workflow "w": step 1 ("a"): unknown field "timout" (known: name, url, timeout, retry)`}},
		{name: "unknown step field in JSON", file: "w.json",
			content: `{"workflows": {"w": {"steps": [{"name": "a", "URL": "http://x/a"}]}}}`,
			want:    []string{`workflow "w": step 1 ("a"): unknown field "URL"`}},
		{name: "relative url", file: "w.yaml", content: steps("      - name: a\n        url: /a\n"),
			want: []string{`workflow "w": step 1 ("a"): url: want an absolute http(s) URL`}},
		{name: "ftp url", file: "w.yaml", content: steps("      - name: a\n        url: ftp://x/a\n"),
			want: []string{`step 1 ("a"): url: want an absolute http(s) URL: "ftp://x/a" is not an http(s) URL`}},
		{name: "bad STEPS_BASE_URL", file: "w.yaml", content: steps("      - name: a\n"), base: "steps:8081",
			want: []string{`step 1 ("a"): url: none given, and the default from STEPS_BASE_URL "steps:8081" is invalid`}},
		{name: "bad STEPS_BASE_URL for the built-in workflow", file: "w.yaml",
			content: steps("      - {name: a, url: 'http://x/a'}\n"), base: "ftp://steps",
			want: []string{`built-in workflow "standard": step "validate": url from STEPS_BASE_URL`}},
		{name: "timeout without unit", file: "w.yaml", content: steps("      - name: a\n        timeout: \"5\"\n"),
			want: []string{`step 1 ("a"): timeout: "5" is not a duration`}},
		{name: "timeout as a number", file: "w.yaml", content: steps("      - name: a\n        timeout: 5\n"),
			want: []string{`step 1 ("a"): timeout: want a duration string such as "5s" or "500ms", got the number 5`}},
		{name: "timeout as a JSON number", file: "w.json", content: `{"workflows": {"w": {"steps": [{"name": "a", "timeout": 5}]}}}`,
			want: []string{`step 1 ("a"): timeout: want a duration string`}},
		{name: "negative timeout", file: "w.yaml", content: steps("      - name: a\n        timeout: -1s\n"),
			want: []string{`step 1 ("a"): timeout: -1s must be positive`}},
		{name: "zero timeout", file: "w.yaml", content: steps("      - name: a\n        timeout: 0s\n"),
			want: []string{`timeout: 0s must be positive`}},
		{name: "retry not a mapping", file: "w.yaml", content: steps("      - name: a\n        retry: 3\n"),
			want: []string{`step 1 ("a"): retry: want a mapping`}},
		{name: "unknown retry field", file: "w.yaml", content: steps("      - name: a\n        retry: {retries: 3}\n"),
			want: []string{`step 1 ("a"): retry: unknown field "retries"`}},
		{name: "bad backoff_base", file: "w.yaml", content: steps("      - name: a\n        retry: {backoff_base: soon}\n"),
			want: []string{`step 1 ("a"): retry.backoff_base: "soon" is not a duration`}},
		{name: "max_retries 0", file: "w.yaml", content: steps("      - name: a\n        retry: {max_retries: 0}\n"),
			want: []string{`retry.max_retries: 0 is out of range 1..100`}},
		{name: "max_retries too big", file: "w.yaml", content: steps("      - name: a\n        retry: {max_retries: 101}\n"),
			want: []string{`retry.max_retries: 101 is out of range`}},
		{name: "max_retries fraction", file: "w.json", content: `{"workflows": {"w": {"steps": [{"name": "a", "retry": {"max_retries": 1.5}}]}}}`,
			want: []string{`retry.max_retries: want an integer, got the number 1.5`}},
		{name: "status below 400", file: "w.yaml", content: steps("      - name: a\n        retry: {retry_on_status: [200]}\n"),
			want: []string{`retry.retry_on_status: 200 is not a status from 400 to 599`}},
		{name: "status above 599", file: "w.yaml", content: steps("      - name: a\n        retry: {retry_on_status: [600]}\n"),
			want: []string{`600 is not a status from 400 to 599`}},
		{name: "status as a string", file: "w.yaml", content: steps("      - name: a\n        retry: {retry_on_status: [\"503\"]}\n"),
			want: []string{`retry.retry_on_status: want integers, got the string "503"`}},
		{name: "status twice", file: "w.yaml", content: steps("      - name: a\n        retry: {retry_on_status: [503, 503]}\n"),
			want: []string{`503 is listed twice`}},
		{name: "every problem reported", file: "w.yaml",
			content: "workflows:\n  w:\n    steps:\n      - {name: a, timeout: x}\n  v:\n    steps:\n      - {name: b, url: /b}\n",
			want:    []string{`workflow "w": step 1 ("a"): timeout`, `workflow "v": step 1 ("b"): url`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			if tc.base != "" {
				b = tc.base
			}
			path := mustWrite(t, tc.file, tc.content)
			r, err := workflow.Load(path, b, time.Second)
			if err == nil {
				t.Fatalf("Load = %v, want an error", r.Names())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file %s:\n%v", path, err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := workflow.Load(filepath.Join(t.TempDir(), "nope.yaml"), base, 0)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestGetReturnsACopy(t *testing.T) {
	path := mustWrite(t, "w.yaml", "workflows:\n  w:\n    steps:\n      - {name: a, retry: {retry_on_status: [503]}}\n")
	r, err := workflow.Load(path, base, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := r.Get("w")
	w.Steps[0].Name = "changed"
	w.Steps[0].Retry.RetryOnStatus[0] = 500
	again, _ := r.Get("w")
	if again.Steps[0].Name != "a" || again.Steps[0].Retry.RetryOnStatus[0] != 503 {
		t.Errorf("registry changed through a returned copy: %+v", again.Steps[0])
	}
	if got := r.Names(); !reflect.DeepEqual(got, []string{"standard", "w"}) {
		t.Errorf("Names() = %v, want [standard w]", got)
	}
}
