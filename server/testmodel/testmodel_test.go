package testmodel

import (
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
)

// The shared benchmark's SHA256SUMS lists mlp_small.onnx; the copy must
// produce the same bytes.
func TestMLPSmallMatchesSharedBench(t *testing.T) {
	const want = "mlp_small.onnx"
	b, err := os.ReadFile("../../../shared/bench/models/SHA256SUMS")
	if err != nil {
		b, err = os.ReadFile("/work/shared/bench/models/SHA256SUMS")
	}
	if err != nil {
		t.Logf("shared bench checksums not beside the repository (%v); checking determinism only", err)
		if fmt.Sprintf("%x", sha256.Sum256(MLPSmall())) != fmt.Sprintf("%x", sha256.Sum256(MLPSmall())) {
			t.Fatal("not deterministic")
		}
		return
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(MLPSmall()))
	var found bool
	for _, line := range splitLines(string(b)) {
		var s, name string
		if _, err := fmt.Sscanf(line, "%s %s", &s, &name); err == nil && name == want {
			found = true
			if s != sum {
				t.Fatalf("mlp_small.onnx sha256 %s, shared bench has %s", sum, s)
			}
		}
	}
	if !found {
		t.Fatalf("%s not in SHA256SUMS", want)
	}
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
