// Package modelsource follows models in an MLflow model registry: for each
// reference such as models:/ridership@champion it resolves the alias, and
// downloads the version's model.onnx and model card through the tracking
// server into a local model repository folder (atomically, as
// internal/modelrepo publishes), where server/repository loads, validates and
// hot-reloads it like any published version. When the alias moves, the new
// version is downloaded; the versions it replaces are removed only once it
// serves, so a version whose files do not load never replaces the serving
// one, and a registry that cannot be reached leaves serving as it is.
package modelsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel"
)

// Ref names a registered model version: models:/<name>@<alias> follows an
// alias, models:/<name>/<version> pins a version.
type Ref struct {
	Name    string
	Alias   string
	Version string
}

var refRe = regexp.MustCompile(`^models:/([A-Za-z0-9][A-Za-z0-9_.-]*)(?:@([\w-]+)|/([1-9][0-9]*))$`)

// IsRef reports whether s is written as a models:/ URI.
func IsRef(s string) bool { return strings.HasPrefix(s, "models:/") }

// ParseRef parses models:/<name>@<alias> or models:/<name>/<version>. The
// name must also be a repository model name (letters, digits, _ . -).
func ParseRef(s string) (Ref, error) {
	m := refRe.FindStringSubmatch(s)
	if m == nil {
		return Ref{}, fmt.Errorf("%q: want models:/<name>@<alias> or models:/<name>/<version>", s)
	}
	return Ref{Name: m[1], Alias: m[2], Version: m[3]}, nil
}

func (r Ref) String() string {
	if r.Alias != "" {
		return "models:/" + r.Name + "@" + r.Alias
	}
	return "models:/" + r.Name + "/" + r.Version
}

// Registry is what the follower needs from the tracking server
// (tracker/mlflow.Client).
type Registry interface {
	GetModelVersionByAlias(ctx context.Context, name, alias string) (tracker.ModelVersion, error)
	GetModelVersion(ctx context.Context, name, version string) (tracker.ModelVersion, error)
	GetModelVersionDownloadURI(ctx context.Context, name, version string) (string, error)
	OpenArtifactURI(ctx context.Context, uri, rel string) (io.ReadCloser, error)
}

// Repository is the serving side (server/repository.Repository): whether a
// version serves, and a nudge to rescan the folder now.
type Repository interface {
	Ready(model string, version int64) bool
	Rescan()
}

// Config configures a Follower.
type Config struct {
	Refs []Ref
	// Dir is the local model repository folder the versions go into
	// (<Dir>/<name>/<version>/model.onnx + model.json); it is kept between
	// restarts, so serve starts with the last version while the registry
	// is unreachable.
	Dir string
	// Interval between polls of the aliases (default 10s).
	Interval time.Duration
	// MaxModelBytes bounds a downloaded model.onnx (default 1 GiB).
	MaxModelBytes int64
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if len(c.Refs) == 0 {
		return errors.New("modelsource: no models:/ references")
	}
	seen := map[string]bool{}
	for _, r := range c.Refs {
		if seen[r.Name] {
			return fmt.Errorf("modelsource: model %q is referenced twice (serve one alias or version per model)", r.Name)
		}
		seen[r.Name] = true
	}
	if c.Dir == "" {
		return errors.New("modelsource: Dir is empty")
	}
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if c.Interval < 0 {
		return fmt.Errorf("modelsource: interval %s is negative", c.Interval)
	}
	if c.MaxModelBytes == 0 {
		c.MaxModelBytes = 1 << 30
	}
	return nil
}

// Follower keeps Dir in step with the registry.
type Follower struct {
	cfg  Config
	reg  Registry
	repo Repository
	log  *slog.Logger

	mu     sync.Mutex
	target map[string]int64  // model → the version the reference resolves to
	failed map[string]string // "model/version" → why its download was rejected
}

// New builds a follower; repo may be set later with SetRepository (the
// repository scans Dir, so the first Sync runs before it exists).
func New(cfg Config, reg Registry, logger *slog.Logger) (*Follower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("modelsource: no registry")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("modelsource: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, reg: reg, log: logger.With("component", "modelsource"),
		target: map[string]int64{}, failed: map[string]string{}}, nil
}

// SetRepository connects the serving repository (before Run).
func (f *Follower) SetRepository(r Repository) { f.repo = r }

// Dir is the local repository folder to serve.
func (f *Follower) Dir() string { return f.cfg.Dir }

// Target is the version a model's reference resolved to last (0: never).
func (f *Follower) Target(model string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.target[model]
}

// Sync resolves every reference once, downloads versions that are not in
// Dir yet and removes versions a serving target replaced. Errors of single
// models are joined; the others are still synced.
func (f *Follower) Sync(ctx context.Context) error {
	var errs []error
	for _, ref := range f.cfg.Refs {
		if err := f.syncRef(ctx, ref); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref, err))
		}
	}
	return errors.Join(errs...)
}

// Run syncs every Interval until ctx ends; failures are logged and the
// serving versions stay.
func (f *Follower) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := f.Sync(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("registry poll incomplete; serving what is loaded", "err", err)
		}
	}
}

func (f *Follower) syncRef(ctx context.Context, ref Ref) error {
	var mv tracker.ModelVersion
	var err error
	if ref.Alias != "" {
		mv, err = f.reg.GetModelVersionByAlias(ctx, ref.Name, ref.Alias)
	} else {
		mv, err = f.reg.GetModelVersion(ctx, ref.Name, ref.Version)
	}
	if err != nil {
		return fmt.Errorf("resolving: %w", err)
	}
	v, err := modelrepo.ParseVersion(mv.Version)
	if err != nil {
		return fmt.Errorf("registry version %q: %w", mv.Version, err)
	}
	f.mu.Lock()
	prev := f.target[ref.Name]
	f.target[ref.Name] = v
	reason, rejected := f.failed[ref.Name+"/"+mv.Version]
	f.mu.Unlock()
	if prev != v {
		f.log.Info("registry reference resolved", "ref", ref.String(), "version", v, "previous", prev)
	}
	modelDir := filepath.Join(f.cfg.Dir, ref.Name)
	if rejected {
		return fmt.Errorf("version %d was rejected, still serving the previous one: %s", v, reason)
	}
	if err := writeConfig(modelDir); err != nil {
		return err
	}
	if _, err := os.Stat(modelrepo.VersionDir(modelDir, v)); errors.Is(err, os.ErrNotExist) {
		if err := f.download(ctx, ref.Name, mv.Version, modelDir, v); err != nil {
			var rej rejectedError
			if errors.As(err, &rej) {
				f.mu.Lock()
				f.failed[ref.Name+"/"+mv.Version] = rej.Error()
				f.mu.Unlock()
			}
			return err
		}
		f.log.Info("registry version downloaded", "model", ref.Name, "version", v, "dir", modelrepo.VersionDir(modelDir, v))
		if f.repo != nil {
			f.repo.Rescan()
		}
	} else if err != nil {
		return err
	}
	return f.prune(modelDir, ref.Name, v)
}

// prune removes the model's other versions once v serves: the repository
// then retires them, having already switched to v (a rollback to a lower
// number switches when the higher one leaves the folder).
func (f *Follower) prune(modelDir, name string, v int64) error {
	if f.repo == nil || !f.repo.Ready(name, v) {
		return nil
	}
	versions, err := modelrepo.Versions(modelDir)
	if err != nil {
		return err
	}
	for _, o := range versions {
		if o == v {
			continue
		}
		// Rename first: the repository sees the version leave in one step.
		old := modelrepo.VersionDir(modelDir, o)
		tmp := filepath.Join(modelDir, fmt.Sprintf(".old-%d-%d", o, time.Now().UnixNano()))
		if err := os.Rename(old, tmp); err != nil {
			return fmt.Errorf("removing replaced version %d: %w", o, err)
		}
		if err := os.RemoveAll(tmp); err != nil {
			return fmt.Errorf("removing replaced version %d: %w", o, err)
		}
		f.log.Info("replaced version removed", "model", name, "version", o, "serving", v)
		if f.repo != nil {
			f.repo.Rescan()
		}
	}
	return nil
}

// rejectedError is a version whose files cannot be served (not retried
// until the reference moves).
type rejectedError struct{ err error }

func (e rejectedError) Error() string { return e.err.Error() }
func (e rejectedError) Unwrap() error { return e.err }

// download fetches version v of name into modelDir (see Download) and
// remembers nothing: the caller records rejections.
func (f *Follower) download(ctx context.Context, name, version, modelDir string, v int64) error {
	return fetchVersion(ctx, f.reg, f.cfg.MaxModelBytes, name, version, modelDir, v)
}

// Download publishes registry version of name into modelDir/<version>/
// (model.onnx and model.json, atomically as internal/modelrepo publishes)
// unless that folder exists, and returns the version number. The trainer
// uses it for the champion it evaluates against in registry mode.
// maxModelBytes 0 means 1 GiB.
func Download(ctx context.Context, reg Registry, name, version, modelDir string, maxModelBytes int64) (int64, error) {
	v, err := modelrepo.ParseVersion(version)
	if err != nil {
		return 0, fmt.Errorf("registry version %q: %w", version, err)
	}
	if maxModelBytes <= 0 {
		maxModelBytes = 1 << 30
	}
	if _, err := os.Stat(modelrepo.VersionDir(modelDir, v)); err == nil {
		return v, nil
	}
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return 0, err
	}
	return v, fetchVersion(ctx, reg, maxModelBytes, name, version, modelDir, v)
}

// fetchVersion fetches MLmodel, the ONNX graph it names and the model card,
// and publishes them as version v. Files that are plainly unusable (no onnx
// flavor, an unreadable card, an empty or oversized graph) are rejected
// here; the repository validates the rest when it loads the version.
func fetchVersion(ctx context.Context, reg Registry, maxModelBytes int64, name, version, modelDir string, v int64) error {
	uri, err := reg.GetModelVersionDownloadURI(ctx, name, version)
	if err != nil {
		return fmt.Errorf("download URI of version %s: %w", version, err)
	}
	mlm, err := fetch(ctx, reg, uri, mlmodel.FileMLmodel, 1<<20)
	if err != nil {
		return err
	}
	info, err := mlmodel.Parse(mlm)
	if err != nil {
		return rejectedError{err}
	}
	data, err := info.ONNXData()
	if err != nil {
		return rejectedError{err}
	}
	graph, err := fetch(ctx, reg, uri, data, maxModelBytes)
	if err != nil {
		return err
	}
	if len(graph) == 0 {
		return rejectedError{fmt.Errorf("%s of version %s is empty", data, version)}
	}
	cardJSON, err := fetch(ctx, reg, uri, modelrepo.CardFile, 64<<20)
	if errors.Is(err, tracker.ErrNotFound) {
		cardJSON = nil // a model logged elsewhere: served without a card
	} else if err != nil {
		return err
	}
	if cardJSON != nil {
		var c modelrepo.Card
		if err := json.Unmarshal(cardJSON, &c); err != nil {
			return rejectedError{fmt.Errorf("%s of version %s: %w", modelrepo.CardFile, version, err)}
		}
		if err := c.Validate(); err != nil {
			return rejectedError{fmt.Errorf("%s of version %s: %w", modelrepo.CardFile, version, err)}
		}
	}
	_, err = modelrepo.Publish(modelDir, v, func(dir string, _ int64) error {
		if err := os.WriteFile(filepath.Join(dir, modelrepo.ModelFile), graph, 0o644); err != nil {
			return err
		}
		if cardJSON != nil {
			return os.WriteFile(filepath.Join(dir, modelrepo.CardFile), cardJSON, 0o644)
		}
		return nil
	})
	if errors.Is(err, modelrepo.ErrVersionExists) {
		return nil
	}
	return err
}

func fetch(ctx context.Context, reg Registry, uri, rel string, limit int64) ([]byte, error) {
	rc, err := reg.OpenArtifactURI(ctx, uri, rel)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", rel, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", rel, err)
	}
	if int64(len(b)) > limit {
		return nil, rejectedError{fmt.Errorf("%s is larger than %s bytes", rel, strconv.FormatInt(limit, 10))}
	}
	return b, nil
}

// followerConfig serves every version in the folder: the follower keeps the
// target and, until the target serves, the version it replaces, so both a
// move up and a rollback to a lower number switch without a gap.
const followerConfig = "# written by flywheel serve --models models:/…: the registry alias picks the version\nversion_policy:\n  all: true\n"

func writeConfig(modelDir string) error {
	path := filepath.Join(modelDir, modelrepo.ConfigFile)
	if b, err := os.ReadFile(path); err == nil && string(b) == followerConfig {
		return nil
	}
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(followerConfig), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
