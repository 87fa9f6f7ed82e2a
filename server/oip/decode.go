package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

// DecodeError is a client mistake in a request. Input (or Output) names the
// tensor it concerns, when there is one.
type DecodeError struct {
	Input  string
	Output string
	Reason string
	Err    error // the cause, when another package reported it (binarydata.ErrFormat)
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

func (e *DecodeError) Error() string {
	switch {
	case e.Input != "":
		return fmt.Sprintf("input %q: %s", e.Input, e.Reason)
	case e.Output != "":
		return fmt.Sprintf("output %q: %s", e.Output, e.Reason)
	}
	return e.Reason
}

func inputErr(name, format string, args ...any) *DecodeError {
	return &DecodeError{Input: name, Reason: fmt.Sprintf(format, args...)}
}

// DefaultMaxElements bounds the element count of one input tensor.
const DefaultMaxElements = 1 << 24

// Request is a decoded inference request: Inputs follow the order of the
// model's inputs, Outputs are the requested output names (nil = all).
type Request struct {
	ID         string
	Parameters map[string]any
	Inputs     []tensor.Tensor
	Outputs    []string
	// binaryData holds the requested outputs' binary_data parameters
	// (parallel to Outputs; nil where absent), nil when no output has one.
	// A pointer keeps Request in the allocation size class of the JSON
	// fast path.
	binaryData *[]any
}

// Decoder decodes requests for one model signature.
type Decoder struct {
	Inputs      []tensor.Spec
	Outputs     []tensor.Spec
	MaxElements int64 // per input; 0 means DefaultMaxElements
}

// Decode parses an inference request body and checks it against the
// signature. Every client mistake is a *DecodeError.
func (d Decoder) Decode(body []byte) (*Request, error) {
	if r, err := d.decodeFast(body); err == nil {
		return r, nil
	}
	var req InferenceRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &DecodeError{Reason: "invalid JSON body: " + jsonReason(err)}
	}
	return d.check(&req, nil)
}

// DecodeBinary decodes a request that uses the binary tensor data extension:
// body is a JSON object of headerLength bytes (the
// Inference-Header-Content-Length header) followed by the blocks of the
// inputs that have a binary_data_size parameter, in input order. Inputs
// without it carry JSON data. Bytes that no input claims, a header length
// that is not a byte count or exceeds the body, and blocks whose size does
// not fit the shape are *DecodeErrors. The tensors do not alias body.
func (d Decoder) DecodeBinary(body []byte, headerLength string) (*Request, error) {
	head, rest, err := binarydata.Split(body, headerLength)
	if err != nil {
		return nil, &DecodeError{Reason: err.Error(), Err: err}
	}
	var req InferenceRequest
	if err := json.Unmarshal(head, &req); err != nil {
		return nil, &DecodeError{Reason: fmt.Sprintf("invalid JSON inference header (the first %s bytes, per %s): %s",
			headerLength, binarydata.HeaderContentLength, jsonReason(err))}
	}
	// One copy of the blocks: numeric tensors are views into it (see
	// binarydata.Decode), and body is the server's reused request buffer.
	tail := binarydata.NewTail(bytes.Clone(rest))
	r, err := d.check(&req, tail)
	if err != nil {
		return nil, err
	}
	if err := tail.Done(); err != nil {
		return nil, &DecodeError{Reason: err.Error(), Err: err}
	}
	return r, nil
}

// check validates a parsed request against the signature and decodes its
// data; tail holds the binary blocks of a DecodeBinary request (nil
// otherwise).
func (d Decoder) check(req *InferenceRequest, tail *binarydata.Tail) (*Request, error) {
	if err := CheckParameters("parameters", req.Parameters); err != nil {
		return nil, err
	}
	if v, ok := req.Parameters[binarydata.ParamBinaryDataOutput]; ok {
		if _, ok := v.(bool); !ok {
			return nil, &DecodeError{Reason: fmt.Sprintf("parameters: %q must be true or false", binarydata.ParamBinaryDataOutput)}
		}
	}
	if len(req.Inputs) == 0 {
		return nil, &DecodeError{Reason: "request has no inputs"}
	}
	out := &Request{ID: req.ID, Parameters: req.Parameters, Inputs: make([]tensor.Tensor, len(d.Inputs))}
	seen := make([]bool, len(d.Inputs))
	for _, in := range req.Inputs {
		if in.Name == "" {
			return nil, &DecodeError{Reason: "an input has no name"}
		}
		idx := -1
		for i, s := range d.Inputs {
			if s.Name == in.Name {
				idx = i
				break
			}
		}
		if idx < 0 {
			return nil, inputErr(in.Name, "unknown input; the model takes %s", names(d.Inputs))
		}
		if seen[idx] {
			return nil, inputErr(in.Name, "given more than once")
		}
		seen[idx] = true
		if err := CheckParameters("parameters", in.Parameters); err != nil {
			return nil, inputErr(in.Name, "%s", err.(*DecodeError).Reason)
		}
		t, err := d.decodeInput(d.Inputs[idx], in, tail)
		if err != nil {
			return nil, err
		}
		out.Inputs[idx] = t
	}
	for i, ok := range seen {
		if !ok {
			return nil, inputErr(d.Inputs[i].Name, "missing; the model requires inputs %s", names(d.Inputs))
		}
	}
	for i, o := range req.Outputs {
		found := false
		for _, s := range d.Outputs {
			if s.Name == o.Name {
				found = true
				break
			}
		}
		if !found {
			return nil, &DecodeError{Output: o.Name, Reason: "unknown output; the model has " + names(d.Outputs)}
		}
		out.Outputs = append(out.Outputs, o.Name)
		if o.Parameters == nil {
			continue
		}
		if err := CheckParameters("parameters", o.Parameters); err != nil {
			return nil, &DecodeError{Output: o.Name, Reason: err.(*DecodeError).Reason}
		}
		v, ok := o.Parameters[binarydata.ParamBinaryData]
		if !ok {
			continue
		}
		if _, ok := v.(bool); !ok {
			return nil, &DecodeError{Output: o.Name, Reason: fmt.Sprintf("parameters: %q must be true or false", binarydata.ParamBinaryData)}
		}
		if out.binaryData == nil {
			bd := make([]any, len(req.Outputs))
			out.binaryData = &bd
		}
		(*out.binaryData)[i] = v
	}
	return out, nil
}

// DecodeInput checks one input's datatype and shape against spec and
// decodes its data.
func (d Decoder) DecodeInput(spec tensor.Spec, in RequestInput) (tensor.Tensor, error) {
	return d.decodeInput(spec, in, nil)
}

func (d Decoder) decodeInput(spec tensor.Spec, in RequestInput, tail *binarydata.Tail) (tensor.Tensor, error) {
	dt := tensor.DataType(in.Datatype)
	if in.Datatype == "" {
		return tensor.Tensor{}, inputErr(in.Name, "datatype is missing; the model expects %s", spec.DataType)
	}
	if !dt.Valid() {
		return tensor.Tensor{}, inputErr(in.Name, "unknown datatype %q", in.Datatype)
	}
	if dt != spec.DataType {
		return tensor.Tensor{}, inputErr(in.Name, "datatype %s does not match the model's %s", dt, spec.DataType)
	}
	if in.Shape == nil {
		return tensor.Tensor{}, inputErr(in.Name, "shape is missing; the model expects %s", tensor.ShapeString(spec.Shape))
	}
	for i, v := range in.Shape {
		if v < 0 {
			return tensor.Tensor{}, inputErr(in.Name, "dimension %d of shape %s is negative", i, tensor.ShapeString(in.Shape))
		}
	}
	if spec.Shape != nil {
		if len(in.Shape) != len(spec.Shape) {
			return tensor.Tensor{}, inputErr(in.Name, "shape %s has %d dimensions, the model expects %s", tensor.ShapeString(in.Shape), len(in.Shape), tensor.ShapeString(spec.Shape))
		}
		for i, v := range spec.Shape {
			if v >= 0 && in.Shape[i] != v {
				return tensor.Tensor{}, inputErr(in.Name, "dimension %d of shape %s is %d, the model expects %s", i, tensor.ShapeString(in.Shape), in.Shape[i], tensor.ShapeString(spec.Shape))
			}
		}
	}
	limit := d.MaxElements
	if limit <= 0 {
		limit = DefaultMaxElements
	}
	n, ok := tensor.Elements(in.Shape, limit)
	if !ok {
		return tensor.Tensor{}, inputErr(in.Name, "shape %s holds more than %d elements", tensor.ShapeString(in.Shape), limit)
	}
	if in.Parameters != nil { // never on the fast path
		if size, ok, err := binaryDataSize(in); err != nil {
			return tensor.Tensor{}, err
		} else if ok {
			return binaryInput(in, dt, n, size, tail)
		}
	}
	if len(in.Data) == 0 {
		return tensor.Tensor{}, inputErr(in.Name, "data is missing")
	}
	data, err := tensorjson.Decode(in.Data, in.Datatype, in.Shape)
	if err != nil {
		return tensor.Tensor{}, &DecodeError{Input: in.Name, Reason: err.Error(), Err: err}
	}
	return tensor.Tensor{Name: in.Name, DataType: dt, Shape: in.Shape, Data: data}, nil
}

// binaryDataSize returns the input's binary_data_size parameter, if it has
// one.
func binaryDataSize(in RequestInput) (int64, bool, error) {
	v, ok := in.Parameters[binarydata.ParamBinaryDataSize]
	if !ok {
		return 0, false, nil
	}
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return 0, false, inputErr(in.Name, "%s %s is not a number", binarydata.ParamBinaryDataSize, x)
		}
	default:
		return 0, false, inputErr(in.Name, "%s must be a number of bytes, got %v", binarydata.ParamBinaryDataSize, v)
	}
	if f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, false, inputErr(in.Name, "%s %v is not a byte count", binarydata.ParamBinaryDataSize, v)
	}
	return int64(f), true, nil
}

// binaryInput takes the input's data from the next binary block; dt and the
// element count n are already checked against the model.
func binaryInput(in RequestInput, dt tensor.DataType, n, size int64, tail *binarydata.Tail) (tensor.Tensor, error) {
	if tail == nil {
		return tensor.Tensor{}, inputErr(in.Name, "has parameter %s but the request has no %s header (binary tensor data needs it)",
			binarydata.ParamBinaryDataSize, binarydata.HeaderContentLength)
	}
	if len(in.Data) != 0 {
		return tensor.Tensor{}, inputErr(in.Name, "has both data and parameter %s", binarydata.ParamBinaryDataSize)
	}
	if es := int64(binarydata.ElementSize(string(dt))); es > 0 && size != n*es {
		return tensor.Tensor{}, inputErr(in.Name, "%s %d does not match shape %s: %d %s elements are %d bytes",
			binarydata.ParamBinaryDataSize, size, tensor.ShapeString(in.Shape), n, dt, n*es)
	}
	raw, err := tail.Next(size)
	if err != nil {
		return tensor.Tensor{}, &DecodeError{Input: in.Name, Reason: err.Error(), Err: err}
	}
	data, err := binarydata.Decode(raw, string(dt), in.Shape)
	if err != nil {
		return tensor.Tensor{}, &DecodeError{Input: in.Name, Reason: err.Error(), Err: err}
	}
	return tensor.Tensor{Name: in.Name, DataType: dt, Shape: in.Shape, Data: data}, nil
}

// CheckParameters accepts only string, number and bool values.
func CheckParameters(where string, p map[string]any) error {
	for k, v := range p {
		switch v.(type) {
		case string, float64, bool, json.Number:
		default:
			return &DecodeError{Reason: fmt.Sprintf("%s: %q must be a string, number or bool", where, k)}
		}
	}
	return nil
}

func names(specs []tensor.Spec) string {
	q := make([]string, len(specs))
	for i, s := range specs {
		q[i] = strconv.Quote(s.Name)
	}
	return strings.Join(q, ", ")
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: %s is not a valid %s", te.Field, te.Value, te.Type)
	}
	return err.Error()
}
