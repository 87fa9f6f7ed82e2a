package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/configuration.md from the flags")

// configDocCommands are the command lines whose flags docs/configuration.md lists, in order.
var configDocCommands = [][]string{
	{"serve"}, {"train"}, {"trainer"}, {"replay"},
	{"runs", "list"}, {"runs", "show"}, {"runs", "compare"}, {"runs", "sync"},
}

const configDocHeader = `# Configuration

> **Figures rule.** Every figure in this document names the command that produced it or the
> command that enforces it. This file is generated from the flags themselves: each section is
> ` + "`flywheel <command> --help=markdown`" + `; ` + "`make docs`" + ` rewrites it and ` + "`go test ./cmd/flywheel/`" + `
> fails when it is out of date. Do not edit it by hand.

Back to the [README](../README.md#configuration).

Every flag also reads the environment variable beside it; a flag on the command line wins over
the environment, which wins over the default. ` + "`flywheel <command> --help`" + ` prints the same list.

`

// configurationDoc renders docs/configuration.md from every command's flags.
func configurationDoc(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(configDocHeader)
	for i, args := range configDocCommands {
		var out, errOut bytes.Buffer
		if code := run(append(append([]string{}, args...), "--help=markdown"), &out, &errOut); code != 0 {
			t.Fatalf("flywheel %s --help=markdown: exit %d: %s", strings.Join(args, " "), code, errOut.String())
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(out.String())
	}
	return b.String()
}

func TestConfigurationDocUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	want := configurationDoc(t)
	if *updateDocs {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	if string(got) != want {
		t.Errorf("docs/configuration.md is out of date with the flags: run `make docs` and commit it")
	}
}

func TestHelpMarkdownHasEveryFlag(t *testing.T) {
	for _, args := range configDocCommands {
		var text, md bytes.Buffer
		run(append(append([]string{}, args...), "--help"), &text, &bytes.Buffer{})
		run(append(append([]string{}, args...), "--help=markdown"), &md, &bytes.Buffer{})
		n := 0
		for _, line := range strings.Split(text.String(), "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(line), "--"); ok {
				n++
				name, _, _ = strings.Cut(name, " ")
				if !strings.Contains(md.String(), "`--"+name+" ") && !strings.Contains(md.String(), "`--"+name+"`") {
					t.Errorf("flywheel %s: --%s is in --help but not in --help=markdown", strings.Join(args, " "), name)
				}
			}
		}
		if n == 0 {
			t.Errorf("flywheel %s --help lists no flags", strings.Join(args, " "))
		}
	}
}
