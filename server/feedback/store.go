// Package feedback attaches ground truth to logged predictions: labels are
// stored durably next to the prediction log (package predlog), update the
// live-quality counters (labels, absolute and squared error, correct
// classifications per model and version), and are exported as NDJSON for
// retraining. It also serves a logged prediction with its lineage. The HTTP
// handlers are in api.go.
//
// Idempotency: a label is keyed by the prediction id. Sending the same id
// again with the same value changes nothing ("unchanged"); with a different
// value the latest label wins ("updated"), and the quality counters count
// it again, since counters cannot go down.
package feedback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

// ErrNotFound is returned for an id that is neither logged nor labelled.
var ErrNotFound = errors.New("prediction not found")

// Label is one ground-truth value for a prediction id. Model, Version,
// Features and Parameters are only needed for predictions that were not
// logged (sampled out, or made elsewhere); for a logged prediction the
// logged values are used and Model, when given, must match.
type Label struct {
	ID         string             `json:"id"`
	Value      *float64           `json:"value"`
	Model      string             `json:"model,omitempty"`
	Version    int                `json:"version,omitempty"`
	Features   map[string]float64 `json:"features,omitempty"`
	Parameters map[string]any     `json:"parameters,omitempty"`
}

// Status of one label after Add.
const (
	StatusCreated   = "created"
	StatusUpdated   = "updated"
	StatusUnchanged = "unchanged"
	StatusError     = "error"
)

// Result is the outcome of one label.
type Result struct {
	Index  int    `json:"index"`
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Flusher makes recently recorded predictions visible (predlog.Log).
type Flusher interface {
	Flush(ctx context.Context) error
}

// CardLookup returns the model card of a version, or nil when unknown.
type CardLookup func(model string, version int) *modelrepo.Card

// Options are the dependencies of a Store.
type Options struct {
	DB *predlog.Store
	// Log, when set, is flushed before a label's id is declared unknown, so
	// feedback sent right after its prediction finds it.
	Log Flusher
	// Cards gives the task (classification counts correct labels) and the
	// lineage of predictions.
	Cards CardLookup
	// Registerer receives the live-quality metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
	// FlushTimeout bounds the wait for the prediction log (default 5s).
	FlushTimeout time.Duration
	// SharedWait, with a database shared by several serve replicas, is how
	// long a label for an id not found yet waits for it: the prediction may
	// still sit in another replica's log queue (set it to about twice the
	// log's flush interval; 0: no wait, the id is unknown at once).
	SharedWait time.Duration
}

// Store adds labels, exports labelled rows and reads predictions.
type Store struct {
	db           *predlog.Store
	log          Flusher
	cards        CardLookup
	logger       *slog.Logger
	now          func() time.Time
	flushTimeout time.Duration
	sharedWait   time.Duration
	m            *metrics
}

// New builds a Store.
func New(opts Options) (*Store, error) {
	if opts.DB == nil {
		return nil, errors.New("feedback: no database")
	}
	s := &Store{db: opts.DB, log: opts.Log, cards: opts.Cards, logger: opts.Logger, now: opts.Now, flushTimeout: opts.FlushTimeout,
		sharedWait: opts.SharedWait}
	if s.logger == nil {
		s.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.logger = s.logger.With("component", "feedback")
	if s.now == nil {
		s.now = time.Now
	}
	if s.cards == nil {
		s.cards = func(string, int) *modelrepo.Card { return nil }
	}
	if s.flushTimeout <= 0 {
		s.flushTimeout = 5 * time.Second
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

var (
	modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// MaxFeatures is the most features a label may carry.
const MaxFeatures = 4096

// Validate checks one label on its own.
func (l *Label) Validate() error {
	switch {
	case l.ID == "":
		return errors.New("id is missing")
	case !validID(l.ID):
		return fmt.Errorf("id %q must be 1 to 256 bytes of UTF-8 without control characters", truncate(l.ID))
	case l.Value == nil:
		return errors.New("value is missing")
	case math.IsNaN(*l.Value) || math.IsInf(*l.Value, 0):
		return errors.New("value must be a finite number")
	case l.Model != "" && !modelPattern.MatchString(l.Model):
		return fmt.Errorf("model %q is not a valid model name", truncate(l.Model))
	case l.Version < 0:
		return fmt.Errorf("version %d must be positive", l.Version)
	case len(l.Features) > MaxFeatures:
		return fmt.Errorf("%d features, at most %d", len(l.Features), MaxFeatures)
	}
	for name, v := range l.Features {
		if name == "" || len(name) > 256 {
			return errors.New("feature names must be 1 to 256 characters")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("feature %q must be a finite number", truncate(name))
		}
	}
	return nil
}

// validID accepts the ids serve logs: request ids (any client string) and
// "<id>/<row>", up to 256 bytes of UTF-8 without control characters.
func validID(id string) bool {
	if id == "" || len(id) > 256 || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Add stores labels and returns one result per label, in order. Valid
// labels are committed in one transaction before Add returns; invalid ones
// (bad fields, unknown id without features and model, model mismatch) get
// an error result and do not stop the others. The returned error is set
// only when nothing could be stored (the database failed).
func (s *Store) Add(ctx context.Context, labels []Label) ([]Result, error) {
	results := make([]Result, len(labels))
	preds := map[string]predlog.Record{}
	var missing []int
	for i := range labels {
		l := &labels[i]
		results[i] = Result{Index: i, ID: l.ID}
		if err := l.Validate(); err != nil {
			results[i].Status, results[i].Error = StatusError, err.Error()
			continue
		}
		if _, seen := preds[l.ID]; seen {
			continue
		}
		r, err := s.db.Get(ctx, l.ID)
		switch {
		case err == nil:
			preds[l.ID] = r
		case errors.Is(err, predlog.ErrNotFound):
			missing = append(missing, i)
		default:
			return nil, err
		}
	}
	// Predictions made a moment ago may still sit in the log's queue.
	if len(missing) > 0 && s.log != nil {
		fctx, cancel := context.WithTimeout(ctx, s.flushTimeout)
		err := s.log.Flush(fctx)
		cancel()
		if err != nil {
			s.logger.Warn("flushing the prediction log before joining labels", "err", err)
		}
	}
	if len(missing) > 0 {
		if err := s.await(ctx, labels, missing, preds); err != nil {
			return nil, err
		}
	}

	type counted struct {
		model, version string
		label, pred    float64
		classification bool
	}
	// Validate, join and check every label first; the valid ones are
	// stored together, in order.
	var (
		put   []predlog.Label
		index []int // put[k] is labels[index[k]]
	)
	labelledAt := s.now()
	for i := range labels {
		l := &labels[i]
		if results[i].Status == StatusError { // failed validation
			continue
		}
		row, err := join(l, preds)
		if err != nil {
			results[i].Status, results[i].Error = StatusError, err.Error()
			continue
		}
		if err := Plausible(s.cards(row.Model, row.Version), *l.Value); err != nil {
			results[i].Status, results[i].Error = StatusError, err.Error()
			continue
		}
		row.LabelledAt = labelledAt
		put, index = append(put, row), append(index, i)
	}
	if len(put) == 0 {
		return results, nil
	}
	changes, err := s.db.PutLabels(ctx, put)
	if err != nil {
		return nil, fmt.Errorf("storing labels: %w", err)
	}
	var count []counted
	for k, ch := range changes {
		i, row := index[k], &put[k]
		switch ch {
		case predlog.LabelUnchanged:
			results[i].Status = StatusUnchanged
			continue
		case predlog.LabelUpdated:
			results[i].Status = StatusUpdated
		default:
			results[i].Status = StatusCreated
		}
		if row.Prediction != nil && row.Version != 0 {
			c := s.cards(row.Model, row.Version)
			count = append(count, counted{
				model: row.Model, version: strconv.Itoa(row.Version),
				label: row.Value, pred: *row.Prediction,
				classification: c != nil && c.Task == "classification",
			})
		}
	}
	for _, c := range count {
		s.m.observe(c.model, c.version, c.label, c.pred, c.classification)
	}
	return results, nil
}

// await reads the missing ids again, and with a shared database keeps
// reading for up to sharedWait while some are still missing: another
// replica may not have written its prediction yet.
func (s *Store) await(ctx context.Context, labels []Label, missing []int, preds map[string]predlog.Record) error {
	deadline := time.Now().Add(s.sharedWait)
	for {
		left := missing[:0:0]
		for _, i := range missing {
			if _, ok := preds[labels[i].ID]; ok {
				continue
			}
			r, err := s.db.Get(ctx, labels[i].ID)
			switch {
			case err == nil:
				preds[r.ID] = r
			case errors.Is(err, predlog.ErrNotFound):
				left = append(left, i)
			default:
				return err
			}
		}
		if len(left) == 0 || !time.Now().Before(deadline) {
			return nil
		}
		missing = left
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Plausible checks a label value against the model card (nil: any finite
// value): a classification label is a class index (an integer from 0, below
// the number of classes when the card's first output has a fixed width);
// a regression label lies within the card's prediction reference widened
// by ten times its span on each side, which keeps every real target and
// refuses values such as -1e30 that would dominate a retraining.
func Plausible(c *modelrepo.Card, v float64) error {
	if c == nil {
		return nil
	}
	if c.Task == "classification" {
		if v < 0 || v != math.Trunc(v) {
			return fmt.Errorf("value %g is not a class index of model %q (an integer from 0)", v, c.Name)
		}
		if len(c.Outputs) > 0 {
			if sh := c.Outputs[0].Shape; len(sh) == 2 && sh[1] > 1 && v >= float64(sh[1]) {
				return fmt.Errorf("value %g is not a class of model %q (0 to %d)", v, c.Name, sh[1]-1)
			}
		}
		return nil
	}
	if c.Reference == nil || c.Reference.Prediction == nil || len(c.Reference.Prediction.Edges) < 2 {
		return nil
	}
	e := c.Reference.Prediction.Edges
	lo, hi := e[0], e[len(e)-1]
	w := 10 * max(hi-lo, math.Abs(hi), math.Abs(lo), 1)
	if v < lo-w || v > hi+w {
		return fmt.Errorf("value %g is outside the plausible range [%g, %g] of model %q (its card's prediction reference, widened by ten spans)", v, lo-w, hi+w, c.Name)
	}
	return nil
}

// join takes the model, version, features and prediction of a label from
// its logged prediction, or from the label itself when none was logged.
func join(l *Label, preds map[string]predlog.Record) (predlog.Label, error) {
	row := predlog.Label{ID: l.ID, Value: *l.Value}
	if r, ok := preds[l.ID]; ok {
		if l.Model != "" && l.Model != r.Model {
			return predlog.Label{}, fmt.Errorf("model %q does not match the logged prediction's model %q", l.Model, r.Model)
		}
		row.Model, row.Version, row.PredictedAt = r.Model, r.Version, r.PredictedAt
		features := r.Features
		if len(features) == 0 {
			features = l.Features
		}
		b, err := json.Marshal(orEmpty(features))
		if err != nil {
			return predlog.Label{}, err
		}
		row.Features = b
		if len(r.Parameters) > 0 {
			if row.Parameters, err = json.Marshal(r.Parameters); err != nil {
				return predlog.Label{}, err
			}
		}
		row.Prediction = r.Prediction
		return row, nil
	}
	if len(l.Features) == 0 || l.Model == "" {
		return predlog.Label{}, fmt.Errorf("unknown prediction id %q (not logged, sampled out or pruned): send model and features with the label", truncate(l.ID))
	}
	row.Model, row.Version = l.Model, l.Version
	b, err := json.Marshal(l.Features)
	if err != nil {
		return predlog.Label{}, err
	}
	row.Features = b
	if len(l.Parameters) > 0 {
		if row.Parameters, err = json.Marshal(l.Parameters); err != nil {
			return predlog.Label{}, fmt.Errorf("parameters: %w", err)
		}
	}
	return row, nil
}

func orEmpty(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}

// Row is one labelled row of an export (one NDJSON line).
type Row struct {
	ID          string          `json:"id"`
	Model       string          `json:"model"`
	Version     *int64          `json:"version"`
	PredictedAt *time.Time      `json:"predicted_at"`
	LabelledAt  time.Time       `json:"labelled_at"`
	Features    json.RawMessage `json:"features"`
	Label       float64         `json:"label"`
	Prediction  *float64        `json:"prediction"`
	Parameters  json.RawMessage `json:"parameters"`
}

// Export writes the labelled rows of model labelled at or after since to w,
// one JSON object per line, oldest label first, and returns how many it
// wrote. Rows are streamed as they are read.
func (s *Store) Export(ctx context.Context, model string, since time.Time, w io.Writer) (int, error) {
	it, err := s.Rows(ctx, model, since)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	return it.Encode(w)
}

// Rows starts an export: the query runs now, so a failing database is
// reported before anything is streamed; the caller must Close the result.
func (s *Store) Rows(ctx context.Context, model string, since time.Time) (*Rows, error) {
	rows, err := s.db.Labels(ctx, model, since)
	if err != nil {
		return nil, fmt.Errorf("exporting labels: %w", err)
	}
	return &Rows{rows: rows}, nil
}

// Rows is an export in progress.
type Rows struct {
	rows *predlog.LabelRows
}

// Close releases the query.
func (r *Rows) Close() error { return r.rows.Close() }

// Encode writes the rows as NDJSON and returns how many it wrote.
func (r *Rows) Encode(w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	for r.rows.Next() {
		l := r.rows.Label()
		row := Row{ID: l.ID, Model: l.Model, LabelledAt: l.LabelledAt, Features: l.Features, Label: l.Value,
			Prediction: l.Prediction, Parameters: l.Parameters}
		if l.Version != 0 {
			v := int64(l.Version)
			row.Version = &v
		}
		if !l.PredictedAt.IsZero() {
			row.PredictedAt = &l.PredictedAt
		}
		if row.Parameters == nil {
			row.Parameters = json.RawMessage("{}")
		}
		if err := enc.Encode(&row); err != nil {
			return n, fmt.Errorf("writing export: %w", err)
		}
		n++
	}
	if err := r.rows.Err(); err != nil {
		return n, fmt.Errorf("exporting labels: %w", err)
	}
	return n, nil
}

// Lineage is where a model version comes from (its model card).
type Lineage struct {
	RunID          string            `json:"run_id,omitempty"`
	Tracker        string            `json:"tracker,omitempty"`
	Algorithm      string            `json:"algorithm,omitempty"`
	Dataset        modelrepo.Dataset `json:"dataset"`
	GitCommit      string            `json:"git_commit,omitempty"`
	TrainerVersion string            `json:"trainer_version,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
}

// LabelInfo is the label of a prediction.
type LabelInfo struct {
	Value      float64   `json:"value"`
	LabelledAt time.Time `json:"labelled_at"`
	Revisions  int       `json:"revisions"`
}

// Prediction is a logged prediction with its label and lineage.
type Prediction struct {
	predlog.Record
	// Logged is false when the prediction itself was not logged and only
	// its label (sent with features) is known.
	Logged  bool       `json:"logged"`
	Label   *LabelInfo `json:"label,omitempty"`
	Lineage *Lineage   `json:"lineage,omitempty"`
}

// Get returns the prediction with id, its label if any and the lineage of
// its model version, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Prediction, error) {
	rec, err := s.db.Get(ctx, id)
	if errors.Is(err, predlog.ErrNotFound) && s.log != nil {
		fctx, cancel := context.WithTimeout(ctx, s.flushTimeout)
		if ferr := s.log.Flush(fctx); ferr != nil {
			s.logger.Warn("flushing the prediction log before a lookup", "err", ferr)
		}
		cancel()
		rec, err = s.db.Get(ctx, id)
	}
	p := Prediction{Record: rec, Logged: err == nil}
	if err != nil && !errors.Is(err, predlog.ErrNotFound) {
		return Prediction{}, err
	}
	l, lerr := s.db.Label(ctx, id)
	switch {
	case lerr == nil:
		p.Label = &LabelInfo{Value: l.Value, LabelledAt: l.LabelledAt, Revisions: l.Revisions}
		if !p.Logged { // pruned or never logged: answer from the label's copy
			p.ID, p.Model, p.Version, p.PredictedAt = id, l.Model, l.Version, l.PredictedAt
			if err := json.Unmarshal(l.Features, &p.Features); err != nil {
				return Prediction{}, fmt.Errorf("decoding label features: %w", err)
			}
			if l.Parameters != nil {
				if err := json.Unmarshal(l.Parameters, &p.Parameters); err != nil {
					return Prediction{}, fmt.Errorf("decoding label parameters: %w", err)
				}
			}
			p.Prediction = l.Prediction
		}
	case errors.Is(lerr, predlog.ErrNoLabel):
		if !p.Logged {
			return Prediction{}, ErrNotFound
		}
	default:
		return Prediction{}, lerr
	}
	if c := s.cards(p.Model, p.Version); c != nil {
		p.Lineage = &Lineage{
			RunID: c.Training.RunID, Tracker: c.Training.Tracker, Algorithm: c.Training.Algorithm,
			Dataset: c.Training.Dataset, GitCommit: c.Training.GitCommit,
			TrainerVersion: c.Training.TrainerVersion, CreatedAt: c.CreatedAt,
		}
	}
	return p, nil
}

// AddVersion starts the quality series of a served version at zero and
// exports the thresholds of its card as flywheel_model_error_threshold.
// Call it when a version is loaded; series are kept after unloading so late
// labels of an old version still count.
func (s *Store) AddVersion(model string, version int, c *modelrepo.Card) {
	s.m.addVersion(model, strconv.Itoa(version), c)
}
