package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

const completionHelp = `
Prints a completion script for bash or zsh: subcommands and each one's flags.

  bash: source <(orchestrator completion bash)        (or save it in
        /etc/bash_completion.d/orchestrator)
  zsh:  source <(orchestrator completion zsh)         (after compinit; or save it
        as _orchestrator in a directory of $fpath)`

// completionCmd is `orchestrator completion bash|zsh`.
func completionCmd(ctx context.Context, args []string, e *cmdEnv) error {
	c := newCommand("completion", "bash|zsh", completionHelp, e.stdout, e.stderr)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "bash" && pos[0] != "zsh") {
		return c.usageErr("want bash or zsh")
	}
	cases := completionCases(ctx, e.getenv)
	if pos[0] == "bash" {
		return writeBashCompletion(e.stdout, cases)
	}
	return writeZshCompletion(e.stdout, cases)
}

// completionCase is what completes after the words of path: the next words
// of a group ("dlq" → list replay), or a subcommand's flags.
type completionCase struct {
	path  string
	words []string
}

// flagLine matches a flag in a usage text (config.PrintFlags or
// flag.PrintDefaults).
var flagLine = regexp.MustCompile(`^  --?([a-zA-Z][\w-]*)`)

// completionCases reads the command table; each subcommand's flags come from
// its own --help, so a subcommand with its own flag set (bench) is included
// as it is.
func completionCases(ctx context.Context, getenv func(string) string) []completionCase {
	next := map[string][]string{}
	seen := map[string]bool{}
	var out []completionCase
	for _, sc := range subcommands {
		words := strings.Fields(sc.path)
		for i := range words {
			prefix := strings.Join(words[:i], " ")
			key := prefix + "\x00" + words[i]
			if !seen[key] {
				seen[key] = true
				next[prefix] = append(next[prefix], words[i])
			}
		}
		var help bytes.Buffer
		// A subcommand with its own flag set may print its usage on stderr.
		_ = sc.run(ctx, &cmdEnv{getenv: getenv, stdin: strings.NewReader(""), stdout: &help, stderr: &help}, []string{"--help"})
		flags := []string{"--help"}
		for _, l := range strings.Split(help.String(), "\n") {
			if m := flagLine.FindStringSubmatch(l); m != nil && m[1] != "help" {
				flags = append(flags, "--"+m[1])
			}
		}
		if sc.path == "completion" {
			flags = append([]string{"bash", "zsh"}, flags...)
		}
		out = append(out, completionCase{path: sc.path, words: flags})
	}
	next[""] = append(next[""], "help", "--help", "--version")
	var groups []completionCase
	for prefix, words := range next {
		groups = append(groups, completionCase{path: prefix, words: words})
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].path < groups[j].path })
	return append(groups, out...)
}

// pathCase is the shell "case" pattern list of every known path.
func pathPatterns(cases []completionCase) string {
	var ps []string
	for _, c := range cases {
		if c.path != "" {
			ps = append(ps, fmt.Sprintf("%q", c.path))
		}
	}
	return strings.Join(ps, "|")
}

func writeBashCompletion(w io.Writer, cases []completionCase) error {
	var b strings.Builder
	b.WriteString(`# bash completion for orchestrator: source <(orchestrator completion bash)
_orchestrator() {
	local cur="${COMP_WORDS[COMP_CWORD]}" p="" w i
	for ((i = 1; i < COMP_CWORD; i++)); do
		w="${COMP_WORDS[i]}"
		case "$w" in -*) continue ;; esac
		case "${p:+$p }$w" in
			` + pathPatterns(cases) + `) p="${p:+$p }$w" ;;
		esac
	done
	local words=""
	case "$p" in
`)
	for _, c := range cases {
		fmt.Fprintf(&b, "\t\t%q) words=%q ;;\n", c.path, strings.Join(c.words, " "))
	}
	b.WriteString(`	esac
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _orchestrator orchestrator
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeZshCompletion(w io.Writer, cases []completionCase) error {
	var b strings.Builder
	b.WriteString(`#compdef orchestrator
# zsh completion for orchestrator: source <(orchestrator completion zsh) after
# compinit, or save as _orchestrator in a directory of $fpath.

# _orchestrator_words prints what may follow the words given (the command
# line before the word being completed, the command name first).
_orchestrator_words() {
	local p="" w
	shift
	for w in "$@"; do
		[[ $w == -* ]] && continue
		case "${p:+$p }$w" in
			` + pathPatterns(cases) + `) p="${p:+$p }$w" ;;
		esac
	done
	case "$p" in
`)
	for _, c := range cases {
		fmt.Fprintf(&b, "\t\t%q) print -r -- %q ;;\n", c.path, strings.Join(c.words, " "))
	}
	b.WriteString(`	esac
}

_orchestrator() {
	local -a cands
	cands=(${=$(_orchestrator_words "${(@)words[1,CURRENT-1]}")})
	compadd -a cands
}

if (( $+functions[compdef] )); then
	compdef _orchestrator orchestrator
fi
`)
	_, err := io.WriteString(w, b.String())
	return err
}
