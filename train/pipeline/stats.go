package pipeline

import (
	"math"
	"sort"

	"github.com/flywheel-ml/flywheel/train/card"
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

// histogram bins values over (up to) 10 quantile edges of themselves.
func histogram(values []float64) card.Histogram {
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	const bins = 10
	edges := []float64{s[0]}
	for i := 1; i < bins; i++ {
		e := s[i*(len(s)-1)/bins]
		if e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	if last := s[len(s)-1]; last > edges[len(edges)-1] || len(edges) == 1 {
		edges = append(edges, last)
	}
	h := card.Histogram{Edges: edges, Proportions: make([]float64, len(edges)-1)}
	for _, v := range s {
		i := sort.Search(len(edges), func(i int) bool { return edges[i] > v }) - 1
		i = max(0, min(i, len(h.Proportions)-1))
		h.Proportions[i]++
	}
	for i := range h.Proportions {
		h.Proportions[i] /= float64(len(s))
	}
	return h
}
