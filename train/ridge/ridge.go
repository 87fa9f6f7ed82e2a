// Package ridge fits ridge regression (L2-penalised least squares) on
// standardised features with a one-hot day of week, solved in closed form
// with gonum.
package ridge

import (
	"context"
	"errors"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/flywheel-ml/flywheel/train/preprocess"
)

// Config holds the hyper-parameters.
type Config struct {
	Alpha float64 `yaml:"alpha" json:"alpha"` // L2 penalty on the coefficients (not the intercept)
}

// DefaultConfig returns the defaults (scikit-learn's Ridge alpha).
func DefaultConfig() Config { return Config{Alpha: 1} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Alpha < 0 {
		return fmt.Errorf("ridge: alpha %v must be ≥ 0", c.Alpha)
	}
	return nil
}

// Model is a fitted ridge regression: prediction = Intercept + Coef · Prep(x).
type Model struct {
	Prep      *preprocess.Standardizer
	Coef      []float64
	Intercept float64
}

// Fit solves (ZᵀZ + αI) w = Zᵀ(y − ȳ) on centred transformed features Z.
// oneHot is the raw column to one-hot encode into categories (-1 for none).
func Fit(ctx context.Context, cfg Config, X [][]float64, y []float64, oneHot, categories int) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(X) == 0 || len(X) != len(y) {
		return nil, errors.New("ridge: need as many targets as rows, at least one")
	}
	prep, err := preprocess.Fit(X, oneHot, categories)
	if err != nil {
		return nil, err
	}
	Z := prep.TransformAll(X)
	p := prep.Width()
	n := float64(len(Z))
	zMean := make([]float64, p)
	var yMean float64
	for i, z := range Z {
		for j, v := range z {
			zMean[j] += v
		}
		yMean += y[i]
	}
	for j := range zMean {
		zMean[j] /= n
	}
	yMean /= n
	A := mat.NewSymDense(p, nil)
	b := mat.NewVecDense(p, nil)
	zc := make([]float64, p)
	for i, z := range Z {
		if i%512 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for j := range z {
			zc[j] = z[j] - zMean[j]
		}
		yc := y[i] - yMean
		for j := 0; j < p; j++ {
			b.SetVec(j, b.AtVec(j)+zc[j]*yc)
			for k := j; k < p; k++ {
				A.SetSym(j, k, A.At(j, k)+zc[j]*zc[k])
			}
		}
	}
	for j := 0; j < p; j++ {
		A.SetSym(j, j, A.At(j, j)+cfg.Alpha)
	}
	var w mat.VecDense
	var chol mat.Cholesky
	if chol.Factorize(A) {
		if err := chol.SolveVecTo(&w, b); err != nil {
			return nil, fmt.Errorf("ridge: solving: %w", err)
		}
	} else { // singular (alpha 0 with collinear columns): least-norm solution
		if err := w.SolveVec(A, b); err != nil {
			return nil, fmt.Errorf("ridge: solving (alpha %v, singular system): %w", cfg.Alpha, err)
		}
	}
	m := &Model{Prep: prep, Coef: make([]float64, p), Intercept: yMean}
	for j := 0; j < p; j++ {
		m.Coef[j] = w.AtVec(j)
		m.Intercept -= m.Coef[j] * zMean[j]
	}
	return m, nil
}

// Predict returns the prediction for one raw feature vector.
func (m *Model) Predict(x []float64) float64 {
	z := m.Prep.Transform(nil, x)
	s := m.Intercept
	for j, v := range z {
		s += m.Coef[j] * v
	}
	return s
}
