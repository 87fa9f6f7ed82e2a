package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the module root: the tests run in deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	return root
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("reading %s: %v", rel, err)
	}
	return b
}

// makeVar returns the value of a simple `NAME := value` assignment in the
// Makefile (the one place ORT_VERSION and ORT_SHA256 are defined).
func makeVar(t *testing.T, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*:?=\s*(\S+)\s*$`)
	m := re.FindSubmatch(readFile(t, "Makefile"))
	if m == nil {
		t.Fatalf("Makefile: no %s := … assignment", name)
	}
	return string(m[1])
}

// Routes are the HTTP routes CONTRACTS.md promises for the probes and the
// webhook; when the servers expose their registered patterns, this table
// can be replaced by them.
var (
	serveRoutes   = []string{"/v2/health/live", "/v2/health/ready", "/metrics"}
	trainerRoutes = []string{"/health/live", "/health/ready", "/metrics", "/v1/alerts"}
)

// Ports of the contract (CONTRACTS.md "Names shared across parts").
var contractPorts = map[string]uint32{
	"serve": 8080, "trainer": 8090, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "mlflow": 5000,
}

func hasRoute(routes []string, path string) bool {
	for _, r := range routes {
		if r == path {
			return true
		}
	}
	return false
}

// secretish matches names that must never carry an inline value.
var secretish = regexp.MustCompile(`(?i)(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|CREDENTIAL)`)

// imagePinned reports whether ref names an explicit tag other than latest,
// or a digest.
func imagePinned(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	i := strings.LastIndex(name, ":")
	if i < 0 {
		return false
	}
	tag := name[i+1:]
	return tag != "" && tag != "latest" && !strings.Contains(tag, "$")
}

func TestImagePinned(t *testing.T) {
	for ref, want := range map[string]bool{
		"prom/prometheus:v2.53.0":        true,
		"localhost:5000/flywheel:1.2":    true,
		"prom/prometheus":                false,
		"prom/prometheus:latest":         false,
		"localhost:5000/flywheel":        false,
		"debian@sha256:0123456789abcdef": true,
	} {
		if got := imagePinned(ref); got != want {
			t.Errorf("imagePinned(%q) = %v, want %v", ref, got, want)
		}
	}
}
