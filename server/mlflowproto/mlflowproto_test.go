package mlflowproto

import (
	"reflect"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

func TestDecode(t *testing.T) {
	spec := []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}}
	feats := []string{"a", "b"}
	cases := []struct {
		name, body string
		features   []string
		want       []float32
		shape      []int64
		err        string
	}{
		{"split by name", `{"dataframe_split":{"columns":["b","a","c"],"data":[[2,1,9],[4,3,9]]}}`, feats, []float32{1, 2, 3, 4}, []int64{2, 2}, ""},
		{"split no card", `{"dataframe_split":{"columns":["p","q"],"data":[[1,2]]}}`, nil, []float32{1, 2}, []int64{1, 2}, ""},
		{"records", `{"dataframe_records":[{"b":2,"a":1}]}`, feats, []float32{1, 2}, []int64{1, 2}, ""},
		{"instances", `{"instances":[[1,2],[3,4]]}`, nil, []float32{1, 2, 3, 4}, []int64{2, 2}, ""},
		{"inputs named", `{"inputs":{"x":[[1,2]]}}`, nil, []float32{1, 2}, []int64{1, 2}, ""},
		{"records without card", `{"dataframe_records":[{"b":2,"a":1}]}`, nil, nil, nil, "feature names"},
		{"missing record key", `{"dataframe_records":[{"a":1}]}`, feats, nil, nil, `record 0: missing 1 of the model's 2 feature columns: "b" (model metadata`},
		{"ragged", `{"instances":[[1,2],[3]]}`, nil, nil, nil, "ragged"},
		{"unknown input", `{"inputs":{"x":[[1,2]],"y":[1]}}`, nil, nil, nil, "unknown input"},
		{"none", `{}`, nil, nil, nil, "exactly one"},
		{"bad json", `{"instances":`, nil, nil, nil, "invalid JSON"},
		{"bad params", `{"instances":[[1,2]],"params":{"a":[1]}}`, nil, nil, nil, "string, number or bool"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts, _, err := Decode([]byte(c.body), spec, c.features, 0)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ts[0].Data, c.want) || !reflect.DeepEqual(ts[0].Shape, c.shape) {
				t.Fatalf("got %v %v", ts[0].Data, ts[0].Shape)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	cases := []struct {
		name string
		outs []tensor.Tensor
		want string
	}{
		{"column", []tensor.Tensor{{Name: "y", DataType: tensor.FP32, Shape: []int64{2, 1}, Data: []float32{1.5, 2}}}, `{"predictions":[1.5,2]}`},
		{"matrix", []tensor.Tensor{{Name: "y", DataType: tensor.Int64, Shape: []int64{2, 2}, Data: []int64{1, 2, 3, 4}}}, `{"predictions":[[1,2],[3,4]]}`},
		{"several", []tensor.Tensor{{Name: "a", DataType: tensor.Int64, Shape: []int64{1}, Data: []int64{7}}, {Name: "b", DataType: tensor.Bytes, Shape: []int64{1}, Data: []string{"x"}}}, `{"predictions":{"a":[7],"b":["x"]}}`},
	}
	for _, c := range cases {
		b, err := Encode(c.outs)
		if err != nil || string(b) != c.want {
			t.Errorf("%s: %s %v, want %s", c.name, b, err, c.want)
		}
	}
}
