// Package doctest runs the shell examples of Markdown documents and compares
// their output with the output the document shows.
//
// The convention (stated in README.md, "Development"):
//
//   - A block fenced ```sh or ```bash is run; ```sh norun is not (it needs
//     Docker or MLflow, never ends, or takes minutes). ```sh fails is run and
//     must exit non-zero (an example of an error).
//   - A block fenced ```<lang> output (```json output, ```text output) right
//     after a run block, with only blank lines between, is that block's
//     expected output (stdout and stderr together). The whole output must
//     match: numbers written with a decimal point within Tolerance, other
//     numbers exactly, runs of white space as any white space, and "…" as any
//     text.
//
// A Runner runs blocks with bash -e -o pipefail in a folder of its own, after
// replacing the documented addresses (localhost:8080, 127.0.0.1:8080) by the
// address of the server under test.
package doctest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Block is one fenced shell block of a document.
type Block struct {
	File   string   // document name, for messages
	Line   int      // line of the opening fence (1-based)
	Lang   string   // sh or bash
	Attrs  []string // words after the language: norun, fails
	Script string   // the block's text
	Want   *Output  // the output block that follows, if any
}

// Output is an expected-output block.
type Output struct {
	Line int
	Text string
}

// Runs reports whether the block is executed (not fenced "norun").
func (b Block) Runs() bool { return !b.has("norun") }

// Fails reports whether the block must exit non-zero.
func (b Block) Fails() bool { return b.has("fails") }

func (b Block) has(attr string) bool {
	for _, a := range b.Attrs {
		if a == attr {
			return true
		}
	}
	return false
}

// Where is "file:line" of the block.
func (b Block) Where() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

// fence is one fenced block of a Markdown text.
type fence struct {
	line       int
	info       []string
	text       string
	afterBlank bool // only blank lines since the previous fence closed
}

// fences returns every fenced block (``` or ~~~) of a Markdown text in order.
func fences(text string) ([]fence, error) {
	var out []fence
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n, open, marker := 0, false, ""
	var cur fence
	var body strings.Builder
	adjacent := false // only blank lines since the last fence closed
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if open {
			if strings.HasPrefix(trimmed, marker) && strings.Trim(trimmed, marker[:1]) == "" {
				cur.text = body.String()
				out = append(out, cur)
				open, adjacent = false, true
				continue
			}
			body.WriteString(line)
			body.WriteByte('\n')
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			m := trimmed[:3]
			cur = fence{line: n, info: strings.Fields(strings.TrimLeft(trimmed, m[:1])), afterBlank: adjacent}
			body.Reset()
			open, marker = true, m
			continue
		}
		if trimmed != "" {
			adjacent = false
		}
	}
	if open {
		return out, fmt.Errorf("line %d: fence never closed", cur.line)
	}
	return out, sc.Err()
}

// Extract returns the shell blocks (sh, bash) of a Markdown document with
// their expected outputs. An output block that does not follow a run block is
// an error: it would never be checked.
func Extract(file, text string) ([]Block, error) {
	fs, err := fences(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var out []Block
	var errs []error
	for i, f := range fs {
		if len(f.info) == 0 {
			continue
		}
		lang, attrs := f.info[0], f.info[1:]
		if contains(attrs, "output") {
			prev := i > 0 && f.afterBlank && isShell(fs[i-1].info) && len(out) > 0 && out[len(out)-1].Line == fs[i-1].line
			if !prev || !out[len(out)-1].Runs() {
				errs = append(errs, fmt.Errorf("%s:%d: output block does not follow a block that runs", file, f.line))
				continue
			}
			out[len(out)-1].Want = &Output{Line: f.line, Text: f.text}
			continue
		}
		if !isShell(f.info) {
			continue
		}
		for _, a := range attrs {
			if a != "norun" && a != "fails" {
				errs = append(errs, fmt.Errorf("%s:%d: unknown attribute %q in ```%s (norun, fails)", file, f.line, a, strings.Join(f.info, " ")))
			}
		}
		out = append(out, Block{File: file, Line: f.line, Lang: lang, Attrs: attrs, Script: f.text})
	}
	return out, errors.Join(errs...)
}

func isShell(info []string) bool {
	return len(info) > 0 && (info[0] == "sh" || info[0] == "bash") && !contains(info[1:], "output")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Tolerance bounds the difference between a number the document shows with a
// decimal point and the one a command prints: |got-want| ≤ max(Rel·|want|, Abs).
type Tolerance struct{ Rel, Abs float64 }

// DefaultTolerance is the tolerance the README states: 0.5 % or 0.005.
var DefaultTolerance = Tolerance{Rel: 0.005, Abs: 0.005}

var (
	numberRe = regexp.MustCompile(`-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?`)
	spaceRe  = regexp.MustCompile(`\s+`)
)

// Match compares a command's output with the expected output block.
func Match(want, got string, tol Tolerance) error {
	want, got = strings.TrimSpace(want), strings.TrimSpace(got)
	var pat strings.Builder
	pat.WriteString(`^`)
	var nums []string
	literal := func(s string) {
		for i, part := range strings.Split(s, "…") {
			if i > 0 {
				pat.WriteString(`(?s:.*?)`)
			}
			for j, w := range spaceRe.Split(part, -1) {
				if j > 0 {
					pat.WriteString(`\s+`)
				}
				pat.WriteString(regexp.QuoteMeta(w))
			}
		}
	}
	last := 0
	for _, loc := range numberRe.FindAllStringIndex(want, -1) {
		literal(want[last:loc[0]])
		nums = append(nums, want[loc[0]:loc[1]])
		pat.WriteString(`(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)`)
		last = loc[1]
	}
	literal(want[last:])
	pat.WriteString(`$`)
	re, err := regexp.Compile(pat.String())
	if err != nil {
		return fmt.Errorf("expected output: %w", err)
	}
	m := re.FindStringSubmatch(got)
	if m == nil {
		return fmt.Errorf("output differs from the document:\n%s", firstDifference(want, got))
	}
	for i, w := range nums {
		if err := sameNumber(w, m[i+1], tol); err != nil {
			return err
		}
	}
	return nil
}

// sameNumber compares one number: exactly unless want has a decimal point or
// an exponent, then within tol.
func sameNumber(want, got string, tol Tolerance) error {
	if want == got {
		return nil
	}
	if !strings.ContainsAny(want, ".eE") {
		if want != got {
			return fmt.Errorf("the document shows %s, the command printed %s", want, got)
		}
		return nil
	}
	w, err1 := strconv.ParseFloat(want, 64)
	g, err2 := strconv.ParseFloat(got, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("the document shows %s, the command printed %s", want, got)
	}
	if d := math.Abs(g - w); d > math.Max(tol.Rel*math.Abs(w), tol.Abs) {
		return fmt.Errorf("the document shows %s, the command printed %s (off by %.3g, more than %.3g %% or %g)", want, got, d, 100*tol.Rel, tol.Abs)
	}
	return nil
}

// firstDifference shows where two outputs part, line by line.
func firstDifference(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if spaceRe.ReplaceAllString(w, " ") != spaceRe.ReplaceAllString(g, " ") {
			return fmt.Sprintf("  line %d of the document: %s\n  line %d of the output:   %s\n  whole output:\n%s", i+1, clip(w), i+1, clip(g), indent(clip(got)))
		}
	}
	return "  whole output:\n" + indent(clip(got))
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + " …(clipped)"
	}
	return s
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// Runner runs blocks in one folder.
type Runner struct {
	Dir     string            // working directory (a scratch folder)
	Env     []string          // the whole environment of the blocks
	Replace map[string]string // text replaced in every script (documented addresses → the test's)
	Timeout time.Duration     // per block; 2 minutes when zero
}

// Result is what running one block gave.
type Result struct {
	Block  Block
	Output string
	Err    error // nil when the block behaved as the document says
}

// Run runs one block and checks its exit status and output.
func (r Runner) Run(ctx context.Context, b Block) Result {
	script := b.Script
	for from, to := range r.Replace {
		script = strings.ReplaceAll(script, from, to)
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = r.Dir, r.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := Result{Block: b, Output: out.String()}
	switch {
	case ctx.Err() != nil:
		res.Err = fmt.Errorf("%s: did not finish within %s (fence it ```sh norun if it is not meant to end)", b.Where(), timeout)
	case b.Fails() && err == nil:
		res.Err = fmt.Errorf("%s: fenced ```%s fails but exited 0", b.Where(), b.Lang)
	case !b.Fails() && err != nil:
		res.Err = fmt.Errorf("%s: %v\n%s", b.Where(), err, indent(clip(res.Output)))
	case b.Want != nil:
		if err := Match(b.Want.Text, res.Output, DefaultTolerance); err != nil {
			res.Err = fmt.Errorf("%s (output block at line %d): %w", b.Where(), b.Want.Line, err)
		}
	}
	return res
}
