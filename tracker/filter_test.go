package tracker

import (
	"errors"
	"testing"
)

func TestParseFilter(t *testing.T) {
	run := Run{
		Info:    RunInfo{ID: "abc", Name: "train-7", Status: StatusFinished, StartTime: 10},
		Params:  map[string]string{"algorithm": "gbdt"},
		Metrics: map[string]Metric{"test_mae": {Value: 1.2}, "val.rmse": {Value: 2}},
		Tags:    map[string]string{"flywheel.local_run_id": "L1"},
	}
	tests := []struct {
		filter string
		match  bool
		err    bool
	}{
		{"", true, false},
		{"metrics.test_mae < 1.5", true, false},
		{"metrics.test_mae >= 1.5", false, false},
		{"metrics.val.rmse = 2", true, false},
		{"params.algorithm = 'gbdt' AND metrics.test_mae < 2", true, false},
		{`tags."flywheel.local_run_id" = 'L1'`, true, false},
		{"tags.`flywheel.local_run_id` != 'L1'", false, false},
		{"attributes.run_name LIKE 'train-%'", true, false},
		{"attributes.status = 'FINISHED'", true, false},
		{"params.missing = 'x'", false, false},
		{"metrics.test_mae < 'a'", false, true},
		{"params.algorithm = gbdt", false, true},
		{"foo.bar = 'x'", false, true},
		{"metrics.a < 1 and", false, true},
		{"metrics.a < 1 or metrics.b < 1", false, true},
	}
	for _, tc := range tests {
		f, err := ParseFilter(tc.filter)
		if tc.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: err %v, want ErrInvalid", tc.filter, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.filter, err)
			continue
		}
		if got := f.Match(run); got != tc.match {
			t.Errorf("%q matched %v, want %v", tc.filter, got, tc.match)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for k, ok := range map[string]bool{"rmse": true, "val/rmse": true, "a b:c-d.e_f": true, "": false, "a*b": false, "../x": false, "/abs": false} {
		if err := ValidateKey(k); (err == nil) != ok {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
}

func TestParamsAndFlatten(t *testing.T) {
	p := Params(map[string]any{"lr": 0.1, "depth": 6, "name": "gbdt", "on": true})
	if p["lr"] != "0.1" || p["depth"] != "6" || p["name"] != "gbdt" || p["on"] != "true" {
		t.Errorf("Params: %v", p)
	}
	f := FlattenMetrics(map[string]map[string]float64{"test": {"mae": 1.2}, "train": {"r2": 0.9}})
	if len(f) != 2 || f["test_mae"] != 1.2 || f["train_r2"] != 0.9 {
		t.Errorf("FlattenMetrics: %v", f)
	}
}
