package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

// SyncReport counts what a Sync sent.
type SyncReport struct {
	Runs, Synced           int // unsynced runs seen; runs now complete in MLflow
	Busy                   int // runs skipped: another sync was replaying them
	Created                int // runs created in MLflow
	Params, Tags, Metrics  int
	Datasets, Artifacts    int
	ModelVersions, Aliases int
	Failed                 []RunError
}

// RunError is a run that could not be replayed (it stays unsynced).
type RunError struct {
	LocalID string
	Err     error
}

func (e RunError) Error() string { return fmt.Sprintf("run %s: %v", e.LocalID, e.Err) }

// SyncOptions selects what Sync replays.
type SyncOptions struct {
	// All re-checks mirrored and synced runs too (e.g. after a crash
	// between a local write and its mirror) and uploads runs recorded
	// without a tracking URI (state local).
	All bool
}

// Sync replays every unsynced run, then every pending alias. It is
// idempotent: the MLflow run is found by its flywheel.local_run_id tag and
// only params, tags, metric values, datasets, artifacts and model versions
// MLflow lacks are sent, so a repeated or interrupted sync sends nothing
// twice. A run still RUNNING stays unsynced after its data is sent.
func (t *Tracker) Sync(ctx context.Context, opts SyncOptions) (SyncReport, error) {
	var rep SyncReport
	// Runs still starting are left to their StartRun (in whichever process
	// sharing the store) until they are older than the start timeout.
	ids, err := t.outbox.Pending(ctx, opts.All, t.now().Add(-t.startTimeout))
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		ok, err := t.outbox.Claim(ctx, id, t.owner, t.now().Add(t.syncLease))
		if err != nil {
			return rep, err
		}
		if !ok {
			rep.Busy++
			continue // the sync holding it replays it
		}
		rep.Runs++
		err = t.syncRun(ctx, id, &rep)
		if rerr := t.outbox.Release(context.WithoutCancel(ctx), id, t.owner); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			t.log.Warn("run not replayed; it stays unsynced", "local_run_id", id, "err", err)
			rep.Failed = append(rep.Failed, RunError{id, err})
			if unavailable(err) {
				t.markDown()
				return rep, fmt.Errorf("MLflow unreachable, sync stopped after %d of %d runs: %w", rep.Runs, len(ids), err)
			}
		}
	}
	if err := t.syncAliases(ctx, &rep); err != nil {
		return rep, err
	}
	if len(rep.Failed) == 0 {
		t.markUp()
	}
	if len(rep.Failed) > 0 {
		errs := make([]error, len(rep.Failed))
		for i, f := range rep.Failed {
			errs[i] = f
		}
		return rep, fmt.Errorf("%d of %d runs not replayed: %w", len(rep.Failed), rep.Runs, errors.Join(errs...))
	}
	return rep, nil
}

func (t *Tracker) findRemoteRun(ctx context.Context, lr localstore.LocalRun, remoteID, expID string) (string, error) {
	if remoteID != "" {
		_, err := t.remote.GetRun(ctx, remoteID)
		if err == nil {
			return remoteID, nil
		}
		if !errors.Is(err, tracker.ErrNotFound) {
			return "", err
		}
	}
	runs, err := t.remote.SearchRuns(ctx, tracker.SearchQuery{
		ExperimentIDs: []string{expID},
		Filter:        fmt.Sprintf("tags.`%s` = '%s'", tracker.TagLocalRunID, lr.Info.ID),
	})
	if err != nil {
		return "", err
	}
	if len(runs) > 0 {
		return runs[0].Info.ID, nil
	}
	return "", nil
}

func (t *Tracker) syncRun(ctx context.Context, localID string, rep *SyncReport) error {
	lr, err := t.local.GetLocalRun(ctx, localID)
	if err != nil {
		return err
	}
	ob, err := t.outbox.Run(ctx, localID)
	if err != nil {
		return err
	}
	if ob.State == localstore.StateStarting {
		// Its StartRun died (or waited past the start timeout): take it over.
		if err := t.outbox.SetState(ctx, localID, localstore.StateStarting, localstore.StateUnsynced); err != nil {
			return err
		}
	}
	exp, err := t.remote.GetOrCreateExperiment(ctx, lr.ExperimentName)
	if err != nil {
		return fmt.Errorf("experiment %q: %w", lr.ExperimentName, err)
	}
	rid, err := t.findRemoteRun(ctx, lr, ob.RemoteID, exp.ID)
	if err != nil {
		return fmt.Errorf("finding the MLflow run: %w", err)
	}
	if rid == "" {
		tags := map[string]string{}
		for k, v := range lr.Tags {
			tags[k] = v
		}
		tags[tracker.TagLocalRunID] = lr.Info.ID
		info, err := t.remote.StartRun(ctx, exp.ID, tracker.RunOptions{Name: lr.Info.Name, Tags: tags, StartTime: time.UnixMilli(lr.Info.StartTime)})
		if err != nil {
			return fmt.Errorf("creating the MLflow run: %w", err)
		}
		rid = info.ID
		rep.Created++
	}
	if rid != ob.RemoteID {
		ok, err := t.outbox.SetRemoteIDIf(ctx, localID, ob.RemoteID, rid)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the run got another MLflow id while it was replayed as %s; the next sync continues it", rid)
		}
	}
	remote, err := t.remote.GetRun(ctx, rid)
	if err != nil {
		return err
	}

	// Params and tags MLflow lacks.
	var params []tracker.Param
	for _, k := range slices.Sorted(maps.Keys(lr.Params)) {
		v := lr.Params[k]
		if rv, ok := remote.Params[k]; ok {
			if rv != v {
				return fmt.Errorf("param %q is %q in MLflow but %q locally", k, rv, v)
			}
			continue
		}
		params = append(params, tracker.Param{Key: k, Value: v})
	}
	var tags []tracker.Tag
	for _, k := range slices.Sorted(maps.Keys(lr.Tags)) {
		if rv, ok := remote.Tags[k]; !ok || rv != lr.Tags[k] {
			tags = append(tags, tracker.Tag{Key: k, Value: lr.Tags[k]})
		}
	}
	// Metric values MLflow lacks (as a multiset of key, step, timestamp, value).
	local, err := t.local.Metrics(ctx, localID)
	if err != nil {
		return err
	}
	have := map[metricKey]int{}
	histories := map[string]bool{}
	for _, m := range local {
		if histories[m.Key] {
			continue
		}
		histories[m.Key] = true
		if _, ok := remote.Metrics[m.Key]; !ok {
			continue
		}
		hist, err := t.remote.MetricHistory(ctx, rid, m.Key)
		if err != nil {
			return fmt.Errorf("metric history %q: %w", m.Key, err)
		}
		for _, h := range hist {
			have[keyOf(h)]++
		}
	}
	var metrics []tracker.Metric
	for _, m := range local {
		k := keyOf(m)
		if have[k] > 0 {
			have[k]--
			continue
		}
		metrics = append(metrics, m)
	}
	if len(params)+len(tags)+len(metrics) > 0 {
		if err := t.remote.LogBatch(ctx, rid, metrics, params, tags); err != nil {
			return fmt.Errorf("log-batch: %w", err)
		}
		rep.Params += len(params)
		rep.Tags += len(tags)
		rep.Metrics += len(metrics)
	}

	// Datasets.
	var datasets []tracker.Dataset
	for _, d := range lr.Datasets {
		found := false
		for _, rd := range remote.Datasets {
			if rd.Name == d.Name && rd.Digest == d.Digest && rd.Context == d.Context {
				found = true
			}
		}
		if !found {
			datasets = append(datasets, d)
		}
	}
	if len(datasets) > 0 {
		if err := t.remote.LogInputs(ctx, rid, datasets); err != nil {
			return fmt.Errorf("log-inputs: %w", err)
		}
		rep.Datasets += len(datasets)
	}

	// Artifacts missing in MLflow or of another size.
	files, err := t.local.AllArtifacts(ctx, localID)
	if err != nil {
		return err
	}
	if len(files) > 0 {
		remoteFiles := map[string]int64{}
		if err := t.walkRemote(ctx, rid, "", remoteFiles); err != nil {
			return fmt.Errorf("listing MLflow artifacts: %w", err)
		}
		for _, f := range files {
			if size, ok := remoteFiles[f.Path]; ok && size == f.Size {
				continue
			}
			if err := t.uploadLocal(ctx, localID, rid, f.Path); err != nil {
				return fmt.Errorf("artifact %s: %w", f.Path, err)
			}
			rep.Artifacts++
		}
	}

	// Model versions created from this run.
	versions, err := t.local.ModelVersionsOfRun(ctx, localID)
	if err != nil {
		return err
	}
	for _, v := range versions {
		if rv, err := t.outbox.RemoteVersion(ctx, v.Name, v.Version); err != nil {
			return err
		} else if rv != "" {
			continue
		}
		if err := t.remote.CreateRegisteredModel(ctx, v.Name); err != nil {
			return err
		}
		source := strings.TrimRight(remote.Info.ArtifactURI, "/") + "/" + v.ArtifactPath
		existing, err := t.remote.SearchModelVersions(ctx, fmt.Sprintf("name='%s' and run_id='%s'", v.Name, rid))
		if err != nil {
			return err
		}
		remoteVersion := ""
		for _, e := range existing {
			if e.Source == source {
				remoteVersion = e.Version
			}
		}
		var have tracker.ModelVersion
		for _, e := range existing {
			if e.Source == source {
				have = e
			}
		}
		if remoteVersion == "" {
			mv, err := t.remote.CreateModelVersion(ctx, v.Name, rid, v.ArtifactPath)
			if err != nil {
				return fmt.Errorf("model version of %q: %w", v.Name, err)
			}
			remoteVersion = mv.Version
			rep.ModelVersions++
		}
		if ann := missingAnnotation(v.ModelVersion, have); ann.Description != "" || len(ann.Tags) > 0 {
			if err := t.remote.AnnotateModelVersion(ctx, v.Name, remoteVersion, ann); err != nil {
				return fmt.Errorf("tags of model version %s of %q: %w", remoteVersion, v.Name, err)
			}
		}
		if err := t.outbox.SetRemoteVersion(ctx, v.Name, v.Version, remoteVersion); err != nil {
			return err
		}
	}

	// Status last: a finished run is complete.
	terminal := lr.Info.Status != tracker.StatusRunning && lr.Info.Status != tracker.StatusScheduled
	if terminal && (remote.Info.Status != lr.Info.Status || remote.Info.EndTime != lr.Info.EndTime) {
		if err := t.remote.EndRun(ctx, rid, lr.Info.Status, time.UnixMilli(lr.Info.EndTime)); err != nil {
			return err
		}
	}
	if terminal {
		ok, err := t.outbox.MarkSynced(ctx, localID, lr.Rev)
		if err != nil {
			return err
		}
		if ok {
			rep.Synced++
		} // else written meanwhile: it stays unsynced for the next sync
	}
	t.mu.Lock()
	if st, ok := t.runs[localID]; ok {
		st.remoteID = rid
	}
	t.mu.Unlock()
	t.log.Info("run replayed to MLflow", "local_run_id", localID, "run_id", rid, "complete", terminal)
	return nil
}

func (t *Tracker) walkRemote(ctx context.Context, rid, dir string, out map[string]int64) error {
	fs, err := t.remote.ListArtifacts(ctx, rid, dir)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if f.IsDir {
			if err := t.walkRemote(ctx, rid, f.Path, out); err != nil {
				return err
			}
			continue
		}
		out[f.Path] = f.Size
	}
	return nil
}

func (t *Tracker) uploadLocal(ctx context.Context, localID, rid, path string) error {
	f, err := t.local.OpenArtifact(ctx, localID, path)
	if err != nil {
		return err
	}
	defer f.Close()
	return t.remote.LogArtifact(ctx, rid, path, io.Reader(f))
}

func (t *Tracker) syncAliases(ctx context.Context, rep *SyncReport) error {
	pending, err := t.outbox.PendingAliases(ctx)
	if err != nil {
		return err
	}
	for _, p := range pending {
		remote, err := t.outbox.RemoteVersion(ctx, p.Name, p.Version)
		if err != nil {
			return err
		}
		if remote == "" {
			continue // its run is not replayed yet
		}
		if err := t.remote.SetAlias(ctx, p.Name, p.Alias, remote); err != nil {
			if unavailable(err) {
				return err
			}
			rep.Failed = append(rep.Failed, RunError{LocalID: "alias " + p.Name + "@" + p.Alias, Err: err})
			continue
		}
		if err := t.outbox.MarkAliasSynced(ctx, p.Name, p.Alias, p.Version); err != nil {
			return err
		}
		rep.Aliases++
	}
	return nil
}

type metricKey struct {
	key             string
	step, timestamp int64
	bits            uint64
}

func keyOf(m tracker.Metric) metricKey {
	v := m.Value
	if math.IsNaN(v) {
		v = math.NaN() // one canonical NaN
	}
	return metricKey{m.Key, m.Step, m.Timestamp, math.Float64bits(v)}
}

// missingAnnotation is the part of local's description and tags that
// remote lacks.
func missingAnnotation(local, remote tracker.ModelVersion) tracker.VersionAnnotation {
	var a tracker.VersionAnnotation
	if local.Description != "" && local.Description != remote.Description {
		a.Description = local.Description
	}
	for k, v := range local.Tags {
		if remote.Tags[k] != v {
			if a.Tags == nil {
				a.Tags = map[string]string{}
			}
			a.Tags[k] = v
		}
	}
	return a
}
