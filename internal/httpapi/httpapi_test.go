package httpapi_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/gofiber/fiber/v2"

	"github.com/flywheel-ml/flywheel/internal/httpapi"
)

func TestCheckBearer(t *testing.T) {
	cases := []struct {
		header, token string
		want          error
	}{
		{"Bearer s3cret", "s3cret", nil},
		{"bearer s3cret", "s3cret", nil},
		{"BEARER  s3cret ", "s3cret", nil},
		{"", "s3cret", httpapi.ErrNoToken},
		{"Bearer ", "s3cret", httpapi.ErrNoToken},
		{"Basic czNjcmV0", "s3cret", httpapi.ErrNoToken},
		{"Bearers3cret", "s3cret", httpapi.ErrNoToken},
		{"Bearer s3cre", "s3cret", httpapi.ErrWrongToken},
		{"Bearer s3cret2", "s3cret", httpapi.ErrWrongToken},
		{"Bearer x", "", httpapi.ErrWrongToken},
	}
	for _, tc := range cases {
		if err := httpapi.CheckBearer(tc.header, tc.token); !errors.Is(err, tc.want) {
			t.Errorf("CheckBearer(%q, %q) = %v, want %v", tc.header, tc.token, err, tc.want)
		}
	}
}

func compress(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "br":
		w = brotli.NewWriter(&buf)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newApp echoes the body's length behind Guard with a 1 MiB limit.
func newApp(limit int) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: limit,
		ErrorHandler: httpapi.Errors{BodyLimit: limit}.Handle})
	app.Use(httpapi.Guard(limit))
	app.Post("/", func(c *fiber.Ctx) error { return c.SendString(strconv.Itoa(len(c.Body()))) })
	app.Get("/auth", httpapi.RequireBearer("tok", false, "off"), func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/closed", httpapi.RequireBearer("", false, "writes are disabled"), func(c *fiber.Ctx) error { return c.SendString("ok") })
	return app
}

func TestGuardInflatesWithinLimit(t *testing.T) {
	const limit = 1 << 20
	app := newApp(limit)
	bomb := bytes.Repeat([]byte{'0'}, 64<<20) // 64 MiB of zeros: ~64 KiB gzip
	cases := []struct {
		name, enc string
		body      []byte
		code      int
		want      string
	}{
		{"gzip bomb", "gzip", compress(t, "gzip", bomb), 413, "inflates (Content-Encoding gzip) to more than the limit of 1048576 bytes"},
		{"deflate bomb", "deflate", compress(t, "deflate", bomb), 413, "more than the limit of 1048576 bytes"},
		{"br bomb", "br", compress(t, "br", bomb), 413, "more than the limit of 1048576 bytes"},
		{"gzip in gzip bomb", "gzip, gzip", compress(t, "gzip", compress(t, "gzip", bomb)), 413, "more than the limit"},
		{"gzip at the limit", "gzip", compress(t, "gzip", bomb[:limit]), 200, "1048576"},
		{"br small", "br", compress(t, "br", []byte("hello")), 200, "5"},
		{"identity", "identity", []byte("hello"), 200, "5"},
		{"corrupt gzip", "gzip", []byte("not gzip"), 400, "invalid gzip body"},
		{"unknown encoding", "zstd", []byte("x"), 415, "unsupported Content-Encoding"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "/", bytes.NewReader(tc.body))
			req.Header.Set("Content-Encoding", tc.enc)
			res, err := app.Test(req, 30_000)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Fatalf("got %d %s, want %d containing %q", res.StatusCode, b, tc.code, tc.want)
			}
		})
	}
}

func TestRequireBearer(t *testing.T) {
	app := newApp(1 << 10)
	for _, tc := range []struct {
		path, auth string
		code       int
		want       string
	}{
		{"/auth", "bearer tok", 200, "ok"},
		{"/auth", "Bearer tok", 200, "ok"},
		{"/auth", "Bearer nope", 401, "wrong bearer token"},
		{"/auth", "", 401, "missing bearer token"},
		{"/closed", "Bearer ", 403, "writes are disabled"},
	} {
		req, _ := http.NewRequest("GET", tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %q: got %d %s, want %d %q", tc.path, tc.auth, res.StatusCode, b, tc.code, tc.want)
		}
		if tc.code == 401 && res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
}

// TestGuardRejectsUnparsableTarget: a Host that fasthttp cannot combine
// with the request target leaves the path empty; the answer is 400 naming
// the Host, not 404 "no route for GET " (FuzzHTTPRequest found it).
func TestGuardRejectsUnparsableTarget(t *testing.T) {
	app := newApp(1 << 10)
	app.Get("/ok", func(c *fiber.Ctx) error { return c.SendString("ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	for _, tc := range []struct {
		name, target, host string
		code               int
		want               string
	}{
		{"slash in Host", "/ok", "x/ok", 400, `invalid request target "/ok" with Host "x/ok": invalid character "/" in host name`},
		{"space in Host", "/ok", "x y", 400, `with Host "x y": invalid character " " in host name`},
		{"escape in Host", "/ok", "%2e", 400, `with Host "%2e": invalid URL escape`},
		{"folded Host", "/ok", "x\r\n \r", 400, "invalid request target"},
		{"plain", "/ok", "x", 200, "ok"},
		{"port", "/ok", "x:8080", 200, "ok"},
		{"IPv6", "/ok", "[::1]:8080", 200, "ok"},
		{"absolute form", "http://y/ok", "x", 200, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, b := rawRequest(t, ln.Addr().String(), "GET "+tc.target+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
			if got := strings.ReplaceAll(string(b), `\"`, `"`); res.StatusCode != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("got %d %s, want %d %q", res.StatusCode, got, tc.code, tc.want)
			}
			if tc.code == 400 && !res.Close {
				t.Errorf("connection kept open after an unparsable target")
			}
		})
	}
}

// TestGuardRejectsAmbiguousLength sends raw requests over a socket: the
// client libraries refuse to write two Content-Length headers.
func TestGuardRejectsAmbiguousLength(t *testing.T) {
	app := newApp(1 << 10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	for _, tc := range []struct {
		name, headers, body string
		code                int
		want                string
	}{
		{"differing", "Content-Length: 5\r\nContent-Length: 3\r\n", "hello", 400, "two Content-Length headers with different values"},
		{"same twice", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello", 200, "5"},
		{"with chunked", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, b := rawRequest(t, ln.Addr().String(), "POST / HTTP/1.1\r\nHost: x\r\n"+tc.headers+"\r\n"+tc.body)
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Fatalf("got %d %s, want %d %q", res.StatusCode, b, tc.code, tc.want)
			}
			if tc.code == 400 && !res.Close {
				t.Errorf("connection kept open after an ambiguous request")
			}
		})
	}
}

// rawRequest writes req as it is over a new connection to addr (client
// libraries refuse to write the malformed requests these tests need) and
// returns the response and its body.
func rawRequest(t *testing.T, addr, req string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return res, b
}
