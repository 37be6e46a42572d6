package main

import (
	"bufio"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

// envExample reads deploy/systemd/orchestrator.env.example: the settings it
// sets, and (commented) the ingress-only ones it shows.
func envExample(t *testing.T) (set, ingress map[string]string) {
	t.Helper()
	f, err := os.Open("../../deploy/systemd/orchestrator.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set, ingress = map[string]string{}, map[string]string{}
	line := regexp.MustCompile(`^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$`)
	inIngress := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "# Ingress only") {
			inIngress = true
		}
		m := line.FindStringSubmatch(sc.Text())
		switch {
		case m == nil:
		case m[1] == "":
			set[m[2]] = m[3]
		case inIngress:
			ingress[m[2]] = m[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set, ingress
}

// TestDeployFiles: deploy/systemd's units start `orchestrator serve` with
// flags serve accepts, and with the example environment file's settings
// (its files stood in for by real ones) serve's configuration loads for
// both roles; every variable the file sets or shows is one of serve's
// settings; the units pass systemd-analyze verify where it is installed.
func TestDeployFiles(t *testing.T) {
	set, ingress := envExample(t)
	if len(set) < 8 || len(ingress) < 5 {
		t.Fatalf("read %d settings and %d ingress settings from the example", len(set), len(ingress))
	}
	var help strings.Builder
	if err := run(t.Context(), []string{"serve", "--help"}, func(string) string { return "" }, &help, &help); err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve --help: %v", err)
	}
	for _, m := range []map[string]string{set, ingress} {
		for k := range m {
			if !regexp.MustCompile(`\b` + k + `\b`).MatchString(help.String()) {
				t.Errorf("the example sets %s, which is not a setting of serve", k)
			}
		}
	}
	// Paths under /etc/campaign-orchestrator stand for files a deployment
	// provides: here, existing ones of the same kind.
	dir := t.TempDir()
	stand := func(env map[string]string) func(string) string {
		return func(k string) string {
			v := env[k]
			if !strings.HasPrefix(v, "/etc/") {
				return v
			}
			p := filepath.Join(dir, filepath.Base(v))
			body := ""
			switch k {
			case "WORKFLOWS_FILE":
				b, err := os.ReadFile("../../examples/workflows.yaml")
				if err != nil {
					t.Fatal(err)
				}
				body = string(b)
			case "API_TOKENS_FILE":
				body = "acme:sha256:" + strings.Repeat("ab", 32) + "\n"
			}
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	ingressEnv := map[string]string{}
	for k, v := range set {
		ingressEnv[k] = v
	}
	for k, v := range ingress {
		ingressEnv[k] = v
	}

	units, err := filepath.Glob("../../deploy/systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("units %v, %v", units, err)
	}
	verifyDir := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/orchestrator serve (.*)$`).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("%s: no ExecStart=/usr/local/bin/orchestrator serve …", u)
		}
		env := set
		if strings.Contains(m[1], "ingress") {
			env = ingressEnv
		}
		cfg, err := config.Load(strings.Fields(m[1]), stand(env), &strings.Builder{})
		if err != nil {
			t.Errorf("%s: serve %s with the example environment: %v", filepath.Base(u), m[1], err)
		} else if !strings.Contains(m[1], string(cfg.Role)) {
			t.Errorf("%s: role %s from %q", filepath.Base(u), cfg.Role, m[1])
		}
		// systemd-analyze verify needs the binary: the test's own stands in.
		self, _ := os.Executable()
		name := strings.Replace(filepath.Base(u), "@", "@1", 1) // an instance of a template
		out := strings.ReplaceAll(string(b), "/usr/local/bin/orchestrator", self)
		if err := os.WriteFile(filepath.Join(verifyDir, name), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the units' syntax is not verified")
		return
	}
	files, _ := filepath.Glob(filepath.Join(verifyDir, "*.service"))
	if out, err := exec.Command(sa, append([]string{"verify"}, files...)...).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
