package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/tensor"
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

// maxDepth bounds the nesting of data arrays.
const maxDepth = 32

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
	return d.check(&req, false, nil)
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
	r, err := d.check(&req, false, tail)
	if err != nil {
		return nil, err
	}
	if err := tail.Done(); err != nil {
		return nil, &DecodeError{Reason: err.Error(), Err: err}
	}
	return r, nil
}

// check validates a parsed request against the signature and decodes its
// data; fast selects the fast path's data decoder; tail holds the binary
// blocks of a DecodeBinary request (nil otherwise).
func (d Decoder) check(req *InferenceRequest, fast bool, tail *binarydata.Tail) (*Request, error) {
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
		t, err := d.decodeInput(d.Inputs[idx], in, fast, tail)
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
	return d.decodeInput(spec, in, false, nil)
}

func (d Decoder) decodeInput(spec tensor.Spec, in RequestInput, fast bool, tail *binarydata.Tail) (tensor.Tensor, error) {
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
		return tensor.Tensor{}, inputErr(in.Name, "shape is missing; the model expects %s", shapeString(spec.Shape))
	}
	for i, v := range in.Shape {
		if v < 0 {
			return tensor.Tensor{}, inputErr(in.Name, "dimension %d of shape %s is negative", i, shapeString(in.Shape))
		}
	}
	if spec.Shape != nil {
		if len(in.Shape) != len(spec.Shape) {
			return tensor.Tensor{}, inputErr(in.Name, "shape %s has %d dimensions, the model expects %s", shapeString(in.Shape), len(in.Shape), shapeString(spec.Shape))
		}
		for i, v := range spec.Shape {
			if v >= 0 && in.Shape[i] != v {
				return tensor.Tensor{}, inputErr(in.Name, "dimension %d of shape %s is %d, the model expects %s", i, shapeString(in.Shape), in.Shape[i], shapeString(spec.Shape))
			}
		}
	}
	limit := d.MaxElements
	if limit <= 0 {
		limit = DefaultMaxElements
	}
	n, ok := tensor.Elements(in.Shape, limit)
	if !ok {
		return tensor.Tensor{}, inputErr(in.Name, "shape %s holds more than %d elements", shapeString(in.Shape), limit)
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
	var data any
	var err error
	if fast {
		if data, err = decodeDataFast(in.Data, dt, in.Shape); err != nil {
			return tensor.Tensor{}, errSlowPath
		}
	} else {
		data, err = parseData(in.Data, dt, in.Shape, int(n))
	}
	if err != nil {
		return tensor.Tensor{}, inputErr(in.Name, "%s", err.Error())
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
			binarydata.ParamBinaryDataSize, size, shapeString(in.Shape), n, dt, n*es)
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

func shapeString(s []int64) string {
	b := []byte{'['}
	for i, v := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return string(append(b, ']'))
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

// parser walks a JSON data array (flat or nested) straight into a typed slice.
type parser struct {
	b     []byte
	i     int
	dt    tensor.DataType
	n     int // elements expected
	k     int // elements seen
	dims  []int
	leaf  int
	data  any
	f32   []float32
	f64   []float64
	i64   []int64
	strs  []string
	bools []bool
	bits  int
}

func parseData(raw []byte, dt tensor.DataType, shape []int64, n int) (any, error) {
	data, err := tensor.MakeData(dt, n)
	if err != nil {
		return nil, err
	}
	p := &parser{b: raw, dt: dt, n: n, leaf: -1, data: data}
	switch v := data.(type) {
	case []float32:
		p.f32 = v
	case []float64:
		p.f64 = v
	case []string:
		p.strs = v
	case []bool:
		p.bools = v
	default:
		p.i64 = make([]int64, n) // integers are range-checked into int64 first, see finish
	}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '[' {
		return nil, errors.New("data must be a JSON array (flat or nested)")
	}
	if err := p.array(0); err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, fmt.Errorf("unexpected %q after the data array", p.b[p.i])
	}
	if p.k != n {
		return nil, fmt.Errorf("data has %d elements, shape %s needs %d", p.k, shapeString(shape), n)
	}
	if len(p.dims) > 1 && len(p.dims) == len(shape) {
		for i, d := range p.dims {
			if int64(d) != shape[i] {
				return nil, fmt.Errorf("nested data has shape %s, shape is %s", intsString(p.dims), shapeString(shape))
			}
		}
	}
	return p.finish(data), nil
}

func intsString(d []int) string {
	s := make([]int64, len(d))
	for i, v := range d {
		s[i] = int64(v)
	}
	return shapeString(s)
}

func (p *parser) finish(data any) any {
	switch v := data.(type) {
	case []int8:
		for i, x := range p.i64 {
			v[i] = int8(x)
		}
	case []int16:
		for i, x := range p.i64 {
			v[i] = int16(x)
		}
	case []int32:
		for i, x := range p.i64 {
			v[i] = int32(x)
		}
	case []int64:
		return p.i64
	case []uint8:
		for i, x := range p.i64 {
			v[i] = uint8(x)
		}
	case []uint16:
		for i, x := range p.i64 {
			v[i] = uint16(x)
		}
	case []uint32:
		for i, x := range p.i64 {
			v[i] = uint32(x)
		}
	case []uint64:
		for i, x := range p.i64 {
			v[i] = uint64(x)
		}
	}
	return data
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) array(depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("data is nested deeper than %d levels", maxDepth)
	}
	p.i++               // '['
	count, kind := 0, 0 // kind 1: scalars, 2: arrays
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
	} else {
		for {
			p.ws()
			if p.i >= len(p.b) {
				return errors.New("data array is not closed")
			}
			if p.b[p.i] == '[' {
				if kind == 1 {
					return fmt.Errorf("ragged data: arrays mixed with values at depth %d", depth+1)
				}
				kind = 2
				if err := p.array(depth + 1); err != nil {
					return err
				}
			} else {
				if kind == 2 {
					return fmt.Errorf("ragged data: values mixed with arrays at depth %d", depth+1)
				}
				kind = 1
				if err := p.scalar(); err != nil {
					return err
				}
			}
			count++
			p.ws()
			if p.i >= len(p.b) {
				return errors.New("data array is not closed")
			}
			c := p.b[p.i]
			p.i++
			if c == ']' {
				break
			}
			if c != ',' {
				return fmt.Errorf("invalid JSON in data: unexpected %q at byte %d", c, p.i-1)
			}
		}
	}
	for len(p.dims) <= depth {
		p.dims = append(p.dims, -1)
	}
	if p.dims[depth] < 0 {
		p.dims[depth] = count
	} else if p.dims[depth] != count {
		return fmt.Errorf("ragged data: arrays at depth %d have %d and %d elements", depth+1, p.dims[depth], count)
	}
	if kind == 1 {
		if p.leaf < 0 {
			p.leaf = depth
		} else if p.leaf != depth {
			return errors.New("ragged data: values at different nesting depths")
		}
	}
	return nil
}

// token returns the bytes of a JSON literal or number at p.i.
func (p *parser) token() []byte {
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '[' {
			break
		}
		p.i++
	}
	return p.b[start:p.i]
}

func (p *parser) scalar() error {
	if p.k >= p.n {
		return fmt.Errorf("data has more elements than the shape holds (%d)", p.n)
	}
	k := p.k
	p.k++
	if p.dt == tensor.Bytes {
		if p.b[p.i] != '"' {
			return fmt.Errorf("element %d: BYTES elements must be JSON strings, got %s", k, quoteTok(p.token()))
		}
		s, err := p.str()
		if err != nil {
			return fmt.Errorf("element %d: %w", k, err)
		}
		p.strs[k] = s
		return nil
	}
	if p.b[p.i] == '"' {
		s, _ := p.str()
		return fmt.Errorf("element %d: %q is a string, %s needs a %s", k, s, p.dt, kindOf(p.dt))
	}
	tok := p.token()
	if len(tok) == 0 {
		return fmt.Errorf("element %d: missing value", k)
	}
	switch p.dt {
	case tensor.Bool:
		switch string(tok) {
		case "true":
			p.bools[k] = true
		case "false":
		default:
			return fmt.Errorf("element %d: %s is not a BOOL (true or false)", k, quoteTok(tok))
		}
		return nil
	case tensor.FP32, tensor.FP16, tensor.BF16:
		if !isNumber(tok) {
			return fmt.Errorf("element %d: %s is not a number", k, quoteTok(tok))
		}
		f, err := strconv.ParseFloat(string(tok), 32)
		if err != nil || (p.dt == tensor.FP16 && math.Abs(f) > 65504) {
			return fmt.Errorf("element %d: %s is out of range for %s", k, tok, p.dt)
		}
		p.f32[k] = float32(f)
		return nil
	case tensor.FP64:
		if !isNumber(tok) {
			return fmt.Errorf("element %d: %s is not a number", k, quoteTok(tok))
		}
		f, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return fmt.Errorf("element %d: %s is out of range for FP64", k, tok)
		}
		p.f64[k] = f
		return nil
	}
	if !isNumber(tok) {
		return fmt.Errorf("element %d: %s is not a number", k, quoteTok(tok))
	}
	v, err := parseInt(tok, p.dt)
	if err != nil {
		return fmt.Errorf("element %d: %w", k, err)
	}
	p.i64[k] = v
	return nil
}

var intRange = map[tensor.DataType][2]float64{
	tensor.Int8: {math.MinInt8, math.MaxInt8}, tensor.Int16: {math.MinInt16, math.MaxInt16},
	tensor.Int32: {math.MinInt32, math.MaxInt32}, tensor.Int64: {math.MinInt64, math.MaxInt64},
	tensor.Uint8: {0, math.MaxUint8}, tensor.Uint16: {0, math.MaxUint16},
	tensor.Uint32: {0, math.MaxUint32}, tensor.Uint64: {0, math.MaxUint64},
}

var intBits = map[tensor.DataType]int{
	tensor.Int8: 8, tensor.Int16: 16, tensor.Int32: 32, tensor.Int64: 64,
	tensor.Uint8: 8, tensor.Uint16: 16, tensor.Uint32: 32, tensor.Uint64: 64,
}

// parseInt returns the value as int64 bits (uint64 values are stored as
// their two's-complement int64 and converted back in finish).
func parseInt(tok []byte, dt tensor.DataType) (int64, error) {
	s := string(tok)
	unsigned := strings.HasPrefix(string(dt), "UINT")
	if unsigned {
		if u, err := strconv.ParseUint(s, 10, intBits[dt]); err == nil {
			return int64(u), nil
		}
	} else if v, err := strconv.ParseInt(s, 10, intBits[dt]); err == nil {
		return v, nil
	}
	// Integral values written as floats (2.0, 1e3) are accepted when in range.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not a number", s)
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("%s is not an integer, %s needs one", s, dt)
	}
	r := intRange[dt]
	if f < r[0] || f > r[1] || (dt == tensor.Int64 && f >= math.MaxInt64) || (dt == tensor.Uint64 && f >= math.MaxUint64) {
		return 0, fmt.Errorf("%s is out of range for %s", s, dt)
	}
	if unsigned {
		return int64(uint64(f)), nil
	}
	return int64(f), nil
}

func kindOf(dt tensor.DataType) string {
	if dt == tensor.Bool {
		return "true or false"
	}
	return "number"
}

func isNumber(tok []byte) bool {
	c := tok[0]
	return c == '-' || (c >= '0' && c <= '9')
}

func quoteTok(tok []byte) string {
	if len(tok) > 32 {
		tok = append(tok[:32:32], "..."...)
	}
	if !utf8.Valid(tok) {
		return strconv.Quote(string(tok))
	}
	return string(tok)
}

// str reads a JSON string at p.i.
func (p *parser) str() (string, error) {
	start := p.i
	p.i++
	esc := false
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '\\':
			esc = true
			p.i += 2
			continue
		case c == '"':
			p.i++
			raw := p.b[start:p.i]
			if !esc {
				s := raw[1 : len(raw)-1]
				if !utf8.Valid(s) {
					return "", errors.New("string is not valid UTF-8")
				}
				for _, ch := range s {
					if ch < 0x20 {
						return "", errors.New("string has an unescaped control character")
					}
				}
				return string(s), nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Errorf("invalid string: %v", err)
			}
			return s, nil
		}
		p.i++
	}
	return "", errors.New("string is not terminated")
}
