package harness

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMLflowRealStopRestart starts the real MLflow server, checks the
// Python client sees it, stops it (nothing answers, no worker left on the
// port) and restarts it on the same port with the same data.
func TestMLflowRealStopRestart(t *testing.T) {
	m := StartMLflow(t)
	out, err := m.Python(`import mlflow; print(mlflow.__version__); print(mlflow.create_experiment("kept"))`)
	if err != nil || !strings.HasPrefix(out, "2.10.2\n") {
		t.Fatalf("python client: %q %v", out, err)
	}
	m.Stop()
	if resp, err := http.Get(m.URL + "/health"); err == nil {
		resp.Body.Close()
		t.Fatalf("stopped MLflow still answers: %s", resp.Status)
	}
	m.Start()
	resp, err := http.Get(m.URL + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=kept")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"name": "kept"`) && !strings.Contains(string(b), `"name":"kept"`) {
		t.Fatalf("after restart: %s %s", resp.Status, b)
	}
}
