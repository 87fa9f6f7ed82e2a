package pipeline

import (
	"math"

	"github.com/flywheel-ml/flywheel/train/card"
	"github.com/flywheel-ml/flywheel/train/eval"
)

// Scores are regression figures on one set of rows.
type Scores struct {
	MAE  float64 `json:"mae"`
	RMSE float64 `json:"rmse"`
	Rows int     `json:"rows"`
}

func score(truth, pred []float64) Scores {
	var abs, sq float64
	for i := range truth {
		d := pred[i] - truth[i]
		abs += math.Abs(d)
		sq += d * d
	}
	n := float64(len(truth))
	return Scores{MAE: abs / n, RMSE: math.Sqrt(sq / n), Rows: len(truth)}
}

func (s Scores) get(metric string) float64 {
	if metric == "rmse" {
		return s.RMSE
	}
	return s.MAE
}

// reference is a candidate's drift reference: the histograms of its
// training rows x (columns named by names) and of its predictions on them,
// binned by the trainer's rule (eval.Histogram) so that drift reads a
// retrained model's card like a trained one's.
func reference(names []string, x [][]float64, pred []float64) *card.Reference {
	ref := &card.Reference{Features: map[string]card.Histogram{}}
	col := make([]float64, len(x))
	for j, n := range names {
		for i := range x {
			col[i] = x[i][j]
		}
		ref.Features[n] = eval.Histogram(col)
	}
	ph := eval.Histogram(pred)
	ref.Prediction = &ph
	return ref
}
