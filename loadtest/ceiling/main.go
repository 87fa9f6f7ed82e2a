// Command ceiling is the HTTP ceiling of a benchmark on this machine: a
// fasthttp server that answers every Open Inference Protocol infer request
// with a fixed, valid response without parsing the body or running a model.
// loadtest/bench.sh runs it in the same sitting as Flywheel and the Node peer,
// so its req/s is what any fasthttp-based server could reach here with the
// same load generator sharing the same cores: a ratio to the Node peer above
// ceiling/node is out of reach, whatever the server does.
//
//	go run ./loadtest/ceiling -listen 127.0.0.1:18083
package main

import (
	"flag"
	"fmt"
	"log"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18083", "address to listen on")
	outputs := flag.String("outputs", "mlp_small=3,mlp_wide=10,ridership=1", "model=values per answer (the model's output row width)")
	flag.Parse()
	bodies, err := answers(*outputs)
	if err != nil {
		log.Fatal(err)
	}
	s := &fasthttp.Server{Handler: handler(bodies), Name: "ceiling"}
	log.Printf("ceiling: listening on %s", *listen)
	log.Fatal(s.ListenAndServe(*listen))
}

// answers builds one infer response per model: outputs "probabilities" with
// n values of 1/n, the size of a real answer.
func answers(spec string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, kv := range strings.Split(spec, ",") {
		name, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return nil, fmt.Errorf("-outputs: %q is not model=count", kv)
		}
		vals := make([]string, n)
		for i := range vals {
			vals[i] = strconv.FormatFloat(1/float64(n), 'g', -1, 32)
		}
		out[name] = fmt.Appendf(nil, `{"model_name":%q,"model_version":"1","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,%d],"data":[%s]}]}`,
			name, n, strings.Join(vals, ","))
	}
	return out, nil
}

func handler(bodies map[string][]byte) fasthttp.RequestHandler {
	return func(c *fasthttp.RequestCtx) {
		path := string(c.Path())
		if strings.HasPrefix(path, "/v2/health/") {
			return
		}
		// /v2/models/{name}/infer or /v2/models/{name}/versions/{v}/infer
		rest, ok := strings.CutPrefix(path, "/v2/models/")
		name, _, _ := strings.Cut(rest, "/")
		body, known := bodies[name]
		if !ok || !known || !c.IsPost() || !strings.HasSuffix(path, "/infer") {
			c.Error(`{"error":"not found"}`, fasthttp.StatusNotFound)
			return
		}
		c.SetContentType("application/json")
		c.SetBody(body)
	}
}
