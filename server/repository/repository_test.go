package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// fake is a Loaded that needs no ONNX Runtime: a model file containing
// "bad" fails to load, "badrun" fails its warm-up.
type fake struct {
	path    string
	content string
	mu      sync.Mutex
	closed  bool
	opts    ort.SessionOptions
}

func (f *fake) Run(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	if f.content == "badrun" {
		return nil, errors.New("kernel exploded")
	}
	return []tensor.Tensor{{Name: "y", DataType: tensor.FP32, Shape: []int64{1}, Data: []float32{1}}}, nil
}
func (f *fake) Inputs() []tensor.Spec {
	return []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}}
}
func (f *fake) Outputs() []tensor.Spec {
	return []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}}
}
func (f *fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		panic("double close")
	}
	f.closed = true
	return nil
}

type fakeLoader struct {
	mu     sync.Mutex
	loaded []*fake
}

func (l *fakeLoader) load(path string, opts ort.SessionOptions) (Loaded, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if string(b) == "bad" {
		return nil, errors.New("protobuf parsing failed")
	}
	f := &fake{path: path, content: string(b), opts: opts}
	l.mu.Lock()
	l.loaded = append(l.loaded, f)
	l.mu.Unlock()
	return f, nil
}

func (l *fakeLoader) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, f := range l.loaded {
		f.mu.Lock()
		if !f.closed {
			n++
		}
		f.mu.Unlock()
	}
	return n
}

func put(t *testing.T, root, model string, v int, content string) {
	t.Helper()
	dir := filepath.Join(root, model, strconv.Itoa(v))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, modelrepo.ModelFile), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newRepo(t *testing.T, root string) (*Repository, *fakeLoader) {
	t.Helper()
	fl := &fakeLoader{}
	c := DefaultConfig()
	c.Root = root
	r, err := New(Options{Config: c, Loader: fl.load})
	if err != nil {
		t.Fatal(err)
	}
	return r, fl
}

func states(r *Repository, model string) string {
	var s []string
	for _, vi := range r.Index() {
		if vi.Model == model {
			s = append(s, strconv.FormatInt(vi.Version, 10)+":"+vi.State)
		}
	}
	return strings.Join(s, " ")
}

func TestVersionPolicies(t *testing.T) {
	cases := []struct {
		name, config string
		versions     map[int]string
		want         string
	}{
		{"default latest 1", "", map[int]string{1: "ok", 2: "ok", 3: "ok"}, "1:UNAVAILABLE 2:UNAVAILABLE 3:READY"},
		{"latest 2", "version_policy:\n  latest: 2\n", map[int]string{1: "ok", 2: "ok", 3: "ok"}, "1:UNAVAILABLE 2:READY 3:READY"},
		{"all", "version_policy:\n  all: true\n", map[int]string{1: "ok", 2: "ok", 3: "ok"}, "1:READY 2:READY 3:READY"},
		{"specific", "version_policy:\n  specific: [1, 3]\n", map[int]string{1: "ok", 2: "ok", 3: "ok"}, "1:READY 2:UNAVAILABLE 3:READY"},
		{"failed newest keeps older", "", map[int]string{1: "ok", 2: "bad"}, "1:READY 2:UNAVAILABLE"},
		{"failed warm-up", "", map[int]string{1: "ok", 2: "badrun"}, "1:READY 2:UNAVAILABLE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for v, content := range c.versions {
				put(t, root, "m", v, content)
			}
			if c.config != "" {
				os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte(c.config), 0o644)
			}
			r, fl := newRepo(t, root)
			if err := r.Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := states(r, "m"); got != c.want {
				t.Fatalf("states %q, want %q", got, c.want)
			}
			if n := strings.Count(c.want, "READY") - strings.Count(c.want, "UNREADY"); fl.open() != n {
				t.Errorf("%d open sessions, want %d", fl.open(), n)
			}
			for _, vi := range r.Index() {
				if vi.State == StateUnavailable && vi.Reason == "" {
					t.Errorf("version %d unavailable without a reason", vi.Version)
				}
			}
		})
	}
}

func TestLeaseKeepsSessionUntilReleased(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	r, fl := newRepo(t, root)
	ctx := context.Background()
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire("m", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A new version replaces v1 while a request holds it.
	put(t, root, "m", 2, "ok2")
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if fl.open() != 2 {
		t.Fatalf("%d open sessions while v1 is leased, want 2", fl.open())
	}
	if l2, err := r.Acquire("m", 0); err != nil || l2.Version != 2 {
		t.Fatalf("new requests go to %v (%v)", l2, err)
	} else {
		l2.Release()
	}
	if _, err := r.Acquire("m", 1); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("v1 after the switch: %v", err)
	}
	if _, err := l.Runner.Run(ctx, nil); err != nil {
		t.Fatalf("in-flight run on the old session: %v", err)
	}
	l.Release()
	l.Release() // idempotent
	if fl.open() != 1 {
		t.Fatalf("%d open sessions after release, want 1", fl.open())
	}
	// Unload and Load through the repository extension.
	if err := r.Unload(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Acquire("m", 0); !errors.Is(err, ErrUnavailable) || fl.open() != 0 {
		t.Fatalf("after unload: %v, %d open", err, fl.open())
	}
	if err := r.Scan(ctx); err != nil || fl.open() != 0 {
		t.Fatalf("a rescan must not undo an unload: %v, %d open", err, fl.open())
	}
	if err := r.Load(ctx, "m"); err != nil || fl.open() != 1 {
		t.Fatalf("load: %v, %d open", err, fl.open())
	}
	if err := r.Load(ctx, "ghost"); !errors.Is(err, ErrModelNotFound) {
		t.Fatalf("load of a missing model: %v", err)
	}
	// Removing the folder removes the model.
	os.RemoveAll(filepath.Join(root, "m"))
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Acquire("m", 0); !errors.Is(err, ErrModelNotFound) || fl.open() != 0 {
		t.Fatalf("after removal: %v, %d open", err, fl.open())
	}
}

func TestReplacedFileThatFailsKeepsServing(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	r, fl := newRepo(t, root)
	ctx := context.Background()
	r.Scan(ctx)
	put(t, root, "m", 1, "bad")
	r.Scan(ctx)
	l, err := r.Acquire("m", 1)
	if err != nil {
		t.Fatalf("the old session must keep serving: %v", err)
	}
	l.Release()
	vi, _ := r.Model("m")
	if vi[0].State != StateReady || !strings.Contains(vi[0].Reason, "reload failed") {
		t.Fatalf("index %+v", vi)
	}
	put(t, root, "m", 1, "ok-again")
	r.Scan(ctx)
	if fl.open() != 1 || len(fl.loaded) != 2 {
		t.Fatalf("open %d loaded %d", fl.open(), len(fl.loaded))
	}
}

func TestModelConfig(t *testing.T) {
	cases := []struct {
		name, yaml, err string
		check           func(ModelConfig) bool
	}{
		{"empty", "", "", func(c ModelConfig) bool { return c.VersionPolicy.Latest == 1 && c.warmup() }},
		{"session", "session:\n  intra_op_threads: 2\n  graph_optimization_level: basic\nwarmup: false\n", "", func(c ModelConfig) bool {
			o := c.sessionOptions(ort.DefaultSessionOptions())
			return o.IntraOpThreads == 2 && o.InterOpThreads == 1 && o.GraphOptimization == "basic" && !c.warmup()
		}},
		{"all", "version_policy: {all: true}\n", "", func(c ModelConfig) bool { return c.VersionPolicy.All && c.VersionPolicy.Latest == 0 }},
		{"unknown key", "version_polcy:\n  latest: 1\n", "field version_polcy not found", nil},
		{"two policies", "version_policy:\n  latest: 2\n  all: true\n", "at most one", nil},
		{"negative latest", "version_policy:\n  latest: -1\n", "must be positive", nil},
		{"bad specific", "version_policy:\n  specific: [0]\n", "positive integers", nil},
		{"bad level", "session:\n  graph_optimization_level: max\n", `graph_optimization_level "max"`, nil},
		{"bad threads", "session:\n  intra_op_threads: 1000\n", "intra_op_threads 1000", nil},
		{"bad yaml", "version_policy: [\n", "parsing YAML", nil},
		{"no batching", "warmup: true\n", "", func(c ModelConfig) bool { return c.DynamicBatching == nil }},
		{"batching defaults", "dynamic_batching: {max_batch_size: 8}\n", "", func(c ModelConfig) bool {
			d := batch.DefaultConfig()
			d.MaxBatchSize = 8
			return c.DynamicBatching != nil && *c.DynamicBatching == d
		}},
		{"batching unknown key", "dynamic_batching:\n  max_batch: 8\n", `unknown key "max_batch"`, nil},
		{"batching bad value", "dynamic_batching:\n  queue_capacity: 0\n", "queue_capacity must be between", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), modelrepo.ConfigFile)
			os.WriteFile(p, []byte(c.yaml), 0o644)
			got, err := LoadModelConfig(p)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !c.check(got) {
				t.Fatalf("%+v, %v", got, err)
			}
		})
	}
}

func TestInvalidConfigReportedInIndex(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte("nonsense: 1\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "empty"), 0o755)
	os.MkdirAll(filepath.Join(root, ".hidden", "1"), 0o755)
	r, _ := newRepo(t, root)
	if err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	idx := r.Index()
	if len(idx) != 2 || idx[0].Model != "empty" || idx[0].State != StateUnavailable || idx[1].State != StateReady ||
		!strings.Contains(idx[1].Reason, "field nonsense not found") {
		t.Fatalf("index %+v", idx)
	}
}

func TestScanErrors(t *testing.T) {
	c := DefaultConfig()
	c.Root = filepath.Join(t.TempDir(), "missing")
	r, err := New(Options{Config: c, Loader: (&fakeLoader{}).load})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Scan(context.Background()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("scan of a missing folder: %v", err)
	}
	if _, err := New(Options{Config: Config{}}); err == nil {
		t.Fatal("empty config accepted")
	}
}

type closingRunner struct {
	Runner
	closed *int
}

func (c closingRunner) Close() error { *c.closed++; return nil }

func TestWrapRunner(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	fl := &fakeLoader{}
	c := DefaultConfig()
	c.Root = root
	closed, wrapped := 0, 0
	r, err := New(Options{Config: c, Loader: fl.load, Wrap: func(model string, v int64, cfg ModelConfig, in Runner) Runner {
		wrapped++
		return closingRunner{Runner: in, closed: &closed}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r.Scan(ctx)
	l, err := r.Acquire("m", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Runner.(closingRunner); !ok || wrapped != 1 {
		t.Fatalf("lease runner %T, wrapped %d", l.Runner, wrapped)
	}
	l.Release()
	r.Unload(ctx, "m")
	if closed != 1 || fl.open() != 0 {
		t.Fatalf("closed %d, open %d", closed, fl.open())
	}
}

func TestOnChange(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	put(t, root, "gone", 1, "ok")
	var events []string
	c := DefaultConfig()
	c.Root = root
	fl := &fakeLoader{}
	r, err := New(Options{Config: c, Loader: fl.load, OnChange: func(ch Change) {
		s := "-"
		if ch.Ready {
			s = "+"
		}
		events = append(events, s+ch.Model+"/"+strconv.FormatInt(ch.Version, 10))
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{"scan", func() { r.Scan(ctx) }, "+gone/1 +m/1"},
		{"new version retires the old", func() { put(t, root, "m", 2, "ok"); r.Scan(ctx) }, "+m/2 -m/1"},
		{"failed newer version changes nothing", func() { put(t, root, "m", 3, "bad"); r.Scan(ctx) }, ""},
		{"model folder removed", func() { os.RemoveAll(filepath.Join(root, "gone")); r.Scan(ctx) }, "-gone/1"},
		{"unload", func() { r.Unload(ctx, "m") }, "-m/2"},
		{"load", func() { r.Load(ctx, "m") }, "+m/2"},
		{"close", func() { r.Close() }, "-m/2"},
	}
	for _, s := range steps {
		events = nil
		s.do()
		if got := strings.Join(events, " "); got != s.want {
			t.Errorf("%s: events %q, want %q", s.name, got, s.want)
		}
	}
}

// Rescanning unchanged files loads nothing again, whatever config.yaml sets
// (warmup and dynamic_batching are held behind pointers).
func TestRescanUnchangedLoadsOnce(t *testing.T) {
	cases := []struct{ name, config string }{
		{"no config", ""},
		{"warmup", "warmup: true\n"},
		{"dynamic batching", "dynamic_batching:\n  max_batch_size: 8\n"},
		{"both", "warmup: false\ndynamic_batching: {max_batch_size: 4}\nsession: {intra_op_threads: 1}\n"},
	}
	const scans = 5
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			put(t, root, "m", 1, "ok")
			if c.config != "" {
				if err := os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte(c.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r, fl := newRepo(t, root)
			for range scans {
				if err := r.Scan(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(fl.loaded); n != 1 {
				t.Fatalf("%d loads in %d scans of unchanged files, want 1", n, scans)
			}
			// A real change still reloads.
			if err := os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte(c.config+"version_policy: {latest: 3}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := r.Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := len(fl.loaded); n != 2 {
				t.Fatalf("%d loads after config.yaml changed, want 2", n)
			}
		})
	}
}

// A model folder that cannot be read (EMFILE, EIO) keeps its loaded
// versions; they are not taken as deleted.
func TestModelFolderReadErrorKeepsVersions(t *testing.T) {
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	put(t, root, "m", 2, "ok")
	os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte("version_policy: {all: true}\n"), 0o644)
	r, fl := newRepo(t, root)
	ctx := context.Background()
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	failing := filepath.Join(root, "m")
	r.readDir = func(dir string) ([]os.DirEntry, error) {
		if dir == failing {
			return nil, &os.PathError{Op: "open", Path: dir, Err: syscall.EMFILE}
		}
		return os.ReadDir(dir)
	}
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(r, "m"); got != "1:READY 2:READY" {
		t.Fatalf("after a failed folder read: states %q, want both READY", got)
	}
	if fl.open() != 2 || !r.Ready("m", 1) || !r.Ready("m", 2) {
		t.Fatalf("after a failed folder read: %d open sessions, ready %v %v", fl.open(), r.Ready("m", 1), r.Ready("m", 2))
	}
	r.readDir = os.ReadDir
	os.RemoveAll(filepath.Join(root, "m", "2"))
	if err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(r, "m"); got != "1:READY" {
		t.Fatalf("after the folder reads again and version 2 is gone: states %q", got)
	}
}
