// Package api is the HTTP front of the inference server (fiber v2): the
// Open Inference Protocol REST API with the repository extension, MLflow's
// scoring protocol, health and /metrics. Handlers are thin: they decode with
// oip or mlflowproto, run the model through its repository.Runner and
// return errors that one ErrorHandler maps to a status and {"error": "..."}.
// The OIP infer route also speaks Triton's binary tensor data extension
// (server/binarydata): oip.Decoder.DecodeBinary when the request has an
// Inference-Header-Content-Length header, binary outputs when asked for.
//
// Non-tensor outputs: an ONNX sequence output (such as the per-row class
// probabilities of a scikit-learn classifier exported with ZipMap) is
// returned as {"name": ..., "datatype": "SEQUENCE", "shape": [N], "data":
// [{"0": 0.9, "1": 0.1}, ...]}: one JSON value per element, maps as objects
// whose keys are the map keys written as strings, tensors as
// {"datatype","shape","data"} objects. An ONNX map output is "datatype":
// "MAP" with one JSON object as data. Model metadata lists such outputs with
// datatype SEQUENCE or MAP and shape [-1].
package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/flywheel-ml/flywheel/internal/httpapi"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/oip"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
)

// Config holds the HTTP settings.
type Config struct {
	BodyLimit    int           // bytes; larger bodies get 413
	ReadTimeout  time.Duration // whole request read
	WriteTimeout time.Duration
	IdleTimeout  time.Duration // keep-alive
	InferTimeout time.Duration // one inference, decode to encode
	AdminToken   string        // bearer token for repository load/unload
	// InsecureAdmin opens repository load/unload to anyone when AdminToken
	// is empty; without it they answer 403 until a token is configured.
	InsecureAdmin bool
	// MLflowModel is the model POST /invocations serves when the request has
	// no ?model= and the repository holds more than one model.
	MLflowModel string
}

// DefaultConfig returns 8 MiB bodies, 30 s read/write, 120 s idle and 30 s
// inference timeouts.
func DefaultConfig() Config {
	return Config{BodyLimit: 8 << 20, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 120 * time.Second, InferTimeout: 30 * time.Second}
}

// Validate checks the settings.
func (c Config) Validate() error {
	if c.BodyLimit <= 0 {
		return fmt.Errorf("body limit %d must be positive", c.BodyLimit)
	}
	for name, d := range map[string]time.Duration{"read timeout": c.ReadTimeout, "write timeout": c.WriteTimeout, "idle timeout": c.IdleTimeout, "inference timeout": c.InferTimeout} {
		if d < 0 {
			return fmt.Errorf("%s %s is negative", name, d)
		}
	}
	return nil
}

// Options are the server's dependencies.
type Options struct {
	Config     Config
	Repository *repository.Repository
	Logger     *slog.Logger
	Metrics    *metrics.Metrics    // nil: no inference metrics
	Gatherer   prometheus.Gatherer // serves /metrics when set
	Observers  []Observer
	Name       string // server name in GET /v2
	Version    string // server version in GET /v2 and /version
	NewID      func() string
	Now        func() time.Time
}

// Server is the HTTP server.
type Server struct {
	app     *fiber.App
	cfg     Config
	repo    *repository.Repository
	log     *slog.Logger
	metrics *metrics.Metrics
	obs     []Observer
	name    string
	version string
	newID   func() string
	now     func() time.Time
	ready   atomic.Bool
	// draining: every response asks its client to close the connection, so
	// keep-alive clients leave before the listener closes.
	draining atomic.Bool
	errs     httpapi.Errors
	admin    fiber.Handler
	// deadlines are the inference contexts (--infer-timeout)
	deadlines deadlines
}

// New builds the fiber app and its routes. The server reports ready once
// SetReady(true) is called.
func New(o Options) (*Server, error) {
	if o.Config == (Config{}) {
		o.Config = DefaultConfig()
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Repository == nil {
		return nil, errors.New("api: a repository is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NewID == nil {
		o.NewID = idGenerator()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Name == "" {
		o.Name = "flywheel"
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Server{cfg: o.Config, repo: o.Repository, log: o.Logger, metrics: o.Metrics, obs: o.Observers,
		name: o.Name, version: o.Version, newID: o.NewID, now: o.Now, deadlines: deadlines{timeout: o.Config.InferTimeout}}
	s.app = fiber.New(fiber.Config{
		AppName:               o.Name,
		BodyLimit:             o.Config.BodyLimit,
		ReadTimeout:           o.Config.ReadTimeout,
		WriteTimeout:          o.Config.WriteTimeout,
		IdleTimeout:           o.Config.IdleTimeout,
		ErrorHandler:          s.errorHandler,
		DisableStartupMessage: true,
	})
	s.errs = httpapi.Errors{BodyLimit: o.Config.BodyLimit, Classify: classify, Logger: o.Logger}
	s.admin = httpapi.RequireBearer(o.Config.AdminToken, o.Config.InsecureAdmin,
		"repository load/unload are disabled: start serve with --admin-token (or --insecure-admin on a trusted network)")
	s.app.Use(s.middleware, httpapi.Guard(o.Config.BodyLimit))
	s.routes(o.Gatherer)
	return s, nil
}

func (s *Server) routes(g prometheus.Gatherer) {
	a := s.app
	a.Get("/v2/health/live", s.live)
	a.Get("/v2/health/ready", s.readyHandler)
	a.Get("/v2", s.serverMetadata)
	a.Get("/v2/models/:model", s.modelMetadata)
	a.Get("/v2/models/:model/versions/:version", s.modelMetadata)
	a.Get("/v2/models/:model/ready", s.modelReady)
	a.Get("/v2/models/:model/versions/:version/ready", s.modelReady)
	a.Post("/v2/models/:model/infer", s.infer)
	a.Post("/v2/models/:model/versions/:version/infer", s.infer)
	a.Post("/v2/repository/index", s.index)
	a.Post("/v2/repository/models/:model/load", s.admin, s.load)
	a.Post("/v2/repository/models/:model/unload", s.admin, s.unload)
	a.Post("/invocations", s.invocations)
	a.Get("/ping", s.readyHandler)
	a.Get("/health", s.readyHandler)
	a.Get("/version", s.versionHandler)
	if g != nil {
		h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
		a.Get("/metrics", func(c *fiber.Ctx) error {
			h(c.Context())
			return nil
		})
	}
}

// App returns the fiber app (for app.Test in tests).
func (s *Server) App() *fiber.App { return s.app }

// Routes returns the registered routes (method and pattern), without
// middleware.
func (s *Server) Routes() []fiber.Route { return s.app.GetRoutes(true) }

// OpenConnections returns the number of open client connections (a load
// signal for the dynamic batcher's hybrid dispatch).
func (s *Server) OpenConnections() int { return int(s.app.Server().GetOpenConnectionsCount()) }

// SetReady switches readiness (GET /v2/health/ready, /ping, /health).
func (s *Server) SetReady(ok bool) { s.ready.Store(ok) }

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.app.Listener(ln) }

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.SetReady(false)
	return s.app.ShutdownWithContext(ctx)
}

// Drain shuts down without cutting keep-alive clients: readiness goes
// false first (load balancers stop sending), then for delay every request
// is still served but its response carries "Connection: close", so each
// client leaves its connection after an answer instead of having an idle
// connection closed under a request it is sending; then Shutdown closes
// the listener and finishes in-flight requests until ctx is done.
func (s *Server) Drain(ctx context.Context, delay time.Duration) error {
	s.SetReady(false)
	s.draining.Store(true)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return s.app.ShutdownWithContext(ctx)
}

// Errors the handlers return; errorHandler maps them.
var (
	errMediaType      = errors.New("unsupported content type")
	errBadVersion     = errors.New("bad version")
	errInference      = errors.New("inference failed")
	errAmbiguousModel = errors.New("ambiguous model")
)

const ridKey = "request_id"

func (s *Server) middleware(c *fiber.Ctx) error {
	start := time.Now()
	rid := c.Get(fiber.HeaderXRequestID)
	if rid == "" || len(rid) > 128 {
		rid = s.newID()
	} else {
		rid = strings.Clone(rid)
	}
	c.Locals(ridKey, rid)
	c.Set(fiber.HeaderXRequestID, rid)
	if s.draining.Load() {
		c.Context().SetConnectionClose()
	}
	err := c.Next()
	if err != nil {
		if herr := s.errorHandler(c, err); herr != nil {
			c.Status(fiber.StatusInternalServerError)
		}
	}
	// Labels must not alias fasthttp's request buffers: the route's pattern
	// and method are strings owned by the router.
	route := c.Route()
	path, method := route.Path, route.Method
	if path == "/" { // only the middleware is mounted at "/": no route matched
		path, method = "unmatched", knownMethod(c.Method())
	}
	code := c.Response().StatusCode()
	d := time.Since(start)
	s.metrics.ObserveHTTP(path, method, code, d.Seconds())
	lvl := slog.LevelDebug
	if code >= 500 {
		lvl = slog.LevelError
	} else if code >= 400 {
		lvl = slog.LevelInfo
	}
	if s.log.Enabled(c.UserContext(), lvl) {
		s.log.Log(c.UserContext(), lvl, "request", ridKey, c.Locals(ridKey), "method", c.Method(), "route", path, "status", code, "duration", d)
	}
	return nil
}

// knownMethod maps a request method to a constant string (bounded labels).
func knownMethod(m string) string {
	for _, k := range []string{fiber.MethodGet, fiber.MethodHead, fiber.MethodPost, fiber.MethodPut, fiber.MethodDelete,
		fiber.MethodPatch, fiber.MethodOptions, fiber.MethodConnect, fiber.MethodTrace} {
		if m == k {
			return k
		}
	}
	return "OTHER"
}

func requestID(c *fiber.Ctx) string {
	if v, ok := c.Locals(ridKey).(string); ok {
		return v
	}
	return ""
}

// classify maps serve's domain errors to a status; httpapi.Errors does the
// rest (its own errors, fiber's, bearer errors, 500).
func classify(_ *fiber.Ctx, err error) (int, string) {
	var de *oip.DecodeError
	switch {
	case errors.As(err, &de):
		return fiber.StatusBadRequest, ""
	case errors.Is(err, errBadVersion), errors.Is(err, errAmbiguousModel):
		return fiber.StatusBadRequest, ""
	case errors.Is(err, errMediaType):
		return fiber.StatusUnsupportedMediaType, ""
	case errors.Is(err, repository.ErrModelNotFound), errors.Is(err, repository.ErrVersionNotFound):
		return fiber.StatusNotFound, ""
	case errors.Is(err, repository.ErrUnavailable), errors.Is(err, batch.ErrClosed), errors.Is(err, batch.ErrQueueFull):
		return fiber.StatusServiceUnavailable, ""
	case errors.Is(err, ort.ErrOutputTooLarge):
		return fiber.StatusUnprocessableEntity, ""
	case errors.Is(err, ort.ErrMemoryBusy):
		return fiber.StatusServiceUnavailable, ""
	case errors.Is(err, ort.ErrMemoryLimit):
		return fiber.StatusUnprocessableEntity, ""
	case errors.Is(err, context.DeadlineExceeded):
		return fiber.StatusServiceUnavailable, "inference timed out: " + err.Error()
	}
	return 0, ""
}

func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	if errors.Is(err, batch.ErrQueueFull) {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	if requestID(c) == "" { // errors raised before the middleware ran (413)
		rid := c.Get(fiber.HeaderXRequestID)
		if rid == "" || len(rid) > 128 {
			rid = s.newID()
		}
		c.Set(fiber.HeaderXRequestID, rid)
	}
	return s.errs.Handle(c, err)
}

func checkJSON(c *fiber.Ctx) error {
	ct := c.Get(fiber.HeaderContentType)
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !isJSON(mt) {
		return fmt.Errorf("%w %q: send application/json", errMediaType, ct)
	}
	return nil
}

// isJSON reports whether a media type is JSON (application/json or a +json
// type).
func isJSON(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }

// sagemakerBinary is SageMaker's content type for Triton's binary tensor
// data; its json-header-size parameter stands for the
// Inference-Header-Content-Length header.
const sagemakerBinary = "application/vnd.sagemaker-triton.binary+json"

// inferContent checks an infer request's content type (JSON, or
// application/octet-stream for the binary tensor data extension) and returns
// the length of the body's JSON part when binary tensor data follows it,
// "" for a plain JSON body.
func inferContent(c *fiber.Ctx) (headerLength string, err error) {
	headerLength = c.Get(binarydata.HeaderContentLength)
	ct := c.Get(fiber.HeaderContentType)
	if ct == "" || ct == fiber.MIMEApplicationJSON {
		// the common case without mime.ParseMediaType's parameter map
		return headerLength, nil
	}
	mt, p, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
	case mt == sagemakerBinary:
		if headerLength == "" {
			headerLength = p["json-header-size"]
		}
		return headerLength, nil
	case isJSON(mt) || mt == binarydata.ContentType:
		return headerLength, nil
	}
	return "", fmt.Errorf("%w %q: send application/json, or %s with the %s header (binary tensor data)",
		errMediaType, ct, binarydata.ContentType, binarydata.HeaderContentLength)
}

func parseVersion(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := modelrepo.ParseVersion(s)
	if err != nil {
		return 0, fmt.Errorf("%w: version %q is not a positive integer", errBadVersion, s)
	}
	return v, nil
}

// idGenerator returns request ids of a time prefix and 128 random bits
// (crypto/rand): an id is also the key of a logged prediction, so a client
// must not be able to guess another client's. The prefix is the time in
// milliseconds, 10 characters of base32hex (whose order is the ASCII order),
// then rand.Text's 26 characters: ids sort by the time they were made, so the
// prediction log's id index grows at its end like its time index. Purely
// random keys land on a random page of the index each: a commit of 1,024
// rows rewrote ~1,024 index pages, and the log's writer took a third of the
// server's CPU at c=64 instead of a fifth.
func idGenerator() func() string {
	return func() string { return newID(time.Now()) }
}

func newID(t time.Time) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUV" // base32hex: sorts like the numbers
	var b [10 + 26]byte
	ms := uint64(t.UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = digits[ms&31]
		ms >>= 5
	}
	copy(b[10:], rand.Text())
	return string(b[:])
}
