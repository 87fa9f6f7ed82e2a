// Package tracker records experiment runs: experiments, runs with params,
// metrics (with steps and timestamps), tags, dataset inputs and artifacts,
// and a model registry with versions and aliases. It mirrors MLflow's
// tracking entities so that every backend (tracker/mlflow, tracker/localstore,
// tracker/fallback) holds the same data and runs can be replayed between them.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
)

// Sentinel errors. Backends wrap them (MLflow error codes are translated to
// them by tracker/mlflow), so callers branch with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid argument")
	ErrPermission    = errors.New("permission denied")
	// ErrUnavailable means the backend could not be reached or kept failing
	// after retries (connection errors, timeouts, 429, 5xx).
	ErrUnavailable = errors.New("tracking backend unavailable")
)

// RunStatus is MLflow's run status.
type RunStatus string

const (
	StatusRunning   RunStatus = "RUNNING"
	StatusScheduled RunStatus = "SCHEDULED"
	StatusFinished  RunStatus = "FINISHED"
	StatusFailed    RunStatus = "FAILED"
	StatusKilled    RunStatus = "KILLED"
)

// Valid reports whether s is one of MLflow's statuses.
func (s RunStatus) Valid() bool {
	switch s {
	case StatusRunning, StatusScheduled, StatusFinished, StatusFailed, StatusKilled:
		return true
	}
	return false
}

// System tag keys set on every run (MLflow's conventions).
const (
	TagRunName    = "mlflow.runName"
	TagUser       = "mlflow.user"
	TagSourceName = "mlflow.source.name"
	TagSourceType = "mlflow.source.type"
	TagGitCommit  = "mlflow.source.git.commit"
	// TagLocalRunID carries the SQLite run id of a run that was replayed (or
	// mirrored) to MLflow; sync finds an already-replayed run by it.
	TagLocalRunID = "flywheel.local_run_id"
	// TagDatasetContext is the input tag MLflow uses for a dataset's role.
	TagDatasetContext = "mlflow.data.context"
)

// Experiment is a named group of runs.
type Experiment struct {
	ID               string
	Name             string
	ArtifactLocation string
	Tags             map[string]string
}

// Source describes who and what started a run; it becomes the mlflow.user and
// mlflow.source.* system tags.
type Source struct {
	User      string // mlflow.user
	Name      string // mlflow.source.name, e.g. the program
	Type      string // mlflow.source.type: NOTEBOOK, JOB, PROJECT, LOCAL, UNKNOWN
	GitCommit string // mlflow.source.git.commit
}

// RunOptions starts a run.
type RunOptions struct {
	Name      string
	Tags      map[string]string
	Source    Source
	StartTime time.Time // zero = now
}

// SystemTags returns the user tags plus the system tags derived from the
// options; explicit Tags win.
func (o RunOptions) SystemTags() map[string]string {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(TagRunName, o.Name)
	set(TagUser, o.Source.User)
	set(TagSourceName, o.Source.Name)
	typ := o.Source.Type
	if typ == "" {
		typ = "LOCAL"
	}
	set(TagSourceType, typ)
	set(TagGitCommit, o.Source.GitCommit)
	for k, v := range o.Tags {
		m[k] = v
	}
	return m
}

// Param is an immutable run parameter: logging the same key with another
// value is ErrInvalid, with the same value a no-op.
type Param struct{ Key, Value string }

// Tag is a mutable key/value label.
type Tag struct{ Key, Value string }

// Metric is one value of a metric's history. Timestamp is in milliseconds
// since the epoch (MLflow's unit). Values may be NaN or ±Inf.
type Metric struct {
	Key       string
	Value     float64
	Timestamp int64
	Step      int64
}

// Dataset is a dataset input of a run, identified by name and digest.
type Dataset struct {
	Name       string
	Digest     string
	SourceType string // e.g. "local", "http"
	Source     string // JSON or a path/URI describing the source
	Schema     string // optional JSON
	Profile    string // optional JSON (e.g. {"num_rows": 3997})
	Context    string // input tag mlflow.data.context: training, evaluation …
}

// RunInfo is a run's metadata.
type RunInfo struct {
	ID             string
	ExperimentID   string
	Name           string
	Status         RunStatus
	StartTime      int64 // ms
	EndTime        int64 // ms, 0 while running
	ArtifactURI    string
	LifecycleStage string
}

// Run is a run with its data. Metrics hold the latest value of each key
// (the largest step, then timestamp); use MetricHistory for all of them.
type Run struct {
	Info     RunInfo
	Params   map[string]string
	Metrics  map[string]Metric
	Tags     map[string]string
	Datasets []Dataset
}

// FileInfo describes an artifact.
type FileInfo struct {
	Path  string // relative to the run's artifact root
	IsDir bool
	Size  int64
}

// ModelVersion is a registered model version created from a run artifact.
type ModelVersion struct {
	Name        string
	Version     string // MLflow versions are strings of positive integers
	Source      string
	RunID       string
	Status      string
	Aliases     []string
	Description string
	Tags        map[string]string
}

// VersionAnnotation describes a model version: the description and tags
// shown on its page in MLflow's registry.
type VersionAnnotation struct {
	Description string
	Tags        map[string]string
}

// VersionAnnotator is implemented by registries that keep model version
// descriptions and tags (MLflow, and the fallback tracker that mirrors it).
type VersionAnnotator interface {
	AnnotateModelVersion(ctx context.Context, name, version string, a VersionAnnotation) error
}

// SearchQuery selects runs. Filter uses MLflow's search syntax subset
// (see ParseFilter). MaxResults 0 means all.
type SearchQuery struct {
	ExperimentIDs []string
	Filter        string
	OrderBy       []string
	MaxResults    int
	// PageSize is the number of runs asked for per request (0 = the
	// backend's maximum); results are the same, only the paging differs.
	PageSize int
}

// Experiments gets or creates experiments by name.
type Experiments interface {
	GetOrCreateExperiment(ctx context.Context, name string) (Experiment, error)
	GetExperimentByName(ctx context.Context, name string) (Experiment, error)
}

// RunStarter starts runs.
type RunStarter interface {
	StartRun(ctx context.Context, experimentID string, opts RunOptions) (RunInfo, error)
}

// RunLogger writes a run's data.
type RunLogger interface {
	// LogBatch logs metrics, params and tags; backends chunk as needed.
	LogBatch(ctx context.Context, runID string, metrics []Metric, params []Param, tags []Tag) error
	LogInputs(ctx context.Context, runID string, datasets []Dataset) error
	// LogArtifact uploads r as the artifact at path (slash-separated,
	// relative to the run's artifact root).
	LogArtifact(ctx context.Context, runID, path string, r io.Reader) error
	EndRun(ctx context.Context, runID string, status RunStatus, end time.Time) error
}

// RunReader reads runs back.
type RunReader interface {
	GetRun(ctx context.Context, runID string) (Run, error)
	SearchRuns(ctx context.Context, q SearchQuery) ([]Run, error)
	MetricHistory(ctx context.Context, runID, key string) ([]Metric, error)
	ListArtifacts(ctx context.Context, runID, path string) ([]FileInfo, error)
	OpenArtifact(ctx context.Context, runID, path string) (io.ReadCloser, error)
}

// Registry is the model registry.
type Registry interface {
	// CreateRegisteredModel creates name; an existing model is not an error.
	CreateRegisteredModel(ctx context.Context, name string) error
	// CreateModelVersion registers the artifact at artifactPath of runID.
	CreateModelVersion(ctx context.Context, name, runID, artifactPath string) (ModelVersion, error)
	SetAlias(ctx context.Context, name, alias, version string) error
	GetModelVersionByAlias(ctx context.Context, name, alias string) (ModelVersion, error)
}

// Tracker is every role together; callers should accept the narrowest role.
type Tracker interface {
	Experiments
	RunStarter
	RunLogger
	RunReader
	Registry
	Close() error
}

// Error is a backend error that keeps the backend's code and status.
// Is matches the sentinel Kind.
type Error struct {
	Kind    error  // one of the sentinels
	Code    string // e.g. MLflow's error_code
	Status  int    // HTTP status, 0 when not HTTP
	Message string
	Op      string
}

func (e *Error) Error() string {
	s := e.Op
	if s != "" {
		s += ": "
	}
	if e.Code != "" {
		s += e.Code + ": "
	}
	if e.Message != "" {
		return s + e.Message
	}
	return s + e.Kind.Error()
}

func (e *Error) Is(target error) bool { return target == e.Kind }

// Errorf returns an *Error of kind with a formatted message.
func Errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// NowMillis is t in MLflow's timestamp unit (ms); the zero time is now.
func NowMillis(t time.Time) int64 {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UnixMilli()
}

// MaxKeyLength and MaxParamValueLength are MLflow's limits.
const (
	MaxKeyLength        = 250
	MaxParamValueLength = 6000
)

// ValidateKey applies MLflow's rule for metric, param and tag keys:
// alphanumerics, underscores, dashes, periods, spaces, colons and slashes, at
// most 250 bytes, no "..", not absolute. Both backends use it so data the
// local store accepts can be replayed to MLflow.
func ValidateKey(k string) error {
	if k == "" {
		return Errorf(ErrInvalid, "key is empty")
	}
	if len(k) > MaxKeyLength {
		return Errorf(ErrInvalid, "key %.20q… has %d bytes, more than %d", k, len(k), MaxKeyLength)
	}
	if strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
		return Errorf(ErrInvalid, "key %q: no '..' and no leading '/'", k)
	}
	for _, r := range k {
		if !(r == '_' || r == '-' || r == '.' || r == ' ' || r == '/' || r == ':' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return Errorf(ErrInvalid, "key %q: names may only contain alphanumerics, underscores, dashes, periods, spaces, colons and slashes", k)
		}
	}
	return nil
}
