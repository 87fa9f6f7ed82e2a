package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gofiber/fiber/v2"
)

// Error is an error with an HTTP status; its message is the answer's
// "error" field.
type Error struct {
	Code int
	Msg  string
	Err  error // wrapped cause, if any
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Errors is the one error mapping of a fiber app: *Error and *fiber.Error
// keep their status, bearer errors answer 401 with a challenge, Classify
// maps the app's own domain errors, anything else is 500. The answer is
// {"error": "<message>"}.
type Errors struct {
	Realm     string // WWW-Authenticate realm on 401 (default "flywheel")
	BodyLimit int    // named in the 413 message of fiber's body limit
	// Classify returns the status of an app's domain error (0: unknown)
	// and, optionally, a message replacing err.Error().
	Classify func(c *fiber.Ctx, err error) (code int, msg string)
	Logger   *slog.Logger // logs 5xx other than 503 (nil: none)
}

// Status returns the status and message of err.
func (e Errors) Status(c *fiber.Ctx, err error) (int, string) {
	var he *Error
	var fe *fiber.Error
	switch {
	case errors.As(err, &he):
		return he.Code, he.Msg
	case errors.Is(err, ErrNoToken), errors.Is(err, ErrWrongToken):
		return fiber.StatusUnauthorized, err.Error()
	}
	if e.Classify != nil {
		if code, msg := e.Classify(c, err); code != 0 {
			if msg == "" {
				msg = err.Error()
			}
			return code, msg
		}
	}
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			if e.BodyLimit > 0 {
				return fe.Code, fmt.Sprintf("request body is larger than the limit of %d bytes", e.BodyLimit)
			}
		case fiber.StatusNotFound:
			return fe.Code, fmt.Sprintf("no route for %s %s", c.Method(), c.Path())
		}
		return fe.Code, fe.Message
	}
	return fiber.StatusInternalServerError, err.Error()
}

// Handle is a fiber.ErrorHandler.
func (e Errors) Handle(c *fiber.Ctx, err error) error {
	code, msg := e.Status(c, err)
	if code == fiber.StatusUnauthorized {
		realm := e.Realm
		if realm == "" {
			realm = "flywheel"
		}
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="`+realm+`"`)
	}
	if code >= 500 && code != fiber.StatusServiceUnavailable && e.Logger != nil {
		e.Logger.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	return Send(c, code, msg)
}

// Send answers {"error": msg} with code.
func Send(c *fiber.Ctx, code int, msg string) error {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
	return c.Status(code).Send(b)
}
