package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

const testCSV = "../../data/chicago/chicago.csv"

func TestTrainCommand(t *testing.T) {
	clearTrackingEnv(t)
	models := t.TempDir()
	params := filepath.Join(t.TempDir(), "params.yaml")
	if err := os.WriteFile(params, []byte("gbdt:\n  max_leaves: 15\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"--data", testCSV, "--models", models, "--algorithm", "gbdt", "--params", params, "--git-commit", "abc123",
		"--tracking-db", filepath.Join(t.TempDir(), "tracking.db"), "--train-from", "2008-01-01", "--backtest-folds", "2"}
	if err := runTrain(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, want := range []string{"1461 training rows", "366 test rows", "MAE", "gbdt", "seasonal_naive", "lag14", "chosen by backtest: gbdt",
		"holiday MAE", "90 % prediction interval", "permutation importance", "published ridership version 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	c, err := modelrepo.LoadCard(filepath.Join(models, "ridership", "1", modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.Training.Params["max_leaves"] != float64(15) || c.Training.GitCommit != "abc123" || c.Training.TrainerVersion == "" ||
		c.Training.Weather != "observed" || c.Training.RatioTo != "level14" || c.Training.Selection == nil || c.Training.Selection.Chosen != "gbdt" {
		t.Fatalf("training %+v", c.Training)
	}
	// the backtest chose the tree count; the test range is only reported, beside the baselines
	if c.Training.Params["early_stopping"] != false || c.Training.Params["iterations"] != c.Metrics["backtest"]["iterations"] ||
		c.Metrics["test_seasonal_naive"]["mae"] <= c.Metrics["test"]["mae"] || c.Metrics["test_lag14"]["mae"] == 0 ||
		c.Interval == nil || c.Interval.HalfWidth <= 0 || len(c.Importance) != len(c.FeatureNames()) {
		t.Fatalf("card params %v, metrics %v, interval %+v", c.Training.Params, c.Metrics, c.Interval)
	}
	if _, err := os.Stat(filepath.Join(models, "ridership", "1", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	// A second run (smaller trees) publishes version 2 with --force, whichever is better.
	out.Reset()
	if err := runTrain(context.Background(), append(args, "--set", "max_leaves=7", "--quiet", "--force"), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "published ridership version 2 (gbdt) to "+filepath.Join(models, "ridership", "2")+", replacing") {
		t.Fatalf("%s", out.String())
	}
}

func TestTrainCommandBadInput(t *testing.T) {
	clearTrackingEnv(t)
	src, err := os.ReadFile(testCSV)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(src), "\n", 4)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missingCol := write("missing.csv", strings.Replace(string(src), `"humidity",`, "", 1))
	nonNumeric := write("nonnumeric.csv", lines[0]+"\n"+lines[1]+"\n"+strings.Replace(lines[2], "15.762,", "lots,", 1)+"\n")
	empty := write("empty.csv", "")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing column", []string{"--data", missingCol}, `missing column(s) "humidity"`},
		{"non-numeric cell", []string{"--data", nonNumeric}, `row 2 (line 3, 2001-01-23), column "ridership": "lots" is not a number`},
		{"empty file", []string{"--data", empty}, "empty file"},
		{"no such file", []string{"--data", filepath.Join(dir, "nope.csv")}, "no such file"},
		{"empty training range", []string{"--train-from", "1990-01-01", "--train-until", "1990-12-31"}, "training range 1990-01-01 … 1990-12-31"},
		{"empty test range", []string{"--test-from", "2030-01-01", "--test-until", "2030-12-31"}, "no rows"},
		{"bad date", []string{"--test-from", "2012-13-01"}, "--test-from"},
		{"unknown algorithm", []string{"--algorithm", "xgboost"}, `unknown algorithm "xgboost" (want one of ridge, mlp, gbdt)`},
		{"unknown parameter", []string{"--algorithm", "gbdt", "--set", "leaves=3"}, `gbdt has no "leaves"; its keys are iterations, learning_rate, max_leaves`},
		{"invalid parameter", []string{"--algorithm", "gbdt", "--set", "max_bins=256"}, "max_bins 256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			models := filepath.Join(t.TempDir(), "models")
			args := append([]string{"--data", testCSV, "--models", models, "--algorithm", "ridge", "--quiet",
				"--tracking-db", filepath.Join(t.TempDir(), "tracking.db")}, tc.args...)
			var out bytes.Buffer
			err := runTrain(context.Background(), args, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
			if _, err := os.Stat(models); !os.IsNotExist(err) {
				entries, _ := os.ReadDir(filepath.Join(models, "ridership"))
				t.Fatalf("a model was (partly) written: %v %v", err, entries)
			}
		})
	}
}

// TestTrainKeepsABetterChampion: a manual train does not publish over the
// version serve loads when that version has a lower test MAE on the same
// days, says what it would replace, and publishes with --force.
func TestTrainKeepsABetterChampion(t *testing.T) {
	clearTrackingEnv(t)
	models := t.TempDir()
	champ := filepath.Join(models, "ridership", "1")
	if err := os.MkdirAll(champ, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.onnx", modelrepo.CardFile} { // the committed gbdt, test MAE 0.6539 on 2012
		b, err := os.ReadFile(filepath.Join("..", "..", "models", "ridership", "1", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(champ, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// a gbdt of 50 trees (0.8080): better than the seasonal naive (1.1754), worse than the champion
	base := []string{"--data", testCSV, "--models", models, "--quiet", "--track=false", "--backtest-folds", "0", "--importance=false"}
	weak := append(base[:len(base):len(base)], "--algorithm", "gbdt", "--set", "iterations=50", "--set", "early_stopping=false")
	tests := []struct {
		name string
		args []string
		ok   bool
		want string
		v2   bool
	}{
		{"refused", weak, false, "not published: version 1 (gbdt), which serve loads, has test MAE 0.6539 on the same 366 test days, 2012-01-01 … 2012-12-31; this gbdt model has 0.8080. --force publishes it", false},
		// --force never publishes a model that loses to the seasonal naive (ridge: 1.2114 vs 1.1754)
		{"naive", append(base[:len(base):len(base)], "--algorithm", "ridge", "--force"), false, "not published: ridge's test MAE 1.2114 does not beat the seasonal naive's 1.1754 on the same days", false},
		{"forced", append(weak[:len(weak):len(weak)], "--force"), true, "published ridership version 2 (gbdt) to " + filepath.Join(models, "ridership", "2") + ", replacing the better version 1 (test MAE 0.6539 vs 0.8080", true},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := runTrain(context.Background(), tt.args, &out, &bytes.Buffer{})
		got := out.String()
		if err != nil {
			got += err.Error()
		}
		if (err == nil) != tt.ok || !strings.Contains(got, tt.want) {
			t.Errorf("%s: err %v, output:\n%s\nwant %q", tt.name, err, got, tt.want)
		}
		if _, err := os.Stat(filepath.Join(models, "ridership", "2")); (err == nil) != tt.v2 {
			t.Errorf("%s: version 2 exists = %v, want %v", tt.name, err == nil, tt.v2)
		}
	}
}
