package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/mlflowproto"
	"github.com/flywheel-ml/flywheel/server/oip"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

func (s *Server) live(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusOK) }

func (s *Server) readyHandler(c *fiber.Ctx) error {
	if !s.ready.Load() {
		return c.SendStatus(fiber.StatusServiceUnavailable)
	}
	return c.SendStatus(fiber.StatusOK)
}

func (s *Server) versionHandler(c *fiber.Ctx) error {
	return c.SendString(s.version)
}

func (s *Server) serverMetadata(c *fiber.Ctx) error {
	return c.JSON(oip.ServerMetadata{Name: s.name, Version: s.version, Extensions: []string{"model_repository", "mlflow_scoring", binarydata.Extension}})
}

func params(c *fiber.Ctx) (string, int64, error) {
	model := strings.Clone(c.Params("model"))
	v, err := parseVersion(c.Params("version"))
	return model, v, err
}

func specsMeta(specs []tensor.Spec) []oip.TensorMetadata {
	out := make([]oip.TensorMetadata, len(specs))
	for i, sp := range specs {
		shape := sp.Shape
		if shape == nil {
			shape = []int64{}
		}
		out[i] = oip.TensorMetadata{Name: sp.Name, Datatype: string(sp.DataType), Shape: shape}
	}
	return out
}

func (s *Server) modelMetadata(c *fiber.Ctx) error {
	model, version, err := params(c)
	if err != nil {
		return err
	}
	l, err := s.repo.Acquire(model, version)
	if err != nil {
		return err
	}
	defer l.Release()
	md := oip.ModelMetadata{Name: model, Platform: oip.Platform, Inputs: specsMeta(l.Inputs), Outputs: specsMeta(l.Outputs),
		Parameters: cardParameters(l.Card, l.Version)}
	if version == 0 {
		vis, _ := s.repo.Model(model)
		for _, vi := range vis {
			if vi.State == repository.StateReady {
				md.Versions = append(md.Versions, strconv.FormatInt(vi.Version, 10))
			}
		}
	} else {
		md.Versions = []string{strconv.FormatInt(l.Version, 10)}
	}
	return c.JSON(md)
}

func (s *Server) modelReady(c *fiber.Ctx) error {
	model, version, err := params(c)
	if err != nil {
		return err
	}
	vis, err := s.repo.Model(model)
	if err != nil {
		return err
	}
	if version > 0 {
		known := false
		for _, vi := range vis {
			known = known || vi.Version == version
		}
		if !known {
			return fmt.Errorf("%w: model %q has no version %d", repository.ErrVersionNotFound, model, version)
		}
	}
	if !s.repo.Ready(model, version) {
		return c.SendStatus(fiber.StatusServiceUnavailable)
	}
	return c.SendStatus(fiber.StatusOK)
}

func (s *Server) index(c *fiber.Ctx) error {
	var req oip.RepositoryIndexRequest
	if len(c.Body()) > 0 {
		if err := checkJSON(c); err != nil {
			return err
		}
		if err := json.Unmarshal(c.Body(), &req); err != nil {
			return &oip.DecodeError{Reason: "invalid JSON body: " + err.Error()}
		}
	}
	out := []oip.IndexEntry{}
	for _, vi := range s.repo.Index() {
		if req.Ready && vi.State != repository.StateReady {
			continue
		}
		e := oip.IndexEntry{Name: vi.Model, State: vi.State, Reason: vi.Reason}
		if vi.Version > 0 {
			e.Version = strconv.FormatInt(vi.Version, 10)
		}
		out = append(out, e)
	}
	return c.JSON(out)
}

func (s *Server) load(c *fiber.Ctx) error {
	model, _, _ := params(c)
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Minute)
	defer cancel()
	if err := s.repo.Load(ctx, model); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusOK)
}

func (s *Server) unload(c *fiber.Ctx) error {
	model, _, _ := params(c)
	if err := s.repo.Unload(c.UserContext(), model); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusOK)
}

// run executes a leased version and records metrics and observations.
func (s *Server) run(c *fiber.Ctx, l *repository.Lease, start time.Time, rid, protocol string, inputs []tensor.Tensor, p map[string]any) ([]tensor.Tensor, error) {
	ctx := c.UserContext()
	if ctx == context.Background() {
		ctx = s.deadlines.context(time.Now())
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.InferTimeout)
		defer cancel()
	}
	var outs []tensor.Tensor
	var err error
	var tm repository.Timing
	if tr, ok := l.Runner.(repository.TimedRunner); ok {
		outs, tm, err = tr.RunTimed(ctx, inputs)
	} else {
		t0 := time.Now()
		outs, err = l.Runner.Run(ctx, inputs)
		tm = repository.Timing{Compute: time.Since(t0), Executions: 1} // no queue without a batcher
	}
	rec := metrics.Inference{Model: l.Model, Version: l.Version, OK: err == nil, Executions: tm.Executions,
		Request: time.Since(start).Seconds(), Queue: tm.Queue.Seconds(), Compute: tm.Compute.Seconds()}
	if len(inputs) > 0 {
		rec.Rows = inputs[0].Rows()
	}
	s.metrics.ObserveInference(rec)
	if err == nil && ctx.Err() != nil { // finished, but after the deadline (one long operator)
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("model %q version %d: %w", l.Model, l.Version, ctx.Err())
		}
		return nil, fmt.Errorf("%w: model %q version %d: %w", errInference, l.Model, l.Version, err)
	}
	if len(s.obs) > 0 {
		o := Observation{Model: l.Model, Version: l.Version, RequestID: rid, Time: start, Protocol: protocol,
			Parameters: p, Inputs: inputs, Outputs: outs, Card: l.Card}
		for _, ob := range s.obs {
			ob.Observe(o)
		}
	}
	return outs, nil
}

func (s *Server) infer(c *fiber.Ctx) error {
	start := s.now()
	model, version, err := params(c)
	if err != nil {
		return err
	}
	headerLength, err := inferContent(c)
	if err != nil {
		return err
	}
	l, err := s.repo.Acquire(model, version)
	if err != nil {
		return err
	}
	defer l.Release()
	dec := oip.Decoder{Inputs: l.Inputs, Outputs: l.Outputs}
	var req *oip.Request
	if headerLength == "" {
		req, err = dec.Decode(c.Body())
	} else {
		req, err = dec.DecodeBinary(c.Body(), headerLength)
	}
	if err != nil {
		s.metrics.ObserveInference(metrics.Inference{Model: l.Model, Version: l.Version})
		return err
	}
	rid := requestID(c)
	if req.ID != "" {
		rid = req.ID
		c.Set(fiber.HeaderXRequestID, rid)
		c.Locals(ridKey, rid)
	}
	outs, err := s.run(c, l, start, rid, "oip", req.Inputs, req.Parameters)
	if err != nil {
		return err
	}
	outs, binary := req.Select(outs)
	res := oip.Response{Model: l.Model, Version: strconv.FormatInt(l.Version, 10), ID: rid, Outputs: outs}
	// The body is encoded into a pooled buffer and copied into fasthttp's
	// own (pooled) response buffer: no allocation per response.
	buf := tensorjson.GetBuffer()
	defer tensorjson.PutBuffer(buf)
	if binary != nil {
		var n int
		if buf.B, n, err = oip.AppendBinaryResponse(buf.B, res, binary); err != nil {
			return err
		}
		c.Set(binarydata.HeaderContentLength, strconv.Itoa(n))
		c.Set(fiber.HeaderContentType, binarydata.ContentType)
	} else {
		if buf.B, err = oip.AppendResponse(buf.B, res); err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	}
	c.Response().SetBody(buf.B)
	return nil
}

func (s *Server) invocations(c *fiber.Ctx) error {
	start := s.now()
	if err := checkJSON(c); err != nil {
		return err
	}
	model := strings.Clone(c.Query("model"))
	version, err := parseVersion(c.Query("version"))
	if err != nil {
		return err
	}
	if model == "" {
		model = s.cfg.MLflowModel
	}
	if model == "" {
		names := map[string]bool{}
		for _, vi := range s.repo.Index() {
			names[vi.Model] = true
		}
		if len(names) != 1 {
			return fmt.Errorf("%w: the server has %d models; choose one with ?model=<name>", errAmbiguousModel, len(names))
		}
		for n := range names {
			model = n
		}
	}
	l, err := s.repo.Acquire(model, version)
	if err != nil {
		return err
	}
	defer l.Release()
	var features []string
	if l.Card != nil {
		features = l.Card.FeatureNames()
	}
	inputs, p, err := mlflowproto.Decode(c.Body(), l.Inputs, features, 0)
	if err != nil {
		s.metrics.ObserveInference(metrics.Inference{Model: l.Model, Version: l.Version})
		return err
	}
	outs, err := s.run(c, l, start, requestID(c), "mlflow", inputs, p)
	if err != nil {
		return err
	}
	body, err := mlflowproto.Encode(outs)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}
