// Package tensorjson decodes and encodes the `data` of Open Inference
// Protocol tensors without reflection: a hand-written scanner turns a flat or
// nested JSON array of numbers, booleans or strings straight into a typed
// slice, and the encoder appends typed slices to a byte buffer with strconv.
//
// Why hand-written: encoding/json decodes `data` through reflection into
// []any (one allocation and interface box per element) or into a typed slice
// only when the type is known before decoding, and it cannot check nesting
// against the declared shape. Fast JSON libraries (sonic, goccy/go-json,
// jsoniter) speed up the envelope but still go through generic arrays for a
// value whose element type depends on a sibling field ("datatype"), and they
// add a large dependency (sonic needs amd64 JIT). The numeric array is the
// only hot part of an infer request, and its grammar is small: numbers,
// true/false, strings and brackets. Element parsing itself is strconv's
// (Eisel-Lemire for floats), so values are exactly what encoding/json gives.
//
// Datatypes map to Go slices as in server/tensor: FP32 []float32, FP64
// []float64, INT8..INT64 []int8..[]int64, UINT8..UINT64 []uint8..[]uint64,
// BOOL []bool, BYTES []string, and FP16 and BF16 widened to []float32 (FP16
// values beyond ±65504 are rejected). Integer datatypes also accept
// integral numbers written as floats ("2.0", "1e3") when in range.
//
// Non-finite floats: JSON has no NaN or infinity; the encoder writes them as
// null, and the decoder rejects anything but numbers for numeric datatypes.
package tensorjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of `data` accepted.
const MaxDepth = 32

// Error describes why `data` could not be decoded; Offset is the byte offset
// in the data value where the problem was found.
type Error struct {
	Offset int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("data: %s (at byte %d)", e.Reason, e.Offset) }

// ErrUnknownDatatype is returned for a datatype this package does not decode.
var ErrUnknownDatatype = errors.New("unknown datatype")

// Elements returns the element count of shape, or an error for a negative
// dimension or a product that overflows.
func Elements(shape []int64) (int, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d != 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return int(n), nil
}

// Decode parses data (the raw JSON value of an OIP tensor's "data" field:
// a flat array, or an array nested exactly as shape) into a typed slice for
// datatype holding exactly Elements(shape) values.
func Decode(data []byte, datatype string, shape []int64) (any, error) {
	switch datatype {
	case "FP32":
		return decodeAs(data, shape, parseF32)
	case "FP64":
		return decodeAs(data, shape, parseF64)
	case "FP16":
		return decodeAs(data, shape, parseF16)
	case "BF16":
		return decodeAs(data, shape, parseF32)
	case "INT8":
		return decodeAs(data, shape, parseInt[int8](8))
	case "INT16":
		return decodeAs(data, shape, parseInt[int16](16))
	case "INT32":
		return decodeAs(data, shape, parseInt[int32](32))
	case "INT64":
		return decodeAs(data, shape, parseInt[int64](64))
	case "UINT8":
		return decodeAs(data, shape, parseUint[uint8](8))
	case "UINT16":
		return decodeAs(data, shape, parseUint[uint16](16))
	case "UINT32":
		return decodeAs(data, shape, parseUint[uint32](32))
	case "UINT64":
		return decodeAs(data, shape, parseUint[uint64](64))
	case "BOOL":
		return decodeAs(data, shape, parseBool)
	case "BYTES":
		return decodeAs(data, shape, parseString)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownDatatype, datatype)
}

// DecodeFloat32 is Decode for FP32 appending to dst[:0], so callers can reuse
// a pooled slice.
func DecodeFloat32(dst []float32, data []byte, shape []int64) ([]float32, error) {
	return decodeInto(dst[:0], data, shape, parseF32)
}

// token kinds seen by element parsers
const (
	tokNumber = iota
	tokString // tok is the raw string including quotes
	tokTrue
	tokFalse
	tokNull
)

type elemParser[T any] func(kind int, tok []byte) (T, string)

func decodeAs[T any](data []byte, shape []int64, parse elemParser[T]) (any, error) {
	out, err := decodeInto[T](nil, data, shape, parse)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func decodeInto[T any](dst []T, data []byte, shape []int64, parse elemParser[T]) ([]T, error) {
	want, err := Elements(shape)
	if err != nil {
		return nil, &Error{0, err.Error()}
	}
	if dst == nil || cap(dst) < want {
		// each element takes at least one byte plus a separator
		dst = make([]T, 0, min(want, len(data)/2+1))
	}
	s := scanner[T]{data: data, out: dst, parse: parse}
	s.skipSpace()
	if s.pos >= len(data) || data[s.pos] != '[' {
		return nil, s.fail("want an array")
	}
	if err := s.array(0); err != nil {
		return nil, err
	}
	s.skipSpace()
	if s.pos != len(data) {
		return nil, s.fail("unexpected content after the array")
	}
	if len(s.out) != want {
		return nil, &Error{0, fmt.Sprintf("%d values for shape %v, want %d", len(s.out), shape, want)}
	}
	if s.leaf > 1 {
		// nested: the nesting must be the shape
		if s.leaf != len(shape) {
			return nil, &Error{0, fmt.Sprintf("nested %d deep for shape %v of rank %d", s.leaf, shape, len(shape))}
		}
		for i := range s.leaf {
			if int64(s.dims[i]) != shape[i] {
				return nil, &Error{0, fmt.Sprintf("nested as %v for shape %v", s.dims[:s.leaf], shape)}
			}
		}
	}
	return s.out, nil
}

type scanner[T any] struct {
	data  []byte
	pos   int
	out   []T
	parse elemParser[T]
	leaf  int // depth (1-based) of scalar elements; 0 until the first one
	// deepest is the greatest depth of an array seen (0: the outermost)
	deepest int
	// dims[d] is the length of the arrays at depth d, -1 until one closes;
	// entries below opened are initialised (depth d opens only after d-1).
	dims   [MaxDepth]int32
	opened int
}

func (s *scanner[T]) fail(reason string) error { return &Error{s.pos, reason} }

func (s *scanner[T]) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// array parses one array at depth d (0 for the outermost); s.pos is at '['.
func (s *scanner[T]) array(d int) error {
	if d >= MaxDepth {
		return s.fail("nested too deep")
	}
	s.pos++ // '['
	if d >= s.opened {
		s.dims[d] = -1
		s.opened = d + 1
	}
	n := 0
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return s.endArray(d, 0)
	}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.fail("unterminated array")
		}
		if s.data[s.pos] == '[' {
			if s.leaf != 0 && d+1 >= s.leaf {
				return s.fail("ragged nesting: an array where a value belongs")
			}
			s.deepest = max(s.deepest, d+1)
			if err := s.array(d + 1); err != nil {
				return err
			}
		} else {
			if s.leaf == 0 {
				if s.deepest > d {
					return s.fail("ragged nesting: a value where an array belongs")
				}
				s.leaf = d + 1
			} else if s.leaf != d+1 {
				return s.fail("ragged nesting: a value where an array belongs")
			}
			if err := s.value(); err != nil {
				return err
			}
		}
		n++
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.fail("unterminated array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return s.endArray(d, n)
		default:
			return s.fail(fmt.Sprintf("want ',' or ']', got %q", s.data[s.pos]))
		}
	}
}

func (s *scanner[T]) endArray(d, n int) error {
	if n > math.MaxInt32 {
		return s.fail("array too long")
	}
	if s.dims[d] < 0 {
		s.dims[d] = int32(n)
		return nil
	}
	if int(s.dims[d]) != n {
		return s.fail(fmt.Sprintf("ragged nesting: arrays of %d and %d elements at depth %d", s.dims[d], n, d+1))
	}
	return nil
}

// value scans one scalar token and hands it to the element parser.
func (s *scanner[T]) value() error {
	start := s.pos
	var kind int
	switch c := s.data[s.pos]; {
	case c == '"':
		end, err := s.stringEnd()
		if err != nil {
			return err
		}
		s.pos = end
		kind = tokString
	case c == '-' || (c >= '0' && c <= '9'):
		if !s.number() {
			return &Error{start, "malformed number"}
		}
		kind = tokNumber
	case c == 't':
		if !s.literal("true") {
			return s.fail("invalid literal")
		}
		kind = tokTrue
	case c == 'f':
		if !s.literal("false") {
			return s.fail("invalid literal")
		}
		kind = tokFalse
	case c == 'n':
		if !s.literal("null") {
			return s.fail("invalid literal")
		}
		kind = tokNull
	case c == '{':
		return s.fail("an object is not a tensor value")
	default:
		return s.fail(fmt.Sprintf("unexpected character %q", c))
	}
	v, reason := s.parse(kind, s.data[start:s.pos])
	if reason != "" {
		return &Error{start, fmt.Sprintf("%s: %.40q", reason, s.data[start:s.pos])}
	}
	s.out = append(s.out, v)
	return nil
}

func (s *scanner[T]) literal(lit string) bool {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return false
	}
	s.pos += len(lit)
	return true
}

// number advances over a JSON number (RFC 8259 grammar) and reports whether
// one was there.
func (s *scanner[T]) number() bool {
	d, i := s.data, s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	s.pos = i
	return true
}

// stringEnd returns the offset just past the closing quote of the string at
// s.pos, checking escapes and rejecting control characters.
func (s *scanner[T]) stringEnd() (int, error) {
	d := s.data
	for i := s.pos + 1; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			i++
			if i >= len(d) {
				return 0, &Error{i, "unterminated string"}
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) {
					return 0, &Error{i, "bad \\u escape"}
				}
				for k := 1; k <= 4; k++ {
					if !isHex(d[i+k]) {
						return 0, &Error{i, "bad \\u escape"}
					}
				}
				i += 4
			default:
				return 0, &Error{i, "bad escape"}
			}
		case c < 0x20:
			return 0, &Error{i, "control character in string"}
		}
	}
	return 0, &Error{len(d), "unterminated string"}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// bstr views b as a string without copying; strconv does not keep it (its
// errors copy the input).
func bstr(b []byte) string { return unsafeString(b) }

func parseF32(kind int, tok []byte) (float32, string) {
	if kind != tokNumber {
		return 0, "want a number"
	}
	if f, ok := fastF32(tok); ok {
		return f, ""
	}
	f, err := strconv.ParseFloat(bstr(tok), 32)
	if err != nil {
		return 0, "number out of FP32 range"
	}
	return float32(f), ""
}

func parseF64(kind int, tok []byte) (float64, string) {
	if kind != tokNumber {
		return 0, "want a number"
	}
	if f, ok := fastF64(tok); ok {
		return f, ""
	}
	f, err := strconv.ParseFloat(bstr(tok), 64)
	if err != nil {
		return 0, "number out of FP64 range"
	}
	return f, ""
}

func parseF16(kind int, tok []byte) (float32, string) {
	f, reason := parseF32(kind, tok)
	if reason == "" && (f > 65504 || f < -65504) {
		return 0, "number out of FP16 range"
	}
	return f, reason
}

type signed interface {
	~int8 | ~int16 | ~int32 | ~int64
}
type unsigned interface {
	~uint8 | ~uint16 | ~uint32 | ~uint64
}

func parseInt[T signed](bits int) elemParser[T] {
	return func(kind int, tok []byte) (T, string) {
		if kind != tokNumber {
			return 0, "want an integer"
		}
		// fast path: short plain integers
		if len(tok) <= 18 {
			neg, i := false, 0
			if tok[0] == '-' {
				neg, i = true, 1
			}
			var v int64
			for ; i < len(tok); i++ {
				c := tok[i]
				if c < '0' || c > '9' {
					break
				}
				v = v*10 + int64(c-'0')
			}
			if i == len(tok) {
				if neg {
					v = -v
				}
				if v < -(1<<(bits-1)) || v > 1<<(bits-1)-1 {
					return 0, fmt.Sprintf("integer out of INT%d range", bits)
				}
				return T(v), ""
			}
		}
		v, err := strconv.ParseInt(bstr(tok), 10, bits)
		if err == nil {
			return T(v), ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Sprintf("integer out of INT%d range", bits)
		}
		f, reason := integral(tok)
		if reason != "" {
			return 0, reason
		}
		lo, hi := -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)
		if f < lo || f >= hi {
			return 0, fmt.Sprintf("integer out of INT%d range", bits)
		}
		return T(int64(f)), ""
	}
}

// integral parses a number with a fraction or exponent ("2.0", "1e3") that
// must have an integer value.
func integral(tok []byte) (float64, string) {
	f, err := strconv.ParseFloat(bstr(tok), 64)
	if err != nil || f != math.Trunc(f) {
		return 0, "want an integer"
	}
	return f, ""
}

func parseUint[T unsigned](bits int) elemParser[T] {
	return func(kind int, tok []byte) (T, string) {
		if kind != tokNumber {
			return 0, "want an integer"
		}
		v, err := strconv.ParseUint(bstr(tok), 10, bits)
		if err == nil {
			return T(v), ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Sprintf("integer out of UINT%d range", bits)
		}
		f, reason := integral(tok)
		if reason != "" {
			return 0, reason
		}
		if f < 0 || f >= math.Ldexp(1, bits) {
			return 0, fmt.Sprintf("integer out of UINT%d range", bits)
		}
		return T(uint64(f)), ""
	}
}

func parseBool(kind int, _ []byte) (bool, string) {
	switch kind {
	case tokTrue:
		return true, ""
	case tokFalse:
		return false, ""
	}
	return false, "want true or false"
}

func parseString(kind int, tok []byte) (string, string) {
	if kind != tokString {
		return "", "want a string"
	}
	body := tok[1 : len(tok)-1]
	if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), ""
	}
	// escapes or invalid UTF-8: let encoding/json apply its exact rules
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return "", "invalid string"
	}
	return s, ""
}
