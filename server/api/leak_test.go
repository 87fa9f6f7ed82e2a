package api_test

import (
	"encoding/json"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// rssBytes reads the process resident set size from /proc/self/status.
func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestNoLeakOnReload unloads and loads a model 500 times through the
// repository extension, inferring after every load: live sessions must
// return to the baseline and RSS must grow by less than 10%.
func TestNoLeakOnReload(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.AdminToken = "tok" })
	body, _ := json.Marshal(refRequest())
	auth := []string{"Authorization", "Bearer tok"}
	baseSessions := ort.LiveSessions()
	cycle := func() {
		if r := ts.do(t, "POST", "/v2/repository/models/mlp/unload", "", nil, auth...); r.code != 200 {
			t.Fatalf("unload: %d %s", r.code, r.body)
		}
		if n := ort.LiveSessions(); n != baseSessions-1 {
			t.Fatalf("after unload %d live sessions, want %d", n, baseSessions-1)
		}
		if r := ts.do(t, "POST", "/v2/models/mlp/infer", "application/json", body); r.code != 503 {
			t.Fatalf("infer on an unloaded model: %d %s", r.code, r.body)
		}
		if r := ts.do(t, "POST", "/v2/repository/models/mlp/load", "", nil, auth...); r.code != 200 {
			t.Fatalf("load: %d %s", r.code, r.body)
		}
		if r := ts.do(t, "POST", "/v2/models/mlp/infer", "application/json", body); r.code != 200 {
			t.Fatalf("infer after load: %d %s", r.code, r.body)
		}
	}
	settle := func() int64 {
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(50 * time.Millisecond)
		return rssBytes(t)
	}
	startRSS := settle()
	// Warm-up cycles let the allocators and ONNX Runtime reach steady state.
	for i := 0; i < 25; i++ {
		cycle()
	}
	before := settle()
	const cycles = 500
	start := time.Now()
	for i := 0; i < cycles; i++ {
		cycle()
	}
	elapsed := time.Since(start)
	after := settle()
	growth := float64(after-before) / float64(before) * 100
	t.Logf("%d load/unload cycles (+25 warm-up) in %s: live sessions %d -> %d; RSS at start %.1f MiB, after warm-up %.1f MiB, after %d cycles %.1f MiB (%+.2f%%; %+.2f%% from start)",
		cycles, elapsed.Round(time.Millisecond), baseSessions, ort.LiveSessions(), mib(startRSS), mib(before), cycles, mib(after), growth,
		float64(after-startRSS)/float64(startRSS)*100)
	if ort.LiveSessions() != baseSessions {
		t.Errorf("live sessions %d, baseline %d", ort.LiveSessions(), baseSessions)
	}
	if growth >= 10 {
		t.Errorf("RSS grew %.2f%% over %d cycles", growth, cycles)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
