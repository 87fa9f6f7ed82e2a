// Package pipelinetest has fixtures for tests of the retraining pipeline and
// the trainer service: a synthetic drifting dataset, a champion trained by
// the example external trainer, and an in-memory Tracker that records calls.
package pipelinetest

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Features of the synthetic dataset.
var Features = []string{"a", "b", "weekend"}

// Target of the synthetic dataset.
const Target = "y"

// Start is the first day of the synthetic dataset.
var Start = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// Truth is the synthetic relation for day i: level grows by shift after the
// drift day; a deterministic noise term keeps fits imperfect.
func Truth(i int, a, b, weekend, shift float64) float64 {
	return 3*a - 2*b - 6*weekend + 10 + shift + 0.6*math.Sin(float64(i)*1.7)
}

func row(i int) (time.Time, []float64) {
	d := Start.AddDate(0, 0, i)
	wk := 0.0
	if d.Weekday() == time.Saturday || d.Weekday() == time.Sunday {
		wk = 1
	}
	return d, []float64{float64(i%7) + 0.5*math.Sin(float64(i)), float64(i % 5), wk}
}

// WriteBase writes days rows (no drift) as date,a,b,weekend,y to path.
func WriteBase(t testing.TB, path string, days int) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("date,a,b,weekend,y\n")
	for i := 0; i < days; i++ {
		d, x := row(i)
		fmt.Fprintf(&b, "%s,%g,%g,%g,%g\n", d.Format(pipeline.DateLayout), x[0], x[1], x[2], Truth(i, x[0], x[1], x[2], 0))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Feedback returns labelled rows for days [from, from+n) with the level
// shifted by shift, as serve's export would hold them after a replay.
func Feedback(model string, from, n int, shift float64) []pipeline.Feedback {
	out := make([]pipeline.Feedback, 0, n)
	v1 := int64(1)
	for i := from; i < from+n; i++ {
		d, x := row(i)
		ds := d.Format(pipeline.DateLayout)
		out = append(out, pipeline.Feedback{
			ID: "replay-" + ds, Model: model, Version: &v1, PredictedAt: d, LabelledAt: d.Add(24 * time.Hour),
			Features: map[string]float64{"a": x[0], "b": x[1], "weekend": x[2]},
			Label:    Truth(i, x[0], x[1], x[2], shift), Parameters: map[string]any{"date": ds},
		})
	}
	return out
}

// ExampleTrainer returns the command of the example external trainer.
func ExampleTrainer() []string {
	_, file, _, _ := runtime.Caller(0)
	return []string{"/usr/bin/python3", filepath.Join(filepath.Dir(file), "..", "..", "external", "testdata", "linear_trainer.py")}
}

// Champion trains version 1 of model on the base CSV with trainer and
// publishes it to modelsDir/model/1 with an MAE threshold and the base's end
// date as its training window.
func Champion(t testing.TB, trainer pipeline.Trainer, modelsDir, model, baseCSV string, baseDays int, maeThreshold float64) *modelrepo.Card {
	t.Helper()
	dir := filepath.Join(modelsDir, model, "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := trainer.Fit(context.Background(), pipeline.FitRequest{Dataset: baseCSV, OutputDir: dir, Model: model, Features: Features,
		Target: Target, Algorithm: "linear", Params: map[string]any{"l2": 0.01}, Log: &log}); err != nil {
		t.Fatalf("training the champion: %v\n%s", err, log.String())
	}
	c, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	c.Version = 1
	c.Thresholds = map[string]float64{"mae": maeThreshold}
	c.Training.Dataset.Until = Start.AddDate(0, 0, baseDays-1).Format(pipeline.DateLayout)
	if err := c.Write(filepath.Join(dir, modelrepo.CardFile)); err != nil {
		t.Fatal(err)
	}
	return c
}
