package pipeline

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/jobs"
)

// A promoted card's thresholds: the champion's carry over by default (a
// built-in trainer's in-period test split would set them too tight); with a
// threshold margin they are that multiple of the holdout error.
func TestPromotedThresholds(t *testing.T) {
	day := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		margin      float64
		champ, cand map[string]float64
		want        map[string]float64
	}{
		{"champion's carry over", 0, map[string]float64{"mae": 1.5, "rmse": 2.1}, map[string]float64{"mae": 0.8, "rmse": 1.1}, map[string]float64{"mae": 1.5, "rmse": 2.1}},
		{"champion without thresholds: the trainer's", 0, nil, map[string]float64{"mae": 0.8}, map[string]float64{"mae": 0.8}},
		{"none at all", 0, nil, nil, nil},
		{"from the holdout", 1.25, map[string]float64{"mae": 1.5}, map[string]float64{"mae": 0.8}, map[string]float64{"mae": 1.5, "rmse": 2.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(Options{Config: DefaultConfig(), Base: CSVBase{}, Feedback: nopSource{}, Trainer: nopTrainer{}, Predictor: ONNXPredictor{}, Serving: nopServing{}})
			if err != nil {
				t.Fatal(err)
			}
			r := &run{job: jobs.Job{ID: "job-1", Model: "m"}, cfg: DefaultConfig(), champ: &modelrepo.Card{Thresholds: tc.champ},
				cand: &modelrepo.Card{Thresholds: tc.cand}, snap: &snapshot{Train: []Row{{Date: day}}},
				candScore: Scores{MAE: 1.2, RMSE: 2, Rows: 28}}
			r.cfg.ThresholdMargin = tc.margin
			p.finishCard(r)
			if !reflect.DeepEqual(r.cand.Thresholds, tc.want) {
				t.Errorf("thresholds = %v, want %v", r.cand.Thresholds, tc.want)
			}
		})
	}
}

type nopSource struct{}

func (nopSource) Export(context.Context, string, time.Time) ([]Feedback, error) { return nil, nil }

type nopTrainer struct{}

func (nopTrainer) Fit(context.Context, FitRequest) error { return nil }

type nopServing struct{}

func (nopServing) VersionReady(context.Context, string, int) (bool, error) { return true, nil }
