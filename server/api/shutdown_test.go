package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// slow is an echo model that takes a while, to have a request in flight.
type slow struct {
	echo
	started chan struct{}
}

func (s slow) Run(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	select {
	case s.started <- struct{}{}:
	default:
	}
	time.Sleep(300 * time.Millisecond)
	return s.echo.Run(ctx, in)
}

// TestShutdownDrains: readiness drops, the in-flight request completes,
// and new connections are refused.
func TestShutdownDrains(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "slow", "1"), 0o755)
	os.WriteFile(filepath.Join(root, "slow", "1", "model.onnx"), []byte("fake"), 0o644)
	rc := repository.DefaultConfig()
	rc.Root = root
	started := make(chan struct{}, 1)
	repo, _ := repository.New(repository.Options{Config: rc, Loader: func(string, ortOpts) (repository.Loaded, error) {
		return slow{started: started}, nil
	}})
	if err := repo.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started // the warm-up run
	srv, _ := api.New(api.Options{Repository: repo})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	srv.SetReady(true)
	url := "http://" + ln.Addr().String()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := http.Post(url+"/v2/models/slow/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`))
		if err != nil {
			done <- result{0, err}
			return
		}
		r.Body.Close()
		done <- result{r.StatusCode, nil}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.code != 200 {
		t.Fatalf("in-flight request: %d %v", r.code, r.err)
	}
	if _, err := http.Get(url + "/v2/health/live"); err == nil {
		t.Error("new connection accepted after shutdown")
	}
	res, _ := srv.App().Test(mustReq(t, "GET", "/v2/health/ready"))
	if res.StatusCode != 503 {
		t.Errorf("ready after shutdown: %d", res.StatusCode)
	}
	repo.Close()
}

func mustReq(t *testing.T, method, path string) *http.Request {
	r, err := http.NewRequest(method, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDrainCutsNoKeepAliveRequest: under keep-alive load, Drain (readiness
// false, Connection: close for the delay, then close the listener) answers
// every request that reached the server. Each worker acts as a load
// balancer would: once told to close (or refused), it sends this server
// nothing more. With Shutdown alone (no delay) 6-8 requests of such a run
// were cut (EOF, connection reset).
func TestDrainCutsNoKeepAliveRequest(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	setupORT(t)
	rc := repository.DefaultConfig()
	rc.Root = root
	repo, err := repository.New(repository.Options{Config: rc})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	srv, _ := api.New(api.Options{Repository: repo})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	srv.SetReady(true)
	url := "http://" + ln.Addr().String() + "/v2/models/mlp/infer"
	body, _ := json.Marshal(refRequest())
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	const workers = 8
	var ok, cut, left atomic.Int64
	var firstCut atomic.Value
	stop := time.Now().Add(10 * time.Second) // bound
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				r, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					if strings.Contains(err.Error(), "connection refused") {
						left.Add(1)
						return
					}
					cut.Add(1)
					firstCut.CompareAndSwap(nil, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
				if r.StatusCode == 200 {
					ok.Add(1)
				} else {
					cut.Add(1)
					firstCut.CompareAndSwap(nil, r.Status)
				}
				if r.Close { // draining: this server is leaving rotation
					left.Add(1)
					return
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // load running on keep-alive connections
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	t0 := time.Now()
	// fasthttp waits up to 5 s for connections a client opened and never
	// used (Go's transport dials spares) before it counts them idle.
	if err := srv.Drain(ctx, 500*time.Millisecond); err != nil {
		t.Logf("drain: %v after %v", err, time.Since(t0))
	}
	wg.Wait()
	t.Logf("%d answered, %d cut, %d workers left", ok.Load(), cut.Load(), left.Load())
	if cut.Load() != 0 {
		t.Fatalf("%d requests cut during the drain (first: %v)", cut.Load(), firstCut.Load())
	}
	if ok.Load() == 0 || left.Load() != workers {
		t.Fatalf("%d answered, %d of %d workers left", ok.Load(), left.Load(), workers)
	}
}
