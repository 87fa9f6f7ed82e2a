// Package mlflowtest is an in-process MLflow tracking server for tests. It
// implements the REST subset tracker/mlflow uses with MLflow's validation
// and error shapes ({"error_code","message"} JSON; HTML 404/405 for unknown
// routes and methods) and can inject faults: 503 bursts, slow responses,
// connection resets and being down.
package mlflowtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flywheel-ml/flywheel/tracker"
)

// FaultKind is what the server does to one request.
type FaultKind int

const (
	None FaultKind = iota
	// Unavailable answers 503 TEMPORARILY_UNAVAILABLE without processing.
	Unavailable
	// SlowAfter processes the request, then waits Delay before answering.
	SlowAfter
	// ResetBefore closes the connection (RST) without processing.
	ResetBefore
	// ResetAfter processes the request, then closes the connection (RST)
	// without answering.
	ResetAfter
	// TooManyRequests answers 429 REQUEST_LIMIT_EXCEEDED with Retry-After: 0
	// without processing.
	TooManyRequests
)

// Fault is the fault for one request.
type Fault struct {
	Kind  FaultKind
	Delay time.Duration
}

// FaultFunc picks a fault for the n-th request (1-based) to reach the server.
type FaultFunc func(n int, r *http.Request) Fault

// Metric is one stored metric value.
type Metric = tracker.Metric

// Run is a snapshot of a stored run.
type Run struct {
	Info     tracker.RunInfo
	Params   map[string]string
	Tags     map[string]string
	Metrics  []Metric // full history in arrival order
	Datasets []tracker.Dataset
}

type experiment struct {
	id, name, artifactLocation string
}

type run struct {
	info     tracker.RunInfo
	params   map[string]string
	tags     map[string]string
	metrics  []Metric
	datasets []tracker.Dataset
}

type modelVersion struct {
	tracker.ModelVersion
	created int64
}

type registeredModel struct {
	name     string
	versions []*modelVersion
	aliases  map[string]string // alias → version
}

// Server is the test server. Zero faults by default.
type Server struct {
	// Token, when set, is the required bearer token; Username/Password the
	// required basic credentials.
	Token, Username, Password string

	mu        sync.Mutex
	exps      map[string]*experiment
	runs      map[string]*run
	models    map[string]*registeredModel
	artifacts map[string][]byte // "<exp>/<run>/artifacts/<path>" → bytes
	nextExp   int
	nextRun   int
	fault     FaultFunc
	requests  int
	calls     map[string]int // "METHOD path" → count of processed calls
	inflight  sync.WaitGroup

	addr string
	ln   net.Listener
	srv  *http.Server
	URL  string
}

// New starts a server on 127.0.0.1 with the Default experiment.
func New() (*Server, error) {
	s := &Server{
		exps:      map[string]*experiment{"0": {id: "0", name: "Default", artifactLocation: "mlflow-artifacts:/0"}},
		runs:      map[string]*run{},
		models:    map[string]*registeredModel{},
		artifacts: map[string][]byte{},
		calls:     map[string]int{},
		nextExp:   1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.URL = "http://" + s.addr
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	s.ln = ln
	s.srv = &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln) //nolint:errcheck // ends with Close
}

// Stop takes the server down: the port refuses connections and open
// connections are closed. Data is kept.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Start brings a stopped server back on the same address.
func (s *Server) Start() error {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serve(ln)
	return nil
}

// Close stops the server for good.
func (s *Server) Close() { s.Stop() }

// SetFault installs f (nil = no faults) and resets the request counter.
func (s *Server) SetFault(f FaultFunc) {
	s.mu.Lock()
	s.fault = f
	s.requests = 0
	s.mu.Unlock()
}

// Calls returns how many times "METHOD /path" was processed.
func (s *Server) Calls(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// Wait blocks until no request is being handled (e.g. one whose client
// was killed).
func (s *Server) Wait() { s.inflight.Wait() }

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	s.mu.Lock()
	s.requests++
	n := s.requests
	f := s.fault
	s.mu.Unlock()
	var fault Fault
	if f != nil {
		fault = f(n, r)
	}
	switch fault.Kind {
	case Unavailable:
		io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusServiceUnavailable, "TEMPORARILY_UNAVAILABLE", "injected: service unavailable")
		return
	case ResetBefore:
		reset(w)
		return
	case TooManyRequests:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "0")
		writeError(w, http.StatusTooManyRequests, "REQUEST_LIMIT_EXCEEDED", "injected: too many requests")
		return
	}
	rec := httptest.NewRecorder()
	s.route(rec, r)
	switch fault.Kind {
	case SlowAfter:
		select {
		case <-time.After(fault.Delay):
		case <-r.Context().Done():
			return
		}
	case ResetAfter:
		reset(w)
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("mlflowtest: cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// apiError is MLflow's error body.
type apiError struct {
	status int
	code   string
	msg    string
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error_code": code, "message": msg})
}

func invalid(format string, args ...any) *apiError {
	return &apiError{400, "INVALID_PARAMETER_VALUE", fmt.Sprintf(format, args...)}
}
func notFound(format string, args ...any) *apiError {
	return &apiError{404, "RESOURCE_DOES_NOT_EXIST", fmt.Sprintf(format, args...)}
}

const htmlNotFound = `<!doctype html>
<html lang=en>
<title>404 Not Found</title>
<h1>Not Found</h1>
<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
`

type endpoint struct {
	method string
	fn     func(s *Server, q *request) (any, *apiError)
}

var routes = map[string]endpoint{
	"experiments/get-by-name":         {"GET", (*Server).getExperimentByName},
	"experiments/get":                 {"GET", (*Server).getExperiment},
	"experiments/create":              {"POST", (*Server).createExperiment},
	"experiments/search":              {"POST", (*Server).searchExperiments},
	"runs/create":                     {"POST", (*Server).createRun},
	"runs/update":                     {"POST", (*Server).updateRun},
	"runs/get":                        {"GET", (*Server).getRun},
	"runs/search":                     {"POST", (*Server).searchRuns},
	"runs/log-batch":                  {"POST", (*Server).logBatch},
	"runs/log-inputs":                 {"POST", (*Server).logInputs},
	"metrics/get-history":             {"GET", (*Server).metricHistory},
	"artifacts/list":                  {"GET", (*Server).listArtifacts},
	"registered-models/create":        {"POST", (*Server).createModel},
	"registered-models/get":           {"GET", (*Server).getModel},
	"model-versions/create":           {"POST", (*Server).createVersion},
	"model-versions/get":              {"GET", (*Server).getVersion},
	"model-versions/search":           {"GET", (*Server).searchVersions},
	"registered-models/alias":         {"POST", (*Server).setAlias},
	"registered-models/alias#GET":     {"GET", (*Server).getAlias},
	"model-versions/get-download-uri": {"GET", (*Server).downloadURI},
	"model-versions/update":           {"PATCH", (*Server).updateVersion},
	"model-versions/set-tag":          {"POST", (*Server).setVersionTag},
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "You are not authenticated. Please see the documentation for details.")
		return
	}
	if p, ok := strings.CutPrefix(r.URL.Path, "/api/2.0/mlflow-artifacts/artifacts/"); ok {
		s.artifact(w, r, p)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/api/2.0/mlflow/")
	if !ok {
		p, ok = strings.CutPrefix(r.URL.Path, "/ajax-api/2.0/mlflow/")
	}
	ep, found := routes[p]
	if alt, ok := routes[p+"#GET"]; found && ok && r.Method == "GET" {
		ep = alt
	}
	if !ok || !found {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, htmlNotFound)
		return
	}
	if r.Method != ep.method {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusMethodNotAllowed)
		io.WriteString(w, "<!doctype html>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n")
		return
	}
	body := map[string]json.RawMessage{}
	if r.Method == "POST" || r.Method == "PATCH" {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeError(w, 400, "INVALID_PARAMETER_VALUE", fmt.Sprintf("Bad Request. Content-Type must be 'application/json', got %q", ct))
			return
		}
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			writeError(w, 400, "INVALID_PARAMETER_VALUE", "Malformed JSON request body: "+err.Error())
			return
		}
	} else {
		for k, v := range r.URL.Query() {
			b, _ := json.Marshal(v[0])
			body[k] = b
		}
	}
	s.mu.Lock()
	out, aerr := ep.fn(s, &request{body: body})
	if aerr == nil {
		s.calls[r.Method+" "+p]++
	}
	s.mu.Unlock()
	if aerr != nil {
		writeError(w, aerr.status, aerr.code, aerr.msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *Server) authorized(r *http.Request) bool {
	switch {
	case s.Token != "":
		return r.Header.Get("Authorization") == "Bearer "+s.Token
	case s.Username != "":
		u, p, ok := r.BasicAuth()
		return ok && u == s.Username && p == s.Password
	}
	return true
}

// --- decoding helpers -------------------------------------------------------

// request reads one call's parameters. The first problem sticks: later reads
// return zero values, so a handler reads what it needs and checks err once,
// and the error is the first one in reading order, as MLflow reports it.
type request struct {
	body map[string]json.RawMessage
	err  *apiError
}

func (q *request) fail(e *apiError) {
	if q.err == nil {
		q.err = e
	}
}

// str is an optional string parameter ("" when absent or null).
func (q *request) str(key string) string {
	raw, ok := q.body[key]
	if q.err != nil || !ok || string(raw) == "null" {
		return ""
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		q.fail(invalid("Invalid value %s for parameter '%s' supplied: expected a string", raw, key))
	}
	return v
}

// required is a string parameter that must be present and not empty.
func (q *request) required(key string) string {
	raw, ok := q.body[key]
	if q.err == nil && (!ok || string(raw) == "null") {
		q.fail(invalid("Missing value for required parameter '%s'. See the API docs for more information about request parameters.", key))
	}
	v := q.str(key)
	if v == "" {
		q.fail(invalid("Missing value for required parameter '%s'.", key))
	}
	return v
}

// integer is an optional integer parameter, as a number or a string; ok is
// whether it was given.
func (q *request) integer(key string) (v int64, ok bool) {
	raw, ok := q.body[key]
	if q.err != nil || !ok || string(raw) == "null" {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.Trim(string(raw), `"`), 10, 64)
	if err != nil {
		q.fail(invalid("Invalid value %s for parameter '%s' supplied: expected an integer", raw, key))
		return 0, false
	}
	return v, true
}

// list decodes an optional JSON array parameter into out.
func (q *request) list(key string, out any) {
	raw, ok := q.body[key]
	if q.err != nil || !ok {
		return
	}
	if err := json.Unmarshal(raw, out); err != nil {
		q.fail(invalid("%s: %v", key, err))
	}
}

type kv struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

// kvs is an optional list of {key, value} pairs with valid keys.
func (q *request) kvs(key string) []kv {
	raw, ok := q.body[key]
	if q.err != nil || !ok {
		return nil
	}
	var out []kv
	if err := json.Unmarshal(raw, &out); err != nil {
		q.fail(invalid("Invalid value for parameter '%s': %v", key, err))
		return nil
	}
	for _, x := range out {
		switch {
		case x.Key == nil || *x.Key == "":
			q.fail(invalid("Missing value for required parameter '%s[].key'.", key))
		case x.Value == nil:
			q.fail(invalid("Missing value for required parameter '%s[].value'.", key))
		default:
			q.fail(validName(*x.Key))
		}
		if q.err != nil {
			return nil
		}
	}
	return out
}

var nameRe = regexp.MustCompile(`^[\p{L}\p{N}_\-./ :]+$`)

// validMetricName words the error as MLflow's _validate_metric_name does.
func validMetricName(k string) *apiError {
	if !nameRe.MatchString(k) || strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
		return invalid("Invalid metric name: '%s'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), and slashes (/).", k)
	}
	return validName(k)
}

func validName(k string) *apiError {
	if len(k) > 250 {
		return invalid("Key '%s' had length %d, which exceeded length limit of 250", k[:20], len(k))
	}
	if !nameRe.MatchString(k) || strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
		return invalid("Invalid value \"%s\" for parameter 'key' supplied: Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), and slashes (/).", k)
	}
	return nil
}

func (s *Server) runOf(q *request) *run {
	id := q.str("run_id")
	if id == "" && q.err == nil {
		if id = q.required("run_uuid"); q.err != nil {
			q.err = invalid("Missing value for required parameter 'run_id'.")
		}
	}
	if q.err != nil {
		return nil
	}
	r, ok := s.runs[id]
	if !ok {
		q.fail(notFound("Run with id=%s not found", id))
	}
	return r
}

// --- experiments ------------------------------------------------------------

func (e *experiment) json() map[string]any {
	return map[string]any{"experiment_id": e.id, "name": e.name, "artifact_location": e.artifactLocation, "lifecycle_stage": "active"}
}

func (s *Server) getExperimentByName(q *request) (any, *apiError) {
	name := q.required("experiment_name")
	if q.err != nil {
		return nil, q.err
	}
	for _, e := range s.exps {
		if e.name == name {
			return map[string]any{"experiment": e.json()}, nil
		}
	}
	return nil, notFound("Could not find experiment with name '%s'", name)
}

func (s *Server) getExperiment(q *request) (any, *apiError) {
	id := q.required("experiment_id")
	if q.err != nil {
		return nil, q.err
	}
	e, ok := s.exps[id]
	if !ok {
		return nil, notFound("No Experiment with id=%s exists", id)
	}
	return map[string]any{"experiment": e.json()}, nil
}

func (s *Server) createExperiment(q *request) (any, *apiError) {
	name := q.required("name")
	if q.err != nil {
		return nil, q.err
	}
	for _, e := range s.exps {
		if e.name == name {
			return nil, &apiError{400, "RESOURCE_ALREADY_EXISTS", fmt.Sprintf("Experiment '%s' already exists.", name)}
		}
	}
	id := strconv.Itoa(s.nextExp)
	s.nextExp++
	s.exps[id] = &experiment{id: id, name: name, artifactLocation: "mlflow-artifacts:/" + id}
	return map[string]any{"experiment_id": id}, nil
}

func (s *Server) searchExperiments(*request) (any, *apiError) {
	var out []map[string]any
	for _, e := range s.exps {
		out = append(out, e.json())
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["experiment_id"].(string) < out[j]["experiment_id"].(string) })
	return map[string]any{"experiments": out}, nil
}

// --- runs -------------------------------------------------------------------

func (s *Server) createRun(q *request) (any, *apiError) {
	expID := cmp.Or(q.str("experiment_id"), "0")
	if q.err != nil {
		return nil, q.err
	}
	e, ok := s.exps[expID]
	if !ok {
		return nil, notFound("No Experiment with id=%s exists", expID)
	}
	start, _ := q.integer("start_time")
	tags := q.kvs("tags")
	name := q.str("run_name")
	if q.err != nil {
		return nil, q.err
	}
	s.nextRun++
	id := fmt.Sprintf("%032x", s.nextRun*7919+0xabc000)
	r := &run{params: map[string]string{}, tags: map[string]string{}}
	for _, t := range tags {
		r.tags[*t.Key] = *t.Value
	}
	name = cmp.Or(name, r.tags[tracker.TagRunName], "run-"+strconv.Itoa(s.nextRun))
	r.tags[tracker.TagRunName] = name
	r.info = tracker.RunInfo{ID: id, ExperimentID: expID, Name: name, Status: tracker.StatusRunning, StartTime: start,
		ArtifactURI: e.artifactLocation + "/" + id + "/artifacts", LifecycleStage: "active"}
	s.runs[id] = r
	return map[string]any{"run": s.runJSON(r)}, nil
}

func (s *Server) updateRun(q *request) (any, *apiError) {
	r := s.runOf(q)
	st := tracker.RunStatus(q.str("status"))
	if st != "" && !st.Valid() {
		q.fail(invalid("Invalid value \"%s\" for parameter 'status'", st))
	}
	end, hasEnd := q.integer("end_time")
	name := q.str("run_name")
	if q.err != nil {
		return nil, q.err
	}
	if st != "" {
		r.info.Status = st
	}
	if hasEnd {
		r.info.EndTime = end
	}
	if name != "" {
		r.info.Name = name
		r.tags[tracker.TagRunName] = name
	}
	return map[string]any{"run_info": infoJSON(r.info)}, nil
}

func infoJSON(i tracker.RunInfo) map[string]any {
	m := map[string]any{"run_id": i.ID, "run_uuid": i.ID, "run_name": i.Name, "experiment_id": i.ExperimentID,
		"status": i.Status, "start_time": i.StartTime, "artifact_uri": i.ArtifactURI, "lifecycle_stage": i.LifecycleStage, "user_id": ""}
	if i.EndTime != 0 {
		m["end_time"] = i.EndTime
	}
	return m
}

// metricValue encodes like MLflow's SQL store: NaN → "NaN", ±Inf → ±max float.
func metricValue(v float64) any {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return json.RawMessage("1.7976931348623157e308")
	case math.IsInf(v, -1):
		return json.RawMessage("-1.7976931348623157e308")
	}
	return v
}

func metricJSON(m Metric) map[string]any {
	return map[string]any{"key": m.Key, "value": metricValue(m.Value), "timestamp": m.Timestamp, "step": m.Step}
}

func latest(ms []Metric) map[string]Metric {
	out := map[string]Metric{}
	for _, m := range ms {
		cur, ok := out[m.Key]
		if !ok || m.Step > cur.Step || m.Step == cur.Step && m.Timestamp >= cur.Timestamp {
			out[m.Key] = m
		}
	}
	return out
}

func (s *Server) runJSON(r *run) map[string]any {
	var metrics, params, tags, inputs []map[string]any
	for _, m := range latest(r.metrics) {
		metrics = append(metrics, metricJSON(m))
	}
	for k, v := range r.params {
		params = append(params, map[string]any{"key": k, "value": v})
	}
	for k, v := range r.tags {
		tags = append(tags, map[string]any{"key": k, "value": v})
	}
	for _, d := range r.datasets {
		in := map[string]any{"dataset": map[string]any{"name": d.Name, "digest": d.Digest, "source_type": d.SourceType, "source": d.Source, "schema": d.Schema, "profile": d.Profile}}
		if d.Context != "" {
			in["tags"] = []map[string]any{{"key": tracker.TagDatasetContext, "value": d.Context}}
		}
		inputs = append(inputs, in)
	}
	data := map[string]any{}
	if metrics != nil {
		data["metrics"] = metrics
	}
	if params != nil {
		data["params"] = params
	}
	if tags != nil {
		data["tags"] = tags
	}
	out := map[string]any{"info": infoJSON(r.info), "data": data, "inputs": map[string]any{}}
	if inputs != nil {
		out["inputs"] = map[string]any{"dataset_inputs": inputs}
	}
	return out
}

func (s *Server) getRun(q *request) (any, *apiError) {
	r := s.runOf(q)
	if q.err != nil {
		return nil, q.err
	}
	return map[string]any{"run": s.runJSON(r)}, nil
}

func (r *run) snapshot() tracker.Run {
	out := tracker.Run{Info: r.info, Params: map[string]string{}, Tags: map[string]string{}, Metrics: latest(r.metrics)}
	for k, v := range r.params {
		out.Params[k] = v
	}
	for k, v := range r.tags {
		out.Tags[k] = v
	}
	out.Datasets = append(out.Datasets, r.datasets...)
	return out
}

func (s *Server) searchRuns(q *request) (any, *apiError) {
	var ids, order []string
	q.list("experiment_ids", &ids)
	filter := q.str("filter")
	if q.err != nil {
		return nil, q.err
	}
	f, perr := tracker.ParseFilter(filter)
	if perr != nil {
		return nil, invalid("Invalid filter '%s': %v", filter, perr)
	}
	q.list("order_by", &order)
	max, _ := q.integer("max_results")
	if q.err != nil {
		return nil, q.err
	}
	if max == 0 {
		max = 1000
	}
	if max > 50000 {
		return nil, invalid("Invalid value for parameter 'max_results' supplied. It must be at most 50000, but got value %d", max)
	}
	offset, _ := strconv.Atoi(q.str("page_token"))
	var runs []tracker.Run
	for _, r := range s.runs {
		if len(ids) > 0 && !slices.Contains(ids, r.info.ExperimentID) {
			continue
		}
		snap := r.snapshot()
		if f.Match(snap) {
			runs = append(runs, snap)
		}
	}
	if serr := tracker.SortRuns(runs, order); serr != nil {
		return nil, invalid("%v", serr)
	}
	out := map[string]any{}
	var page []map[string]any
	for i := offset; i < len(runs) && len(page) < int(max); i++ {
		page = append(page, s.runJSON(s.runs[runs[i].Info.ID]))
	}
	if page != nil {
		out["runs"] = page
	}
	if offset+len(page) < len(runs) {
		out["next_page_token"] = strconv.Itoa(offset + len(page))
	}
	return out, nil
}

type wireMetric struct {
	Key       *string         `json:"key"`
	Value     json.RawMessage `json:"value"`
	Timestamp json.RawMessage `json:"timestamp"`
	Step      json.RawMessage `json:"step"`
}

func (s *Server) logBatch(q *request) (any, *apiError) {
	r := s.runOf(q)
	var metrics []wireMetric
	q.list("metrics", &metrics)
	params := q.kvs("params")
	tags := q.kvs("tags")
	if q.err != nil {
		return nil, q.err
	}
	switch {
	case len(metrics) > 1000:
		return nil, invalid("A batch logging request can contain at most 1000 metrics. Got %d metrics. Please split up metrics across multiple requests and try again.", len(metrics))
	case len(params) > 100:
		return nil, invalid("A batch logging request can contain at most 100 params. Got %d params. Please split up params across multiple requests and try again.", len(params))
	case len(tags) > 100:
		return nil, invalid("A batch logging request can contain at most 100 tags. Got %d tags. Please split up tags across multiple requests and try again.", len(tags))
	case len(metrics)+len(params)+len(tags) > 1000:
		return nil, invalid("A batch logging request can contain at most 1000 metrics, params, and tags in total. Got %d.", len(metrics)+len(params)+len(tags))
	}
	parsed := make([]Metric, 0, len(metrics))
	for _, m := range metrics {
		if m.Key == nil || *m.Key == "" {
			return nil, invalid("Missing value for required parameter 'metrics[].key'.")
		}
		if e := validMetricName(*m.Key); e != nil {
			return nil, e
		}
		if m.Value == nil {
			return nil, invalid("Missing value for required parameter 'metrics[].value'.")
		}
		if m.Timestamp == nil {
			return nil, invalid("Missing value for required parameter 'metrics[].timestamp'.")
		}
		v, ok := parseDouble(m.Value)
		if !ok {
			return nil, invalid("Got invalid value %s for metric '%s'", m.Value, *m.Key)
		}
		ts, e1 := strconv.ParseInt(strings.Trim(string(m.Timestamp), `"`), 10, 64)
		var step int64
		var e2 error
		if m.Step != nil {
			step, e2 = strconv.ParseInt(strings.Trim(string(m.Step), `"`), 10, 64)
		}
		if e1 != nil || e2 != nil {
			return nil, invalid("Got invalid timestamp or step for metric '%s'", *m.Key)
		}
		parsed = append(parsed, Metric{Key: *m.Key, Value: v, Timestamp: ts, Step: step})
	}
	for _, p := range params {
		if len(*p.Value) > 6000 {
			return nil, invalid("Param value '%s…' had length %d, which exceeded length limit of 6000", (*p.Value)[:10], len(*p.Value))
		}
		if old, ok := r.params[*p.Key]; ok && old != *p.Value {
			return nil, invalid("Changing param values is not allowed. Param with key='%s' was already logged with value='%s' for run ID='%s'. Attempted logging new value '%s'.", *p.Key, old, r.info.ID, *p.Value)
		}
	}
	for _, p := range params {
		r.params[*p.Key] = *p.Value
	}
	for _, t := range tags {
		r.tags[*t.Key] = *t.Value
	}
	// Metrics append, as MLflow documents: "Logging a metric (key, value,
	// timestamp) appends to the set of values for the metric".
	r.metrics = append(r.metrics, parsed...)
	return map[string]any{}, nil
}

func parseDouble(raw json.RawMessage) (float64, bool) {
	s := string(raw)
	if strings.HasPrefix(s, `"`) {
		switch strings.Trim(s, `"`) {
		case "NaN":
			return math.NaN(), true
		case "Infinity":
			return math.Inf(1), true
		case "-Infinity":
			return math.Inf(-1), true
		}
		v, err := strconv.ParseFloat(strings.Trim(s, `"`), 64)
		return v, err == nil
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

func (s *Server) logInputs(q *request) (any, *apiError) {
	r := s.runOf(q)
	var ins []struct {
		Tags    []kv `json:"tags"`
		Dataset *struct {
			Name       string `json:"name"`
			Digest     string `json:"digest"`
			SourceType string `json:"source_type"`
			Source     string `json:"source"`
			Schema     string `json:"schema"`
			Profile    string `json:"profile"`
		} `json:"dataset"`
	}
	q.list("datasets", &ins)
	if q.err != nil {
		return nil, q.err
	}
	for _, in := range ins {
		if in.Dataset == nil || in.Dataset.Name == "" || in.Dataset.Digest == "" || in.Dataset.SourceType == "" || in.Dataset.Source == "" {
			return nil, invalid("Missing value for required parameter 'datasets[].dataset.name/digest/source_type/source'.")
		}
		if e := validDataset(in.Dataset.Name, in.Dataset.Digest, in.Dataset.Source, in.Dataset.Schema, in.Dataset.Profile); e != nil {
			return nil, e
		}
		for _, t := range in.Tags {
			if t.Key == nil || t.Value == nil {
				return nil, invalid("InputTag key and value cannot be None")
			}
			if len(*t.Key) > MaxInputTagKey {
				return nil, invalid("InputTag key exceeds the maximum length of %d", MaxInputTagKey)
			}
			if len(*t.Value) > MaxInputTagValue {
				return nil, invalid("InputTag value exceeds the maximum length of %d", MaxInputTagValue)
			}
		}
	}
	for _, in := range ins {
		d := tracker.Dataset{Name: in.Dataset.Name, Digest: in.Dataset.Digest, SourceType: in.Dataset.SourceType, Source: in.Dataset.Source, Schema: in.Dataset.Schema, Profile: in.Dataset.Profile}
		for _, t := range in.Tags {
			if t.Key != nil && t.Value != nil && *t.Key == tracker.TagDatasetContext {
				d.Context = *t.Value
			}
		}
		dup := false
		for _, old := range r.datasets {
			if old.Name == d.Name && old.Digest == d.Digest && old.Context == d.Context {
				dup = true // MLflow links a run to a dataset once
			}
		}
		if !dup {
			r.datasets = append(r.datasets, d)
		}
	}
	return map[string]any{}, nil
}

// MLflow 2.10.2's dataset and input tag limits (mlflow/utils/validation.py).
const (
	MaxDatasetName    = 500
	MaxDatasetDigest  = 36
	MaxDatasetSource  = 65535
	MaxDatasetSchema  = 65535
	MaxDatasetProfile = 16777215
	MaxInputTagKey    = 255
	MaxInputTagValue  = 500
)

func validDataset(name, digest, source, schema, profile string) *apiError {
	for _, c := range []struct {
		what  string
		value string
		max   int
	}{{"name", name, MaxDatasetName}, {"digest", digest, MaxDatasetDigest}, {"source", source, MaxDatasetSource},
		{"schema", schema, MaxDatasetSchema}, {"profile", profile, MaxDatasetProfile}} {
		if len(c.value) > c.max {
			return invalid("Dataset %s exceeds the maximum length of %d", c.what, c.max)
		}
	}
	return nil
}

func (s *Server) metricHistory(q *request) (any, *apiError) {
	r := s.runOf(q)
	key := q.required("metric_key")
	if q.err != nil {
		return nil, q.err
	}
	var out []map[string]any
	for _, m := range r.metrics {
		if m.Key == key {
			out = append(out, metricJSON(m))
		}
	}
	if out == nil {
		return map[string]any{}, nil
	}
	return map[string]any{"metrics": out}, nil
}

// --- artifacts --------------------------------------------------------------

func (s *Server) artifact(w http.ResponseWriter, r *http.Request, p string) {
	if p == "" || strings.Contains(p, "..") {
		writeError(w, 400, "INVALID_PARAMETER_VALUE", "Invalid path")
		return
	}
	switch r.Method {
	case http.MethodPut:
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.artifacts[p] = data
		s.calls["PUT artifacts"]++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	case http.MethodGet:
		s.mu.Lock()
		data, ok := s.artifacts[p]
		s.mu.Unlock()
		if !ok {
			// MLflow 2.10.2 answers a missing proxied artifact with a 500.
			writeError(w, 500, "INTERNAL_ERROR", "The following failures occurred while downloading one or more artifacts from artifacts:\n##### File "+p+" #####\n[Errno 2] No such file or directory: '"+p+"'")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusMethodNotAllowed)
		io.WriteString(w, "<!doctype html>\n<title>405 Method Not Allowed</title>\n")
	}
}

func (s *Server) runArtifactRoot(r *run) string {
	return strings.TrimPrefix(r.info.ArtifactURI, "mlflow-artifacts:/")
}

func (s *Server) listArtifacts(q *request) (any, *apiError) {
	r := s.runOf(q)
	dir := strings.Trim(q.str("path"), "/")
	if q.err != nil {
		return nil, q.err
	}
	prefix := s.runArtifactRoot(r) + "/"
	if dir != "" {
		prefix += dir + "/"
	}
	seen := map[string]bool{}
	var files []map[string]any
	for _, k := range slices.Sorted(maps.Keys(s.artifacts)) {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		rel := name
		if dir != "" {
			rel = dir + "/" + name
		}
		if seen[rel] {
			continue
		}
		seen[rel] = true
		f := map[string]any{"path": rel, "is_dir": isDir}
		if !isDir {
			f["file_size"] = len(s.artifacts[k])
		}
		files = append(files, f)
	}
	out := map[string]any{"root_uri": r.info.ArtifactURI}
	if files != nil {
		out["files"] = files
	}
	return out, nil
}

// --- registry ---------------------------------------------------------------

func (s *Server) createModel(q *request) (any, *apiError) {
	name := q.required("name")
	if q.err != nil {
		return nil, q.err
	}
	if _, ok := s.models[name]; ok {
		return nil, &apiError{400, "RESOURCE_ALREADY_EXISTS", fmt.Sprintf("Registered Model (name=%s) already exists.", name)}
	}
	s.models[name] = &registeredModel{name: name, aliases: map[string]string{}}
	return map[string]any{"registered_model": map[string]any{"name": name}}, nil
}

func (s *Server) model(q *request) *registeredModel {
	name := q.required("name")
	if q.err != nil {
		return nil
	}
	m, ok := s.models[name]
	if !ok {
		q.fail(notFound("Registered Model with name=%s not found", name))
	}
	return m
}

func (s *Server) getModel(q *request) (any, *apiError) {
	m := s.model(q)
	if q.err != nil {
		return nil, q.err
	}
	return map[string]any{"registered_model": map[string]any{"name": m.name}}, nil
}

func (s *Server) versionJSON(m *registeredModel, v *modelVersion) map[string]any {
	var aliases []string
	for a, ver := range m.aliases {
		if ver == v.Version {
			aliases = append(aliases, a)
		}
	}
	sort.Strings(aliases)
	out := map[string]any{"name": m.name, "version": v.Version, "source": v.Source, "run_id": v.RunID,
		"status": "READY", "creation_timestamp": v.created, "aliases": aliases}
	if v.Description != "" {
		out["description"] = v.Description
	}
	if len(v.Tags) > 0 {
		var tags []map[string]string
		for _, k := range slices.Sorted(maps.Keys(v.Tags)) {
			tags = append(tags, map[string]string{"key": k, "value": v.Tags[k]})
		}
		out["tags"] = tags
	}
	return out
}

func (s *Server) versionOf(q *request) (*registeredModel, *modelVersion) {
	m := s.model(q)
	ver := q.required("version")
	if q.err != nil {
		return nil, nil
	}
	v := m.find(ver)
	if v == nil {
		q.fail(notFound("Model Version (name=%s, version=%s) not found", m.name, ver))
	}
	return m, v
}

func (s *Server) updateVersion(q *request) (any, *apiError) {
	_, v := s.versionOf(q)
	d := q.str("description")
	if q.err != nil {
		return nil, q.err
	}
	if d != "" {
		v.Description = d
	}
	return map[string]any{}, nil
}

func (s *Server) setVersionTag(q *request) (any, *apiError) {
	_, v := s.versionOf(q)
	k := q.required("key")
	if k != "" {
		q.fail(validName(k))
	}
	val := q.str("value")
	if q.err != nil {
		return nil, q.err
	}
	if len(val) > 5000 {
		return nil, invalid("Model version tag value had length %d, which exceeded length limit of 5000", len(val))
	}
	if v.Tags == nil {
		v.Tags = map[string]string{}
	}
	v.Tags[k] = val
	return map[string]any{}, nil
}

func (s *Server) createVersion(q *request) (any, *apiError) {
	m := s.model(q)
	source := q.required("source")
	runID := q.str("run_id")
	if q.err != nil {
		return nil, q.err
	}
	if runID != "" {
		r, ok := s.runs[runID]
		if !ok {
			return nil, notFound("Run with id=%s not found", runID)
		}
		if !strings.HasPrefix(source, r.info.ArtifactURI) && !strings.HasPrefix(source, "runs:/"+runID) {
			return nil, invalid("Invalid model version source: '%s'. To use a local path as a model version source, the run_id request parameter has to be specified and the local path has to be contained within the artifact directory of the run specified by the run_id.", source)
		}
	}
	v := &modelVersion{ModelVersion: tracker.ModelVersion{Name: m.name, Version: strconv.Itoa(len(m.versions) + 1), Source: source, RunID: runID, Status: "READY"}, created: time.Now().UnixMilli()}
	m.versions = append(m.versions, v)
	return map[string]any{"model_version": s.versionJSON(m, v)}, nil
}

func (m *registeredModel) find(version string) *modelVersion {
	for _, v := range m.versions {
		if v.Version == version {
			return v
		}
	}
	return nil
}

func (s *Server) getVersion(q *request) (any, *apiError) {
	m, v := s.versionOf(q)
	if q.err != nil {
		return nil, q.err
	}
	return map[string]any{"model_version": s.versionJSON(m, v)}, nil
}

func (s *Server) downloadURI(q *request) (any, *apiError) {
	_, v := s.versionOf(q)
	if q.err != nil {
		return nil, q.err
	}
	return map[string]any{"artifact_uri": v.Source}, nil
}

var versionFilterRe = regexp.MustCompile(`^\s*(name|run_id|source)\s*=\s*'([^']*)'\s*$`)

func (s *Server) searchVersions(q *request) (any, *apiError) {
	filter := q.str("filter")
	if q.err != nil {
		return nil, q.err
	}
	want := map[string]string{}
	if strings.TrimSpace(filter) != "" {
		for _, part := range regexp.MustCompile(`(?i)\s+and\s+`).Split(filter, -1) {
			m := versionFilterRe.FindStringSubmatch(part)
			if m == nil {
				return nil, invalid("Invalid filter '%s'", filter)
			}
			want[m[1]] = m[2]
		}
	}
	var out []map[string]any
	for _, n := range slices.Sorted(maps.Keys(s.models)) {
		m := s.models[n]
		for _, v := range m.versions {
			if w, ok := want["name"]; ok && w != m.name {
				continue
			}
			if w, ok := want["run_id"]; ok && w != v.RunID {
				continue
			}
			if w, ok := want["source"]; ok && w != v.Source {
				continue
			}
			out = append(out, s.versionJSON(m, v))
		}
	}
	if out == nil {
		return map[string]any{}, nil
	}
	return map[string]any{"model_versions": out}, nil
}

func (s *Server) setAlias(q *request) (any, *apiError) {
	m := s.model(q)
	alias := q.required("alias")
	ver := q.required("version")
	if q.err != nil {
		return nil, q.err
	}
	switch {
	case !aliasRe.MatchString(alias) || len(alias) > 255:
		return nil, invalid("Invalid alias name: '%s'. Names may only contain alphanumerics, underscores (_), and dashes (-).", alias)
	case strings.EqualFold(alias, "latest"):
		return nil, invalid("'latest' alias name (case insensitive) is reserved.")
	case aliasVersionRe.MatchString(alias):
		return nil, invalid("Version alias name '%s' is reserved.", alias)
	}
	if m.find(ver) == nil {
		return nil, notFound("Model Version (name=%s, version=%s) not found", m.name, ver)
	}
	m.aliases[alias] = ver
	return map[string]any{}, nil
}

var (
	aliasRe        = regexp.MustCompile(`^[\w\-]+$`)
	aliasVersionRe = regexp.MustCompile(`^[vV]\d+$`)
)

func (s *Server) getAlias(q *request) (any, *apiError) {
	m := s.model(q)
	alias := q.required("alias")
	if q.err != nil {
		return nil, q.err
	}
	ver, ok := m.aliases[alias]
	if !ok {
		return nil, invalid("Registered model alias %s not found.", alias)
	}
	return map[string]any{"model_version": s.versionJSON(m, m.find(ver))}, nil
}

// --- snapshots for tests ----------------------------------------------------

// Runs returns every stored run (full metric histories), by start time.
func (s *Server) Runs() []Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Run
	for _, r := range s.runs {
		snap := r.snapshot()
		out = append(out, Run{Info: r.info, Params: snap.Params, Tags: snap.Tags, Metrics: append([]Metric(nil), r.metrics...), Datasets: snap.Datasets})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Info.ID < out[j].Info.ID })
	return out
}

// Artifacts returns a run's artifacts (relative path → bytes).
func (s *Server) Artifacts(runID string) map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[runID]
	out := map[string][]byte{}
	if !ok {
		return out
	}
	prefix := s.runArtifactRoot(r) + "/"
	for k, v := range s.artifacts {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = append([]byte(nil), v...)
		}
	}
	return out
}

// ModelVersions returns the versions of a registered model.
func (s *Server) ModelVersions(name string) []tracker.ModelVersion {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[name]
	if !ok {
		return nil
	}
	var out []tracker.ModelVersion
	for _, v := range m.versions {
		out = append(out, v.ModelVersion)
	}
	return out
}

// Alias returns the version an alias points at ("" if none).
func (s *Server) Alias(name, alias string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[name]; ok {
		return m.aliases[alias]
	}
	return ""
}
