package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

const tokenHashHelp = `
Prints the SHA-256 hash of an API token, the form API_TOKENS_FILE holds
(lines "<tenant> sha256:<hex>"; --tenant prints such a line). The token is
read from standard input, one per line (several lines: one hash each), or
asked for without echo when standard input is a terminal:

  orchestrator token hash --tenant acme < token.txt >> tokens
  openssl rand -hex 32 | tee token.txt | orchestrator token hash --tenant acme

A token given as an argument still works, with a warning: it stays in the
shell's history and is visible to other local users (ps) while it runs.`

// tokenHash is `orchestrator token hash`.
func tokenHash(args []string, e *cmdEnv) error {
	c := newCommand("token hash", "[--tenant name] < token", tokenHashHelp, e.stdout, e.stderr)
	tenant := c.fs.String("tenant", "", "print a line of API_TOKENS_FILE, \"<tenant> sha256:<hash>\", instead of the bare hash")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	var tokens []string
	switch {
	case len(pos) > 1:
		return c.usageErr("want one token on standard input (or, with a warning, one argument)")
	case len(pos) == 1:
		fmt.Fprintln(e.stderr, "orchestrator: warning: a token given as an argument stays in the shell's history and is visible in ps; pipe it on standard input instead")
		tokens = pos
	default:
		if tokens, err = readTokens(e); err != nil {
			return err
		}
	}
	if len(tokens) == 0 {
		return c.usageErr("no token on standard input")
	}
	for _, t := range tokens {
		if len(t) < httpapi.MinTokenLength {
			return fmt.Errorf("token hash: a token of %d bytes is too short: at least %d (e.g. openssl rand -hex 32)", len(t), httpapi.MinTokenLength)
		}
		if *tenant != "" {
			fmt.Fprintf(e.stdout, "%s sha256:%s\n", *tenant, httpapi.HashToken(t))
		} else {
			fmt.Fprintln(e.stdout, httpapi.HashToken(t))
		}
	}
	return nil
}

// readTokens reads the tokens on stdin, one per line; from a terminal it
// asks for one, without echo.
func readTokens(e *cmdEnv) ([]string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, "API token (not echoed): ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("token hash: reading the token: %w", err)
		}
		return []string{strings.TrimSpace(string(b))}, nil
	}
	var tokens []string
	sc := bufio.NewScanner(io.LimitReader(e.stdin, 1<<20))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			tokens = append(tokens, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("token hash: reading standard input: %w", err)
	}
	return tokens, nil
}
