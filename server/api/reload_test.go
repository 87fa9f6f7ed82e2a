package api_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

func mlpVersion(seed uint64) []byte {
	return testmodel.MLP("mlp", []int{16, 64, 64, 3}, seed)
}

// replaceFile swaps a file atomically (write beside it, then rename).
func replaceFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func loadedAt(repo *repository.Repository, model string, version int64) time.Time {
	for _, vi := range repo.Index() {
		if vi.Model == model && vi.Version == version {
			return vi.Loaded
		}
	}
	return time.Time{}
}

// TestHotReloadUnderLoad publishes, replaces and removes versions while
// clients infer continuously. Requests without a version must always
// succeed; requests naming a version may only get 404 once it was removed.
func TestHotReloadUnderLoad(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "hot", 1, map[string][]byte{"model.onnx": mlpVersion(1)})
	writeVersion(t, root, "multi", 1, map[string][]byte{"model.onnx": mlpVersion(100)})
	if err := os.WriteFile(filepath.Join(root, "multi", "config.yaml"), []byte("version_policy:\n  all: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A long rescan interval: every pickup below must come from fsnotify.
	ts := startServer(t, root, func(c *repository.Config, _ *api.Options) { c.RescanInterval = time.Minute })
	body, _ := json.Marshal(refRequest())

	var live atomic.Value // []int64 of multi versions clients may name
	live.Store([]int64{1})
	var gone atomic.Value // removed multi versions
	gone.Store([]int64{})
	var removed sync.Map // multi versions explicitly removed
	var requests, failures, allowed404 atomic.Int64
	var failMu sync.Mutex
	var failSamples []string
	fail := func(s string) {
		failures.Add(1)
		failMu.Lock()
		if len(failSamples) < 5 {
			failSamples = append(failSamples, s)
		}
		failMu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := func(id int, multi bool) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(uint64(id), 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			path := "/v2/models/hot/infer"
			var v int64
			if multi {
				vs := live.Load().([]int64)
				if g := gone.Load().([]int64); len(g) > 0 && rng.IntN(10) == 0 {
					vs = g // now and then, name a version that was removed
				}
				v = vs[rng.IntN(len(vs))]
				path = fmt.Sprintf("/v2/models/multi/versions/%d/infer", v)
			}
			r := ts.do(t, "POST", path, "application/json", body)
			requests.Add(1)
			switch {
			case r.code == 200:
				var out struct {
					Outputs []struct{ Data []float64 }
				}
				if err := json.Unmarshal(r.body, &out); err != nil || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 3 {
					fail(fmt.Sprintf("%s: bad body %s", path, r.body))
					continue
				}
				sum := out.Outputs[0].Data[0] + out.Outputs[0].Data[1] + out.Outputs[0].Data[2]
				if sum < 0.999 || sum > 1.001 {
					fail(fmt.Sprintf("%s: probabilities sum to %v", path, sum))
				}
			case r.code == 404 && multi:
				if _, ok := removed.Load(v); ok {
					allowed404.Add(1)
				} else {
					fail(fmt.Sprintf("%s: 404 for a version not removed: %s", path, r.body))
				}
			default:
				fail(fmt.Sprintf("%s: %d %s", path, r.code, r.body))
			}
		}
	}
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go client(i, false)
	}
	for i := 3; i < 5; i++ {
		wg.Add(1)
		go client(i, true)
	}

	ops := 0
	var maxPickup time.Duration
	pickup := func(d time.Duration) {
		if d > maxPickup {
			maxPickup = d
		}
	}
	deadline := time.Now().Add(40 * time.Second)
	hotV, multiV := int64(1), int64(1)
	for it := 0; it < 12 && time.Now().Before(deadline); it++ {
		// hot: publish a new version; latest-1 policy switches to it.
		hotV++
		writeVersion(t, root, "hot", int(hotV), map[string][]byte{"model.onnx": mlpVersion(uint64(hotV))})
		pickup(waitState(t, ts.repo, "hot", hotV, repository.StateReady, 5*time.Second))
		ops++
		// hot: replace the serving version's model.onnx in place.
		before := loadedAt(ts.repo, "hot", hotV)
		replaceFile(t, filepath.Join(root, "hot", fmt.Sprint(hotV), "model.onnx"), mlpVersion(uint64(1000+hotV)))
		start := time.Now()
		for loadedAt(ts.repo, "hot", hotV).Equal(before) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("replacement of hot/%d not picked up", hotV)
			}
			time.Sleep(10 * time.Millisecond)
		}
		pickup(time.Since(start))
		ops++
		// hot: remove the previous version (no longer served).
		if err := os.RemoveAll(filepath.Join(root, "hot", fmt.Sprint(hotV-1))); err != nil {
			t.Fatal(err)
		}
		ops++
		if it%4 == 1 {
			// A corrupt new version must leave the serving one in place.
			bad := hotV + 1
			writeVersion(t, root, "hot", int(bad), map[string][]byte{"model.onnx": []byte("corrupt\x00model")})
			pickup(waitState(t, ts.repo, "hot", bad, repository.StateUnavailable, 5*time.Second))
			if r := ts.do(t, "GET", "/v2/models/hot", "", nil); r.code != 200 {
				t.Fatalf("metadata after corrupt publish: %d", r.code)
			}
			os.RemoveAll(filepath.Join(root, "hot", fmt.Sprint(bad)))
			ops++
			hotV = bad // the next version number follows the corrupt one
			writeVersion(t, root, "hot", int(hotV+1), map[string][]byte{"model.onnx": mlpVersion(uint64(hotV + 1))})
			hotV++
			pickup(waitState(t, ts.repo, "hot", hotV, repository.StateReady, 5*time.Second))
			ops++
			os.RemoveAll(filepath.Join(root, "hot", fmt.Sprint(hotV-2)))
		}
		// multi: publish a version, then explicitly remove the oldest.
		multiV++
		writeVersion(t, root, "multi", int(multiV), map[string][]byte{"model.onnx": mlpVersion(uint64(100 + multiV))})
		pickup(waitState(t, ts.repo, "multi", multiV, repository.StateReady, 5*time.Second))
		live.Store(append(append([]int64(nil), live.Load().([]int64)...), multiV))
		ops++
		if vs := live.Load().([]int64); len(vs) > 2 {
			old := vs[0]
			removed.Store(old, true)
			live.Store(append([]int64(nil), vs[1:]...))
			gone.Store(append(append([]int64(nil), gone.Load().([]int64)...), old))
			if err := os.RemoveAll(filepath.Join(root, "multi", fmt.Sprint(old))); err != nil {
				t.Fatal(err)
			}
			ops++
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("hot reload: %d publish/replace/remove operations, %d requests, %d failures, %d allowed 404s for removed versions, slowest pickup %s",
		ops, requests.Load(), failures.Load(), allowed404.Load(), maxPickup.Round(time.Millisecond))
	if ops < 50 {
		t.Errorf("only %d operations", ops)
	}
	if failures.Load() != 0 {
		t.Errorf("%d failed requests, e.g. %v", failures.Load(), failSamples)
	}
	if maxPickup > 2*time.Second {
		t.Errorf("slowest pickup %s, want < 2s", maxPickup)
	}
	// Only the serving versions keep sessions: hot's latest and multi's live ones.
	waitFor(t, func() bool { return ort.LiveSessions() == int64(1+len(live.Load().([]int64))) }, 5*time.Second,
		func() string { return fmt.Sprintf("live sessions %d, index %+v", ort.LiveSessions(), ts.repo.Index()) })
}

func waitFor(t testing.TB, cond func() bool, within time.Duration, msg func() string) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatal(msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
