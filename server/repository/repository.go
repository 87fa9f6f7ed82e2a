// Package repository serves the versioned model folder
// models/<name>/<version>/{model.onnx,model.json}: it scans it, applies each
// model's version policy, validates new versions before exposing them,
// switches atomically, keeps in-flight requests on the session they started
// with (reference counting), and hot-reloads on file system events with a
// periodic rescan as a fallback.
package repository

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Version states, as shown in the repository index and the state metric.
const (
	StateReady       = "READY"
	StateUnavailable = "UNAVAILABLE"
	StateLoading     = "LOADING"
	StateUnloading   = "UNLOADING"
)

// Sentinel errors; the API maps them to status codes.
var (
	ErrModelNotFound   = errors.New("model not found")
	ErrVersionNotFound = errors.New("model version not found")
	ErrUnavailable     = errors.New("model unavailable")
)

// Runner runs one loaded model version. Inputs follow the order of the
// version's Inputs; outputs follow Outputs. Implementations are safe for
// concurrent use. A dynamic batcher can wrap a Runner.
type Runner interface {
	Run(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, error)
}

// Timing is what a queueing Runner (a dynamic batcher) reports for one
// request: time waiting before the session run, the run's duration, and
// the session runs to count for this request (a run shared by several
// requests is counted once, by one of them).
type Timing struct {
	Queue      time.Duration
	Compute    time.Duration
	Executions int
}

// TimedRunner is optionally implemented by runners that queue; the API
// then records their queue and compute times and execution counts instead
// of timing Run itself.
type TimedRunner interface {
	RunTimed(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, Timing, error)
}

// Loaded is a model version in memory: its runner, signature and Close.
type Loaded interface {
	Runner
	Inputs() []tensor.Spec
	Outputs() []tensor.Spec
	Close() error
}

// Loader loads the model file at path.
type Loader func(path string, opts ort.SessionOptions) (Loaded, error)

// ORTLoader loads models into ONNX Runtime sessions.
func ORTLoader(path string, opts ort.SessionOptions) (Loaded, error) {
	s, err := ort.NewSession(path, opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Options are the dependencies of a Repository.
type Options struct {
	Config  Config
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	Loader  Loader // default ORTLoader
	// Wrap, when set, wraps the runner of every version once it has passed
	// validation (a dynamic batcher slots in here); all leases of that
	// version use the wrapper. A wrapper that implements io.Closer is closed
	// when the version retires, before its session.
	Wrap func(model string, version int64, cfg ModelConfig, r Runner) Runner
	// OnChange, when set, is told when a version starts serving (it became
	// READY, or was reloaded from new files: Ready true with the new card)
	// and when it stops (unloaded, retired by the version policy, removed
	// from disk, or the repository closes: Ready false). Calls are serialised
	// and come from the goroutine that reconciles the repository, outside
	// its locks; they must return quickly and must not call back into the
	// repository's Scan, Load or Unload.
	OnChange func(Change)
}

// Change is a version entering or leaving service (see Options.OnChange).
type Change struct {
	Model   string
	Version int64
	Ready   bool            // true: serving now; false: no longer serving
	Card    *modelrepo.Card // the card of the served files (nil without model.json or when !Ready)
}

// Repository is the set of served model versions.
type Repository struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Metrics
	load    Loader
	wrap    func(string, int64, ModelConfig, Runner) Runner
	change  func(Change)
	readDir func(string) ([]os.DirEntry, error) // os.ReadDir; tests inject failures

	reconcileMu  sync.Mutex      // serialises scans, loads and unloads
	unloaded     map[string]bool // models unloaded through the API; guarded by reconcileMu
	refusedLinks map[string]bool // model links leading outside the repository, logged once; guarded by reconcileMu
	mu           sync.RWMutex    // guards models
	models       map[string]*modelState
	scanned      atomic.Bool
	kick         chan struct{}

	watchMu sync.Mutex // guards watcher and watched
	watcher *fsnotify.Watcher
	watched map[string]bool

	workers workers // the versions' Work goroutines (workers.go)
}

// watch adds file system watches for folders as soon as a scan finds them,
// before anything is loaded from them, so that no change is missed.
func (r *Repository) watch(paths ...string) {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.watcher == nil {
		return
	}
	for _, p := range paths {
		if !r.watched[p] {
			if err := r.watcher.Add(p); err == nil {
				r.watched[p] = true
			}
		}
	}
}

type modelState struct {
	name     string
	config   ModelConfig
	cfgFP    string
	cfgErr   error
	versions map[int64]*versionState
}

type versionState struct {
	n        int64
	state    string
	reason   string
	live     *entry
	fp       string // fingerprint of the files live was loaded from
	failedFP string // fingerprint of the last failed attempt
	onDisk   bool
}

// entry is one loaded version, reference counted by leases.
type entry struct {
	model   string
	version int64
	loaded  Loaded
	runner  Runner // loaded, or its wrapper
	wrapped bool
	worker  Worker // runner, when it has goroutines of its own
	repo    *Repository
	card    *modelrepo.Card
	refs    atomic.Int64
	retired atomic.Bool
	once    sync.Once
	log     *slog.Logger
	at      time.Time
}

func (e *entry) close() {
	e.once.Do(func() {
		if c, ok := e.runner.(io.Closer); ok && e.wrapped {
			if err := c.Close(); err != nil {
				e.log.Warn("closing runner", "model", e.model, "version", e.version, "err", err)
			}
		}
		if e.worker != nil {
			e.repo.stopWork(e)
		}
		if err := e.loaded.Close(); err != nil {
			e.log.Warn("closing session", "model", e.model, "version", e.version, "err", err)
		}
	})
}

func (e *entry) retire() {
	e.retired.Store(true)
	if e.refs.Load() == 0 {
		e.close()
	}
}

// Lease is a version acquired for one request. Call Release when done; the
// session stays open until every lease on it is released.
type Lease struct {
	Model   string
	Version int64
	Card    *modelrepo.Card // nil when the version has no model.json
	Inputs  []tensor.Spec
	Outputs []tensor.Spec
	Runner  Runner
	e       *entry
	done    atomic.Bool
}

// Release returns the lease; it is safe to call more than once.
func (l *Lease) Release() {
	if l.done.Swap(true) {
		return
	}
	if l.e.refs.Add(-1) == 0 && l.e.retired.Load() {
		l.e.close()
	}
}

// New creates a repository; call Scan (or Run) to load models.
func New(o Options) (*Repository, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = nopLogger()
	}
	if o.Loader == nil {
		o.Loader = ORTLoader
	}
	if o.Config.Debounce == 0 {
		o.Config.Debounce = DefaultConfig().Debounce
	}
	if o.Config.WarmupTimeout == 0 {
		o.Config.WarmupTimeout = DefaultConfig().WarmupTimeout
	}
	return &Repository{cfg: o.Config, log: o.Logger, metrics: o.Metrics, load: o.Loader, wrap: o.Wrap, change: o.OnChange,
		readDir: os.ReadDir, unloaded: map[string]bool{}, refusedLinks: map[string]bool{}, models: map[string]*modelState{}, kick: make(chan struct{}, 1)}, nil
}

var modelNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Scan reads the repository folder and brings every model in line with
// its version policy. It returns an error only when the folder itself
// cannot be read.
func (r *Repository) Scan(ctx context.Context) error {
	r.reconcileMu.Lock()
	defer r.reconcileMu.Unlock()
	entries, err := os.ReadDir(r.cfg.Root)
	if err != nil {
		return fmt.Errorf("reading model repository: %w", err)
	}
	seen := map[string]bool{}
	for _, de := range entries {
		name := de.Name()
		if !modelrepo.IsDir(r.cfg.Root, de) || !modelNameRE.MatchString(name) {
			continue
		}
		if de.Type()&os.ModeSymlink != 0 && !r.insideRoot(name) {
			continue
		}
		seen[name] = true
		r.reconcileModel(ctx, name)
	}
	r.mu.RLock()
	var gone []string
	for name := range r.models {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	r.mu.RUnlock()
	for _, name := range gone {
		r.removeModel(name)
	}
	r.scanned.Store(true)
	return nil
}

// insideRoot reports whether the model folder name (a symlink) resolves
// inside the repository; a link leading outside is refused (a repository
// writer must not make serve load, and reveal the signature of, any model
// on the host) and logged once per scan that finds it new.
func (r *Repository) insideRoot(name string) bool {
	root, err1 := filepath.EvalSymlinks(r.cfg.Root)
	target, err2 := filepath.EvalSymlinks(filepath.Join(r.cfg.Root, name))
	if err1 == nil && err2 == nil {
		if rel, err := filepath.Rel(root, target); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
			return true
		}
	}
	if !r.refusedLinks[name] {
		r.refusedLinks[name] = true
		r.log.Warn("model folder is a symlink leading outside the repository: not loaded", "model", name, "target", target)
	}
	return false
}

// Scanned reports whether a first scan has completed.
func (r *Repository) Scanned() bool { return r.scanned.Load() }

func (r *Repository) removeModel(name string) {
	r.mu.Lock()
	m := r.models[name]
	delete(r.models, name)
	r.mu.Unlock()
	if m == nil {
		return
	}
	for _, v := range m.versions {
		if v.live != nil {
			v.live.retire()
			r.notify(Change{Model: name, Version: v.n})
		}
		r.metrics.DeleteVersion(name, v.n)
	}
	r.log.Info("model removed", "model", name)
}

// fingerprint identifies the files a version would be loaded from.
func fingerprint(dir string, extra string) (string, error) {
	h := sha256.New()
	h.Write([]byte(extra))
	for _, f := range []string{modelrepo.ModelFile, modelrepo.CardFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			if f == modelrepo.ModelFile {
				return "", err
			}
			continue
		}
		fmt.Fprintf(h, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		if sys, ok := inode(st); ok {
			fmt.Fprintf(h, "%d;", sys)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

func (r *Repository) reconcileModel(ctx context.Context, name string) {
	dir := filepath.Join(r.cfg.Root, name)
	cfg, cfgErr := LoadModelConfig(filepath.Join(dir, modelrepo.ConfigFile))
	cfgFP := cfg.fingerprint()

	r.mu.Lock()
	m := r.models[name]
	if m == nil {
		m = &modelState{name: name, versions: map[int64]*versionState{}}
		r.models[name] = m
		r.metrics.InitModel(name)
	}
	if (cfgErr == nil) != (m.cfgErr == nil) || (cfgErr != nil && cfgErr.Error() != m.cfgErr.Error()) {
		if cfgErr != nil {
			r.log.Error("invalid model config, using defaults", "model", name, "err", cfgErr)
		}
	}
	m.config, m.cfgFP, m.cfgErr = cfg, cfgFP, cfgErr
	r.mu.Unlock()

	r.watch(dir)
	entries, err := r.readDir(dir)
	if err != nil {
		// A transient failure (EMFILE, EIO) says nothing about the versions:
		// keep serving what is loaded and look again at the next scan.
		r.log.Error("reading model folder, keeping its loaded versions", "model", name, "err", err)
		return
	}
	onDisk := map[int64]string{} // version → fingerprint ("" when model.onnx is missing)
	var fpErrs = map[int64]error{}
	for _, v := range modelrepo.VersionsIn(dir, entries) {
		vdir := modelrepo.VersionDir(dir, v)
		r.watch(vdir)
		fp, err := fingerprint(vdir, cfgFP)
		onDisk[v] = fp
		if err != nil {
			fpErrs[v] = err
		}
	}

	// Mark versions that left the disk.
	r.mu.Lock()
	for v, vs := range m.versions {
		if _, ok := onDisk[v]; !ok {
			vs.onDisk = false
		}
	}
	for v := range onDisk {
		vs := m.versions[v]
		if vs == nil {
			vs = &versionState{n: v, state: StateUnavailable, reason: "not loaded"}
			m.versions[v] = vs
		}
		vs.onDisk = true
	}
	r.mu.Unlock()

	versions := make([]int64, 0, len(onDisk))
	for v := range onDisk {
		versions = append(versions, v)
	}
	wanted, limit := cfg.VersionPolicy.wanted(versions)
	if r.unloaded[name] {
		wanted, limit = nil, 0
	}
	keep := map[int64]bool{}
	ready := 0
	for _, v := range wanted {
		if ready >= limit {
			break
		}
		vs := r.version(m, v)
		fp := onDisk[v]
		if err := fpErrs[v]; err != nil {
			r.setState(m, vs, StateUnavailable, fmt.Sprintf("%s: %v", modelrepo.ModelFile, errors.Unwrap(err)))
			if vs.live != nil { // keep serving what was loaded
				keep[v] = true
				ready++
			}
			continue
		}
		if vs.live != nil && vs.fp == fp {
			keep[v] = true
			ready++
			continue
		}
		if vs.failedFP == fp {
			if vs.live != nil {
				keep[v] = true
				ready++
			}
			continue
		}
		if vs.live == nil {
			r.setState(m, vs, StateLoading, "")
		}
		e, err := r.loadVersion(ctx, name, v, cfg)
		if err != nil {
			r.mu.Lock()
			vs.failedFP = fp
			r.mu.Unlock()
			if vs.live != nil {
				r.log.Error("new files for a serving version failed to load; the loaded one keeps serving", "model", name, "version", v, "err", err)
				r.setState(m, vs, StateReady, "reload failed, serving the previous files: "+err.Error())
				keep[v] = true
				ready++
			} else {
				r.log.Error("model version failed to load", "model", name, "version", v, "err", err)
				r.setState(m, vs, StateUnavailable, err.Error())
			}
			continue
		}
		r.mu.Lock()
		old := vs.live
		vs.live, vs.fp, vs.failedFP = e, fp, ""
		vs.state, vs.reason = StateReady, ""
		r.mu.Unlock()
		r.metrics.SetVersionState(name, v, StateReady)
		r.notify(Change{Model: name, Version: v, Ready: true, Card: e.card})
		if old != nil {
			old.retire()
			r.log.Info("model version reloaded", "model", name, "version", v)
		} else {
			r.log.Info("model version ready", "model", name, "version", v)
		}
		keep[v] = true
		ready++
	}

	// Retire what the policy no longer serves and forget what left the disk.
	r.mu.Lock()
	var retire []*entry
	var deleted []int64
	for v, vs := range m.versions {
		if keep[v] {
			continue
		}
		if vs.live != nil {
			retire = append(retire, vs.live)
			vs.live, vs.fp = nil, ""
		}
		if !vs.onDisk {
			delete(m.versions, v)
			deleted = append(deleted, v)
			continue
		}
		if vs.state == StateReady || vs.state == StateLoading {
			vs.state = StateUnavailable
			vs.reason = "not served by the version policy"
			if r.unloaded[name] {
				vs.reason = "unloaded"
			}
		}
	}
	states := map[int64]string{}
	for v, vs := range m.versions {
		states[v] = vs.state
	}
	r.mu.Unlock()
	for _, e := range retire {
		r.metrics.SetVersionState(name, e.version, StateUnloading)
		e.retire()
		r.notify(Change{Model: name, Version: e.version})
		r.log.Info("model version unloaded", "model", name, "version", e.version)
	}
	for v, s := range states {
		r.metrics.SetVersionState(name, v, s)
	}
	for _, v := range deleted {
		r.metrics.DeleteVersion(name, v)
	}
}

func (r *Repository) version(m *modelState, v int64) *versionState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return m.versions[v]
}

func (r *Repository) setState(m *modelState, vs *versionState, state, reason string) {
	r.mu.Lock()
	vs.state, vs.reason = state, reason
	r.mu.Unlock()
	r.metrics.SetVersionState(m.name, vs.n, state)
}

// notify calls OnChange when set.
func (r *Repository) notify(c Change) {
	if r.change != nil {
		r.change(c)
	}
}

// loadVersion loads, checks and warms up one version without exposing it.
func (r *Repository) loadVersion(ctx context.Context, name string, v int64, cfg ModelConfig) (e *entry, err error) {
	defer func() { r.metrics.LoadAttempt(name, err == nil) }()
	dir := modelrepo.VersionDir(filepath.Join(r.cfg.Root, name), v)
	var c *modelrepo.Card
	if _, statErr := os.Stat(filepath.Join(dir, modelrepo.CardFile)); statErr == nil {
		if c, err = modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile)); err != nil {
			return nil, err
		}
	}
	l, err := r.load(filepath.Join(dir, modelrepo.ModelFile), cfg.sessionOptions(r.cfg.Session))
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*entry, error) {
		_ = l.Close()
		return nil, err
	}
	if len(l.Inputs()) == 0 || len(l.Outputs()) == 0 {
		return fail(errors.New("model has no inputs or no outputs"))
	}
	if c != nil {
		if err := checkCard(c, l.Inputs()); err != nil {
			return fail(err)
		}
	}
	if cfg.warmup() {
		if err := r.warmup(ctx, l); err != nil {
			return fail(fmt.Errorf("warm-up run: %w", err))
		}
	}
	var runner Runner = l
	if r.wrap != nil {
		runner = r.wrap(name, v, cfg, l)
	}
	e = &entry{model: name, version: v, loaded: l, runner: runner, wrapped: r.wrap != nil, card: c, log: r.log, at: time.Now(), repo: r}
	if w, ok := runner.(Worker); ok && e.wrapped {
		e.worker = w
		r.startWork(e)
	}
	return e, nil
}

func checkCard(c *modelrepo.Card, inputs []tensor.Spec) error {
	for _, ci := range c.Inputs {
		found := false
		for _, in := range inputs {
			if in.Name == ci.Name {
				found = true
				if n := len(ci.Features); n > 0 && len(in.Shape) == 2 && in.Shape[1] >= 0 && int(in.Shape[1]) != n {
					return fmt.Errorf("model card lists %d features for input %q of shape %v", n, ci.Name, in.Shape)
				}
			}
		}
		if !found {
			return fmt.Errorf("model card names input %q, the model has no such input", ci.Name)
		}
	}
	return nil
}

func (r *Repository) warmup(ctx context.Context, l Loaded) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WarmupTimeout)
	defer cancel()
	ins := make([]tensor.Tensor, len(l.Inputs()))
	for i, s := range l.Inputs() {
		z, err := tensor.Zeros(s, 1)
		if err != nil {
			return err
		}
		ins[i] = z
	}
	_, err := l.Run(ctx, ins)
	return err
}

// Acquire leases a ready version; version 0 means the highest ready one.
// The caller must Release the lease.
func (r *Repository) Acquire(model string, version int64) (*Lease, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := r.models[model]
	if m == nil {
		return nil, fmt.Errorf("%w: %q", ErrModelNotFound, model)
	}
	var vs *versionState
	if version == 0 {
		for _, v := range m.versions {
			if v.live != nil && (vs == nil || v.n > vs.n) {
				vs = v
			}
		}
		if vs == nil {
			return nil, fmt.Errorf("%w: model %q has no ready version%s", ErrUnavailable, model, m.reasons())
		}
	} else {
		vs = m.versions[version]
		if vs == nil || (vs.live == nil && vs.state != StateUnavailable && vs.state != StateLoading) {
			return nil, fmt.Errorf("%w: model %q has no version %d", ErrVersionNotFound, model, version)
		}
		if vs.live == nil {
			if vs.reason == "not served by the version policy" || vs.reason == "unloaded" {
				return nil, fmt.Errorf("%w: version %d of model %q is not loaded (%s)", ErrVersionNotFound, version, model, vs.reason)
			}
			return nil, fmt.Errorf("%w: version %d of model %q is %s: %s", ErrUnavailable, version, model, vs.state, vs.reason)
		}
	}
	e := vs.live
	e.refs.Add(1)
	return &Lease{Model: model, Version: vs.n, Card: e.card, Inputs: e.loaded.Inputs(), Outputs: e.loaded.Outputs(), Runner: e.runner, e: e}, nil
}

func (m *modelState) reasons() string {
	for _, v := range m.versions {
		if v.reason != "" {
			return fmt.Sprintf(" (version %d: %s)", v.n, v.reason)
		}
	}
	if len(m.versions) == 0 {
		return " (no versions in the repository)"
	}
	return ""
}

// VersionInfo describes one version for the index and metadata.
type VersionInfo struct {
	Model   string
	Version int64
	State   string
	Reason  string
	Inputs  []tensor.Spec // set when loaded
	Outputs []tensor.Spec
	Card    *modelrepo.Card
	Loaded  time.Time // when the serving session was loaded (zero when none)
}

// Index lists every model version known, sorted by model then version. A
// model without versions appears once with Version 0.
func (r *Repository) Index() []VersionInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []VersionInfo
	for _, m := range r.models {
		if len(m.versions) == 0 {
			reason := "no versions in the repository"
			if m.cfgErr != nil {
				reason = m.cfgErr.Error()
			}
			out = append(out, VersionInfo{Model: m.name, State: StateUnavailable, Reason: reason})
		}
		for _, v := range m.versions {
			vi := VersionInfo{Model: m.name, Version: v.n, State: v.state, Reason: v.reason}
			if m.cfgErr != nil && vi.Reason == "" {
				vi.Reason = "invalid " + modelrepo.ConfigFile + ", serving with defaults: " + m.cfgErr.Error()
			}
			if v.live != nil {
				vi.Inputs, vi.Outputs, vi.Card, vi.Loaded = v.live.loaded.Inputs(), v.live.loaded.Outputs(), v.live.card, v.live.at
			}
			out = append(out, vi)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// Model returns the versions of one model (see Index).
func (r *Repository) Model(name string) ([]VersionInfo, error) {
	var out []VersionInfo
	for _, vi := range r.Index() {
		if vi.Model == name {
			out = append(out, vi)
		}
	}
	if out == nil {
		return nil, fmt.Errorf("%w: %q", ErrModelNotFound, name)
	}
	return out, nil
}

// Ready reports whether at least one version of the model (or of the
// given version when version > 0) serves requests.
func (r *Repository) Ready(model string, version int64) bool {
	l, err := r.Acquire(model, version)
	if err != nil {
		return false
	}
	l.Release()
	return true
}

// Load (re)loads a model from disk, undoing an earlier Unload. It fails
// when the model is not in the folder or no version becomes ready.
func (r *Repository) Load(ctx context.Context, name string) error {
	if !modelNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrModelNotFound, name)
	}
	st, err := os.Stat(filepath.Join(r.cfg.Root, name))
	if err != nil || !st.IsDir() {
		return fmt.Errorf("%w: %q is not in the model repository", ErrModelNotFound, name)
	}
	r.reconcileMu.Lock()
	if lst, err := os.Lstat(filepath.Join(r.cfg.Root, name)); err == nil && lst.Mode()&os.ModeSymlink != 0 && !r.insideRoot(name) {
		r.reconcileMu.Unlock()
		return fmt.Errorf("%w: %q is a symlink leading outside the model repository", ErrModelNotFound, name)
	}
	delete(r.unloaded, name)
	r.reconcileModel(ctx, name)
	r.reconcileMu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := r.models[name]
	for _, v := range m.versions {
		if v.live != nil {
			return nil
		}
	}
	return fmt.Errorf("%w: model %q: no version loaded%s", ErrUnavailable, name, m.reasons())
}

// Unload stops serving every version of a model until Load is called;
// in-flight requests finish first on their sessions.
func (r *Repository) Unload(ctx context.Context, name string) error {
	r.reconcileMu.Lock()
	defer r.reconcileMu.Unlock()
	r.mu.RLock()
	_, ok := r.models[name]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrModelNotFound, name)
	}
	r.unloaded[name] = true
	r.reconcileModel(ctx, name)
	return nil
}

// Close unloads everything; sessions close once their last lease is released.
func (r *Repository) Close() error {
	r.reconcileMu.Lock()
	defer r.reconcileMu.Unlock()
	r.mu.Lock()
	var retire []*entry
	for _, m := range r.models {
		for _, v := range m.versions {
			if v.live != nil {
				retire = append(retire, v.live)
				v.live = nil
				v.state, v.reason = StateUnavailable, "server shutting down"
			}
		}
	}
	r.mu.Unlock()
	for _, e := range retire {
		e.retire()
		r.notify(Change{Model: e.model, Version: e.version})
	}
	return nil
}

// Rescan asks a running Run loop for a rescan soon.
func (r *Repository) Rescan() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run watches the repository with fsnotify and rescans after changes and
// every RescanInterval, until ctx is done. A failed watch degrades to the
// periodic rescan. It also runs the versions' workers (see Worker) under
// ctx: when ctx is done they drain, and Run returns once they have.
func (r *Repository) Run(ctx context.Context) error {
	r.runWork(ctx)
	defer r.waitWork()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Warn("file system events unavailable, relying on periodic rescans", "err", err)
	} else {
		r.watchMu.Lock()
		r.watcher, r.watched = w, map[string]bool{}
		r.watchMu.Unlock()
		defer func() {
			r.watchMu.Lock()
			r.watcher, r.watched = nil, nil
			r.watchMu.Unlock()
			w.Close()
		}()
	}
	// pruneWatches drops watches of folders that left the repository (the
	// kernel drops them too) and adds any the scans have not added yet.
	pruneWatches := func() {
		now := []string{r.cfg.Root}
		keep := map[string]bool{r.cfg.Root: true}
		r.mu.RLock()
		for name, m := range r.models {
			p := filepath.Join(r.cfg.Root, name)
			now, keep[p] = append(now, p), true
			for v := range m.versions {
				p := modelrepo.VersionDir(filepath.Join(r.cfg.Root, name), v)
				now, keep[p] = append(now, p), true
			}
		}
		r.mu.RUnlock()
		r.watch(now...)
		r.watchMu.Lock()
		for p := range r.watched {
			if !keep[p] {
				_ = r.watcher.Remove(p)
				delete(r.watched, p)
			}
		}
		r.watchMu.Unlock()
	}
	scan := func() {
		if err := r.Scan(ctx); err != nil {
			r.log.Error("rescanning model repository", "err", err)
		}
		pruneWatches()
	}
	// Scan once more now that events are watched: changes between the
	// caller's first Scan and this point are not lost.
	scan()
	var tick <-chan time.Time
	if r.cfg.RescanInterval > 0 {
		t := time.NewTicker(r.cfg.RescanInterval)
		defer t.Stop()
		tick = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if ev.Op == fsnotify.Chmod {
				continue
			}
			debounce.Reset(r.cfg.Debounce)
		case err := <-errs:
			r.log.Warn("file system watch error", "err", err)
			debounce.Reset(r.cfg.Debounce)
		case <-r.kick:
			scan()
		case <-debounce.C:
			scan()
		case <-tick:
			scan()
		}
	}
}
