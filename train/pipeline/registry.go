package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/modelsource"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/train/jobs"
)

// Registry is the MLflow model registry of registry mode
// (tracker/mlflow.Client): the champion is the version the alias names, a
// promoted candidate is registered with its job's id as a version tag, and
// the alias moves to it as the last step, once the version is READY.
type Registry interface {
	modelsource.Registry
	SearchModelVersions(ctx context.Context, filter string) ([]tracker.ModelVersion, error)
	CreateRegisteredModel(ctx context.Context, name string) error
	CreateTaggedModelVersion(ctx context.Context, name, runID, artifactPath string, tags map[string]string) (tracker.ModelVersion, error)
	DeleteModelVersion(ctx context.Context, name, version string) error
	SetAlias(ctx context.Context, name, alias, version string) error
	OpenArtifact(ctx context.Context, runID, path string) (io.ReadCloser, error)
}

// Version tags the pipeline sets when it registers a version (in the
// create request itself, so no version exists without them).
const (
	// TagJobID names the trainer job that registered the version: a retried
	// or taken-over job finds its version by it and never registers twice.
	TagJobID = "flywheel.job_id"
	// TagChampionVersion is the champion the candidate beat: the alias moves
	// only from that version.
	TagChampionVersion = "flywheel.champion_version"
)

// StatusReady is MLflow's status of a model version whose files are in place.
const StatusReady = "READY"

// registryChampion resolves the alias and downloads the champion's files
// into the trainer's own cache folder (r.modelDir), so the evaluate step
// runs it locally like a folder version.
func (p *Pipeline) registryChampion(ctx context.Context, r *run) (int, *modelrepo.Card, error) {
	ref := "models:/" + r.job.Model + "@" + r.cfg.Alias
	mv, err := p.o.Registry.GetModelVersionByAlias(ctx, r.job.Model, r.cfg.Alias)
	if err != nil {
		return 0, nil, fmt.Errorf("champion %s: %w", ref, err)
	}
	v, err := modelsource.Download(ctx, p.o.Registry, r.job.Model, mv.Version, r.modelDir, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("downloading champion %s (version %s): %w", ref, mv.Version, err)
	}
	c, err := modelrepo.LoadCard(filepath.Join(modelrepo.VersionDir(r.modelDir, v), modelrepo.CardFile))
	if err != nil {
		return 0, nil, fmt.Errorf("champion %s version %d: %w", ref, v, err)
	}
	return int(v), c, nil
}

// mirrorReporter is implemented by a tracker with a local store
// (tracker/fallback): whether a run is being written to MLflow as it goes.
type mirrorReporter interface {
	Mirrored(ctx context.Context, runID string) (bool, error)
}

// runInMLflow fails when the tracked run did not reach MLflow (a tracker
// with a local store kept it there, to be synced later): the registry can
// only register a version from a run it has.
func (p *Pipeline) runInMLflow(ctx context.Context, r *run) error {
	mr, ok := p.o.Tracker.(mirrorReporter)
	if !ok {
		return nil
	}
	mirrored, err := mr.Mirrored(ctx, r.runID)
	if err != nil {
		return fmt.Errorf("run %s: %w", r.runID, err)
	}
	if !mirrored {
		return fmt.Errorf("run %s is in the local store only (MLflow unreachable; it is synced later): no version registered", r.runID)
	}
	return nil
}

// jobVersion returns the registry version this job registered (the lowest
// when a lost race left two), or ok false.
func (p *Pipeline) jobVersion(ctx context.Context, model, jobID string) (mv tracker.ModelVersion, ok bool, err error) {
	if strings.ContainsAny(jobID, `'"\`+"`") || strings.ContainsAny(model, `'"\`+"`") {
		return mv, false, fmt.Errorf("job %q of model %q cannot be searched for in the registry", jobID, model)
	}
	vs, err := p.o.Registry.SearchModelVersions(ctx, fmt.Sprintf("name='%s' and tags.`%s`='%s'", model, TagJobID, jobID))
	if err != nil {
		return mv, false, fmt.Errorf("looking for the version of job %s in the registry: %w", jobID, err)
	}
	vs = slices.DeleteFunc(vs, func(v tracker.ModelVersion) bool { return v.Name != model || v.Tags[TagJobID] != jobID })
	if len(vs) == 0 {
		return mv, false, nil
	}
	slices.SortFunc(vs, func(a, b tracker.ModelVersion) int { return versionNumber(a.Version) - versionNumber(b.Version) })
	return vs[0], true, nil
}

func versionNumber(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// adopt makes a version this job registered (in this attempt or an earlier
// one) the run's.
func (r *run) adopt(mv tracker.ModelVersion) {
	r.registered, r.version = mv.Version, versionNumber(mv.Version)
	if mv.RunID != "" {
		r.runID = mv.RunID
	}
	if c, err := strconv.Atoi(mv.Tags[TagChampionVersion]); err == nil && r.champVer == 0 {
		r.champVer = c
	}
}

// registerVersion registers the tracked run's model as a new version tagged
// with the job, unless the registry already holds this job's version; a
// concurrent registration of the same job (a trainer that lost its lease
// and did not notice yet) is resolved to the lower version number.
func (p *Pipeline) registerVersion(ctx context.Context, r *run, log io.Writer) error {
	reg := p.o.Registry
	if err := reg.CreateRegisteredModel(ctx, r.job.Model); err != nil {
		return fmt.Errorf("registered model %q: %w", r.job.Model, err)
	}
	mv, err := reg.CreateTaggedModelVersion(ctx, r.job.Model, r.runID, "model", map[string]string{
		TagJobID: r.job.ID, TagChampionVersion: strconv.Itoa(r.champVer)})
	if err != nil {
		return fmt.Errorf("registering the model version: %w", err)
	}
	first, ok, err := p.jobVersion(ctx, r.job.Model, r.job.ID)
	if err != nil {
		return err
	}
	if ok && first.Version != mv.Version {
		fmt.Fprintf(log, "version %s of this job was registered concurrently; deleting version %s\n", first.Version, mv.Version)
		if err := reg.DeleteModelVersion(ctx, r.job.Model, mv.Version); err != nil {
			return fmt.Errorf("deleting duplicate version %s: %w", mv.Version, err)
		}
		mv = first
	}
	r.adopt(mv)
	return nil
}

// completeVersion makes the registered version's card name its registry
// number (the card was logged before the number existed) and waits until
// MLflow reports the version READY.
func (p *Pipeline) completeVersion(ctx context.Context, r *run, log io.Writer) error {
	reg := p.o.Registry
	path := "model/" + modelrepo.CardFile
	rc, err := reg.OpenArtifact(ctx, r.runID, path)
	if err != nil {
		return fmt.Errorf("reading the card of version %s: %w", r.registered, err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("reading the card of version %s: %w", r.registered, err)
	}
	var c modelrepo.Card
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("card of version %s: %w", r.registered, err)
	}
	if c.Version != r.version || c.Training.RegistryVersion != r.registered {
		c.Version, c.Training.RegistryVersion = r.version, r.registered
		out, _ := json.MarshalIndent(&c, "", "  ")
		if err := p.o.Tracker.LogArtifact(ctx, r.runID, path, bytes.NewReader(out)); err != nil {
			return fmt.Errorf("logging the card of version %s: %w", r.registered, err)
		}
		fmt.Fprintf(log, "card of version %s updated with its registry number\n", r.registered)
	}
	if r.cand != nil {
		r.cand.Version, r.cand.Training.RegistryVersion = r.version, r.registered
	}
	deadline := time.Now().Add(r.cfg.ReadyWait)
	for {
		mv, err := reg.GetModelVersion(ctx, r.job.Model, r.registered)
		if err != nil {
			return fmt.Errorf("status of version %s: %w", r.registered, err)
		}
		switch mv.Status {
		case StatusReady, "": // "": a registry without statuses
			return nil
		case "FAILED_REGISTRATION":
			return fmt.Errorf("version %s failed registration", r.registered)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("version %s still %s after %s", r.registered, mv.Status, r.cfg.ReadyWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.cfg.ReadyPoll):
		}
	}
}

// promote moves the alias to the registered version: the last step of a
// publication. It moves only from the champion the candidate was evaluated
// against; when another job moved the alias meanwhile, the candidate is
// not promoted over a version it never faced.
func (p *Pipeline) promote(ctx context.Context, r *run) (string, error) {
	reg := p.o.Registry
	cur, err := reg.GetModelVersionByAlias(ctx, r.job.Model, r.cfg.Alias)
	switch {
	case errors.Is(err, tracker.ErrNotFound):
	case err != nil:
		return "", fmt.Errorf("alias %s: %w", r.cfg.Alias, err)
	case cur.Version == r.registered:
		return fmt.Sprintf("alias %s already on version %s", r.cfg.Alias, r.registered), nil
	case cur.Version != strconv.Itoa(r.champVer):
		msg := fmt.Sprintf("alias %s moved to version %s while this job evaluated version %s against version %d: not promoted",
			r.cfg.Alias, cur.Version, r.registered, r.champVer)
		return msg, &jobs.Rejection{Reason: msg}
	}
	if err := reg.SetAlias(ctx, r.job.Model, r.cfg.Alias, r.registered); err != nil {
		return "", fmt.Errorf("moving alias %s to version %s: %w", r.cfg.Alias, r.registered, err)
	}
	return fmt.Sprintf("alias %s moved from version %d to version %s", r.cfg.Alias, r.champVer, r.registered), nil
}
