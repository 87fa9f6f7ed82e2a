// Package service is the trainer's HTTP API (fiber): the Alertmanager
// webhook, manual retraining, the job list, metrics and health. Handlers are
// thin: decoding lives in train/alert, storage in train/jobs.
package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flywheel-ml/flywheel/internal/httpapi"
	"github.com/flywheel-ml/flywheel/train/alert"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Waker is told when a job was queued (the jobs.Worker).
type Waker interface{ Wake() }

// Options are the service's parts.
type Options struct {
	Store        *jobs.Store
	Worker       Waker
	Token        string // bearer token for POST routes; required
	DefaultModel string // model of alerts without a "model" label
	// CheckModel refuses a model name that is not in the repository (an
	// alert label or retrain request naming "../outside" or a typo): the
	// request answers 400 instead of queueing a job bound to fail. Nil
	// accepts every name.
	CheckModel func(model string) error
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
}

// Service is the trainer HTTP API.
type Service struct {
	o        Options
	app      *fiber.App
	draining atomic.Bool
}

// New builds the fiber app.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("service: Store is nil")
	}
	if o.Token == "" {
		return nil, errors.New("service: a token is required (--token or --token-file)")
	}
	if o.DefaultModel == "" {
		return nil, errors.New("service: DefaultModel is empty")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Gatherer == nil {
		o.Gatherer = prometheus.NewRegistry()
	}
	s := &Service{o: o}
	s.app = fiber.New(fiber.Config{
		AppName:               "flywheel trainer",
		DisableStartupMessage: true,
		BodyLimit:             alert.MaxBodyBytes + 1024,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		ErrorHandler: httpapi.Errors{Realm: "flywheel trainer", BodyLimit: alert.MaxBodyBytes + 1024,
			Classify: classify, Logger: o.Logger}.Handle,
	})
	s.app.Use(httpapi.Guard(alert.MaxBodyBytes + 1024))
	auth := httpapi.RequireBearer(o.Token, false, "the trainer has no token")
	s.app.Post("/v1/alerts", auth, s.alerts)
	s.app.Post("/v1/retrain", auth, s.retrain)
	s.app.Get("/v1/jobs", auth, s.listJobs)
	s.app.Get("/v1/jobs/:id", auth, s.getJob)
	s.app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})))
	s.app.Get("/health/live", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusOK) })
	s.app.Get("/health/ready", s.ready)
	return s, nil
}

// App returns the fiber app (for Listener, Test and Shutdown).
func (s *Service) App() *fiber.App { return s.app }

// Routes returns the registered "METHOD /path" patterns, sorted.
func (s *Service) Routes() []string {
	var out []string
	for _, r := range s.app.GetRoutes(true) {
		if r.Method == fiber.MethodHead {
			continue
		}
		out = append(out, r.Method+" "+r.Path)
	}
	sort.Strings(out)
	return out
}

// Drain makes readiness fail (called first on shutdown).
func (s *Service) Drain() { s.draining.Store(true) }

// classify maps the trainer's domain errors to a status for httpapi.Errors.
func classify(_ *fiber.Ctx, err error) (int, string) {
	var ve *alert.ValidationError
	switch {
	case errors.As(err, &ve):
		return fiber.StatusBadRequest, ""
	case errors.Is(err, jobs.ErrNotFound):
		return fiber.StatusNotFound, ""
	}
	return 0, ""
}

// AlertResponse is the answer to a webhook delivery.
type AlertResponse struct {
	Status string     `json:"status"` // "queued", "duplicate" or "ignored"
	Reason string     `json:"reason,omitempty"`
	Jobs   []jobs.Job `json:"jobs,omitempty"`
}

func (s *Service) alerts(c *fiber.Ctx) error {
	m, err := alert.Decode(bytes.NewReader(c.Body()))
	if err != nil {
		return err
	}
	retrain := m.Retrain()
	if len(retrain) == 0 {
		s.o.Logger.Info("webhook without retrain alerts", "group_key", m.GroupKey, "status", m.Status)
		return c.JSON(AlertResponse{Status: "ignored", Reason: `no firing alert labelled action="retrain"`})
	}
	byModel := map[string][]alert.Alert{}
	var models []string
	for _, a := range retrain {
		model := a.Labels[alert.ModelLabel]
		if model == "" {
			model = s.o.DefaultModel
		}
		if _, ok := byModel[model]; !ok {
			models = append(models, model)
		}
		byModel[model] = append(byModel[model], a)
	}
	for _, model := range models {
		if err := s.checkModel(model); err != nil {
			return err
		}
	}
	resp := AlertResponse{Status: "duplicate"}
	for _, model := range models {
		key := m.GroupKey
		if len(models) > 1 {
			key += "#" + model
		}
		as := byModel[model]
		j, created, err := s.o.Store.Enqueue(c.UserContext(), jobs.Request{Model: model, Trigger: jobs.TriggerAlert, GroupKey: key,
			Alerts: alert.Names(as), FiredAt: alert.FiredAt(as)})
		if err != nil {
			return err
		}
		if created {
			resp.Status = "queued"
		}
		s.o.Logger.Info("retrain alert", "group_key", key, "model", model, "job_id", j.ID, "created", created, "alerts", alert.Names(as))
		resp.Jobs = append(resp.Jobs, j)
	}
	if s.o.Worker != nil {
		s.o.Worker.Wake()
	}
	return c.Status(fiber.StatusAccepted).JSON(resp)
}

// RetrainRequest is the body of POST /v1/retrain; every field is optional.
type RetrainRequest struct {
	Model string `json:"model"`
	pipeline.Overrides
}

func (s *Service) retrain(c *fiber.Ctx) error {
	var req RetrainRequest
	if body := bytes.TrimSpace(c.Body()); len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return httpapi.Errorf(fiber.StatusBadRequest, "invalid retrain request: %v", err)
		}
	}
	if err := req.Overrides.Validate(); err != nil {
		return httpapi.Errorf(fiber.StatusBadRequest, "invalid retrain request: %v", err)
	}
	if req.Model == "" {
		req.Model = s.o.DefaultModel
	}
	if err := s.checkModel(req.Model); err != nil {
		return err
	}
	var params json.RawMessage
	if o := req.Overrides; o.Algorithm != "" || o.Params != nil || o.WindowDays != nil || o.Margin != nil || o.Threshold != nil {
		params, _ = json.Marshal(o)
	}
	j, _, err := s.o.Store.Enqueue(c.UserContext(), jobs.Request{Model: req.Model, Trigger: jobs.TriggerManual, Params: params})
	if err != nil {
		return err
	}
	s.o.Logger.Info("manual retrain", "model", req.Model, "job_id", j.ID)
	if s.o.Worker != nil {
		s.o.Worker.Wake()
	}
	return c.Status(fiber.StatusAccepted).JSON(j)
}

// checkModel answers 400 for a model the repository does not hold.
func (s *Service) checkModel(model string) error {
	if s.o.CheckModel == nil {
		return nil
	}
	if err := s.o.CheckModel(model); err != nil {
		return httpapi.Errorf(fiber.StatusBadRequest, "model %q: %v", truncate(model), err)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (s *Service) listJobs(c *fiber.Ctx) error {
	state := c.Query("state")
	if state != "" && !jobs.ValidState(state) {
		return httpapi.Errorf(fiber.StatusBadRequest, "state %q is not one of queued, running, succeeded, rejected, failed", state)
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return httpapi.Errorf(fiber.StatusBadRequest, "limit %q must be an integer in [1, 1000]", v)
		}
		limit = n
	}
	list, err := s.o.Store.List(c.UserContext(), jobs.ListOptions{State: state, Limit: limit})
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"jobs": list})
}

func (s *Service) getJob(c *fiber.Ctx) error {
	j, err := s.o.Store.Get(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(j)
}

func (s *Service) ready(c *fiber.Ctx) error {
	if s.draining.Load() {
		return httpapi.Errorf(fiber.StatusServiceUnavailable, "shutting down")
	}
	if _, err := s.o.Store.CountState(c.UserContext(), jobs.StateQueued); err != nil {
		return httpapi.Errorf(fiber.StatusServiceUnavailable, "job store: %v", err)
	}
	return c.SendStatus(fiber.StatusOK)
}
