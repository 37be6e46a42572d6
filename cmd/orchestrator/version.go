package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"text/tabwriter"
)

// versionDeps are the dependencies `orchestrator version` names, by module
// path, with the name it shows.
var versionDeps = []struct{ name, path string }{
	{"nats-server", "github.com/nats-io/nats-server/v2"},
	{"nats.go", "github.com/nats-io/nats.go"},
	{"go-redis", "github.com/redis/go-redis/v9"},
	{"echo", "github.com/labstack/echo/v5"},
}

// buildInfo is what the binary knows of its build (runtime/debug).
type buildInfo struct {
	Version  string            `json:"version"`
	Commit   string            `json:"commit,omitempty"`
	Time     string            `json:"commit_time,omitempty"`
	Modified bool              `json:"modified,omitempty"`
	Go       string            `json:"go"`
	Platform string            `json:"platform"`
	Deps     map[string]string `json:"dependencies"`
}

// buildVersion reads the module's build information: the main module's
// version ("(devel)" for a build from a work tree), the VCS commit when the
// build recorded it, the Go version and the versions of versionDeps.
func buildVersion() buildInfo {
	b := buildInfo{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, Deps: map[string]string{}}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		for _, want := range versionDeps {
			if d.Path == want.path {
				v := d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path + " " + d.Replace.Version
				}
				b.Deps[want.name] = v
			}
		}
	}
	return b
}

const versionHelp = `
Prints the orchestrator's version, the commit it was built from (when the
build recorded it: go build or go install in a git clone), the Go version and
the versions of nats-server, nats.go, go-redis and echo built in.`

// versionCmd is `orchestrator version` (and --version).
func versionCmd(args []string, e *cmdEnv) error {
	c := newCommand("version", "[--json]", versionHelp, e.stdout, e.stderr)
	asJSON := c.fs.Bool("json", false, "print one JSON object")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("unexpected arguments: %v", pos)
	}
	b := buildVersion()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "orchestrator\t%s\n", b.Version)
	commit := "unknown (built without VCS information)"
	if b.Commit != "" {
		commit = b.Commit
		if b.Time != "" {
			commit += " (" + b.Time + ")"
		}
		if b.Modified {
			commit += " with uncommitted changes"
		}
	}
	fmt.Fprintf(tw, "commit\t%s\n", commit)
	fmt.Fprintf(tw, "go\t%s %s\n", b.Go, b.Platform)
	for _, d := range versionDeps {
		v := b.Deps[d.name]
		if v == "" {
			v = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%s\n", d.name, v)
	}
	return tw.Flush()
}
