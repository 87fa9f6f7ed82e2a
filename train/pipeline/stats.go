package pipeline

import (
	"math"
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
