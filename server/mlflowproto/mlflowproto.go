// Package mlflowproto implements MLflow's scoring protocol (POST
// /invocations) on top of the oip decoder: dataframe_split,
// dataframe_records, instances and inputs are turned into input tensors,
// and outputs into {"predictions": ...}.
//
// Named columns (dataframe_split with columns, dataframe_records, instances
// given as records) are matched to the feature names of the model card's
// first input, in the card's order; extra columns are ignored, as MLflow's
// schema enforcement does. Without a card, plain arrays (instances, inputs,
// dataframe_split data without or with columns in the model's order) work.
package mlflowproto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/flywheel-ml/flywheel/server/oip"
	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

// Request is the body of POST /invocations; exactly one field is set.
type Request struct {
	DataframeSplit   *DataframeSplit  `json:"dataframe_split,omitempty"`
	DataframeRecords []map[string]any `json:"dataframe_records,omitempty"`
	Instances        json.RawMessage  `json:"instances,omitempty"`
	Inputs           json.RawMessage  `json:"inputs,omitempty"`
	Params           map[string]any   `json:"params,omitempty"`
}

// DataframeSplit is pandas' split orientation.
type DataframeSplit struct {
	Columns []string `json:"columns,omitempty"`
	Index   []any    `json:"index,omitempty"`
	Data    [][]any  `json:"data"`
}

func bad(format string, args ...any) error {
	return &oip.DecodeError{Reason: fmt.Sprintf(format, args...)}
}

// Decode turns a scoring request into input tensors in the order of specs.
// features are the card's feature names of the first input (may be nil).
// It returns the request's params as parameters.
func Decode(body []byte, specs []tensor.Spec, features []string, maxElements int64) ([]tensor.Tensor, map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, nil, bad("invalid JSON body: %v", err)
	}
	if err := oip.CheckParameters("params", req.Params); err != nil {
		return nil, nil, err
	}
	set := 0
	for _, ok := range []bool{req.DataframeSplit != nil, req.DataframeRecords != nil, req.Instances != nil, req.Inputs != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return nil, nil, bad("the body must have exactly one of dataframe_split, dataframe_records, instances, inputs (it has %d)", set)
	}
	d := oip.Decoder{Inputs: specs, MaxElements: maxElements}
	single := func(rows [][]any) ([]tensor.Tensor, error) {
		if len(specs) != 1 {
			return nil, bad("tabular input needs a model with one input; this one has %d", len(specs))
		}
		t, err := fromRows(d, specs[0], rows)
		if err != nil {
			return nil, err
		}
		return []tensor.Tensor{t}, nil
	}
	var out []tensor.Tensor
	var err error
	switch {
	case req.DataframeSplit != nil:
		s := req.DataframeSplit
		rows := s.Data
		if len(s.Columns) > 0 {
			if rows, err = reorder(s.Columns, s.Data, features); err != nil {
				return nil, nil, err
			}
		}
		out, err = single(rows)
	case req.DataframeRecords != nil:
		var rows [][]any
		if rows, err = records(req.DataframeRecords, features); err != nil {
			return nil, nil, err
		}
		out, err = single(rows)
	default:
		raw, field := req.Instances, "instances"
		if raw == nil {
			raw, field = req.Inputs, "inputs"
		}
		out, err = decodeTensors(d, specs, features, raw, field)
	}
	if err != nil {
		return nil, nil, err
	}
	return out, req.Params, nil
}

func reorder(columns []string, data [][]any, features []string) ([][]any, error) {
	if len(features) == 0 {
		return data, nil // no card: columns are taken in the order given
	}
	idx := make([]int, len(features))
	var missing []string
	for i, f := range features {
		idx[i] = -1
		for j, c := range columns {
			if c == f {
				idx[i] = j
				break
			}
		}
		if idx[i] < 0 {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, missingColumns("", missing, features)
	}
	out := make([][]any, len(data))
	for r, row := range data {
		if len(row) != len(columns) {
			return nil, bad("row %d has %d values for %d columns", r, len(row), len(columns))
		}
		nr := make([]any, len(idx))
		for i, j := range idx {
			nr[i] = row[j]
		}
		out[r] = nr
	}
	return out, nil
}

func records(recs []map[string]any, features []string) ([][]any, error) {
	if len(features) == 0 {
		return nil, bad("named columns need the model card's feature names; this model has none: send instances or inputs as arrays")
	}
	rows := make([][]any, len(recs))
	for r, rec := range recs {
		row := make([]any, len(features))
		var missing []string
		for i, f := range features {
			v, ok := rec[f]
			if !ok {
				missing = append(missing, f)
			}
			row[i] = v
		}
		if len(missing) > 0 {
			return nil, missingColumns(fmt.Sprintf("record %d: ", r), missing, features)
		}
		rows[r] = row
	}
	return rows, nil
}

func fromRows(d oip.Decoder, spec tensor.Spec, rows [][]any) (tensor.Tensor, error) {
	width := -1
	for r, row := range rows {
		if width >= 0 && len(row) != width {
			return tensor.Tensor{}, &oip.DecodeError{Input: spec.Name, Reason: fmt.Sprintf("row %d has %d values, row 0 has %d", r, len(row), width)}
		}
		width = len(row)
	}
	if width < 0 {
		return tensor.Tensor{}, &oip.DecodeError{Input: spec.Name, Reason: "no rows"}
	}
	flat := make([]any, 0, len(rows)*width)
	for _, row := range rows {
		flat = append(flat, row...)
	}
	return build(d, spec, []int64{int64(len(rows)), int64(width)}, flat)
}

func build(d oip.Decoder, spec tensor.Spec, shape []int64, flat []any) (tensor.Tensor, error) {
	raw, err := json.Marshal(flat)
	if err != nil {
		return tensor.Tensor{}, &oip.DecodeError{Input: spec.Name, Reason: err.Error()}
	}
	return d.DecodeInput(spec, oip.RequestInput{Name: spec.Name, Datatype: string(spec.DataType), Shape: shape, Data: raw})
}

// decodeTensors handles instances/inputs: an array for a single input (rows
// may be records when the card names features), or an object of arrays
// keyed by input name.
func decodeTensors(d oip.Decoder, specs []tensor.Spec, features []string, raw json.RawMessage, field string) ([]tensor.Tensor, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, bad("%s: %v", field, err)
	}
	if obj, ok := v.(map[string]any); ok {
		out := make([]tensor.Tensor, len(specs))
		for i, s := range specs {
			val, ok := obj[s.Name]
			if !ok {
				return nil, &oip.DecodeError{Input: s.Name, Reason: fmt.Sprintf("missing from %s", field)}
			}
			t, err := fromNested(d, s, val)
			if err != nil {
				return nil, err
			}
			out[i] = t
		}
		for k := range obj {
			found := false
			for _, s := range specs {
				found = found || s.Name == k
			}
			if !found {
				return nil, &oip.DecodeError{Input: k, Reason: "unknown input"}
			}
		}
		return out, nil
	}
	if len(specs) != 1 {
		return nil, bad("%s must be an object keyed by input name for a model with %d inputs", field, len(specs))
	}
	if arr, ok := v.([]any); ok && len(arr) > 0 {
		if _, isRec := arr[0].(map[string]any); isRec {
			recs := make([]map[string]any, len(arr))
			for i, e := range arr {
				m, ok := e.(map[string]any)
				if !ok {
					return nil, bad("%s: element %d is not an object like element 0", field, i)
				}
				recs[i] = m
			}
			rows, err := records(recs, features)
			if err != nil {
				return nil, err
			}
			t, err := fromRows(d, specs[0], rows)
			return []tensor.Tensor{t}, err
		}
	}
	t, err := fromNested(d, specs[0], v)
	if err != nil {
		return nil, err
	}
	return []tensor.Tensor{t}, nil
}

// fromNested infers the shape of a nested JSON array (ragged arrays are
// rejected) and decodes it against spec.
func fromNested(d oip.Decoder, spec tensor.Spec, v any) (tensor.Tensor, error) {
	var shape []int64
	for cur := v; ; {
		arr, ok := cur.([]any)
		if !ok {
			break
		}
		shape = append(shape, int64(len(arr)))
		if len(arr) == 0 {
			break
		}
		cur = arr[0]
	}
	if len(shape) == 0 {
		return tensor.Tensor{}, &oip.DecodeError{Input: spec.Name, Reason: "must be an array"}
	}
	var flat []any
	var walk func(x any, depth int) error
	walk = func(x any, depth int) error {
		if depth == len(shape) {
			if _, ok := x.([]any); ok {
				return fmt.Errorf("ragged data at depth %d", depth+1)
			}
			if _, ok := x.(map[string]any); ok {
				return fmt.Errorf("objects are not allowed inside arrays here")
			}
			flat = append(flat, x)
			return nil
		}
		arr, ok := x.([]any)
		if !ok || int64(len(arr)) != shape[depth] {
			return fmt.Errorf("ragged data: arrays at depth %d differ in length", depth+1)
		}
		for _, e := range arr {
			if err := walk(e, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(v, 0); err != nil {
		return tensor.Tensor{}, &oip.DecodeError{Input: spec.Name, Reason: err.Error()}
	}
	// A 1-D array for a 2-D [N,1] input is a column of rows.
	if len(shape) == 1 && len(spec.Shape) == 2 && spec.Shape[1] == 1 {
		shape = []int64{shape[0], 1}
	}
	return build(d, spec, shape, flat)
}

// Encode writes {"predictions": ...}: one output gives its values nested by
// shape (an [N,1] output gives a flat list of N values); several outputs
// give an object keyed by output name.
func Encode(outputs []tensor.Tensor) ([]byte, error) {
	b := []byte(`{"predictions":`)
	var err error
	if len(outputs) == 1 {
		b, err = appendNested(b, outputs[0])
	} else {
		b = append(b, '{')
		for i, t := range outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = tensorjson.AppendString(b, t.Name)
			b = append(b, ':')
			if b, err = appendNested(b, t); err != nil {
				break
			}
		}
		b = append(b, '}')
	}
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func appendNested(b []byte, t tensor.Tensor) ([]byte, error) {
	flat, err := oip.AppendData(nil, t.Data)
	if err != nil {
		return nil, err
	}
	if t.DataType == tensor.Sequence || t.DataType == tensor.Map || len(t.Shape) <= 1 {
		return append(b, flat...), nil
	}
	shape := t.Shape
	if len(shape) == 2 && shape[1] == 1 {
		return append(b, flat...), nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(flat, &elems); err != nil {
		return nil, err
	}
	var sb strings.Builder
	var pos int
	var nest func(depth int)
	nest = func(depth int) {
		sb.WriteByte('[')
		for i := int64(0); i < shape[depth]; i++ {
			if i > 0 {
				sb.WriteByte(',')
			}
			if depth == len(shape)-1 {
				sb.Write(elems[pos])
				pos++
			} else {
				nest(depth + 1)
			}
		}
		sb.WriteByte(']')
	}
	nest(0)
	return append(b, sb.String()...), nil
}

// missingColumns names every feature a named request lacks, in the card's order.
func missingColumns(where string, missing, features []string) error {
	q := make([]string, len(missing))
	for i, m := range missing {
		q[i] = strconv.Quote(m)
	}
	return bad("%smissing %d of the model's %d feature columns: %s (model metadata, GET /v2/models/{name}, lists them in parameters.features)",
		where, len(missing), len(features), strings.Join(q, ", "))
}
