// Package httpapi holds the HTTP conventions every Flywheel fiber app shares
// (serve, its feedback routes, the trainer): one bearer-token check, one
// error type and error handler answering {"error": "..."} with the status,
// and the request guard that rejects ambiguous framing (two differing
// Content-Length headers) and inflates compressed bodies with a cap, so a
// small gzip body cannot expand past the body limit in memory.
package httpapi
