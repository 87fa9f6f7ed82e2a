package mlp

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/configtest"
)

// data: y = 10 + 2·sin(3·x0) + x1 + 3·[dow == 6]; column 2 is dow (0…6).
func data(n int, seed uint64) ([][]float64, []float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	X := make([][]float64, n)
	y := make([]float64, n)
	for i := range X {
		x0, x1, dow := rng.Float64()*2-1, rng.Float64()*2-1, float64(rng.IntN(7))
		X[i] = []float64{x0, x1, dow}
		y[i] = 10 + 2*math.Sin(3*x0) + x1
		if dow == 6 {
			y[i] += 3
		}
	}
	return X, y
}

func TestFitLearnsAndIsDeterministic(t *testing.T) {
	X, y := data(1500, 1)
	Xt, yt := data(300, 2)
	cfg := DefaultConfig()
	cfg.Hidden = []int{16, 8}
	var steps int
	m, hist, err := Fit(context.Background(), cfg, X, y, 2, 7, 3, func(Step, int) { steps++ })
	if err != nil {
		t.Fatal(err)
	}
	var ae float64
	for i, x := range Xt {
		ae += math.Abs(m.Predict(x) - yt[i])
	}
	if mae := ae / float64(len(Xt)); mae > 0.15 {
		t.Fatalf("test MAE %.3f", mae)
	}
	if steps != len(hist) || m.BestEpoch < 1 || m.BestEpoch > len(hist) {
		t.Fatalf("%d progress calls, %d epochs, best %d", steps, len(hist), m.BestEpoch)
	}
	if m.Prep.Width() != 2+7 || m.Layers[0].In != 9 || m.Layers[2].Out != 1 {
		t.Fatalf("shapes %+v", m.Layers)
	}
	m2, _, _ := Fit(context.Background(), cfg, X, y, 2, 7, 3, nil)
	if !reflect.DeepEqual(m, m2) {
		t.Fatal("same seed, different model")
	}
}

func TestValidate(t *testing.T) {
	configtest.Check(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{Name: "default", Edit: func(*Config) {}, Want: ""},
		{Name: "no layers", Edit: func(c *Config) { c.Hidden = nil }, Want: "hidden"},
		{Name: "empty layer", Edit: func(c *Config) { c.Hidden = []int{4, 0} }, Want: "hidden[1]"},
		{Name: "learning rate", Edit: func(c *Config) { c.LearningRate = 0 }, Want: "learning_rate"},
		{Name: "batch size", Edit: func(c *Config) { c.BatchSize = 0 }, Want: "batch_size"},
		{Name: "epochs", Edit: func(c *Config) { c.Epochs = 0 }, Want: "epochs"},
		{Name: "validation fraction", Edit: func(c *Config) { c.ValidationFraction = 0 }, Want: "validation_fraction"},
		{Name: "beta2", Edit: func(c *Config) { c.Beta2 = 1 }, Want: "beta2"},
	})
}
