// Package fallback is the tracker used when an MLflow server is configured:
// every write goes to the local store (tracker/localstore: SQLite or
// PostgreSQL) first and is mirrored to MLflow. When MLflow is unreachable
// after the client's retries, the run continues entirely in the local store
// and its outbox entry says unsynced (never split without a record); Sync
// replays unsynced runs idempotently — a run is found again by its
// flywheel.local_run_id tag, and only what MLflow is missing is sent.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

// Remote is the MLflow side (tracker/mlflow.Client).
type Remote interface {
	tracker.Tracker
	tracker.VersionAnnotator
	SearchModelVersions(ctx context.Context, filter string) ([]tracker.ModelVersion, error)
}

// Options builds a Tracker.
type Options struct {
	Remote Remote
	Local  *localstore.Store
	Logger *slog.Logger
	// Cooldown is how long, after MLflow was found unreachable, new runs
	// and registry calls skip it and go straight to the local store
	// (default 30s; Sync always tries).
	Cooldown time.Duration
	// StartTimeout is how long a run may stay starting (StartRun waiting
	// for MLflow) before a sync, in any process, takes it over as
	// unsynced: its process died mid-start (default 10m; it must exceed
	// the client's timeout × retries).
	StartTimeout time.Duration
	// SyncLease is how long one sync may hold a run before a sync of
	// another process may take it over (default 10m).
	SyncLease time.Duration
}

// Tracker mirrors a local store to MLflow. Run ids it returns are MLflow's
// while the run is mirrored, the local id otherwise; both are accepted.
// Version numbers it returns are MLflow's when the version reached MLflow.
type Tracker struct {
	remote Remote
	local  *localstore.Store
	outbox *localstore.Outbox
	log    *slog.Logger

	cooldown, startTimeout, syncLease time.Duration
	now                               func() time.Time
	// owner names this tracker's syncs in the outbox's claims.
	owner string

	mu        sync.Mutex
	runs      map[string]*runState // local id → state
	downUntil time.Time
}

type runState struct {
	remoteID string
	mirrored bool
}

var _ tracker.Tracker = (*Tracker)(nil)

// New builds the tracker; it owns neither backend's lifetime beyond Close.
func New(opts Options) (*Tracker, error) {
	if opts.Remote == nil || opts.Local == nil {
		return nil, errors.New("fallback: Remote and Local are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cd := opts.Cooldown
	if cd == 0 {
		cd = 30 * time.Second
	}
	st := opts.StartTimeout
	if st == 0 {
		st = 10 * time.Minute
	}
	lease := opts.SyncLease
	if lease == 0 {
		lease = 10 * time.Minute
	}
	return &Tracker{remote: opts.Remote, local: opts.Local, outbox: opts.Local.Outbox(), log: log.With("component", "tracker/fallback"),
		runs: map[string]*runState{}, cooldown: cd, startTimeout: st, syncLease: lease, now: time.Now, owner: localstore.NewRunID()}, nil
}

// down reports whether MLflow failed recently.
func (t *Tracker) down() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.now().Before(t.downUntil)
}

func (t *Tracker) markDown() {
	t.mu.Lock()
	t.downUntil = t.now().Add(t.cooldown)
	t.mu.Unlock()
}

func (t *Tracker) markUp() {
	t.mu.Lock()
	t.downUntil = time.Time{}
	t.mu.Unlock()
}

// Close closes both backends.
func (t *Tracker) Close() error {
	return errors.Join(t.remote.Close(), t.local.Close())
}

// Local is the underlying store.
func (t *Tracker) Local() *localstore.Store { return t.local }

func unavailable(err error) bool {
	return errors.Is(err, tracker.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// GetExperimentByName answers from the local store.
func (t *Tracker) GetExperimentByName(ctx context.Context, name string) (tracker.Experiment, error) {
	return t.local.GetExperimentByName(ctx, name)
}

// GetOrCreateExperiment creates the experiment locally (ids are local); it
// is created in MLflow when a run starts there.
func (t *Tracker) GetOrCreateExperiment(ctx context.Context, name string) (tracker.Experiment, error) {
	return t.local.GetOrCreateExperiment(ctx, name)
}

// StartRun records the run locally, in state starting: no sync, in this
// process or another sharing the store, replays it while MLflow creates it
// (it would become a second MLflow run). The MLflow run is tagged with the
// local id; on success the run is mirrored, else unsynced.
func (t *Tracker) StartRun(ctx context.Context, experimentID string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	name, err := t.local.ExperimentName(ctx, experimentID)
	if err != nil {
		return tracker.RunInfo{}, err
	}
	localID := localstore.NewRunID()
	tags := map[string]string{}
	for k, v := range opts.Tags {
		tags[k] = v
	}
	tags[tracker.TagLocalRunID] = localID
	opts.Tags = tags
	if opts.StartTime.IsZero() {
		opts.StartTime = time.Now()
	}
	info, err := t.local.StartRunWithID(ctx, experimentID, localID, localstore.StateStarting, opts)
	if err != nil {
		return tracker.RunInfo{}, err
	}
	st := &runState{}
	t.mu.Lock()
	t.runs[localID] = st
	t.mu.Unlock()
	opts.Name = info.Name
	if t.down() {
		t.log.Warn("MLflow was unreachable moments ago: the run is tracked in the local store and replayed by `flywheel runs sync`", "local_run_id", localID)
		return info, t.outbox.SetState(ctx, localID, localstore.StateStarting, localstore.StateUnsynced)
	}
	exp, err := t.remote.GetOrCreateExperiment(ctx, name)
	var rinfo tracker.RunInfo
	if err == nil {
		rinfo, err = t.remote.StartRun(ctx, exp.ID, opts)
	}
	switch {
	case err == nil:
		ok, err := t.outbox.Started(ctx, localID, rinfo.ID)
		if err != nil {
			return tracker.RunInfo{}, err
		}
		if !ok {
			t.log.Warn("MLflow created the run after the start timeout, when a sync had taken it over: the run continues in the local store",
				"run_id", rinfo.ID, "local_run_id", localID, "start_timeout", t.startTimeout)
			return info, nil
		}
		t.mu.Lock()
		st.remoteID, st.mirrored = rinfo.ID, true
		t.mu.Unlock()
		t.log.Info("run started", "run_id", rinfo.ID, "local_run_id", localID, "backend", "mlflow")
		return rinfo, nil
	case unavailable(err):
		t.markDown()
		t.log.Warn("MLflow unreachable: the run continues in the local store and is replayed by `flywheel runs sync`",
			"local_run_id", localID, "err", err)
		return info, t.outbox.SetState(context.WithoutCancel(ctx), localID, localstore.StateStarting, localstore.StateUnsynced)
	default:
		// MLflow rejected the run (a 4xx): it is not retried by sync, which
		// would meet the same answer; `runs sync --all` still uploads it.
		t.local.EndRun(ctx, localID, tracker.StatusFailed, time.Time{})
		if serr := t.outbox.SetState(context.WithoutCancel(ctx), localID, localstore.StateStarting, localstore.StateLocal); serr != nil {
			err = errors.Join(err, serr)
		}
		return tracker.RunInfo{}, fmt.Errorf("starting the run in MLflow: %w", err)
	}
}

// state resolves a run id and returns the local id and its mirror state.
func (t *Tracker) state(ctx context.Context, runID string) (string, *runState, error) {
	localID, err := t.outbox.Resolve(ctx, runID)
	if err != nil {
		return "", nil, err
	}
	t.mu.Lock()
	st, ok := t.runs[localID]
	t.mu.Unlock()
	if ok {
		return localID, st, nil
	}
	or, err := t.outbox.Run(ctx, localID)
	if err != nil {
		return "", nil, err
	}
	st = &runState{remoteID: or.RemoteID, mirrored: or.State == localstore.StateMirrored}
	t.mu.Lock()
	t.runs[localID] = st
	t.mu.Unlock()
	return localID, st, nil
}

// mirror runs fn against MLflow when the run is mirrored; a failure turns the
// run into a local-only, unsynced run.
func (t *Tracker) mirror(ctx context.Context, localID string, st *runState, op string, fn func(remoteID string) error) error {
	t.mu.Lock()
	mirrored, remoteID := st.mirrored, st.remoteID
	t.mu.Unlock()
	if !mirrored {
		return nil
	}
	err := fn(remoteID)
	if err == nil {
		return nil
	}
	t.mu.Lock()
	st.mirrored = false
	t.mu.Unlock()
	if serr := t.outbox.SetState(context.WithoutCancel(ctx), localID, "", localstore.StateUnsynced); serr != nil {
		return errors.Join(err, serr)
	}
	if unavailable(err) {
		t.markDown()
		t.log.Warn("MLflow unreachable mid-run: the run continues in the local store and is replayed by `flywheel runs sync`",
			"run_id", remoteID, "local_run_id", localID, "op", op, "err", err)
		return nil
	}
	return fmt.Errorf("mirroring %s to MLflow (the run continues locally, unsynced): %w", op, err)
}

// LogBatch writes locally, then mirrors.
func (t *Tracker) LogBatch(ctx context.Context, runID string, metrics []tracker.Metric, params []tracker.Param, tags []tracker.Tag) error {
	localID, st, err := t.state(ctx, runID)
	if err != nil {
		return err
	}
	if err := t.local.LogBatch(ctx, localID, metrics, params, tags); err != nil {
		return err
	}
	return t.mirror(ctx, localID, st, "log-batch", func(rid string) error { return t.remote.LogBatch(ctx, rid, metrics, params, tags) })
}

// LogInputs writes locally, then mirrors.
func (t *Tracker) LogInputs(ctx context.Context, runID string, datasets []tracker.Dataset) error {
	localID, st, err := t.state(ctx, runID)
	if err != nil {
		return err
	}
	if err := t.local.LogInputs(ctx, localID, datasets); err != nil {
		return err
	}
	return t.mirror(ctx, localID, st, "log-inputs", func(rid string) error { return t.remote.LogInputs(ctx, rid, datasets) })
}

// LogArtifact stores the file locally, then uploads it from there.
func (t *Tracker) LogArtifact(ctx context.Context, runID, path string, r io.Reader) error {
	localID, st, err := t.state(ctx, runID)
	if err != nil {
		return err
	}
	if err := t.local.LogArtifact(ctx, localID, path, r); err != nil {
		return err
	}
	return t.mirror(ctx, localID, st, "artifact", func(rid string) error {
		f, err := t.local.OpenArtifact(ctx, localID, path)
		if err != nil {
			return err
		}
		defer f.Close()
		return t.remote.LogArtifact(ctx, rid, path, f)
	})
}

// EndRun ends the run locally, then in MLflow.
func (t *Tracker) EndRun(ctx context.Context, runID string, status tracker.RunStatus, end time.Time) error {
	localID, st, err := t.state(ctx, runID)
	if err != nil {
		return err
	}
	if end.IsZero() {
		end = time.Now()
	}
	if err := t.local.EndRun(ctx, localID, status, end); err != nil {
		return err
	}
	return t.mirror(ctx, localID, st, "end", func(rid string) error { return t.remote.EndRun(ctx, rid, status, end) })
}

// localID is the local id of a run known by its MLflow id, else id.
func (t *Tracker) localID(ctx context.Context, id string) string {
	if local, err := t.outbox.Resolve(ctx, id); err == nil {
		return local
	}
	return id
}

// GetRun answers from the local store, or from MLflow for runs logged elsewhere.
func (t *Tracker) GetRun(ctx context.Context, runID string) (tracker.Run, error) {
	r, err := t.local.GetRun(ctx, t.localID(ctx, runID))
	if errors.Is(err, tracker.ErrNotFound) {
		return t.remote.GetRun(ctx, runID)
	}
	return r, err
}

// SearchRuns searches the local store (every run this host logged).
func (t *Tracker) SearchRuns(ctx context.Context, q tracker.SearchQuery) ([]tracker.Run, error) {
	return t.local.SearchRuns(ctx, q)
}

// MetricHistory answers locally, or from MLflow.
func (t *Tracker) MetricHistory(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	ms, err := t.local.MetricHistory(ctx, t.localID(ctx, runID), key)
	if errors.Is(err, tracker.ErrNotFound) {
		return t.remote.MetricHistory(ctx, runID, key)
	}
	return ms, err
}

// ListArtifacts answers locally, or from MLflow.
func (t *Tracker) ListArtifacts(ctx context.Context, runID, path string) ([]tracker.FileInfo, error) {
	fs, err := t.local.ListArtifacts(ctx, t.localID(ctx, runID), path)
	if errors.Is(err, tracker.ErrNotFound) {
		return t.remote.ListArtifacts(ctx, runID, path)
	}
	return fs, err
}

// OpenArtifact answers locally, or from MLflow.
func (t *Tracker) OpenArtifact(ctx context.Context, runID, path string) (io.ReadCloser, error) {
	f, err := t.local.OpenArtifact(ctx, t.localID(ctx, runID), path)
	if errors.Is(err, tracker.ErrNotFound) {
		return t.remote.OpenArtifact(ctx, runID, path)
	}
	return f, err
}

// CreateRegisteredModel creates the model locally and, if reachable, in MLflow.
func (t *Tracker) CreateRegisteredModel(ctx context.Context, name string) error {
	if err := t.local.CreateRegisteredModel(ctx, name); err != nil {
		return err
	}
	if t.down() {
		return nil // replayed with the versions
	}
	if err := t.remote.CreateRegisteredModel(ctx, name); err != nil {
		if unavailable(err) {
			t.markDown()
			return nil
		}
		return err
	}
	return nil
}

// CreateModelVersion creates the version locally and mirrors it; it returns
// MLflow's version number when mirrored, the local one otherwise.
func (t *Tracker) CreateModelVersion(ctx context.Context, name, runID, artifactPath string) (tracker.ModelVersion, error) {
	localID, st, err := t.state(ctx, runID)
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	if err := t.local.CreateRegisteredModel(ctx, name); err != nil {
		return tracker.ModelVersion{}, err
	}
	lv, err := t.local.CreateModelVersion(ctx, name, localID, artifactPath)
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	out := lv
	err = t.mirror(ctx, localID, st, "model-version", func(rid string) error {
		if err := t.remote.CreateRegisteredModel(ctx, name); err != nil {
			return err
		}
		rv, err := t.remote.CreateModelVersion(ctx, name, rid, artifactPath)
		if err != nil {
			return err
		}
		out = rv
		return t.outbox.SetRemoteVersion(ctx, name, lv.Version, rv.Version)
	})
	return out, err
}

// SetAlias sets the alias locally and in MLflow; an alias MLflow did not get
// is replayed by Sync. version may be MLflow's or the local number.
func (t *Tracker) SetAlias(ctx context.Context, name, alias, version string) error {
	lv, remote, err := t.outbox.LocalVersion(ctx, name, version)
	if err != nil {
		return err
	}
	if err := t.outbox.SetAlias(ctx, name, alias, lv.Version); err != nil {
		return err
	}
	if remote == "" || t.down() {
		return nil
	}
	if err := t.remote.SetAlias(ctx, name, alias, remote); err != nil {
		if unavailable(err) {
			t.markDown()
			t.log.Warn("MLflow unreachable: alias recorded locally for sync", "model", name, "alias", alias, "err", err)
			return nil
		}
		return err
	}
	return t.outbox.MarkAliasSynced(ctx, name, alias, lv.Version)
}

var _ tracker.VersionAnnotator = (*Tracker)(nil)

// AnnotateModelVersion records the description and tags locally and sends
// them to MLflow when the version is there; Sync replays them otherwise.
// version may be MLflow's or the local number.
func (t *Tracker) AnnotateModelVersion(ctx context.Context, name, version string, a tracker.VersionAnnotation) error {
	lv, remote, err := t.outbox.LocalVersion(ctx, name, version)
	if err != nil {
		return err
	}
	if err := t.local.AnnotateModelVersion(ctx, name, lv.Version, a); err != nil {
		return err
	}
	if remote == "" || t.down() {
		return nil
	}
	if err := t.remote.AnnotateModelVersion(ctx, name, remote, a); err != nil {
		if unavailable(err) {
			t.markDown()
			t.log.Warn("MLflow unreachable: version tags recorded locally for sync", "model", name, "version", remote, "err", err)
			return nil
		}
		return fmt.Errorf("model version %s of %q in MLflow: %w", remote, name, err)
	}
	return nil
}

// Mirrored reports whether the run is being written to MLflow as it goes
// (false: it is complete only in the local store, unsynced or local).
func (t *Tracker) Mirrored(ctx context.Context, runID string) (bool, error) {
	_, st, err := t.state(ctx, runID)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return st.mirrored, nil
}

// GetModelVersionByAlias asks MLflow, falling back to the local registry.
func (t *Tracker) GetModelVersionByAlias(ctx context.Context, name, alias string) (tracker.ModelVersion, error) {
	if t.down() {
		return t.local.GetModelVersionByAlias(ctx, name, alias)
	}
	mv, err := t.remote.GetModelVersionByAlias(ctx, name, alias)
	if err != nil && (unavailable(err) || errors.Is(err, tracker.ErrNotFound)) {
		return t.local.GetModelVersionByAlias(ctx, name, alias)
	}
	return mv, err
}
