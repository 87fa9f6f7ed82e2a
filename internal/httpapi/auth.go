package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Bearer-token errors; the error handler answers them 401 with a
// WWW-Authenticate challenge.
var (
	ErrNoToken    = errors.New("missing bearer token")
	ErrWrongToken = errors.New("wrong bearer token")
)

// CheckBearer compares an Authorization header with "Bearer <token>": the
// scheme case-insensitively (RFC 9110 §11.1), the token in constant time
// (both sides hashed, so the comparison does not leak the token's length).
// An empty configured token never matches.
func CheckBearer(header, token string) error {
	scheme, got, ok := strings.Cut(strings.TrimSpace(header), " ")
	got = strings.TrimSpace(got)
	if !ok || !strings.EqualFold(scheme, "bearer") || got == "" {
		return ErrNoToken
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	if token == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return ErrWrongToken
	}
	return nil
}

// RequireBearer returns middleware that lets a request through only with
// "Authorization: Bearer <token>". what names the guarded surface in the
// 403 answered when token is empty and open is false ("repository writes
// are disabled: ..."); with open true and no token everyone passes.
func RequireBearer(token string, open bool, disabled string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if token == "" {
			if open {
				return c.Next()
			}
			return Errorf(fiber.StatusForbidden, "%s", disabled)
		}
		if err := CheckBearer(c.Get(fiber.HeaderAuthorization), token); err != nil {
			return err
		}
		return c.Next()
	}
}
