package mlflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/flywheel-ml/flywheel/tracker"
)

// MLflow's LogBatch request limits (clients must chunk).
const (
	MaxMetricsPerBatch = 1000
	MaxParamsPerBatch  = 100
	MaxTagsPerBatch    = 100
	MaxItemsPerBatch   = 1000
)

const (
	apiPrefix      = "/api/2.0/mlflow/"
	artifactPrefix = "/api/2.0/mlflow-artifacts/artifacts/"
)

// Options builds a Client.
type Options struct {
	Config Config
	Logger *slog.Logger
	// Transport overrides the HTTP transport (tests); nil = a pooled transport.
	Transport http.RoundTripper
}

// Client is a tracker.Tracker over MLflow's REST API. It is safe for
// concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	http *retryablehttp.Client
	log  *slog.Logger

	mu           sync.Mutex
	artifactURIs map[string]string // run id → artifact_uri
}

var _ tracker.Tracker = (*Client)(nil)

// New validates the config and builds a client.
func New(opts Options) (*Client, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("mlflow config: %w", err)
	}
	base, _ := url.Parse(strings.TrimRight(opts.Config.TrackingURI, "/"))
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "tracker/mlflow")
	tr := opts.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: opts.Config.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	rc := &retryablehttp.Client{
		HTTPClient:   &http.Client{Transport: tr, Timeout: opts.Config.Timeout},
		RetryWaitMin: opts.Config.RetryWaitMin,
		RetryWaitMax: opts.Config.RetryWaitMax,
		RetryMax:     opts.Config.RetryMax,
		CheckRetry:   checkRetry,
		Backoff:      jitterBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		Logger:       nil,
		RequestLogHook: func(_ retryablehttp.Logger, r *http.Request, attempt int) {
			if attempt > 0 {
				log.Debug("retrying MLflow request", "method", r.Method, "path", r.URL.Path, "attempt", attempt)
			}
		},
	}
	return &Client{cfg: opts.Config, base: base, http: rc, log: log, artifactURIs: map[string]string{}}, nil
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.HTTPClient.CloseIdleConnections()
	return nil
}

type ctxKey struct{}

// notIdempotent marks a request whose replay after an ambiguous failure
// (timeout or reset after the request was sent) could apply it twice.
func notIdempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, ctxKey{}, true)
}

// checkRetry retries connection errors, 429 and 5xx (except 501), never
// other 4xx. Requests marked notIdempotent are retried after a transport
// error only when the connection was never established.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil && ctx.Value(ctxKey{}) != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return true, nil
		}
		return false, err
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// jitterBackoff is exponential backoff with "equal jitter" (half fixed,
// half random), honouring Retry-After on 429/503 up to max.
func jitterBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, hi)
		}
	}
	d := lo << min(attempt, 30)
	if d <= 0 || d > hi {
		d = hi
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// do sends one API call with retries and decodes the answer into out.
func (c *Client) do(ctx context.Context, method, rawPath string, query url.Values, body []byte, contentType string, out any) error {
	u := *c.base
	u.Path = c.base.Path + rawPath
	u.RawQuery = query.Encode()
	h := http.Header{"Accept": {"application/json"}}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	op := method + " " + rawPath
	resp, err := c.call(ctx, method, u, op, body, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &tracker.Error{Kind: tracker.ErrUnavailable, Op: "mlflow " + op, Message: "reading response: " + err.Error()}
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := w.Write(data)
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &tracker.Error{Kind: tracker.ErrInvalid, Op: "mlflow " + op, Status: resp.StatusCode, Message: "decoding response: " + err.Error()}
	}
	return nil
}

// call sends one request with retries and returns a 2xx answer (the caller
// closes its body); any other answer is decoded into a *tracker.Error. op
// names the call in errors.
func (c *Client) call(ctx context.Context, method string, u url.URL, op string, body []byte, h http.Header) (*http.Response, error) {
	var rb any // a nil []byte would still be a (empty) body
	if body != nil {
		rb = body
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), rb)
	if err != nil {
		return nil, fmt.Errorf("mlflow %s: %w", op, err)
	}
	maps.Copy(req.Header, h)
	req.Header.Set("User-Agent", "flywheel-tracker")
	resp, err := c.send(ctx, req, op)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeError(op, resp, data)
	}
	return resp, nil
}

// decodeError turns {"error_code","message"} (or an HTML page) into a
// *tracker.Error whose Kind is the matching sentinel.
func decodeError(op string, resp *http.Response, data []byte) error {
	var body struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	e := &tracker.Error{Op: "mlflow " + op, Status: resp.StatusCode}
	if json.Unmarshal(data, &body) == nil && body.Code != "" {
		e.Code, e.Message = body.Code, body.Message
	} else {
		e.Message = fmt.Sprintf("HTTP %d (non-JSON answer: is the tracking URI an MLflow server with this endpoint?)", resp.StatusCode)
	}
	e.Kind = kindOf(e.Code, resp.StatusCode)
	if e.Code == "INTERNAL_ERROR" && strings.Contains(e.Message, "No such file or directory") {
		e.Kind = tracker.ErrNotFound // how MLflow 2.10.2 answers a missing proxied artifact
	}
	return e
}

func kindOf(code string, status int) error {
	switch code {
	case "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND":
		return tracker.ErrNotFound
	case "RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS":
		return tracker.ErrAlreadyExists
	case "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "MALFORMED_REQUEST", "INVALID_REQUEST":
		return tracker.ErrInvalid
	case "PERMISSION_DENIED", "UNAUTHENTICATED", "UNAUTHORIZED":
		return tracker.ErrPermission
	case "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "SERVICE_UNDER_MAINTENANCE":
		return tracker.ErrUnavailable
	}
	switch {
	case status == http.StatusNotFound:
		return tracker.ErrNotFound
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return tracker.ErrPermission
	case status == http.StatusTooManyRequests || status >= 500:
		return tracker.ErrUnavailable
	}
	return tracker.ErrInvalid
}

func (c *Client) getJSON(ctx context.Context, endpoint string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, apiPrefix+endpoint, q, nil, "", out)
}

func (c *Client) postJSON(ctx context.Context, endpoint string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("mlflow %s: encoding request: %w", endpoint, err)
	}
	return c.do(ctx, http.MethodPost, apiPrefix+endpoint, nil, body, "application/json", out)
}

// GetExperimentByName returns the experiment or ErrNotFound.
func (c *Client) GetExperimentByName(ctx context.Context, name string) (tracker.Experiment, error) {
	return c.getExperiment(ctx, "experiments/get-by-name", url.Values{"experiment_name": {name}})
}

// GetExperiment returns the experiment with id, or ErrNotFound.
func (c *Client) GetExperiment(ctx context.Context, id string) (tracker.Experiment, error) {
	return c.getExperiment(ctx, "experiments/get", url.Values{"experiment_id": {id}})
}

func (c *Client) getExperiment(ctx context.Context, endpoint string, q url.Values) (tracker.Experiment, error) {
	var out struct {
		Experiment wireExperiment `json:"experiment"`
	}
	if err := c.getJSON(ctx, endpoint, q, &out); err != nil {
		return tracker.Experiment{}, err
	}
	return out.Experiment.experiment(), nil
}

func (e wireExperiment) experiment() tracker.Experiment {
	x := tracker.Experiment{ID: string(e.ExperimentID), Name: e.Name, ArtifactLocation: e.ArtifactLocation, Tags: map[string]string{}}
	for _, t := range e.Tags {
		x.Tags[t.Key] = t.Value
	}
	return x
}

// GetOrCreateExperiment looks the experiment up by name and creates it when
// missing; a concurrent creator's RESOURCE_ALREADY_EXISTS is resolved by
// looking it up again.
func (c *Client) GetOrCreateExperiment(ctx context.Context, name string) (tracker.Experiment, error) {
	if name == "" {
		return tracker.Experiment{}, tracker.Errorf(tracker.ErrInvalid, "experiment name is empty")
	}
	e, err := c.GetExperimentByName(ctx, name)
	if !errors.Is(err, tracker.ErrNotFound) {
		return e, err
	}
	var out struct {
		ExperimentID flexString `json:"experiment_id"`
	}
	err = c.postJSON(ctx, "experiments/create", map[string]any{"name": name}, &out)
	if err != nil && !errors.Is(err, tracker.ErrAlreadyExists) {
		return tracker.Experiment{}, err
	}
	return c.GetExperimentByName(ctx, name)
}

// StartRun creates a run with the system tags. runs/create is not
// idempotent, so it is not retried after an ambiguous failure; callers that
// need exactly-once (tracker/fallback) tag runs with tracker.TagLocalRunID.
func (c *Client) StartRun(ctx context.Context, experimentID string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	req := map[string]any{
		"experiment_id": experimentID,
		"start_time":    tracker.NowMillis(opts.StartTime),
		"tags":          mapToKV(opts.SystemTags()),
	}
	if opts.Name != "" {
		req["run_name"] = opts.Name
	}
	if opts.Source.User != "" {
		req["user_id"] = opts.Source.User // as MLflow's client does, from mlflow.user
	}
	var out struct {
		Run wireRun `json:"run"`
	}
	if err := c.postJSON(notIdempotent(ctx), "runs/create", req, &out); err != nil {
		return tracker.RunInfo{}, err
	}
	info := out.Run.Info.info()
	if info.Name == "" {
		info.Name = opts.Name
	}
	c.rememberArtifactURI(info.ID, info.ArtifactURI)
	return info, nil
}

// LogBatch sends metrics, params and tags in chunks within MLflow's limits.
// A chunk with metrics is not retried after an ambiguous failure because
// MLflow appends metric values.
func (c *Client) LogBatch(ctx context.Context, runID string, metrics []tracker.Metric, params []tracker.Param, tags []tracker.Tag) error {
	for _, chunk := range Chunk(metrics, params, tags) {
		req := map[string]any{"run_id": runID}
		if len(chunk.Metrics) > 0 {
			ms := make([]wireMetric, len(chunk.Metrics))
			for i, m := range chunk.Metrics {
				ms[i] = wireMetric{Key: m.Key, Value: flexFloat(m.Value), Timestamp: flexInt(m.Timestamp), Step: flexInt(m.Step)}
			}
			req["metrics"] = ms
		}
		if len(chunk.Params) > 0 {
			req["params"] = toKV(chunk.Params)
		}
		if len(chunk.Tags) > 0 {
			req["tags"] = toKV(chunk.Tags)
		}
		cctx := ctx
		if len(chunk.Metrics) > 0 {
			cctx = notIdempotent(ctx)
		}
		if err := c.postJSON(cctx, "runs/log-batch", req, nil); err != nil {
			return err
		}
	}
	return nil
}

// BatchChunk is one log-batch request's worth of data.
type BatchChunk struct {
	Metrics []tracker.Metric
	Params  []tracker.Param
	Tags    []tracker.Tag
}

// Chunk splits data into requests of at most 1000 metrics, 100 params,
// 100 tags and 1000 items in all, keeping each kind's order.
func Chunk(metrics []tracker.Metric, params []tracker.Param, tags []tracker.Tag) []BatchChunk {
	var out []BatchChunk
	for len(metrics)+len(params)+len(tags) > 0 {
		var ch BatchChunk
		np := min(len(params), MaxParamsPerBatch)
		ch.Params, params = params[:np], params[np:]
		nt := min(len(tags), MaxTagsPerBatch)
		ch.Tags, tags = tags[:nt], tags[nt:]
		nm := min(len(metrics), MaxMetricsPerBatch, MaxItemsPerBatch-np-nt)
		ch.Metrics, metrics = metrics[:nm], metrics[nm:]
		out = append(out, ch)
	}
	return out
}

// LogInputs logs dataset inputs (idempotent in MLflow: a dataset is keyed by
// name and digest).
func (c *Client) LogInputs(ctx context.Context, runID string, datasets []tracker.Dataset) error {
	ins := make([]wireDatasetInput, len(datasets))
	for i, d := range datasets {
		ins[i].Dataset = wireDataset{Name: d.Name, Digest: d.Digest, SourceType: d.SourceType, Source: d.Source, Schema: d.Schema, Profile: d.Profile}
		if d.Context != "" {
			ins[i].Tags = []kv{{tracker.TagDatasetContext, d.Context}}
		}
	}
	return c.postJSON(ctx, "runs/log-inputs", map[string]any{"run_id": runID, "datasets": ins}, nil)
}

// EndRun sets the terminal status and end time.
func (c *Client) EndRun(ctx context.Context, runID string, status tracker.RunStatus, end time.Time) error {
	if !status.Valid() {
		return tracker.Errorf(tracker.ErrInvalid, "run status %q", status)
	}
	return c.postJSON(ctx, "runs/update", map[string]any{"run_id": runID, "run_uuid": runID, "status": status, "end_time": tracker.NowMillis(end)}, nil)
}

// GetRun fetches a run with its latest metrics, params, tags and inputs.
func (c *Client) GetRun(ctx context.Context, runID string) (tracker.Run, error) {
	var out struct {
		Run wireRun `json:"run"`
	}
	if err := c.getJSON(ctx, "runs/get", url.Values{"run_id": {runID}}, &out); err != nil {
		return tracker.Run{}, err
	}
	r := out.Run.run()
	c.rememberArtifactURI(r.Info.ID, r.Info.ArtifactURI)
	return r, nil
}

// SearchRuns pages through runs/search. Without experiment ids it searches
// every experiment it can list.
func (c *Client) SearchRuns(ctx context.Context, q tracker.SearchQuery) ([]tracker.Run, error) {
	ids := q.ExperimentIDs
	if len(ids) == 0 {
		var out struct {
			Experiments []wireExperiment `json:"experiments"`
		}
		if err := c.postJSON(ctx, "experiments/search", map[string]any{"max_results": 1000}, &out); err != nil {
			return nil, err
		}
		for _, e := range out.Experiments {
			ids = append(ids, string(e.ExperimentID))
		}
		if len(ids) == 0 {
			return nil, nil
		}
	}
	var runs []tracker.Run
	token := ""
	for {
		page := 1000
		if q.PageSize > 0 {
			page = min(page, q.PageSize)
		}
		if q.MaxResults > 0 {
			page = min(page, q.MaxResults-len(runs))
		}
		req := map[string]any{"experiment_ids": ids, "max_results": page}
		if q.Filter != "" {
			req["filter"] = q.Filter
		}
		if len(q.OrderBy) > 0 {
			req["order_by"] = q.OrderBy
		}
		if token != "" {
			req["page_token"] = token
		}
		var out struct {
			Runs          []wireRun `json:"runs"`
			NextPageToken string    `json:"next_page_token"`
		}
		if err := c.postJSON(ctx, "runs/search", req, &out); err != nil {
			return nil, err
		}
		for _, r := range out.Runs {
			runs = append(runs, r.run())
		}
		token = out.NextPageToken
		if token == "" || len(out.Runs) == 0 || (q.MaxResults > 0 && len(runs) >= q.MaxResults) {
			return runs, nil
		}
	}
}

// MetricHistory returns every value logged for key.
func (c *Client) MetricHistory(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	ws, err := getPages[wireMetric](ctx, c, "metrics/get-history", url.Values{"run_id": {runID}, "metric_key": {key}}, "metrics")
	if err != nil {
		return nil, err
	}
	var all []tracker.Metric
	for _, m := range ws {
		mm := m.metric()
		if mm.Key == "" {
			mm.Key = key
		}
		all = append(all, mm)
	}
	return all, nil
}

// getPages GETs endpoint with q, following next_page_token until a page is
// the last or empty, and returns the items of every page's field.
func getPages[W any](ctx context.Context, c *Client, endpoint string, q url.Values, field string) ([]W, error) {
	var all []W
	for {
		var out map[string]json.RawMessage
		if err := c.getJSON(ctx, endpoint, q, &out); err != nil {
			return nil, err
		}
		var items []W
		if raw, ok := out[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", endpoint, field, err)
			}
		}
		var token string
		if raw, ok := out["next_page_token"]; ok {
			if err := json.Unmarshal(raw, &token); err != nil {
				return nil, fmt.Errorf("%s: next_page_token: %w", endpoint, err)
			}
		}
		all = append(all, items...)
		if token == "" || len(items) == 0 {
			return all, nil
		}
		q.Set("page_token", token)
	}
}

// artifactPath maps a run's artifact_uri (mlflow-artifacts:/<exp>/<run>/artifacts
// or mlflow-artifacts://host/<...>) plus a relative path onto the proxied
// artifact API path.
func (c *Client) artifactPath(ctx context.Context, runID, rel string) (string, error) {
	uri, err := c.artifactURI(ctx, runID)
	if err != nil {
		return "", err
	}
	return ArtifactAPIPath(uri, rel)
}

// ArtifactAPIPath is the proxied artifact endpoint path for rel under the
// artifact root uri.
func ArtifactAPIPath(uri, rel string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "mlflow-artifacts" {
		return "", tracker.Errorf(tracker.ErrInvalid, "artifact_uri %q: only the proxied mlflow-artifacts store is supported (start the server with --serve-artifacts)", uri)
	}
	root := strings.Trim(u.Path, "/")
	rel = strings.Trim(path.Clean("/"+rel), "/")
	if rel != "" && (strings.HasPrefix(rel, "..") || strings.Contains(rel, "\\")) {
		return "", tracker.Errorf(tracker.ErrInvalid, "artifact path %q", rel)
	}
	p := artifactPrefix + escapePath(root)
	if rel != "" {
		p += "/" + escapePath(rel)
	}
	return p, nil
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// artifactURI is the run's artifact root: remembered from StartRun or
// GetRun, else fetched.
func (c *Client) artifactURI(ctx context.Context, runID string) (string, error) {
	c.mu.Lock()
	uri, ok := c.artifactURIs[runID]
	c.mu.Unlock()
	if ok {
		return uri, nil
	}
	r, err := c.GetRun(ctx, runID) // remembers it
	if err != nil {
		return "", err
	}
	return r.Info.ArtifactURI, nil
}

func (c *Client) rememberArtifactURI(runID, uri string) {
	if runID == "" || uri == "" {
		return
	}
	c.mu.Lock()
	c.artifactURIs[runID] = uri
	c.mu.Unlock()
}

// LogArtifact uploads the bytes of r (PUT is idempotent, so it is retried).
func (c *Client) LogArtifact(ctx context.Context, runID, rel string, r io.Reader) error {
	if strings.Trim(rel, "/") == "" {
		return tracker.Errorf(tracker.ErrInvalid, "artifact path is empty")
	}
	p, err := c.artifactPath(ctx, runID, rel)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading artifact %s: %w", rel, err)
	}
	return c.doRaw(ctx, http.MethodPut, p, data, nil)
}

func (c *Client) doRaw(ctx context.Context, method, escapedPath string, body []byte, out io.Writer) error {
	u := *c.base
	u.RawPath = c.base.Path + escapedPath
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return err
	}
	u.Path = p
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/octet-stream")
	}
	op := method + " " + p
	resp, err := c.call(ctx, method, u, op, body, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		if _, err := io.Copy(out, resp.Body); err != nil {
			return &tracker.Error{Kind: tracker.ErrUnavailable, Op: "mlflow " + op, Message: err.Error()}
		}
	}
	return nil
}

// download reads the artifact API path p into memory: the caller gets a
// whole file or an error, never a body cut off mid-read.
func (c *Client) download(ctx context.Context, p string) (io.ReadCloser, error) {
	var buf bytes.Buffer
	if err := c.doRaw(ctx, http.MethodGet, p, nil, &buf); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
}

// OpenArtifact downloads an artifact through the proxied artifact API.
func (c *Client) OpenArtifact(ctx context.Context, runID, rel string) (io.ReadCloser, error) {
	p, err := c.artifactPath(ctx, runID, rel)
	if err != nil {
		return nil, err
	}
	return c.download(ctx, p)
}

// GetModelVersionDownloadURI is the artifact URI MLflow stores a version's
// files under (model-versions/get-download-uri).
func (c *Client) GetModelVersionDownloadURI(ctx context.Context, name, version string) (string, error) {
	var out struct {
		ArtifactURI string `json:"artifact_uri"`
	}
	if err := c.getJSON(ctx, "model-versions/get-download-uri", url.Values{"name": {name}, "version": {version}}, &out); err != nil {
		return "", err
	}
	if out.ArtifactURI == "" {
		return "", &tracker.Error{Kind: tracker.ErrNotFound, Op: "mlflow GET model-versions/get-download-uri", Message: fmt.Sprintf("no artifact URI for version %s of %q", version, name)}
	}
	return out.ArtifactURI, nil
}

// OpenArtifactURI downloads rel under an mlflow-artifacts: URI (e.g. a
// model version's download URI) through the proxied artifact API.
func (c *Client) OpenArtifactURI(ctx context.Context, uri, rel string) (io.ReadCloser, error) {
	p, err := ArtifactAPIPath(uri, rel)
	if err != nil {
		return nil, err
	}
	return c.download(ctx, p)
}

// ListArtifacts lists one directory level (a missing path is empty).
func (c *Client) ListArtifacts(ctx context.Context, runID, rel string) ([]tracker.FileInfo, error) {
	q := url.Values{"run_id": {runID}}
	if rel != "" {
		q.Set("path", rel)
	}
	var out struct {
		Files []wireFileInfo `json:"files"`
	}
	if err := c.getJSON(ctx, "artifacts/list", q, &out); err != nil {
		return nil, err
	}
	fs := make([]tracker.FileInfo, len(out.Files))
	for i, f := range out.Files {
		fs[i] = tracker.FileInfo{Path: f.Path, IsDir: f.IsDir, Size: int64(f.FileSize)}
	}
	return fs, nil
}

// CreateRegisteredModel creates the model once: an existing model is
// looked up, not created again (a concurrent creator's
// RESOURCE_ALREADY_EXISTS is fine too).
func (c *Client) CreateRegisteredModel(ctx context.Context, name string) error {
	err := c.getJSON(ctx, "registered-models/get", url.Values{"name": {name}}, nil)
	if !errors.Is(err, tracker.ErrNotFound) {
		return err
	}
	err = c.postJSON(ctx, "registered-models/create", map[string]any{"name": name}, nil)
	if errors.Is(err, tracker.ErrAlreadyExists) {
		return nil
	}
	return err
}

// GetModelVersion returns one version with its description and tags.
func (c *Client) GetModelVersion(ctx context.Context, name, version string) (tracker.ModelVersion, error) {
	var out modelVersionReply
	if err := c.getJSON(ctx, "model-versions/get", url.Values{"name": {name}, "version": {version}}, &out); err != nil {
		return tracker.ModelVersion{}, err
	}
	return out.ModelVersion.version(), nil
}

var _ tracker.VersionAnnotator = (*Client)(nil)

// AnnotateModelVersion sets the version's description and tags (both
// idempotent, so retried).
func (c *Client) AnnotateModelVersion(ctx context.Context, name, version string, a tracker.VersionAnnotation) error {
	if a.Description != "" {
		body, _ := json.Marshal(map[string]any{"name": name, "version": version, "description": a.Description})
		if err := c.do(ctx, http.MethodPatch, apiPrefix+"model-versions/update", nil, body, "application/json", nil); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(a.Tags)) {
		if err := c.postJSON(ctx, "model-versions/set-tag", map[string]any{"name": name, "version": version, "key": k, "value": a.Tags[k]}, nil); err != nil {
			return err
		}
	}
	return nil
}

// CreateModelVersion registers artifactPath of runID; the source is the
// run's artifact_uri joined with the path. Not retried after an ambiguous
// failure (it would create two versions).
func (c *Client) CreateModelVersion(ctx context.Context, name, runID, artifactPath string) (tracker.ModelVersion, error) {
	return c.CreateTaggedModelVersion(ctx, name, runID, artifactPath, nil)
}

// CreateTaggedModelVersion is CreateModelVersion with version tags set in
// the same request (MLflow stores them with the version, so a version is
// never seen without them: the trainer finds its job's version by tag).
func (c *Client) CreateTaggedModelVersion(ctx context.Context, name, runID, artifactPath string, tags map[string]string) (tracker.ModelVersion, error) {
	uri, err := c.artifactURI(ctx, runID)
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	source := strings.TrimRight(uri, "/")
	if p := strings.Trim(artifactPath, "/"); p != "" {
		source += "/" + p
	}
	var out modelVersionReply
	req := map[string]any{"name": name, "source": source, "run_id": runID}
	if len(tags) > 0 {
		kvs := make([]map[string]string, 0, len(tags))
		for _, k := range slices.Sorted(maps.Keys(tags)) {
			kvs = append(kvs, map[string]string{"key": k, "value": tags[k]})
		}
		req["tags"] = kvs
	}
	if err := c.postJSON(notIdempotent(ctx), "model-versions/create", req, &out); err != nil {
		return tracker.ModelVersion{}, err
	}
	return out.ModelVersion.version(), nil
}

// SearchModelVersions lists versions matching an MLflow filter such as
// "name='ridership' and run_id='abc'".
func (c *Client) SearchModelVersions(ctx context.Context, filter string) ([]tracker.ModelVersion, error) {
	ws, err := getPages[wireModelVersion](ctx, c, "model-versions/search", url.Values{"filter": {filter}, "max_results": {"1000"}}, "model_versions")
	if err != nil {
		return nil, err
	}
	var all []tracker.ModelVersion
	for _, v := range ws {
		all = append(all, v.version())
	}
	return all, nil
}

// DeleteModelVersion deletes one version (its aliases go with it).
func (c *Client) DeleteModelVersion(ctx context.Context, name, version string) error {
	body, _ := json.Marshal(map[string]any{"name": name, "version": version})
	return c.do(ctx, http.MethodDelete, apiPrefix+"model-versions/delete", nil, body, "application/json", nil)
}

// SetAlias points alias at version (idempotent).
func (c *Client) SetAlias(ctx context.Context, name, alias, version string) error {
	return c.postJSON(ctx, "registered-models/alias", map[string]any{"name": name, "alias": alias, "version": version}, nil)
}

// GetModelVersionByAlias resolves an alias. MLflow answers an unknown alias
// with 400 INVALID_PARAMETER_VALUE; it is reported as ErrNotFound.
func (c *Client) GetModelVersionByAlias(ctx context.Context, name, alias string) (tracker.ModelVersion, error) {
	var out modelVersionReply
	err := c.getJSON(ctx, "registered-models/alias", url.Values{"name": {name}, "alias": {alias}}, &out)
	var te *tracker.Error
	if errors.As(err, &te) && te.Code == "INVALID_PARAMETER_VALUE" && strings.Contains(strings.ToLower(te.Message), "alias") {
		te.Kind = tracker.ErrNotFound
	}
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	return out.ModelVersion.version(), nil
}

// send authenticates req (bearer token, else basic auth) and sends it through
// the retrying client; a transport failure after the retries is
// tracker.ErrUnavailable, a done ctx its own error.
func (c *Client) send(ctx context.Context, req *retryablehttp.Request, op string) (*http.Response, error) {
	switch {
	case c.cfg.Token != "":
		req.Header.Set("Authorization", "Bearer "+string(c.cfg.Token))
	case c.cfg.Username != "":
		req.SetBasicAuth(c.cfg.Username, string(c.cfg.Password))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("mlflow %s: %w", op, ctx.Err())
		}
		return nil, &tracker.Error{Kind: tracker.ErrUnavailable, Op: "mlflow " + op, Message: err.Error()}
	}
	return resp, nil
}
