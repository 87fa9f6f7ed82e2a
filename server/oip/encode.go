package oip

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/tensor"
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
	b = AppendString(b, r.Model)
	if r.Version != "" {
		b = append(b, `,"model_version":`...)
		b = AppendString(b, r.Version)
	}
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = AppendString(b, r.ID)
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
		b = AppendString(b, t.Name)
		b = append(b, `,"datatype":`...)
		b = AppendString(b, string(t.DataType))
		b = append(b, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"data":`...)
		var err error
		if b, err = AppendData(b, t.Data); err != nil {
			return nil, fmt.Errorf("encoding output %q: %w", t.Name, err)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// AppendData appends a typed data slice as a flat JSON array.
func AppendData(b []byte, data any) ([]byte, error) {
	switch d := data.(type) {
	case []float32:
		b = append(b, '[')
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, float64(v), 32)
		}
		return append(b, ']'), nil
	case []float64:
		b = append(b, '[')
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, v, 64)
		}
		return append(b, ']'), nil
	case []int64:
		return appendInts(b, d), nil
	case []int32:
		return appendInts(b, d), nil
	case []int16:
		return appendInts(b, d), nil
	case []int8:
		return appendInts(b, d), nil
	case []uint8:
		return appendUints(b, d), nil
	case []uint16:
		return appendUints(b, d), nil
	case []uint32:
		return appendUints(b, d), nil
	case []uint64:
		return appendUints(b, d), nil
	case []bool:
		b = append(b, '[')
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendBool(b, v)
		}
		return append(b, ']'), nil
	case []string:
		b = append(b, '[')
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, v)
		}
		return append(b, ']'), nil
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
		r, _ := AppendData(nil, x)
		return json.RawMessage(r)
	}
	return v
}

func appendFloat(b []byte, v float64, bits int) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, bits)
}

func appendInts[T int8 | int16 | int32 | int64](b []byte, d []T) []byte {
	b = append(b, '[')
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return append(b, ']')
}

func appendUints[T uint8 | uint16 | uint32 | uint64](b []byte, d []T) []byte {
	b = append(b, '[')
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return append(b, ']')
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
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
