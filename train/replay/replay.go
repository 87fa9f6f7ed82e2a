// Package replay streams dataset rows, day by day from a start date, to
// serve as Open Inference Protocol requests, and posts each day's true value
// as feedback once its label delay has passed — a simulated production
// stream for the retraining loop. It counts what it sent and what failed and
// measures the live error of every model version that answered.
package replay

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/internal/validate"
	"github.com/flywheel-ml/flywheel/server/oip"
)

// DateLayout is the format of dates in datasets, ids and parameters.
const DateLayout = "2006-01-02"

// FeatureFunc turns a row's raw values into the model's feature vector: the
// shared feature function, so replay sends exactly what training used.
type FeatureFunc func(values map[string]float64, date time.Time) ([]float64, error)

// Record is one dataset row.
type Record struct {
	Date   time.Time
	Values map[string]float64 // every numeric column except the target
	Label  float64
}

// ReadCSV reads a dataset CSV with a date column and a target column.
func ReadCSV(path, dateColumn, target string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	di, ti := -1, -1
	for i, h := range header {
		switch h {
		case dateColumn:
			di = i
		case target:
			ti = i
		}
	}
	if di < 0 || ti < 0 {
		return nil, fmt.Errorf("%s: need columns %q and %q", path, dateColumn, target)
	}
	var out []Record
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		d, err := time.Parse(DateLayout, rec[di])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: date %q: %w", path, line, rec[di], err)
		}
		row := Record{Date: d, Values: map[string]float64{}}
		for i, h := range header {
			if i == di {
				continue
			}
			v, err := strconv.ParseFloat(rec[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s %q: %w", path, line, h, rec[i], err)
			}
			if i == ti {
				row.Label = v
			} else {
				row.Values[h] = v
			}
		}
		out = append(out, row)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Date.Before(out[j].Date) })
	return out, nil
}

// Config configures a replay.
type Config struct {
	ServeURL      string
	Model         string
	InputName     string        // OIP input name; read from the model metadata when empty
	From, Until   time.Time     // days to replay (Until zero: to the end)
	DaysPerSecond float64       // replay speed
	LabelDelay    int           // days after its prediction that a day's label is posted
	MaxRequests   int           // 0 = no limit
	Timeout       time.Duration // per HTTP request
	ProgressEvery time.Duration // progress line interval (0 = none)
	// Observe, when set, is called (from Run's goroutine) with every answered
	// request: the day, the version that answered, its prediction and the
	// day's true value — e.g. to compare versions on the same days.
	Observe func(Prediction) `json:"-"`
}

// Prediction is one answered replay request.
type Prediction struct {
	Date       time.Time
	Version    string
	Prediction float64
	Label      float64
	At         time.Time // when the answer arrived
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Model: "ridership", DaysPerSecond: 10, LabelDelay: 1, Timeout: 10 * time.Second, ProgressEvery: time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(c.ServeURL == "", "serve URL is empty")
	v.If(c.Model == "", "model is empty")
	v.If(c.DaysPerSecond <= 0 || math.IsInf(c.DaysPerSecond, 0) || math.IsNaN(c.DaysPerSecond), "days per second %v must be positive", c.DaysPerSecond)
	v.If(c.LabelDelay < 0, "label delay %d is negative", c.LabelDelay)
	v.If(c.MaxRequests < 0, "max requests %d is negative", c.MaxRequests)
	v.If(!c.Until.IsZero() && c.Until.Before(c.From), "until %s is before from %s", c.Until.Format(DateLayout), c.From.Format(DateLayout))
	v.If(c.Timeout <= 0, "timeout %s must be positive", c.Timeout)
	return v.Err("")
}

// VersionStats is the live quality of one model version on the replay.
type VersionStats struct {
	Requests int     `json:"requests"`
	Labelled int     `json:"labelled"`
	AbsError float64 `json:"abs_error_sum"`
	SqError  float64 `json:"squared_error_sum"`
}

// MAE is the mean absolute error over labelled predictions.
func (v *VersionStats) MAE() float64 {
	if v.Labelled == 0 {
		return math.NaN()
	}
	return v.AbsError / float64(v.Labelled)
}

// Stats counts a replay.
type Stats struct {
	Sent          int                      `json:"sent"`
	Failed        int                      `json:"failed"`
	Labels        int                      `json:"labels"`
	LabelsFailed  int                      `json:"labels_failed"`
	First         string                   `json:"first,omitempty"`
	Last          string                   `json:"last,omitempty"`
	Versions      map[string]*VersionStats `json:"versions"`
	FirstFailures []string                 `json:"first_failures,omitempty"`
}

func (s *Stats) fail(msg string) {
	s.Failed++
	if len(s.FirstFailures) < 10 {
		s.FirstFailures = append(s.FirstFailures, msg)
	}
}

// Line is a one-line summary.
func (s *Stats) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s sent %d failed %d labels %d labels_failed %d", s.Last, s.Sent, s.Failed, s.Labels, s.LabelsFailed)
	vs := make([]string, 0, len(s.Versions))
	for v := range s.Versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { a, _ := strconv.Atoi(vs[i]); b, _ := strconv.Atoi(vs[j]); return a < b })
	for _, v := range vs {
		st := s.Versions[v]
		fmt.Fprintf(&b, " | v%s requests %d mae %.3f (%d labelled)", v, st.Requests, st.MAE(), st.Labelled)
	}
	return b.String()
}

// Replayer runs one replay.
type Replayer struct {
	cfg      Config
	rows     []Record
	features FeatureFunc
	http     *http.Client
	progress io.Writer
}

// New returns a replayer over rows (sorted by date).
func New(cfg Config, rows []Record, features FeatureFunc, progress io.Writer) (*Replayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if features == nil {
		return nil, errors.New("replay: no feature function")
	}
	if progress == nil {
		progress = io.Discard
	}
	return &Replayer{cfg: cfg, rows: rows, features: features, http: &http.Client{Timeout: cfg.Timeout}, progress: progress}, nil
}

type pending struct {
	id      string
	due     int // tick at which the label is posted
	label   float64
	pred    float64
	version string
}

// Run replays until the rows, Until or MaxRequests are exhausted, or ctx is
// done, then posts the labels still pending (when ctx is not done).
func (r *Replayer) Run(ctx context.Context) (*Stats, error) {
	st := &Stats{Versions: map[string]*VersionStats{}}
	input := r.cfg.InputName
	if input == "" {
		name, err := r.inputName(ctx)
		if err != nil {
			return st, err
		}
		input = name
	}
	var days []Record
	for _, row := range r.rows {
		if row.Date.Before(r.cfg.From) || (!r.cfg.Until.IsZero() && row.Date.After(r.cfg.Until)) {
			continue
		}
		days = append(days, row)
		if r.cfg.MaxRequests > 0 && len(days) == r.cfg.MaxRequests {
			break
		}
	}
	if len(days) == 0 {
		return st, fmt.Errorf("no rows between %s and %s", r.cfg.From.Format(DateLayout), r.cfg.Until.Format(DateLayout))
	}
	interval := time.Duration(float64(time.Second) / r.cfg.DaysPerSecond)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var queue []pending
	lastProgress := time.Now()
	for i := 0; i < len(days) || len(queue) > 0; i++ {
		if i < len(days) {
			d := days[i]
			ds := d.Date.Format(DateLayout)
			if st.First == "" {
				st.First = ds
			}
			st.Last = ds
			pred, version, err := r.infer(ctx, input, d)
			st.Sent++
			if err != nil {
				if ctx.Err() != nil {
					return st, nil
				}
				st.fail(ds + ": " + err.Error())
			} else {
				vs := st.Versions[version]
				if vs == nil {
					vs = &VersionStats{}
					st.Versions[version] = vs
				}
				vs.Requests++
				if r.cfg.Observe != nil {
					r.cfg.Observe(Prediction{Date: d.Date, Version: version, Prediction: pred, Label: d.Label, At: time.Now()})
				}
				queue = append(queue, pending{id: "replay-" + ds, due: i + r.cfg.LabelDelay, label: d.Label, pred: pred, version: version})
			}
		}
		var due []pending
		for len(queue) > 0 && queue[0].due <= i {
			due = append(due, queue[0])
			queue = queue[1:]
		}
		if len(due) > 0 {
			failed, err := r.postLabels(ctx, due)
			if ctx.Err() != nil {
				return st, nil
			}
			if err != nil {
				failed = len(due)
				if len(st.FirstFailures) < 10 {
					st.FirstFailures = append(st.FirstFailures, "feedback: "+err.Error())
				}
			}
			st.Labels += len(due) - failed
			st.LabelsFailed += failed
			if failed == 0 {
				for _, p := range due {
					vs := st.Versions[p.version]
					vs.Labelled++
					vs.AbsError += math.Abs(p.pred - p.label)
					vs.SqError += (p.pred - p.label) * (p.pred - p.label)
				}
			}
		}
		if r.cfg.ProgressEvery > 0 && time.Since(lastProgress) >= r.cfg.ProgressEvery {
			fmt.Fprintln(r.progress, "replay", st.Line())
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			return st, nil
		case <-tick.C:
		}
	}
	fmt.Fprintln(r.progress, "replay done", st.Line())
	return st, nil
}

func (r *Replayer) inputName(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("/v2/models/"+url.PathEscape(r.cfg.Model)), nil)
	if err != nil {
		return "", err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("model metadata: %w", err)
	}
	defer resp.Body.Close()
	var meta oip.ModelMetadata
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("model metadata of %s: %s", r.cfg.Model, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil || len(meta.Inputs) == 0 {
		return "", fmt.Errorf("model metadata of %s: no inputs (%v)", r.cfg.Model, err)
	}
	return meta.Inputs[0].Name, nil
}

func (r *Replayer) url(path string) string { return strings.TrimRight(r.cfg.ServeURL, "/") + path }

// infer sends one day and returns the first output value and the version.
func (r *Replayer) infer(ctx context.Context, input string, d Record) (float64, string, error) {
	x, err := r.features(d.Values, d.Date)
	if err != nil {
		return 0, "", fmt.Errorf("features: %w", err)
	}
	ds := d.Date.Format(DateLayout)
	data, _ := json.Marshal(x)
	body, _ := json.Marshal(oip.InferenceRequest{ID: "replay-" + ds, Parameters: map[string]any{"date": ds},
		Inputs: []oip.RequestInput{{Name: input, Shape: []int64{1, int64(len(x))}, Datatype: "FP32", Data: data}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url("/v2/models/"+url.PathEscape(r.cfg.Model)+"/infer"), bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out oip.InferenceResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, "", fmt.Errorf("decoding response: %w", err)
	}
	if out.ID != "replay-"+ds {
		return 0, "", fmt.Errorf("response id %q, want %q", out.ID, "replay-"+ds)
	}
	if len(out.Outputs) == 0 {
		return 0, "", errors.New("response has no outputs")
	}
	vals := flatten(out.Outputs[0].Data)
	if len(vals) == 0 {
		return 0, "", errors.New("first output has no data")
	}
	return vals[0], out.ModelVersion, nil
}

// flatten reads OIP data (decoded JSON), flat or nested, as numbers.
func flatten(v any) []float64 {
	var out []float64
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case float64:
			out = append(out, t)
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// postLabels posts labels in one request and returns how many failed.
func (r *Replayer) postLabels(ctx context.Context, due []pending) (int, error) {
	type label struct {
		ID    string  `json:"id"`
		Value float64 `json:"value"`
	}
	ls := make([]label, len(due))
	for i, p := range due {
		ls[i] = label{ID: p.id, Value: p.label}
	}
	body, _ := json.Marshal(ls)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url("/v1/feedback"), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var res struct {
		Failed int `json:"failed"`
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusMultiStatus:
		_ = json.Unmarshal(b, &res)
		return res.Failed, nil
	}
	return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}
