package main

import (
	"bytes"
	"encoding/json"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/configtest"
	"github.com/valyala/fasthttp"
)

func TestValidate(t *testing.T) {
	ok := config{url: "http://127.0.0.1:8080/v2/models/m/infer", rate: 100, duration: time.Second, conns: 4, maxWait: time.Second, body: []byte("{}")}
	configtest.Check(t, func() config { return ok }, config.validate, []configtest.Case[config]{
		{Name: "valid", Edit: func(*config) {}, Want: ""},
		{Name: "not loopback", Edit: func(c *config) { c.url = "http://10.0.0.1:8080/x" }, Want: "loopback"},
		{Name: "no scheme", Edit: func(c *config) { c.url = "127.0.0.1:8080/x" }, Want: "want http"},
		{Name: "rate", Edit: func(c *config) { c.rate = 0 }, Want: "-rate"},
		{Name: "duration", Edit: func(c *config) { c.duration = time.Hour }, Want: "-duration"},
		{Name: "conns", Edit: func(c *config) { c.conns = 0 }, Want: "-conns"},
		{Name: "body", Edit: func(c *config) { c.body = nil }, Want: "body"},
	})
}

// The body is the bench harness's reference row, as loadtest/oip.lua sends it.
func TestReferenceBody(t *testing.T) {
	var req struct {
		Inputs []struct {
			Name     string
			Shape    []int
			Datatype string
			Data     []float64
		}
	}
	if err := json.Unmarshal(referenceBody("input", 2, 16), &req); err != nil {
		t.Fatal(err)
	}
	in := req.Inputs[0]
	if in.Name != "input" || in.Datatype != "FP32" || in.Shape[0] != 2 || in.Shape[1] != 16 || len(in.Data) != 32 ||
		in.Data[1] != -0.3571429 || in.Data[16] != -0.5 { // "%.7g" of 1/7 - 0.5; row 2 starts again at i=0
		t.Fatalf("body %+v", in)
	}
}

// serve answers on a loopback listener with handler until the test ends.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: h}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown() })
	return "http://" + ln.Addr().String() + "/v2/models/m/infer"
}

func TestGenerateSendsAtTheRate(t *testing.T) {
	var n atomic.Int64
	url := serve(t, func(c *fasthttp.RequestCtx) {
		if !bytes.HasPrefix(c.PostBody(), []byte(`{"inputs"`)) {
			c.SetStatusCode(400)
		}
		n.Add(1)
	})
	c := config{url: url, rate: 400, duration: time.Second, conns: 4, maxWait: time.Second, body: referenceBody("input", 1, 16)}
	start := time.Now()
	r, err := generate(c)
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 400 || r.failed != 0 || r.dropped != 0 || n.Load() != 401 { // + the probe
		t.Fatalf("sent %d failed %d dropped %d served %d, want 400 0 0 401", r.sent, r.failed, r.dropped, n.Load())
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("400 requests at 400/s took %s: not paced", el)
	}
}

// A server slower than the arrival rate is charged for the queue it causes:
// latency counts from each request's due time, not from when a connection
// was free (no coordinated omission).
func TestGenerateChargesQueueing(t *testing.T) {
	url := serve(t, func(c *fasthttp.RequestCtx) { time.Sleep(20 * time.Millisecond) })
	// one connection, 100 requests/s for 0.5 s: 50 requests of which at most
	// 25 can be served on time; the last ones wait ~0.5 s
	c := config{url: url, rate: 100, duration: 500 * time.Millisecond, conns: 1, maxWait: 10 * time.Second, body: referenceBody("input", 1, 16)}
	r, err := generate(c)
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 50 || r.mx < 400*time.Millisecond || r.p50 < 100*time.Millisecond {
		t.Fatalf("sent %d, p50 %s, max %s: queueing behind the slow server not charged", r.sent, r.p50, r.mx)
	}
}
