package httpapi

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Guard returns middleware for every route of an app:
//
//   - a request with two Content-Length headers of different values, or
//     with both Content-Length and Transfer-Encoding, is answered 400 and
//     its connection closed (RFC 9112 §6.3: its framing is ambiguous, the
//     request-smuggling pattern behind a proxy);
//   - a request whose target fasthttp cannot parse together with its Host
//     header (a Host holding '/', '?', a space or a '%' escape) has no path,
//     so every route would answer 404 "no route"; it is answered 400 naming
//     the Host and the target, and its connection closed;
//   - a body with Content-Encoding gzip, deflate or br is inflated here,
//     streaming and stopping at limit bytes (413 naming the limit), and
//     replaced by its inflated form with the header removed, so handlers
//     read plain bytes and fiber never inflates a body without a limit
//     (fasthttp's BodyGunzip has none). Other encodings answer 415.
func Guard(limit int) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if c.Path() == "" {
			c.Context().SetConnectionClose()
			return badTarget(&c.Request().Header)
		}
		if err := checkFraming(c.Request().Header.RawHeaders()); err != nil {
			c.Context().SetConnectionClose()
			return err
		}
		var encodings []string
		c.Request().Header.VisitAll(func(k, v []byte) {
			if strings.EqualFold(string(k), fiber.HeaderContentEncoding) {
				for _, e := range strings.Split(string(v), ",") {
					if e = strings.ToLower(strings.TrimSpace(e)); e != "" && e != "identity" {
						encodings = append(encodings, e)
					}
				}
			}
		})
		if len(encodings) == 0 {
			return c.Next()
		}
		body, err := Inflate(c.Request().Body(), encodings, limit)
		if err != nil {
			return err
		}
		c.Request().Header.Del(fiber.HeaderContentEncoding)
		c.Request().SetBodyRaw(body)
		return c.Next()
	}
}

// badTarget names why the request's target and Host give no path.
func badTarget(h *fasthttp.RequestHeader) error {
	reason := "no path"
	var u fasthttp.URI
	if err := u.Parse(h.Host(), h.RequestURI()); err != nil {
		reason = err.Error()
	}
	return Errorf(fiber.StatusBadRequest, "invalid request target %q with Host %q: %s",
		truncate(string(h.RequestURI())), truncate(string(h.Host())), reason)
}

// checkFraming rejects two differing Content-Length headers and
// Content-Length beside Transfer-Encoding. fasthttp keeps only the last
// Content-Length, so the raw header block is read.
func checkFraming(raw []byte) error {
	var cl string
	var hasCL, hasTE bool
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		v := string(bytes.TrimSpace(value))
		switch {
		case bytes.EqualFold(name, []byte(fiber.HeaderContentLength)):
			if hasCL && v != cl {
				return Errorf(fiber.StatusBadRequest, "two Content-Length headers with different values (%q, %q): the request's length is ambiguous", truncate(cl), truncate(v))
			}
			cl, hasCL = v, true
		case bytes.EqualFold(name, []byte(fiber.HeaderTransferEncoding)):
			hasTE = true
		}
	}
	if hasCL && hasTE {
		return Errorf(fiber.StatusBadRequest, "both Content-Length and Transfer-Encoding: the request's length is ambiguous")
	}
	return nil
}

// ErrTooLarge is wrapped by Inflate's 413 error.
var ErrTooLarge = errors.New("request body too large")

// Inflate decodes body through encodings (in the order they were applied,
// as in the Content-Encoding header), reading at most limit bytes out of
// each stage: a body that would inflate past limit fails with a 413 *Error
// without being inflated further.
func Inflate(body []byte, encodings []string, limit int) ([]byte, error) {
	for i := len(encodings) - 1; i >= 0; i-- {
		var r io.Reader
		var err error
		switch e := encodings[i]; e {
		case "gzip", "x-gzip":
			r, err = gzip.NewReader(bytes.NewReader(body))
		case "deflate":
			r, err = zlib.NewReader(bytes.NewReader(body))
		case "br":
			r = brotli.NewReader(bytes.NewReader(body))
		default:
			return nil, Errorf(fiber.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: send gzip, deflate, br or identity", truncate(e))
		}
		if err != nil {
			return nil, Errorf(fiber.StatusBadRequest, "invalid %s body: %v", encodings[i], err)
		}
		out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
		if err != nil {
			return nil, Errorf(fiber.StatusBadRequest, "invalid %s body: %v", encodings[i], err)
		}
		if len(out) > limit {
			return nil, &Error{Code: fiber.StatusRequestEntityTooLarge, Err: ErrTooLarge,
				Msg: fmt.Sprintf("request body inflates (Content-Encoding %s) to more than the limit of %d bytes", encodings[i], limit)}
		}
		body = out
	}
	return body, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
