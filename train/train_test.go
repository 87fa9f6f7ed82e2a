package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/export/exporttest"
	"github.com/flywheel-ml/flywheel/train/features"
)

const chicagoCSV = "../data/chicago/chicago.csv"

// The evaluation split of the issue.
var (
	trainRange = Range{From: mustDate("2001-01-22"), Until: mustDate("2011-12-31")}
	testRange  = Range{From: mustDate("2012-01-01"), Until: mustDate("2012-12-31")}
)

func mustDate(s string) time.Time {
	t, err := dataset.ParseDate(s)
	if err != nil {
		panic(err)
	}
	return t
}

// fixture fits every algorithm once on the real split; tests share it.
var fixture struct {
	once    sync.Once
	data    *Data
	results map[string]*Result
	err     error
}

func fitted(t testing.TB) (*Data, map[string]*Result) {
	t.Helper()
	fixture.once.Do(func() {
		fixture.data, fixture.err = LoadData(chicagoCSV, "", trainRange, testRange)
		if fixture.err != nil {
			return
		}
		fixture.results = map[string]*Result{}
		for _, algo := range Algorithms() {
			r, err := Fit(context.Background(), testConfig(algo, fixture.data))
			if err != nil {
				fixture.err = fmt.Errorf("%s: %w", algo, err)
				return
			}
			fixture.results[algo] = r
		}
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.data, fixture.results
}

func testConfig(algo string, d *Data) Config {
	c := DefaultConfig()
	c.Algorithm = algo
	c.Data = d
	c.TrainerVersion = "test"
	c.Now = func() time.Time { return time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC) }
	return c
}

func TestMetricsOnTheTimeSplit(t *testing.T) {
	d, results := fitted(t)
	if len(d.Train) != 3591 || len(d.Test) != 366 {
		t.Fatalf("split: %d train, %d test rows", len(d.Train), len(d.Test))
	}
	best := math.Inf(1)
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-6s %7s %7s %7s %7s %6s %9s %8s\n", "algo", "MAE", "RMSE", "MAPE", "R2", "iters", "fit", "onnx")
	for _, algo := range Algorithms() {
		r := results[algo]
		m := r.Metrics["test"]
		fmt.Fprintf(&table, "%-6s %7.4f %7.4f %7.4f %7.4f %6d %9s %8d\n", algo, m["mae"], m["rmse"], m["mape"], m["r2"],
			r.Iterations, r.FitDuration.Round(time.Millisecond), len(r.ONNX))
		best = math.Min(best, m["mae"])
		if m["r2"] < 0.85 || m["mae"] > 2 {
			t.Errorf("%s: test metrics %v are implausibly poor", algo, m)
		}
	}
	t.Log(table.String())
	naive := results[GBDT].Metrics["test_"+SeasonalNaive]
	if math.Abs(naive["mae"]-1.1754) > 5e-4 || math.Abs(results[GBDT].Metrics["test_"+Lag14]["mae"]-1.6078) > 5e-4 {
		t.Fatalf("baselines on 2012: %v, %v", naive, results[GBDT].Metrics["test_"+Lag14])
	}
	if best > 0.78 {
		t.Fatalf("best test MAE %.4f > 0.78", best)
	}
	if g := results[GBDT].Metrics["test"]; g["mae"] > 0.78 || g["mae"] >= naive["mae"] || math.Abs(g["bias"]) > 0.2 || g["holiday_mae"] > 1.5 {
		t.Errorf("gbdt on 2012: %v (seasonal naive MAE %.4f)", g, naive["mae"])
	}
}

func TestONNXRuntimeParity(t *testing.T) {
	d, results := fitted(t)
	for _, algo := range Algorithms() {
		t.Run(algo, func(t *testing.T) {
			r := results[algo]
			got := exporttest.Predict(t, r.ONNX, featureRows(d.Test))
			var maxDiff float64
			for i, e := range d.Test {
				want := r.Model.Predict(e.Features)
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want))
			}
			t.Logf("%s: max |onnxruntime − go| over %d test rows = %.3g", algo, len(d.Test), maxDiff)
			if maxDiff > 1e-3 {
				t.Fatalf("max abs diff %g > 1e-3", maxDiff)
			}
		})
	}
}

// featureRows is the feature matrix of ex.
func featureRows(ex []Example) [][]float64 {
	X := make([][]float64, len(ex))
	for i, e := range ex {
		X[i] = e.Features
	}
	return X
}

// TestONNXChecker validates every exported model with the ONNX project's own
// checker (Debian's python3-onnx), full_check included.
func TestONNXChecker(t *testing.T) {
	_, results := fitted(t)
	dir := t.TempDir()
	var paths []string
	for _, algo := range Algorithms() {
		p := filepath.Join(dir, algo+".onnx")
		if err := os.WriteFile(p, results[algo].ONNX, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := checkONNX(paths...)
	if err != nil {
		t.Fatalf("onnx.checker: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// checkONNX runs onnx.checker.check_model(full_check=True) on each file and
// prints its IR version and opsets.
func checkONNX(paths ...string) ([]byte, error) {
	const script = `
import sys, onnx
for p in sys.argv[1:]:
    m = onnx.load(p)
    onnx.checker.check_model(m, full_check=True)
    ops = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    assert m.ir_version == 8, m.ir_version
    assert ops["ai.onnx"] == 17, ops
    print(p.rsplit("/", 1)[-1], "ok: ir", m.ir_version, "opsets", ops)
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, "/usr/bin/python3", append([]string{"-c", script}, paths...)...).CombinedOutput()
}

func TestReproducible(t *testing.T) {
	d, results := fitted(t)
	for _, algo := range Algorithms() {
		t.Run(algo, func(t *testing.T) {
			again, err := Fit(context.Background(), testConfig(algo, d))
			if err != nil {
				t.Fatal(err)
			}
			first := results[algo]
			if !bytes.Equal(first.ONNX, again.ONNX) {
				t.Fatalf("model.onnx differs between two fits (%d vs %d bytes)", len(first.ONNX), len(again.ONNX))
			}
			for split, m := range first.Metrics {
				for k, v := range m {
					if again.Metrics[split][k] != v {
						t.Fatalf("%s %s: %v then %v", split, k, v, again.Metrics[split][k])
					}
				}
			}
		})
	}
}

func TestCard(t *testing.T) {
	d, results := fitted(t)
	r := results[GBDT]
	c := r.Card
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.FeatureNames(); len(got) != features.Count || got[48] != "dow" || got[49] != "holiday" {
		t.Fatalf("features %v", got)
	}
	if c.Inputs[0].Name != "features" || c.Inputs[0].Shape[1] != int64(features.Count) || c.Outputs[0].Name != "prediction" {
		t.Fatalf("signature %+v %+v", c.Inputs, c.Outputs)
	}
	tr := c.Training
	if tr.Algorithm != GBDT || tr.Seed != 1 || tr.Params["learning_rate"] != 0.05 || tr.Params["max_bins"] != float64(255) {
		t.Fatalf("training %+v", tr)
	}
	if tr.Dataset.Digest != d.TrainDigest || !strings.HasPrefix(tr.Dataset.Digest, "sha256:") ||
		tr.Dataset.Rows != 3591 || tr.Dataset.From != "2002-03-03" || tr.Dataset.Until != "2011-12-31" {
		t.Fatalf("dataset %+v", tr.Dataset)
	}
	if tr.TestDataset.From != "2012-01-01" || tr.TestDataset.Rows != 366 {
		t.Fatalf("test dataset %+v", tr.TestDataset)
	}
	mae := c.Metrics["test"]["mae"]
	if math.Abs(c.Thresholds["mae"]-1.25*mae) > 1e-5 {
		t.Fatalf("mae threshold %v for test mae %v", c.Thresholds["mae"], mae)
	}
	if len(c.Reference.Features) != features.Count || c.Reference.Prediction == nil {
		t.Fatalf("reference has %d features", len(c.Reference.Features))
	}
	for name, h := range c.Reference.Features {
		var sum float64
		for _, p := range h.Proportions {
			sum += p
		}
		if math.Abs(sum-1) > 1e-9 || len(h.Proportions) > 10 {
			t.Fatalf("%s: %d bins summing to %v", name, len(h.Proportions), sum)
		}
	}
	if n := len(c.Reference.Features["temp"].Proportions); n != 10 {
		t.Errorf("temp has %d bins, want 10 quantile bins", n)
	}
	if h := c.Reference.Features["dow"]; len(h.Proportions) != 7 {
		t.Errorf("dow histogram %+v, want one bin per day", h)
	}
	if h := c.Reference.Features["holiday"]; len(h.Proportions) != 2 || h.Proportions[1] < 0.02 || h.Proportions[1] > 0.06 {
		t.Errorf("holiday histogram %+v", h)
	}
	if len(r.History) == 0 || r.History[0].Metrics["train_rmse"] == 0 {
		t.Errorf("history %v", r.History[:1])
	}
}

func TestPublish(t *testing.T) {
	_, results := fitted(t)
	repo := t.TempDir()
	for want := 1; want <= 2; want++ {
		r := *results[Ridge]
		c := *r.Card
		r.Card = &c
		v, dir, err := Publish(repo, "ridership", &r)
		if err != nil {
			t.Fatal(err)
		}
		if v != want || dir != filepath.Join(repo, "ridership", fmt.Sprint(want)) {
			t.Fatalf("version %d dir %s", v, dir)
		}
		got, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != want || got.Name != "ridership" {
			t.Fatalf("card %s v%d", got.Name, got.Version)
		}
		b, err := os.ReadFile(filepath.Join(dir, modelrepo.ModelFile))
		if err != nil || !bytes.Equal(b, r.ONNX) {
			t.Fatalf("model.onnx: %v", err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(repo, "ridership"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("left a temporary directory behind: %s", e.Name())
		}
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries", len(entries))
	}
}

func TestFitErrors(t *testing.T) {
	d, _ := fitted(t)
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   string
		is     error
	}{
		{"unknown algorithm", func(c *Config) { c.Algorithm = "xgboost" }, `unknown algorithm "xgboost"`, ErrUnknownAlgorithm},
		{"bad parameter", func(c *Config) { c.Params.GBDT.MaxBins = 1000 }, "max_bins 1000", nil},
		{"no data", func(c *Config) { c.Data = nil }, "no data", nil},
		{"no test rows", func(c *Config) { dd := *d; dd.Test = nil; c.Data = &dd }, "test data: no rows", ErrNoRows},
		{"ragged rows", func(c *Config) {
			dd := *d
			dd.Train = append([]Example{{Date: d.Train[0].Date, Features: []float64{1}, Target: 1}}, d.Train[1:]...)
			c.Data = &dd
		}, "1 features, want 66", nil},
		{"NaN feature", func(c *Config) {
			dd := *d
			f := append([]float64(nil), d.Train[0].Features...)
			f[3] = math.NaN()
			dd.Train = append([]Example{{Date: d.Train[0].Date, Features: f, Target: 1}}, d.Train[1:]...)
			c.Data = &dd
		}, `feature "Archer_35th": NaN`, nil},
		{"bad name", func(c *Config) { c.Name = "../x" }, "model name", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(GBDT, d)
			tc.mutate(&c)
			_, err := Fit(context.Background(), c)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
	if _, err := LoadData(chicagoCSV, "", trainRange, Range{From: mustDate("2030-01-01"), Until: mustDate("2030-12-31")}); !errors.Is(err, ErrNoRows) ||
		!strings.Contains(err.Error(), "test range 2030-01-01 … 2030-12-31") {
		t.Fatalf("empty test range: %v", err)
	}
}

func TestInMemoryData(t *testing.T) {
	d, _ := fitted(t)
	// The base data plus "feedback" rows, as the retraining pipeline builds it.
	extra := make([]Example, 30)
	for i := range extra {
		extra[i] = d.Test[i]
	}
	mem := &Data{Name: "chicago+feedback", Train: append(append([]Example(nil), d.Train...), extra...), Test: d.Test[30:]}
	c := testConfig(Ridge, mem)
	var steps int
	c.Progress = func(Progress) { steps++ }
	r, err := Fit(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	ds := r.Card.Training.Dataset
	if ds.Rows != 3591+30 || ds.Until != "2012-01-30" || ds.Digest != Digest(mem.Train) || ds.Digest == d.TrainDigest {
		t.Fatalf("dataset %+v", ds)
	}

	c = testConfig(GBDT, mem)
	c.Params.GBDT.Iterations = 5
	c.Params.GBDT.EarlyStopping = false
	var last Progress
	c.Progress = func(p Progress) { last = p }
	r, err = Fit(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if last.Iteration != 5 || last.Total != 5 || last.Metrics["train_rmse"] == 0 || len(r.History) != 5 {
		t.Fatalf("progress %+v, history %d", last, len(r.History))
	}
}

func TestParams(t *testing.T) {
	p := DefaultParams()
	if err := DecodeParams(&p, []byte("gbdt:\n  learning_rate: 0.2\n  max_leaves: 15\nmlp:\n  hidden: [8]\n")); err != nil {
		t.Fatal(err)
	}
	if p.GBDT.LearningRate != 0.2 || p.GBDT.MaxLeaves != 15 || p.GBDT.MinSamplesLeaf != 20 || len(p.MLP.Hidden) != 1 {
		t.Fatalf("%+v", p)
	}
	if err := p.Set(GBDT, "l2=0.5"); err != nil || p.GBDT.L2 != 0.5 {
		t.Fatalf("set: %v %v", err, p.GBDT.L2)
	}
	for _, bad := range []string{"gbdt:\n  learning_rat: 0.2\n", "gbdt:\n  max_leaves: many\n"} {
		if err := DecodeParams(&p, []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if err := p.Set(GBDT, "nokey"); err == nil {
		t.Error("accepted nokey")
	}
}

func BenchmarkFit(b *testing.B) {
	d, err := LoadData(chicagoCSV, "", trainRange, testRange)
	if err != nil {
		b.Fatal(err)
	}
	for _, algo := range Algorithms() {
		b.Run(algo, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Fit(context.Background(), testConfig(algo, d)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCommittedModel checks the default model in the repository: its card is
// valid and matches the data it names, and ONNX Runtime reproduces its
// recorded test metrics on the test split.
func TestCommittedModel(t *testing.T) {
	d, _ := fitted(t)
	dir := "../models/ridership/1"
	c, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.FeatureNames(), ",") != strings.Join(features.Names(), ",") {
		t.Fatalf("features %v", c.FeatureNames())
	}
	ds := c.Training.Dataset
	if ds.Digest != d.TrainDigest || ds.From != "2002-03-03" || ds.Until != "2011-12-31" || ds.Rows != len(d.Train) {
		t.Fatalf("card dataset %+v does not match the data (digest %s)", ds, d.TrainDigest)
	}
	b, err := os.ReadFile(filepath.Join(dir, modelrepo.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	got := exporttest.Predict(t, b, featureRows(d.Test))
	var ae float64
	for i, e := range d.Test {
		ae += math.Abs(float64(got[i]) - e.Target)
	}
	mae := ae / float64(len(d.Test))
	t.Logf("committed %s model: ONNX Runtime test MAE %.4f (card %.4f, threshold %.4f)", c.Training.Algorithm, mae, c.Metrics["test"]["mae"], c.Thresholds["mae"])
	if mae > 1.25 || math.Abs(mae-c.Metrics["test"]["mae"]) > 1e-3 {
		t.Fatalf("ONNX Runtime test MAE %.4f, card says %.4f", mae, c.Metrics["test"]["mae"])
	}
}

func TestPublishConcurrently(t *testing.T) {
	_, results := fitted(t)
	repo := t.TempDir()
	const n = 6
	versions := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := *results[Ridge]
			c := *r.Card
			r.Card = &c
			v, _, err := Publish(repo, "ridership", &r)
			if err != nil {
				t.Error(err)
				return
			}
			versions <- v
		}()
	}
	wg.Wait()
	close(versions)
	seen := map[int]bool{}
	for v := range versions {
		if seen[v] {
			t.Fatalf("version %d published twice", v)
		}
		seen[v] = true
		c, err := modelrepo.LoadCard(filepath.Join(repo, "ridership", fmt.Sprint(v), modelrepo.CardFile))
		if err != nil || c.Version != v {
			t.Fatalf("version %d: card %v, %v", v, c, err)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d versions", len(seen))
	}
}

// TestReferenceDays: the drift reference can be built from the newest
// training rows only; the default (0) uses every training row.
func TestReferenceDays(t *testing.T) {
	d, results := fitted(t)
	cfg := testConfig(Ridge, d)
	cfg.ReferenceDays = 365
	res, err := Fit(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	names := d.FeatureNames
	if names == nil {
		names = features.Names()
	}
	j := -1
	for i, n := range names {
		if n == "Clark_Lake" {
			j = i
		}
	}
	if j < 0 {
		t.Fatal("no Clark_Lake feature")
	}
	var recent, all []float64
	from := mustDate("2011-01-01")
	for _, e := range d.Train {
		all = append(all, e.Features[j])
		if !e.Date.Before(from) {
			recent = append(recent, e.Features[j])
		}
	}
	cases := []struct {
		name string
		got  modelrepo.Histogram
		want modelrepo.Histogram
	}{
		{"last 365 days", res.Card.Reference.Features["Clark_Lake"], mustHistogram(t, recent)},
		{"every row (default)", results[Ridge].Card.Reference.Features["Clark_Lake"], mustHistogram(t, all)},
	}
	for _, c := range cases {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: reference %v, want %v", c.name, c.got.Edges, c.want.Edges)
		}
	}
	if reflect.DeepEqual(cases[0].got, cases[1].got) {
		t.Error("a one-year reference equals the eleven-year one; the option had no effect")
	}
	cfg.ReferenceDays = -1
	if _, err := Fit(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "reference days") {
		t.Errorf("negative reference days: %v", err)
	}
}

func mustHistogram(t *testing.T, values []float64) modelrepo.Histogram {
	t.Helper()
	h, err := modelrepo.NewHistogram(values, modelrepo.Bins)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParamsSetNamesValidKeys(t *testing.T) {
	tests := []struct {
		algorithm, kv, wantErr string
	}{
		{"gbdt", "learning_rate=0.1", ""},
		{"gbdt", "foo=1", `gbdt has no "foo"; its keys are iterations, learning_rate, max_leaves`},
		{"ridge", "alpha=2", ""},
		{"ridge", "learning_rate=1", `ridge has no "learning_rate"; its keys are alpha`},
		{"mlp", "hidden=[8]", ""},
		{"gbdt", "learning_rate", "want key=value"},
	}
	for _, tt := range tests {
		p := DefaultParams()
		err := p.Set(tt.algorithm, tt.kv)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Set(%s, %s) = %v, want %q", tt.algorithm, tt.kv, err, tt.wantErr)
		}
	}
}
