package docs

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// mdLine is one line of a Markdown file outside fenced code blocks.
type mdLine struct {
	N    int // 1-based line number
	Text string
}

// proseLines returns the lines of a Markdown document that are outside
// fenced code blocks (``` or ~~~), with their line numbers.
func proseLines(text string) []mdLine {
	var out []mdLine
	fence := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		out = append(out, mdLine{n, line})
	}
	return out
}

// headings returns the ATX headings (# …) of a document outside code blocks,
// without the leading #s.
func headings(text string) []string {
	var out []string
	for _, l := range proseLines(text) {
		t := strings.TrimSpace(l.Text)
		if !strings.HasPrefix(t, "#") {
			continue
		}
		level := len(t) - len(strings.TrimLeft(t, "#"))
		if level > 6 || (len(t) > level && t[level] != ' ') {
			continue
		}
		out = append(out, strings.TrimSpace(strings.TrimRight(strings.TrimSpace(t[level:]), "#")))
	}
	return out
}

// githubSlug is the anchor GitHub gives a heading: lowercase, punctuation
// removed (letters, digits, spaces, '-' and '_' kept), spaces turned into
// hyphens. Inline code markers and emphasis disappear with the punctuation.
func githubSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// anchors returns every heading anchor of a document, with GitHub's "-1",
// "-2", … suffixes for repeated headings.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, h := range headings(text) {
		s := githubSlug(h)
		if n := seen[s]; n > 0 {
			seen[s]++
			s = s + "-" + strconv.Itoa(n)
		} else {
			seen[s] = 1
		}
		out[s] = true
	}
	return out
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return string(b)
}

func TestGitHubSlug(t *testing.T) {
	tests := []struct{ heading, want string }{
		{"FeatureDrift", "featuredrift"},
		{"ModelErrorHigh", "modelerrorhigh"},
		{"2. The process, task by task", "2-the-process-task-by-task"},
		{"Path of a request (`POST /v2/.../infer`)", "path-of-a-request-post-v2infer"},
		{"Tracker fallback & replay", "tracker-fallback--replay"},
		{"snake_case and kebab-case", "snake_case-and-kebab-case"},
		{"Résumé", "résumé"},
	}
	for _, tt := range tests {
		if got := githubSlug(tt.heading); got != tt.want {
			t.Errorf("githubSlug(%q) = %q, want %q", tt.heading, got, tt.want)
		}
	}
}

func TestAnchorsDuplicatesAndCode(t *testing.T) {
	doc := "# Runbook\n## Check\n```\n## NotAHeading\n```\n## Check\n#NoSpace\n## Done ##\n"
	got := anchors(doc)
	for _, want := range []string{"runbook", "check", "check-1", "done"} {
		if !got[want] {
			t.Errorf("anchor %q missing from %v", want, got)
		}
	}
	for _, bad := range []string{"notaheading", "nospace"} {
		if got[bad] {
			t.Errorf("anchor %q should not exist", bad)
		}
	}
}

var linkRe = regexp.MustCompile(`\]\(([^)\s]*)\)`)

// TestInternalLinks checks that every relative link between the documents
// points at a file that exists and, with a #fragment, at a heading anchor
// of that file.
func TestInternalLinks(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		for _, l := range proseLines(readDoc(t, f)) {
			for _, m := range linkRe.FindAllStringSubmatch(l.Text, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, frag, _ := strings.Cut(target, "#")
				if file == "" {
					file = f
				}
				b, err := os.ReadFile(file)
				if err != nil {
					t.Errorf("%s:%d: link %q: %v", f, l.N, target, err)
					continue
				}
				if frag != "" && strings.HasSuffix(file, ".md") && !anchors(string(b))[frag] {
					t.Errorf("%s:%d: link %q: %s has no heading with anchor #%s", f, l.N, target, file, frag)
				}
			}
		}
	}
}
