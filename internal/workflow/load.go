package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// maxRetriesLimit bounds retry.max_retries.
const maxRetriesLimit = 100

// Load reads the workflows file at path (YAML for .yaml and .yml, JSON for
// .json) in the format of CONTRACT section 6 and validates it:
//
//   - only known fields (an unknown one is an error naming it);
//   - at least one workflow, each with a name matching ^[A-Za-z0-9_-]{1,64}$
//     and at least one step;
//   - step names unique within their workflow and matching the same pattern;
//   - url, when given, an absolute http(s) URL; otherwise
//     stepsBaseURL/<name>, which must then be one;
//   - timeout and retry.backoff_base positive durations written as strings
//     ("5s", "500ms"); retry.max_retries from 1 to 100; retry.retry_on_status
//     distinct statuses from 400 to 599.
//
// Steps without a timeout get defaultTimeout (when positive). When the file
// defines no "standard" workflow, the built-in one is added. Every problem
// found is reported, each naming the workflow, step and field.
func Load(path, stepsBaseURL string, defaultTimeout time.Duration) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read workflows file: %w", err)
	}
	doc, err := decode(data, filepath.Ext(path))
	if err != nil {
		return nil, fmt.Errorf("workflows file %s: %w", path, err)
	}
	l := &loader{base: stepsBaseURL, timeout: defaultTimeout}
	workflows := l.file(doc)
	if _, ok := workflows[fsm.DefaultWorkflow]; !ok && len(l.errs) == 0 {
		std := Standard(stepsBaseURL)
		for _, s := range std.Steps {
			if err := checkURL(s.URL); err != nil {
				l.errorf("built-in workflow %q: step %q: url from STEPS_BASE_URL: %v", fsm.DefaultWorkflow, s.Name, err)
				break
			}
		}
		workflows[fsm.DefaultWorkflow] = withDefaultTimeout(std, defaultTimeout)
	}
	if len(l.errs) > 0 {
		return nil, fmt.Errorf("workflows file %s: %w", path, errors.Join(l.errs...))
	}
	return &Registry{workflows: workflows}, nil
}

// decode parses data as YAML or JSON, by file extension, into plain values
// (maps, slices, strings, numbers, booleans, nil).
func decode(data []byte, ext string) (any, error) {
	switch strings.ToLower(ext) {
	case ".yaml", ".yml":
		return decodeYAML(data)
	case ".json":
		return decodeJSON(data)
	default:
		return nil, fmt.Errorf("unknown extension %q: want .yaml, .yml or .json", ext)
	}
}

func decodeYAML(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, fmt.Errorf("parse YAML: %w", err) // names the line
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse YAML: more than one document")
	}
	budget := maxYAMLNodes
	return fromYAML(&doc, &budget)
}

// maxYAMLNodes bounds the nodes fromYAML visits, aliases expanded: a file of
// nested aliases (a "billion laughs") is refused instead of expanded.
const maxYAMLNodes = 100_000

// fromYAML turns a YAML node into the values decodeJSON gives, except that
// scalars keep YAML's types. Mapping keys are taken as written: a workflow
// or step called 007, 2024_01 or 1e3 keeps that name (decoding into any
// would make numbers of them, and 1 and 01 the same key).
func fromYAML(n *yaml.Node, budget *int) (any, error) {
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("parse YAML: more than %d nodes (aliases expanded)", maxYAMLNodes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, errors.New("empty file")
		}
		return fromYAML(n.Content[0], budget)
	case yaml.AliasNode:
		return fromYAML(n.Alias, budget)
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		var merged []map[string]any // "<<: *anchor": keys written here win
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
				v, err := fromYAML(n.Content[i+1], budget)
				if err != nil {
					return nil, err
				}
				list, ok := v.([]any)
				if !ok {
					list = []any{v}
				}
				for _, x := range list {
					m, ok := x.(map[string]any)
					if !ok {
						return nil, fmt.Errorf("parse YAML: line %d: << merges a mapping", k.Line)
					}
					merged = append(merged, m)
				}
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("parse YAML: line %d: a key must be a plain value", k.Line)
			}
			if _, dup := out[k.Value]; dup {
				return nil, fmt.Errorf("parse YAML: line %d: mapping key %q already defined", k.Line, k.Value)
			}
			v, err := fromYAML(n.Content[i+1], budget)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		for _, m := range merged {
			for k, v := range m {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := fromYAML(c, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	default:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("parse YAML: line %d: %w", n.Line, err)
		}
		return v, nil
	}
}

func decodeJSON(data []byte) (any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty file")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse JSON: %w", jsonPosition(data, err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse JSON: data after the top-level value")
	}
	if err := duplicateKeys(data); err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	return doc, nil
}

// jsonPosition adds the line and column to a JSON syntax error.
func jsonPosition(data []byte, err error) error {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	off := min(int(se.Offset), len(data))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// duplicateKeys reports a key given twice in one JSON object (encoding/json
// would silently keep the last).
func duplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				if seen[k] {
					if path == "" {
						return fmt.Errorf("duplicate key %q at the top level", k)
					}
					return fmt.Errorf("duplicate key %q in %s", k, path)
				}
				seen[k] = true
				if err := walk(strings.TrimPrefix(path+"."+k, ".")); err != nil {
					return err
				}
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		default:
			return nil
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	return walk("")
}

// loader turns a decoded file into workflows, collecting every problem.
type loader struct {
	base    string
	timeout time.Duration
	errs    []error
}

func (l *loader) errorf(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

// file reads the top level: {"workflows": {name: workflow}}.
func (l *loader) file(doc any) map[string]fsm.Workflow {
	out := map[string]fsm.Workflow{}
	top, ok := asMap(doc)
	if !ok {
		l.errorf(`top level: want a mapping with "workflows", got %s`, kind(doc))
		return out
	}
	l.onlyKeys(top, "top level", "workflows")
	raw, ok := top["workflows"]
	if !ok {
		l.errorf(`top level: "workflows" is missing`)
		return out
	}
	wfs, ok := asMap(raw)
	if !ok {
		l.errorf(`"workflows": want a mapping of workflow names to workflows, got %s`, kind(raw))
		return out
	}
	if len(wfs) == 0 {
		l.errorf(`"workflows": no workflow defined`)
	}
	for _, name := range sortedKeys(wfs) {
		if w, ok := l.workflow(name, wfs[name]); ok {
			out[name] = w
		}
	}
	return out
}

// workflow reads {"steps": [step…]}.
func (l *loader) workflow(name string, v any) (fsm.Workflow, bool) {
	where := fmt.Sprintf("workflow %q", name)
	before := len(l.errs)
	if !namePattern.MatchString(name) {
		l.errorf("%s: name must match %s", where, namePattern)
	}
	m, ok := asMap(v)
	if !ok {
		l.errorf(`%s: want a mapping with "steps", got %s`, where, kind(v))
		return fsm.Workflow{}, false
	}
	l.onlyKeys(m, where, "steps")
	list, ok := m["steps"].([]any)
	switch {
	case m["steps"] == nil:
		l.errorf(`%s: "steps" is missing or empty`, where)
	case !ok:
		l.errorf(`%s: "steps": want a list, got %s`, where, kind(m["steps"]))
	case len(list) == 0:
		l.errorf(`%s: "steps" is empty: want at least one step`, where)
	}
	w := fsm.Workflow{Name: name}
	seen := map[string]int{}
	for i, sv := range list {
		s := l.step(where, i+1, sv)
		if s.Name != "" {
			if first, dup := seen[s.Name]; dup {
				l.errorf("%s: step %d: name %q already used by step %d", where, i+1, s.Name, first)
			}
			seen[s.Name] = i + 1
		}
		w.Steps = append(w.Steps, s)
	}
	return w, len(l.errs) == before
}

// step reads one step.
func (l *loader) step(workflow string, n int, v any) fsm.Step {
	m, ok := asMap(v)
	if !ok {
		l.errorf("%s: step %d: want a mapping with name, url, timeout, retry; got %s", workflow, n, kind(v))
		return fsm.Step{}
	}
	var s fsm.Step
	where := fmt.Sprintf("%s: step %d", workflow, n)
	switch name, ok := m["name"].(string); {
	case m["name"] == nil:
		l.errorf("%s: name is missing", where)
	case !ok:
		l.errorf("%s: name: want a string, got %s", where, kind(m["name"]))
	case !namePattern.MatchString(name):
		l.errorf("%s: name %q must match %s", where, name, namePattern)
	default:
		s.Name = name
		where = fmt.Sprintf("%s (%q)", where, name)
	}
	l.onlyKeys(m, where, "name", "url", "timeout", "retry")

	switch u, ok := m["url"].(string); {
	case m["url"] == nil:
		if s.Name != "" {
			s.URL = stepURL(l.base, s.Name)
			if err := checkURL(s.URL); err != nil {
				l.errorf("%s: url: none given, and the default from STEPS_BASE_URL %q is invalid: %v", where, l.base, err)
			}
		}
	case !ok:
		l.errorf("%s: url: want a string, got %s", where, kind(m["url"]))
	default:
		if err := checkURL(u); err != nil {
			l.errorf("%s: url: want an absolute http(s) URL: %v", where, err)
		}
		s.URL = u
	}

	s.Timeout = l.timeout
	if v, ok := m["timeout"]; ok && v != nil {
		s.Timeout = l.duration(where+": timeout", v)
	}
	if v, ok := m["retry"]; ok && v != nil {
		s.Retry = l.retry(where, v)
	}
	return s
}

// retry reads {max_retries, backoff_base, retry_on_status}.
func (l *loader) retry(step string, v any) *fsm.RetryPolicy {
	where := step + ": retry"
	m, ok := asMap(v)
	if !ok {
		l.errorf("%s: want a mapping with max_retries, backoff_base, retry_on_status; got %s", where, kind(v))
		return nil
	}
	l.onlyKeys(m, where, "max_retries", "backoff_base", "retry_on_status")
	var p fsm.RetryPolicy
	if v, ok := m["max_retries"]; ok && v != nil {
		n, ok := integer(v)
		switch {
		case !ok:
			l.errorf("%s.max_retries: want an integer, got %s", where, kind(v))
		case n < 1 || n > maxRetriesLimit:
			l.errorf("%s.max_retries: %d is out of range 1..%d (omit it for the default, STEP_MAX_RETRIES)", where, n, maxRetriesLimit)
		default:
			p.MaxRetries = int(n)
		}
	}
	if v, ok := m["backoff_base"]; ok && v != nil {
		p.BackoffBase = l.duration(where+".backoff_base", v)
	}
	if v, ok := m["retry_on_status"]; ok && v != nil {
		list, ok := v.([]any)
		if !ok {
			l.errorf("%s.retry_on_status: want a list of HTTP statuses, got %s", where, kind(v))
		}
		for _, sv := range list {
			code, ok := integer(sv)
			switch {
			case !ok:
				l.errorf("%s.retry_on_status: want integers, got %s", where, kind(sv))
			case code < 400 || code > 599:
				l.errorf("%s.retry_on_status: %d is not a status from 400 to 599", where, code)
			case slices.Contains(p.RetryOnStatus, int(code)):
				l.errorf("%s.retry_on_status: %d is listed twice", where, code)
			default:
				p.RetryOnStatus = append(p.RetryOnStatus, int(code))
			}
		}
	}
	if p.MaxRetries == 0 && p.BackoffBase == 0 && len(p.RetryOnStatus) == 0 {
		return nil
	}
	return &p
}

// duration reads a positive duration written as a string; field names it
// with its place.
func (l *loader) duration(field string, v any) time.Duration {
	s, ok := v.(string)
	if !ok {
		l.errorf(`%s: want a duration string such as "5s" or "500ms", got %s`, field, kind(v))
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		l.errorf(`%s: %q is not a duration such as "5s" or "500ms"`, field, s)
		return 0
	}
	if d <= 0 {
		l.errorf("%s: %s must be positive", field, s)
		return 0
	}
	return d
}

// onlyKeys reports the keys of m that are not in known.
func (l *loader) onlyKeys(m map[string]any, where string, known ...string) {
	for _, k := range sortedKeys(m) {
		if !slices.Contains(known, k) {
			l.errorf("%s: unknown field %q (known: %s)", where, k, strings.Join(known, ", "))
		}
	}
}

// asMap returns v as a map with string keys (YAML gives map[any]any when a
// key is not a string).
func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[fmt.Sprint(k)] = x
		}
		return out, true
	}
	return nil, false
}

// integer returns v as an integer: a YAML int or a JSON number without a
// fraction.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	}
	return 0, false
}

// kind names the type of a decoded value for error messages.
func kind(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %t", x)
	case int, int64, uint64, float64, json.Number:
		return fmt.Sprintf("the number %v", x)
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a mapping"
	}
	return fmt.Sprintf("a %T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
