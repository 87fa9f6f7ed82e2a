// Package preprocess is the input transformation the linear and neural
// models share: standardisation of the numeric features and one-hot encoding
// of one categorical column (day of week). The ONNX export replays exactly
// these steps inside the graph, so a served model takes raw features.
package preprocess

import (
	"fmt"
	"math"
)

// Standardizer maps a raw vector to [standardised numeric columns…, one-hot…].
type Standardizer struct {
	Numeric    []int     // raw column indices that are standardised, in output order
	Mean       []float64 // per Numeric column
	Scale      []float64 // per Numeric column (standard deviation; 1 for a constant column)
	OneHot     int       // raw column index of the categorical column, -1 for none
	Categories int       // one-hot width: values 0 … Categories-1
}

// Fit computes means and standard deviations of every column but oneHot.
func Fit(X [][]float64, oneHot, categories int) (*Standardizer, error) {
	if len(X) == 0 {
		return nil, fmt.Errorf("preprocess: no rows")
	}
	f := len(X[0])
	s := &Standardizer{OneHot: oneHot, Categories: categories}
	if oneHot < 0 {
		s.Categories = 0
	}
	for j := 0; j < f; j++ {
		if j == oneHot {
			continue
		}
		var mean float64
		for _, x := range X {
			mean += x[j]
		}
		mean /= float64(len(X))
		var ss float64
		for _, x := range X {
			d := x[j] - mean
			ss += d * d
		}
		sd := math.Sqrt(ss / float64(len(X)))
		if sd < 1e-12 {
			sd = 1
		}
		s.Numeric = append(s.Numeric, j)
		s.Mean = append(s.Mean, mean)
		s.Scale = append(s.Scale, sd)
	}
	return s, nil
}

// Width is the length of a transformed vector.
func (s *Standardizer) Width() int { return len(s.Numeric) + s.Categories }

// Transform writes the transformed x into dst (len Width) and returns it; a
// nil dst is allocated. The categorical value is compared exactly with
// 0 … Categories-1 (an unknown value gives all zeros), as ONNX Equal does.
func (s *Standardizer) Transform(dst, x []float64) []float64 {
	if dst == nil {
		dst = make([]float64, s.Width())
	}
	for i, j := range s.Numeric {
		dst[i] = (x[j] - s.Mean[i]) / s.Scale[i]
	}
	n := len(s.Numeric)
	for c := 0; c < s.Categories; c++ {
		dst[n+c] = 0
		if x[s.OneHot] == float64(c) {
			dst[n+c] = 1
		}
	}
	return dst
}

// TransformAll transforms every row.
func (s *Standardizer) TransformAll(X [][]float64) [][]float64 {
	out := make([][]float64, len(X))
	for i, x := range X {
		out[i] = s.Transform(nil, x)
	}
	return out
}
