package api_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
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
