package api_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// incompleteRequests are requests the server cannot finish reading: it
// waits for the rest until its read timeout. The third is what
// FuzzHTTPRequest found (issue 15): fasthttp takes any Transfer-Encoding
// but "identity", even an empty one, as chunked and ignores Content-Length.
var incompleteRequests = []struct{ name, req string }{
	{"declared body longer than sent", "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 73\r\n\r\n{"},
	{"unfinished chunked body", "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"},
	{"empty Transfer-Encoding beside Content-Length", "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTrAnsfer-EnCoding:\r\nContent-Length: 10\r\n\r\n2\r\nh}\r\n0\r\n"},
	{"unfinished header block", "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Ty"},
	{"unfinished request line", "POST /v2/mod"},
	{"nothing sent", ""},
}

// send dials addr and writes req.
func send(t *testing.T, addr, req string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// outcome reads what the server does with c until deadline: "closed", an
// HTTP status, or "pending" when neither happened.
func outcome(c net.Conn, deadline time.Time) string {
	_ = c.SetReadDeadline(deadline)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "pending"
		}
		return "closed"
	}
	res.Body.Close()
	return res.Status
}

// TestIncompleteRequestsHoldOnlyTheirConnection: a client that sends part
// of a request, or trickles it, holds one connection until the read
// timeout, never the server. While many such connections wait, other
// clients are answered; each waiting one then gets 408 or a close at the
// read timeout; and a client that half-closes after its partial request is
// let go at once.
func TestIncompleteRequestsHoldOnlyTheirConnection(t *testing.T) {
	const readTimeout = 3 * time.Second
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.ReadTimeout = readTimeout })
	addr := strings.TrimPrefix(ts.url, "http://")

	// Half-closed: the server sees the end of the request at once.
	start := time.Now()
	for _, r := range incompleteRequests {
		c := send(t, addr, r.req)
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := outcome(c, start.Add(readTimeout)); got == "pending" || strings.HasPrefix(got, "408") || strings.HasPrefix(got, "2") {
			t.Errorf("%s, then half-closed: %s before the %s read timeout, want a 4xx or a close at once", r.name, got, readTimeout)
		}
	}

	// Held open: eight connections of each kind wait for the read timeout.
	start = time.Now()
	var held []struct {
		name string
		c    net.Conn
	}
	for range 8 {
		for _, r := range incompleteRequests {
			held = append(held, struct {
				name string
				c    net.Conn
			}{r.name, send(t, addr, r.req)})
		}
	}
	// A client that keeps sending, a byte every 100 ms, gets no more time:
	// the read timeout is for the whole request.
	trickle := send(t, addr, "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	go func() {
		for range 200 { // 20 s at most; ends when the server has closed
			time.Sleep(100 * time.Millisecond)
			if _, err := trickle.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	held = append(held, struct {
		name string
		c    net.Conn
	}{"body trickled a byte every 100 ms", trickle})
	for i := range 3 {
		if r := ts.post(t, "/v2/models/mlp/infer", refRequest()); r.code != 200 {
			t.Fatalf("infer %d while %d incomplete requests wait: %d %s", i, len(held), r.code, r.body)
		}
	}
	if ts.srv.OpenConnections() < len(held) {
		t.Errorf("%d open connections, want the %d incomplete ones still waiting", ts.srv.OpenConnections(), len(held))
	}
	answered := time.Since(start)
	if answered >= readTimeout {
		t.Fatalf("the other client's answers took %s, not before the %s read timeout: cannot tell them apart", answered, readTimeout)
	}
	for _, h := range held {
		got := outcome(h.c, start.Add(readTimeout+10*time.Second))
		if got != "closed" && !strings.HasPrefix(got, "408") {
			t.Errorf("%s, held open: %s, want 408 or a close at the %s read timeout", h.name, got, readTimeout)
		}
	}
	if waited := time.Since(start); waited < readTimeout-100*time.Millisecond {
		t.Errorf("incomplete requests ended after %s, before the %s read timeout: they were not waiting", waited, readTimeout)
	}
}
