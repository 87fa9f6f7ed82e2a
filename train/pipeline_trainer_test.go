package train

import (
	"reflect"
	"strings"
	"testing"
)

func TestParamsApply(t *testing.T) {
	cases := []struct {
		name, algorithm string
		params          map[string]any
		err             string
		check           func(Params) bool
	}{
		{"none", GBDT, nil, "", func(p Params) bool { return reflect.DeepEqual(p, DefaultParams()) }},
		{"gbdt from a card", GBDT, map[string]any{"learning_rate": 0.05, "max_bins": float64(255), "early_stopping": false}, "",
			func(p Params) bool {
				return p.GBDT.LearningRate == 0.05 && p.GBDT.MaxBins == 255 && !p.GBDT.EarlyStopping
			}},
		{"mlp list", MLP, map[string]any{"hidden": []any{32, 16}}, "", func(p Params) bool { return len(p.MLP.Hidden) == 2 && p.MLP.Hidden[1] == 16 }},
		{"other sections kept", Ridge, map[string]any{"alpha": 2.0}, "", func(p Params) bool { return p.Ridge.Alpha == 2 && p.GBDT == DefaultParams().GBDT }},
		{"unknown key", GBDT, map[string]any{"learnig_rate": 0.1}, `unknown field "learnig_rate"`, nil},
		{"wrong type", GBDT, map[string]any{"max_bins": "many"}, "max_bins must be a int", nil},
		{"fraction for an int", GBDT, map[string]any{"iterations": 1.5}, "iterations", nil},
		{"unknown algorithm", "svm", map[string]any{"c": 1}, `algorithm "svm" is not one of`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := DefaultParams()
			err := p.Apply(c.algorithm, c.params)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !c.check(p) {
				t.Fatalf("%+v, %v", p, err)
			}
		})
	}
}

func TestPipelineTrainerValidate(t *testing.T) {
	for _, b := range []PipelineTrainer{{TestFraction: 0}, {TestFraction: 1}, {TestFraction: 0.1, ReferenceDays: -1}} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
	if err := (PipelineTrainer{TestFraction: 0.1}).Validate(); err != nil {
		t.Error(err)
	}
}
