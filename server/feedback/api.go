package feedback

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flywheel-ml/flywheel/internal/httpapi"
)

// APIOptions configure the HTTP handlers.
type APIOptions struct {
	Store *Store
	// AdminToken guards the export (Authorization: Bearer <token>); when
	// empty the export answers 403.
	AdminToken string
	// FeedbackToken, when set, is required on POST /v1/feedback (a label
	// feed's own token, separate from the admin token) and accepted on
	// GET /v1/predictions/{id}.
	FeedbackToken string
	// Rate limits the labels one client (IP address) may send per second
	// (default 1000; negative: no limit), with bursts up to MaxItems.
	Rate float64
	// MaxBodyBytes limits a feedback request body (default 8 MiB).
	MaxBodyBytes int
	// MaxItems limits the labels of one request (default 10,000).
	MaxItems int
	// ExportTimeout bounds one export (default 5 minutes).
	ExportTimeout time.Duration
	Logger        *slog.Logger
}

// API serves POST /v1/feedback, GET /v1/feedback/export and
// GET /v1/predictions/{id}.
type API struct {
	store      *Store
	token      string
	feedTok    string
	limit      *limiter
	maxBody    int
	maxItems   int
	expTimeout time.Duration
	logger     *slog.Logger
}

// NewAPI builds the handlers.
func NewAPI(opts APIOptions) (*API, error) {
	if opts.Store == nil {
		return nil, errors.New("feedback API: no store")
	}
	a := &API{store: opts.Store, maxBody: opts.MaxBodyBytes, maxItems: opts.MaxItems, expTimeout: opts.ExportTimeout, logger: opts.Logger}
	if a.maxBody <= 0 {
		a.maxBody = 8 << 20
	}
	if a.maxItems <= 0 {
		a.maxItems = 10000
	}
	if a.expTimeout <= 0 {
		a.expTimeout = 5 * time.Minute
	}
	if a.logger == nil {
		a.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a.logger = a.logger.With("component", "feedback")
	a.feedTok = opts.FeedbackToken
	if opts.Rate == 0 {
		opts.Rate = 1000
	}
	if opts.Rate > 0 {
		a.limit = newLimiter(opts.Rate, a.maxItems, time.Now)
	}
	if opts.AdminToken != "" {
		a.token = opts.AdminToken
	}
	return a, nil
}

// Register adds the routes to router (the server's fiber app or a group).
func (a *API) Register(router fiber.Router) {
	router.Post("/v1/feedback", a.postFeedback)
	router.Get("/v1/feedback/export", a.export)
	router.Get("/v1/predictions/*", a.getPrediction)
}

func fail(c *fiber.Ctx, code int, format string, args ...any) error {
	return httpapi.Send(c, code, fmt.Sprintf(format, args...))
}

// FeedbackResponse is the answer to POST /v1/feedback.
type FeedbackResponse struct {
	Results   []Result `json:"results"`
	Created   int      `json:"created"`
	Updated   int      `json:"updated"`
	Unchanged int      `json:"unchanged"`
	Failed    int      `json:"failed"`
}

// postFeedback takes one label object, an array of labels, or
// {"labels": [...]}. It answers 200 when every label is stored, 207 when
// some failed and 422 when all failed, with one result per label.
func (a *API) postFeedback(c *fiber.Ctx) error {
	if a.feedTok != "" {
		if err := httpapi.CheckBearer(c.Get(fiber.HeaderAuthorization), a.feedTok); err != nil {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="flywheel"`)
			return fail(c, fiber.StatusUnauthorized, "%v: POST /v1/feedback needs the feedback token", err)
		}
	}
	if !strings.HasPrefix(strings.ToLower(c.Get(fiber.HeaderContentType)), fiber.MIMEApplicationJSON) {
		return fail(c, fiber.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	body := c.Body()
	if len(body) > a.maxBody {
		return fail(c, fiber.StatusRequestEntityTooLarge, "body of %d bytes exceeds the limit of %d bytes", len(body), a.maxBody)
	}
	items, err := splitItems(body)
	if err != nil {
		return fail(c, fiber.StatusBadRequest, "invalid feedback body: %v", err)
	}
	if len(items) == 0 {
		return fail(c, fiber.StatusBadRequest, "no labels in the request")
	}
	if len(items) > a.maxItems {
		return fail(c, fiber.StatusRequestEntityTooLarge, "%d labels exceed the limit of %d per request", len(items), a.maxItems)
	}
	if ok, wait := a.limit.take(c.IP(), len(items)); !ok {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(wait.Seconds())+1))
		return fail(c, fiber.StatusTooManyRequests, "%d labels exceed this client's rate of %g labels/s (burst %d): retry later", len(items), a.limit.rate, a.maxItems)
	}
	results := make([]Result, len(items))
	var labels []Label
	var index []int
	for i, raw := range items {
		var l Label
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			results[i] = Result{Index: i, ID: l.ID, Status: StatusError, Error: "invalid label: " + err.Error()}
			continue
		}
		labels, index = append(labels, l), append(index, i)
	}
	if len(labels) > 0 {
		ctx, cancel := context.WithTimeout(c.UserContext(), 30*time.Second)
		defer cancel()
		stored, err := a.store.Add(ctx, labels)
		if err != nil {
			a.logger.Error("storing feedback", "labels", len(labels), "err", err)
			return fail(c, fiber.StatusServiceUnavailable, "labels not stored: %v", err)
		}
		for k, r := range stored {
			r.Index = index[k]
			results[index[k]] = r
		}
	}
	resp := FeedbackResponse{Results: results}
	for _, r := range results {
		switch r.Status {
		case StatusCreated:
			resp.Created++
		case StatusUpdated:
			resp.Updated++
		case StatusUnchanged:
			resp.Unchanged++
		default:
			resp.Failed++
		}
	}
	code := fiber.StatusOK
	switch {
	case resp.Failed == len(results):
		code = fiber.StatusUnprocessableEntity
	case resp.Failed > 0:
		code = fiber.StatusMultiStatus
	}
	return c.Status(code).JSON(resp)
}

// splitItems returns the label objects of a body: an object, an array of
// objects, or {"labels": [...]}.
func splitItems(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty body")
	}
	switch body[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(body, &items); err != nil {
			return nil, err
		}
		return items, nil
	case '{':
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(body, &probe); err != nil {
			return nil, err
		}
		if raw, ok := probe["labels"]; ok {
			if len(probe) != 1 {
				return nil, errors.New(`an object with "labels" must have no other fields`)
			}
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("labels: %w", err)
			}
			return items, nil
		}
		return []json.RawMessage{body}, nil
	default:
		return nil, errors.New("expected a label object, an array of labels or {\"labels\": [...]}")
	}
}

// export streams the labelled rows of ?model= labelled since ?since= as
// NDJSON (admin token).
func (a *API) export(c *fiber.Ctx) error {
	if a.token == "" {
		return fail(c, fiber.StatusForbidden, "export is disabled: the server has no admin token")
	}
	if httpapi.CheckBearer(c.Get(fiber.HeaderAuthorization), a.token) != nil {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="flywheel"`)
		return fail(c, fiber.StatusUnauthorized, "a valid admin bearer token is required")
	}
	var bad error
	c.Context().QueryArgs().VisitAll(func(k, _ []byte) {
		if key := string(k); key != "model" && key != "since" && bad == nil {
			bad = fmt.Errorf("unknown query parameter %q (want model, since)", key)
		}
	})
	if bad != nil {
		return fail(c, fiber.StatusBadRequest, "%v", bad)
	}
	model := c.Query("model")
	if model == "" {
		return fail(c, fiber.StatusBadRequest, "query parameter model is required")
	}
	if !modelPattern.MatchString(model) {
		return fail(c, fiber.StatusBadRequest, "model %q is not a valid model name", truncate(model))
	}
	since, err := parseSince(c.Query("since"))
	if err != nil {
		return fail(c, fiber.StatusBadRequest, "%v", err)
	}
	// The query runs before the status is sent; the stream outlives the
	// handler (fasthttp calls the writer afterwards), hence its own context.
	ctx, cancel := context.WithTimeout(context.Background(), a.expTimeout)
	rows, err := a.store.Rows(ctx, model, since)
	if err != nil {
		cancel()
		a.logger.Error("exporting labels", "model", model, "err", err)
		return fail(c, fiber.StatusServiceUnavailable, "export failed: %v", err)
	}
	c.Set(fiber.HeaderContentType, "application/x-ndjson")
	logger := a.logger
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer cancel()
		defer rows.Close()
		n, err := rows.Encode(w)
		if err != nil {
			// The status is sent already: a last line {"error": ...} marks
			// the export as failed.
			logger.Error("exporting labels", "model", model, "rows", n, "err", err)
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			w.Write(append(b, '\n'))
		}
		w.Flush()
	})
	return nil
}

// parseSince accepts RFC 3339, a date (YYYY-MM-DD, UTC) or Unix seconds;
// empty means from the beginning.
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Unix(n, 0), nil
	}
	return time.Time{}, fmt.Errorf("since %q is not RFC 3339, YYYY-MM-DD or Unix seconds", truncate(s))
}

// getPrediction answers a logged prediction with its label and lineage.
func (a *API) getPrediction(c *fiber.Ctx) error {
	// A prediction holds a client's features: with a token configured, only
	// its holders read them (the feedback token or the admin token).
	if a.feedTok != "" || a.token != "" {
		h := c.Get(fiber.HeaderAuthorization)
		if httpapi.CheckBearer(h, a.feedTok) != nil && httpapi.CheckBearer(h, a.token) != nil {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="flywheel"`)
			return fail(c, fiber.StatusUnauthorized, "GET /v1/predictions needs the feedback or admin bearer token")
		}
	}
	id, err := url.PathUnescape(c.Params("*"))
	if err != nil || !validID(id) {
		return fail(c, fiber.StatusBadRequest, "prediction id %q must be 1 to 256 bytes of UTF-8 without control characters", truncate(c.Params("*")))
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 10*time.Second)
	defer cancel()
	p, err := a.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return fail(c, fiber.StatusNotFound, "prediction %q not found (not logged, sampled out or pruned)", id)
	}
	if err != nil {
		a.logger.Error("reading prediction", "id", id, "err", err)
		return fail(c, fiber.StatusServiceUnavailable, "reading prediction: %v", err)
	}
	return c.JSON(p)
}
