package oip

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

// Response is what EncodeResponse writes.
type Response struct {
	Model      string
	Version    string
	ID         string
	Parameters map[string]any
	Outputs    []tensor.Tensor
}

// AppendResponse appends the JSON inference response to b. Tensor data is
// written flat and row-major; NaN and infinities, which JSON cannot carry,
// are written as null. SEQUENCE and MAP outputs carry their JSON values.
func AppendResponse(b []byte, r Response) ([]byte, error) {
	b = append(b, `{"model_name":`...)
	b = tensorjson.AppendString(b, r.Model)
	if r.Version != "" {
		b = append(b, `,"model_version":`...)
		b = tensorjson.AppendString(b, r.Version)
	}
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = tensorjson.AppendString(b, r.ID)
	}
	if len(r.Parameters) > 0 {
		p, err := json.Marshal(r.Parameters)
		if err != nil {
			return nil, fmt.Errorf("encoding parameters: %w", err)
		}
		b = append(b, `,"parameters":`...)
		b = append(b, p...)
	}
	b = append(b, `,"outputs":[`...)
	for i, t := range r.Outputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = tensorjson.AppendString(b, t.Name)
		b = append(b, `,"datatype":`...)
		b = tensorjson.AppendString(b, string(t.DataType))
		b = append(b, `,"shape":`...)
		b = tensorjson.AppendShape(b, t.Shape)
		b = append(b, `,"data":`...)
		var err error
		if b, err = AppendData(b, t.Data); err != nil {
			return nil, fmt.Errorf("encoding output %q: %w", t.Name, err)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// AppendData appends data as JSON: a typed slice as a flat array
// (tensorjson.AppendData), any other value — the JSON values of SEQUENCE
// and MAP outputs — marshalled with non-finite floats as null.
func AppendData(b []byte, data any) ([]byte, error) {
	if out, err := tensorjson.AppendData(b, data); err == nil {
		return out, nil
	}
	j, err := json.Marshal(cleanJSON(data))
	if err != nil {
		return nil, err
	}
	return append(b, j...), nil
}

// cleanJSON replaces non-finite floats nested in JSON values by nil.
func cleanJSON(v any) any {
	switch x := v.(type) {
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cleanJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = cleanJSON(e)
		}
		return out
	case []float32, []float64:
		r, _ := tensorjson.AppendData(nil, x)
		return json.RawMessage(r)
	}
	return v
}

// Select returns the outputs to answer with, in the order the request names
// them (all of outs when it names none), and whether each is sent as binary
// tensor data (binarydata.WantBinary: the request's binary_data_output
// parameter, overridden by an output's binary_data); binary is nil when
// none is. Non-tensor outputs (SEQUENCE, MAP) have no binary form: a
// response holding one is all JSON.
func (r *Request) Select(outs []tensor.Tensor) (sel []tensor.Tensor, binary []bool) {
	sel = outs
	if r.Outputs != nil {
		sel = make([]tensor.Tensor, 0, len(r.Outputs))
		for _, name := range r.Outputs {
			for _, t := range outs {
				if t.Name == name {
					sel = append(sel, t)
				}
			}
		}
	}
	all := r.Parameters[binarydata.ParamBinaryDataOutput]
	if all == nil && r.binaryData == nil {
		return sel, nil // the JSON case: no allocation
	}
	binary = make([]bool, len(sel))
	some := false
	for i, t := range sel {
		if binarydata.ElementSize(string(t.DataType)) < 0 {
			return sel, nil // SEQUENCE or MAP
		}
		var own any
		if r.binaryData != nil {
			for j, name := range r.Outputs {
				if name == t.Name {
					own = (*r.binaryData)[j]
					break
				}
			}
		}
		binary[i] = binarydata.WantBinary(all, own)
		some = some || binary[i]
	}
	if !some {
		return sel, nil
	}
	return sel, binary
}

// AppendBinaryResponse appends the response with the outputs marked in
// binary (parallel to r.Outputs) as binary tensor data after the JSON
// object; headerLength is the JSON object's length, to send as
// Inference-Header-Content-Length with Content-Type
// application/octet-stream.
func AppendBinaryResponse(b []byte, r Response, binary []bool) (body []byte, headerLength int, err error) {
	if len(binary) != len(r.Outputs) {
		return nil, 0, fmt.Errorf("encoding binary response: %d binary flags for %d outputs", len(binary), len(r.Outputs))
	}
	br := binarydata.Response{ModelName: r.Model, ModelVersion: r.Version, ID: r.ID, Parameters: r.Parameters,
		Outputs: make([]binarydata.Output, len(r.Outputs))}
	for i, t := range r.Outputs {
		br.Outputs[i] = binarydata.Output{Name: t.Name, DataType: string(t.DataType), Shape: t.Shape, Data: t.Data, Binary: binary[i]}
	}
	body, headerLength, _, err = binarydata.AppendResponse(b, br)
	if err != nil {
		return nil, 0, fmt.Errorf("encoding binary response: %w", err)
	}
	return body, headerLength, nil
}
