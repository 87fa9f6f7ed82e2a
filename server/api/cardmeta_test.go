package api

import (
	"reflect"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

func TestCardParameters(t *testing.T) {
	full := &modelrepo.Card{Name: "ridership", Version: 3, Task: "regression", Target: "ridership", TargetUnit: "thousands of riders",
		CreatedAt: time.Date(2026, 11, 22, 7, 55, 35, 0, time.UTC),
		Inputs:    []modelrepo.Tensor{{Name: "features", Features: []string{"Austin", "dow"}}},
		Training: modelrepo.Training{Algorithm: "mlp", RunID: "r1", GitCommit: "abc",
			Dataset: modelrepo.Dataset{Source: "data/chicago/chicago.csv", Digest: "sha256:x", From: "2001-01-22", Until: "2011-12-31"}},
		Metrics:    map[string]map[string]float64{"test": {"mae": 1.2, "rmse": 1.7}},
		Thresholds: map[string]float64{"mae": 1.5}}
	two := &modelrepo.Card{Inputs: []modelrepo.Tensor{{Name: "a", Features: []string{"x"}}, {Name: "b", Features: []string{"y"}}}}
	tests := []struct {
		name string
		card *modelrepo.Card
		want map[string]any
	}{
		{"no card", nil, nil},
		{"full", full, map[string]any{"version": "3", "task": "regression", "target": "ridership", "target_unit": "thousands of riders",
			"features": []string{"Austin", "dow"}, "algorithm": "mlp", "trained_from": "2001-01-22", "trained_until": "2011-12-31",
			"dataset": "data/chicago/chicago.csv", "dataset_digest": "sha256:x", "run_id": "r1", "git_commit": "abc",
			"created_at": "2026-11-22T07:55:35Z", "test_mae": 1.2, "test_rmse": 1.7, "threshold_mae": 1.5}},
		{"two inputs", two, map[string]any{"version": "3", "a.features": []string{"x"}, "b.features": []string{"y"}}},
	}
	for _, tt := range tests {
		if got := cardParameters(tt.card, 3); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v\nwant %v", tt.name, got, tt.want)
		}
	}
}
