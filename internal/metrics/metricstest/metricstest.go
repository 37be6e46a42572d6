// Package metricstest reads Prometheus metrics the way a scraper does, for
// tests: it renders a registry (or fetches a /metrics URL) in the text
// exposition format, parses it, and answers values by name and labels. It
// is for _test files only.
package metricstest

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sample is one line of the exposition: a series and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Scrape is one parsed exposition.
type Scrape struct {
	Samples []Sample
	// Types maps each family name (from its # TYPE line) to its type.
	Types map[string]string
}

// Gather renders g as promhttp serves it at /metrics and parses the answer.
func Gather(tb testing.TB, g prometheus.Gatherer) *Scrape {
	tb.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		tb.Fatalf("metricstest: /metrics answered %d: %s", rec.Code, rec.Body)
	}
	s, err := Parse(rec.Body)
	if err != nil {
		tb.Fatalf("metricstest: %v", err)
	}
	return s
}

// Get fetches url (a /metrics endpoint) and parses the answer.
func Get(tb testing.TB, url string) *Scrape {
	tb.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		tb.Fatalf("metricstest: GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		tb.Fatalf("metricstest: GET %s: %d %s", url, resp.StatusCode, b)
	}
	s, err := Parse(resp.Body)
	if err != nil {
		tb.Fatalf("metricstest: GET %s: %v", url, err)
	}
	return s
}

// Parse reads the Prometheus text exposition format (version 0.0.4).
func Parse(r io.Reader) (*Scrape, error) {
	s := &Scrape{Types: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "TYPE" {
				s.Types[f[2]] = f[3]
			}
			continue
		}
		smp, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		s.Samples = append(s.Samples, smp)
	}
	return s, sc.Err()
}

func parseSample(line string) (Sample, error) {
	smp := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return smp, fmt.Errorf("no value")
	}
	smp.Name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, ", ")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.Index(line, `="`)
			if eq <= 0 {
				return smp, fmt.Errorf("bad label")
			}
			name := line[:eq]
			line = line[eq+2:]
			var val strings.Builder
			j := 0
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(line[j])
					}
					continue
				}
				val.WriteByte(line[j])
			}
			if j == len(line) {
				return smp, fmt.Errorf("unterminated label value")
			}
			smp.Labels[name] = val.String()
			line = line[j+1:]
		}
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return smp, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return smp, fmt.Errorf("value: %w", err)
	}
	smp.Value = v
	return smp, nil
}

// match reports whether smp is name with every label pair of kv (name,
// value, name, value…).
func match(smp Sample, name string, kv []string) bool {
	if smp.Name != name {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if smp.Labels[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// Sum returns the sum of the samples of name that carry the label pairs kv
// (name, value, …): the value of one series when kv names it completely, an
// aggregate otherwise; 0 when none matches.
func (s *Scrape) Sum(name string, kv ...string) float64 {
	var sum float64
	for _, smp := range s.Samples {
		if match(smp, name, kv) {
			sum += smp.Value
		}
	}
	return sum
}

// Has reports whether a sample of name with the label pairs kv exists.
func (s *Scrape) Has(name string, kv ...string) bool {
	for _, smp := range s.Samples {
		if match(smp, name, kv) {
			return true
		}
	}
	return false
}

// Names returns the sample names exposed (histograms as name_bucket,
// name_sum and name_count), sorted.
func (s *Scrape) Names() []string {
	set := map[string]bool{}
	for _, smp := range s.Samples {
		set[smp.Name] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// LabelValues returns the values the label takes in the samples of name,
// sorted.
func (s *Scrape) LabelValues(name, label string) []string {
	set := map[string]bool{}
	for _, smp := range s.Samples {
		if v, ok := smp.Labels[label]; ok && smp.Name == name {
			set[v] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
