package export

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flywheel-ml/flywheel/train/export/exporttest"
	"github.com/flywheel-ml/flywheel/train/export/onnxpb"
	"github.com/flywheel-ml/flywheel/train/gbdt"
	"github.com/flywheel-ml/flywheel/train/mlp"
	"github.com/flywheel-ml/flywheel/train/ridge"
)

type predictor interface{ Predict([]float64) float64 }

// rows: 3 numeric columns and a dow column (index 3), plus edge cases: a
// value exactly on a tree threshold, dow outside 0…6, large magnitudes.
func rows(n int) [][]float64 {
	rng := rand.New(rand.NewPCG(3, 3))
	X := make([][]float64, n)
	for i := range X {
		X[i] = []float64{rng.NormFloat64(), rng.Float64(), rng.NormFloat64() * 100, float64(rng.IntN(7))}
	}
	return append(X,
		[]float64{0, 0.5, 0, 0},
		[]float64{0, float64(math.Nextafter32(0.5, 1)), 0, 6},
		[]float64{1e4, -1e4, 1e6, 7},
		[]float64{-3, 2, -5, -1},
	)
}

func target(x []float64) float64 {
	return 3*x[0] - 2*x[1] + 0.01*x[2] + []float64{0, 0, 0, 0, 0, -4, -5}[int(x[3])%7] + 10
}

func TestParityWithONNXRuntime(t *testing.T) {
	X := rows(400)
	y := make([]float64, len(X))
	for i, x := range X[:400] {
		y[i] = target(x)
	}
	Xtr, ytr := X[:400], y[:400]
	ctx := context.Background()
	rm, err := ridge.Fit(ctx, ridge.DefaultConfig(), Xtr, ytr, 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	mcfg := mlp.DefaultConfig()
	mcfg.Hidden, mcfg.Epochs = []int{8}, 20
	mm, _, err := mlp.Fit(ctx, mcfg, Xtr, ytr, 3, 7, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	gcfg := gbdt.DefaultConfig()
	gcfg.Iterations, gcfg.EarlyStopping, gcfg.MinSamplesLeaf = 30, false, 5
	gm, _, err := gbdt.Fit(ctx, gcfg, Xtr, ytr, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// a hand-made ensemble whose threshold 0.5 is hit exactly by a row
	hand := &gbdt.Model{Base: 1, Features: 4, Trees: []gbdt.Tree{{Nodes: []gbdt.Node{
		{Feature: 1, Threshold: 0.5, Left: 1, Right: 2}, {Leaf: true, Value: -1}, {Leaf: true, Value: 1},
	}}}}

	cases := []struct {
		name  string
		model predictor
		build func() (*onnxpb.ModelProto, error)
	}{
		{"ridge", rm, func() (*onnxpb.ModelProto, error) { return Ridge(rm, 4, Options{GraphName: "r"}) }},
		{"mlp", mm, func() (*onnxpb.ModelProto, error) { return MLP(mm, 4, Options{}) }},
		{"gbdt", gm, func() (*onnxpb.ModelProto, error) {
			return GBDT(gm, Options{Metadata: map[string]string{"b": "2", "a": "1"}})
		}},
		{"gbdt threshold tie", hand, func() (*onnxpb.ModelProto, error) { return GBDT(hand, Options{}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			b, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			m2, _ := tc.build()
			if b2, _ := Marshal(m2); !bytes.Equal(b, b2) {
				t.Fatal("encoding is not deterministic")
			}
			var back onnxpb.ModelProto
			if err := proto.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.GetIrVersion() != 8 || back.GetOpsetImport()[0].GetVersion() != 17 ||
				back.GetGraph().GetInput()[0].GetName() != InputName || back.GetGraph().GetOutput()[0].GetName() != OutputName {
				t.Fatalf("model header %v", back.GetOpsetImport())
			}
			got := exporttest.Predict(t, b, X)
			// FP32 inference: 1e-3 absolute, or relative for the extreme rows
			var maxDiff float64
			for i, x := range X {
				want := tc.model.Predict(x)
				d := math.Abs(float64(got[i])-want) / math.Max(1, math.Abs(want))
				maxDiff = math.Max(maxDiff, d)
			}
			if maxDiff > 1e-3 {
				t.Fatalf("max |onnxruntime − go| / max(1, |go|) = %g", maxDiff)
			}
			t.Logf("max |onnxruntime − go| / max(1, |go|) = %.3g over %d rows", maxDiff, len(X))
		})
	}
	if got := exporttest.Predict(t, mustMarshal(t, hand), [][]float64{{0, 0.5, 0, 0}, {0, float64(math.Nextafter32(0.5, 1)), 0, 0}}); got[0] != 0 || got[1] != 2 {
		t.Fatalf("threshold tie: %v, want [0 2]", got)
	}
	if _, err := GBDT(&gbdt.Model{}, Options{}); err == nil {
		t.Fatal("empty ensemble exported")
	}
}

func mustMarshal(t *testing.T, m *gbdt.Model) []byte {
	p, err := GBDT(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
