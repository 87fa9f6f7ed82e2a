package main

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestHandler(t *testing.T) {
	bodies, err := answers("mlp_small=3,mlp_wide=10")
	if err != nil {
		t.Fatal(err)
	}
	h := handler(bodies)
	tests := []struct {
		method, path string
		status, n    int // n: values in the answer
	}{
		{"POST", "/v2/models/mlp_small/infer", 200, 3},
		{"POST", "/v2/models/mlp_wide/versions/1/infer", 200, 10},
		{"GET", "/v2/health/ready", 200, -1},
		{"POST", "/v2/models/other/infer", 404, -1},
		{"GET", "/v2/models/mlp_small/infer", 404, -1},
		{"POST", "/v2/models/mlp_small/ready", 404, -1},
	}
	for _, tt := range tests {
		var c fasthttp.RequestCtx
		c.Request.Header.SetMethod(tt.method)
		c.Request.SetRequestURI(tt.path)
		h(&c)
		if got := c.Response.StatusCode(); got != tt.status {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, got, tt.status)
			continue
		}
		if tt.n < 0 {
			continue
		}
		var r struct {
			Outputs []struct {
				Shape []int
				Data  []float64
			}
		}
		if err := json.Unmarshal(c.Response.Body(), &r); err != nil || len(r.Outputs) != 1 || len(r.Outputs[0].Data) != tt.n || r.Outputs[0].Shape[1] != tt.n {
			t.Errorf("%s: answer %s (%v), want %d values", tt.path, c.Response.Body(), err, tt.n)
		}
	}
	for _, bad := range []string{"mlp_small", "mlp_small=0", "mlp_small=x"} {
		if _, err := answers(bad); err == nil {
			t.Errorf("answers(%q) accepted", bad)
		}
	}
}
