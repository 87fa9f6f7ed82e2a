package gbdt

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/configtest"
)

// synthetic returns y = 3·[x0 > 0.5] + x1² + noise, with a constant column.
func synthetic(n int, seed uint64) ([][]float64, []float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	X := make([][]float64, n)
	y := make([]float64, n)
	for i := range X {
		x0, x1 := rng.Float64(), rng.Float64()*2-1
		X[i] = []float64{x0, x1, 4, float64(rng.IntN(7))}
		y[i] = x1 * x1
		if x0 > 0.5 {
			y[i] += 3
		}
		y[i] += 0.05 * rng.NormFloat64()
	}
	return X, y
}

func TestFitLearns(t *testing.T) {
	X, y := synthetic(2000, 1)
	Xt, yt := synthetic(500, 2)
	cfg := DefaultConfig()
	cfg.Iterations = 200
	m, hist, err := Fit(context.Background(), cfg, X, y, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var se float64
	for i, x := range Xt {
		d := m.Predict(x) - yt[i]
		se += d * d
	}
	if rmse := math.Sqrt(se / float64(len(Xt))); rmse > 0.12 {
		t.Fatalf("test rmse %.3f", rmse)
	}
	if len(hist) == 0 || len(m.Trees) > len(hist) {
		t.Fatalf("%d trees, %d steps", len(m.Trees), len(hist))
	}
	for _, tr := range m.Trees {
		for _, n := range tr.Nodes {
			if !n.Leaf && n.Feature == 2 {
				t.Fatal("split on a constant column")
			}
		}
	}
}

func TestTreeShapeLimits(t *testing.T) {
	X, y := synthetic(1000, 3)
	cases := []struct {
		name      string
		mutate    func(c *Config)
		maxLeaves int
		maxDepth  int
	}{
		{"max leaves", func(c *Config) { c.MaxLeaves = 4 }, 4, 0},
		{"max depth", func(c *Config) { c.MaxDepth = 2; c.MaxLeaves = 64 }, 4, 2},
		{"min samples", func(c *Config) { c.MinSamplesLeaf = 300 }, 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Iterations, cfg.EarlyStopping = 5, false
			tc.mutate(&cfg)
			m, _, err := Fit(context.Background(), cfg, X, y, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range m.Trees {
				leaves, depth := shape(tr, 0, 0)
				if leaves > tc.maxLeaves || (tc.maxDepth > 0 && depth > tc.maxDepth) {
					t.Fatalf("tree with %d leaves, depth %d", leaves, depth)
				}
				counts := leafCounts(tr, X)
				for _, c := range counts {
					if c < cfg.MinSamplesLeaf {
						t.Fatalf("leaf with %d rows < %d", c, cfg.MinSamplesLeaf)
					}
				}
			}
		})
	}
}

func shape(t Tree, i, d int) (leaves, depth int) {
	n := t.Nodes[i]
	if n.Leaf {
		return 1, d
	}
	l1, d1 := shape(t, n.Left, d+1)
	l2, d2 := shape(t, n.Right, d+1)
	return l1 + l2, max(d1, d2)
}

func leafCounts(t Tree, X [][]float64) map[int]int {
	c := map[int]int{}
	for _, x := range X {
		i := 0
		for !t.Nodes[i].Leaf {
			if float32(x[t.Nodes[i].Feature]) <= t.Nodes[i].Threshold {
				i = t.Nodes[i].Left
			} else {
				i = t.Nodes[i].Right
			}
		}
		c[i]++
	}
	return c
}

func TestDeterministicAndEarlyStopping(t *testing.T) {
	X, y := synthetic(1500, 4)
	cfg := DefaultConfig()
	cfg.Iterations = 1000
	a, ha, err := Fit(context.Background(), cfg, X, y, 9, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := Fit(context.Background(), cfg, X, y, 9, nil)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two fits with the same seed differ")
	}
	if len(ha) == 1000 || len(a.Trees) != len(ha)-cfg.Patience {
		t.Fatalf("early stopping: %d rounds run, %d trees kept (patience %d)", len(ha), len(a.Trees), cfg.Patience)
	}
	c, _, _ := Fit(context.Background(), cfg, X, y, 10, nil)
	if reflect.DeepEqual(a, c) {
		t.Fatal("another seed gave the same model")
	}
}

func TestThresholdsAreExactInFloat32(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, distinct := range []int{2, 100, 255, 256, 5000} {
		X := make([][]float64, 6000)
		for i := range X {
			X[i] = []float64{float64(rng.IntN(distinct)) * 1e-3}
		}
		th := thresholds(X, 0, 255)
		if len(th) > 254 || (distinct <= 255 && len(th) != min(distinct, 255)-1) {
			t.Fatalf("%d distinct values: %d thresholds", distinct, len(th))
		}
		for i := 1; i < len(th); i++ {
			if !(th[i] > th[i-1]) {
				t.Fatalf("thresholds not increasing at %d", i)
			}
		}
		// every value lies strictly on one side: binning by float32 compare is unambiguous
		for _, x := range X {
			b := binOf(th, float32(x[0]))
			if b > 0 && !(float32(x[0]) > th[b-1]) {
				t.Fatalf("value %v in bin %d but not above %v", x[0], b, th[b-1])
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	configtest.Check(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{Name: "default", Edit: func(*Config) {}, Want: ""},
		{Name: "iterations", Edit: func(c *Config) { c.Iterations = 0 }, Want: "iterations"},
		{Name: "learning rate", Edit: func(c *Config) { c.LearningRate = 0 }, Want: "learning_rate"},
		{Name: "max leaves", Edit: func(c *Config) { c.MaxLeaves = 1 }, Want: "max_leaves"},
		{Name: "max depth", Edit: func(c *Config) { c.MaxDepth = -1 }, Want: "max_depth"},
		{Name: "min samples leaf", Edit: func(c *Config) { c.MinSamplesLeaf = 0 }, Want: "min_samples_leaf"},
		{Name: "l2", Edit: func(c *Config) { c.L2 = -1 }, Want: "l2"},
		{Name: "max bins", Edit: func(c *Config) { c.MaxBins = 256 }, Want: "max_bins"},
		{Name: "validation fraction", Edit: func(c *Config) { c.ValidationFraction = 1 }, Want: "validation_fraction"},
		{Name: "patience", Edit: func(c *Config) { c.Patience = 0 }, Want: "patience"},
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	X, y := synthetic(100, 1)
	if _, _, err := Fit(ctx, DefaultConfig(), X, y, 1, nil); err == nil {
		t.Fatal("cancelled context ignored")
	}
}
