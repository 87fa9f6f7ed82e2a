// Command openloop is an open-loop (constant arrival rate) load generator
// for the Open Inference Protocol infer call, for rates k6 cannot produce on
// a 2-core machine (k6 costs ~0.2 ms of CPU per request; this ~10-20 µs).
//
// Request i is due at start + i/rate whether or not earlier requests have
// been answered; its latency is measured from that due time, so a server
// that stalls is charged for the requests that queued behind the stall (no
// coordinated omission). Up to -conns requests are in flight on as many
// keep-alive connections; a due request waits for a free connection, and
// that wait counts in its latency. Requests still waiting -max-wait after
// their due time are dropped and counted (the generator fell behind or the
// server cannot keep up).
//
//	go run ./loadtest/openloop -url http://127.0.0.1:8080/v2/models/mlp_small/infer -rate 20000 -duration 20s
//
// It prints one line: RESULT rate=… rps=… p50_ms=… p90_ms=… p99_ms=… max_ms=… failed=… dropped=…
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

type config struct {
	url      string
	rate     int
	duration time.Duration
	conns    int
	maxWait  time.Duration
	body     []byte
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "openloop:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("openloop", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.url, "url", "", "infer URL, e.g. http://127.0.0.1:8080/v2/models/mlp_small/infer (loopback only)")
	fs.IntVar(&c.rate, "rate", 1000, "requests per second")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long to send (at most 5m)")
	fs.IntVar(&c.conns, "conns", 64, "keep-alive connections, i.e. most requests in flight")
	fs.DurationVar(&c.maxWait, "max-wait", time.Second, "drop a request not sent this long after its due time")
	model := fs.String("model", "mlp_small", "sets -features: mlp_small 16, mlp_wide 256")
	features := fs.Int("features", 0, "floats per row (0: from -model)")
	batch := fs.Int("batch", 1, "rows per request")
	input := fs.String("input", "input", "input tensor name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *features == 0 {
		*features = map[string]int{"mlp_small": 16, "mlp_wide": 256}[*model]
	}
	c.body = referenceBody(*input, *batch, *features)
	if err := c.validate(); err != nil {
		return err
	}
	r, err := generate(c)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, r)
	return nil
}

func (c config) validate() error {
	u, err := url.Parse(c.url)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-url %q: want http://host:port/path", c.url)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		return fmt.Errorf("-url %q: load only goes to loopback", c.url)
	}
	switch {
	case c.rate < 1 || c.rate > 1_000_000:
		return fmt.Errorf("-rate %d: want 1..1000000", c.rate)
	case c.duration <= 0 || c.duration > 5*time.Minute:
		return fmt.Errorf("-duration %s: want (0, 5m]", c.duration)
	case c.conns < 1 || c.conns > 4096:
		return fmt.Errorf("-conns %d: want 1..4096", c.conns)
	case c.maxWait <= 0:
		return fmt.Errorf("-max-wait %s: want > 0", c.maxWait)
	case len(c.body) == 0:
		return errors.New("no request body: set -features")
	}
	return nil
}

// referenceBody is the bench harness's request: rows of (i%7)/7 - 0.5.
func referenceBody(input string, batch, features int) []byte {
	if features <= 0 || batch <= 0 {
		return nil
	}
	vals := make([]string, 0, batch*features)
	for range batch {
		for i := range features {
			vals = append(vals, fmt.Sprintf("%.7g", float64(i%7)/7-0.5))
		}
	}
	return fmt.Appendf(nil, `{"inputs":[{"name":%q,"shape":[%d,%d],"datatype":"FP32","data":[%s]}]}`,
		input, batch, features, strings.Join(vals, ","))
}

// result is what one run measured.
type result struct {
	rate              int
	sent, failed      int64
	dropped           int64
	elapsed           time.Duration
	p50, p90, p99, mx time.Duration
}

func (r result) String() string {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return fmt.Sprintf("RESULT rate=%d requests=%d rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f failed=%d dropped=%d",
		r.rate, r.sent, float64(r.sent)/r.elapsed.Seconds(), ms(r.p50), ms(r.p90), ms(r.p99), ms(r.mx), r.failed, r.dropped)
}

// generate sends c.rate requests a second for c.duration and measures each
// from its due time.
func generate(c config) (result, error) {
	u, _ := url.Parse(c.url)
	client := &fasthttp.HostClient{Addr: u.Host, MaxConns: c.conns, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	if err := probe(client, c); err != nil {
		return result{}, err
	}
	total := int(int64(c.rate) * int64(c.duration) / int64(time.Second))
	// due requests wait here for a free connection (counted in their latency)
	due := make(chan time.Time, max(c.conns, int(float64(c.rate)*c.maxWait.Seconds())))
	lat := make([][]time.Duration, c.conns)
	var failed, dropped atomic.Int64
	var wg sync.WaitGroup
	for w := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := c.request(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			mine := make([]time.Duration, 0, total/c.conns+1)
			for at := range due {
				if time.Since(at) > c.maxWait {
					dropped.Add(1)
					continue
				}
				err := client.Do(req, resp)
				d := time.Since(at)
				if err != nil || resp.StatusCode() != fasthttp.StatusOK {
					failed.Add(1)
					continue
				}
				mine = append(mine, d)
			}
			lat[w] = mine
		}()
	}
	start := time.Now()
	for i := 0; i < total; {
		// Hand out everything due by now, each stamped with its due time,
		// then sleep until the next one is due. The sleep oversleeps by up
		// to ~0.1 ms on these VMs, which every request and every server pay
		// alike; a dispatcher that spins instead would take a core.
		now := time.Now()
		for ; i < total; i++ {
			at := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(c.rate)))
			if at.After(now) {
				time.Sleep(at.Sub(now))
				break
			}
			select {
			case due <- at:
			default:
				dropped.Add(1) // even the queue of due requests is full
			}
		}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return result{}, fmt.Errorf("no successful request (%d failed, %d dropped)", failed.Load(), dropped.Load())
	}
	slices.Sort(all)
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	return result{rate: c.rate, sent: int64(len(all)) + failed.Load(), failed: failed.Load(), dropped: dropped.Load(),
		elapsed: elapsed, p50: q(0.50), p90: q(0.90), p99: q(0.99), mx: all[len(all)-1]}, nil
}

// request is the infer POST every run sends; release it with
// fasthttp.ReleaseRequest.
func (c config) request() *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(c.url)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(c.body)
	return req
}

// probe sends one request so a wrong URL fails before the run.
func probe(client *fasthttp.HostClient, c config) error {
	req, resp := c.request(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
		return fmt.Errorf("probe %s: %w", c.url, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("probe %s: status %d: %.200s", c.url, resp.StatusCode(), resp.Body())
	}
	return nil
}
