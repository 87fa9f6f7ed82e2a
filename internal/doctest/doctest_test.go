package doctest

import (
	"context"
	"strings"
	"testing"
)

func TestExtract(t *testing.T) {
	doc := "# T\n\n```sh\necho hi\n```\n\n```text output\nhi\n```\n\n" +
		"```sh norun\nmake run\n```\n\n```bash fails\nfalse\n```\n\n```yaml\na: 1\n```\n" +
		"```sh\necho a\n```\nprose\n\n```sh\necho b\n```\n"
	blocks, err := Extract("t.md", doc)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		line        int
		runs, fails bool
		out         string
	}
	wants := []want{{3, true, false, "hi\n"}, {11, false, false, ""}, {15, true, true, ""}, {22, true, false, ""}, {27, true, false, ""}}
	if len(blocks) != len(wants) {
		t.Fatalf("got %d blocks, want %d: %+v", len(blocks), len(wants), blocks)
	}
	for i, w := range wants {
		b := blocks[i]
		out := ""
		if b.Want != nil {
			out = b.Want.Text
		}
		if b.Line != w.line || b.Runs() != w.runs || b.Fails() != w.fails || out != w.out {
			t.Errorf("block %d = line %d runs %v fails %v out %q; want %+v", i, b.Line, b.Runs(), b.Fails(), out, w)
		}
	}
}

func TestExtractRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"orphan output":        "```json output\n{}\n```\n",
		"output after prose":   "```sh\necho\n```\ntext\n```text output\n\n```\n",
		"output after norun":   "```sh norun\necho\n```\n```text output\n\n```\n",
		"unknown attribute":    "```sh nrun\necho\n```\n",
		"unclosed fence":       "```sh\necho\n",
		"output after a table": "```yaml\na: 1\n```\n```text output\nx\n```\n",
	} {
		if _, err := Extract("t.md", doc); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		want, got string
		ok        bool
	}{
		{`{"data":[20.42]}`, `{"data":[20.419989]}`, true},
		{`{"data":[20.42]}`, `{"data":[20.55]}`, false},            // 0.5 % of 20.42 is 0.1021
		{`{"data":[20.42]}`, `{"data":[20.3]}`, false},             // off by 0.12
		{`{"data":[0.001]}`, `{"data":[0.0049]}`, true},            // absolute 0.005
		{`{"version":"1"}`, `{"version":"2"}`, false},              // integers exactly
		{`rows 3996 (2001-01-22)`, `rows 3996 (2001-01-22)`, true}, // dates are integers
		{`rows 3996`, `rows 3997`, false},
		{"ridge: done in …\nnext", "ridge: done in 58ms, 0 iterations\nnext", true},
		{"a   b\nc", "a b\nc", true}, // white space runs
		{"a b", "ab", false},
		{`{"id":…,"x":1}`, `{"id":"abc","x":1}`, true},
		{`OK`, "OK\n", true},
		{`OK`, "OK\nmore", false}, // the whole output
		{`{"a":1}`, `{"error":"no"}`, false},
	}
	for _, tt := range tests {
		err := Match(tt.want, tt.got, DefaultTolerance)
		if (err == nil) != tt.ok {
			t.Errorf("Match(%q, %q) = %v, want ok=%v", tt.want, tt.got, err, tt.ok)
		}
	}
}

func TestRunnerStatusAndOutput(t *testing.T) {
	r := Runner{Dir: t.TempDir(), Env: []string{"PATH=/usr/bin:/bin"}, Replace: map[string]string{"localhost:8080": "X"}}
	tests := []struct {
		block Block
		ok    bool
	}{
		{Block{Script: "echo localhost:8080\n", Want: &Output{Text: "X\n"}}, true},
		{Block{Script: "echo 1.00\n", Want: &Output{Text: "1.2\n"}}, false},
		{Block{Script: "false\necho after\n"}, false}, // bash -e
		{Block{Script: "false | cat\n"}, false},       // pipefail
		{Block{Script: "exit 3\n", Attrs: []string{"fails"}}, true},
		{Block{Script: "true\n", Attrs: []string{"fails"}}, false},
	}
	for i, tt := range tests {
		res := r.Run(context.Background(), tt.block)
		if (res.Err == nil) != tt.ok {
			t.Errorf("block %d (%q): err %v, want ok=%v", i, tt.block.Script, res.Err, tt.ok)
		}
	}
	res := Runner{Dir: t.TempDir(), Env: []string{"PATH=/usr/bin:/bin"}, Timeout: 300 * 1e6}.Run(context.Background(), Block{Script: "sleep 30\n"})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "norun") {
		t.Errorf("a block that does not end: %v", res.Err)
	}
}
